//! What the admin endpoint's `/metrics` shows (Prometheus text format):
//! the gRPC server metrics under the names operators already chart
//! (`grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`), and vnid's own under `vnid_`.
//!
//! No label ever holds personal data or a `request_id`: labels are the
//! method (from a fixed list: any other path is `unknown`), the gRPC code,
//! and for checks the verdict, reason, purpose and agency id (all from
//! closed sets: the proto's names and the registry).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Seconds: a cache hit answers in a millisecond, a check in a few, a
/// batch stream in minutes.
const HANDLING_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];
const COMMIT_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    grpc_started: IntCounterVec,
    grpc_handled: IntCounterVec,
    grpc_seconds: HistogramVec,
    /// Checks answered (not replays), by verdict, reason, purpose, agency.
    pub checks: IntCounterVec,
    pub audit_rows: IntCounter,
    pub audit_groups: Histogram,
    pub audit_commit_seconds: Histogram,
    pub audit_write_failures: IntCounter,
    pub audit_checkpoints: IntCounter,
    /// The mirror's `data_as_of`, in seconds since the epoch (0: unknown).
    pub mirror_data_as_of: IntGauge,
    /// 1 when `/readyz` says ready.
    pub ready: IntGauge,
    /// Checks the guard or the staleness bound refused, by reason and agency.
    pub refusals: IntCounterVec,
    /// The guard's alerts raised (`vnid::alert` lines), by alert and agency.
    pub alerts: IntCounterVec,
    pub batch_streams: IntCounter,
    /// Batch items answered, by outcome (`verdict` or `error`).
    pub batch_items: IntCounterVec,
    /// `telemetry.metrics`: false, calls and checks are not counted (the
    /// families read when scraped still are: they cost a check nothing).
    counting: bool,
}

impl Metrics {
    /// Every metric; `counting` false leaves calls and checks uncounted.
    pub fn new(counting: bool) -> Result<Arc<Self>, prometheus::Error> {
        let registry = Registry::new();
        let method = &["grpc_type", "grpc_service", "grpc_method"];
        let grpc_started = IntCounterVec::new(
            Opts::new("grpc_server_started_total", "RPCs started on the server."),
            method,
        );
        let grpc_handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "RPCs completed on the server, by gRPC code.",
            ),
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let grpc_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from an RPC's start to its status, in seconds.",
            )
            .buckets(HANDLING_BUCKETS.to_vec()),
            method,
        );
        let checks = IntCounterVec::new(
            Opts::new(
                "vnid_checks_total",
                "Checks answered (retries answered again are not counted).",
            ),
            &["verdict", "reason", "purpose", "agency"],
        );
        let audit_rows = IntCounter::new("vnid_audit_rows_total", "Audit rows committed.");
        let audit_groups = Histogram::with_opts(
            HistogramOpts::new("vnid_audit_group_rows", "Rows per audit group commit.")
                .buckets(GROUP_BUCKETS.to_vec()),
        );
        let audit_commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "vnid_audit_commit_seconds",
                "Time an audit group commit took, in seconds.",
            )
            .buckets(COMMIT_BUCKETS.to_vec()),
        );
        let audit_write_failures = IntCounter::new(
            "vnid_audit_write_failures_total",
            "Audit group commits that failed (their checks answered UNAVAILABLE).",
        );
        let audit_checkpoints =
            IntCounter::new("vnid_audit_checkpoints_total", "Audit checkpoints signed.");
        let mirror_data_as_of = IntGauge::new(
            "vnid_mirror_data_as_of_timestamp_seconds",
            "When the mirror's data was current (its newest import), seconds since the epoch.",
        );
        let ready = IntGauge::new("vnid_ready", "1 when the instance is ready for calls.");
        let refusals = IntCounterVec::new(
            Opts::new(
                "vnid_refusals_total",
                "Checks refused before the mirror was asked: rate, daily quota, \
                 suspension on one number, throttle, stale mirror.",
            ),
            &["reason", "agency"],
        );
        let alerts = IntCounterVec::new(
            Opts::new(
                "vnid_alerts_total",
                "Guard alerts raised (the vnid::alert log lines), by alert name.",
            ),
            &["alert", "agency"],
        );
        let batch_streams =
            IntCounter::new("vnid_batch_streams_total", "VerifyBatch streams opened.");
        let batch_items = IntCounterVec::new(
            Opts::new(
                "vnid_batch_items_total",
                "VerifyBatch items answered, by outcome (verdict or error).",
            ),
            &["outcome"],
        );
        let build_info = IntGaugeVec::new(
            Opts::new("vnid_build_info", "The running build (always 1)."),
            &["version"],
        );
        let build_info = build_info?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let metrics = Self {
            grpc_started: grpc_started?,
            grpc_handled: grpc_handled?,
            grpc_seconds: grpc_seconds?,
            checks: checks?,
            audit_rows: audit_rows?,
            audit_groups: audit_groups?,
            audit_commit_seconds: audit_commit_seconds?,
            audit_write_failures: audit_write_failures?,
            audit_checkpoints: audit_checkpoints?,
            mirror_data_as_of: mirror_data_as_of?,
            ready: ready?,
            refusals: refusals?,
            alerts: alerts?,
            batch_streams: batch_streams?,
            batch_items: batch_items?,
            counting,
            registry,
        };
        let r = &metrics.registry;
        r.register(Box::new(metrics.grpc_started.clone()))?;
        r.register(Box::new(metrics.grpc_handled.clone()))?;
        r.register(Box::new(metrics.grpc_seconds.clone()))?;
        r.register(Box::new(metrics.checks.clone()))?;
        r.register(Box::new(metrics.audit_rows.clone()))?;
        r.register(Box::new(metrics.audit_groups.clone()))?;
        r.register(Box::new(metrics.audit_commit_seconds.clone()))?;
        r.register(Box::new(metrics.audit_write_failures.clone()))?;
        r.register(Box::new(metrics.audit_checkpoints.clone()))?;
        r.register(Box::new(metrics.mirror_data_as_of.clone()))?;
        r.register(Box::new(metrics.ready.clone()))?;
        r.register(Box::new(metrics.refusals.clone()))?;
        r.register(Box::new(metrics.alerts.clone()))?;
        r.register(Box::new(metrics.batch_streams.clone()))?;
        r.register(Box::new(metrics.batch_items.clone()))?;
        r.register(Box::new(build_info))?;
        Ok(Arc::new(metrics))
    }

    /// Counts a check answered (`vnid_checks_total`).
    pub fn checked(&self, labels: &[&str; 4]) {
        if self.counting {
            self.checks.with_label_values(labels).inc();
        }
    }

    /// Adds a family read only when scraped, from counters a part keeps
    /// anyway (the cache's, the audit queue's): nothing on the request
    /// path. `read` answers one value per set of `labels`' values.
    pub fn pull(
        &self,
        name: &str,
        help: &str,
        kind: Pull,
        labels: &[&str],
        read: impl Fn() -> Samples + Send + Sync + 'static,
    ) -> Result<(), prometheus::Error> {
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            labels.iter().map(|l| (*l).to_owned()).collect(),
            Default::default(),
        )?;
        self.registry.register(Box::new(Pulled {
            desc,
            read: Read::Values(kind, Box::new(read)),
        }))
    }

    /// Adds a histogram read only when scraped (as [`Metrics::pull`]):
    /// `read` answers the observations under each of `bounds`, if any.
    pub fn pull_histogram(
        &self,
        name: &str,
        help: &str,
        bounds: &[f64],
        read: impl Fn() -> Option<Distribution> + Send + Sync + 'static,
    ) -> Result<(), prometheus::Error> {
        let desc = Desc::new(name.to_owned(), help.to_owned(), vec![], Default::default())?;
        self.registry.register(Box::new(Pulled {
            desc,
            read: Read::Histogram(bounds.to_vec(), Box::new(read)),
        }))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut text) {
            tracing::error!(%error, "metrics not rendered");
        }
        String::from_utf8(text).unwrap_or_default()
    }
}

/// The type of a family read when scraped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    Counter,
    Gauge,
}

/// One value per set of label values.
pub type Samples = Vec<(Vec<&'static str>, f64)>;

/// A histogram read when scraped: how many observations fell at or under
/// each bound and above the one before (not cumulative), and their sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    pub counts: Vec<u64>,
    pub sum: f64,
}

enum Read {
    Values(Pull, Box<dyn Fn() -> Samples + Send + Sync>),
    Histogram(
        Vec<f64>,
        Box<dyn Fn() -> Option<Distribution> + Send + Sync>,
    ),
}

/// A family whose values are read when scraped.
struct Pulled {
    desc: Desc,
    read: Read,
}

impl Pulled {
    fn labelled(&self, values: Vec<&str>) -> Metric {
        let labels = (self.desc.variable_labels.iter())
            .zip(values)
            .map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.clone());
                pair.set_value(value.to_owned());
                pair
            })
            .collect();
        Metric::from_label(labels)
    }
}

impl Collector for Pulled {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        match &self.read {
            Read::Values(kind, read) => {
                family.set_field_type(match kind {
                    Pull::Counter => MetricType::COUNTER,
                    Pull::Gauge => MetricType::GAUGE,
                });
                let samples = read().into_iter().map(|(values, value)| {
                    let mut metric = self.labelled(values);
                    match kind {
                        Pull::Counter => {
                            let mut counter = prometheus::proto::Counter::default();
                            counter.set_value(value);
                            metric.set_counter(counter);
                        }
                        Pull::Gauge => {
                            let mut gauge = prometheus::proto::Gauge::default();
                            gauge.set_value(value);
                            metric.set_gauge(gauge);
                        }
                    }
                    metric
                });
                family.set_metric(samples.collect());
            }
            Read::Histogram(bounds, read) => {
                family.set_field_type(MetricType::HISTOGRAM);
                let metrics = read().map(|distribution| {
                    let mut below = 0;
                    let buckets = bounds
                        .iter()
                        .zip(&distribution.counts)
                        .map(|(&bound, &count)| {
                            below += count;
                            let mut bucket = prometheus::proto::Bucket::default();
                            bucket.set_upper_bound(bound);
                            bucket.set_cumulative_count(below);
                            bucket
                        })
                        .collect();
                    let mut histogram = prometheus::proto::Histogram::default();
                    histogram.set_bucket(buckets);
                    histogram.set_sample_count(distribution.counts.iter().sum());
                    histogram.set_sample_sum(distribution.sum);
                    let mut metric = self.labelled(Vec::new());
                    metric.set_histogram(histogram);
                    metric
                });
                family.set_metric(metrics.into_iter().collect());
            }
        }
        vec![family]
    }
}

/// The gRPC methods served, with their kind: any other path is counted as
/// `unknown` (a caller cannot add labels).
const METHODS: &[(&str, &str, &str)] = &[
    ("vnid.v1.VerificationService", "Verify", "unary"),
    ("vnid.v1.VerificationService", "VerifyBatch", "bidi_stream"),
    ("vnid.v1.VerificationService", "VerifyCardQr", "unary"),
    ("vnid.v1.VerificationService", "GetSigningKeys", "unary"),
    ("vnid.v1.VerificationService", "VerifyMany", "unary"),
    ("vnid.v1.AuditService", "ListAccessHistory", "unary"),
    ("grpc.health.v1.Health", "Check", "unary"),
    ("grpc.health.v1.Health", "Watch", "server_stream"),
    (
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
        "bidi_stream",
    ),
];

/// A call's name for its span: `service/method` when it is one of the
/// methods served, else `unknown` (a caller cannot name spans).
pub fn call_name(path: &str) -> &str {
    match method_of(path) {
        ["unknown", ..] => "unknown",
        _ => path.trim_start_matches('/'),
    }
}

/// `(type, service, method)` of a request path.
fn method_of(path: &str) -> [&'static str; 3] {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    METHODS
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map_or(["unknown", "unknown", "unknown"], |&(s, m, t)| [t, s, m])
}

/// gRPC code names, as `grpc_code` labels them.
fn code_name(code: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|c| NAMES.get(c))
        .copied()
        .unwrap_or("Unknown")
}

/// Counts every gRPC call: started when it arrives, handled (with its
/// code) when its status is sent, in headers or in trailers.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<Counted<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // gRPC calls only (and gRPC-Web): the JSON door's are counted by
        // what they do (`vnid_checks_total`, refusals).
        let grpc = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        if !self.metrics.counting || !grpc {
            let answer = self.inner.call(request);
            return Box::pin(async move {
                let response = answer.await?;
                Ok(response.map(|body| Counted {
                    inner: body,
                    call: None,
                }))
            });
        }
        let labels = method_of(request.uri().path());
        self.metrics.grpc_started.with_label_values(&labels).inc();
        let call = Call {
            metrics: self.metrics.clone(),
            labels,
            started: Instant::now(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // A status in the headers ("trailers-only") ends the call now.
            let status = response.headers().get("grpc-status").map(|c| c.as_bytes());
            let call = match status {
                Some(code) => {
                    call.handled(code);
                    None
                }
                None => Some(call),
            };
            Ok(response.map(|body| Counted { inner: body, call }))
        })
    }
}

/// A call whose status is not sent yet.
struct Call {
    metrics: Arc<Metrics>,
    labels: [&'static str; 3],
    started: Instant,
}

impl Call {
    fn handled(self, code: &[u8]) {
        let [kind, service, method] = self.labels;
        self.metrics
            .grpc_handled
            .with_label_values(&[kind, service, method, code_name(code)])
            .inc();
        self.metrics
            .grpc_seconds
            .with_label_values(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A response body that counts its call handled when its trailers (the
/// status) go out; a body dropped before them (the caller went away) is
/// counted `Canceled`.
pub struct Counted<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code: Option<&[u8]> = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| t.get("grpc-status").map_or(&b"2"[..], |c| c.as_bytes())),
            Poll::Ready(Some(Err(_))) => Some(b"2"),
            // Ended with no status: not a gRPC answer.
            Poll::Ready(None) => Some(b"2"),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some(call) = self.call.take()
        {
            call.handled(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.handled(b"1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_and_renders() {
        let metrics = Metrics::new(true).unwrap();
        metrics
            .checks
            .with_label_values(&["VERDICT_VERIFIED", "", "PURPOSE_HEALTHCARE", "demo"])
            .inc();
        // A family with labels shows once it has a sample.
        let call = Call {
            metrics: metrics.clone(),
            labels: method_of("/vnid.v1.VerificationService/Verify"),
            started: Instant::now(),
        };
        metrics.grpc_started.with_label_values(&call.labels).inc();
        call.handled(b"0");
        let text = metrics.render();
        for name in [
            "grpc_server_started_total",
            "grpc_server_handled_total",
            "grpc_server_handling_seconds",
            "vnid_checks_total",
            "vnid_audit_rows_total",
            "vnid_build_info",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}: {text}");
        }
    }

    #[test]
    fn a_path_outside_the_methods_served_adds_no_label() {
        assert_eq!(
            method_of("/vnid.v1.VerificationService/Verify"),
            ["unary", "vnid.v1.VerificationService", "Verify"]
        );
        assert_eq!(
            method_of("/vnid.v1.VerificationService/anything-at-all"),
            ["unknown"; 3]
        );
        assert_eq!(method_of("/"), ["unknown"; 3]);
        assert_eq!(
            call_name("/vnid.v1.VerificationService/Verify"),
            "vnid.v1.VerificationService/Verify"
        );
        assert_eq!(call_name("/anything/at-all"), "unknown");
        assert_eq!(code_name(b"14"), "Unavailable");
        assert_eq!(code_name(b"99"), "Unknown");
    }
}

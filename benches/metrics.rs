//! What counting costs one call (run by hand): `cargo bench --bench metrics`.
//! A call through the gRPC metrics layer (started, handled with its code,
//! the handling-time histogram) and the check counter, with counting on and
//! off (`telemetry.metrics`), around a service that does nothing, in the
//! same run. The load benchmark's A/B (`METRICS_ONLY=1 bash
//! benches/load.sh`) measures the same on whole checks, within its noise.

use std::time::Instant;

use tower::{Layer, Service, ServiceExt};
use vnid::metrics::{GrpcMetricsLayer, Metrics};

type Body = http_body_util::Empty<&'static [u8]>;

async fn per_call(counting: bool, n: u32) -> f64 {
    let Ok(metrics) = Metrics::new(counting) else {
        return f64::NAN;
    };
    let inner = tower::service_fn(|_: http::Request<()>| async {
        let mut answer = http::Response::new(Body::new());
        answer
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("0"));
        Ok::<_, std::convert::Infallible>(answer)
    });
    let mut service = GrpcMetricsLayer(metrics.clone()).layer(inner);
    let labels = [
        "VERDICT_VERIFIED",
        "",
        "PURPOSE_HEALTHCARE",
        "bv-tien-giang",
    ];
    let start = Instant::now();
    for _ in 0..n {
        let request = http::Request::builder()
            .uri("/vnid.v1.VerificationService/Verify")
            .body(())
            .unwrap_or_default();
        let Ok(ready) = service.ready().await;
        let answer = ready.call(request).await;
        metrics.checked(&labels);
        drop(std::hint::black_box(answer));
    }
    start.elapsed().as_secs_f64() / f64::from(n) * 1e9
}

fn main() {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    let n = 1_000_000;
    runtime.block_on(async {
        // Warm both, then alternate: off, on, off, on.
        per_call(true, n / 10).await;
        per_call(false, n / 10).await;
        let mut on = Vec::new();
        let mut off = Vec::new();
        for _ in 0..2 {
            off.push(per_call(false, n).await);
            on.push(per_call(true, n).await);
        }
        println!("a call, counting off: {:.0} ns, {:.0} ns", off[0], off[1]);
        println!("a call, counting on : {:.0} ns, {:.0} ns", on[0], on[1]);
        println!(
            "counting adds        : {:.0} ns, {:.0} ns per call",
            on[0] - off[0],
            on[1] - off[1]
        );
    });
}

//! Traces: with `telemetry.otlp_endpoint` set, `vnid serve` exports each
//! call's span over OTLP/gRPC to a receiver this test runs, continuing the
//! caller's W3C `traceparent`, with the call log's fields and nothing
//! personal.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::helpers::*;

/// An OTLP trace receiver: keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

#[tokio::test]
async fn a_call_span_reaches_the_collector_in_the_callers_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let url = crate::lifecycle::database_with_fixtures().await;
    let dir = crate::store::tempdir::Dir::new("traces");
    let mut cmd = serve_on_loopback(&url, dir.path());
    cmd.env(
        "VNID__TELEMETRY__OTLP_ENDPOINT",
        format!("http://{collector}"),
    )
    .env("VNID__TELEMETRY__SERVICE_NAME", "vnid-under-test")
    .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut served = Served::spawn(cmd);
    let mut client = served.client().await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut call = tonic::Request::new(request(DAM.id, DAM.name));
    call.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
    );
    let answer = client.verify(call).await.unwrap().into_inner();
    // A call with no traceparent starts a trace of its own.
    client.verify(request(THUY.id, THUY.name)).await.unwrap();

    let started = Instant::now();
    let spans = loop {
        let spans = receiver.0.lock().unwrap().clone();
        if spans.len() >= 2 || started.elapsed() > Duration::from_secs(30) {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(served.stop("-TERM").await.success());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let ours: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .collect();
    assert_eq!(ours.len(), 1, "one span in the caller's trace: {spans:#?}");
    let span = ours[0];
    assert_eq!(hex(&span.parent_span_id), parent_id);
    assert_eq!(span.name, "vnid.v1.VerificationService/Verify");
    assert_eq!(attribute(span, "agency").as_deref(), Some("demo"));
    assert_eq!(
        attribute(span, "purpose").as_deref(),
        Some("PURPOSE_HEALTHCARE")
    );
    assert_eq!(
        attribute(span, "verdict").as_deref(),
        Some("VERDICT_VERIFIED")
    );
    assert_eq!(
        attribute(span, "attestation_id").as_deref(),
        Some(answer.attestation_id.as_str())
    );
    let other = spans
        .iter()
        .find(|s| hex(&s.trace_id) != trace_id)
        .expect("the second call's span");
    assert!(other.parent_span_id.is_empty(), "a root span");
    // Nothing personal in any name, attribute or event exported. (Text
    // only: a birth year such as THUY's "2001" turns up by chance in the
    // spans' nanosecond times and random ids, so the full dates are looked
    // for, not a bare year.)
    let mut everything = String::new();
    for span in &spans {
        everything.push_str(&span.name);
        let attributes = span
            .attributes
            .iter()
            .chain(span.events.iter().flat_map(|e| &e.attributes));
        for attribute in attributes {
            everything.push_str(&format!(" {}={:?}", attribute.key, attribute.value));
        }
        for event in &span.events {
            everything.push_str(&format!(" {}", event.name));
        }
    }
    for secret in [DAM.id, THUY.id, DAM.name, THUY.name, DAM.dob, "req-"] {
        assert!(
            !everything.contains(secret),
            "{secret} in the spans: {everything}"
        );
    }
}

//! A stand-in OTLP/gRPC collector for the compose smoke test (where the
//! OpenTelemetry Collector would be): listens on the address given and
//! prints one JSON line per span received,
//! `{"service", "trace_id", "span_id", "parent_span_id", "name"}`, and one
//! per distinct metric stream shape,
//! `{"service", "metric", "kind", "unit", "attributes", "resource"}` (the
//! attribute and resource attribute names, sorted), which is what a
//! Prometheus name and its labels are made of.
//!
//!   target/release/otlp-receiver 127.0.0.1:4317
//!
//! A binary of the test kit, so `cargo build --release --workspace` builds
//! it with the services and nothing is compiled a second time for it.

use std::{collections::BTreeSet, time::Duration};

use easynote_testkit::otlp::{OtlpReceiver, Transport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned())
        .parse()?;
    let receiver = OtlpReceiver::start_on(addr, Transport::Grpc).await;
    eprintln!("OTLP/gRPC receiver listening on {}", receiver.addr);
    let (mut printed, mut points_seen) = (0, 0);
    let mut shapes = BTreeSet::new();
    loop {
        let spans = receiver.spans();
        for span in &spans[printed..] {
            println!(
                "{}",
                serde_json::json!({
                    "service": span.service,
                    "trace_id": span.trace_id,
                    "span_id": span.span_id,
                    "parent_span_id": span.parent_span_id,
                    "name": span.name,
                })
            );
        }
        printed = spans.len();
        let points = receiver.points();
        for point in &points[points_seen..] {
            let line = serde_json::json!({
                "service": point.service,
                "metric": point.metric,
                "kind": point.kind.name(),
                "unit": point.unit,
                "attributes": point.attributes.keys().collect::<Vec<_>>(),
                "resource": point.resource.keys().collect::<Vec<_>>(),
            })
            .to_string();
            if shapes.insert(line.clone()) {
                println!("{line}");
            }
        }
        points_seen = points.len();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

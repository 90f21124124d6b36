//! A stand-in OTLP/gRPC collector for the compose smoke test (where Jaeger
//! would be): listens on the address given and prints one JSON line per
//! span received, `{"service", "trace_id", "span_id", "parent_span_id", "name"}`.
//!
//!   cargo run --example otlp-receiver -- 127.0.0.1:4317

use std::time::Duration;

use easynote_testkit::otlp::{OtlpReceiver, Transport};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".to_owned())
        .parse()?;
    let receiver = OtlpReceiver::start_on(addr, Transport::Grpc).await;
    eprintln!("OTLP/gRPC receiver listening on {}", receiver.addr);
    let mut printed = 0;
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

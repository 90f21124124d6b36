//! A stand-in OTLP/gRPC collector: listens on the address given and prints
//! what the services export.
//!
//! By default (the compose smoke test, where the OpenTelemetry Collector
//! would be) it prints one JSON line per span received,
//! `{"service", "trace_id", "span_id", "parent_span_id", "name"}`, and one
//! per distinct metric stream shape,
//! `{"service", "metric", "kind", "unit", "attributes", "resource"}` (the
//! attribute and resource attribute names, sorted), which is what a
//! Prometheus name and its labels are made of.
//!
//! With `--waterfall` (the tutorial's first trace, before any Docker) it
//! prints each trace once no span of it has arrived for a while, as an
//! indented tree of spans with their service, start offset and duration.
//!
//!   target/release/otlp-receiver 127.0.0.1:4317
//!   target/release/otlp-receiver --waterfall 127.0.0.1:4317
//!
//! A binary of the test kit, so `cargo build --release --workspace` builds
//! it with the services and nothing is compiled a second time for it.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use easynote_testkit::otlp::{OtlpReceiver, ReceivedSpan, Transport};

/// How long a trace must stay quiet before its waterfall is printed:
/// longer than the services' batch export delay (5 s by default), so that
/// the spans each process sends on its own timer have all arrived.
const QUIET: Duration = Duration::from_secs(7);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let waterfall = args.iter().any(|arg| arg == "--waterfall");
    let addr = args
        .iter()
        .find(|arg| !arg.starts_with("--"))
        .map_or("127.0.0.1:4317", String::as_str)
        .parse()?;
    let receiver = OtlpReceiver::start_on(addr, Transport::Grpc).await;
    eprintln!("OTLP/gRPC receiver listening on {}", receiver.addr);
    if waterfall {
        print_waterfalls(&receiver).await
    } else {
        print_lines(&receiver).await
    }
}

/// One JSON line per span and per metric stream shape, as they arrive.
async fn print_lines(receiver: &OtlpReceiver) -> ! {
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

/// Each trace as a tree, once it has been quiet for [`QUIET`]. Only the
/// spans that arrived since the last look are sorted into their traces;
/// a printed trace is forgotten but for its id (a late span of it is
/// dropped, not printed as a second, partial tree).
async fn print_waterfalls(receiver: &OtlpReceiver) -> ! {
    // trace id -> its spans so far, and when the last one arrived
    let mut pending: BTreeMap<String, (Vec<ReceivedSpan>, Instant)> = BTreeMap::new();
    let mut printed = BTreeSet::new();
    let mut seen = 0;
    loop {
        let spans = receiver.spans();
        let now = Instant::now();
        for span in spans.into_iter().skip(seen) {
            seen += 1;
            if printed.contains(&span.trace_id) {
                continue;
            }
            let (of_trace, last) = pending
                .entry(span.trace_id.clone())
                .or_insert_with(|| (Vec::new(), now));
            of_trace.push(span);
            *last = now;
        }
        let quiet: Vec<String> = pending
            .iter()
            .filter(|(_, (_, last))| now.duration_since(*last) >= QUIET)
            .map(|(trace, _)| trace.clone())
            .collect();
        for trace in quiet {
            if let Some((of_trace, _)) = pending.remove(&trace) {
                print!("{}", waterfall(&trace, &of_trace));
                printed.insert(trace);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `spans` of one trace as an indented tree, children in start order.
fn waterfall(trace: &str, spans: &[ReceivedSpan]) -> String {
    let start = spans.iter().map(|s| s.start_unix_nanos).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.end_unix_nanos)
        .max()
        .unwrap_or(start);
    let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut text = format!(
        "trace {trace}: {} spans, {} services, {:.1} ms\n",
        spans.len(),
        services.len(),
        millis(end.saturating_sub(start))
    );
    // Roots: no parent, or a parent that never arrived.
    let mut roots: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_str()))
        .collect();
    roots.sort_by_key(|s| s.start_unix_nanos);
    for root in roots {
        tree(&mut text, root, spans, start, 1);
    }
    text.push('\n');
    text
}

fn tree(text: &mut String, span: &ReceivedSpan, spans: &[ReceivedSpan], start: u64, depth: usize) {
    text.push_str(&format!(
        "{:indent$}{:<width$} {:<18} +{:>7.1} ms {:>7.1} ms\n",
        "",
        span.name,
        span.service,
        millis(span.start_unix_nanos.saturating_sub(start)),
        millis(span.end_unix_nanos.saturating_sub(span.start_unix_nanos)),
        indent = depth * 2,
        width = 52usize.saturating_sub(depth * 2),
    ));
    let mut children: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start_unix_nanos);
    for child in children {
        tree(text, child, spans, start, depth + 1);
    }
}

/// Nanoseconds as milliseconds, for printing.
fn millis(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

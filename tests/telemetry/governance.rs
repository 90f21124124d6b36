//! Governance metrics reach the collector under the names and attributes
//! the operators' dashboard reads (`deploy/observability/not-emitted.txt`
//! lists them as emitted on events, not on every run of the walkthrough).

use std::collections::{BTreeMap, BTreeSet};

use easynote_testkit::{
    client::PASSWORD,
    otlp::{OtlpReceiver, Transport},
};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::TracedSuite;

/// The `event` lines of the dashboard's allow-list: OTLP name → labels
/// (without `job` and `instance`, which come from the resource).
fn event_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let text = include_str!("../../deploy/observability/not-emitted.txt");
    text.lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells.len() == 5 && cells[1] == "event").then(|| {
                let labels = cells[4]
                    .split(',')
                    .filter(|l| !matches!(*l, "job" | "instance"))
                    .map(str::to_owned)
                    .collect();
                (cells[2].to_owned(), labels)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn governance_metrics_arrive_under_the_names_the_dashboard_reads() {
    let expected = event_metrics();
    assert!(
        expected.len() >= 4,
        "not-emitted.txt lists the governance metrics: {expected:?}"
    );
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let dir = tempfile::tempdir().expect("a directory");
    let rules = dir.path().join("governance.json");
    let document = json!({
            "gateway": {"rate_limits": [
                {"route": "POST /v1/user/register", "key": "global", "per_second": 0.1, "burst": 1},
                {"route": "GET /v1/note/query", "key": "user", "per_second": 0.001, "burst": 1, "mode": "shadow"}]},
            "clients": {"easy-note-note": {"QueryNote": {
                "retry": {"max_attempts": 2}, "breaker": {"min_requests": 2, "error_rate": 0.5}}}},
            "servers": {"easy-note-user": {"methods": {"CheckUser": {"max_in_flight": 1}}}},
            "faults": [{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 100}]
        })
        .to_string();
    let revision = easynote_shared::governance::rules::version_of(&document);
    std::fs::write(&rules, &document).expect("write the rules");
    let mut env = receiver.exporter_env().to_vec();
    env.push(("EASYNOTE_GOVERNANCE_FILE", rules.display().to_string()));
    let suite = TracedSuite::start(&env).await;

    // limited: a second registration within the global bucket.
    suite.register("metered").await;
    let body = json!({"username": "metered2", "password": PASSWORD});
    let (status, _, _) = suite
        .call(Method::POST, "/v1/user/register", None, Some(body), None)
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // shed: concurrent logins past CheckUser's limit of one.
    let logins = (0..8).map(|_| {
        let creds = json!({"username": "metered", "password": PASSWORD});
        suite.call(Method::POST, "/v1/user/login", None, Some(creds), None)
    });
    let statuses: Vec<StatusCode> = futures_util_join(logins.collect()).await;
    assert!(
        statuses.contains(&StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    let token = loop {
        let creds = json!({"username": "metered", "password": PASSWORD});
        let (status, body, _) = suite
            .call(Method::POST, "/v1/user/login", None, Some(creds), None)
            .await;
        if status == StatusCode::OK {
            break body["token"].as_str().expect("a token").to_owned();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // retries and the breaker: queries against an aborting fault.
    for _ in 0..4 {
        let (status, _, _) = suite
            .call(Method::GET, "/v1/note/query", Some(&token), None, None)
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    let received = suite
        .processes()
        .eventually(
            std::time::Duration::from_secs(10),
            "the governance metrics arrive",
            || async {
                let points = receiver.points();
                let missing: Vec<String> = expected
                    .iter()
                    .filter(|(name, labels)| {
                        !points.iter().any(|p| {
                            &p.metric == *name
                                && labels.iter().all(|l| p.attributes.contains_key(l))
                        })
                    })
                    .map(|(name, labels)| format!("{name} {labels:?}"))
                    .collect();
                if missing.is_empty() {
                    Ok(points.len())
                } else {
                    Err(format!("missing {missing:?}"))
                }
            },
        )
        .await;
    assert!(received > 0);

    // Each refusal's span names the rule and the revision: the 429 at the
    // gateway, and the fault at note-service.
    suite
        .processes()
        .eventually(
            std::time::Duration::from_secs(10),
            "refusals are marked on their spans",
            || async {
                let spans = receiver.spans();
                let marked = |rule: &str| {
                    spans.iter().any(|span| {
                        span.attributes.get("governance.rule").map(String::as_str) == Some(rule)
                            && span.attributes.get("governance.rules_revision") == Some(&revision)
                    })
                };
                match (marked("gateway.rate_limits[0]"), marked("faults[0]")) {
                    (true, true) => Ok(()),
                    seen => Err(format!("(429, fault) marked: {seen:?}")),
                }
            },
        )
        .await;

    // A document one past an edge (a rate limit that would panic the
    // limiter) is refused, and the refusal is counted.
    std::fs::write(
        &rules,
        json!({"gateway": {"rate_limits": [
            {"route": "*", "key": "ip", "per_second": 1e-11, "burst": 1}]}})
        .to_string(),
    )
    .expect("write the rules");
    suite
        .processes()
        .eventually(
            std::time::Duration::from_secs(15),
            "the refusal is counted",
            || async {
                let refused = receiver
                    .points()
                    .iter()
                    .any(|p| p.metric == "easynote.governance.rules.refused");
                if refused {
                    Ok(())
                } else {
                    Err("no easynote.governance.rules.refused point yet")
                }
            },
        )
        .await;
    let (status, _, _) = suite
        .call(Method::GET, "/v1/note/query", Some(&token), None, None)
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the last good rules (the fault) stay, and the gateway answers"
    );
    suite.stop().await;
}

/// Awaits the status of each request, concurrently on this task.
async fn futures_util_join<F>(futures: Vec<F>) -> Vec<StatusCode>
where
    F: Future<Output = (StatusCode, serde_json::Value, Option<String>)>,
{
    let mut set = Vec::new();
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pinned.retain_mut(|f| match f.as_mut().poll(cx) {
            std::task::Poll::Ready((status, _, _)) => {
                set.push(status);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pinned.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    set
}

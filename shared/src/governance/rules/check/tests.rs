use std::sync::Arc;

use super::*;

fn conflicts_of(document: &str) -> Vec<String> {
    Rules::parse(document)
        .expect("valid alone")
        .conflicts()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn one(document: &str, path: &str, says: &str) {
    let found = conflicts_of(document);
    assert!(
        found
            .iter()
            .any(|c| c.starts_with(path) && c.contains(says)),
        "{path} ({says}) not among {found:#?}"
    );
}

#[test]
fn the_defaults_and_the_documented_example_have_no_conflict() {
    assert_eq!(Rules::default().conflicts(), Vec::new());
    let example = Rules::parse(include_str!("../../example.json")).expect("valid");
    assert_eq!(example.conflicts(), Vec::new());
}

#[test]
fn retries_that_cannot_fit_in_a_deadline_are_caught() {
    one(
        r#"{"gateway": {"timeouts_ms": {"GET /v1/note/query": 1500}}}"#,
        "clients.easy-note-note.QueryNote",
        "2 attempts of 1000 ms (2000 ms) exceed the deadline of GET /v1/note/query (1500 ms)",
    );
    one(
        r#"{"gateway": {"timeouts_ms": {"*": 1200}}}"#,
        "clients.easy-note-user.CheckToken",
        "exceed the deadline of",
    );
}

#[test]
fn hedges_that_never_start_or_cannot_apply_are_caught() {
    one(
        r#"{"clients": {"easy-note-user": {"MGetUser": {"timeout_ms": 100, "retry": {"backup_delay_ms": 100}}}}}"#,
        "clients.easy-note-user.MGetUser.retry.backup_delay_ms",
        "never starts",
    );
    one(
        r#"{"clients": {"easy-note-note": {"CreateNote": {"retry": {"backup_delay_ms": 50}}}}}"#,
        "clients.easy-note-note.CreateNote.retry.backup_delay_ms",
        "not idempotent",
    );
}

#[test]
fn a_retry_budget_at_the_breakers_threshold_is_caught() {
    one(
        r#"{"clients": {"easy-note-user": {"*": {"retry": {"budget_percent": 50}, "breaker": {"error_rate": 0.4}}}}}"#,
        "clients.easy-note-user.MGetUser.retry.budget_percent",
        "at or over the breaker's error_rate (40%)",
    );
}

#[test]
fn rules_that_never_apply_are_caught() {
    one(
        r#"{"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": 5, "burst": 5},
                                        {"route": "POST /v1/user/login", "key": "ip", "per_second": 1, "burst": 1}]}}"#,
        "gateway.rate_limits[1]",
        "gateway.rate_limits[0] matches its routes first",
    );
    one(
        r#"{"gateway": {"timeouts_ms": {"GET /v1/notes/query": 100}}}"#,
        "gateway.timeouts_ms.GET /v1/notes/query",
        "names no route",
    );
    one(
        r#"{"clients": {"easy-note-notes": {"*": {"timeout_ms": 100}}}}"#,
        "clients.easy-note-notes",
        "not a service of the suite",
    );
    one(
        r#"{"clients": {"easy-note-note": {"QueryNotes": {"timeout_ms": 100}}}}"#,
        "clients.easy-note-note.QueryNotes",
        "has no method",
    );
    one(
        r#"{"servers": {"easy-note-user": {"max_in_flight": 10, "methods": {"CheckUser": {"max_in_flight": 10}}}}}"#,
        "servers.easy-note-user.methods.CheckUser.max_in_flight",
        "never binds",
    );
    one(
        r#"{"routing": {"easy-note-note": {"lanes": [
            {"name": "a", "match": {"user_percent": 10}, "instances": {"lane": "a"}},
            {"name": "b", "match": {"user_percent": 10}, "instances": {"lane": "b"}}]}}}"#,
        "routing.easy-note-note.lanes[1]",
        "same match",
    );
    one(
        r#"{"clients": {"easy-note-user": {"MGetUser": {"breaker": {"slow_ms": 2000}}}}}"#,
        "clients.easy-note-user.MGetUser.breaker.slow_ms",
        "attempts end within 2000 ms",
    );
}

#[test]
fn lanes_with_no_matching_instance_are_caught() {
    let rules = Rules::parse(
        r#"{"routing": {"easy-note-note": {"lanes": [
            {"name": "canary", "match": {"header": "x-lane", "equals": "canary"}, "instances": {"lane": "canary"}}]}}}"#,
    )
    .expect("valid");
    let plain = Instance::new("10.0.0.1:8888");
    let mut canary = Instance::new("10.0.0.2:8888");
    canary.metadata = Arc::new(BTreeMap::from([("lane".into(), "canary".into())]));
    let mut live = BTreeMap::from([(NOTE.to_owned(), vec![plain])]);
    let found = rules.lane_conflicts(&live);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].problem.contains("none of the 1 registered"),
        "{}",
        found[0]
    );
    live.get_mut(NOTE).expect("note").push(canary);
    assert_eq!(rules.lane_conflicts(&live), Vec::new());
}

#[test]
fn effective_rules_name_every_route_and_method_and_the_diff_says_what_changes() {
    let defaults = Rules::default();
    let effective = defaults.effective();
    assert_eq!(
        effective["gateway.route.POST /v1/user/login.deadline"],
        "5000 ms"
    );
    assert_eq!(
        effective["gateway.route.POST /v1/user/login.rate_limit"],
        "gateway.rate_limits[1]: 5/s, burst 10, per ip"
    );
    assert_eq!(
        effective["clients.easy-note-user.CheckUser.attempts"],
        "1 (not idempotent)"
    );
    for (service, methods) in SERVICE_METHODS {
        for method in *methods {
            assert!(effective.contains_key(&format!("clients.{service}.{method}.timeout")));
        }
    }
    let new = Rules::parse(
        r#"{"clients": {"easy-note-user": {"*": {"timeout_ms": 500}}},
            "faults": [{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 10}]}"#,
    )
    .expect("valid");
    let changes: Vec<String> = diff(&defaults, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        changes
            .contains(&"~ clients.easy-note-user.MGetUser.timeout: 1000 ms -> 500 ms".to_owned()),
        "{changes:#?}"
    );
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("+ faults[0]: easy-note-note QueryNote: 10% aborted")),
        "{changes:#?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| c.contains("easy-note-note.QueryNote.timeout")),
        "note-service's timeouts did not change: {changes:#?}"
    );
    assert_eq!(diff(&new, &new), Vec::new());
}

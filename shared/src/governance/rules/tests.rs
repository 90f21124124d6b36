use super::*;

const EXAMPLE: &str = include_str!("../example.json");

#[test]
fn the_documented_example_parses() {
    let rules = Rules::parse(EXAMPLE).expect("the example is valid");
    assert_eq!(rules.gateway.max_in_flight, 1024);
    assert_eq!(rules.faults.len(), 1);
    assert_eq!(rules.routing["easy-note-note"].lanes.len(), 2);
    let check_user = rules.client_policy("easy-note-user", "CheckUser");
    assert_eq!(check_user.max_attempts, 1);
    assert_eq!(check_user.timeout, Duration::from_millis(1000));
    let mget = rules.client_policy("easy-note-user", "MGetUser");
    assert_eq!(mget.max_attempts, 2);
    assert_eq!(mget.breaker.min_requests, 20);
}

#[test]
fn an_empty_document_is_the_defaults() {
    assert_eq!(Rules::parse("{}").expect("valid"), Rules::default());
}

#[test]
fn given_keys_override_and_the_rest_keeps_its_default() {
    let rules = Rules::parse(
        r#"{"gateway": {"timeouts_ms": {"GET /v1/note/query": 200}},
            "clients": {"easy-note-note": {"*": {"timeout_ms": 300},
                                           "QueryNote": {"retry": {"backup_delay_ms": 50}}}}}"#,
    )
    .expect("valid");
    assert_eq!(rules.gateway.max_in_flight, 1024);
    assert_eq!(
        rules.route_timeout("GET /v1/note/query"),
        Duration::from_millis(200)
    );
    assert_eq!(
        rules.route_timeout("POST /v1/note"),
        Duration::from_millis(3000)
    );
    assert_eq!(
        rules.route_timeout("POST /v1/user/login"),
        Duration::from_millis(5000),
        "a map given is merged over the defaults, key by key"
    );
    let query = rules.client_policy("easy-note-note", "QueryNote");
    assert_eq!(query.timeout, Duration::from_millis(300));
    assert_eq!(query.backup_delay, Some(Duration::from_millis(50)));
    let create = rules.client_policy("easy-note-note", "CreateNote");
    assert_eq!(create.max_attempts, 1, "writes are never retried");
    assert_eq!(create.backup_delay, None);
    let keyed = rules.repeatable_policy("easy-note-note", "CreateNote");
    assert_eq!(
        keyed.max_attempts, 2,
        "a create safe to repeat is retried as the rules say"
    );
    assert_eq!(keyed.backup_delay, None, "and never hedged");
    assert_eq!(
        rules.server_limits("easy-note-user", "CheckUser"),
        (Some(256), Some(16))
    );
}

#[test]
fn bad_documents_are_refused_naming_the_key() {
    let cases = [
        ("not json", "."),
        (
            r#"{"gateway": {"max_in_flight": 0}}"#,
            "gateway.max_in_flight",
        ),
        (r#"{"gateway": {"max_inflight": 5}}"#, "gateway"),
        (
            r#"{"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": -1, "burst": 1}]}}"#,
            "gateway.rate_limits[0].per_second",
        ),
        (
            r#"{"gateway": {"rate_limits": [{"route": "*", "key": "tenant", "per_second": 1, "burst": 1}]}}"#,
            "gateway.rate_limits[0].key",
        ),
        (
            r#"{"gateway": {"timeouts_ms": {"login": 5}}}"#,
            "gateway.timeouts_ms.login",
        ),
        (
            r#"{"clients": {"easy-note-user": {"*": {"breaker": {"error_rate": 2}}}}}"#,
            "clients.easy-note-user.*.breaker.error_rate",
        ),
        (
            r#"{"faults": [{"service": "easy-note-note", "status": "BROKEN"}]}"#,
            "faults[0].status",
        ),
        (
            r#"{"routing": {"easy-note-note": {"lanes": [{"name": "x", "match": {"user_percent": 5, "header": "h"}, "instances": {"lane": "x"}}]}}}"#,
            "routing.easy-note-note.lanes[0].match",
        ),
    ];
    for (doc, path) in cases {
        let err = Rules::parse(doc).expect_err(doc);
        assert!(err.path.starts_with(path), "{doc}: {err}");
    }
}

#[test]
fn faults_apply_to_their_method_and_instances() {
    let rules = Rules::parse(
        r#"{"faults": [{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 100, "instances": {"lane": "canary"}},
                       {"service": "easy-note-user", "delay_ms": 5}]}"#,
    )
    .expect("valid");
    let canary = BTreeMap::from([("lane".to_owned(), "canary".to_owned())]);
    let plain = BTreeMap::new();
    assert!(
        rules
            .fault("easy-note-note", "QueryNote", &canary)
            .is_some()
    );
    assert!(rules.fault("easy-note-note", "QueryNote", &plain).is_none());
    assert!(rules.fault("easy-note-note", "MGetNote", &canary).is_none());
    let (index, any) = rules
        .fault("easy-note-user", "CheckUser", &plain)
        .expect("`*`");
    assert_eq!(index, 1, "its place in `faults`, which names it");
    assert_eq!((any.delay_ms, any.status.as_str()), (5, "UNAVAILABLE"));
}

#[test]
fn versions_are_stable_content_hashes() {
    assert_eq!(version_of("{}"), version_of("{}"));
    assert_ne!(version_of("{}"), version_of("{ }"));
    assert_eq!(version_of("").len(), 16);
}

/// Every bounded number: where it sits in a document, its two edges,
/// and the values one step past them (`None` where the type itself
/// stops there).
#[test]
fn every_bound_takes_its_edges_and_refuses_one_past_them_naming_the_key() {
    use serde_json::{Value, json};
    type Place = fn(Value) -> Value;
    /// The key, where it sits, its two edges, one past each.
    type Case = (
        &'static str,
        Place,
        Value,
        Value,
        Option<Value>,
        Option<Value>,
    );
    let cases: Vec<Case> = vec![
        (
            "gateway.max_in_flight",
            |v| json!({"gateway": {"max_in_flight": v}}),
            json!(1),
            json!(MAX_COUNT),
            Some(json!(0)),
            Some(json!(MAX_COUNT + 1)),
        ),
        (
            "gateway.timeouts_ms.*",
            |v| json!({"gateway": {"timeouts_ms": {"*": v}}}),
            json!(1),
            json!(MAX_TIMEOUT_MS),
            Some(json!(0)),
            Some(json!(MAX_TIMEOUT_MS + 1)),
        ),
        (
            "gateway.rate_limits[0].per_second",
            |v| json!({"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": v, "burst": MAX_COUNT}]}}),
            json!(MIN_PER_SECOND),
            json!(MAX_PER_SECOND),
            Some(json!(1e-11)),
            Some(json!(MAX_PER_SECOND * 1.01)),
        ),
        (
            "gateway.rate_limits[0].burst",
            |v| json!({"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": MIN_PER_SECOND, "burst": v}]}}),
            json!(1),
            json!(MAX_COUNT),
            Some(json!(0)),
            Some(json!(MAX_COUNT + 1)),
        ),
        (
            "clients.easy-note-note.*.timeout_ms",
            |v| json!({"clients": {"easy-note-note": {"*": {"timeout_ms": v}}}}),
            json!(1),
            json!(MAX_TIMEOUT_MS),
            Some(json!(0)),
            Some(json!(MAX_TIMEOUT_MS + 1)),
        ),
        (
            "clients.easy-note-note.*.retry.max_attempts",
            |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"max_attempts": v}}}}}),
            json!(1),
            json!(5),
            Some(json!(0)),
            Some(json!(6)),
        ),
        (
            "clients.easy-note-note.*.retry.budget_percent",
            |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"budget_percent": v}}}}}),
            json!(0),
            json!(100),
            Some(json!(-0.1)),
            Some(json!(100.1)),
        ),
        (
            "clients.easy-note-note.*.retry.min_per_second",
            |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"min_per_second": v}}}}}),
            json!(0),
            json!(MAX_COUNT),
            Some(json!(-1)),
            Some(json!(MAX_COUNT + 1)),
        ),
        (
            "clients.easy-note-note.*.retry.backup_delay_ms",
            |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"backup_delay_ms": v}}}}}),
            json!(0),
            json!(MAX_DELAY_MS),
            Some(json!(-1)),
            Some(json!(MAX_DELAY_MS + 1)),
        ),
        (
            "clients.easy-note-note.*.breaker.error_rate",
            |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"error_rate": v}}}}}),
            json!(1e-9),
            json!(1),
            Some(json!(0)),
            Some(json!(1.01)),
        ),
        (
            "clients.easy-note-note.*.breaker.min_requests",
            |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"min_requests": v}}}}}),
            json!(1),
            json!(MAX_COUNT),
            Some(json!(0)),
            Some(json!(MAX_COUNT + 1)),
        ),
        (
            "clients.easy-note-note.*.breaker.window_ms",
            |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"window_ms": v}}}}}),
            json!(100),
            json!(MAX_WINDOW_MS),
            Some(json!(99)),
            Some(json!(MAX_WINDOW_MS + 1)),
        ),
        (
            "clients.easy-note-note.*.breaker.open_ms",
            |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"open_ms": v}}}}}),
            json!(1),
            json!(MAX_WINDOW_MS),
            Some(json!(0)),
            Some(json!(MAX_WINDOW_MS + 1)),
        ),
        (
            "clients.easy-note-note.*.breaker.half_open_requests",
            |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"half_open_requests": v}}}}}),
            json!(1),
            json!(100),
            Some(json!(0)),
            Some(json!(101)),
        ),
        (
            "clients.easy-note-note.*.outlier.consecutive_failures",
            |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"consecutive_failures": v}}}}}),
            json!(1),
            json!(1000),
            Some(json!(0)),
            Some(json!(1001)),
        ),
        (
            "clients.easy-note-note.*.outlier.base_ejection_ms",
            |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"base_ejection_ms": v}}}}}),
            json!(1),
            json!(MAX_WINDOW_MS),
            Some(json!(0)),
            Some(json!(MAX_WINDOW_MS + 1)),
        ),
        (
            "clients.easy-note-note.*.outlier.max_ejection_ms",
            |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"max_ejection_ms": v}}}}}),
            json!(1),
            json!(MAX_WINDOW_MS),
            Some(json!(0)),
            Some(json!(MAX_WINDOW_MS + 1)),
        ),
        (
            "clients.easy-note-note.*.outlier.max_ejected_percent",
            |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"max_ejected_percent": v}}}}}),
            json!(0),
            json!(100),
            Some(json!(-0.1)),
            Some(json!(100.1)),
        ),
        (
            "servers.easy-note-user.max_in_flight",
            |v| json!({"servers": {"easy-note-user": {"max_in_flight": v}}}),
            json!(1),
            json!(MAX_COUNT),
            Some(json!(0)),
            Some(json!(MAX_COUNT + 1)),
        ),
        (
            "servers.easy-note-user.methods.CheckUser.max_in_flight",
            |v| json!({"servers": {"easy-note-user": {"methods": {"CheckUser": {"max_in_flight": v}}}}}),
            json!(1),
            json!(MAX_COUNT),
            Some(json!(0)),
            Some(json!(MAX_COUNT + 1)),
        ),
        (
            "routing.easy-note-note.lanes[0].match.user_percent",
            |v| json!({"routing": {"easy-note-note": {"lanes": [{"name": "x", "match": {"user_percent": v}, "instances": {"lane": "x"}}]}}}),
            json!(0),
            json!(100),
            Some(json!(-0.1)),
            Some(json!(100.1)),
        ),
        (
            "faults[0].abort_percent",
            |v| json!({"faults": [{"service": "easy-note-note", "abort_percent": v}]}),
            json!(0),
            json!(100),
            Some(json!(-0.1)),
            Some(json!(100.1)),
        ),
        (
            "faults[0].delay_ms",
            |v| json!({"faults": [{"service": "easy-note-note", "delay_ms": v}]}),
            json!(0),
            json!(MAX_DELAY_MS),
            Some(json!(-1)),
            Some(json!(MAX_DELAY_MS + 1)),
        ),
    ];
    for (key, place, low, high, below, above) in cases {
        for edge in [low, high] {
            let doc = place(edge).to_string();
            Rules::parse(&doc).unwrap_or_else(|err| panic!("{doc} is at an edge: {err}"));
        }
        for past in [below, above].into_iter().flatten() {
            let doc = place(past).to_string();
            let err = Rules::parse(&doc).expect_err(&doc);
            assert_eq!(err.path, key, "{doc}: {err}");
        }
    }
}

#[test]
fn the_slowest_limit_with_the_largest_burst_still_has_a_period() {
    let limit = RateLimit {
        route: "*".into(),
        key: LimitKey::Ip,
        per_second: MIN_PER_SECOND,
        burst: MAX_COUNT,
        mode: Mode::Enforce,
        scope: Scope::Process,
    };
    assert_eq!(limit.period(), Some(Duration::from_secs(1000)));
    let too_slow = RateLimit {
        per_second: 1e-11,
        ..limit.clone()
    };
    assert_eq!(too_slow.period(), None, "its bucket outlasts 584 years");
    let nan = RateLimit {
        per_second: f64::NAN,
        ..limit
    };
    assert_eq!(nan.period(), None);
}

#[test]
fn routes_match_exactly_or_by_star() {
    assert!(route_matches("*", "GET /v1/note/query"));
    assert!(route_matches("POST /v1/user/login", "POST /v1/user/login"));
    assert!(!route_matches(
        "POST /v1/user/login",
        "POST /v1/user/register"
    ));
    assert!(route_matches(
        "GET /v1/note/{note_id}",
        "GET /v1/note/{note_id}"
    ));
    assert!(route_matches("GET /v1/note/:id", "GET /v1/note/{note_id}"));
    assert!(!route_matches("GET /v1/note/{id}", "GET /v1/note/query"));
    assert!(!route_matches("GET /v1/note", "GET /v1/note/{note_id}"));
}

#[test]
fn a_route_deadline_applies_in_either_spelling_of_its_parameters() {
    let rules =
        Rules::parse(r#"{"gateway": {"timeouts_ms": {"GET /v1/note/:id": 700}}}"#).expect("valid");
    assert_eq!(
        rules.route_timeout("GET /v1/note/{note_id}"),
        Duration::from_millis(700)
    );
    assert_eq!(
        rules.route_timeout("GET /v1/note/query"),
        Duration::from_millis(3000)
    );
}

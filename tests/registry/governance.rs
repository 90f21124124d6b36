//! Governance rules published to a real rnacos at run time through its
//! open API, as an operator would with `curl`, and observed through the
//! gateway: rate limits, breakers, deadlines, shedding, retry budgets and
//! lanes. Nothing is published before the services start, so every test
//! also shows a process picking up a data id's first publish.

use std::time::{Duration, Instant};

use easynote_testkit::client::PASSWORD;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{self, ProcessSuite, Reply, Service, suite_bin};

/// The data id the services follow by default.
const DATA_ID: &str = "easy-note-governance.json";
/// How soon a published change must be in force everywhere.
/// How long a published document may take to be in force before a test
/// fails. The promise is 2 s (a 500 ms poll until the first notification,
/// then push); tests print what they measured, and bound it generously so
/// that CI's other tests running beside them on two cores cannot fail them.
const RULES_WITHIN: Duration = Duration::from_secs(10);
/// How long a test waits for a change that must not happen.
const NO_CHANGE_WITHIN: Duration = Duration::from_secs(2);
/// Logs that show what each server was asked (`call received`).
const GOVERNANCE_DEBUG: &str = "info,nacos_sdk=warn,nacos_sdk::config::worker=off,nacos_sdk::common::cache=error,h2=warn,hyper=warn,tower=warn,sqlx=warn,easynote_shared::governance=debug";

/// rnacos plus user-service, `notes` note-services (with the given extra
/// settings each) and a gateway, ready.
/// The gateway's own edge settings in these tests: the test client, on
/// loopback, is the proxy whose `X-Forwarded-For` names the client (as the
/// rules' `trusted_proxy_hops` asks), and the login floor and the failed-
/// login throttle (whose reservations hold concurrent logins of one name
/// to `EASYNOTE_LOGIN_MAX_FAILURES`) are out of the way of the rules'
/// limits, which are what these tests measure (both have their own tests
/// in tests/api).
const GATEWAY_EDGE: [(&str, &str); 5] = [
    ("EASYNOTE_TRUSTED_PROXIES", "127.0.0.1/32"),
    ("EASYNOTE_LOGIN_RATE_PER_SECOND", "1000"),
    ("EASYNOTE_LOGIN_RATE_BURST", "1000"),
    ("EASYNOTE_LOGIN_MAX_FAILURES", "1000"),
    ("EASYNOTE_LOGIN_MAX_USER_FAILURES", "1000"),
];

async fn governed(notes: &[&[(&str, String)]]) -> (ProcessSuite, Vec<Service>, Service) {
    let mut cluster = harness::cluster().await;
    cluster.set(&[("RUST_LOG", GOVERNANCE_DEBUG.to_owned())]);
    cluster.set(&GATEWAY_EDGE.map(|(var, value)| (var, value.to_owned())));
    let user = cluster.start_user().await;
    let mut services = vec![user];
    for extra in notes {
        services.push(cluster.start_note_with(extra).await);
    }
    let gateway = cluster.start_gateway().await;
    cluster.wait_ready(&gateway).await;
    (cluster, services, gateway)
}

/// Logs in as `username` (password [`PASSWORD`]), optionally as if
/// forwarded for `ip`; returns the status and body.
async fn login(
    cluster: &ProcessSuite,
    gateway: &Service,
    username: &str,
    ip: Option<&str>,
) -> (StatusCode, Value) {
    let (status, _, body) = login_full(cluster, gateway, username, ip).await;
    (status, body)
}

/// [`login`], with the `Retry-After` header.
async fn login_full(
    cluster: &ProcessSuite,
    gateway: &Service,
    username: &str,
    ip: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let client = cluster.client(gateway);
    let mut request = client
        .request(Method::POST, "/v1/user/login")
        .json(&json!({"username": username, "password": PASSWORD}));
    if let Some(ip) = ip {
        request = request.header("x-forwarded-for", ip);
    }
    with_retry_after(client.reply(request).await)
}

/// `GET /v1/note/query` with `token`, plus optional headers.
async fn query(
    cluster: &ProcessSuite,
    gateway: &Service,
    token: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<String>, Value) {
    let client = cluster.client(gateway);
    let mut request = client
        .request(Method::GET, "/v1/note/query")
        .bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    with_retry_after(client.reply(request).await)
}

/// Status, `Retry-After` and body.
fn with_retry_after(reply: Reply) -> (StatusCode, Option<String>, Value) {
    let retry_after = reply.header("retry-after").map(str::to_owned);
    (reply.status, retry_after, reply.body)
}

/// How many `call received` lines for `method` a server has logged.
fn calls(service: &Service, method: &str) -> usize {
    count_lines(service, &["call received", &format!("\"{method}\"")])
}

fn count_lines(service: &Service, all_of: &[&str]) -> usize {
    service
        .proc
        .output()
        .lines()
        .filter(|line| all_of.iter().all(|part| line.contains(part)))
        .count()
}

/// The largest `deadline_ms` a server logged for `method`.
fn deadlines_seen(service: &Service, method: &str) -> Vec<u64> {
    service
        .proc
        .output()
        .lines()
        .filter(|line| line.contains("call received") && line.contains(&format!("\"{method}\"")))
        .filter_map(|line| {
            let rest = line.split("deadline_ms=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_limit_published_at_run_time_goes_live_and_can_be_lifted() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, _services, gateway) = governed(&[&[]]).await;
    cluster.client(&gateway).signed_up("limited").await;

    let limit = |burst: u32| {
        json!({"gateway": {"trusted_proxy_hops": 1, "rate_limits": [
            {"route": "POST /v1/user/login", "key": "ip", "per_second": 0.1, "burst": burst}]}})
        .to_string()
    };
    cluster.nacos().publish_config(DATA_ID, &limit(3)).await;
    let published = std::time::Instant::now();
    // Live once one client IP is limited while another is not (the
    // defaults limit by the peer address, the same for both).
    let limited = cluster
        .eventually(RULES_WITHIN, "the login limit is in force", || async {
            for _ in 0..4 {
                let (status, retry_after, body) =
                    login_full(&cluster, &gateway, "limited", Some("203.0.113.7")).await;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let (other, _) =
                        login(&cluster, &gateway, "limited", Some("198.51.100.9")).await;
                    return if other == StatusCode::OK {
                        Ok((retry_after, body))
                    } else {
                        Err(format!("another IP got {other} too"))
                    };
                }
            }
            Err("no 429 yet".to_owned())
        })
        .await;
    eprintln!(
        "the published login limit was in force {:?} after it was published (promised: 2 s)",
        published.elapsed()
    );
    let (retry_after, body) = limited;
    assert_eq!(body["code"], 10006, "{body}");
    let seconds: u64 = retry_after
        .expect("Retry-After")
        .parse()
        .expect("an integer Retry-After");
    assert!((1..=10).contains(&seconds), "Retry-After {seconds}");

    cluster.nacos().publish_config(DATA_ID, &limit(1000)).await;
    // In force once more logins pass in a row than the old burst (3)
    // allows: one login passing could be the old bucket's refill, and the
    // next document could then supersede this one before it was read.
    cluster
        .eventually(RULES_WITHIN, "the raised limit is in force", || async {
            for _ in 0..5 {
                match login(&cluster, &gateway, "limited", Some("203.0.113.7")).await {
                    (StatusCode::OK, _) => {}
                    (status, body) => return Err(format!("{status} {body}")),
                }
            }
            Ok(())
        })
        .await;

    // A malformed document changes nothing, and the gateway says which key.
    cluster
        .nacos()
        .publish_config(DATA_ID, r#"{"gateway": {"max_in_flight": "lots"}}"#)
        .await;
    cluster
        .eventually(RULES_WITHIN, "the bad document is refused", || async {
            let log = gateway.proc.output();
            if log.contains("governance rules refused") && log.contains("gateway.max_in_flight") {
                Ok(())
            } else {
                Err("no refusal logged yet")
            }
        })
        .await;
    for _ in 0..5 {
        let (status, body) = login(&cluster, &gateway, "limited", Some("203.0.113.7")).await;
        assert_eq!(status, StatusCode::OK, "the last good rules stay: {body}");
    }
    // Deleting the document keeps the last good rules too.
    cluster.nacos().delete_config(DATA_ID).await;
    tokio::time::sleep(NO_CHANGE_WITHIN).await;
    for _ in 0..5 {
        let (status, body) = login(&cluster, &gateway, "limited", Some("203.0.113.7")).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "deleted: the last good rules stay: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborting_fault_opens_the_breaker_which_closes_once_the_fault_is_gone() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, services, gateway) = governed(&[&[]]).await;
    let note = &services[1];
    let token = cluster.client(&gateway).signed_up("breaker").await;
    let breaker = json!({"min_requests": 5, "error_rate": 0.5, "window_ms": 10000,
                         "open_ms": 1500, "half_open_requests": 1});
    let rules = |fault: bool| {
        let faults = if fault {
            json!([{"service": "easy-note-note", "method": "QueryNote",
                    "abort_percent": 100, "status": "UNAVAILABLE"}])
        } else {
            json!([])
        };
        json!({"clients": {"easy-note-note": {"*": {"retry": {"max_attempts": 1}, "breaker": breaker}}},
               "faults": faults})
        .to_string()
    };
    cluster.nacos().publish_config(DATA_ID, &rules(true)).await;
    cluster
        .eventually(RULES_WITHIN, "the fault is in force", || async {
            match query(&cluster, &gateway, &token, &[]).await {
                (StatusCode::SERVICE_UNAVAILABLE, _, _) => Ok(()),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
    cluster
        .eventually(RULES_WITHIN, "the breaker opens", || async {
            let (status, retry_after, body) = query(&cluster, &gateway, &token, &[]).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["code"], 10001, "{body}");
            assert!(retry_after.is_some(), "503 comes with Retry-After");
            if gateway.proc.output().contains("state=\"open\"") {
                Ok(())
            } else {
                Err("no breaker transition logged yet")
            }
        })
        .await;
    let faults = count_lines(note, &["fault injected"]);
    assert!(
        faults >= 5,
        "min_requests failures before opening: {faults}"
    );
    let reached = calls(note, "QueryNote");
    let started = Instant::now();
    for _ in 0..20 {
        let (status, _, body) = query(&cluster, &gateway, &token, &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["code"], 10001, "{body}");
        if started.elapsed() > Duration::from_millis(1000) {
            break; // the breaker half-opens after open_ms
        }
    }
    assert_eq!(
        calls(note, "QueryNote"),
        reached,
        "an open breaker fails calls locally, without reaching note-service"
    );

    cluster.nacos().publish_config(DATA_ID, &rules(false)).await;
    cluster
        .eventually(
            RULES_WITHIN + Duration::from_millis(1500),
            "the breaker closes after open_ms and a successful probe",
            || async {
                match query(&cluster, &gateway, &token, &[]).await {
                    (StatusCode::OK, _, _) => Ok(()),
                    (status, _, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;

    // Business answers never count: 100 NOT_FOUNDs leave DeleteNote's breaker closed.
    let transitions = count_lines(&gateway, &["circuit breaker changed state"]);
    let client = cluster.client(&gateway);
    for _ in 0..100 {
        let (status, _) = client.delete("/v1/note/987654321", &token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert_eq!(
        count_lines(&gateway, &["circuit breaker changed state"]),
        transitions,
        "NOT_FOUND answers moved a breaker"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_route_deadline_bounds_the_request_and_its_remainder_travels_downstream() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, services, gateway) = governed(&[&[]]).await;
    let (user, note) = (&services[0], &services[1]);
    let client = cluster.client(&gateway);
    let token = client.signed_up("deadline").await;
    client.create_note(&token, "t", "c").await;

    // Without a fault: the route's 600 ms, less what the gateway spent,
    // reaches note-service, and less again, user-service.
    let route = json!({"gateway": {"timeouts_ms": {"GET /v1/note/query": 600}}});
    cluster
        .nacos()
        .publish_config(DATA_ID, &route.to_string())
        .await;
    cluster
        .eventually(
            RULES_WITHIN,
            "note-service sees the route's deadline",
            || async {
                let (status, _, body) = query(&cluster, &gateway, &token, &[]).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let note_seen = deadlines_seen(note, "QueryNote");
                match note_seen.last() {
                    Some(&ms) if ms <= 600 => Ok(ms),
                    other => Err(format!("latest QueryNote deadline_ms: {other:?}")),
                }
            },
        )
        .await;
    let note_last = *deadlines_seen(note, "QueryNote").last().expect("seen");
    let user_last = *deadlines_seen(user, "MGetUser")
        .last()
        .expect("MGetUser seen");
    assert!(
        user_last <= note_last,
        "user-service got {user_last} ms, more than note-service's {note_last} ms"
    );

    // With a delay longer than the route's deadline: 503 at the deadline.
    let earlier = deadlines_seen(note, "QueryNote").len();
    let delayed = json!({"gateway": {"timeouts_ms": {"GET /v1/note/query": 600}},
        "faults": [{"service": "easy-note-note", "method": "QueryNote", "delay_ms": 3000}]});
    cluster
        .nacos()
        .publish_config(DATA_ID, &delayed.to_string())
        .await;
    cluster
        .eventually(
            RULES_WITHIN + Duration::from_secs(3),
            "the delay is in force",
            || async {
                match query(&cluster, &gateway, &token, &[]).await {
                    (StatusCode::SERVICE_UNAVAILABLE, _, _) => Ok(()),
                    (status, _, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
    let started = Instant::now();
    let (status, retry_after, body) = query(&cluster, &gateway, &token, &[]).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], 10001, "{body}");
    assert!(retry_after.is_some());
    assert!(
        took < Duration::from_millis(700),
        "answered after {took:?}, past the 600 ms deadline plus 100 ms"
    );
    let seen = &deadlines_seen(note, "QueryNote")[earlier..];
    assert!(
        seen.iter().all(|&ms| ms <= 600),
        "note-service was given more than the route's deadline: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_storm_past_the_check_user_limit_is_shed_with_503s_while_queries_go_on() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, _services, gateway) = governed(&[&[]]).await;
    let token = cluster.client(&gateway).signed_up("storm").await;
    let rules = json!({"gateway": {"rate_limits": []},
        "servers": {"easy-note-user": {"methods": {"CheckUser": {"max_in_flight": 4}}}}});
    cluster
        .nacos()
        .publish_config(DATA_ID, &rules.to_string())
        .await;
    // The defaults would limit these logins by IP; wait until they do not.
    cluster
        .eventually(RULES_WITHIN, "the rules are in force", || async {
            let log = gateway.proc.output();
            if log.contains("governance rules changed") {
                Ok(())
            } else {
                Err("not applied yet")
            }
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let client = cluster.client(&gateway);
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let client = client.clone();
        logins.spawn(async move {
            let login = client
                .request(Method::POST, "/v1/user/login")
                .json(&json!({"username": "storm", "password": PASSWORD}));
            let reply = client.reply(login).await;
            let retry_after = reply.header("retry-after").is_some();
            (reply.status, retry_after, reply.body)
        });
    }
    let mut queries = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, token) = (client.clone(), token.clone());
        queries.spawn(async move { client.get("/v1/note/query", Some(&token)).await });
    }
    let logins = logins.join_all().await;
    let queries = queries.join_all().await;
    let mut ok = 0;
    let mut shed = 0;
    for (status, retry_after, body) in &logins {
        match *status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["code"], 10001, "{body}");
                assert!(*retry_after, "a shed login says when to retry");
                shed += 1;
            }
            other => panic!("a login storm answered {other}: {body}"),
        }
    }
    eprintln!("64 concurrent logins: {ok} succeeded, {shed} shed");
    assert!(ok >= 1 && shed >= 1, "{ok} ok, {shed} shed");
    for (status, body) in &queries {
        assert_eq!(*status, StatusCode::OK, "queries go on: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_of_a_failing_instance_stay_within_the_budget() {
    let _serial = crate::one_at_a_time().await;
    let zone_b = [("EASYNOTE_INSTANCE_METADATA", "zone=b".to_owned())];
    let (cluster, services, gateway) = governed(&[&[], &zone_b]).await;
    let (healthy, failing) = (&services[1], &services[2]);
    let token = cluster.client(&gateway).signed_up("budget").await;
    let rules = json!({
        "clients": {"easy-note-note": {"QueryNote": {
            "retry": {"max_attempts": 2, "budget_percent": 10, "min_per_second": 0},
            "breaker": {"min_requests": 100000},
            // Keeps the failing instance in rotation: this test is about
            // the budget, not about ejecting it (isolation.rs is).
            "outlier": {"max_ejected_percent": 0}}}},
        "faults": [{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 100,
                    "status": "UNAVAILABLE", "instances": {"zone": "b"}}]});
    cluster
        .nacos()
        .publish_config(DATA_ID, &rules.to_string())
        .await;
    // The gateway's retry and breaker rules first: under the defaults, the
    // failures below would open its breaker.
    cluster
        .eventually(RULES_WITHIN, "the gateway has the rules", || async {
            if gateway.proc.output().contains("governance rules changed") {
                Ok(())
            } else {
                Err("not yet")
            }
        })
        .await;
    cluster
        .eventually(RULES_WITHIN, "the fault is in force on zone b", || async {
            let _ = query(&cluster, &gateway, &token, &[]).await;
            if count_lines(failing, &["fault injected"]) > 0 {
                Ok(())
            } else {
                Err("no fault yet")
            }
        })
        .await;
    let before = calls(healthy, "QueryNote") + calls(failing, "QueryNote");
    let requests = 100;
    let mut failed = std::collections::BTreeMap::new();
    for _ in 0..requests {
        let (status, _, body) = query(&cluster, &gateway, &token, &[]).await;
        if status != StatusCode::OK {
            *failed.entry(format!("{status} {body}")).or_insert(0) += 1;
        }
    }
    // The servers' log lines arrive through pipes: count once every call
    // is in and the count has settled.
    let total = || calls(healthy, "QueryNote") + calls(failing, "QueryNote");
    let mut settled = (total(), tokio::time::Instant::now());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = total();
        if now != settled.0 {
            settled = (now, tokio::time::Instant::now());
        } else if now >= before + requests && settled.1.elapsed() >= Duration::from_millis(500) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} calls logged for {requests} queries; failed: {failed:?}",
            now - before
        );
    }
    let attempts = settled.0 - before;
    let retries = attempts - requests;
    eprintln!("{requests} queries, one instance failing: {attempts} attempts, failed: {failed:?}");
    assert!(
        retries >= 1,
        "failed attempts are retried on the other instance"
    );
    assert!(
        retries <= requests / 10 + 1,
        "{retries} retries for {requests} calls exceed a 10% budget"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lanes_send_matching_requests_only_to_their_instances_and_fall_back() {
    let _serial = crate::one_at_a_time().await;
    let canary_meta = [("EASYNOTE_INSTANCE_METADATA", "lane=canary".to_owned())];
    let (mut cluster, mut services, gateway) = governed(&[&[], &canary_meta]).await;
    let token = cluster.client(&gateway).signed_up("lanes").await;
    let header_lane = json!({"name": "canary", "match": {"header": "x-easynote-lane", "equals": "canary"},
                             "instances": {"lane": "canary"}});
    let rules = json!({"routing": {"easy-note-note": {"lanes": [header_lane]}}});
    cluster
        .nacos()
        .publish_config(DATA_ID, &rules.to_string())
        .await;
    let canary_header = [("x-easynote-lane", "canary")];
    {
        let (default, canary) = (&services[1], &services[2]);
        cluster
            .eventually(RULES_WITHIN, "the canary lane is in force", || async {
                let before = calls(canary, "QueryNote");
                let (status, _, body) = query(&cluster, &gateway, &token, &canary_header).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                if calls(canary, "QueryNote") > before {
                    Ok(())
                } else {
                    Err("went to the default instance")
                }
            })
            .await;
        let (d0, c0) = (calls(default, "QueryNote"), calls(canary, "QueryNote"));
        for _ in 0..10 {
            let (status, _, _) = query(&cluster, &gateway, &token, &canary_header).await;
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(
            calls(canary, "QueryNote"),
            c0 + 10,
            "canary requests reach the canary"
        );
        assert_eq!(calls(default, "QueryNote"), d0, "and nothing else");
        for _ in 0..10 {
            let (status, _, _) = query(&cluster, &gateway, &token, &[]).await;
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(
            calls(default, "QueryNote"),
            d0 + 10,
            "others reach the default"
        );
        assert_eq!(calls(canary, "QueryNote"), c0 + 10, "and never the canary");
    }

    // Every user in a user_percent lane: this user's plain requests stay in it.
    let users = json!({"name": "beta-users", "match": {"user_percent": 100},
                       "instances": {"lane": "canary"}});
    let rules = json!({"routing": {"easy-note-note": {"lanes": [header_lane, users]}}});
    cluster
        .nacos()
        .publish_config(DATA_ID, &rules.to_string())
        .await;
    {
        let (default, canary) = (&services[1], &services[2]);
        cluster
            .eventually(RULES_WITHIN, "the user lane is in force", || async {
                let before = calls(canary, "QueryNote");
                let _ = query(&cluster, &gateway, &token, &[]).await;
                if calls(canary, "QueryNote") > before {
                    Ok(())
                } else {
                    Err("went to the default instance")
                }
            })
            .await;
        let (d0, c0) = (calls(default, "QueryNote"), calls(canary, "QueryNote"));
        for _ in 0..10 {
            let (status, _, _) = query(&cluster, &gateway, &token, &[]).await;
            assert_eq!(status, StatusCode::OK);
        }
        assert_eq!(
            calls(canary, "QueryNote"),
            c0 + 10,
            "the user stays in the lane"
        );
        assert_eq!(calls(default, "QueryNote"), d0);
    }

    // With the default instance gone, canary requests still succeed; with
    // the canary gone, they fall back to a default instance.
    let mut default = services.remove(1);
    default.proc.sigterm();
    default.proc.wait_exit(Duration::from_secs(15)).await;
    for _ in 0..5 {
        let (status, _, body) = query(&cluster, &gateway, &token, &canary_header).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let fallback = cluster.start_note().await;
    let mut canary = services.remove(1);
    canary.proc.sigterm();
    canary.proc.wait_exit(Duration::from_secs(15)).await;
    cluster
        .eventually(
            Duration::from_secs(10),
            "canary requests fall back",
            || async {
                match query(&cluster, &gateway, &token, &canary_header).await {
                    (StatusCode::OK, _, _) if calls(&fallback, "QueryNote") > 0 => Ok(()),
                    (status, _, body) => Err(format!("{status} {body}")),
                }
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_source_works_without_nacos_and_is_read_again_when_it_changes() {
    let mut cluster = ProcessSuite::with_static_lists(&suite_bin());
    cluster.set(&[("EASYNOTE_JWT_SECRET", harness::JWT_SECRET.to_owned())]);
    cluster.set(&GATEWAY_EDGE.map(|(var, value)| (var, value.to_owned())));
    let file = cluster.dir.path().join("governance.json");
    cluster.set(&[("EASYNOTE_GOVERNANCE_FILE", file.display().to_string())]);
    let _user = cluster.start_user().await;
    let _note = cluster.start_note().await;
    let gateway = cluster.start_gateway().await;
    cluster.wait_ready(&gateway).await;
    cluster.client(&gateway).signed_up("filed").await;

    let limit = |burst: u32| {
        json!({"gateway": {"trusted_proxy_hops": 1, "rate_limits": [
            {"route": "POST /v1/user/login", "key": "ip", "per_second": 0.1, "burst": burst}]}})
        .to_string()
    };
    std::fs::write(&file, limit(2)).expect("write the rules");
    cluster
        .eventually(RULES_WITHIN, "the file's limit is in force", || async {
            for _ in 0..3 {
                let (status, _) = login(&cluster, &gateway, "filed", Some("192.0.2.1")).await;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    let (other, _) = login(&cluster, &gateway, "filed", Some("192.0.2.2")).await;
                    return if other == StatusCode::OK {
                        Ok(())
                    } else {
                        Err(format!("another IP got {other}"))
                    };
                }
            }
            Err("no 429 yet".to_owned())
        })
        .await;
    std::fs::write(&file, limit(1000)).expect("rewrite the rules");
    cluster
        .eventually(RULES_WITHIN, "the raised limit is in force", || async {
            match login(&cluster, &gateway, "filed", Some("192.0.2.1")).await {
                (StatusCode::OK, _) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        })
        .await;
}

/// A document with every number at an edge of its bound that leaves
/// queries served: the largest limits and deadlines, the smallest where
/// the rule applies to a route or method the queries do not use.
fn edge_document(register_per_second: f64) -> String {
    let extreme_client = json!({
        "timeout_ms": 600_000,
        "retry": {"max_attempts": 5, "budget_percent": 100, "min_per_second": 1_000_000,
                  "backup_delay_ms": 60_000},
        "breaker": {"error_rate": 1, "min_requests": 1_000_000, "window_ms": 3_600_000,
                    "open_ms": 3_600_000, "half_open_requests": 100},
        "outlier": {"consecutive_failures": 1000, "base_ejection_ms": 3_600_000,
                    "max_ejection_ms": 3_600_000, "max_ejected_percent": 100}});
    let smallest_client = json!({
        "timeout_ms": 1,
        "retry": {"max_attempts": 1, "budget_percent": 0, "min_per_second": 0, "backup_delay_ms": 0},
        "breaker": {"error_rate": 0.000_001, "min_requests": 1, "window_ms": 100, "open_ms": 1,
                    "half_open_requests": 1},
        "outlier": {"consecutive_failures": 1, "base_ejection_ms": 1, "max_ejection_ms": 1,
                    "max_ejected_percent": 0}});
    json!({
        "gateway": {
            "max_in_flight": 1_000_000,
            "timeouts_ms": {"*": 600_000, "POST /v1/user/register": 1},
            "rate_limits": [
                {"route": "POST /v1/user/register", "key": "ip",
                 "per_second": register_per_second, "burst": 1},
                {"route": "*", "key": "user", "per_second": 1_000_000, "burst": 1_000_000}]},
        "clients": {"easy-note-note": {"*": extreme_client, "DeleteNote": smallest_client}},
        "servers": {
            "easy-note-note": {"max_in_flight": 1_000_000,
                               "methods": {"DeleteNote": {"max_in_flight": 1}}},
            "easy-note-user": {"max_in_flight": 1_000_000,
                               "methods": {"CheckUser": {"max_in_flight": 1}}}},
        "routing": {"easy-note-note": {"lanes": [
            {"name": "nobody", "match": {"user_percent": 0}, "instances": {"lane": "nobody"}},
            {"name": "everybody", "match": {"user_percent": 100}, "instances": {"lane": "none-such"}}]}},
        "faults": [{"service": "easy-note-note", "method": "DeleteNote", "abort_percent": 100,
                    "delay_ms": 60_000}]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_at_every_edge_apply_and_one_past_an_edge_is_refused_while_queries_go_on() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, services, gateway) = governed(&[&[]]).await;
    let token = cluster.client(&gateway).signed_up("edges").await;
    let load = crate::load::Load::queries(&format!("http://{}", gateway.addr), &token, 2);

    let edges = edge_document(easynote_shared::governance::rules::MIN_PER_SECOND);
    let version = easynote_shared::governance::rules::version_of(&edges);
    cluster.nacos().publish_config(DATA_ID, &edges).await;
    for process in services.iter().chain([&gateway]) {
        cluster
            .eventually(
                RULES_WITHIN,
                "every process applies the edge document",
                || async {
                    let log = process.proc.output();
                    if log.contains("governance rules changed") && log.contains(&version) {
                        Ok(())
                    } else {
                        Err(format!("{} has not applied {version}", process.proc.name))
                    }
                },
            )
            .await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1e-11 per second once made every request panic inside the limiter.
    let past = edge_document(1e-11);
    cluster.nacos().publish_config(DATA_ID, &past).await;
    cluster
        .eventually(
            RULES_WITHIN,
            "one past the edge is refused, naming the key",
            || async {
                let log = gateway.proc.output();
                let refused = log.lines().any(|line| {
                    line.contains("governance rules refused")
                        && line.contains("gateway.rate_limits[0].per_second")
                });
                if refused {
                    Ok(())
                } else {
                    Err("no refusal logged yet")
                }
            },
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish().await;
    eprintln!(
        "queries while the edge documents were published: {}",
        report.summary()
    );
    assert!(report.total >= 20, "the queries ran: {}", report.summary());
    assert!(
        report.failures.is_empty(),
        "no query failed: {}",
        report.summary()
    );
    let (status, _, body) = query(&cluster, &gateway, &token, &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the edge rules stay in force: {body}"
    );
}

/// The rules revision a gRPC server's health answer names
/// (`x-easynote-rules-revision`).
async fn health_revision(addr: &str) -> Option<String> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .ok()?;
    answer
        .metadata()
        .get("x-easynote-rules-revision")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `GET /v1/note/query`: the status, and the rule and revision a refusal
/// names (`x-easynote-rule`, `x-easynote-rules-revision`).
async fn refused_by(
    cluster: &ProcessSuite,
    gateway: &Service,
    token: &str,
) -> (StatusCode, Option<String>, Option<String>) {
    let client = cluster.client(gateway);
    let reply = client
        .reply(
            client
                .request(Method::GET, "/v1/note/query")
                .bearer_auth(token),
        )
        .await;
    let header = |name: &str| reply.header(name).map(str::to_owned);
    (
        reply.status,
        header("x-easynote-rule"),
        header("x-easynote-rules-revision"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_process_reports_the_revision_it_applies_and_refusals_name_their_rule() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, services, gateway) = governed(&[&[]]).await;
    let (user, note) = (&services[0], &services[1]);
    let client = cluster.client(&gateway);
    let token = client.signed_up("attributed").await;
    let readyz = || async {
        let reply = client.reply(client.request(Method::GET, "/readyz")).await;
        (
            reply.header("x-easynote-rules-revision").map(str::to_owned),
            reply.body["data"]["rules_revision"]
                .as_str()
                .map(str::to_owned),
        )
    };
    let default = Some("default".to_owned());
    assert_eq!(readyz().await, (default.clone(), default.clone()));
    assert_eq!(health_revision(&user.addr).await, default);
    assert_eq!(health_revision(&note.addr).await, default);

    // A fault on QueryNote, a breaker that opens after three failures, and
    // a rate limit in shadow mode that would refuse all but the first query.
    let document = json!({
        "gateway": {"rate_limits": [
            {"route": "GET /v1/note/query", "key": "user", "per_second": 0.001, "burst": 1, "mode": "shadow"}]},
        "clients": {"easy-note-note": {"*": {"retry": {"max_attempts": 1},
            "breaker": {"min_requests": 3, "error_rate": 0.5, "open_ms": 60000}}}},
        "faults": [{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 100}]
    })
    .to_string();
    let revision = easynote_shared::governance::rules::version_of(&document);
    cluster.nacos().publish_config(DATA_ID, &document).await;
    cluster
        .eventually(
            RULES_WITHIN,
            "every process applies the new revision",
            || async {
                let seen = (
                    readyz().await.0,
                    health_revision(&user.addr).await,
                    health_revision(&note.addr).await,
                );
                let want = Some(revision.clone());
                if seen == (want.clone(), want.clone(), want) {
                    Ok(())
                } else {
                    Err(format!("gateway, user, note: {seen:?}"))
                }
            },
        )
        .await;

    let mut rules_seen = Vec::new();
    for _ in 0..6 {
        let (status, rule, by_revision) = refused_by(&cluster, &gateway, &token).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "never a 429: the limit is a shadow"
        );
        assert_eq!(by_revision.as_deref(), Some(revision.as_str()));
        rules_seen.push(rule.expect("the refusal names its rule"));
    }
    assert_eq!(
        rules_seen[..3],
        ["faults[0]", "faults[0]", "faults[0]"],
        "note-service's fault, passed on by the gateway"
    );
    assert_eq!(
        rules_seen.last().map(String::as_str),
        Some("clients.easy-note-note.QueryNote.breaker"),
        "then the gateway's open breaker: {rules_seen:?}"
    );
    assert!(
        count_lines(
            &gateway,
            &["a shadow rule would have acted", "gateway.rate_limits[0]"]
        ) >= 5,
        "the shadow limit counted the queries it would have refused"
    );
    assert_eq!(
        count_lines(&gateway, &["refused by governance", "gateway.rate_limits"]),
        0,
        "and refused none"
    );
}

/// `GET /v1/note/query` through each of `gateways` in turn, `rounds` times;
/// answers how many were served (200) and how many limited (429).
async fn queries_round_robin(
    cluster: &ProcessSuite,
    gateways: &[&Service],
    token: &str,
    rounds: usize,
) -> (usize, usize) {
    let (mut served, mut limited) = (0, 0);
    for _ in 0..rounds {
        for gateway in gateways {
            match query(cluster, gateway, token, &[]).await {
                (StatusCode::OK, _, _) => served += 1,
                (StatusCode::TOO_MANY_REQUESTS, _, _) => limited += 1,
                (status, _, body) => panic!("{status} {body}"),
            }
        }
    }
    (served, limited)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_quota_is_shared_by_two_gateways_and_split_between_them_while_redis_is_away() {
    let _serial = crate::one_at_a_time().await;
    let mut cluster = harness::cluster().await;
    cluster.set(&[("RUST_LOG", GOVERNANCE_DEBUG.to_owned())]);
    cluster.set(&GATEWAY_EDGE.map(|(var, value)| (var, value.to_owned())));
    let redis = easynote_testkit::redis::RedisServer::start(cluster.dir.path()).await;
    cluster.set(&[("EASYNOTE_REDIS_URL", redis.url.clone())]);
    let _user = cluster.start_user().await;
    let _note = cluster.start_note().await;
    let a = cluster.start_gateway().await;
    let b = cluster.start_gateway().await;
    cluster.wait_ready(&a).await;
    cluster.wait_ready(&b).await;
    cluster
        .eventually(RULES_WITHIN, "both gateways are registered", || async {
            match cluster.nacos().addrs(harness::GATEWAY).await.len() {
                2 => Ok(()),
                n => Err(format!("{n} listed")),
            }
        })
        .await;
    let token = cluster.client(&a).signed_up("quota").await;
    let other = cluster.client(&a).signed_up("quota-warm-up").await;

    // Six queries per user for the whole cluster, and no refill to speak of.
    let document = json!({"gateway": {"rate_limits": [
        {"route": "GET /v1/note/query", "key": "user", "per_second": 0.001, "burst": 6, "scope": "cluster"}]}})
    .to_string();
    let revision = easynote_shared::governance::rules::version_of(&document);
    cluster.nacos().publish_config(DATA_ID, &document).await;
    for gateway in [&a, &b] {
        cluster
            .eventually(RULES_WITHIN, "the gateway applies the quota", || async {
                let reply = cluster
                    .http
                    .get(format!("http://{}/readyz", gateway.addr))
                    .send()
                    .await
                    .map_err(|err| err.to_string())?;
                let seen = reply.headers().get("x-easynote-rules-revision").cloned();
                if seen.as_ref().and_then(|v| v.to_str().ok()) == Some(revision.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            })
            .await;
    }
    // Each gateway connects to Redis with another user's query (buckets are
    // per user), so that no connection is made during the count.
    let _ = queries_round_robin(&cluster, &[&a, &b], &other, 1).await;
    let shared = queries_round_robin(&cluster, &[&a, &b], &token, 6).await;
    assert_eq!(
        shared,
        (6, 6),
        "one bucket of 6 for both gateways (per process: 12 served)"
    );

    // Redis frozen (it takes connections and answers nothing): each gateway
    // falls back to half the budget, 3 of the 6, within the timeout.
    redis.proc.freeze();
    let frozen = queries_round_robin(&cluster, &[&a, &b], &token, 6).await;
    assert_eq!(
        frozen,
        (6, 6),
        "3 each: the budget split between the 2 replicas"
    );
    for gateway in [&a, &b] {
        assert_eq!(
            count_lines(gateway, &["cluster quota store unavailable", "replicas=2"]),
            1,
            "said once, with the replica count"
        );
    }
    // Back: the shared bucket decides again (and is spent).
    redis.proc.thaw();
    cluster
        .eventually(RULES_WITHIN, "the gateways use Redis again", || async {
            let _ = queries_round_robin(&cluster, &[&a, &b], &token, 1).await;
            let back = [&a, &b]
                .iter()
                .all(|g| count_lines(g, &["cluster quota store answers again"]) == 1);
            if back { Ok(()) } else { Err("not yet") }
        })
        .await;
    let again = queries_round_robin(&cluster, &[&a, &b], &token, 2).await;
    assert_eq!(again, (0, 4), "the shared bucket is spent");
    drop(redis);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_fallback_rule_notes_are_served_without_author_names_while_user_service_fails() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, _services, gateway) = governed(&[&[]]).await;
    let client = cluster.client(&gateway);
    let token = client.signed_up("fallback").await;
    client
        .create_note(&token, "kept", "served without its author")
        .await;
    let rules = |fallback: &str| {
        json!({
            "clients": {"easy-note-user": {"MGetUser": {"fallback": fallback, "retry": {"max_attempts": 1}}}},
            "faults": [{"service": "easy-note-user", "method": "MGetUser", "abort_percent": 100}]
        })
        .to_string()
    };
    let page = || async {
        let query = client
            .request(Method::GET, "/v1/note/query")
            .bearer_auth(&token);
        let reply = client.reply(query).await;
        let fallback = reply.header("x-easynote-fallback").map(str::to_owned);
        (reply.status, fallback, reply.body)
    };
    cluster
        .nacos()
        .publish_config(DATA_ID, &rules("none"))
        .await;
    cluster
        .eventually(
            RULES_WITHIN,
            "MGetUser fails, and so does the page",
            || async {
                match page().await {
                    (StatusCode::SERVICE_UNAVAILABLE, None, _) => Ok(()),
                    (status, fallback, body) => Err(format!("{status} {fallback:?} {body}")),
                }
            },
        )
        .await;
    cluster
        .nacos()
        .publish_config(DATA_ID, &rules("empty"))
        .await;
    let body = cluster
        .eventually(
            RULES_WITHIN,
            "the page is served by the fallback",
            || async {
                match page().await {
                    (StatusCode::OK, Some(rule), body)
                        if rule == "clients.easy-note-user.MGetUser" =>
                    {
                        Ok(body)
                    }
                    (status, fallback, body) => Err(format!("{status} {fallback:?} {body}")),
                }
            },
        )
        .await;
    let note = &body["data"]["notes"][0];
    assert_eq!(note["title"], "kept", "{body}");
    assert_eq!(
        note["user_name"], "",
        "no author name without user-service: {body}"
    );

    // A document that gives a fallback to a method that has none is refused.
    cluster
        .nacos()
        .publish_config(
            DATA_ID,
            r#"{"clients": {"easy-note-note": {"QueryNote": {"fallback": "empty"}}}}"#,
        )
        .await;
    tokio::time::sleep(NO_CHANGE_WITHIN).await;
    let (status, fallback, _) = page().await;
    assert_eq!(
        (status, fallback.as_deref()),
        (StatusCode::OK, Some("clients.easy-note-user.MGetUser")),
        "the last good rules stay"
    );
}

/// The adaptive limits a server logged for `method`, oldest first.
fn adaptive_limits(service: &Service, method: &str) -> Vec<u32> {
    service
        .proc
        .output()
        .lines()
        .filter(|line| line.contains("adaptive limit changed") && line.contains(method))
        .filter_map(|line| {
            let rest = line.split("limit=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// `clients` concurrent loops of `GET /v1/note/query` for `how_long`;
/// answers the statuses and the rules named on refusals.
async fn load(
    cluster: &ProcessSuite,
    gateway: &Service,
    token: &str,
    clients: usize,
    how_long: Duration,
) -> Vec<(StatusCode, Option<String>)> {
    let until = Instant::now() + how_long;
    let url = format!("http://{}/v1/note/query", gateway.addr);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, url, token) = (cluster.http.clone(), url.clone(), token.to_owned());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let reply = http
                        .get(&url)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .expect("answers");
                    let rule = reply
                        .headers()
                        .get("x-easynote-rule")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.push((reply.status(), rule));
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("a load task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn an_adaptive_limit_falls_when_latency_steps_up_and_rises_when_it_steps_down() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, services, gateway) = governed(&[&[]]).await;
    let note = &services[1];
    let token = cluster.client(&gateway).signed_up("adaptive").await;
    let rules = |delay_ms: u64| {
        json!({
            "gateway": {"rate_limits": []},
            "clients": {"easy-note-note": {"*": {"retry": {"max_attempts": 1}}}},
            "servers": {"easy-note-note": {"adaptive": {"initial_limit": 50}}},
            "faults": [{"service": "easy-note-note", "method": "QueryNote", "delay_ms": delay_ms}]
        })
        .to_string()
    };
    // Every query sleeps 20 ms in note-service, so that what the limit
    // follows is the step below, not how busy the CPU is. The no-load
    // latency is learnt at that speed ...
    cluster.nacos().publish_config(DATA_ID, &rules(20)).await;
    cluster
        .eventually(RULES_WITHIN, "the adaptive limit is in force", || async {
            let _ = load(&cluster, &gateway, &token, 4, Duration::from_millis(300)).await;
            match adaptive_limits(note, "QueryNote").last() {
                Some(_) => Ok(()),
                None => Err("no adaptive limit logged yet"),
            }
        })
        .await;
    let _ = load(&cluster, &gateway, &token, 8, Duration::from_secs(2)).await;
    let learnt = *adaptive_limits(note, "QueryNote").last().expect("a limit");
    // ... then every call takes 50 ms longer: the limit falls, and the
    // calls beyond it are shed by the rule, not queued.
    cluster.nacos().publish_config(DATA_ID, &rules(70)).await;
    let answers = load(&cluster, &gateway, &token, 24, Duration::from_secs(4)).await;
    let fallen = *adaptive_limits(note, "QueryNote").last().expect("a limit");
    assert!(
        fallen <= 10 && fallen < learnt,
        "latency stepped up: limit {learnt} -> {fallen}"
    );
    let shed = answers
        .iter()
        .filter(|(status, rule)| {
            *status == StatusCode::SERVICE_UNAVAILABLE
                && rule.as_deref() == Some("servers.easy-note-note.adaptive")
        })
        .count();
    let served = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    assert!(
        shed > 0 && served > 0,
        "{served} served, {shed} shed by the adaptive limit"
    );
    // Latency back down: the limit climbs again, as far as it is used (a
    // limit grows only while at least half of it is in flight; 8 clients
    // held it near 12 beside a CPU hog, short of twice its low).
    cluster.nacos().publish_config(DATA_ID, &rules(20)).await;
    cluster
        .eventually(RULES_WITHIN, "the limit rises again", || async {
            let _ = load(&cluster, &gateway, &token, 16, Duration::from_millis(500)).await;
            match adaptive_limits(note, "QueryNote").last() {
                Some(&now) if now > fallen * 2 => Ok(()),
                now => Err(format!("limit {now:?}, fell to {fallen}")),
            }
        })
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_learns_to_refuse_what_a_service_behind_it_would_shed() {
    let _serial = crate::one_at_a_time().await;
    let (cluster, _services, gateway) = governed(&[&[]]).await;
    let token = cluster.client(&gateway).signed_up("edge-learns").await;
    // note-service takes two queries at once, 20 ms each; the gateway's
    // adaptive limit starts at its default, ten times that.
    let shed_behind = "servers.easy-note-note.methods.QueryNote.max_in_flight";
    let rules = json!({
        "gateway": {"rate_limits": [], "adaptive": {}},
        "clients": {"easy-note-note": {"*": {"retry": {"max_attempts": 1}}}},
        "servers": {"easy-note-note": {"methods": {"QueryNote": {"max_in_flight": 2}}}},
        "faults": [{"service": "easy-note-note", "method": "QueryNote", "delay_ms": 20}]
    })
    .to_string();
    cluster.nacos().publish_config(DATA_ID, &rules).await;
    cluster
        .eventually(RULES_WITHIN, "queries are refused", || async {
            let answers = load(&cluster, &gateway, &token, 8, Duration::from_millis(300)).await;
            match answers.iter().any(|(_, rule)| rule.is_some()) {
                true => Ok(()),
                false => Err("no refusal yet"),
            }
        })
        .await;
    // A few seconds to learn (each 100 ms window in which note-service
    // shed a call takes a tenth off the edge's limit), then measured.
    let _ = load(&cluster, &gateway, &token, 16, Duration::from_secs(4)).await;
    let answers = load(&cluster, &gateway, &token, 16, Duration::from_secs(2)).await;
    let refused_by = |id: &str| {
        answers
            .iter()
            .filter(|(status, rule)| {
                *status == StatusCode::SERVICE_UNAVAILABLE && rule.as_deref() == Some(id)
            })
            .count()
    };
    let (at_edge, behind) = (refused_by("gateway.adaptive"), refused_by(shed_behind));
    let served = answers
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .count();
    // Counting a service's fast refusals as fast answers would carry the
    // edge's limit up instead, and every refusal would come from behind.
    assert!(
        served > 0 && at_edge >= 4 * behind.max(1),
        "{served} served, {at_edge} refused at the edge, {behind} by note-service \
         (each of those an internal call)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_stay_in_the_callers_zone_and_spill_over_when_too_few_of_its_instances_are_in_rotation()
 {
    let _serial = crate::one_at_a_time().await;
    let mut cluster = harness::cluster().await;
    cluster.set(&[("RUST_LOG", GOVERNANCE_DEBUG.to_owned())]);
    cluster.set(&GATEWAY_EDGE.map(|(var, value)| (var, value.to_owned())));
    let _user = cluster.start_user().await;
    let mut notes = Vec::new();
    for metadata in [
        "zone=a,replica=a1",
        "zone=a,replica=a2",
        "zone=b,replica=b1",
        "zone=b,replica=b2",
    ] {
        let extra = [("EASYNOTE_INSTANCE_METADATA", metadata.to_owned())];
        notes.push(cluster.start_note_with(&extra).await);
    }
    let gateway = cluster
        .start_gateway_with(&[("EASYNOTE_INSTANCE_METADATA", "zone=a".to_owned())])
        .await;
    cluster.wait_ready(&gateway).await;
    cluster
        .eventually(
            RULES_WITHIN,
            "four note-service instances listed",
            || async {
                match cluster.nacos().addrs(harness::NOTE).await.len() {
                    4 => Ok(()),
                    n => Err(format!("{n} listed")),
                }
            },
        )
        .await;
    let token = cluster.client(&gateway).signed_up("zoned").await;
    let queried = |zone: &[&Service]| {
        zone.iter()
            .map(|note| calls(note, "QueryNote"))
            .sum::<usize>()
    };
    let (zone_a, zone_b) = ([&notes[0], &notes[1]], [&notes[2], &notes[3]]);
    let rules = |fault: bool| {
        let faults = if fault {
            json!([{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 100,
                    "instances": {"replica": "a1"}}])
        } else {
            json!([])
        };
        json!({"routing": {"easy-note-note": {"locality": {"min_healthy_percent": 60}}},
               "faults": faults})
        .to_string()
    };
    cluster.nacos().publish_config(DATA_ID, &rules(false)).await;
    // Once in force, every query stays in zone a, spread over both of its
    // instances.
    cluster
        .eventually(
            RULES_WITHIN,
            "queries stay in the gateway's zone",
            || async {
                let before = (queried(&zone_a), queried(&zone_b));
                for _ in 0..20 {
                    let (status, _, body) = query(&cluster, &gateway, &token, &[]).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
                let after = (queried(&zone_a), queried(&zone_b));
                match (after.0 - before.0, after.1 - before.1) {
                    (20, 0) => Ok(()),
                    seen => Err(format!("zone a, zone b: {seen:?}")),
                }
            },
        )
        .await;
    let (a1, a2) = (calls(&notes[0], "QueryNote"), calls(&notes[1], "QueryNote"));
    assert!(
        a1 > 0 && a2 > 0,
        "both of zone a's instances serve: {a1}, {a2}"
    );

    // a1 fails every query: retried on a2 meanwhile, ejected after three
    // failures in a row; with 1 of 2 in rotation (under 60%), zone a spills
    // over to zone b. No query fails.
    cluster.nacos().publish_config(DATA_ID, &rules(true)).await;
    cluster
        .eventually(RULES_WITHIN, "zone a spills over to zone b", || async {
            let before = queried(&zone_b);
            for _ in 0..20 {
                let (status, _, body) = query(&cluster, &gateway, &token, &[]).await;
                assert_eq!(status, StatusCode::OK, "{body}");
            }
            match queried(&zone_b) - before {
                0 => Err("zone b got no query".to_owned()),
                n => Ok(n),
            }
        })
        .await;

    // `easy-note rules check --registry` reads the same registry: a lane
    // whose instances none of the four has is a conflict, one that names
    // zone b is not.
    let check = |lane_instances: &str| {
        let file = cluster.dir.path().join("lanes.json");
        let document = format!(
            r#"{{"routing": {{"easy-note-note": {{"lanes": [{{"name": "trial",
                "match": {{"header": "x-lane", "equals": "trial"}}, "instances": {lane_instances}}}]}}}}}}"#
        );
        std::fs::write(&file, document).expect("write the document");
        let mut command = std::process::Command::new(suite_bin());
        command
            .args(["rules", "check", "--registry"])
            .arg(&file)
            .env_clear()
            .envs(cluster.env())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        tokio::task::spawn_blocking(move || command.output().expect("run easy-note rules check"))
    };
    let missing = check(r#"{"lane": "trial"}"#).await.expect("the check ran");
    let said = String::from_utf8_lossy(&missing.stdout);
    assert_eq!(missing.status.code(), Some(1), "{said}");
    assert!(
        said.contains("none of the 4 registered instances of easy-note-note has lane=trial"),
        "{said}"
    );
    let present = check(r#"{"zone": "b"}"#).await.expect("the check ran");
    assert_eq!(
        present.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&present.stdout)
    );
}

use std::collections::BTreeMap;

use super::{
    pick::{self, pick},
    *,
};
use crate::{discovery::StaticDiscovery, governance::GovernanceConfig};
use crate::{
    discovery::{Instance, channel},
    governance::outlier::{Availability, Change},
};

fn governance() -> Governance {
    Governance::new(&GovernanceConfig::defaults())
}

fn backends(weights: &[f64]) -> Vec<Backend> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Backend {
            instance: Instance {
                weight,
                ..Instance::new(format!("127.0.0.1:{}", 1000 + i))
            },
            channel: channel(
                &format!("127.0.0.1:{}", 1000 + i),
                &ChannelSettings::default(),
                "svc",
            )
            .expect("a channel"),
            health: Arc::default(),
        })
        .collect()
}

/// Ejects `backend` as a refused connection would.
fn eject(backend: &Backend) {
    let admission = backend
        .health
        .admit(Instant::now(), false)
        .expect("admitted");
    let change = admission.record(
        Outcome::Failed { connection: true },
        &ClientPolicy::default().outlier,
        true,
        Instant::now(),
    );
    assert!(matches!(change, Some(Change::Ejected { .. })), "{change:?}");
}

fn share_of(set: &[Backend], picks: u64, avoid: Option<&str>) -> Vec<u64> {
    let mut counts = vec![0; set.len()];
    for n in 0..picks {
        let skip: Vec<&str> = avoid.into_iter().collect();
        let (picked, _) = pick(set, n, &skip, Instant::now(), &|_| true).expect("a backend");
        let idx = set
            .iter()
            .position(|b| b.instance.addr == picked.instance.addr)
            .expect("known");
        counts[idx] += 1;
    }
    counts
}

fn share(weights: &[f64], picks: u64) -> Vec<u64> {
    share_of(&backends(weights), picks, None)
}

#[tokio::test]
async fn equal_weights_are_round_robin() {
    assert_eq!(share(&[1.0, 1.0, 1.0], 300), vec![100, 100, 100]);
}

#[tokio::test]
async fn weights_shape_the_share_and_zero_gets_nothing() {
    let counts = share(&[3.0, 1.0, 0.0], 4000);
    assert_eq!(counts[2], 0, "weight 0 must get no traffic: {counts:?}");
    let ratio = counts[0] as f64 / counts[1] as f64;
    assert!((2.8..3.2).contains(&ratio), "3:1 weights gave {counts:?}");
}

#[tokio::test]
async fn ejected_instances_get_no_traffic_until_every_instance_is_ejected() {
    let set = backends(&[1.0, 1.0, 1.0]);
    eject(&set[1]);
    assert_eq!(share_of(&set, 100, None), vec![50, 0, 50]);
    eject(&set[0]);
    eject(&set[2]);
    let counts = share_of(&set, 90, None);
    assert_eq!(counts, vec![30, 30, 30], "all ejected: all in play again");
}

#[tokio::test]
async fn a_retry_avoids_the_instance_that_failed() {
    let set = backends(&[1.0, 2.0]);
    let avoid = set[1].instance.addr.clone();
    assert_eq!(share_of(&set, 50, Some(&avoid)), vec![50, 0]);
    let single = backends(&[1.0]);
    let only = single[0].instance.addr.clone();
    assert!(pick(&single, 0, &[&only], Instant::now(), &|_| true).is_none());
}

#[tokio::test]
async fn no_instances_is_unavailable_not_a_panic() {
    assert!(pick(&backends(&[]), 7, &[], Instant::now(), &|_| true).is_none());
    assert!(pick(&backends(&[0.0]), 7, &[], Instant::now(), &|_| true).is_none());
    let upstream = svc_at(Vec::new()).await;
    let err = upstream
        .call("Check", (), |_, _| async { Ok(tonic::Response::new(())) })
        .await
        .expect_err("no instance");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "no instance of svc is available");
}

#[tokio::test]
async fn unknown_services_are_an_error() {
    let discovery = Discovery::new(StaticDiscovery::new([("svc", vec!["a:1".to_owned()])]));
    let err = Upstream::connect(
        &discovery,
        "other",
        ChannelSettings::default(),
        governance(),
    )
    .await
    .expect_err("unknown");
    assert_eq!(
        err.to_string(),
        "no addresses configured for service \"other\""
    );
}

#[tokio::test]
async fn idempotent_calls_move_to_another_instance_when_one_is_down() {
    // Two addresses where connections are refused: bound, never
    // listening, and held so that no other process can take them. The
    // first attempt fails to connect, the retry goes to the other one,
    // and both get ejected.
    let refusing: Vec<tokio::net::TcpSocket> = (0..2)
        .map(|_| {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
            socket
        })
        .collect();
    let dead: Vec<String> = refusing
        .iter()
        .map(|s| s.local_addr().expect("addr").to_string())
        .collect();
    let upstream = svc_at(dead).await;
    let tried = std::sync::Mutex::new(Vec::new());
    let result = upstream
        .call(
            "Check",
            tonic_health::pb::HealthCheckRequest::default(),
            |channel, request| {
                tried.lock().expect("lock").push(());
                async move {
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(request)
                        .await
                }
            },
        )
        .await;
    let status = result.expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(tried.lock().expect("lock").len(), 2, "one retry");
    let backends = upstream.inner.backends.borrow();
    let ejected = backends
        .iter()
        .filter(|b| b.health.is_ejected(Instant::now()))
        .count();
    assert_eq!(
        ejected, 1,
        "the first refused instance is out of rotation; the second stays, as at most half may be out"
    );
}

/// `svc` at `addrs` (static discovery), under the default rules.
async fn svc_at(addrs: Vec<String>) -> Upstream {
    let discovery = Discovery::new(StaticDiscovery::new([("svc", addrs)]));
    Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance())
        .await
        .expect("subscribe")
}

/// `svc` at two addresses nothing listens on, under the default rules: for
/// calls whose answers the test makes up.
async fn two_unreached_instances() -> Upstream {
    svc_at(vec![
        "127.0.0.1:1001".to_owned(),
        "127.0.0.1:1002".to_owned(),
    ])
    .await
}

/// A create whose connection broke mid-call on the first instance: the
/// attempts `call` or `call_as(.., Repeat::Safe)` make.
async fn creates_tried(repeat: Repeat) -> (Result<(), Status>, usize) {
    let upstream = two_unreached_instances().await;
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let result = upstream
        .call_as(
            "CreateNote",
            (),
            |_channel, _request| {
                let first = tried.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                async move {
                    if first {
                        Err(Status::from_error(Box::new(std::io::Error::other(
                            "connection reset",
                        ))))
                    } else {
                        Ok(tonic::Response::new(()))
                    }
                }
            },
            repeat,
        )
        .await;
    (
        result.map(drop),
        tried.load(std::sync::atomic::Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_create_safe_to_repeat_is_retried_on_another_instance_and_others_are_not() {
    let (result, tried) = creates_tried(Repeat::Safe).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(tried, 2, "retried once, on the other instance");
    let (result, tried) = creates_tried(Repeat::AsMethod).await;
    let status = result.expect_err("a create without a key is not repeated");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(tried, 1);
}

/// A gRPC health server on port 0 answering SERVING.
async fn serving() -> String {
    let (_, service) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// An address that takes connections and never answers on them, as a
/// process frozen by SIGSTOP does (its kernel still accepts).
async fn hung() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

async fn check(upstream: &Upstream) -> Result<(), Status> {
    upstream
        .call(
            "Check",
            tonic_health::pb::HealthCheckRequest::default(),
            |channel, request| async move {
                tonic_health::pb::health_client::HealthClient::new(channel)
                    .check(request)
                    .await
            },
        )
        .await
        .map(drop)
}

#[tokio::test]
async fn a_hung_instance_is_ejected_and_the_service_stays_in() {
    let (hung, healthy) = (hung().await, serving().await);
    let governance = governance();
    governance
        .apply(
            "test",
            r#"{"clients": {"svc": {"*": {"timeout_ms": 200,
                "breaker": {"min_requests": 2, "error_rate": 0.1},
                "outlier": {"base_ejection_ms": 60000, "max_ejection_ms": 60000}}}}}"#,
        )
        .expect("valid rules");
    let discovery = Discovery::new(StaticDiscovery::new([(
        "svc",
        vec![hung.clone(), healthy.clone()],
    )]));
    let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance)
        .await
        .expect("subscribe");
    for i in 0..30 {
        check(&upstream)
            .await
            .unwrap_or_else(|status| panic!("call {i}: {status:?}"));
    }
    let backends = upstream.inner.backends.borrow().clone();
    let state = |addr: &str| {
        backends
            .iter()
            .find(|b| b.instance.addr == addr)
            .expect("known")
            .health
            .availability(Instant::now())
    };
    assert_eq!(state(&hung), Availability::Out, "the hung one is ejected");
    assert_eq!(state(&healthy), Availability::InRotation);
    assert_eq!(
        upstream.breaker_state("Check"),
        BreakerState::Closed,
        "timeouts absorbed by a retry elsewhere are not the service failing"
    );
}

#[tokio::test]
async fn an_ejected_instance_that_answers_again_comes_back_after_its_trial() {
    let healthy = serving().await;
    let (refusing, addr) = {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let addr = socket.local_addr().expect("addr");
        (socket, addr)
    };
    let governance = governance();
    governance
        .apply(
            "test",
            r#"{"clients": {"svc": {"*": {"outlier": {"base_ejection_ms": 100}}}}}"#,
        )
        .expect("valid rules");
    let discovery = Discovery::new(StaticDiscovery::new([(
        "svc",
        vec![addr.to_string(), healthy],
    )]));
    let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance)
        .await
        .expect("subscribe");
    for _ in 0..4 {
        check(&upstream).await.expect("served by the other one");
    }
    let backend = upstream
        .inner
        .backends
        .borrow()
        .iter()
        .find(|b| b.instance.addr == addr.to_string())
        .cloned()
        .expect("known");
    assert!(backend.health.is_ejected(Instant::now()));
    // The instance starts answering where it refused.
    let listener = refusing.listen(16).expect("listen");
    let (_, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        check(&upstream).await.expect("served");
    }
    assert_eq!(
        backend.health.availability(Instant::now()),
        Availability::InRotation,
        "its trial answered"
    );
}

#[tokio::test]
async fn a_connection_broken_mid_call_is_unavailable_not_an_unexpected_failure() {
    let upstream = svc_at(vec!["a:1".to_owned()]).await;
    let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
    assert_eq!(broken.code(), Code::Unknown);
    assert!(is_connection_failure(&broken));
    let seen = upstream.final_status(broken, "CreateNote");
    assert_eq!(seen.code(), Code::Unavailable, "{seen:?}");
    let answered = upstream.final_status(Status::internal("internal error"), "CreateNote");
    assert_eq!(
        answered.code(),
        Code::Internal,
        "a server's own answer stays"
    );
}

/// What hyper answers for a request still queued on a connection that
/// closed, as tonic reports it.
fn dropped_by_a_closed_connection() -> Status {
    let mut status = Status::cancelled("operation was canceled: connection closed");
    status.set_source(std::sync::Arc::new(std::io::Error::other(
        "connection closed",
    )));
    status
}

#[tokio::test]
async fn a_request_its_closed_connection_dropped_is_retried_and_answered_as_unavailable() {
    let upstream = svc_at(vec!["a:1".to_owned()]).await;
    let dropped = dropped_by_a_closed_connection();
    assert!(is_retryable(&dropped), "{dropped:?}");
    assert!(counts_against_breaker(&dropped));
    let seen = upstream.final_status(dropped, "GetNote");
    assert_eq!(seen.code(), Code::Unavailable, "{seen:?}");
    let answered = upstream.final_status(Status::cancelled("the server gave up"), "GetNote");
    assert_eq!(
        answered.code(),
        Code::Cancelled,
        "a server's own answer stays"
    );
}

#[test]
fn answers_of_a_live_server_are_not_retried() {
    assert!(is_retryable(&Status::unavailable("shutting down")));
    assert!(!is_retryable(&Status::not_found("no such note")));
    assert!(is_retryable(&Status::resource_exhausted("busy")));
    assert!(is_retryable(&Status::deadline_exceeded("slow")));
    assert!(!is_retryable(&Status::internal("internal error")));
    assert!(!is_retryable(&Status::cancelled("deadline")));
    assert!(counts_against_breaker(&Status::unavailable("down")));
    assert!(!counts_against_breaker(&Status::not_found("no such note")));
    assert!(counts_against_breaker(&Status::resource_exhausted("quota")));
    assert!(
        !counts_against_breaker(&crate::governance::shed_status("at its limit".into())),
        "a server shedding load is healthy"
    );
    assert!(!is_connection_failure(&Status::unavailable(
        "from the server"
    )));
}

/// Attempts a call makes whose first attempt breaks at once, under a
/// deadline `left` from now, after `warm` answers that took 100 ms each.
async fn attempts_with_time_left(warm: usize, left: Duration) -> usize {
    let upstream = two_unreached_instances().await;
    for _ in 0..warm {
        upstream
            .call("MGetUser", (), |_, _| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(tonic::Response::new(()))
            })
            .await
            .expect("a slow answer");
    }
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let context = CallContext {
        deadline: Some(Instant::now() + left),
        ..CallContext::default()
    };
    let call = upstream.call("MGetUser", (), |_, _| {
        tried.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            Err::<tonic::Response<()>, _>(Status::from_error(Box::new(std::io::Error::other(
                "connection reset",
            ))))
        }
    });
    let _ = context.scope(call).await;
    tried.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn no_retry_starts_when_less_is_left_than_the_methods_median_answer_time() {
    assert_eq!(
        attempts_with_time_left(5, Duration::from_millis(60)).await,
        1,
        "60 ms left, answers take 100 ms: no retry"
    );
    assert_eq!(
        attempts_with_time_left(5, Duration::from_millis(800)).await,
        2,
        "800 ms left: the retry runs"
    );
    assert_eq!(
        attempts_with_time_left(0, Duration::from_millis(60)).await,
        2,
        "nothing measured yet: the retry runs"
    );
}

#[tokio::test]
async fn a_zone_keeps_its_calls_while_enough_of_its_instances_are_in_rotation() {
    let mut set = backends(&[1.0, 1.0, 1.0]);
    for (backend, zone) in set.iter_mut().zip(["a", "a", "b"]) {
        backend.instance.metadata = Arc::new(BTreeMap::from([("zone".into(), zone.into())]));
    }
    let zone = |value: &str, min_healthy_percent| pick::Zone {
        key: "zone".into(),
        value: value.into(),
        min_healthy_percent,
    };
    let now = Instant::now();
    assert!(zone("a", 50.0).keeps_calls(&set, now));
    assert!(!zone("c", 50.0).keeps_calls(&set, now), "no instance there");
    eject(&set[0]);
    let now = Instant::now();
    assert!(
        zone("a", 50.0).keeps_calls(&set, now),
        "1 of 2 in rotation: 50%"
    );
    assert!(
        !zone("a", 60.0).keeps_calls(&set, now),
        "under 60%: spill over"
    );
}

//! What the registry sees: every service registered with its address and
//! metadata, gone after a graceful stop, and traffic spread over instances.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
};

use crate::{
    RegisteredSuite,
    harness::{GATEWAY, NOTE, USER},
};

#[tokio::test(flavor = "multi_thread")]
async fn every_service_registers_its_address_and_metadata_and_leaves_on_graceful_stop() {
    let _serial = crate::one_at_a_time().await;
    let mut suite = RegisteredSuite::start(1).await;
    let nacos = suite.cluster.nacos();
    for (service, addr, protocol) in [
        (USER, &suite.user.addr, "grpc"),
        (NOTE, &suite.notes[0].addr, "grpc"),
        (GATEWAY, &suite.gateway.addr, "http"),
    ] {
        let listed = nacos.instances(service).await;
        assert_eq!(listed.len(), 1, "{service}: {listed:?}");
        let instance = &listed[0];
        assert_eq!(
            &instance.addr, addr,
            "{service} advertises its bound address"
        );
        assert!(
            instance.healthy && instance.enabled,
            "{service}: {instance:?}"
        );
        assert!(instance.ephemeral, "{service} is ephemeral: {instance:?}");
        assert_eq!(instance.weight, 1.0, "{service}: {instance:?}");
        assert_eq!(
            instance.metadata.get("protocol").map(String::as_str),
            Some(protocol)
        );
        assert_eq!(
            instance.metadata.get("version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION")),
            "{service}: {instance:?}"
        );
        let started_at = instance.metadata.get("started_at").expect("started_at");
        assert!(
            humantime::parse_rfc3339(started_at).is_ok(),
            "{service} started_at {started_at:?}"
        );
    }

    // The services found each other through the registry: a note carries
    // its author's name, which note-service asked user-service for.
    let token = suite.signed_up("nacos-alice").await;
    let id = suite
        .create_note(&token, "found through Nacos", "through the registry")
        .await;
    let (status, body) = suite.get(&format!("/v1/note/{id}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["user_name"], "nacos-alice", "{body}");

    // Graceful stop, front to back: each instance leaves the registry (while
    // still serving for the grace period) and exits cleanly.
    for service in [&mut suite.gateway, &mut suite.notes[0], &mut suite.user] {
        service.proc.sigterm();
        let gone_after = suite
            .cluster
            .nacos()
            .wait_listed(&service.service, &service.addr, false)
            .await;
        assert!(
            service.proc.is_running(),
            "{} deregisters before it stops serving",
            service.proc.name
        );
        let status = service.proc.wait_exit(Duration::from_secs(15)).await;
        assert!(
            status.success(),
            "{} exited with {status}",
            service.proc.name
        );
        eprintln!(
            "{} left the registry {gone_after:?} after SIGTERM",
            service.service
        );
    }
}

/// A TCP relay that counts the bytes callers send through it.
async fn counting_relay() -> (String, Arc<AtomicU64>, Arc<OnceLock<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a relay");
    let addr = listener.local_addr().expect("relay address").to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    // The relay is advertised before the service behind it has bound its
    // port 0: connections wait until the test sets where it is.
    let target = Arc::new(OnceLock::<String>::new());
    let behind = target.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = easynote_testkit::eventually(
                Duration::from_secs(10),
                "the relay knows its target",
                || async { behind.get().cloned().ok_or("not set yet") },
            )
            .await;
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, Some(counter.clone())));
            tokio::spawn(pump(server_read, client_write, None));
        }
    });
    (addr, sent, target)
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, counter: Option<Arc<AtomicU64>>) {
    let mut buf = vec![0; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if let Some(counter) = &counter {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    let _ = to.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_note_service_instances_get_traffic_through_the_gateway() {
    let _serial = crate::one_at_a_time().await;
    // Each note-service advertises a counting relay in front of itself
    // (EASYNOTE_ADVERTISE_ADDR), so the test sees what the gateway sends.
    let mut suite = RegisteredSuite::start(0).await;
    let mut relays = Vec::new();
    for _ in 0..2 {
        let (relay, sent, target) = counting_relay().await;
        let note = suite
            .cluster
            .start_note_with(&[("EASYNOTE_ADVERTISE_ADDR", relay.clone())])
            .await;
        assert_eq!(note.addr, relay, "the advertised address is registered");
        target.set(note.bound.clone()).expect("set once");
        relays.push(sent);
        suite.notes.push(note);
    }
    let listed = suite.cluster.nacos().addrs(NOTE).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    suite.cluster.wait_ready(&suite.gateway).await;

    let token = suite.signed_up("balanced").await;
    let id = suite
        .create_note(&token, "spread me", "through the registry")
        .await;
    // The gateway learns about the second instance by a push: wait until
    // both have seen a request, then measure the share.
    let warm = std::time::Instant::now();
    let start: Vec<u64> = relays.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    while relays
        .iter()
        .zip(&start)
        .any(|(r, s)| r.load(Ordering::Relaxed) == *s)
    {
        assert!(
            warm.elapsed() < easynote_testkit::rnacos::REGISTRY_WITHIN,
            "one note-service instance never gets traffic"
        );
        let (status, body) = suite.get("/v1/note/query", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let before: Vec<u64> = relays.iter().map(|r| r.load(Ordering::Relaxed)).collect();
    for _ in 0..40 {
        let (status, body) = suite.get(&format!("/v1/note/{id}"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = suite.get("/v1/note/query", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let sent: Vec<u64> = relays
        .iter()
        .zip(&before)
        .map(|(r, b)| r.load(Ordering::Relaxed) - b)
        .collect();
    let total: u64 = sent.iter().sum();
    eprintln!("bytes sent to each note-service instance for 80 requests: {sent:?}");
    for (i, bytes) in sent.iter().enumerate() {
        assert!(
            *bytes * 4 >= total,
            "instance {i} got {bytes} of {total} bytes: traffic is not balanced ({sent:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_of_one_service_in_one_process_are_both_registered() {
    // Nacos 2.x keeps one instance of a service per client connection: each
    // registration has a connection of its own.
    let _serial = crate::one_at_a_time().await;
    let nacos = easynote_testkit::rnacos::Rnacos::start().await;
    let db = easynote_testkit::TestDatabase::sqlite();
    let cache = tempfile::tempdir().expect("a cache directory");
    let env = easynote_shared::config::Env::from_pairs([
        ("EASYNOTE_REGISTRY", "nacos".to_owned()),
        ("NACOS_SERVER_ADDR", nacos.addr()),
        ("NACOS_CACHE_DIR", cache.path().display().to_string()),
        ("EASYNOTE_GRPC_ADDR", "127.0.0.1:0".to_owned()),
        ("EASYNOTE_DATABASE_URL", db.url.clone()),
        ("EASYNOTE_DEREGISTER_GRACE", "200ms".to_owned()),
    ]);
    let mut running = Vec::new();
    for _ in 0..2 {
        let config = user_service::Config::from_env(&env).expect("a config");
        let server = user_service::UserServer::build(config)
            .await
            .expect("build user-service");
        let addr = server.local_addr().to_string();
        let (trigger, shutdown) = easynote_shared::shutdown::channel();
        running.push((addr, trigger, tokio::spawn(server.run(shutdown))));
    }
    for (addr, _, _) in &running {
        nacos.wait_listed(USER, addr, true).await;
    }
    let mut expected: Vec<String> = running.iter().map(|(a, _, _)| a.clone()).collect();
    expected.sort();
    assert_eq!(nacos.addrs(USER).await, expected);

    for (addr, trigger, task) in running {
        trigger.trigger();
        nacos.wait_listed(USER, &addr, false).await;
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("stops in time")
            .expect("the task")
            .expect("a clean stop");
    }
    assert!(nacos.addrs(USER).await.is_empty());
}

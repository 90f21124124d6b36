//! Instances and the registry going away under steady load.

use std::time::{Duration, Instant};

use crate::{
    RegisteredSuite,
    harness::{GATEWAY, NOTE, REGISTRY_WITHIN, USER},
    load::Load,
    under_load_for,
};

/// Concurrent clients in every load.
const WORKERS: usize = 4;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_note_service_instance_costs_few_requests_and_none_once_the_registry_drops_it() {
    let _serial = crate::one_at_a_time().await;
    let mut suite = RegisteredSuite::start(2).await;
    let token = suite.signed_up("crash-test").await;
    let id = suite
        .create_note(&token, "survives a crash", "through the registry")
        .await;
    let load = Load::start(&suite.base, &token, id, WORKERS);
    under_load_for(Duration::from_secs(2)).await;

    let victim = suite.notes.remove(0);
    let mut victim = victim;
    let killed_at = Instant::now();
    victim.proc.sigkill();
    let dropped_after = suite
        .cluster
        .nacos()
        .wait_listed(NOTE, &victim.addr, false)
        .await;
    let dropped_at = killed_at + dropped_after;
    under_load_for(Duration::from_secs(3)).await;
    let report = load.finish().await;

    eprintln!(
        "SIGKILL of one of two note-service instances: the registry dropped it after {dropped_after:?}; {}",
        report.summary()
    );
    // Idempotent reads are retried on the other instance; a write that
    // picked the dead instance before the registry dropped it may fail.
    for failure in &report.failures {
        assert_eq!(failure.op, "create", "reads are retried: {failure:?}");
    }
    assert!(
        report.failures.len() <= 3,
        "too many failed requests: {}",
        report.summary()
    );
    // Once callers know (push + a margin), nothing fails any more.
    let settled = dropped_at + Duration::from_secs(1);
    let late = report.failures_after(settled);
    assert!(
        late.is_empty(),
        "failures after the registry dropped the instance: {late:?}"
    );
    let survivor = &suite.notes[0];
    assert_eq!(
        suite.cluster.nacos().addrs(NOTE).await,
        vec![survivor.addr.clone()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_of_note_service_under_load_loses_no_request() {
    let _serial = crate::one_at_a_time().await;
    let mut suite = RegisteredSuite::start(2).await;
    let token = suite.signed_up("rolling").await;
    let id = suite
        .create_note(&token, "rolled over", "through the registry")
        .await;
    let load = Load::start(&suite.base, &token, id, WORKERS);
    under_load_for(Duration::from_secs(2)).await;

    // Replace each instance in turn: stop it gracefully (deregister, grace,
    // drain), then start its successor and wait until it is registered.
    for _ in 0..2 {
        let mut old = suite.notes.remove(0);
        old.proc.sigterm();
        let status = old.proc.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "{} exited with {status}", old.proc.name);
        assert!(!suite.cluster.nacos().addrs(NOTE).await.contains(&old.addr));
        let new = suite.cluster.start_note().await;
        suite.notes.push(new);
        under_load_for(Duration::from_secs(1)).await;
    }
    under_load_for(Duration::from_secs(1)).await;
    let report = load.finish().await;
    eprintln!(
        "rolling restart of two note-service instances: {}",
        report.summary()
    );
    assert!(report.total > 100, "the load ran: {}", report.summary());
    assert!(
        report.failures.is_empty(),
        "requests failed: {}",
        report.summary()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_under_load_loses_no_request_and_registrations_come_back() {
    let _serial = crate::one_at_a_time().await;
    let mut suite = RegisteredSuite::start(2).await;
    let token = suite.signed_up("outage").await;
    let id = suite
        .create_note(&token, "outlives the registry", "through the registry")
        .await;
    let load = Load::start(&suite.base, &token, id, WORKERS);
    under_load_for(Duration::from_secs(1)).await;

    suite.cluster.nacos_mut().stop();
    under_load_for(Duration::from_secs(5)).await;
    suite.cluster.nacos_mut().restart().await;
    let restarted = Instant::now();

    // The services register again by themselves; nobody restarts them.
    let expected = [
        (USER, vec![suite.user.addr.clone()]),
        (NOTE, {
            let mut addrs: Vec<String> = suite.notes.iter().map(|n| n.addr.clone()).collect();
            addrs.sort();
            addrs
        }),
        (GATEWAY, vec![suite.gateway.addr.clone()]),
    ];
    for (service, addrs) in &expected {
        let what = format!("{service} is registered again after rnacos restarted");
        suite
            .cluster
            .eventually(REGISTRY_WITHIN * 3, &what, || async {
                let listed = suite.cluster.nacos().addrs(service).await;
                if &listed == addrs {
                    Ok(())
                } else {
                    Err(format!("listed: {listed:?}"))
                }
            })
            .await;
    }
    let back_after = restarted.elapsed();
    under_load_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    eprintln!(
        "rnacos down for 5s under load: registrations back {back_after:?} after its restart; {}",
        report.summary()
    );
    assert!(
        report.failures.is_empty(),
        "requests failed: {}",
        report.summary()
    );
    for service in [&mut suite.gateway, &mut suite.user] {
        assert!(
            service.proc.is_running(),
            "{} kept running",
            service.proc.name
        );
    }
    for note in &mut suite.notes {
        assert!(note.proc.is_running(), "{} kept running", note.proc.name);
    }
}

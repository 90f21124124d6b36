//! One sick replica is isolated, not the service: a note-service replica
//! frozen with SIGSTOP under steady queries (a hung process, a paused
//! container: its kernel still accepts connections, nothing answers) is
//! ejected by the gateway's outlier detection while the other replica
//! serves, and comes back into rotation once it answers again. With the
//! default deadlines, breakers and outlier detection (only the per-user
//! rate limit is lifted: the load comes from one user).

use std::time::{Duration, Instant};

use crate::{FoundThrough, RegisteredSuite, load::Load};

/// Concurrent clients of the drill.
const WORKERS: usize = 4;

/// How long the replica stays frozen.
const FROZEN_FOR: Duration = Duration::from_secs(20);

/// The per-call timeout the default rules give (one attempt).
const CALL_TIMEOUT: Duration = Duration::from_secs(1);

const DRILL_RULES: &str = r#"{"gateway": {"rate_limits": []}}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_replica_found_by_static_lists_is_isolated_and_comes_back() {
    let _serial = crate::one_at_a_time().await;
    frozen_replica_drill(FoundThrough::StaticLists).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_replica_found_through_nacos_is_isolated_and_comes_back() {
    let _serial = crate::one_at_a_time().await;
    frozen_replica_drill(FoundThrough::Nacos).await;
}

async fn frozen_replica_drill(found: FoundThrough) {
    let suite = RegisteredSuite::start_with(found, 2, DRILL_RULES).await;
    let token = suite.signed_up("frozen-drill").await;
    suite
        .create_note(&token, "served by either replica", "through the registry")
        .await;
    let load = Load::queries(&suite.base, &token, WORKERS);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let victim = &suite.notes[0];
    let gateway = &suite.gateway.proc;
    let before_freeze = gateway.output().len();
    let frozen_at = Instant::now();
    victim.proc.freeze();
    let ejected = suite
        .cluster
        .eventually(
            Duration::from_secs(10),
            "the gateway ejects the frozen replica",
            || async {
                logged_since(
                    &gateway.output(),
                    before_freeze,
                    &victim.addr,
                    &["instance ejected"],
                )
            },
        )
        .await;
    let detected_after = frozen_at.elapsed();
    eprintln!("ejected {detected_after:?} after the freeze: {ejected}");

    tokio::time::sleep(FROZEN_FOR.saturating_sub(frozen_at.elapsed())).await;
    let before_thaw = gateway.output().len();
    let thawed_at = Instant::now();
    victim.proc.thaw();
    // Back in rotation: its trial answered, or (under Nacos, if the registry
    // dropped it meanwhile) it registered again and is a fresh instance.
    let back = suite
        .cluster
        .eventually(
            Duration::from_secs(25),
            "the thawed replica is back in rotation",
            || async {
                logged_since(
                    &gateway.output(),
                    before_thaw,
                    &victim.addr,
                    &["back in rotation", "instance set changed"],
                )
            },
        )
        .await;
    let back_after = thawed_at.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;

    let detection = report.sent_between(frozen_at, frozen_at + Duration::from_secs(5));
    let steady = report.sent_between(frozen_at + Duration::from_secs(5), thawed_at);
    let after = report.sent_between(thawed_at, Instant::now());
    let served = |samples: &[crate::load::Sample]| samples.iter().filter(|s| s.ok).count();
    let p99 = percentile(&detection, 0.99);
    eprintln!(
        "frozen-replica drill ({found:?}): ejected after {:.2}s; first 5 s: {}/{} served, p99 {:.3}s; \
         5 s to the thaw: {}/{} served; back in rotation {:.2}s after the thaw ({back}); \
         after the thaw: {}/{} served\n{}",
        detected_after.as_secs_f64(),
        served(&detection),
        detection.len(),
        p99.as_secs_f64(),
        served(&steady),
        steady.len(),
        back_after.as_secs_f64(),
        served(&after),
        after.len(),
        report.summary()
    );
    assert!(steady.len() >= 100, "the load ran: {}", report.summary());
    assert!(
        served(&steady) * 100 >= steady.len() * 99,
        "from 5 s after the freeze, at least 99% served: {}/{}\n{}",
        served(&steady),
        steady.len(),
        report.summary()
    );
    assert!(
        p99 <= CALL_TIMEOUT * 2,
        "while detecting, a query waits at most about one call timeout, then goes elsewhere: p99 {p99:?}"
    );
    assert!(
        back_after <= Duration::from_secs(15),
        "the thawed replica serves again within 15 s: {back_after:?}"
    );
    assert_eq!(
        served(&after),
        after.len(),
        "nothing fails once it is back: {}",
        report.summary()
    );
}

/// The first line logged after `offset` bytes that names `addr` and one of
/// `messages`.
fn logged_since(log: &str, offset: usize, addr: &str, messages: &[&str]) -> Result<String, String> {
    log.get(offset..)
        .unwrap_or_default()
        .lines()
        .find(|line| line.contains(addr) && messages.iter().any(|m| line.contains(m)))
        .map(str::to_owned)
        .ok_or_else(|| format!("no line naming {addr} and one of {messages:?} yet"))
}

/// The `q` quantile of the samples' latencies (zero for none).
fn percentile(samples: &[crate::load::Sample], q: f64) -> Duration {
    let mut took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    took.sort();
    let Some(last) = took.len().checked_sub(1) else {
        return Duration::ZERO;
    };
    took[((last as f64) * q).round() as usize]
}

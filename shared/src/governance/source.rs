//! Where documents come from: a watched file and the Nacos config center.
//!
//! The Nacos client (`nacos-sdk`) has gaps this module works around:
//! - `add_listener` never delivers the current value: the document is
//!   read right after subscribing;
//! - a data id that does not exist when the listener is added is never
//!   notified on its first publish, and deleting one sends nothing: the
//!   document is read twice a second until a notification has arrived,
//!   every 5 s after that;
//! - a notification can arrive after a later document was already read,
//!   and `get_config` answers from a cache that lags the server: what is
//!   applied is always a fresh read, in order (see [`follow_nacos`]);
//! - after a server restart, the SDK listens again only on its next round,
//!   up to 60 s later: until then the slow read finds a change within 5 s;
//! - the listener runs on the SDK's own thread: it only wakes the reader.

use std::{
    path::PathBuf,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use nacos_sdk::api::config::{ConfigChangeListener, ConfigResponse};

use super::{Governance, Inner};
use crate::discovery::{NacosConfig, nacos::open_config_client};

/// How often sources are re-read.
const POLL: Duration = Duration::from_millis(500);
/// How often Nacos is re-read once its notifications are known to arrive.
const SLOW_POLL: Duration = Duration::from_secs(5);

impl Governance {
    fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    fn upgrade(weak: &Weak<Inner>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }
}

/// Re-reads `path` whenever its modification time or size changes, for as
/// long as the governance lives.
pub(super) fn watch_file(governance: &Governance, path: PathBuf) {
    let weak = governance.downgrade();
    tokio::spawn(async move {
        let mut seen: Option<(SystemTime, u64)> = None;
        let mut missing_reported = false;
        loop {
            let Some(governance) = Governance::upgrade(&weak) else {
                return;
            };
            match tokio::fs::metadata(&path).await {
                Ok(meta) => {
                    missing_reported = false;
                    let stamp = (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                    );
                    if seen != Some(stamp) {
                        seen = Some(stamp);
                        match tokio::fs::read_to_string(&path).await {
                            Ok(document) => {
                                let _refused = governance.apply("file", &document);
                            }
                            Err(err) => {
                                tracing::warn!(path = %path.display(), error = %err, "cannot read the governance rules file")
                            }
                        }
                    }
                }
                Err(err) if !missing_reported => {
                    missing_reported = true;
                    seen = None;
                    tracing::warn!(path = %path.display(), error = %err, "governance rules file unreadable; keeping the last good rules");
                }
                Err(_) => {}
            }
            drop(governance);
            tokio::time::sleep(POLL).await;
        }
    });
}

/// Follows `data_id` in the Nacos config center, for as long as the
/// governance lives.
///
/// Every document applied is read from the server by a client that holds
/// no listener (so the SDK has no cache entry to answer from: the read is
/// fresh); a second client listens, and its notification only wakes the
/// reader. Reads happen in one task, in order, so a late notification can
/// never bring back an older document.
pub(super) fn follow_nacos(governance: &Governance, config: NacosConfig, data_id: String) {
    let weak = governance.downgrade();
    tokio::spawn(async move {
        let (reader, listening) = match tokio::try_join!(
            open_config_client(&config),
            open_config_client(&config)
        ) {
            Ok(clients) => clients,
            Err(err) => {
                tracing::error!(error = %err, "cannot open the Nacos config client; governance keeps its current rules");
                return;
            }
        };
        let group = config.group.clone();
        tracing::info!(%data_id, %group, "following the governance rules in the Nacos config center");
        let wake = Arc::new(Wake::default());
        let listener: Arc<dyn ConfigChangeListener> = Arc::new(Listener { wake: wake.clone() });
        if let Err(err) = listening
            .add_listener(data_id.clone(), group.clone(), listener)
            .await
        {
            tracing::warn!(%data_id, error = %err, "subscribing to the governance rules in Nacos failed; polling only");
        }
        let mut found = None;
        loop {
            let Some(governance) = Governance::upgrade(&weak) else {
                return;
            };
            match reader.get_config(data_id.clone(), group.clone()).await {
                Ok(response) => {
                    found = Some(true);
                    let _refused = governance.apply("nacos", response.content());
                }
                Err(nacos_sdk::api::error::Error::ConfigNotFound(_)) => {
                    if found == Some(true) {
                        tracing::warn!(%data_id, "the governance rules are gone from Nacos; keeping the last good rules");
                    } else if found.is_none() {
                        tracing::info!(%data_id, %group, "no governance rules in Nacos yet; the embedded defaults apply until they are published");
                    }
                    found = Some(false);
                }
                Err(err) => {
                    tracing::debug!(%data_id, error = %err, "reading the governance rules from Nacos failed");
                }
            }
            drop(governance);
            // Fast until the listener has shown it works on an existing
            // document; then its notifications carry changes, and the slow
            // poll only covers what it misses (a server restart).
            let wait = if found == Some(true) && wake.delivered.load(Ordering::Relaxed) {
                SLOW_POLL
            } else {
                POLL
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = wake.notify.notified() => {}
            }
        }
    });
}

/// What the listener tells the reader.
#[derive(Default)]
struct Wake {
    notify: tokio::sync::Notify,
    /// A notification has arrived: the subscription works.
    delivered: AtomicBool,
}

/// Wakes the reader (on the SDK's thread: nothing else).
struct Listener {
    wake: Arc<Wake>,
}

impl ConfigChangeListener for Listener {
    fn notify(&self, _response: ConfigResponse) {
        self.wake.delivered.store(true, Ordering::Relaxed);
        self.wake.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Governance, GovernanceConfig};

    /// Waits up to 3 s for the gateway's in-flight limit to be `want`.
    async fn in_force(governance: &Governance, want: u32) -> bool {
        for _ in 0..60 {
            if governance.active().rules.gateway.max_in_flight == want {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn the_file_is_followed_and_bad_or_missing_documents_keep_the_last_good_rules() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("rules.json");
        std::fs::write(&path, r#"{"gateway": {"max_in_flight": 7}}"#).expect("write");
        let governance = Governance::start(&GovernanceConfig {
            file: Some(path.clone()),
            ..GovernanceConfig::defaults()
        });
        assert!(in_force(&governance, 7).await, "the first document");
        let first = governance.active().version.clone();

        std::fs::write(&path, r#"{"gateway": {"max_in_flight": "lots"}}"#).expect("write");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            governance.active().version,
            first,
            "a bad document is refused"
        );

        std::fs::write(&path, r#"{"gateway": {"max_in_flight": 900}}"#).expect("write");
        assert!(in_force(&governance, 900).await, "a change");

        std::fs::remove_file(&path).expect("remove");
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            governance.active().rules.gateway.max_in_flight,
            900,
            "a missing file keeps the last good rules"
        );
        std::fs::write(&path, r#"{"gateway": {"max_in_flight": 11}}"#).expect("write");
        assert!(in_force(&governance, 11).await, "the file is back");
    }
}

//! Where documents come from: a watched file and the Nacos config center.
//!
//! The Nacos client (`nacos-sdk`) has gaps this module works around:
//! - `add_listener` never delivers the current value: it is read right
//!   after subscribing;
//! - a data id that does not exist when the listener is added is never
//!   notified on its first publish, deleting one sends nothing, and after
//!   a server restart the first change can be late: the value is also
//!   polled twice a second (the SDK answers from its cache while it has
//!   one, so this costs the server nothing once the document exists), and
//!   the subscription of an existing document is renewed every minute;
//! - the listener runs on the SDK's own thread: it only parses and stores.

use std::{
    path::PathBuf,
    sync::{Arc, Weak},
    time::{Duration, SystemTime},
};

use nacos_sdk::api::config::{ConfigChangeListener, ConfigResponse, ConfigService};

use super::{Governance, Inner};
use crate::discovery::{NacosConfig, nacos::open_config_client};

/// How often sources are re-read.
const POLL: Duration = Duration::from_millis(500);
/// How often the Nacos subscription is renewed.
const RESUBSCRIBE: Duration = Duration::from_secs(60);

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
pub(super) fn follow_nacos(governance: &Governance, config: NacosConfig, data_id: String) {
    let weak = governance.downgrade();
    tokio::spawn(async move {
        let client = match open_config_client(&config).await {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(error = %err, "cannot open the Nacos config client; governance keeps its current rules");
                return;
            }
        };
        let group = config.group.clone();
        tracing::info!(%data_id, %group, "following the governance rules in the Nacos config center");
        let listener: Arc<dyn ConfigChangeListener> = Arc::new(Listener {
            governance: weak.clone(),
        });
        subscribe(&client, &data_id, &group, &listener).await;
        let mut subscribed_at = tokio::time::Instant::now();
        let mut found = None;
        loop {
            let Some(governance) = Governance::upgrade(&weak) else {
                return;
            };
            // Renewed only while the document exists: a missing one is
            // read from the server by every poll anyway.
            if found == Some(true) && subscribed_at.elapsed() >= RESUBSCRIBE {
                subscribe(&client, &data_id, &group, &listener).await;
                subscribed_at = tokio::time::Instant::now();
            }
            match client.get_config(data_id.clone(), group.clone()).await {
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
            tokio::time::sleep(POLL).await;
        }
    });
}

async fn subscribe(
    client: &ConfigService,
    data_id: &str,
    group: &str,
    listener: &Arc<dyn ConfigChangeListener>,
) {
    let _ = client
        .remove_listener(data_id.to_owned(), group.to_owned(), listener.clone())
        .await;
    if let Err(err) = client
        .add_listener(data_id.to_owned(), group.to_owned(), listener.clone())
        .await
    {
        tracing::warn!(%data_id, error = %err, "subscribing to the governance rules in Nacos failed; polling only");
    }
}

/// Parses and stores pushed documents (on the SDK's thread: nothing else).
struct Listener {
    governance: Weak<Inner>,
}

impl ConfigChangeListener for Listener {
    fn notify(&self, response: ConfigResponse) {
        if response.content().is_empty() {
            return; // a deletion: keep the last good rules
        }
        if let Some(governance) = Governance::upgrade(&self.governance) {
            let _refused = governance.apply("nacos", response.content());
        }
    }
}

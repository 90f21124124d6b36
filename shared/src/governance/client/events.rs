//! What the client reports as it goes: instances leaving and rejoining
//! the rotation, breakers changing state, retries and refusals counted.

use opentelemetry::KeyValue;

use super::{Upstream, pick::Backend};
use crate::governance::{breaker::BreakerState, outlier::Change};

impl Upstream {
    /// Logs and counts an instance leaving or rejoining the rotation.
    pub(super) fn rotation_changed(&self, backend: &Backend, change: Option<Change>) {
        let service = &self.inner.service;
        let instance = backend.instance.addr.as_str();
        match change {
            None => {}
            Some(Change::Ejected {
                duration,
                consecutive,
            }) => {
                self.inner.governance.metrics().ejections.add(
                    1,
                    &[
                        KeyValue::new("service", service.clone()),
                        KeyValue::new("instance", instance.to_owned()),
                    ],
                );
                tracing::warn!(
                    %service,
                    instance,
                    consecutive,
                    ejected_ms = duration.as_millis() as u64,
                    "instance ejected: out of rotation after failing"
                );
            }
            Some(Change::Restored) => {
                tracing::info!(%service, instance, "instance answered: back in rotation");
            }
        }
    }

    pub(super) fn count(
        &self,
        counter: &opentelemetry::metrics::Counter<u64>,
        method: &'static str,
        kind: Option<&'static str>,
    ) {
        let mut attributes = vec![
            KeyValue::new("service", self.inner.service.clone()),
            KeyValue::new("method", method),
        ];
        if let Some(kind) = kind {
            attributes.push(KeyValue::new("kind", kind));
        }
        counter.add(1, &attributes);
    }

    pub(super) fn transition(&self, method: &'static str, change: Option<BreakerState>) {
        let Some(state) = change else { return };
        let metrics = self.inner.governance.metrics();
        let attributes = [
            KeyValue::new("service", self.inner.service.clone()),
            KeyValue::new("method", method),
        ];
        metrics.breaker_state.record(state as i64, &attributes);
        metrics.breaker_transitions.add(
            1,
            &[
                attributes[0].clone(),
                attributes[1].clone(),
                KeyValue::new("state", state.as_str()),
            ],
        );
        tracing::warn!(service = %self.inner.service, method, state = state.as_str(), "circuit breaker changed state");
    }
}

//! Which instance takes a call: the live set of backends (an instance and
//! its channel), lanes, the caller's own zone first (locality), outlier
//! detection's admission, and a weighted pick.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use tonic::{Status, transport::Channel};

use super::Upstream;
use crate::{
    discovery::{ChannelSettings, Instance, channel},
    governance::{
        context::CallContext,
        outlier::{Admission, Availability, InstanceHealth},
        rules::Rules,
    },
};

#[derive(Debug, Clone)]
pub(super) struct Backend {
    pub(super) instance: Instance,
    pub(super) channel: Channel,
    /// Outlier detection's view of it, kept across instance-set updates.
    pub(super) health: Arc<InstanceHealth>,
}

/// Which instances a call may go to, and which it prefers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Selector {
    lane: LaneChoice,
    zone: Option<Zone>,
}

/// The lane part of a [`Selector`].
#[derive(Debug, Clone, Default, PartialEq)]
enum LaneChoice {
    /// Instances that serve no lane (fall back to any).
    #[default]
    Default,
    /// Instances carrying all of this metadata (fall back to the default ones).
    Lane(BTreeMap<String, String>),
}

/// The caller's zone, preferred while enough of its instances are in
/// rotation (`routing.SERVICE.locality`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Zone {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) min_healthy_percent: f64,
}

impl Zone {
    fn holds(&self, backend: &Backend) -> bool {
        backend.instance.metadata.get(&self.key) == Some(&self.value)
    }

    /// Whether the zone keeps its calls: it has instances, and at least
    /// `min_healthy_percent` of them are in rotation.
    pub(super) fn keeps_calls(&self, backends: &[Backend], now: Instant) -> bool {
        let local: Vec<&Backend> = backends
            .iter()
            .filter(|b| b.instance.weight > 0.0 && self.holds(b))
            .collect();
        let in_rotation = local
            .iter()
            .filter(|b| b.health.availability(now) != Availability::Out)
            .count();
        !local.is_empty()
            && in_rotation as f64 * 100.0 >= self.min_healthy_percent * local.len() as f64
    }
}

impl Upstream {
    pub(super) fn selector(&self, rules: &Rules, context: &CallContext) -> Selector {
        let routing = rules.routing.get(&self.inner.service);
        let zone = routing
            .and_then(|r| r.locality.as_ref())
            .and_then(|locality| {
                let own = self.inner.governance.own_metadata().get(locality.key())?;
                Some(Zone {
                    key: locality.key().to_owned(),
                    value: own.clone(),
                    min_healthy_percent: locality.min_healthy_percent(),
                })
            });
        let Some(lane) = &context.lane else {
            return Selector {
                lane: LaneChoice::Default,
                zone,
            };
        };
        let defined = routing.and_then(|routing| routing.lanes.iter().find(|l| *l.name == **lane));
        let wanted = match defined {
            Some(lane) => lane.instances.clone(),
            None => BTreeMap::from([("lane".to_owned(), lane.to_string())]),
        };
        Selector {
            lane: LaneChoice::Lane(wanted),
            zone,
        }
    }

    /// A backend for `selector`, optionally avoiding one address, and the
    /// admission of the call to it (an instance on probation takes one
    /// call at a time).
    pub(super) fn pick_backend(
        &self,
        selector: &Selector,
        avoid: Option<&str>,
    ) -> Result<(Backend, Admission), Status> {
        let backends = self.inner.backends.borrow();
        let now = Instant::now();
        let mut skip: Vec<&str> = avoid.into_iter().collect();
        // The caller's zone first, while it keeps its calls; then any zone.
        let zone = selector
            .zone
            .as_ref()
            .filter(|zone| zone.keeps_calls(&backends, now));
        // Each round either admits a call or skips one more instance whose
        // trial another call took in the meantime.
        for _ in 0..=backends.len() {
            let n = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
            let pick = |eligible: &dyn Fn(&Backend) -> bool| {
                zone.and_then(|zone| {
                    pick(&backends, n, &skip, now, &|b| zone.holds(b) && eligible(b))
                        .filter(|(_, forced)| !forced)
                })
                .or_else(|| pick(&backends, n, &skip, now, eligible))
            };
            let picked = match &selector.lane {
                LaneChoice::Default => {
                    pick(&|b| b.instance.lane().is_none()).or_else(|| pick(&|_| true))
                }
                LaneChoice::Lane(wanted) => pick(&|b| b.instance.matches(wanted))
                    .or_else(|| pick(&|b| b.instance.lane().is_none())),
            };
            let Some((backend, forced)) = picked else {
                break;
            };
            if let Some(admission) = backend.health.admit(now, forced) {
                return Ok((backend.clone(), admission));
            }
            skip.push(backend.instance.addr.as_str());
        }
        let other = if avoid.is_some() { "other " } else { "" };
        Err(Status::unavailable(format!(
            "no {other}instance of {} is available",
            self.inner.service
        )))
    }
}

/// Weighted pick among `eligible` backends with weight > 0 that outlier
/// detection lets take a call, leaving out `skip`; when none may, among all
/// of them (`true`: forced, there is nowhere better to go). Plain round
/// robin when weights are equal, otherwise the `n`-th point of a
/// low-discrepancy sequence over the cumulative weights.
pub(super) fn pick<'a>(
    backends: &'a [Backend],
    n: u64,
    skip: &[&str],
    now: Instant,
    eligible: &dyn Fn(&Backend) -> bool,
) -> Option<(&'a Backend, bool)> {
    let candidates: Vec<&Backend> = backends
        .iter()
        .filter(|b| {
            b.instance.weight > 0.0 && !skip.contains(&b.instance.addr.as_str()) && eligible(b)
        })
        .collect();
    let usable: Vec<&Backend> = candidates
        .iter()
        .copied()
        .filter(|b| b.health.availability(now) != Availability::Out)
        .collect();
    let forced = usable.is_empty();
    let eligible = if forced { candidates } else { usable };
    weighted(&eligible, n).map(|backend| (backend, forced))
}

fn weighted<'a>(eligible: &[&'a Backend], n: u64) -> Option<&'a Backend> {
    let count = eligible.len() as u64;
    let first = eligible.first()?.instance.weight;
    if eligible
        .iter()
        .all(|b| (b.instance.weight - first).abs() < f64::EPSILON)
    {
        return Some(eligible[(n % count) as usize]);
    }
    let total: f64 = eligible.iter().map(|b| b.instance.weight).sum();
    // Golden-ratio sequence: evenly spread points in [0, 1) without shared state.
    let point = ((n as f64) * 0.618_033_988_749_895).fract() * total;
    let mut acc = 0.0;
    for backend in eligible {
        acc += backend.instance.weight;
        if point < acc {
            return Some(backend);
        }
    }
    eligible.last().copied()
}

pub(super) fn build_backends(
    current: &[Backend],
    instances: &[Instance],
    settings: &ChannelSettings,
    service: &str,
) -> Arc<[Backend]> {
    instances
        .iter()
        .filter_map(|instance| {
            if let Some(existing) = current.iter().find(|b| b.instance.addr == instance.addr) {
                return Some(Backend {
                    instance: instance.clone(),
                    channel: existing.channel.clone(),
                    health: existing.health.clone(),
                });
            }
            match channel(&instance.addr, settings, service) {
                Ok(channel) => Some(Backend {
                    instance: instance.clone(),
                    channel,
                    health: Arc::default(),
                }),
                Err(err) => {
                    tracing::warn!(service, addr = %instance.addr, error = %err, "ignoring instance with an unusable address");
                    None
                }
            }
        })
        .collect()
}

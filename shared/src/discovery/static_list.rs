//! Fixed address lists per service (`EASYNOTE_REGISTRY=static`, the
//! embedded default): nothing to register, nothing ever changes.

use std::{collections::HashMap, fmt, sync::Arc, time::Duration};

use tokio::sync::watch;

use super::{BoxFuture, DiscoveryError, Instance, Registration, Registry};

/// Fixed lists of addresses per service.
#[derive(Clone)]
pub struct StaticDiscovery {
    // The senders stay here so the sets stay current for as long as discovery lives.
    services: Arc<HashMap<String, watch::Sender<Arc<[Instance]>>>>,
}

impl fmt::Debug for StaticDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (service, tx) in self.services.iter() {
            let addrs: Vec<String> = tx.borrow().iter().map(|i| i.addr.clone()).collect();
            map.entry(service, &addrs);
        }
        map.finish()
    }
}

impl StaticDiscovery {
    /// Discovery from `(service, addresses)` pairs.
    pub fn new<S: Into<String>>(services: impl IntoIterator<Item = (S, Vec<String>)>) -> Self {
        let services = services
            .into_iter()
            .map(|(name, addrs)| {
                let set: Arc<[Instance]> = addrs.into_iter().map(Instance::new).collect();
                (name.into(), watch::Sender::new(set))
            })
            .collect();
        Self {
            services: Arc::new(services),
        }
    }

    fn subscribe(&self, service: &str) -> Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError> {
        self.services
            .get(service)
            .map(watch::Sender::subscribe)
            .ok_or_else(|| DiscoveryError::UnknownService(service.to_owned()))
    }
}

impl Registry for StaticDiscovery {
    fn subscribe<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError>> {
        Box::pin(std::future::ready(self.subscribe(service)))
    }

    fn register<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        tracing::debug!(service = %registration.service, addr = %registration.addr, "static discovery: nothing to register");
        Box::pin(std::future::ready(Ok(())))
    }

    fn deregister<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        tracing::debug!(service = %registration.service, "static discovery: nothing to deregister");
        Box::pin(std::future::ready(Ok(())))
    }

    fn deregister_grace(&self) -> Duration {
        Duration::ZERO
    }
}

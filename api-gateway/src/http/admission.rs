//! Connections beyond the bounds: counted per peer address, and refused with
//! a closing answer (see the parent module's documentation).

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Semaphore,
    time::Instant,
};

use super::HttpConfig;
use crate::{envelope::Envelope, error::ApiError};

/// Connections being refused at once, each for at most [`REFUSAL_LINGER`].
const REFUSING_AT_ONCE: usize = 64;
/// How long a refused connection is read from after its answer, so that
/// the request bytes already sent do not turn the close into a reset that
/// destroys the answer before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// At most one warning per this long while connections are refused.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Open connections per peer address (an IPv6 peer's /64).
#[derive(Debug, Default)]
pub(super) struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection from `key`, unless it has `max`.
    pub(super) fn take(self: &Arc<Self>, key: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    pub(super) fn open(&self, key: IpAddr) -> usize {
        self.lock().get(&key).copied().unwrap_or(0)
    }
}

/// One connection counted against its address until dropped; the table
/// holds only addresses with open connections.
#[derive(Debug)]
pub(super) struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    /// `EASYNOTE_HTTP_MAX_CONNECTIONS` are open.
    Total,
    /// The address has `EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS` open.
    PerAddress(IpAddr),
}

/// Answers connections beyond the bounds.
#[derive(Debug)]
pub(super) struct Refusals {
    answering: Arc<Semaphore>,
    pub(super) full: Arc<[u8]>,
    pub(super) per_address: Arc<[u8]>,
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// A whole HTTP/1.1 answer that closes the connection, with the envelope.
fn closing_answer(status: &str, error: &ApiError, message: &str) -> Arc<[u8]> {
    let body = serde_json::to_vec(&Envelope::<()>::error(error.code(), message.to_owned()))
        .expect("an envelope serializes");
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
         x-content-type-options: nosniff\r\ncache-control: no-store\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer.into()
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            answering: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            full: closing_answer(
                "503 Service Unavailable",
                &ApiError::Overloaded,
                "too many connections, please retry",
            ),
            per_address: closing_answer(
                "429 Too Many Requests",
                &ApiError::RateLimited { retry_after: 1 },
                "too many connections from your address, please retry",
            ),
            refused: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }
}

impl Refusals {
    /// Answers and closes; past [`REFUSING_AT_ONCE`] answers in progress,
    /// just closes.
    pub(super) fn refuse(&self, mut tcp: TcpStream, why: Refusal, config: HttpConfig) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut last = self
                .last_warning
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|at| at.elapsed() >= REFUSAL_WARN_EVERY) {
                *last = Some(Instant::now());
                match why {
                    Refusal::Total => tracing::warn!(
                        max_connections = config.max_connections,
                        refused_so_far = refused,
                        "at EASYNOTE_HTTP_MAX_CONNECTIONS: new connections are answered 503"
                    ),
                    Refusal::PerAddress(address) => tracing::warn!(
                        %address,
                        max_connections_per_address = config.max_connections_per_address,
                        refused_so_far = refused,
                        "an address at EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS: \
                         its new connections are answered 429"
                    ),
                }
            }
        }
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        let answer = match why {
            Refusal::Total => self.full.clone(),
            Refusal::PerAddress(_) => self.per_address.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                tcp.write_all(&answer).await?;
                tcp.shutdown().await?;
                let mut sink = [0u8; 1024];
                while tcp.read(&mut sink).await? > 0 {}
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

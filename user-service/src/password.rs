//! Password hashing: argon2id PHC strings, verified in constant time, on a
//! small pool of worker threads that each reuse one work area.
//!
//! Parameters: m = 7 MiB, t = 5, p = 1, one of the settings OWASP lists as
//! equivalent to its m = 19 MiB, t = 2 recommendation (the same work, in
//! less memory). Memory is the point: a hash needs its whole work area at
//! once, so with fresh allocations per hash the allocator keeps a dirty
//! arena per thread that ever hashed and a login burst left the service at
//! about 1 GB of RSS. Here each of the `available_parallelism` workers
//! allocates its area once and reuses it, so hashing holds at most
//! `workers × 7 MiB`, whatever the load; waiting jobs queue, up to
//! [`QUEUE_PER_WORKER`] per worker and [`Purpose`]. Beyond that a hash is
//! refused at once ([`HashError::Busy`], `RESOURCE_EXHAUSTED` to the
//! caller), and a queued job whose caller has gone (a deadline passed, a
//! client hung up) is skipped rather than computed for nobody.
//!
//! Logins and registrations do not share a queue: registrations are the
//! cheap way to make a server hash (one address, new names), and with one
//! queue a registration flood left every login refused. Each purpose has
//! its own queue bound; a free worker takes a waiting login first, and at
//! most half the workers (at least one) hash registrations at once, so a
//! login waits for at most one hash when registrations fill everything else.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Condvar, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::{Output, ParamsString, SaltString, rand_core::OsRng},
};
use tokio::sync::oneshot;

/// Work area, in 1 KiB blocks.
const M_COST_KIB: u32 = 7 * 1024;
const T_COST: u32 = 5;
const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;
/// Jobs that may wait per worker before hashing is refused.
pub const QUEUE_PER_WORKER: usize = 32;

/// Hashing could not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The argon2 implementation refused.
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
    /// The worker pool is gone (it lives as long as the hasher).
    #[error("hashing worker stopped")]
    WorkerGone,
    /// The queue is full: too many logins or registrations at once.
    #[error("password hashing is at capacity")]
    Busy,
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// What a job is for, which decides its queue and its priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Checking a password at login: taken first.
    Login,
    /// Hashing a new account's password: at most half the workers at once.
    Registration,
}

/// The queues the workers take jobs from.
struct Queues {
    login: VecDeque<Job>,
    registration: VecDeque<Job>,
    /// Registrations being hashed now.
    registering: usize,
    /// The last handle is gone: the workers stop once the queues are empty.
    closed: bool,
}

struct Pool {
    queues: Mutex<Queues>,
    ready: Condvar,
    /// Jobs each queue may hold.
    bound: usize,
    /// Workers that may hash registrations at once.
    registration_workers: usize,
    /// Registration hashes computed, for the tests and for operators.
    hashed: AtomicU64,
}

impl Pool {
    /// The next job for a worker, or `None` when the pool is closed and drained.
    fn next(&self) -> Option<(Purpose, Job)> {
        let mut queues = self.queues.lock().expect("hashing queues lock");
        loop {
            if let Some(job) = queues.login.pop_front() {
                return Some((Purpose::Login, job));
            }
            if queues.registering < self.registration_workers
                && let Some(job) = queues.registration.pop_front()
            {
                queues.registering += 1;
                return Some((Purpose::Registration, job));
            }
            if queues.closed && queues.login.is_empty() && queues.registration.is_empty() {
                return None;
            }
            queues = self.ready.wait(queues).expect("hashing queues lock");
        }
    }

    fn done(&self, purpose: Purpose) {
        if purpose == Purpose::Registration {
            self.queues.lock().expect("hashing queues lock").registering -= 1;
            // A registration waiting for this slot may go now.
            self.ready.notify_all();
        }
    }

    fn submit(&self, purpose: Purpose, job: Job) -> Result<(), HashError> {
        let mut queues = self.queues.lock().expect("hashing queues lock");
        if queues.closed {
            return Err(HashError::WorkerGone);
        }
        let queue = match purpose {
            Purpose::Login => &mut queues.login,
            Purpose::Registration => &mut queues.registration,
        };
        if queue.len() >= self.bound {
            return Err(HashError::Busy);
        }
        queue.push_back(job);
        drop(queues);
        // Every waiting worker: the one woken must be able to take it (a
        // registration may not fit within the registration share).
        self.ready.notify_all();
        Ok(())
    }
}

/// Closes the pool when the last clone of the hasher goes.
struct Handle(Arc<Pool>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.queues.lock().expect("hashing queues lock").closed = true;
        self.0.ready.notify_all();
    }
}

/// Hashes and verifies passwords with argon2id on dedicated threads.
#[derive(Clone)]
pub struct PasswordHasher {
    pool: Arc<Handle>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("queue_bound", &self.pool.0.bound)
            .field("registration_workers", &self.pool.0.registration_workers)
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self::with_workers(workers)
    }
}

fn params() -> Params {
    Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN)).expect("valid argon2 parameters")
}

/// Verifying against this hash when the user does not exist makes an unknown
/// user take as long as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let mut memory = Vec::new();
    hash_now(
        b"not a real password; only here to spend the same time",
        &mut memory,
    )
    .expect("hashing a constant cannot fail")
});

/// The work area for `params`, grown on first use and kept.
fn area<'a>(memory: &'a mut Vec<Block>, params: &Params) -> &'a mut [Block] {
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    &mut memory[..blocks]
}

fn hash_now(
    password: &[u8],
    memory: &mut Vec<Block>,
) -> Result<String, argon2::password_hash::Error> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let mut out = [0u8; OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt_bytes, &mut out, area(memory, &params))?;
    Ok(PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    }
    .to_string())
}

/// Whether `password` hashes to `phc` (any argon2 variant and parameters
/// the string names); the comparison of the outputs is constant-time.
fn verify_now(password: &[u8], phc: &str, memory: &mut Vec<Block>) -> bool {
    let mut check = || -> Result<bool, argon2::password_hash::Error> {
        let parsed = PasswordHash::new(phc)?;
        let expected = parsed.hash.ok_or(argon2::password_hash::Error::Password)?;
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let params = Params::try_from(&parsed)?;
        let salt = parsed
            .salt
            .ok_or(argon2::password_hash::Error::SaltInvalid(
                argon2::password_hash::errors::InvalidValue::Malformed,
            ))?;
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let mut out = vec![0u8; expected.len()];
        // A hash with a larger work area than ours (older parameters) gets
        // a one-off area, so the worker's own stays at its usual size.
        let mut one_off = Vec::new();
        let memory = if params.block_count() > crate::password::params().block_count() {
            &mut one_off
        } else {
            &mut *memory
        };
        Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
            password,
            salt_bytes,
            &mut out,
            area(memory, &params),
        )?;
        // `Output`'s equality is constant-time.
        Ok(Output::new(&out)? == expected)
    };
    check().unwrap_or(false)
}

impl PasswordHasher {
    /// A pool of `workers` hashing threads (at least one); they stop when
    /// the last clone of the hasher is dropped.
    pub fn with_workers(workers: usize) -> Self {
        let workers = workers.max(1);
        let pool = Arc::new(Pool {
            queues: Mutex::new(Queues {
                login: VecDeque::new(),
                registration: VecDeque::new(),
                registering: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            bound: workers * QUEUE_PER_WORKER,
            registration_workers: (workers / 2).max(1),
            hashed: AtomicU64::new(0),
        });
        for i in 0..workers {
            let pool = pool.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    while let Some((purpose, job)) = pool.next() {
                        job(&mut memory);
                        pool.done(purpose);
                    }
                })
                .expect("spawning a hashing thread");
        }
        Self {
            pool: Arc::new(Handle(pool)),
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        purpose: Purpose,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // Nobody waits for this answer any more: skip the work.
            if reply.is_closed() {
                return;
            }
            let _ = reply.send(work(memory));
        });
        self.pool.0.submit(purpose, job)?;
        answer.await.map_err(|_| HashError::WorkerGone)
    }

    /// How many new passwords this hasher has hashed (registrations).
    pub fn hashed(&self) -> u64 {
        self.pool.0.hashed.load(Ordering::Relaxed)
    }

    /// A PHC string (`$argon2id$v=19$m=7168,t=5,p=1$…`) with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let pool = self.pool.0.clone();
        self.run(Purpose::Registration, move |memory| {
            pool.hashed.fetch_add(1, Ordering::Relaxed);
            hash_now(password.as_bytes(), memory)
        })
        .await?
        .map_err(HashError::Argon2)
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) it does
    /// the same work and answers `false`.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        self.run(Purpose::Login, move |memory| match phc {
            Some(phc) => verify_now(password.as_bytes(), &phc, memory),
            None => {
                verify_now(password.as_bytes(), &DUMMY_HASH, memory);
                false
            }
        })
        .await
    }

    /// Computes the dummy hash ahead of the first login of an unknown user.
    pub fn warm_up(&self) {
        std::thread::spawn(|| LazyLock::force(&DUMMY_HASH));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_abandoned_jobs_are_skipped() {
        let hasher = PasswordHasher::with_workers(1);
        // Hold the only worker until released.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let held = hasher.clone();
        let blocker = tokio::spawn(async move {
            held.run(Purpose::Login, move |_| {
                let _ = started.send(());
                let _ = wait.recv();
            })
            .await
        });
        running.await.expect("the worker took the blocker");
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Queued jobs whose callers give up at once.
        let mut refused = 0;
        for _ in 0..QUEUE_PER_WORKER + 4 {
            let ran = ran.clone();
            let job = hasher.run(Purpose::Login, move |_| {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
            match tokio::time::timeout(std::time::Duration::from_millis(1), job).await {
                Ok(Err(HashError::Busy)) => refused += 1,
                Ok(other) => panic!("the worker is held: {other:?}"),
                Err(_) => {} // queued, then abandoned
            }
        }
        assert!(refused >= 4, "beyond the queue bound: refused {refused}");
        release.send(()).expect("release");
        blocker.await.expect("join").expect("blocker ran");
        // The worker skips the abandoned jobs, then takes new work.
        let mut drained = false;
        for _ in 0..500 {
            match hasher.hash("after".into()).await {
                Ok(_) => {
                    drained = true;
                    break;
                }
                Err(HashError::Busy) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(err) => panic!("{err}"),
            }
        }
        assert!(drained, "the queue drained");
        assert_eq!(
            ran.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "abandoned jobs were skipped"
        );
    }

    #[tokio::test]
    async fn registrations_filling_their_queue_leave_logins_answering() {
        let hasher = PasswordHasher::with_workers(2);
        // Hold the one worker registrations may use.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel::<()>();
        let held = hasher.clone();
        let blocker = tokio::spawn(async move {
            held.run(Purpose::Registration, move |_| {
                let _ = started.send(());
                let _ = wait.recv();
            })
            .await
        });
        running.await.expect("a worker took the blocker");
        // Fill the registration queue until it refuses.
        let mut queued = Vec::new();
        loop {
            let (reply, answer) = oneshot::channel::<()>();
            match hasher.pool.0.submit(
                Purpose::Registration,
                Box::new(move |_: &mut Vec<Block>| {
                    let _ = reply.send(());
                }),
            ) {
                Ok(()) => queued.push(answer),
                Err(HashError::Busy) => break,
                Err(err) => panic!("{err}"),
            }
        }
        assert_eq!(queued.len(), 2 * QUEUE_PER_WORKER);
        assert!(matches!(
            hasher.hash("one more".into()).await,
            Err(HashError::Busy)
        ));
        // A login is neither refused nor stuck behind the registrations:
        // the other worker takes it while the registration share is full.
        let matched = hasher
            .verify("a login".into(), None)
            .await
            .expect("a login is answered during a registration flood");
        assert!(!matched);
        release.send(()).expect("release");
        blocker.await.expect("join").expect("blocker ran");
        for answer in queued {
            answer
                .await
                .expect("the queued registrations run afterwards");
        }
    }

    #[tokio::test]
    async fn only_new_passwords_count_as_hashed() {
        let hasher = PasswordHasher::with_workers(1);
        let phc = hasher.hash("counted".into()).await.expect("hash");
        assert!(
            hasher
                .verify("counted".into(), Some(phc))
                .await
                .expect("verify")
        );
        assert_eq!(hasher.hashed(), 1);
    }

    #[tokio::test]
    async fn hashes_are_salted_argon2id_and_verify() {
        let hasher = PasswordHasher::default();
        let a = hasher.hash("correct horse".into()).await.expect("hash");
        let b = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{a}");
        assert_ne!(a, b, "two hashes of one password must differ by salt");
        assert!(
            hasher
                .verify("correct horse".into(), Some(a.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("wrong horse".into(), Some(a))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("correct horse".into(), None)
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("x".into(), Some("not a phc string".into()))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn interoperates_with_the_reference_implementation() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = PasswordHasher::with_workers(1);
        // Ours verify with the argon2 crate's own verifier...
        let ours = hasher.hash("hunter42".into()).await.expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(
            Argon2::default()
                .verify_password(b"hunter42", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"hunter43", &parsed)
                .is_err()
        );
        // ...and hashes made elsewhere, with other parameters (here the
        // OWASP m = 19 MiB default), verify with ours.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"hunter42", &salt)
            .expect("hash")
            .to_string();
        assert!(theirs.contains("m=19456,t=2,p=1"), "{theirs}");
        assert!(
            hasher
                .verify("hunter42".into(), Some(theirs.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !hasher
                .verify("hunter43".into(), Some(theirs))
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn a_clone_keeps_the_pool_alive() {
        let hasher = PasswordHasher::with_workers(2);
        let clone = hasher.clone();
        drop(hasher);
        assert!(
            clone.verify("x".into(), None).await.is_ok(),
            "a clone keeps the pool"
        );
    }
}

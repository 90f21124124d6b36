//! Password hashing: argon2id PHC strings, verified in constant time, on the
//! blocking pool and with bounded concurrency (each hash takes ~19 MiB).

use std::sync::{Arc, LazyLock};

use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

/// Hashing could not run.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The argon2 implementation refused.
    #[error("argon2: {0}")]
    Argon2(argon2::password_hash::Error),
    /// The blocking task died.
    #[error("hashing task failed")]
    Join(#[from] tokio::task::JoinError),
}

/// Hashes and verifies passwords with argon2id (OWASP-recommended defaults:
/// m = 19 MiB, t = 2, p = 1).
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
}

impl Default for PasswordHasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Self {
            permits: Arc::new(Semaphore::new(cores * 2)),
        }
    }
}

/// Verifying against this hash when the user does not exist makes an unknown
/// user take as long as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    hash_now("not a real password; only here to spend the same time")
        .expect("hashing a constant cannot fail")
});

fn hash_now(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_now(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

impl PasswordHasher {
    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await?
            .map_err(HashError::Argon2)
    }

    /// Whether `password` matches `phc`; with `None` (unknown user) it does
    /// the same work and answers `false`.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        Ok(tokio::task::spawn_blocking(move || match phc {
            Some(phc) => verify_now(&password, &phc),
            None => {
                verify_now(&password, &DUMMY_HASH);
                false
            }
        })
        .await?)
    }

    /// Computes the dummy hash ahead of the first login of an unknown user.
    pub fn warm_up(&self) {
        tokio::task::spawn_blocking(|| LazyLock::force(&DUMMY_HASH));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_salted_argon2id_and_verify() {
        let hasher = PasswordHasher::default();
        let a = hasher.hash("correct horse".into()).await.expect("hash");
        let b = hasher.hash("correct horse".into()).await.expect("hash");
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
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
}

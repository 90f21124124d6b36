//! Whether a valid token is still in force: logged-out tokens are refused.
//!
//! user-service keeps the truth (`RevokeTokens`, `CheckToken`): a per-user
//! token epoch, which "log out everywhere" moves on (every token carries the
//! epoch it was issued in, so all earlier ones stop at once), and a denylist
//! of single logged-out `jti`s, each kept until its token would have
//! expired anyway. The gateway asks once per token and then trusts the
//! answer for `EASYNOTE_REVOCATION_CACHE_TTL` (default 1 s): a logout
//! through another gateway replica takes effect here within that bound; one
//! through this replica, at once (its own cache is updated as it answers).
//!
//! When user-service cannot answer and the cached answer is older than the
//! bound, the request fails (503, as other calls to an unavailable service
//! do) rather than honouring a token that may have been revoked: closed,
//! not open. Little is lost by it: with user-service down, logins and note
//! reads (which name their authors through it) fail too.

use std::{
    collections::HashMap,
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{
    auth::{AuthUser, TokenId},
    error::ApiError,
};
use easynote_shared::{
    config::{ConfigError, Env},
    governance::Upstream,
    proto::user::v1::{CheckTokenRequest, RevokeTokensRequest},
    rpc,
};

/// Answers kept at most; beyond it the stale ones go, then all of them.
const MAX_ENTRIES: usize = 100_000;

/// Longest `EASYNOTE_REVOCATION_CACHE_TTL`: a logout must not take longer
/// than this to reach every replica.
const MAX_CACHE_TTL: Duration = Duration::from_secs(60);

/// How long an answer about a token is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationConfig {
    /// `EASYNOTE_REVOCATION_CACHE_TTL` (default 1s, at most 60s; 0 asks
    /// user-service on every request).
    pub cache_ttl: Duration,
}

impl Default for RevocationConfig {
    fn default() -> Self {
        Self {
            cache_ttl: Duration::from_secs(1),
        }
    }
}

impl RevocationConfig {
    /// Reads `EASYNOTE_REVOCATION_CACHE_TTL`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let cache_ttl = env.duration("EASYNOTE_REVOCATION_CACHE_TTL", Self::default().cache_ttl)?;
        if cache_ttl > MAX_CACHE_TTL {
            return Err(ConfigError::invalid(
                "EASYNOTE_REVOCATION_CACHE_TTL",
                "must be at most 60s: it is how long a logout may take to reach this gateway",
            ));
        }
        Ok(Self { cache_ttl })
    }
}

#[derive(Debug, Clone, Copy)]
struct Answer {
    at: Instant,
    in_force: bool,
}

/// The gateway's view of which tokens are revoked, fresh within the bound.
#[derive(Debug)]
pub struct Revocations {
    ttl: Duration,
    answers: Mutex<HashMap<(i64, u128), Answer>>,
}

impl Revocations {
    /// An empty cache trusting answers for `config.cache_ttl`.
    pub fn new(config: RevocationConfig) -> Self {
        Self {
            ttl: config.cache_ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when `user`'s token is in force; 401 when it was revoked; the
    /// call's error when user-service could not say and no fresh answer
    /// is at hand.
    pub async fn check(&self, users: &Upstream, user: &AuthUser) -> Result<(), ApiError> {
        let (id, token) = (user.id, user.token);
        self.check_with(user, Instant::now(), || async move {
            let request = CheckTokenRequest {
                user_id: id,
                jti: token.jti_hex(),
            };
            let state = users.invoke::<rpc::CheckToken>(request).await?.into_inner();
            Ok(!state.revoked && token.epoch >= state.token_epoch)
        })
        .await
    }

    /// [`Revocations::check`] at `now`, with the question to user-service given.
    async fn check_with<F, Fut>(
        &self,
        user: &AuthUser,
        now: Instant,
        ask: F,
    ) -> Result<(), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool, ApiError>>,
    {
        let key = (user.id, user.token.jti);
        let cached = self.lock().get(&key).copied();
        let in_force = match cached {
            Some(answer) if now.saturating_duration_since(answer.at) < self.ttl => answer.in_force,
            _ => {
                let in_force = ask().await?;
                self.remember(key, Answer { at: now, in_force });
                in_force
            }
        };
        if in_force {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("token has been revoked"))
        }
    }

    /// Logs out `user`'s token, or with `everywhere` every token of the
    /// user; this replica refuses them from now on.
    pub async fn revoke(
        &self,
        users: &Upstream,
        user: &AuthUser,
        everywhere: bool,
    ) -> Result<(), ApiError> {
        let request = RevokeTokensRequest {
            user_id: user.id,
            jti: user.token.jti_hex(),
            expires_at: i64::try_from(user.token.expires_at).unwrap_or(i64::MAX),
            everywhere,
        };
        users.invoke::<rpc::RevokeTokens>(request).await?;
        self.revoked(user.id, user.token, everywhere, Instant::now());
        Ok(())
    }

    /// Records a revocation this replica made at `now`.
    fn revoked(&self, user_id: i64, token: TokenId, everywhere: bool, now: Instant) {
        let mut answers = self.lock();
        if everywhere {
            // The next request with any of them asks again, and hears of
            // the new epoch.
            answers.retain(|(id, _), _| *id != user_id);
        }
        answers.insert(
            (user_id, token.jti),
            Answer {
                at: now,
                in_force: false,
            },
        );
    }

    /// Forgets answers older than the bound (every minute, with the rate
    /// limiters' idle buckets).
    pub fn prune(&self) {
        let now = Instant::now();
        self.lock()
            .retain(|_, answer| now.saturating_duration_since(answer.at) < self.ttl);
    }

    fn remember(&self, key: (i64, u128), answer: Answer) {
        let mut answers = self.lock();
        if answers.len() >= MAX_ENTRIES && !answers.contains_key(&key) {
            let now = Instant::now();
            answers.retain(|_, a| now.saturating_duration_since(a.at) < self.ttl);
            if answers.len() >= MAX_ENTRIES {
                answers.clear();
            }
        }
        answers.insert(key, answer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, u128), Answer>> {
        self.answers.lock().expect("revocation cache lock")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn user(id: i64, jti: u128) -> AuthUser {
        AuthUser {
            id,
            token: TokenId {
                jti,
                epoch: 0,
                expires_at: u64::MAX,
            },
        }
    }

    /// Asks at `now`, counting the questions, answering `in_force`.
    async fn check(
        revocations: &Revocations,
        user: &AuthUser,
        now: Instant,
        asked: &AtomicUsize,
        in_force: bool,
    ) -> Result<(), ApiError> {
        revocations
            .check_with(user, now, || async {
                asked.fetch_add(1, Ordering::SeqCst);
                Ok(in_force)
            })
            .await
    }

    #[tokio::test]
    async fn an_answer_is_trusted_for_the_configured_time_and_no_longer() {
        let revocations = Revocations::new(RevocationConfig {
            cache_ttl: Duration::from_secs(1),
        });
        let (alice, asked, start) = (user(1, 7), AtomicUsize::new(0), Instant::now());
        check(&revocations, &alice, start, &asked, true)
            .await
            .expect("in force");
        // Revoked elsewhere meanwhile: the cached answer still holds...
        let almost = start + Duration::from_millis(999);
        check(&revocations, &alice, almost, &asked, false)
            .await
            .expect("cached");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        // ...until the bound, when user-service is asked again.
        let bound = start + Duration::from_secs(1);
        let refused = check(&revocations, &alice, bound, &asked, false).await;
        assert!(
            matches!(refused, Err(ApiError::Unauthorized(_))),
            "{refused:?}"
        );
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn with_no_cache_every_request_asks() {
        let revocations = Revocations::new(RevocationConfig {
            cache_ttl: Duration::ZERO,
        });
        let (alice, asked, now) = (user(1, 7), AtomicUsize::new(0), Instant::now());
        for _ in 0..3 {
            check(&revocations, &alice, now, &asked, true)
                .await
                .expect("in force");
        }
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stale_answer_is_not_used_when_user_service_cannot_say() {
        let revocations = Revocations::new(RevocationConfig::default());
        let (alice, asked, start) = (user(1, 7), AtomicUsize::new(0), Instant::now());
        check(&revocations, &alice, start, &asked, true)
            .await
            .expect("in force");
        let later = start + Duration::from_secs(2);
        let failed = revocations
            .check_with(&alice, later, || async { Err(ApiError::Overloaded) })
            .await;
        assert!(
            matches!(failed, Err(ApiError::Overloaded)),
            "fails closed: {failed:?}"
        );
    }

    #[tokio::test]
    async fn a_logout_here_is_refused_here_at_once() {
        let revocations = Revocations::new(RevocationConfig {
            cache_ttl: Duration::from_secs(60),
        });
        let (asked, now) = (AtomicUsize::new(0), Instant::now());
        let (this, other, someone_else) = (user(1, 7), user(1, 8), user(2, 9));
        for user in [&this, &other, &someone_else] {
            check(&revocations, user, now, &asked, true)
                .await
                .expect("in force");
        }
        revocations.revoked(this.id, this.token, false, now);
        assert!(check(&revocations, &this, now, &asked, true).await.is_err());
        check(&revocations, &other, now, &asked, true)
            .await
            .expect("the other token is cached");
        assert_eq!(asked.load(Ordering::SeqCst), 3);

        revocations.revoked(other.id, other.token, true, now);
        assert!(
            check(&revocations, &other, now, &asked, true)
                .await
                .is_err()
        );
        // Everywhere: the user's other cached answers are dropped, so the
        // next request asks (and hears of the new epoch).
        check(&revocations, &user(1, 10), now, &asked, false)
            .await
            .expect_err("asked");
        check(&revocations, &someone_else, now, &asked, true)
            .await
            .expect("not this user");
        assert_eq!(asked.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn the_bound_is_a_setting_of_at_most_a_minute() {
        let config = |value: &str| {
            RevocationConfig::from_env(&Env::from_pairs([("EASYNOTE_REVOCATION_CACHE_TTL", value)]))
        };
        assert_eq!(
            RevocationConfig::from_env(&Env::from_pairs::<&str, &str>([]))
                .expect("default")
                .cache_ttl,
            Duration::from_secs(1)
        );
        assert_eq!(config("0s").expect("zero").cache_ttl, Duration::ZERO);
        assert!(config("61s").is_err());
    }
}

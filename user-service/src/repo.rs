//! The `user` and `revoked_token` tables: every SQL statement of
//! user-service lives here.

use easynote_shared::{
    db::{self, Database, InsertedId as _},
    on_pool,
};

/// A user as other services see it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UserRecord {
    /// Primary key.
    pub id: i64,
    /// Unique name.
    pub username: String,
}

/// A user's stored credentials.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credentials {
    /// Primary key.
    pub id: i64,
    /// argon2id PHC string.
    pub password_hash: String,
    /// The epoch a token issued now carries (see [`UserRepo::revoke_all`]).
    pub token_epoch: i64,
}

/// Whether a token of a user is still in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenState {
    /// The user's token epoch: tokens issued in an earlier one are revoked.
    pub token_epoch: i64,
    /// The token's `jti` is on the denylist.
    pub jti_revoked: bool,
}

/// Inserting a user failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The unique index refused the username.
    #[error("username is taken")]
    UsernameTaken,
    /// Anything else.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Repository of users.
#[derive(Debug, Clone)]
pub struct UserRepo {
    db: Database,
}

impl UserRepo {
    /// A repository over `db` (migrated).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Inserts a user; the unique index decides races between equal names.
    pub async fn create(&self, username: &str, password_hash: &str) -> Result<i64, CreateError> {
        let now = db::now_millis();
        let sql = "INSERT INTO user (username, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?)";
        let insert = async {
            on_pool!(&self.db, |pool| sqlx::query(sql)
                .bind(username)
                .bind(password_hash)
                .bind(now)
                .bind(now)
                .execute(pool)
                .await
                .map(|done| done.inserted_id()))
        };
        match self.db.traced("INSERT", "user", insert).await {
            Ok(id) => Ok(id),
            Err(err) if db::is_unique_violation(&err) => Err(CreateError::UsernameTaken),
            Err(err) => Err(err.into()),
        }
    }

    /// Whether any user, live or deleted, has exactly this name: the cheap
    /// look-up before a registration pays for hashing. The unique index
    /// stays the truth for two registrations racing.
    pub async fn username_taken(&self, username: &str) -> Result<bool, sqlx::Error> {
        let sql = "SELECT id FROM user WHERE username = ? LIMIT 1";
        let select = async {
            on_pool!(&self.db, |pool| sqlx::query_scalar::<_, i64>(sql)
                .bind(username)
                .fetch_optional(pool)
                .await)
        };
        Ok(self.db.traced("SELECT", "user", select).await?.is_some())
    }

    /// The credentials of a live user with exactly this name.
    pub async fn credentials_by_username(
        &self,
        username: &str,
    ) -> Result<Option<Credentials>, sqlx::Error> {
        let sql = "SELECT id, password_hash, token_epoch FROM user WHERE username = ? AND deleted_at IS NULL";
        let select = async {
            on_pool!(&self.db, |pool| sqlx::query_as::<_, Credentials>(sql)
                .bind(username)
                .fetch_optional(pool)
                .await)
        };
        self.db.traced("SELECT", "user", select).await
    }

    /// The live users among `ids`, in ascending id order; unknown ids are skipped.
    pub async fn find_many(&self, ids: &[i64]) -> Result<Vec<UserRecord>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Only the number of placeholders is formatted in; every value is bound.
        let placeholders = vec!["?"; ids.len()].join(", ");
        // MySQL reports the exact-match (utf8mb4_bin) column as binary; the
        // cast hands it back as text, and is a no-op on SQLite.
        let sql = format!(
            "SELECT id, CAST(username AS CHAR) AS username FROM user \
             WHERE id IN ({placeholders}) AND deleted_at IS NULL ORDER BY id"
        );
        let select = async {
            on_pool!(&self.db, |pool| {
                let mut query = sqlx::query_as::<_, UserRecord>(&sql);
                for id in ids {
                    query = query.bind(id);
                }
                query.fetch_all(pool).await
            })
        };
        self.db
            .traced_batch("SELECT", "user", ids.len(), select)
            .await
    }

    /// Revokes every token `user_id` holds by moving its token epoch on;
    /// the new epoch, or `None` for an unknown or deleted user.
    pub async fn revoke_all(&self, user_id: i64) -> Result<Option<i64>, sqlx::Error> {
        let now = db::now_millis();
        let sql = "UPDATE user SET token_epoch = token_epoch + 1, updated_at = ? \
                   WHERE id = ? AND deleted_at IS NULL";
        let update = async {
            on_pool!(&self.db, |pool| sqlx::query(sql)
                .bind(now)
                .bind(user_id)
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))
        };
        if self.db.traced("UPDATE", "user", update).await? == 0 {
            return Ok(None);
        }
        Ok(self.token_state(user_id, "").await?.map(|s| s.token_epoch))
    }

    /// Puts the token `jti` of `user_id` on the denylist until
    /// `expires_at_millis` (repeating it is harmless), and forgets the
    /// entries whose tokens have expired anyway. The user's token epoch, or
    /// `None` for an unknown or deleted user.
    pub async fn revoke_one(
        &self,
        user_id: i64,
        jti: &str,
        expires_at_millis: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let Some(state) = self.token_state(user_id, jti).await? else {
            return Ok(None);
        };
        let now = db::now_millis();
        let forget = "DELETE FROM revoked_token WHERE expires_at < ?";
        let delete = async {
            on_pool!(&self.db, |pool| sqlx::query(forget)
                .bind(now)
                .execute(pool)
                .await
                .map(drop))
        };
        self.db.traced("DELETE", "revoked_token", delete).await?;
        if state.jti_revoked || expires_at_millis < now {
            return Ok(Some(state.token_epoch));
        }
        let sql = "INSERT INTO revoked_token (jti, user_id, expires_at) VALUES (?, ?, ?)";
        let insert = async {
            on_pool!(&self.db, |pool| sqlx::query(sql)
                .bind(jti)
                .bind(user_id)
                .bind(expires_at_millis)
                .execute(pool)
                .await
                .map(drop))
        };
        match self.db.traced("INSERT", "revoked_token", insert).await {
            // A concurrent logout of the same token got there first.
            Err(err) if db::is_unique_violation(&err) => {}
            other => other?,
        }
        Ok(Some(state.token_epoch))
    }

    /// The token epoch of a live user and whether `jti` is on its
    /// denylist; `None` for an unknown or deleted user.
    pub async fn token_state(
        &self,
        user_id: i64,
        jti: &str,
    ) -> Result<Option<TokenState>, sqlx::Error> {
        let sql = "SELECT u.token_epoch, r.user_id FROM user u \
                   LEFT JOIN revoked_token r ON r.jti = ? AND r.user_id = u.id \
                   WHERE u.id = ? AND u.deleted_at IS NULL";
        let select = async {
            on_pool!(&self.db, |pool| sqlx::query_as::<_, (i64, Option<i64>)>(
                sql
            )
            .bind(jti)
            .bind(user_id)
            .fetch_optional(pool)
            .await)
        };
        Ok(self
            .db
            .traced("SELECT", "user", select)
            .await?
            .map(|(token_epoch, revoked_by)| TokenState {
                token_epoch,
                jti_revoked: revoked_by.is_some(),
            }))
    }
}

//! The `user` table: every SQL statement of user-service lives here.

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

    /// The credentials of a live user with exactly this name.
    pub async fn credentials_by_username(
        &self,
        username: &str,
    ) -> Result<Option<Credentials>, sqlx::Error> {
        let sql = "SELECT id, password_hash FROM user WHERE username = ? AND deleted_at IS NULL";
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
}

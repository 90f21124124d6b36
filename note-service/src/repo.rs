//! The `note` table: every SQL statement of note-service lives here.

use easynote_shared::{
    db::{self, Database, InsertedId as _},
    on_pool,
};

/// A stored, live note.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NoteRecord {
    /// Primary key.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// 1–128 characters.
    pub title: String,
    /// Up to 64 KiB.
    pub content: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// What an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct NoteChanges<'a> {
    /// New title.
    pub title: Option<&'a str>,
    /// New content.
    pub content: Option<&'a str>,
}

/// One page of a user's notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotePage {
    /// The notes of the page, newest first.
    pub notes: Vec<NoteRecord>,
    /// How many notes match in all.
    pub total: i64,
}

/// The `Idempotency-Key` a create came with.
#[derive(Debug, Clone)]
pub struct Idempotency<'a> {
    /// The client's key (validated).
    pub key: &'a str,
    /// A digest of the request, to tell a retry from a different request
    /// that reuses the key.
    pub request_hash: String,
}

/// What a create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new note with this id.
    New(i64),
    /// An earlier create with the same key and request made this note.
    Replayed(i64),
    /// The key was used before with another request; nothing was written.
    KeyReused,
}

const COLUMNS: &str = "id, user_id, title, content, created_at";

/// Repository of notes.
#[derive(Debug, Clone)]
pub struct NoteRepo {
    db: Database,
}

impl NoteRepo {
    /// A repository over `db` (migrated).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Inserts a note and returns its id. With an idempotency key, a key
    /// the owner already used answers that note instead ([`Created::Replayed`],
    /// or [`Created::KeyReused`] when it came with another request); the
    /// unique key on (owner, key) settles concurrent creates.
    pub async fn create(
        &self,
        user_id: i64,
        title: &str,
        content: &str,
        idempotency: Option<&Idempotency<'_>>,
    ) -> Result<Created, sqlx::Error> {
        let now = db::now_millis();
        let (key, hash) = idempotency.map_or((None, None), |i| {
            (Some(i.key), Some(i.request_hash.as_str()))
        });
        let sql = "INSERT INTO note (user_id, title, content, created_at, updated_at, idempotency_key, request_hash) VALUES (?, ?, ?, ?, ?, ?, ?)";
        let insert = async {
            on_pool!(&self.db, |pool| sqlx::query(sql)
                .bind(user_id)
                .bind(title)
                .bind(content)
                .bind(now)
                .bind(now)
                .bind(key)
                .bind(hash)
                .execute(pool)
                .await
                .map(|done| done.inserted_id()))
        };
        match (self.db.traced("INSERT", "note", insert).await, idempotency) {
            (Ok(id), _) => Ok(Created::New(id)),
            (Err(err), Some(idempotency)) if db::is_unique_violation(&err) => {
                match self.find_by_key(user_id, idempotency).await? {
                    Some((id, true)) => Ok(Created::Replayed(id)),
                    Some((_, false)) => Ok(Created::KeyReused),
                    None => Err(err),
                }
            }
            (Err(err), _) => Err(err),
        }
    }

    /// The note (live or deleted) the owner created with the key, and
    /// whether it came with the same request hash.
    async fn find_by_key(
        &self,
        user_id: i64,
        idempotency: &Idempotency<'_>,
    ) -> Result<Option<(i64, bool)>, sqlx::Error> {
        // The hash is compared in SQL: MySQL's ascii_bin column would not
        // decode as text.
        let sql = "SELECT id, CASE WHEN request_hash = ? THEN 1 ELSE 0 END FROM note WHERE user_id = ? AND idempotency_key = ?";
        let select = async {
            on_pool!(&self.db, |pool| sqlx::query_as::<_, (i64, i64)>(sql)
                .bind(&idempotency.request_hash)
                .bind(user_id)
                .bind(idempotency.key)
                .fetch_optional(pool)
                .await)
        };
        let found = self.db.traced("SELECT", "note", select).await?;
        Ok(found.map(|(id, same)| (id, same == 1)))
    }

    /// The live notes among `ids`, in ascending id order.
    pub async fn find_many(&self, ids: &[i64], owner: i64) -> Result<Vec<NoteRecord>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Only the number of placeholders is formatted in; every value is bound.
        let placeholders = vec!["?"; ids.len()].join(", ");
        let sql = format!(
            "SELECT {COLUMNS} FROM note WHERE id IN ({placeholders}) AND user_id = ? AND deleted_at IS NULL ORDER BY id"
        );
        let select = async {
            on_pool!(&self.db, |pool| {
                let mut query = sqlx::query_as::<_, NoteRecord>(&sql);
                for id in ids {
                    query = query.bind(id);
                }
                query.bind(owner).fetch_all(pool).await
            })
        };
        self.db
            .traced_batch("SELECT", "note", ids.len(), select)
            .await
    }

    /// Soft-deletes the owner's live note; `false` when there is none.
    pub async fn delete(&self, note_id: i64, owner: i64) -> Result<bool, sqlx::Error> {
        let now = db::now_millis();
        let sql = "UPDATE note SET deleted_at = ?, updated_at = ? WHERE id = ? AND user_id = ? AND deleted_at IS NULL";
        let update = async {
            on_pool!(&self.db, |pool| sqlx::query(sql)
                .bind(now)
                .bind(now)
                .bind(note_id)
                .bind(owner)
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))
        };
        let affected = self.db.traced("UPDATE", "note", update).await?;
        Ok(affected == 1)
    }

    /// Applies `changes` to the owner's live note; `false` when there is none.
    pub async fn update(
        &self,
        note_id: i64,
        owner: i64,
        changes: &NoteChanges<'_>,
    ) -> Result<bool, sqlx::Error> {
        // Column names come from this fixed list; values are bound.
        let mut set = vec!["updated_at = ?"];
        if changes.title.is_some() {
            set.push("title = ?");
        }
        if changes.content.is_some() {
            set.push("content = ?");
        }
        let sql = format!(
            "UPDATE note SET {} WHERE id = ? AND user_id = ? AND deleted_at IS NULL",
            set.join(", ")
        );
        let now = db::now_millis();
        let update = async {
            on_pool!(&self.db, |pool| {
                let mut query = sqlx::query(&sql).bind(now);
                if let Some(title) = changes.title {
                    query = query.bind(title);
                }
                if let Some(content) = changes.content {
                    query = query.bind(content);
                }
                query
                    .bind(note_id)
                    .bind(owner)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })
        };
        let affected = self.db.traced("UPDATE", "note", update).await?;
        if affected > 0 {
            return Ok(true);
        }
        // MySQL counts changed rows, not matched ones: an update that changes
        // nothing reports 0, so ask whether the note is there at all.
        self.exists(note_id, owner).await
    }

    async fn exists(&self, note_id: i64, owner: i64) -> Result<bool, sqlx::Error> {
        let sql = "SELECT COUNT(*) FROM note WHERE id = ? AND user_id = ? AND deleted_at IS NULL";
        let select = async {
            on_pool!(&self.db, |pool| sqlx::query_scalar::<_, i64>(sql)
                .bind(note_id)
                .bind(owner)
                .fetch_one(pool)
                .await)
        };
        let count = self.db.traced("SELECT", "note", select).await?;
        Ok(count > 0)
    }

    /// One page of the owner's live notes, newest first (ties by id, so
    /// paging is stable), optionally only those whose title or content
    /// contains `search` case-insensitively, as a plain substring.
    pub async fn query_by_owner(
        &self,
        owner: i64,
        search: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<NotePage, sqlx::Error> {
        // ASCII folding on our side matches SQLite's ASCII-only LOWER(); MySQL
        // compares with a case-insensitive collation, so it folds the rest too.
        let pattern = search.map(|key| db::like_contains(&key.to_ascii_lowercase()));
        let filter = if pattern.is_some() {
            "user_id = ? AND deleted_at IS NULL AND (LOWER(title) LIKE ? ESCAPE '!' OR LOWER(content) LIKE ? ESCAPE '!')"
        } else {
            "user_id = ? AND deleted_at IS NULL"
        };
        let count_sql = format!("SELECT COUNT(*) FROM note WHERE {filter}");
        let page_sql = format!(
            "SELECT {COLUMNS} FROM note WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        );
        on_pool!(&self.db, |pool| {
            let mut count = sqlx::query_scalar::<_, i64>(&count_sql).bind(owner);
            let mut page = sqlx::query_as::<_, NoteRecord>(&page_sql).bind(owner);
            if let Some(pattern) = &pattern {
                count = count.bind(pattern).bind(pattern);
                page = page.bind(pattern).bind(pattern);
            }
            let total = self
                .db
                .traced("SELECT", "note", count.fetch_one(pool))
                .await?;
            let notes = self
                .db
                .traced(
                    "SELECT",
                    "note",
                    page.bind(limit).bind(offset).fetch_all(pool),
                )
                .await?;
            Ok(NotePage { notes, total })
        })
    }
}

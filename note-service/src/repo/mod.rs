//! The `note` table, the owners' note counts (`note_count`) and the text
//! index: every SQL statement of note-service lives here.
//!
//! Queries stay cheap however many notes an owner has: `total` is one row
//! of `note_count` (kept in the transaction of each create and delete),
//! pages after a cursor start from the `(user_id, created_at)` index at the
//! cursor, and searches of 3 characters or more read the text index's
//! candidates (SQLite FTS5 trigram; MySQL FULLTEXT ngram where the server
//! has it) before the exact substring check; a common word's page comes
//! from a short walk of the owner's newest notes instead. An offset still
//! walks the rows before the page, and shorter keys (or MariaDB) scan the
//! owner's notes. Reads of pages and searches are in `query`.

use easynote_shared::{
    cursor::PageCursor,
    db::{self, Database, InsertedId as _},
    on_pool,
};

pub use self::query::{INDEXED_KEY_MIN_CHARS, SCAN_OWNERS_BELOW, WALK_ROWS};

mod query;

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

impl NoteRecord {
    /// The cursor of the page that follows this note.
    pub fn cursor(&self) -> PageCursor {
        PageCursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// Where a page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// After skipping this many notes (the rows skipped are still read).
    Offset(i64),
    /// Right after the note the cursor names (read from the index there).
    After(PageCursor),
}

/// One page of a user's notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotePage {
    /// The notes of the page, newest first.
    pub notes: Vec<NoteRecord>,
    /// How many notes match in all: the owner's live notes, or with a
    /// search, those of them that match it.
    pub total: i64,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageCursor>,
}

/// How searches find their candidates on this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextIndex {
    /// SQLite: the FTS5 trigram table `note_text`.
    Trigram,
    /// MySQL: the FULLTEXT ngram index `ft_note_text`.
    Ngram,
    /// No index (MariaDB has no ngram parser): every search scans the
    /// owner's notes.
    None,
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
    text_index: TextIndex,
    scan_owners_below: i64,
    walk_rows: i64,
}

impl NoteRepo {
    /// A repository over `db` (migrated), looking once for the text index
    /// the migrations built (on MySQL only where the server has ngram).
    pub async fn open(db: Database) -> Result<Self, sqlx::Error> {
        let text_index = match &db {
            Database::Sqlite(_) => TextIndex::Trigram,
            Database::MySql(pool) => {
                let sql = "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'note' AND INDEX_NAME = 'ft_note_text'";
                // Start-up, not a request's work: untraced, so that it starts
                // no trace of its own (every span of the services belongs to
                // a request's trace).
                let found = sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await?;
                if found > 0 {
                    TextIndex::Ngram
                } else {
                    TextIndex::None
                }
            }
        };
        tracing::info!(?text_index, "note search");
        Ok(Self {
            db,
            text_index,
            scan_owners_below: SCAN_OWNERS_BELOW,
            walk_rows: WALK_ROWS,
        })
    }

    /// The same repository, scanning the notes of owners with fewer than
    /// `notes` live notes instead of [`SCAN_OWNERS_BELOW`]: 0 searches
    /// everyone through the index, `i64::MAX` no one (tests use both).
    pub fn scanning_owners_below(mut self, notes: i64) -> Self {
        self.scan_owners_below = notes;
        self
    }

    /// The same repository, walking the owner's notes for a search's page
    /// when a walk is expected to fill it within `rows` rows instead of
    /// [`WALK_ROWS`]: 0 never walks (tests compare both ways).
    pub fn walking_up_to(mut self, rows: i64) -> Self {
        self.walk_rows = rows;
        self
    }

    /// How searches find their candidates here.
    pub fn text_index(&self) -> TextIndex {
        self.text_index
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
        let insert = "INSERT INTO note (user_id, title, content, created_at, updated_at, idempotency_key, request_hash) VALUES (?, ?, ?, ?, ?, ?, ?)";
        let count = match self.db {
            Database::Sqlite(_) => {
                "INSERT INTO note_count (user_id, live) VALUES (?, 1) ON CONFLICT (user_id) DO UPDATE SET live = live + 1"
            }
            Database::MySql(_) => {
                "INSERT INTO note_count (user_id, live) VALUES (?, 1) ON DUPLICATE KEY UPDATE live = live + 1"
            }
        };
        let mut attempt = 0;
        let created = loop {
            attempt += 1;
            let transaction = async {
                on_pool!(&self.db, |pool| {
                    let mut tx = pool.begin_with(self.begin_write()).await?;
                    let insert = sqlx::query(insert)
                        .bind(user_id)
                        .bind(title)
                        .bind(content)
                        .bind(now)
                        .bind(now)
                        .bind(key)
                        .bind(hash)
                        .execute(&mut *tx);
                    let id = self
                        .db
                        .traced("INSERT", "note", insert)
                        .await?
                        .inserted_id();
                    let count = sqlx::query(count).bind(user_id).execute(&mut *tx);
                    self.db.traced("INSERT", "note_count", count).await?;
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(id)
                })
            };
            match transaction.await {
                // Two first creates of an owner may deadlock on MySQL's
                // upsert of the missing count row; the loser starts again.
                Err(err) if is_deadlock(&err) && attempt < 3 => continue,
                done => break done,
            }
        };
        match (created, idempotency) {
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
        let delete = "UPDATE note SET deleted_at = ?, updated_at = ? WHERE id = ? AND user_id = ? AND deleted_at IS NULL";
        let count = "UPDATE note_count SET live = live - 1 WHERE user_id = ?";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let transaction = async {
                on_pool!(&self.db, |pool| {
                    let mut tx = pool.begin_with(self.begin_write()).await?;
                    let delete = sqlx::query(delete)
                        .bind(now)
                        .bind(now)
                        .bind(note_id)
                        .bind(owner)
                        .execute(&mut *tx);
                    let deleted = self
                        .db
                        .traced("UPDATE", "note", delete)
                        .await?
                        .rows_affected()
                        == 1;
                    if deleted {
                        let count = sqlx::query(count).bind(owner).execute(&mut *tx);
                        self.db.traced("UPDATE", "note_count", count).await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(deleted)
                })
            };
            match transaction.await {
                Err(err) if is_deadlock(&err) && attempt < 3 => continue,
                done => return done,
            }
        }
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

    /// How a transaction that writes begins. SQLite's `BEGIN IMMEDIATE`
    /// takes the write lock up front, waiting out the busy timeout; a
    /// deferred transaction that must upgrade while another connection
    /// writes fails at once with "database is locked" (seen in the
    /// concurrent-create tests).
    fn begin_write(&self) -> &'static str {
        match self.db {
            Database::Sqlite(_) => "BEGIN IMMEDIATE",
            Database::MySql(_) => "BEGIN",
        }
    }

    /// The owner's live notes, from `note_count`.
    async fn live_count(&self, owner: i64) -> Result<i64, sqlx::Error> {
        let sql = "SELECT live FROM note_count WHERE user_id = ?";
        let select = async {
            on_pool!(&self.db, |pool| sqlx::query_scalar::<_, i64>(sql)
                .bind(owner)
                .fetch_optional(pool)
                .await)
        };
        let live = self.db.traced("SELECT", "note_count", select).await?;
        Ok(live.unwrap_or(0))
    }
}

/// Whether `err` is a deadlock (or serialization failure) the database
/// rolled the transaction back for: SQLSTATE 40001 on MySQL.
fn is_deadlock(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("40001"))
}

//! Reading an owner's notes: a page after a cursor or an offset, a search
//! through the text index or a walk of the newest notes, and the exact
//! `total` (see the parent module's documentation).

use easynote_shared::{cursor::PageCursor, db, on_pool};

use super::{COLUMNS, NotePage, NoteRecord, NoteRepo, PageStart, TextIndex};

/// Shortest key the text indexes can look up: a trigram is three
/// characters. Shorter keys scan the owner's notes.
pub const INDEXED_KEY_MIN_CHARS: usize = 3;

/// Owners with fewer live notes than this are searched by scanning their
/// notes even where a text index exists. The index is shared by all
/// owners, so a term common among everyone's notes proposes many
/// candidates of others; a scan of a small owner costs at most their own
/// notes (about 3 ms for 1,000 notes of 80 words, issue 24's table).
pub const SCAN_OWNERS_BELOW: i64 = 1_000;

/// A search whose matches are dense enough that a walk of the owner's
/// newest notes is expected to fill a page within this many rows takes
/// its page that way rather than through the index (a common word's page
/// then costs a few hundred rows, not every match's candidate; issue 24's
/// common-term row).
pub const WALK_ROWS: i64 = 1_000;

/// How far past the expected rows a walk goes before handing over to the
/// index.
const WALK_BOUND_FACTOR: i64 = 4;

/// A value bound to a query built in pieces.
#[derive(Debug, Clone)]
enum Bind {
    Int(i64),
    Text(String),
}

/// Part of a WHERE clause and the values it binds, in order.
#[derive(Debug, Clone, Default)]
struct Clause {
    sql: String,
    binds: Vec<Bind>,
}

/// Which of an owner's notes a query selects: `rows` are the conditions
/// the `(user_id, created_at)` index serves (the owner's live notes, from
/// the cursor on), `text` those on the text (each starting with ` AND `),
/// and `offset` the matching notes skipped.
#[derive(Debug, Clone)]
struct Filter {
    rows: Clause,
    text: Clause,
    offset: i64,
}

impl Filter {
    /// The owner's live notes.
    fn owner(owner: i64) -> Self {
        Self {
            rows: Clause {
                sql: "n.user_id = ? AND n.deleted_at IS NULL".to_owned(),
                binds: vec![Bind::Int(owner)],
            },
            text: Clause::default(),
            offset: 0,
        }
    }

    /// Only notes whose title or content holds `key`. ASCII folding on our
    /// side matches SQLite's ASCII-only LOWER(); MySQL compares with a
    /// case-insensitive collation, so it folds the rest too.
    fn containing(self, key: &str) -> Self {
        let pattern = db::like_contains(&key.to_ascii_lowercase());
        self.text_and(
            " AND (LOWER(n.title) LIKE ? ESCAPE '!' OR LOWER(n.content) LIKE ? ESCAPE '!')",
            [pattern.clone(), pattern],
        )
    }

    /// And a condition on the text (` AND …`) binding `values`.
    fn text_and(mut self, sql: &str, values: impl IntoIterator<Item = String>) -> Self {
        self.text.sql.push_str(sql);
        self.text.binds.extend(values.into_iter().map(Bind::Text));
        self
    }

    /// Only the notes from `start` on.
    fn starting(mut self, start: PageStart) -> Self {
        match start {
            PageStart::Offset(offset) => self.offset = offset,
            PageStart::After(cursor) => {
                // `created_at <= ?` bounds the index range on both backends;
                // the rest only sorts out the cursor's own millisecond.
                self.rows
                    .sql
                    .push_str(" AND n.created_at <= ? AND (n.created_at < ? OR n.id < ?)");
                self.rows.binds.extend([
                    Bind::Int(cursor.created_at),
                    Bind::Int(cursor.created_at),
                    Bind::Int(cursor.id),
                ]);
            }
        }
        self
    }

    fn sql(&self) -> String {
        format!("{}{}", self.rows.sql, self.text.sql)
    }

    fn binds(&self) -> Vec<Bind> {
        self.rows
            .binds
            .iter()
            .chain(&self.text.binds)
            .cloned()
            .collect()
    }
}

/// `notes` (a page and one row past it) cut to the page, with the cursor
/// of the next page when that row was there.
fn cut(mut notes: Vec<NoteRecord>, limit: i64) -> (Vec<NoteRecord>, Option<PageCursor>) {
    if notes.len() as i64 > limit {
        notes.truncate(usize::try_from(limit).unwrap_or_default());
        let next = notes.last().map(NoteRecord::cursor);
        (notes, next)
    } else {
        (notes, None)
    }
}

impl NoteRepo {
    /// One page of the owner's live notes, newest first (ties by id, so
    /// paging is stable), optionally only those whose title or content
    /// contains `search` case-insensitively, as a plain substring.
    ///
    /// A search counts its matches through the text index where it has
    /// one, then takes the page the cheaper of two ways: when the matches
    /// are dense among the owner's notes (a common word), by walking the
    /// owner's notes newest first until the page is full, which stops after
    /// a few hundred rows; when they are sparse, through the index, whose
    /// candidates are few. A walk that does not fill the page within its
    /// bound hands over to the index, so both answer the same.
    pub async fn query_by_owner(
        &self,
        owner: i64,
        search: Option<&str>,
        start: PageStart,
        limit: i64,
    ) -> Result<NotePage, sqlx::Error> {
        let live = self.live_count(owner).await?;
        let Some(key) = search else {
            let page = Filter::owner(owner).starting(start);
            let (notes, next) = self.page(&page, "note AS n", limit).await?;
            return Ok(NotePage {
                notes,
                total: live,
                next,
            });
        };
        // The index only proposes candidates; the substring check decides,
        // so every path answers the same.
        let index = if live < self.scan_owners_below {
            TextIndex::None
        } else {
            self.index_for(key)
        };
        let matching = Filter::owner(owner).containing(key);
        let (from, indexed) = match index {
            // The FTS table drives the join: the owner's notes are only
            // visited where the text matches.
            TextIndex::Trigram => (
                "note_text CROSS JOIN note AS n ON n.id = note_text.rowid",
                matching
                    .clone()
                    .text_and(" AND note_text MATCH ?", [quoted_phrase(key)]),
            ),
            TextIndex::Ngram => (
                "note AS n",
                matching.clone().text_and(
                    " AND MATCH (n.title, n.content) AGAINST (? IN BOOLEAN MODE)",
                    [quoted_phrase(key)],
                ),
            ),
            TextIndex::None => ("note AS n", matching.clone()),
        };
        let total = self.count(&indexed, from).await?;
        if total == 0 {
            return Ok(NotePage {
                notes: Vec::new(),
                total,
                next: None,
            });
        }
        if index != TextIndex::None {
            let skipped = match start {
                PageStart::Offset(offset) => offset,
                PageStart::After(_) => 0,
            };
            // Rows a walk reads to fill the page if the matches are spread
            // evenly over the owner's notes.
            let expected = (skipped + limit + 1).saturating_mul(live) / total;
            if expected <= self.walk_rows {
                let walk = matching.starting(start);
                // Bounded at a few times the expectation: matches bunched in
                // older notes cost a bounded walk, then the index.
                let bound = self.walk_rows.saturating_mul(WALK_BOUND_FACTOR);
                if let Some((notes, next)) = self.walk(&walk, limit, bound).await? {
                    return Ok(NotePage { notes, total, next });
                }
            }
        }
        let (notes, next) = self.page(&indexed.starting(start), from, limit).await?;
        Ok(NotePage { notes, total, next })
    }

    /// How many rows `filter` selects from `from`.
    async fn count(&self, filter: &Filter, from: &str) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT COUNT(*) FROM {from} WHERE {}", filter.sql());
        let binds = filter.binds();
        on_pool!(&self.db, |pool| {
            let mut query = sqlx::query_scalar::<_, i64>(&sql);
            for bind in &binds {
                query = match bind {
                    Bind::Int(value) => query.bind(*value),
                    Bind::Text(value) => query.bind(value.as_str()),
                };
            }
            self.db
                .traced("SELECT", "note", query.fetch_one(pool))
                .await
        })
    }

    /// The page `filter` selects from `from`, newest first, and the cursor
    /// of the page after it.
    async fn page(
        &self,
        filter: &Filter,
        from: &str,
        limit: i64,
    ) -> Result<(Vec<NoteRecord>, Option<PageCursor>), sqlx::Error> {
        let sql = format!(
            "SELECT n.id, n.user_id, n.title, n.content, n.created_at FROM {from} WHERE {} ORDER BY n.created_at DESC, n.id DESC LIMIT ? OFFSET ?",
            filter.sql()
        );
        // One row past the page says whether another follows.
        let mut binds = filter.binds();
        binds.extend([Bind::Int(limit + 1), Bind::Int(filter.offset)]);
        let notes = self.fetch(&sql, &binds).await?;
        Ok(cut(notes, limit))
    }

    /// The page of `filter` (a search, without the index) found among the
    /// owner's `bound` newest notes from where the page starts, or `None`
    /// when those hold too few matches to fill it (the rest could lie
    /// beyond them).
    async fn walk(
        &self,
        filter: &Filter,
        limit: i64,
        bound: i64,
    ) -> Result<Option<(Vec<NoteRecord>, Option<PageCursor>)>, sqlx::Error> {
        // The inner query reads the owner's notes in the index's order and
        // stops at `bound`; the outer one checks the text of those only.
        let sql = format!(
            "SELECT n.id, n.user_id, n.title, n.content, n.created_at FROM (SELECT {COLUMNS} FROM note AS n WHERE {} ORDER BY n.created_at DESC, n.id DESC LIMIT ?) AS n WHERE TRUE{} ORDER BY n.created_at DESC, n.id DESC LIMIT ? OFFSET ?",
            filter.rows.sql, filter.text.sql
        );
        let mut binds = filter.rows.binds.clone();
        binds.push(Bind::Int(bound));
        binds.extend(filter.text.binds.iter().cloned());
        binds.extend([Bind::Int(limit + 1), Bind::Int(filter.offset)]);
        let notes = self.fetch(&sql, &binds).await?;
        if notes.len() as i64 <= limit {
            return Ok(None);
        }
        Ok(Some(cut(notes, limit)))
    }

    /// The notes a SELECT of [`COLUMNS`] (as `n.*`) answers.
    async fn fetch(&self, sql: &str, binds: &[Bind]) -> Result<Vec<NoteRecord>, sqlx::Error> {
        on_pool!(&self.db, |pool| {
            let mut query = sqlx::query_as::<_, NoteRecord>(sql);
            for bind in binds {
                query = match bind {
                    Bind::Int(value) => query.bind(*value),
                    Bind::Text(value) => query.bind(value.as_str()),
                };
            }
            self.db
                .traced("SELECT", "note", query.fetch_all(pool))
                .await
        })
    }

    /// The text index a search for `key` can use.
    fn index_for(&self, key: &str) -> TextIndex {
        let long_enough = key.chars().count() >= INDEXED_KEY_MIN_CHARS;
        match self.text_index {
            TextIndex::Trigram if long_enough => TextIndex::Trigram,
            // ngram leaves whitespace out of its tokens and a phrase cannot
            // hold a double quote: such keys scan rather than risk a miss.
            TextIndex::Ngram
                if long_enough && !key.contains('"') && !key.chars().any(char::is_whitespace) =>
            {
                TextIndex::Ngram
            }
            _ => TextIndex::None,
        }
    }
}

/// `key` as one phrase of the full-text query languages (FTS5 and MySQL's
/// boolean mode): in double quotes, a double quote inside doubled.
fn quoted_phrase(key: &str) -> String {
    format!("\"{}\"", key.replace('"', "\"\""))
}

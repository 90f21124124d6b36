//! `easy-note-bench scale`: `GET /v1/note/query` and `POST /v1/note` for
//! one owner with many notes (issue 24).
//!
//! The owner registers through the API; their notes (and, with
//! `--other-users`, other owners' notes) are written straight into the
//! note database in batched multi-row inserts, a transaction per batch
//! group, as fast as the database takes them. Each `--sizes` step tops the
//! owner up to that many notes and then times, as medians of `--repeat`
//! requests after one warm-up: the first page, the page at offset N-10 and
//! the same page by cursor, a search with one match, a search for a word
//! in about 8% of notes, and a create. The database must be the one the
//! running suite uses; the schema may be this version's or an earlier one
//! (then `note_count` is not kept, and the cursor column reads "n/a").

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use easynote_shared::{
    cursor::PageCursor,
    db::{Database, DatabaseConfig, Migrations},
    on_pool,
};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::migrate::Migrator;

/// What `scale` was asked to do.
#[derive(Debug)]
pub struct ScaleConfig {
    /// The gateway.
    pub url: String,
    /// The suite's note database.
    pub database_url: String,
    /// The owner's note counts to measure at, ascending.
    pub sizes: Vec<u64>,
    /// Other owners to load first, each with `--notes-each` notes.
    pub other_users: u64,
    /// Notes of each other owner.
    pub notes_each: u64,
    /// Timed requests per measurement.
    pub repeat: usize,
    /// A name for the run.
    pub label: String,
    /// Where to write the rows as JSON.
    pub out: Option<std::path::PathBuf>,
}

/// One measured size.
#[derive(Debug, Serialize)]
struct Row {
    notes: u64,
    first_page_ms: f64,
    deep_offset_ms: f64,
    /// `None` when the suite does not page by cursor (an earlier version).
    deep_cursor_ms: Option<f64>,
    rare_search_ms: f64,
    common_search_ms: f64,
    common_matches: i64,
    create_ms: f64,
    database_bytes: i64,
    load_seconds: f64,
}

/// The single word only one note holds.
const RARE: &str = "quixotrance";
/// Vocabulary size: 80 words a note from 1,000 makes each word appear in
/// about 8% of the notes.
const VOCABULARY: u64 = 1_000;
const WORDS_PER_NOTE: usize = 80;
/// Rows per INSERT statement and statements per transaction.
const ROWS_PER_INSERT: usize = 250;
const INSERTS_PER_TRANSACTION: usize = 200;
/// Owner ids of the other owners start here (no accounts behind them).
const OTHER_OWNERS_FROM: i64 = 1_000_000_000;

/// The `i`th word of the vocabulary: pronounceable, 4 to 9 letters.
fn word(i: u64) -> String {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "ve", "do", "an", "el", "or", "un", "is",
        "be", "ga", "hu", "ze", "fy",
    ];
    let mut rest = i;
    let mut out = String::new();
    for _ in 0..3 {
        out.push_str(SYLLABLES[(rest % 20) as usize]);
        rest /= 20;
    }
    if i.is_multiple_of(3) {
        out.push_str("nt");
    }
    out
}

/// The searched common word.
fn common_word() -> String {
    word(417)
}

/// ~80 words of text, the same for the same seed.
fn text(seed: u64) -> (String, String) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let title = format!(
        "{} {} {}",
        word(rng.u64(..VOCABULARY)),
        word(rng.u64(..VOCABULARY)),
        seed
    );
    let content: Vec<String> = (0..WORDS_PER_NOTE)
        .map(|_| word(rng.u64(..VOCABULARY)))
        .collect();
    (title, content.join(" "))
}

/// Runs the scenario.
pub async fn run(config: ScaleConfig) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let api = Api {
        http,
        url: config.url.clone(),
    };
    let token = api.owner().await?;
    let first_note = api.create(&token).await?;
    let (_, page) = api.get(&token, "/v1/note/query?limit=1").await?;
    let owner = page["data"]["notes"][0]["user_id"]
        .as_i64()
        .context("the owner's id in the first note")?;
    ensure!(
        page["data"]["notes"][0]["note_id"] == first_note,
        "the first note"
    );

    let no_migrations = Migrations::new(Migrator::DEFAULT, Migrator::DEFAULT);
    let db = Database::connect(
        &DatabaseConfig::new(config.database_url.clone()),
        &no_migrations,
    )
    .await
    .context("connecting to the note database")?;
    let counted = has_table(&db, "note_count").await?;
    let oldest = on_pool!(&db, |pool| sqlx::query_scalar::<_, i64>(
        "SELECT MIN(created_at) FROM note WHERE user_id = ?"
    )
    .bind(owner)
    .fetch_one(pool)
    .await)?;

    let mut loaded: u64 = 1;
    let mut clock = oldest;
    if config.other_users > 0 {
        let started = Instant::now();
        let mut next_seed = 10_000_000_000;
        for other in 0..config.other_users {
            let owner = OTHER_OWNERS_FROM + other as i64;
            next_seed = load(&db, owner, config.notes_each, next_seed, clock, None).await?;
        }
        if counted {
            recount(&db, None).await?;
        }
        eprintln!(
            "{}: {} other owners x {} notes loaded in {:.1?}",
            config.label,
            config.other_users,
            config.notes_each,
            started.elapsed()
        );
    }

    let mut rows = Vec::new();
    for &size in &config.sizes {
        ensure!(size >= loaded, "--sizes must ascend");
        let started = Instant::now();
        let more = size - loaded;
        // The rare word goes into the middle note of the first load.
        let rare_at = (loaded == 1).then_some(more / 2);
        load(&db, owner, more, loaded, clock - 1, rare_at).await?;
        clock -= more as i64;
        loaded = size;
        if counted {
            recount(&db, Some(owner)).await?;
        }
        let load_seconds = started.elapsed().as_secs_f64();

        let deep_offset = size.saturating_sub(10);
        let cursor = on_pool!(&db, |pool| {
            sqlx::query_as::<_, (i64, i64)>(
            "SELECT created_at, id FROM note WHERE user_id = ? AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET ?"
        )
        .bind(owner)
        .bind(deep_offset as i64 - 1)
        .fetch_one(pool)
        .await
        })?;
        let cursor = PageCursor {
            created_at: cursor.0,
            id: cursor.1,
        };

        let first_page_ms = api
            .median(&token, "/v1/note/query?limit=10", config.repeat)
            .await?;
        let offset_path = format!("/v1/note/query?limit=10&offset={deep_offset}");
        let deep_offset_ms = api.median(&token, &offset_path, config.repeat).await?;
        let (_, by_offset) = api.get(&token, &offset_path).await?;
        let cursor_path = format!("/v1/note/query?limit=10&cursor={cursor}");
        let (_, by_cursor) = api.get(&token, &cursor_path).await?;
        // An earlier version ignores the cursor and answers the first page.
        let deep_cursor_ms = if by_cursor["data"]["notes"] == by_offset["data"]["notes"] {
            Some(api.median(&token, &cursor_path, config.repeat).await?)
        } else {
            None
        };
        let rare_path = format!("/v1/note/query?limit=10&search_key={RARE}");
        let (_, rare) = api.get(&token, &rare_path).await?;
        ensure!(rare["data"]["total"] == 1, "one note holds {RARE}: {rare}");
        let rare_search_ms = api.median(&token, &rare_path, config.repeat).await?;
        let common_path = format!("/v1/note/query?limit=10&search_key={}", common_word());
        let (_, common) = api.get(&token, &common_path).await?;
        let common_matches = common["data"]["total"].as_i64().unwrap_or_default();
        let common_search_ms = api.median(&token, &common_path, config.repeat).await?;
        let create_ms = api.median_create(&token, config.repeat * 3).await?;
        let database_bytes = database_bytes(&db).await?;
        let row = Row {
            notes: size,
            first_page_ms,
            deep_offset_ms,
            deep_cursor_ms,
            rare_search_ms,
            common_search_ms,
            common_matches,
            create_ms,
            database_bytes,
            load_seconds,
        };
        println!(
            "{} | {} | {:.1} | {:.1} | {} | {:.1} | {:.1} ({} matches) | {:.2} | {:.0} MB | loaded in {:.0} s",
            config.label,
            row.notes,
            row.first_page_ms,
            row.deep_offset_ms,
            row.deep_cursor_ms
                .map_or("n/a".to_owned(), |ms| format!("{ms:.1}")),
            row.rare_search_ms,
            row.common_search_ms,
            row.common_matches,
            row.create_ms,
            row.database_bytes as f64 / 1e6,
            row.load_seconds,
        );
        rows.push(row);
    }
    db.close().await;
    if let Some(out) = &config.out {
        let doc = json!({"label": config.label, "rows": rows});
        std::fs::write(out, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// Writes `count` notes of `owner`, created one millisecond apart going
/// back from `newest`, the text of note i seeded by `first_seed + i`; the
/// note at `rare_at` also holds [`RARE`]. Returns the next seed.
async fn load(
    db: &Database,
    owner: i64,
    count: u64,
    first_seed: u64,
    newest: i64,
    rare_at: Option<u64>,
) -> anyhow::Result<u64> {
    let row = "(?, ?, ?, ?, ?)";
    let mut done = 0;
    while done < count {
        on_pool!(db, |pool| {
            let mut tx = pool.begin().await?;
            for _ in 0..INSERTS_PER_TRANSACTION {
                let rows = (count - done).min(ROWS_PER_INSERT as u64) as usize;
                if rows == 0 {
                    break;
                }
                let sql = format!(
                    "INSERT INTO note (user_id, title, content, created_at, updated_at) VALUES {}",
                    vec![row; rows].join(", ")
                );
                let mut query = sqlx::query(&sql);
                for i in done..done + rows as u64 {
                    let (title, mut content) = text(first_seed + i);
                    if rare_at == Some(i) {
                        content.push(' ');
                        content.push_str(RARE);
                    }
                    let created_at = newest - i as i64;
                    query = query
                        .bind(owner)
                        .bind(title)
                        .bind(content)
                        .bind(created_at)
                        .bind(created_at);
                }
                query.execute(&mut *tx).await?;
                done += rows as u64;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        })?;
    }
    Ok(first_seed + count)
}

/// Sets `note_count` from the rows (of one owner, or of all).
async fn recount(db: &Database, owner: Option<i64>) -> anyhow::Result<()> {
    let sql = match owner {
        Some(_) => {
            "REPLACE INTO note_count (user_id, live) SELECT user_id, COUNT(*) FROM note WHERE user_id = ? AND deleted_at IS NULL GROUP BY user_id"
        }
        None => {
            "REPLACE INTO note_count (user_id, live) SELECT user_id, COUNT(*) FROM note WHERE deleted_at IS NULL GROUP BY user_id"
        }
    };
    on_pool!(db, |pool| {
        let mut query = sqlx::query(sql);
        if let Some(owner) = owner {
            query = query.bind(owner);
        }
        query.execute(pool).await.map(drop)
    })?;
    Ok(())
}

async fn has_table(db: &Database, table: &str) -> anyhow::Result<bool> {
    let found = match db {
        Database::Sqlite(pool) => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM sqlite_master WHERE name = ?")
                .bind(table)
                .fetch_one(pool)
                .await?
        }
        Database::MySql(pool) => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(table)
        .fetch_one(pool)
        .await?,
    };
    Ok(found > 0)
}

/// The database's size: SQLite's pages, or MySQL's data and indexes of
/// the note tables (as InnoDB estimates them).
async fn database_bytes(db: &Database) -> anyhow::Result<i64> {
    Ok(match db {
        Database::Sqlite(pool) => {
            sqlx::query_scalar::<_, i64>(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            )
            .fetch_one(pool)
            .await?
        }
        Database::MySql(pool) => {
            sqlx::query("ANALYZE TABLE note").execute(pool).await?;
            sqlx::query_scalar::<_, i64>(
                "SELECT CAST(SUM(DATA_LENGTH + INDEX_LENGTH) AS SIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE 'note%'",
            )
            .fetch_one(pool)
            .await?
        }
    })
}

/// The suite over HTTP.
struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    /// A fresh owner's token.
    async fn owner(&self) -> anyhow::Result<String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let creds = json!({"username": format!("scale-{nanos}"), "password": "scale-password"});
        let register = self
            .http
            .post(format!("{}/v1/user/register", self.url))
            .json(&creds)
            .send()
            .await?;
        ensure!(
            register.status() == StatusCode::OK,
            "register: {}",
            register.status()
        );
        let login: Value = self
            .http
            .post(format!("{}/v1/user/login", self.url))
            .json(&creds)
            .send()
            .await?
            .json()
            .await?;
        login["token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("login: {login}"))
    }

    async fn create(&self, token: &str) -> anyhow::Result<i64> {
        let (title, content) = text(fastrand::u64(..1_000_000));
        let reply = self
            .http
            .post(format!("{}/v1/note", self.url))
            .bearer_auth(token)
            .json(&json!({"title": title, "content": content}))
            .send()
            .await?;
        let status = reply.status();
        let body: Value = reply.json().await?;
        if status != StatusCode::OK {
            bail!("create: {status} {body}");
        }
        body["data"]["note_id"].as_i64().context("note_id")
    }

    async fn get(&self, token: &str, path: &str) -> anyhow::Result<(Duration, Value)> {
        let started = Instant::now();
        let reply = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await?;
        let status = reply.status();
        let body: Value = reply.json().await?;
        let took = started.elapsed();
        if status != StatusCode::OK {
            bail!("GET {path}: {status} {body}");
        }
        Ok((took, body))
    }

    /// Median milliseconds of `repeat` GETs of `path`, after one warm-up.
    async fn median(&self, token: &str, path: &str, repeat: usize) -> anyhow::Result<f64> {
        self.get(token, path).await?;
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            times.push(self.get(token, path).await?.0);
        }
        Ok(median_ms(times))
    }

    /// Median milliseconds of `repeat` creates, after one warm-up.
    async fn median_create(&self, token: &str, repeat: usize) -> anyhow::Result<f64> {
        self.create(token).await?;
        let mut times = Vec::with_capacity(repeat);
        for _ in 0..repeat {
            let started = Instant::now();
            self.create(token).await?;
            times.push(started.elapsed());
        }
        Ok(median_ms(times))
    }
}

fn median_ms(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .map_or(0.0, |t| t.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_have_about_eighty_words_and_the_searched_words_are_distinct() {
        let (_, content) = text(7);
        assert_eq!(content.split(' ').count(), WORDS_PER_NOTE);
        assert_eq!(text(7), text(7), "seeded");
        let words: std::collections::HashSet<String> = (0..VOCABULARY).map(word).collect();
        assert_eq!(words.len() as u64, VOCABULARY, "no two words alike");
        assert!(
            !words
                .iter()
                .any(|w| w.contains(RARE) || RARE.contains(w.as_str()))
        );
        assert!(
            !words
                .iter()
                .any(|w| w != &common_word() && w.contains(&common_word())),
            "the common word is no part of another"
        );
    }
}

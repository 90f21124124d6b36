//! Migration 20261206000400 (note counts and the text index) applied to a
//! database of the previous schema that already holds notes, and undone by
//! its down script: SQLite always, MySQL/MariaDB when
//! `EASYNOTE_TEST_MYSQL_URL` is set.

use std::borrow::Cow;

use easynote_shared::{
    cursor::PageCursor,
    db::{Database, Migrations},
    on_pool,
};
use easynote_testkit::TestDatabase;
use note_service::repo::{NoteRepo, PageStart, TextIndex};
use sqlx::migrate::Migrator;

/// The migration under test.
const VERSION: i64 = 20261206000400;

const DOWN_SQLITE: &str =
    include_str!("../migrations/down/sqlite/20261206000400_note_count_and_text_index.sql");
const DOWN_MYSQL: &str =
    include_str!("../migrations/down/mysql/20261206000400_note_count_and_text_index.sql");

/// The migrations before [`VERSION`]: the schema a running service had.
fn previous(mut migrator: Migrator) -> Migrator {
    let before: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < VERSION)
        .cloned()
        .collect();
    assert!(before.len() < migrator.migrations.len(), "{VERSION} exists");
    migrator.migrations = Cow::Owned(before);
    migrator
}

fn previous_migrations() -> Migrations {
    Migrations::new(
        previous(sqlx::migrate!("./migrations/sqlite")),
        previous(sqlx::migrate!("./migrations/mysql")),
    )
}

/// Runs SQL text of several statements.
async fn run_script(db: &Database, sql: &str) {
    on_pool!(db, |pool| sqlx::raw_sql(sql).execute(pool).await.map(drop))
        .unwrap_or_else(|err| panic!("{}: script: {err}", db.system()));
}

/// The schema as the database describes it, to compare before and after.
async fn schema(db: &Database) -> Vec<String> {
    match db {
        Database::Sqlite(pool) => sqlx::query_as::<_, (String, String, Option<String>)>(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .expect("sqlite_master")
        .into_iter()
        .map(|(kind, name, sql)| format!("{kind} {name}: {}", sql.unwrap_or_default()))
        .collect(),
        Database::MySql(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(TABLE_NAME AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
            )
            .fetch_all(pool)
            .await
            .expect("tables");
            let mut described = Vec::new();
            for table in tables {
                // Names come from the catalogue, not from input.
                let (_, create): (String, String) =
                    sqlx::query_as(&format!("SHOW CREATE TABLE `{table}`"))
                        .fetch_one(pool)
                        .await
                        .expect("show create table");
                // The auto-increment counter is data, not schema.
                let create = create
                    .split(' ')
                    .filter(|word| !word.starts_with("AUTO_INCREMENT="))
                    .collect::<Vec<_>>()
                    .join(" ");
                described.push(create);
            }
            described
        }
    }
}

async fn applied(db: &Database) -> Vec<i64> {
    on_pool!(db, |pool| sqlx::query_scalar::<_, i64>(
        "SELECT version FROM _sqlx_migrations ORDER BY version"
    )
    .fetch_all(pool)
    .await)
    .expect("applied migrations")
}

/// Writes notes the way the previous version did (no count, no index):
/// owner 1 has 30, of which 5 deleted and every third live one mentions a
/// needle; owner 2 has 3.
async fn seed_previous_schema(db: &Database) {
    let sql = "INSERT INTO note (user_id, title, content, created_at, updated_at, deleted_at) VALUES (?, ?, ?, ?, ?, ?)";
    for i in 0..33_i64 {
        let owner = if i < 30 { 1 } else { 2 };
        let deleted = (owner == 1 && i % 6 == 5).then_some(1_700_000_100_000 + i);
        let content = if i % 3 == 0 {
            format!("note {i} holds a NEEDLE")
        } else {
            format!("note {i}")
        };
        on_pool!(db, |pool| sqlx::query(sql)
            .bind(owner)
            .bind(format!("title {i}"))
            .bind(&content)
            .bind(1_700_000_000_000 + i)
            .bind(1_700_000_000_000 + i)
            .bind(deleted)
            .execute(pool)
            .await
            .map(drop))
        .expect("seed a note");
    }
}

/// What the migrated repository must answer about the seeded notes.
async fn check_seeded_notes(db: &Database) {
    // Searches through the index even for this small owner.
    let repo = NoteRepo::open(db.clone())
        .await
        .expect("open")
        .scanning_owners_below(0);
    if db.system() == "sqlite" {
        assert_eq!(repo.text_index(), TextIndex::Trigram);
    }
    let first = repo
        .query_by_owner(1, None, PageStart::Offset(0), 10)
        .await
        .expect("first page");
    assert_eq!(
        first.total,
        25,
        "{}: owner 1's live notes were counted",
        db.system()
    );
    let second = repo
        .query_by_owner(2, None, PageStart::Offset(0), 10)
        .await
        .expect("owner 2");
    assert_eq!(
        second.total,
        3,
        "{}: owner 2's notes were counted",
        db.system()
    );

    // Live notes 0, 3, 6, ... 27 mention the needle, except the deleted ones
    // (i % 6 == 5 never is a multiple of 3): 10 of them, indexed in place.
    let found = repo
        .query_by_owner(1, Some("needle"), PageStart::Offset(0), 100)
        .await
        .expect("search");
    let titles: Vec<String> = found.notes.iter().map(|n| n.title.clone()).collect();
    let expected: Vec<String> = (0..30)
        .rev()
        .filter(|i| i % 3 == 0)
        .map(|i| format!("title {i}"))
        .collect();
    assert_eq!(
        titles,
        expected,
        "{}: existing notes are searchable",
        db.system()
    );
    assert_eq!(found.total, 10, "{}", db.system());

    let cursor: PageCursor = first.next.expect("a second page");
    let next = repo
        .query_by_owner(1, None, PageStart::After(cursor), 10)
        .await
        .expect("next page");
    assert_eq!(next.notes.len(), 10, "{}", db.system());
    assert!(
        next.notes.iter().all(|n| n.cursor() < cursor),
        "{}: the next page is older than the cursor",
        db.system()
    );
}

#[tokio::test]
async fn the_migration_counts_and_indexes_existing_notes_and_its_down_script_restores_the_previous_schema()
 {
    for test_db in TestDatabase::all().await {
        let config = test_db.config();
        let old = Database::connect(&config, &previous_migrations())
            .await
            .unwrap_or_else(|err| panic!("{}: previous schema: {err:?}", test_db.backend));
        seed_previous_schema(&old).await;
        let schema_before = schema(&old).await;
        let applied_before = applied(&old).await;
        old.close().await;

        let db = Database::connect(&config, &note_service::migrations())
            .await
            .unwrap_or_else(|err| panic!("{}: migrate: {err:?}", test_db.backend));
        assert!(applied(&db).await.contains(&VERSION), "{}", test_db.backend);
        check_seeded_notes(&db).await;

        let down = if db.system() == "sqlite" {
            DOWN_SQLITE
        } else {
            DOWN_MYSQL
        };
        run_script(&db, down).await;
        assert_eq!(
            applied(&db).await,
            applied_before,
            "{}: version forgotten",
            test_db.backend
        );
        assert_eq!(
            schema(&db).await,
            schema_before,
            "{}: previous schema back",
            test_db.backend
        );
        let rows = on_pool!(&db, |pool| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM note"
        )
        .fetch_one(pool)
        .await)
        .expect("notes");
        assert_eq!(rows, 33, "{}: the notes stay", test_db.backend);
        db.close().await;

        // Up again after down: the same answers.
        let again = Database::connect(&config, &note_service::migrations())
            .await
            .unwrap_or_else(|err| panic!("{}: migrate again: {err:?}", test_db.backend));
        check_seeded_notes(&again).await;
        again.close().await;
    }
}

//! `NoteRepo` against every available backend: SQLite always, MySQL/MariaDB
//! when `EASYNOTE_TEST_MYSQL_URL` is set. Every test gets fresh databases.

use easynote_shared::{db::Database, on_pool};
use easynote_testkit::TestDatabase;
use note_service::repo::{
    Created, Idempotency, NoteChanges, NoteRecord, NoteRepo, PageStart, TextIndex,
};

const OWNER: i64 = 7;
const OTHER: i64 = 8;

/// A migrated repository on one backend; the database lives as long as it does.
struct Backend {
    db: TestDatabase,
    pool: Database,
    repo: NoteRepo,
}

impl Backend {
    fn name(&self) -> &'static str {
        self.db.backend
    }

    async fn create(&self, owner: i64, title: &str, content: &str) -> i64 {
        match self
            .repo
            .create(owner, title, content, None)
            .await
            .unwrap_or_else(|err| panic!("{}: create {title:?}: {err}", self.name()))
        {
            Created::New(id) => id,
            other => panic!("{}: create {title:?} without a key: {other:?}", self.name()),
        }
    }

    /// A create with an idempotency key and a request hash.
    async fn create_keyed(&self, owner: i64, title: &str, key: &str, hash: &str) -> Created {
        let idempotency = Idempotency {
            key,
            request_hash: hash.to_owned(),
        };
        self.repo
            .create(owner, title, "", Some(&idempotency))
            .await
            .unwrap_or_else(|err| panic!("{}: create {title:?} with {key:?}: {err}", self.name()))
    }

    /// How many rows the table holds, deleted ones included.
    async fn rows(&self) -> i64 {
        on_pool!(&self.pool, |pool| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM note"
        )
        .fetch_one(pool)
        .await)
        .unwrap_or_else(|err| panic!("{}: count rows: {err}", self.name()))
    }

    /// The live note `id` of [`OWNER`], if any.
    async fn find(&self, id: i64) -> Option<NoteRecord> {
        let mut found = self
            .repo
            .find_many(&[id], OWNER)
            .await
            .unwrap_or_else(|err| panic!("{}: find {id}: {err}", self.name()));
        found.pop()
    }

    /// The `deleted_at` column of row `id`, read past the repository;
    /// `None` when the row itself is missing.
    async fn deleted_at(&self, id: i64) -> Option<Option<i64>> {
        let sql = "SELECT deleted_at FROM note WHERE id = ?";
        on_pool!(&self.pool, |pool| sqlx::query_scalar::<_, Option<i64>>(sql)
            .bind(id)
            .fetch_optional(pool)
            .await)
        .unwrap_or_else(|err| panic!("{}: read deleted_at: {err}", self.name()))
    }

    /// Overwrites a note's creation time, to make ties on purpose.
    async fn set_created_at(&self, id: i64, created_at: i64) {
        let sql = "UPDATE note SET created_at = ? WHERE id = ?";
        on_pool!(&self.pool, |pool| sqlx::query(sql)
            .bind(created_at)
            .bind(id)
            .execute(pool)
            .await
            .map(drop))
        .unwrap_or_else(|err| panic!("{}: set created_at: {err}", self.name()));
    }

    /// Every page of the owner's notes (optionally searched), `limit` at a
    /// time, walked both by offset and by cursor: the two walks must agree,
    /// and `next_cursor` must be there exactly until the last page.
    async fn all_pages(&self, owner: i64, search: Option<&str>, limit: i64) -> Vec<i64> {
        let mut by_offset = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .repo
                .query_by_owner(owner, search, PageStart::Offset(offset), limit)
                .await
                .unwrap_or_else(|err| panic!("{}: page at {offset}: {err}", self.name()));
            if page.notes.is_empty() {
                assert_eq!(
                    by_offset.len() as i64,
                    page.total,
                    "{}: pages and total disagree",
                    self.name()
                );
                break;
            }
            assert!(
                page.notes.len() as i64 <= limit,
                "{}: page over the limit",
                self.name()
            );
            by_offset.extend(page.notes.iter().map(|n| n.id));
            offset += limit;
        }
        let by_cursor = self.pages_by_cursor(owner, search, limit).await;
        assert_eq!(
            by_cursor,
            by_offset,
            "{}: cursor and offset paging disagree",
            self.name()
        );
        by_offset
    }

    /// Every page of the owner's notes, each starting at the previous
    /// page's cursor, until a page comes without one.
    async fn pages_by_cursor(&self, owner: i64, search: Option<&str>, limit: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        let mut start = PageStart::Offset(0);
        loop {
            let page = self
                .repo
                .query_by_owner(owner, search, start, limit)
                .await
                .unwrap_or_else(|err| panic!("{}: page at {start:?}: {err}", self.name()));
            ids.extend(page.notes.iter().map(|n| n.id));
            match page.next {
                Some(cursor) => {
                    assert_eq!(
                        page.notes.len() as i64,
                        limit,
                        "{}: only a full page has a next one",
                        self.name()
                    );
                    start = PageStart::After(cursor);
                }
                None => {
                    assert_eq!(
                        ids.len() as i64,
                        page.total,
                        "{}: cursor pages and total disagree",
                        self.name()
                    );
                    return ids;
                }
            }
        }
    }

    /// Titles of the owner's notes matching `search`, in the order returned,
    /// checking that the total agrees and that a scan of the owner's notes
    /// and the index alone answer exactly as the repository does.
    async fn search_titles(&self, owner: i64, search: &str) -> Vec<String> {
        let scanning = self.repo.clone().scanning_owners_below(i64::MAX);
        let index_only = self.repo.clone().walking_up_to(0);
        let mut answers = Vec::new();
        for (path, repo) in [
            ("as configured", &self.repo),
            ("index only", &index_only),
            ("scan", &scanning),
        ] {
            let page = repo
                .query_by_owner(owner, Some(search), PageStart::Offset(0), 100)
                .await
                .unwrap_or_else(|err| panic!("{}: {path}: search {search:?}: {err}", self.name()));
            assert_eq!(
                page.total,
                page.notes.len() as i64,
                "{}: {path}: total of {search:?}",
                self.name()
            );
            answers.push(page.notes.into_iter().map(|n| n.title).collect::<Vec<_>>());
        }
        for (path, answer) in [("the index alone", &answers[1]), ("a scan", &answers[2])] {
            assert_eq!(
                &answers[0],
                answer,
                "{}: {path} disagrees on {search:?}",
                self.name()
            );
        }
        answers.swap_remove(0)
    }
}

/// One fresh, migrated repository per available backend.
async fn backends() -> Vec<Backend> {
    let mut backends = Vec::new();
    for db in TestDatabase::all().await {
        let pool = Database::connect(&db.config(), &note_service::migrations())
            .await
            .unwrap_or_else(|err| panic!("{}: connect and migrate: {err:?}", db.backend));
        // Every owner searched through the text index where there is one
        // (the repository scans small owners by default); search_titles
        // checks the scan against it.
        let repo = NoteRepo::open(pool.clone())
            .await
            .unwrap_or_else(|err| panic!("{}: open the repository: {err}", db.backend))
            .scanning_owners_below(0);
        backends.push(Backend { db, pool, repo });
    }
    backends
}

#[tokio::test]
async fn created_notes_are_found_by_id_in_id_order() {
    for b in backends().await {
        let before = easynote_shared::db::now_millis();
        let first = b.create(OWNER, "first", "one").await;
        let second = b.create(OTHER, "second", "").await;
        let third = b.create(OWNER, "third", &"x".repeat(64 * 1024)).await;
        let after = easynote_shared::db::now_millis();
        assert!(
            first < second && second < third,
            "{}: ids increase",
            b.name()
        );

        let asked = [third, third + 100, first, second];
        let found = b.repo.find_many(&asked, OWNER).await.expect("find many");
        let others = b.repo.find_many(&asked, OTHER).await.expect("find many");
        let summary = |found: &[NoteRecord]| -> Vec<(i64, i64, String, usize)> {
            found
                .iter()
                .map(|n| (n.id, n.user_id, n.title.clone(), n.content.len()))
                .collect()
        };
        assert_eq!(
            summary(&found),
            [
                (first, OWNER, "first".into(), 3),
                (third, OWNER, "third".into(), 64 * 1024)
            ],
            "{}: the owner's notes in id order, unknown and others' ids skipped",
            b.name()
        );
        assert_eq!(
            summary(&others),
            [(second, OTHER, "second".into(), 0)],
            "{}: the other owner's note only",
            b.name()
        );
        for note in found.iter().chain(&others) {
            assert!(
                (before..=after).contains(&note.created_at),
                "{}: created_at {} outside {before}..={after}",
                b.name(),
                note.created_at
            );
        }
        assert!(
            b.repo
                .find_many(&[], OWNER)
                .await
                .expect("find none")
                .is_empty(),
            "{}",
            b.name()
        );
    }
}

#[tokio::test]
async fn deleting_a_note_is_soft_and_happens_once() {
    for b in backends().await {
        let id = b.create(OWNER, "doomed", "bye").await;
        assert_eq!(
            b.deleted_at(id).await,
            Some(None),
            "{}: live before delete",
            b.name()
        );

        assert!(
            b.repo.delete(id, OWNER).await.expect("delete"),
            "{}: first delete",
            b.name()
        );
        assert!(
            b.find(id).await.is_none(),
            "{}: a deleted note is not found",
            b.name()
        );
        assert!(
            matches!(b.deleted_at(id).await, Some(Some(at)) if at > 0),
            "{}: the row stays, with deleted_at set: {:?}",
            b.name(),
            b.deleted_at(id).await
        );

        assert!(
            !b.repo.delete(id, OWNER).await.expect("delete again"),
            "{}: second delete",
            b.name()
        );
        assert!(
            !b.repo
                .delete(id + 100, OWNER)
                .await
                .expect("delete missing"),
            "{}: missing",
            b.name()
        );
    }
}

#[tokio::test]
async fn another_owners_note_cannot_be_deleted() {
    for b in backends().await {
        let id = b.create(OWNER, "mine", "hands off").await;
        assert!(
            !b.repo.delete(id, OTHER).await.expect("delete"),
            "{}: foreign delete",
            b.name()
        );
        assert_eq!(
            b.deleted_at(id).await,
            Some(None),
            "{}: still live",
            b.name()
        );
        let note = b
            .find(id)
            .await
            .unwrap_or_else(|| panic!("{}: note is gone", b.name()));
        assert_eq!(
            (note.title.as_str(), note.content.as_str()),
            ("mine", "hands off"),
            "{}",
            b.name()
        );
    }
}

#[tokio::test]
async fn updates_change_exactly_the_given_fields() {
    let cases = [
        (
            "title only",
            Some("new title"),
            None,
            ("new title", "old content"),
        ),
        (
            "content only",
            None,
            Some("new content"),
            ("old title", "new content"),
        ),
        (
            "both",
            Some("new title"),
            Some("new content"),
            ("new title", "new content"),
        ),
        ("empty content", None, Some(""), ("old title", "")),
    ];
    for b in backends().await {
        for (case, title, content, expected) in cases {
            let id = b.create(OWNER, "old title", "old content").await;
            let changes = NoteChanges { title, content };
            let updated = b.repo.update(id, OWNER, &changes).await.expect("update");
            assert!(updated, "{}: {case}: update must find the note", b.name());
            let note = b.find(id).await.expect("note after update");
            assert_eq!(
                (note.title.as_str(), note.content.as_str()),
                expected,
                "{}: {case}",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn an_update_that_changes_nothing_still_finds_the_note() {
    for b in backends().await {
        let id = b.create(OWNER, "same", "same").await;
        let changes = NoteChanges {
            title: Some("same"),
            content: Some("same"),
        };
        // Repeated quickly, some of these land in the millisecond of the
        // previous one, so not even updated_at changes (MySQL then reports
        // 0 changed rows unless it counts matched rows).
        for attempt in 0..20 {
            let updated = b.repo.update(id, OWNER, &changes).await.expect("update");
            assert!(
                updated,
                "{}: attempt {attempt}: a no-op update is still a hit",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn updates_of_missing_foreign_or_deleted_notes_find_nothing() {
    for b in backends().await {
        let live = b.create(OWNER, "live", "").await;
        let deleted = b.create(OWNER, "deleted", "").await;
        assert!(b.repo.delete(deleted, OWNER).await.expect("delete"));
        let changes = NoteChanges {
            title: Some("hijacked"),
            content: None,
        };
        let cases = [
            ("missing", live + 100, OWNER),
            ("foreign", live, OTHER),
            ("deleted", deleted, OWNER),
        ];
        for (case, id, owner) in cases {
            let updated = b.repo.update(id, owner, &changes).await.expect("update");
            assert!(!updated, "{}: {case} note must not be updated", b.name());
        }
        assert_eq!(
            b.find(live).await.expect("live note").title,
            "live",
            "{}: untouched",
            b.name()
        );
    }
}

#[tokio::test]
async fn paging_through_every_note_yields_each_once_newest_first() {
    for b in backends().await {
        let mut created = Vec::new();
        for i in 0..25 {
            created.push(b.create(OWNER, &format!("note {i}"), "").await);
        }
        b.create(OTHER, "someone else's", "").await;

        let paged = b.all_pages(OWNER, None, 10).await;
        let expected: Vec<i64> = created.iter().rev().copied().collect();
        assert_eq!(
            paged,
            expected,
            "{}: newest first, no duplicates, no gaps",
            b.name()
        );

        let first = b
            .repo
            .query_by_owner(OWNER, None, PageStart::Offset(0), 10)
            .await
            .expect("first page");
        assert_eq!(
            (first.notes.len(), first.total),
            (10, 25),
            "{}: first page",
            b.name()
        );
        let last = b
            .repo
            .query_by_owner(OWNER, None, PageStart::Offset(20), 10)
            .await
            .expect("last page");
        assert_eq!(
            (last.notes.len(), last.total),
            (5, 25),
            "{}: last page",
            b.name()
        );
    }
}

#[tokio::test]
async fn notes_of_the_same_millisecond_page_stably() {
    for b in backends().await {
        let mut created = Vec::new();
        for i in 0..25 {
            created.push(b.create(OWNER, &format!("note {i}"), "").await);
        }
        // Five notes per millisecond, and the millisecond order against the
        // id order: only the id tie-break keeps the pages apart.
        let base = 1_700_000_000_000;
        let mut expected: Vec<(i64, i64)> = Vec::new();
        for (i, &id) in created.iter().enumerate() {
            let created_at = base - (i as i64 / 5);
            b.set_created_at(id, created_at).await;
            expected.push((created_at, id));
        }
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<i64> = expected.into_iter().map(|(_, id)| id).collect();

        for limit in [3, 5, 10, 7] {
            let paged = b.all_pages(OWNER, None, limit).await;
            assert_eq!(paged, expected, "{}: pages of {limit}", b.name());
        }
    }
}

#[tokio::test]
async fn queries_see_only_the_owners_live_notes() {
    for b in backends().await {
        let kept = b.create(OWNER, "kept", "").await;
        let deleted = b.create(OWNER, "deleted", "").await;
        assert!(b.repo.delete(deleted, OWNER).await.expect("delete"));
        let theirs = b.create(OTHER, "theirs", "").await;

        let cases = [
            (OWNER, vec![kept]),
            (OTHER, vec![theirs]),
            (OTHER + 1, vec![]),
        ];
        for (owner, expected) in cases {
            let page = b
                .repo
                .query_by_owner(owner, None, PageStart::Offset(0), 10)
                .await
                .expect("query");
            let ids: Vec<i64> = page.notes.iter().map(|n| n.id).collect();
            assert_eq!(ids, expected, "{}: notes of owner {owner}", b.name());
            assert_eq!(
                page.total,
                expected.len() as i64,
                "{}: total of owner {owner}",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn search_is_a_case_insensitive_plain_substring_of_title_or_content() {
    // (title, content), oldest first.
    let notes = [
        ("Shopping List", "milk, eggs"),
        ("Meeting", "Discuss the BUDGET"),
        ("100% sure", ""),
        ("100 percent", ""),
        ("a_b", ""),
        ("axb", ""),
        ("wow!", ""),
        ("wow", "no bang here"),
    ];
    let cases: &[(&str, &[&str])] = &[
        ("shopping", &["Shopping List"]),
        ("SHOPPING LIST", &["Shopping List"]),
        ("MiLk", &["Shopping List"]),
        ("budget", &["Meeting"]),
        ("%", &["100% sure"]),
        ("0%", &["100% sure"]),
        ("100", &["100 percent", "100% sure"]),
        ("_", &["a_b"]),
        ("a_b", &["a_b"]),
        ("a%b", &[]),
        ("!", &["wow!"]),
        ("!%", &[]),
        ("!_", &[]),
        ("wow", &["wow", "wow!"]),
        ("nothing like it", &[]),
    ];
    for b in backends().await {
        for (title, content) in notes {
            b.create(OWNER, title, content).await;
        }
        b.create(OTHER, "Shopping for someone else", "budget, 100%")
            .await;
        for (key, expected) in cases {
            let found = b.search_titles(OWNER, key).await;
            assert_eq!(
                found,
                *expected,
                "{}: search {key:?}, newest first",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn sql_in_a_search_key_is_only_text() {
    let injection = "'; DROP TABLE note; --";
    for b in backends().await {
        b.create(OWNER, "plain", "").await;
        b.create(OWNER, "quoted", &format!("they typed {injection} here"))
            .await;
        for key in [injection, "' OR '1'='1", "\" OR 1=1 --", "\\", "'"] {
            let expected: &[&str] = if injection.contains(key) {
                &["quoted"]
            } else {
                &[]
            };
            assert_eq!(
                b.search_titles(OWNER, key).await,
                expected,
                "{}: search {key:?}",
                b.name()
            );
        }
        let page = b
            .repo
            .query_by_owner(OWNER, None, PageStart::Offset(0), 10)
            .await
            .expect("table still there");
        assert_eq!(page.total, 2, "{}: both notes survive", b.name());
    }
}

#[tokio::test]
async fn an_offset_past_the_end_is_an_empty_page_with_the_total() {
    for b in backends().await {
        for i in 0..3 {
            b.create(OWNER, &format!("note {i}"), "").await;
        }
        for (offset, search) in [(3, None), (50, None), (1_000_000, None), (3, Some("note"))] {
            let page = b
                .repo
                .query_by_owner(OWNER, search, PageStart::Offset(offset), 10)
                .await
                .expect("query");
            assert!(
                page.notes.is_empty(),
                "{}: offset {offset} {search:?}",
                b.name()
            );
            assert_eq!(
                page.total,
                3,
                "{}: total at offset {offset} {search:?}",
                b.name()
            );
        }
    }
}

/// A non-ASCII key finds the text it was copied from on every backend
/// (SQLite's `LOWER()` folds ASCII only, so the key must not be folded
/// further than that).
#[tokio::test]
async fn a_non_ascii_search_key_finds_its_own_text() {
    for b in backends().await {
        b.create(OWNER, "Été à Paris", "").await;
        b.create(OWNER, "ÄRGER", "").await;
        b.create(OWNER, "笔记", "").await;
        let cases: &[(&str, &[&str])] = &[
            ("Été", &["Été à Paris"]),
            ("ÄRGER", &["ÄRGER"]),
            ("笔", &["笔记"]),
        ];
        for (key, expected) in cases {
            assert_eq!(
                b.search_titles(OWNER, key).await,
                *expected,
                "{}: search {key:?}",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_creates_once_per_owner_and_refuses_another_request() {
    for b in backends().await {
        let Created::New(id) = b.create_keyed(OWNER, "first", "key-1", "hash-a").await else {
            panic!("{}: first use of a key creates", b.name());
        };
        let again = b.create_keyed(OWNER, "first", "key-1", "hash-a").await;
        assert_eq!(
            again,
            Created::Replayed(id),
            "{}: a retry replays",
            b.name()
        );
        let reused = b.create_keyed(OWNER, "other", "key-1", "hash-b").await;
        assert_eq!(reused, Created::KeyReused, "{}: another request", b.name());
        // Keys are per owner and compared exactly: case matters.
        assert!(matches!(
            b.create_keyed(OTHER, "first", "key-1", "hash-a").await,
            Created::New(_)
        ));
        assert!(matches!(
            b.create_keyed(OWNER, "first", "KEY-1", "hash-a").await,
            Created::New(_)
        ));
        // A deleted note still holds its key: the retry answers the same id.
        assert!(b.repo.delete(id, OWNER).await.expect("delete"));
        let after_delete = b.create_keyed(OWNER, "first", "key-1", "hash-a").await;
        assert_eq!(
            after_delete,
            Created::Replayed(id),
            "{}: after delete",
            b.name()
        );
        // Creates without a key are unaffected by the unique key.
        b.create(OWNER, "no key", "").await;
        b.create(OWNER, "no key", "").await;
        assert_eq!(b.rows().await, 5, "{}: rows written", b.name());
    }
}

#[tokio::test]
async fn concurrent_creates_with_one_key_write_one_note() {
    for b in backends().await {
        let mut creates = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let repo = b.repo.clone();
            creates.spawn(async move {
                let idempotency = Idempotency {
                    key: "race-key",
                    request_hash: "hash".to_owned(),
                };
                repo.create(OWNER, "racing", "", Some(&idempotency)).await
            });
        }
        let outcomes: Vec<Created> = creates
            .join_all()
            .await
            .into_iter()
            .map(|created| {
                created.unwrap_or_else(|err| panic!("{}: racing create: {err}", b.name()))
            })
            .collect();
        let new: Vec<i64> = outcomes
            .iter()
            .filter_map(|c| match c {
                Created::New(id) => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(new.len(), 1, "{}: one create wins: {outcomes:?}", b.name());
        assert!(
            outcomes
                .iter()
                .all(|c| matches!(c, Created::New(id) | Created::Replayed(id) if *id == new[0])),
            "{}: the others replay it: {outcomes:?}",
            b.name()
        );
        assert_eq!(b.rows().await, 1, "{}: rows written", b.name());
    }
}

#[tokio::test]
async fn the_total_stays_exact_under_concurrent_creates_and_deletes() {
    for b in backends().await {
        let seeded: Vec<i64> = {
            let mut ids = Vec::new();
            for i in 0..20 {
                ids.push(b.create(OWNER, &format!("seed {i}"), "").await);
            }
            ids
        };
        // 40 creates and 20 deletes at once (each seeded note deleted twice
        // over: only one of the two may count), from a fresh owner's first
        // note on, so that the count row is born under contention too.
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let repo = b.repo.clone();
            tasks.spawn(async move {
                let owner = if i % 2 == 0 { OWNER } else { OTHER };
                repo.create(owner, &format!("concurrent {i}"), "", None)
                    .await
                    .map(drop)
            });
        }
        for &id in seeded.iter().take(10) {
            for _ in 0..2 {
                let repo = b.repo.clone();
                tasks.spawn(async move { repo.delete(id, OWNER).await.map(drop) });
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task")
                .unwrap_or_else(|err| panic!("{}: concurrent write: {err}", b.name()));
        }
        for (owner, expected) in [(OWNER, 20 - 10 + 20), (OTHER, 20)] {
            let live = on_pool!(&b.pool, |pool| sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM note WHERE user_id = ? AND deleted_at IS NULL"
            )
            .bind(owner)
            .fetch_one(pool)
            .await)
            .expect("count rows");
            let page = b
                .repo
                .query_by_owner(owner, None, PageStart::Offset(0), 1)
                .await
                .expect("query");
            assert_eq!(
                (live, page.total),
                (expected, expected),
                "{}: live rows and total of owner {owner}",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn notes_created_while_paging_by_cursor_neither_repeat_nor_push_others_out() {
    for b in backends().await {
        let mut before = Vec::new();
        for i in 0..23 {
            before.push(b.create(OWNER, &format!("before {i}"), "").await);
        }
        let mut seen = Vec::new();
        let mut start = PageStart::Offset(0);
        loop {
            let page = b
                .repo
                .query_by_owner(OWNER, None, start, 5)
                .await
                .expect("page");
            seen.extend(page.notes.iter().map(|n| n.id));
            // Newer notes land before the cursor, so the walk never meets them.
            b.create(OWNER, "created while paging", "").await;
            match page.next {
                Some(cursor) => start = PageStart::After(cursor),
                None => break,
            }
        }
        let expected: Vec<i64> = before.iter().rev().copied().collect();
        assert_eq!(
            seen,
            expected,
            "{}: each earlier note once, newest first",
            b.name()
        );
    }
}

#[tokio::test]
async fn a_search_pages_by_cursor_and_totals_its_matches() {
    for b in backends().await {
        let mut matching = Vec::new();
        for i in 0..12 {
            let id = b
                .create(
                    OWNER,
                    &format!("note {i}"),
                    if i % 3 == 0 {
                        "has the Needle in it"
                    } else {
                        "plain"
                    },
                )
                .await;
            if i % 3 == 0 {
                matching.push(id);
            }
        }
        matching.push(b.create(OWNER, "kept needle", "").await);
        let deleted = b.create(OWNER, "another NEEDLE", "").await;
        assert!(b.repo.delete(deleted, OWNER).await.expect("delete"));
        b.create(OTHER, "their needle", "").await;
        let expected: Vec<i64> = matching.iter().rev().copied().collect();
        // Pages of 2 through the 5 matches, by offset and by cursor alike
        // (all_pages compares the two walks).
        assert_eq!(
            b.all_pages(OWNER, Some("needle"), 2).await,
            expected,
            "{}: the owner's live matches, newest first",
            b.name()
        );
        let page = b
            .repo
            .query_by_owner(OWNER, Some("NEEDLE"), PageStart::Offset(0), 2)
            .await
            .expect("first page");
        assert_eq!(page.total, 5, "{}: the total counts the matches", b.name());
    }
}

#[tokio::test]
async fn a_common_words_pages_are_the_same_by_walk_by_index_and_by_scan() {
    // A walk of the owner's newest notes serves a dense search's page when
    // it is expected to fill it within its rows (here 10, bounded at 40);
    // matches bunched in older notes make the bounded walk come up short,
    // and the index takes over. Every way must page alike.
    for mut b in backends().await {
        // 20 matches among the 30 oldest notes, then 40 without any, then
        // 10 matches spread among the 30 newest.
        let mut expected = Vec::new();
        for i in 0..100 {
            let bunched = i < 30 && i % 3 != 0;
            let spread = i >= 70 && i % 3 == 0;
            let content = if bunched || spread {
                "a COMMON word"
            } else {
                "plain"
            };
            let id = b.create(OWNER, &format!("note {i}"), content).await;
            if bunched || spread {
                expected.push(id);
            }
        }
        b.create(OTHER, "their common word", "").await;
        expected.reverse();
        let configured = b.repo.clone();
        for (path, repo) in [
            ("as configured", configured.clone()),
            ("a short walk", configured.clone().walking_up_to(10)),
            ("the index alone", configured.clone().walking_up_to(0)),
            ("a scan", configured.clone().scanning_owners_below(i64::MAX)),
        ] {
            b.repo = repo;
            for limit in [1, 4, 7] {
                assert_eq!(
                    b.all_pages(OWNER, Some("common"), limit).await,
                    expected,
                    "{}: {path}, pages of {limit}",
                    b.name()
                );
            }
        }
    }
}

#[tokio::test]
async fn searches_use_the_text_index_on_sqlite_and_scan_on_a_server_without_ngram() {
    for b in backends().await {
        let expected = match b.name() {
            "sqlite" => TextIndex::Trigram,
            _ => {
                // MariaDB (CI's server) has no ngram parser: no index is
                // built there and every search scans; MySQL has one.
                let ngram = on_pool!(&b.pool, |pool| sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ngram' AND PLUGIN_STATUS = 'ACTIVE'"
                )
                .fetch_one(pool)
                .await)
                .expect("plugins");
                if ngram > 0 {
                    TextIndex::Ngram
                } else {
                    TextIndex::None
                }
            }
        };
        assert_eq!(b.repo.text_index(), expected, "{}", b.name());
    }
}

#[tokio::test]
async fn the_text_index_follows_updates_and_hard_deletes() {
    for b in backends().await {
        let id = b.create(OWNER, "original title", "original words").await;
        let changes = NoteChanges {
            title: Some("renamed"),
            content: Some("fresh words"),
        };
        assert!(b.repo.update(id, OWNER, &changes).await.expect("update"));
        assert_eq!(
            b.search_titles(OWNER, "original").await,
            Vec::<String>::new(),
            "{}",
            b.name()
        );
        assert_eq!(
            b.search_titles(OWNER, "fresh wo").await,
            ["renamed"],
            "{}",
            b.name()
        );
        assert_eq!(
            b.search_titles(OWNER, "RENAMED").await,
            ["renamed"],
            "{}",
            b.name()
        );

        // Rows removed past the repository (e.g. a purge) leave the index too.
        on_pool!(&b.pool, |pool| sqlx::query("DELETE FROM note WHERE id = ?")
            .bind(id)
            .execute(pool)
            .await
            .map(drop))
        .expect("purge");
        assert_eq!(
            b.search_titles(OWNER, "fresh").await,
            Vec::<String>::new(),
            "{}",
            b.name()
        );
        if b.name() == "sqlite" {
            on_pool!(&b.pool, |pool| sqlx::query(
                "INSERT INTO note_text (note_text, rank) VALUES ('integrity-check', 1)"
            )
            .execute(pool)
            .await
            .map(drop))
            .unwrap_or_else(|err| panic!("the index matches the table: {err}"));
        }
    }
}

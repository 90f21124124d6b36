//! `UserRepo` against every available backend: SQLite always, MySQL/MariaDB
//! when `EASYNOTE_TEST_MYSQL_URL` is set. Every test gets fresh databases.

use easynote_shared::{db::Database, on_pool};
use easynote_testkit::TestDatabase;
use user_service::repo::{CreateError, UserRepo};

/// Not a real hash: the repository stores whatever it is given.
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

/// A migrated repository on one backend; the database lives as long as it does.
struct Backend {
    db: TestDatabase,
    pool: Database,
    repo: UserRepo,
}

impl Backend {
    fn name(&self) -> &'static str {
        self.db.backend
    }
}

/// One fresh, migrated repository per available backend.
async fn backends() -> Vec<Backend> {
    let mut backends = Vec::new();
    for db in TestDatabase::all().await {
        let pool = Database::connect(&db.config(), &user_service::migrations())
            .await
            .unwrap_or_else(|err| panic!("{}: connect and migrate: {err:?}", db.backend));
        let repo = UserRepo::new(pool.clone());
        backends.push(Backend { db, pool, repo });
    }
    backends
}

/// Marks a user deleted the way a soft delete would.
async fn soft_delete(backend: &Backend, id: i64) {
    let sql = "UPDATE user SET deleted_at = ? WHERE id = ?";
    on_pool!(&backend.pool, |pool| sqlx::query(sql)
        .bind(1_i64)
        .bind(id)
        .execute(pool)
        .await
        .map(drop))
    .unwrap_or_else(|err| panic!("{}: soft delete: {err}", backend.name()));
}

#[tokio::test]
async fn every_created_user_gets_a_larger_id() {
    for b in backends().await {
        let mut last = 0;
        for name in ["ann", "bob", "cid", "dee"] {
            let id = b
                .repo
                .create(name, HASH)
                .await
                .unwrap_or_else(|err| panic!("{}: create {name}: {err:?}", b.name()));
            assert!(
                id > last,
                "{}: id of {name} is {id}, not above {last}",
                b.name()
            );
            last = id;
        }
    }
}

#[tokio::test]
async fn a_taken_username_is_refused_as_taken() {
    for b in backends().await {
        b.repo.create("alice", HASH).await.expect("first alice");
        let err = b
            .repo
            .create("alice", "another hash")
            .await
            .expect_err("a second alice must be refused");
        assert!(
            matches!(err, CreateError::UsernameTaken),
            "{}: expected UsernameTaken, got {err:?}",
            b.name()
        );
    }
}

#[tokio::test]
async fn usernames_differing_only_in_case_are_different_users() {
    for b in backends().await {
        let upper = b.repo.create("Alice", HASH).await;
        let lower = b.repo.create("alice", HASH).await;
        let (upper, lower) = match (upper, lower) {
            (Ok(upper), Ok(lower)) => (upper, lower),
            other => panic!(
                "{}: Alice and alice must both be allowed: {other:?}",
                b.name()
            ),
        };
        assert_ne!(upper, lower, "{}", b.name());
        let cases = [
            ("Alice", Some(upper)),
            ("alice", Some(lower)),
            ("ALICE", None),
        ];
        for (name, expected) in cases {
            let found = b
                .repo
                .credentials_by_username(name)
                .await
                .unwrap_or_else(|err| panic!("{}: look up {name}: {err}", b.name()));
            assert_eq!(
                found.map(|c| c.id),
                expected,
                "{}: look up {name:?}",
                b.name()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_registrations_of_one_name_let_exactly_one_through() {
    const RACERS: usize = 8;
    for b in backends().await {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let repo = b.repo.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    repo.create("racer", HASH).await
                })
            })
            .collect();
        let mut won = 0;
        let mut taken = 0;
        for racer in racers {
            match racer.await.expect("racer task") {
                Ok(_) => won += 1,
                Err(CreateError::UsernameTaken) => taken += 1,
                Err(err) => panic!("{}: a racer failed otherwise: {err:?}", b.name()),
            }
        }
        assert_eq!(
            (won, taken),
            (1, RACERS - 1),
            "{}: (created, taken)",
            b.name()
        );
    }
}

#[tokio::test]
async fn credentials_are_found_for_live_users_only() {
    for b in backends().await {
        let id = b.repo.create("carol", HASH).await.expect("create carol");
        let gone = b.repo.create("gone", HASH).await.expect("create gone");
        soft_delete(&b, gone).await;

        let found = b
            .repo
            .credentials_by_username("carol")
            .await
            .expect("look up carol")
            .unwrap_or_else(|| panic!("{}: carol must be found", b.name()));
        assert_eq!(
            (found.id, found.password_hash.as_str()),
            (id, HASH),
            "{}",
            b.name()
        );

        // No trailing-space case here: MySQL's PAD SPACE collations compare
        // "carol " equal to "carol"; validation keeps such names out.
        for name in ["nobody", "gone", "caro", "Carol"] {
            let found = b.repo.credentials_by_username(name).await.expect("look up");
            assert!(
                found.is_none(),
                "{}: {name:?} must not be found: {found:?}",
                b.name()
            );
        }
    }
}

#[tokio::test]
async fn find_many_returns_the_existing_users_in_id_order() {
    for b in backends().await {
        let mut ids = Vec::new();
        for name in ["u1", "u2", "u3", "u4"] {
            ids.push(b.repo.create(name, HASH).await.expect("create"));
        }
        soft_delete(&b, ids[2]).await;
        let unknown = ids[3] + 1000;

        let found = b
            .repo
            .find_many(&[ids[3], unknown, ids[0], ids[2], ids[1]])
            .await
            .expect("find many");
        let found: Vec<(i64, &str)> = found.iter().map(|u| (u.id, u.username.as_str())).collect();
        assert_eq!(
            found,
            [(ids[0], "u1"), (ids[1], "u2"), (ids[3], "u4")],
            "{}: live users in id order, unknown and deleted ones skipped",
            b.name()
        );

        let none = b.repo.find_many(&[]).await.expect("find none");
        assert!(none.is_empty(), "{}: no ids, no users", b.name());
        let missing = b.repo.find_many(&[unknown]).await.expect("find unknown");
        assert!(
            missing.is_empty(),
            "{}: unknown ids only, no users",
            b.name()
        );
    }
}

#[tokio::test]
async fn unicode_usernames_round_trip() {
    let names = ["张伟", "Zoë", "😀 emoji", "Ελένη", &"é".repeat(128)];
    for b in backends().await {
        let mut ids = Vec::new();
        for name in names {
            let id = b
                .repo
                .create(name, HASH)
                .await
                .unwrap_or_else(|err| panic!("{}: create {name:?}: {err:?}", b.name()));
            let found = b.repo.credentials_by_username(name).await.expect("look up");
            assert_eq!(
                found.map(|c| c.id),
                Some(id),
                "{}: look up {name:?}",
                b.name()
            );
            ids.push(id);
        }
        let stored: Vec<String> = b
            .repo
            .find_many(&ids)
            .await
            .expect("find many")
            .into_iter()
            .map(|u| u.username)
            .collect();
        assert_eq!(stored, names, "{}: names read back", b.name());
    }
}

/// `EASYNOTE_DATABASE_PASSWORD_FILE` (a mounted secret) replaces whatever
/// password the URL holds: a MySQL account with a password connects with
/// the file's, and a wrong file is refused. MySQL only: SQLite has none.
#[tokio::test]
async fn a_mysql_password_file_replaces_the_urls_password() {
    use easynote_shared::{config::Env, db::DatabaseConfig};
    let Some(db) = TestDatabase::mysql().await else {
        return;
    };
    let mut admin = <sqlx::MySqlConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("an admin connection");
    let account = format!("easynote_pw_{}", std::process::id());
    let password = format!("pw-{}-file", std::process::id());
    for sql in [
        format!("DROP USER IF EXISTS '{account}'@'%'"),
        format!("CREATE USER '{account}'@'%' IDENTIFIED BY '{password}'"),
        format!("GRANT ALL ON *.* TO '{account}'@'%'"),
    ] {
        sqlx::raw_sql(&sql).execute(&mut admin).await.expect(&sql);
    }

    // The test database's URL with this account and a wrong password in it.
    let (scheme, rest) = db.url.split_once("://").expect("a URL");
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://{account}:not-the-password@{host_and_db}");
    let dir = tempfile::tempdir().expect("tempdir");
    let right = dir.path().join("right");
    let wrong = dir.path().join("wrong");
    std::fs::write(&right, format!("{password}\n")).expect("write");
    std::fs::write(&wrong, "also-wrong\n").expect("write");
    let config = |file: &std::path::Path| {
        let env = Env::from_pairs([
            ("EASYNOTE_DATABASE_URL", url.clone()),
            (
                "EASYNOTE_DATABASE_PASSWORD_FILE",
                file.display().to_string(),
            ),
            ("EASYNOTE_DB_CONNECT_TIMEOUT", "1s".to_owned()),
        ]);
        DatabaseConfig::from_env(&env, "sqlite::memory:").expect("config")
    };

    let pool = Database::connect(&config(&right), &user_service::migrations())
        .await
        .expect("the file's password is used");
    pool.ping().await.expect("ping");
    pool.close().await;
    let err = Database::connect(&config(&wrong), &user_service::migrations())
        .await
        .expect_err("a wrong password is refused");
    assert!(format!("{err:?}").contains("Access denied"), "{err:?}");

    let sql = format!("DROP USER '{account}'@'%'");
    sqlx::raw_sql(&sql).execute(&mut admin).await.expect(&sql);
}

/// A password for SQLite is a mistake, named as one.
#[test]
fn a_database_password_for_sqlite_is_refused() {
    use easynote_shared::{config::Env, db::DatabaseConfig};
    let env = Env::from_pairs([
        ("EASYNOTE_DATABASE_URL", "sqlite://data/x.db"),
        ("EASYNOTE_DATABASE_PASSWORD", "secret-pw"),
    ]);
    let err = DatabaseConfig::from_env(&env, "sqlite::memory:")
        .expect_err("SQLite has no password")
        .to_string();
    assert!(err.starts_with("EASYNOTE_DATABASE_PASSWORD: "), "{err}");
    assert!(!err.contains("secret-pw"), "{err}");
}

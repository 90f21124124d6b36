//! The note-service gRPC API, served for real on `127.0.0.1:0` next to a
//! real user-service (which it asks for authors' names), each over a fresh
//! database: SQLite, plus MySQL/MariaDB for the note database in the smoke
//! test when `EASYNOTE_TEST_MYSQL_URL` is set.

use std::{net::SocketAddr, time::Duration};

use easynote_shared::{
    config::Environment,
    discovery::{ChannelSettings, DiscoveryConfig},
    governance::GovernanceConfig,
    grpc::ServiceConfig,
    process::ProcessConfig,
    proto::{
        note::v1::{
            CreateNoteRequest, DeleteNoteRequest, MGetNoteRequest, Note, QueryNoteRequest,
            QueryNoteResponse, UpdateNoteRequest, note_service_client::NoteServiceClient,
        },
        user::v1::{CreateUserRequest, user_service_client::UserServiceClient},
    },
    tls::TlsSettings,
};
use easynote_testkit::{
    TestDatabase, assert_grpc_serving, assert_status, eventually, server::RunningServer,
};
use note_service::NoteServer;
use tonic::{Code, Status, transport::Channel};
use user_service::UserServer;

/// Static discovery that is never dialled, except for user-service at `users`.
fn discovery(users: SocketAddr) -> DiscoveryConfig {
    DiscoveryConfig::Static {
        user_addrs: vec![users.to_string()],
        note_addrs: vec!["127.0.0.1:1".into()],
    }
}

/// A running user-service.
struct Users {
    db: TestDatabase,
    client: UserServiceClient<Channel>,
    server: RunningServer,
}

/// Starts a user-service over `db`, listening on `addr` (port 0 for any).
async fn start_users(db: TestDatabase, addr: SocketAddr) -> Users {
    let config = user_service::Config {
        service: ServiceConfig {
            process: ProcessConfig {
                environment: Environment::Development,
                discovery: discovery("127.0.0.1:1".parse().expect("an address")),
                lifecycle: Default::default(),
                governance: GovernanceConfig::defaults(),
                tls: TlsSettings::plaintext(),
            },
            grpc_addr: addr,
            database: db.config(),
        },
    };
    let server = UserServer::build(config)
        .await
        .unwrap_or_else(|err| panic!("build user-service on {addr}: {err:?}"));
    let server = RunningServer::spawn("user-service", server.local_addr(), |shutdown| {
        server.run(shutdown)
    });
    let client = UserServiceClient::new(server.channel().await);
    Users { db, client, server }
}

impl Users {
    /// Stops the server, checks it stopped cleanly, and hands back its
    /// database and address for a restart.
    async fn stop(self) -> (TestDatabase, SocketAddr) {
        drop(self.client);
        let addr = self.server.addr;
        self.server.stop().await;
        (self.db, addr)
    }
}

/// A note-service and the user-service it calls.
struct TestApp {
    addr: SocketAddr,
    notes: NoteServiceClient<Channel>,
    /// Kept so that the database outlives the server.
    _note_db: TestDatabase,
    server: RunningServer,
    /// `None` only while a test has user-service stopped.
    users: Option<Users>,
}

/// Starts user-service then note-service, both on SQLite.
async fn spawn_app() -> TestApp {
    spawn_app_on(TestDatabase::sqlite()).await
}

/// Starts user-service (SQLite) then note-service over `note_db`.
async fn spawn_app_on(note_db: TestDatabase) -> TestApp {
    let users = start_users(
        TestDatabase::sqlite(),
        "127.0.0.1:0".parse().expect("an address"),
    )
    .await;
    let config = note_service::Config {
        service: ServiceConfig {
            process: ProcessConfig {
                environment: Environment::Development,
                discovery: discovery(users.server.addr),
                lifecycle: Default::default(),
                governance: GovernanceConfig::defaults(),
                tls: TlsSettings::plaintext(),
            },
            grpc_addr: "127.0.0.1:0".parse().expect("an address"),
            database: note_db.config(),
        },
        channels: ChannelSettings::default(),
    };
    let server = NoteServer::build(config)
        .await
        .unwrap_or_else(|err| panic!("{}: build note-service: {err:?}", note_db.backend));
    let server = RunningServer::spawn("note-service", server.local_addr(), |shutdown| {
        server.run(shutdown)
    });
    let notes = NoteServiceClient::new(server.channel().await);
    TestApp {
        addr: server.addr,
        notes,
        _note_db: note_db,
        server,
        users: Some(users),
    }
}

impl TestApp {
    /// Registers a user and returns its id.
    async fn register(&self, username: &str) -> i64 {
        let users = self.users.as_ref().expect("user-service is running");
        let request = CreateUserRequest {
            username: username.into(),
            password: "secret password".into(),
        };
        users
            .client
            .clone()
            .create_user(request)
            .await
            .unwrap_or_else(|status| panic!("register {username}: {status:?}"))
            .into_inner()
            .user_id
    }

    async fn create_note(&self, user_id: i64, title: &str, content: &str) -> Result<i64, Status> {
        let request = CreateNoteRequest {
            user_id,
            title: title.into(),
            content: content.into(),
            idempotency_key: None,
        };
        Ok(self
            .notes
            .clone()
            .create_note(request)
            .await?
            .into_inner()
            .note_id)
    }

    /// Creates a note that must be accepted.
    async fn note(&self, user_id: i64, title: &str) -> i64 {
        self.create_note(user_id, title, "some content")
            .await
            .unwrap_or_else(|status| panic!("create note {title:?}: {status:?}"))
    }

    async fn mget(&self, user_id: i64, note_ids: Vec<i64>) -> Result<Vec<Note>, Status> {
        let request = MGetNoteRequest { note_ids, user_id };
        Ok(self
            .notes
            .clone()
            .m_get_note(request)
            .await?
            .into_inner()
            .notes)
    }

    async fn update(
        &self,
        note_id: i64,
        user_id: i64,
        title: Option<&str>,
        content: Option<&str>,
    ) -> Result<(), Status> {
        let request = UpdateNoteRequest {
            note_id,
            user_id,
            title: title.map(Into::into),
            content: content.map(Into::into),
        };
        self.notes.clone().update_note(request).await.map(drop)
    }

    async fn delete(&self, note_id: i64, user_id: i64) -> Result<(), Status> {
        let request = DeleteNoteRequest { note_id, user_id };
        self.notes.clone().delete_note(request).await.map(drop)
    }

    async fn query(
        &self,
        user_id: i64,
        search_key: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<QueryNoteResponse, Status> {
        let request = QueryNoteRequest {
            user_id,
            search_key: search_key.map(Into::into),
            offset,
            limit,
            cursor: None,
        };
        Ok(self.notes.clone().query_note(request).await?.into_inner())
    }

    /// Stops both services and checks that each stopped cleanly.
    async fn stop(self) {
        drop(self.notes);
        self.server.stop().await;
        if let Some(users) = self.users {
            users.stop().await;
        }
    }
}

fn unix_seconds() -> i64 {
    easynote_shared::db::now_millis() / 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_round_trip_on_every_backend() {
    for db in TestDatabase::all().await {
        let backend = db.backend;
        let app = spawn_app_on(db).await;
        let alice = app.register("alice").await;
        let id = app
            .create_note(alice, "Groceries", "milk")
            .await
            .unwrap_or_else(|status| panic!("{backend}: create: {status:?}"));
        let notes = app
            .mget(alice, vec![id])
            .await
            .unwrap_or_else(|s| panic!("{backend}: mget: {s:?}"));
        let found: Vec<(i64, &str, &str, &str)> = notes
            .iter()
            .map(|n| {
                (
                    n.note_id,
                    n.user_name.as_str(),
                    n.title.as_str(),
                    n.content.as_str(),
                )
            })
            .collect();
        assert_eq!(
            found,
            [(id, "alice", "Groceries", "milk")],
            "{backend}: mget"
        );
        let page = app.query(alice, Some("GROC"), 0, 10).await.expect("query");
        assert_eq!((page.total, page.notes.len()), (1, 1), "{backend}: query");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_returns_only_the_owners_notes_each_with_the_authors_name() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let before = unix_seconds();
    let a1 = app.note(alice, "alice one").await;
    let b1 = app.note(bob, "bob one").await;
    let a2 = app.note(alice, "alice two").await;
    let stranger = app.note(424_242, "by nobody registered").await;
    let after = unix_seconds();

    let asked = vec![b1, stranger, a2 + 1000, a1, a2, a1];
    let found = |notes: &[Note]| -> Vec<(i64, i64, String, String)> {
        notes
            .iter()
            .map(|n| (n.note_id, n.user_id, n.user_name.clone(), n.title.clone()))
            .collect()
    };
    let alices = app.mget(alice, asked.clone()).await.expect("mget as alice");
    assert_eq!(
        found(&alices),
        [
            (a1, alice, "alice".into(), "alice one".into()),
            (a2, alice, "alice".into(), "alice two".into()),
        ],
        "alice's notes only, in id order, with her name; duplicates once"
    );
    let bobs = app.mget(bob, asked.clone()).await.expect("mget as bob");
    assert_eq!(found(&bobs), [(b1, bob, "bob".into(), "bob one".into())]);
    let strangers = app
        .mget(424_242, asked)
        .await
        .expect("mget as an unknown user");
    assert_eq!(
        found(&strangers),
        [(
            stranger,
            424_242,
            String::new(),
            "by nobody registered".into()
        )],
        "an unknown author has no name"
    );
    for note in alices.iter().chain(&bobs).chain(&strangers) {
        assert_eq!(note.content, "some content", "content of {}", note.note_id);
        assert_eq!(note.user_avatar, "", "avatar of {}", note.note_id);
        assert!(
            (before..=after).contains(&note.create_time),
            "create_time {} of {} is not unix seconds within {before}..={after}",
            note.create_time,
            note.note_id
        );
    }
    assert!(
        app.mget(alice, vec![])
            .await
            .expect("mget of none")
            .is_empty(),
        "no ids, no notes"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_can_update_and_delete_their_notes() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let id = app
        .create_note(alice, "draft", "first words")
        .await
        .expect("create");
    let read = |notes: Vec<Note>| -> Vec<(String, String)> {
        notes.into_iter().map(|n| (n.title, n.content)).collect()
    };

    let cases = [
        ("title only", Some("final"), None, ("final", "first words")),
        (
            "content only",
            None,
            Some("last words"),
            ("final", "last words"),
        ),
        (
            "both",
            Some("v3"),
            Some("third words"),
            ("v3", "third words"),
        ),
        (
            "the same again",
            Some("v3"),
            Some("third words"),
            ("v3", "third words"),
        ),
    ];
    for (case, title, content, (want_title, want_content)) in cases {
        app.update(id, alice, title, content)
            .await
            .unwrap_or_else(|status| panic!("{case}: {status:?}"));
        let notes = read(app.mget(alice, vec![id]).await.expect("mget"));
        assert_eq!(
            notes,
            [(want_title.to_owned(), want_content.to_owned())],
            "{case}"
        );
    }

    app.delete(id, alice).await.expect("delete");
    assert!(
        app.mget(alice, vec![id]).await.expect("mget").is_empty(),
        "a deleted note is gone"
    );
    let page = app.query(alice, None, 0, 10).await.expect("query");
    assert_eq!(
        (page.total, page.notes.len()),
        (0, 0),
        "a deleted note is not listed"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_foreign_and_deleted_notes_are_not_found() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let hers = app.note(alice, "hers").await;
    let deleted = app.note(alice, "deleted").await;
    app.delete(deleted, alice).await.expect("delete");

    let cases = [
        ("missing", hers + 1000, alice),
        ("foreign", hers, mallory),
        ("deleted", deleted, alice),
    ];
    for (case, note_id, user_id) in cases {
        assert_status(
            app.update(note_id, user_id, Some("mine now"), None).await,
            Code::NotFound,
            "note not found",
            &format!("update {case}"),
        );
        assert_status(
            app.delete(note_id, user_id).await,
            Code::NotFound,
            "note not found",
            &format!("delete {case}"),
        );
    }
    assert!(
        app.mget(mallory, vec![hers])
            .await
            .expect("mget")
            .is_empty(),
        "another user's note is left out"
    );
    let notes = app.mget(alice, vec![hers]).await.expect("mget");
    assert_eq!(notes.len(), 1, "her note survives");
    assert_eq!(
        (notes[0].title.as_str(), notes[0].user_id),
        ("hers", alice),
        "her note is unchanged"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_with_a_message_naming_the_rule() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let id = app.note(alice, "fine").await;
    let long_title = "t".repeat(129);
    let big_content = "c".repeat(64 * 1024 + 1);
    let long_key = "k".repeat(129);

    let cases: Vec<(&str, Result<(), Status>, &str)> = vec![
        (
            "create: empty title",
            app.create_note(alice, "", "x").await.map(drop),
            "title must not be empty",
        ),
        (
            "create: blank title",
            app.create_note(alice, "   ", "x").await.map(drop),
            "title must not be blank",
        ),
        (
            "create: 129-character title",
            app.create_note(alice, &long_title, "x").await.map(drop),
            "title must be 1 to 128 characters, got 129",
        ),
        (
            "create: content over 64 KiB",
            app.create_note(alice, "big", &big_content).await.map(drop),
            "content must be at most 65536 bytes, got 65537",
        ),
        (
            "create: user id 0",
            app.create_note(0, "x", "x").await.map(drop),
            "user_id must be a positive integer",
        ),
        (
            "query: limit 0",
            app.query(alice, None, 0, 0).await.map(drop),
            "limit must be 1 to 100, got 0",
        ),
        (
            "query: limit 101",
            app.query(alice, None, 0, 101).await.map(drop),
            "limit must be 1 to 100, got 101",
        ),
        (
            "query: offset -1",
            app.query(alice, None, -1, 10).await.map(drop),
            "offset must not be negative",
        ),
        (
            "query: 129-character search key",
            app.query(alice, Some(&long_key), 0, 10).await.map(drop),
            "search_key must be 0 to 128 characters, got 129",
        ),
        (
            "query: user id -1",
            app.query(-1, None, 0, 10).await.map(drop),
            "user_id must be a positive integer",
        ),
        (
            "update: neither field",
            app.update(id, alice, None, None).await,
            "at least one of title and content must be given",
        ),
        (
            "update: empty title",
            app.update(id, alice, Some(""), None).await,
            "title must not be empty",
        ),
        (
            "update: content over 64 KiB",
            app.update(id, alice, None, Some(&big_content)).await,
            "content must be at most 65536 bytes, got 65537",
        ),
        (
            "update: note id 0",
            app.update(0, alice, Some("x"), None).await,
            "note_id must be a positive integer",
        ),
        (
            "delete: note id -5",
            app.delete(-5, alice).await,
            "note_id must be a positive integer",
        ),
        (
            "delete: user id 0",
            app.delete(id, 0).await,
            "user_id must be a positive integer",
        ),
        (
            "mget: note id 0",
            app.mget(alice, vec![id, 0]).await.map(drop),
            "note_id must be a positive integer",
        ),
        (
            "mget: user id 0",
            app.mget(0, vec![id]).await.map(drop),
            "user_id must be a positive integer",
        ),
        (
            "mget: 101 ids",
            app.mget(alice, (1..=101).collect()).await.map(drop),
            "at most 100 note ids per call",
        ),
    ];
    for (case, result, message) in cases {
        assert_status(result, Code::InvalidArgument, message, case);
    }

    // The boundaries themselves are accepted.
    let longest_title = "笔".repeat(128);
    let largest_content = "c".repeat(64 * 1024);
    app.create_note(alice, &longest_title, &largest_content)
        .await
        .expect("a 128-character title and 64 KiB of content");
    app.query(alice, None, 0, 100).await.expect("limit 100");
    app.query(alice, None, 0, 1).await.expect("limit 1");
    // Nothing invalid was stored or changed on the way.
    let page = app.query(alice, None, 0, 100).await.expect("query");
    assert_eq!(page.total, 2, "only the valid notes exist");
    assert_eq!(
        app.mget(alice, vec![id]).await.expect("mget")[0].title,
        "fine",
        "the note is unchanged"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_page_newest_first_with_the_total() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let mut created = Vec::new();
    for i in 0..12 {
        let title = if i % 3 == 0 {
            format!("Recipe {i}")
        } else {
            format!("note {i}")
        };
        created.push(app.note(alice, &title).await);
    }
    app.note(bob, "Recipe of bob").await;
    let newest_first: Vec<i64> = created.iter().rev().copied().collect();

    let mut paged = Vec::new();
    for (offset, expected_len) in [(0, 5), (5, 5), (10, 2), (15, 0)] {
        let page = app.query(alice, None, offset, 5).await.expect("query");
        assert_eq!(page.total, 12, "total at offset {offset}");
        assert_eq!(
            page.notes.len(),
            expected_len,
            "page size at offset {offset}"
        );
        for note in &page.notes {
            assert_eq!(
                (note.user_id, note.user_name.as_str()),
                (alice, "alice"),
                "author of {}",
                note.note_id
            );
        }
        paged.extend(page.notes.iter().map(|n| n.note_id));
    }
    assert_eq!(
        paged, newest_first,
        "pages are newest first, with no duplicates and no gaps"
    );

    let recipes = app
        .query(alice, Some("recipe"), 0, 10)
        .await
        .expect("search");
    let titles: Vec<&str> = recipes.notes.iter().map(|n| n.title.as_str()).collect();
    assert_eq!(recipes.total, 4, "matching total");
    assert_eq!(
        titles,
        ["Recipe 9", "Recipe 6", "Recipe 3", "Recipe 0"],
        "only alice's recipes"
    );

    let everything = app.query(alice, Some(""), 0, 100).await.expect("empty key");
    assert_eq!(everything.total, 12, "an empty search key filters nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_chain_by_next_cursor_and_a_foreign_cursor_is_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.note(alice, &format!("note {i}")).await);
    }
    let mut paged = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let request = QueryNoteRequest {
            user_id: alice,
            search_key: None,
            offset: 0,
            limit: 3,
            cursor: cursor.take(),
        };
        let page = app
            .notes
            .clone()
            .query_note(request)
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert_eq!(page.total, 7, "total on page {pages}");
        paged.extend(page.notes.iter().map(|n| n.note_id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3, "3 + 3 + 1 notes, no empty page at the end");
    let newest_first: Vec<i64> = created.iter().rev().copied().collect();
    assert_eq!(paged, newest_first);

    let refused = [
        (
            "garbage",
            "not-a-cursor",
            0,
            "cursor is not one this API gave out",
        ),
        (
            "with an offset",
            "0000000000000001000000000000000a",
            3,
            "give offset or cursor, not both",
        ),
    ];
    for (what, cursor, offset, message) in refused {
        let request = QueryNoteRequest {
            user_id: alice,
            search_key: None,
            offset,
            limit: 3,
            cursor: Some(cursor.into()),
        };
        let status = app.notes.clone().query_note(request).await.expect_err(what);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}");
        assert!(
            status.message().starts_with(message),
            "{what}: {}",
            status.message()
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_user_service_is_unavailable_and_a_restarted_one_is_used_again() {
    let mut app = spawn_app().await;
    let alice = app.register("alice").await;
    let noteless = app.register("noteless").await;
    let id = app.note(alice, "still here").await;
    let page = app
        .query(alice, None, 0, 10)
        .await
        .expect("query before the outage");
    assert_eq!(page.notes[0].user_name, "alice", "name before the outage");

    let (user_db, user_addr) = app.users.take().expect("user-service").stop().await;

    assert_status(
        app.query(alice, None, 0, 10).await,
        Code::Unavailable,
        "user-service is unavailable",
        "query while user-service is down",
    );
    assert_status(
        app.mget(alice, vec![id]).await,
        Code::Unavailable,
        "user-service is unavailable",
        "mget while user-service is down",
    );
    let empty = app
        .query(noteless, None, 0, 10)
        .await
        .expect("no notes, no names to ask for");
    assert_eq!(
        empty.total, 0,
        "a user without notes is answered all the same"
    );
    app.create_note(alice, "written during the outage", "")
        .await
        .expect("writing needs no user-service");

    app.users = Some(start_users(user_db, user_addr).await);
    assert_eq!(
        app.users.as_ref().map(|u| u.server.addr),
        Some(user_addr),
        "restarted on the same address"
    );

    let page = eventually(
        Duration::from_secs(5),
        "note-service answers with names again",
        || async {
            match app.query(alice, None, 0, 10).await {
                Ok(page) => Ok(page),
                Err(status) if status.code() == Code::Unavailable => Err(format!("{status:?}")),
                Err(status) => panic!("while recovering: {status:?}"),
            }
        },
    )
    .await;
    let found: Vec<(&str, &str)> = page
        .notes
        .iter()
        .map(|n| (n.title.as_str(), n.user_name.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("written during the outage", "alice"),
            ("still here", "alice")
        ],
        "names come from the restarted user-service"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_serving() {
    let app = spawn_app().await;
    assert_grpc_serving(app.addr, &["", "easynote.note.v1.NoteService"]).await;
    app.stop().await;
}

//! `GET /v1/note/query` paged by `cursor`: every note once, newest first,
//! while other notes are being created, on every backend.

use std::collections::HashSet;

use easynote_testkit::TestDatabase;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::TestApp;

/// Walks every page from the first, each asked with the previous page's
/// `next_cursor`, and returns the note ids in the order served; checks
/// that `total` is on every page and `next_cursor` only on full ones.
async fn walk(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/note/query?limit={limit}{query}"),
            Some(cursor) => format!("/v1/note/query?limit={limit}{query}&cursor={cursor}"),
        };
        let (status, body) = app.get(&path, Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let data = &body["data"];
        assert!(data["total"].is_i64(), "{path}: total in {body}");
        let notes = data["notes"].as_array().expect("notes");
        ids.extend(
            notes
                .iter()
                .map(|n| n["note_id"].as_i64().expect("note_id")),
        );
        match &data["next_cursor"] {
            Value::String(next) => {
                assert_eq!(notes.len(), limit, "{path}: a page with a next one is full");
                cursor = Some(next.clone());
            }
            Value::Null => {
                assert!(
                    data.as_object()
                        .is_some_and(|d| !d.contains_key("next_cursor")),
                    "{path}: the last page has no next_cursor at all: {body}"
                );
                return ids;
            }
            other => panic!("{path}: next_cursor {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cursor_pages_hold_every_note_once_newest_first_with_or_without_a_search() {
    for db in TestDatabase::all().await {
        let backend = db.backend;
        let app = TestApp::spawn_on(db).await;
        let token = app.signed_up("pager").await;
        let mut created = Vec::new();
        let mut tagged = Vec::new();
        for i in 0..23 {
            let content = if i % 4 == 0 { "a Tagged one" } else { "plain" };
            let id = app.create_note(&token, &format!("note {i}"), content).await;
            created.push(id);
            if i % 4 == 0 {
                tagged.push(id);
            }
        }
        let newest_first: Vec<i64> = created.iter().rev().copied().collect();
        for limit in [1, 5, 23, 100] {
            assert_eq!(
                walk(&app, &token, "", limit).await,
                newest_first,
                "{backend}: pages of {limit}"
            );
        }
        let tagged: Vec<i64> = tagged.iter().rev().copied().collect();
        assert_eq!(
            walk(&app, &token, "&search_key=TAGGED", 2).await,
            tagged,
            "{backend}: a search paged by cursor"
        );
        let (_, body) = app
            .get("/v1/note/query?search_key=tagged&limit=1", Some(&token))
            .await;
        assert_eq!(
            body["data"]["total"], 6,
            "{backend}: total counts the matches"
        );
        // An offset still works, and its page carries a cursor too.
        let (_, body) = app
            .get("/v1/note/query?offset=20&limit=2", Some(&token))
            .await;
        let next = body["data"]["next_cursor"]
            .as_str()
            .expect("a cursor at offset 20");
        let (_, rest) = app
            .get(
                &format!("/v1/note/query?limit=10&cursor={next}"),
                Some(&token),
            )
            .await;
        assert_eq!(
            rest["data"]["notes"].as_array().map(Vec::len),
            Some(1),
            "{backend}: {rest}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn notes_created_during_a_cursor_walk_repeat_nothing_and_push_nothing_out() {
    for db in TestDatabase::all().await {
        let backend = db.backend;
        let app = TestApp::spawn_on(db).await;
        let token = app.signed_up("busy").await;
        let mut existing = Vec::new();
        for i in 0..30 {
            existing.push(app.create_note(&token, &format!("old {i}"), "").await);
        }
        // The walk and a writer run at once against the same owner.
        let writer = async {
            let mut fresh = Vec::new();
            for i in 0..20 {
                fresh.push(app.create_note(&token, &format!("new {i}"), "").await);
                tokio::task::yield_now().await;
            }
            fresh
        };
        let (seen, fresh) = tokio::join!(walk(&app, &token, "", 3), writer);

        let unique: HashSet<i64> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{backend}: a note served twice: {seen:?}"
        );
        let old: Vec<i64> = seen
            .iter()
            .copied()
            .filter(|id| existing.contains(id))
            .collect();
        let expected: Vec<i64> = existing.iter().rev().copied().collect();
        assert_eq!(
            old, expected,
            "{backend}: every earlier note once, newest first"
        );
        assert!(
            seen.iter()
                .all(|id| existing.contains(id) || fresh.contains(id)),
            "{backend}: only this owner's notes"
        );
        let (_, body) = app.get("/v1/note/query?limit=1", Some(&token)).await;
        assert_eq!(
            body["data"]["total"], 50,
            "{backend}: the total after it all"
        );
    }
}

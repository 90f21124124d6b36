//! The data a run measures, made through the public API before it starts:
//! users registered and logged in, each with their notes. Not measured;
//! retried where the contract invites a client to retry.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::{Account, CONTENT, LoadConfig, PASSWORD, WORDS};

/// Runs `work` on every item with at most `limit` at a time; the first
/// error wins.
async fn for_each_limited<T, F, Fut>(items: Vec<T>, limit: usize, work: F) -> anyhow::Result<()>
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for item in items {
        if tasks.len() >= limit
            && let Some(done) = tasks.join_next().await
        {
            done??;
        }
        tasks.spawn(work(item));
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// N fresh users (unique names per run), each logged in with M notes.
pub(super) async fn prepare(
    client: &Client,
    config: &LoadConfig,
    retried: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<Account>> {
    let run_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let accounts = Arc::new(Mutex::new(Vec::new()));
    let users: Vec<u32> = (0..config.users).collect();
    // Registration and login hash with argon2id; a few at a time is all the
    // user-service does in parallel anyway.
    for_each_limited(users, 8, {
        let (client, url, accounts) = (client.clone(), config.url.clone(), accounts.clone());
        let retried = retried.clone();
        move |i| {
            let (client, url, accounts) = (client.clone(), url.clone(), accounts.clone());
            let retried = retried.clone();
            async move {
                let username = format!("bench-{run_id}-{i}");
                let credentials = json!({"username": username, "password": PASSWORD});
                // A retried registration may find that its first try went
                // through after all: the name taken (10003) is then success.
                prepare_request(
                    || {
                        client
                            .post(format!("{url}/v1/user/register"))
                            .json(&credentials)
                    },
                    Some(USER_EXISTS),
                    &retried,
                )
                .await
                .context("registering a user")?;
                let login = prepare_request(
                    || {
                        client
                            .post(format!("{url}/v1/user/login"))
                            .json(&credentials)
                    },
                    None,
                    &retried,
                )
                .await
                .context("logging in")?;
                let token = login["data"]["token"]
                    .as_str()
                    .context("login answered without data.token")?
                    .to_owned();
                accounts.lock().expect("accounts lock").push(Account {
                    username,
                    token,
                    notes: Vec::new(),
                });
                Ok(())
            }
        }
    })
    .await?;
    let accounts = Arc::new(
        Arc::try_unwrap(accounts)
            .expect("no task holds the accounts")
            .into_inner()
            .expect("accounts lock"),
    );

    let created = Arc::new(Mutex::new(vec![Vec::new(); accounts.len()]));
    let jobs: Vec<(usize, u32)> = (0..accounts.len())
        .flat_map(|a| (0..config.notes_per_user).map(move |n| (a, n)))
        .collect();
    for_each_limited(jobs, 32, {
        let (client, url, retried) = (client.clone(), config.url.clone(), retried.clone());
        let (accounts, created) = (accounts.clone(), created.clone());
        move |(a, n)| {
            let (client, url, retried) = (client.clone(), url.clone(), retried.clone());
            let (accounts, created) = (accounts.clone(), created.clone());
            async move {
                let word = WORDS[n as usize % WORDS.len()];
                let note = json!({"title": format!("{word} note {n}"), "content": format!("{CONTENT}{word}.")});
                // The key makes a retried create the same note, never a second.
                let key = format!("bench-{run_id}-{a}-{n}");
                let answer = prepare_request(
                    || {
                        client
                            .post(format!("{url}/v1/note"))
                            .bearer_auth(&accounts[a].token)
                            .header("Idempotency-Key", &key)
                            .json(&note)
                    },
                    None,
                    &retried,
                )
                .await
                .context("creating a note")?;
                let id = answer["data"]["note_id"]
                    .as_i64()
                    .context("create answered without data.note_id")?;
                created.lock().expect("created lock")[a].push(id);
                Ok(())
            }
        }
    })
    .await?;
    let created = Arc::try_unwrap(created)
        .expect("no task holds the notes")
        .into_inner()
        .expect("created lock");
    let mut accounts = Arc::try_unwrap(accounts).expect("no task holds the accounts");
    for (account, notes) in accounts.iter_mut().zip(created) {
        account.notes = notes;
    }
    Ok(accounts)
}

/// Envelope code of a registration whose name is taken.
const USER_EXISTS: i64 = 10003;
/// Tries of one preparation request answered 503 or 429.
const PREPARE_TRIES: u32 = 6;

/// One request of the preparation, retried as the contract invites a client
/// to: on 503 (a call that missed its deadline, e.g. creates queued behind
/// SQLite's one writer on a busy machine) and on 429 (after `Retry-After`).
/// The preparation builds the data the run measures; it is not measured.
/// `also_ok` is an envelope code that counts as success on a retry.
async fn prepare_request(
    request: impl Fn() -> RequestBuilder,
    also_ok: Option<i64>,
    retried: &AtomicU64,
) -> anyhow::Result<Value> {
    let mut wait = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = request().send().await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        if attempt > 1 && also_ok.is_some() && body["code"].as_i64() == also_ok {
            return Ok(body);
        }
        let retryable = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
        if !retryable || attempt == PREPARE_TRIES {
            bail!("answered {status}: {body} (try {attempt} of {PREPARE_TRIES})");
        }
        retried.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(retry_after.unwrap_or(wait)).await;
        wait *= 2;
    }
}

//! The no-RPC baseline: the routes the mix uses, served by one axum process
//! that checks the JWT and runs the services' own repositories (the same
//! SQL, the same argon2id hashing) in-process. What the suite costs beyond
//! this is the price of the gateway and the gRPC hops.
//!
//! It keeps the wire shapes the load generator reads and does no more
//! validation than the load needs: it is a yardstick, not a server to run.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use api_gateway::{ApiError, ClaimsConfig, JwtConfig, JwtKeys};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, header},
    routing::{get, post, put},
    serve::ListenerExt as _,
};
use easynote_shared::{
    config::{Env, Environment},
    db::{Database, DatabaseConfig},
};
use note_service::repo::{Created, NoteChanges, NoteRecord, NoteRepo, PageStart};
use serde::Deserialize;
use serde_json::{Value, json};
use user_service::{
    password::PasswordHasher,
    repo::{CreateError, UserRepo},
};

const DEFAULT_ADDR: &str = "127.0.0.1:8090";
const DEFAULT_DATABASE_URL: &str = "sqlite://data/baseline.db";

#[derive(Debug)]
struct Baseline {
    users: UserRepo,
    notes: NoteRepo,
    hasher: PasswordHasher,
    keys: JwtKeys,
}

type AppState = State<Arc<Baseline>>;
type Reply = Result<Json<Value>, ApiError>;

/// `easy-note-bench baseline`: serves until SIGTERM or Ctrl-C.
pub async fn serve() -> anyhow::Result<()> {
    let env = Env::from_process();
    let addr: SocketAddr = env.socket_addr("EASYNOTE_HTTP_ADDR", DEFAULT_ADDR)?;
    let database = DatabaseConfig::from_env(&env, DEFAULT_DATABASE_URL)?;
    let jwt = JwtConfig::from_env(&env, Environment::from_env(&env)?, addr)?;
    // Two pools on one database, as the all-in-one suite has.
    let users = Database::connect(&database, &user_service::migrations()).await?;
    let notes = Database::connect(&database, &note_service::migrations()).await?;
    let hasher = PasswordHasher::default();
    hasher.warm_up();
    let state = Arc::new(Baseline {
        users: UserRepo::new(users.clone()),
        notes: NoteRepo::open(notes.clone()).await?,
        hasher,
        keys: JwtKeys::new(&jwt, &ClaimsConfig::from_env(&env)?),
    });
    let app = Router::new()
        .route("/ping", get(|| async { Json(json!({"message": "pong"})) }))
        .route("/readyz", get(|| async { Json(ok(Value::Null)) }))
        .route("/v1/user/register", post(register))
        .route("/v1/user/login", post(login))
        .route("/v1/note", post(create_note))
        .route("/v1/note/query", get(query_notes))
        .route("/v1/note/{note_id}", put(update_note).get(get_note))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    let shutdown = easynote_shared::shutdown::on_signal();
    // As the gateway does.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.requested().await })
        .await?;
    users.close().await;
    notes.close().await;
    Ok(())
}

fn ok(data: Value) -> Value {
    json!({"code": 0, "message": "Success", "data": data})
}

fn internal<E: std::fmt::Display>(err: E) -> ApiError {
    eprintln!("baseline: {err}");
    ApiError::Internal
}

fn user_id(state: &Baseline, headers: &HeaderMap) -> Result<i64, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized("missing token"))?;
    Ok(state.keys.verify(token)?.id)
}

#[derive(Debug, Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn register(State(state): AppState, Json(body): Json<Credentials>) -> Reply {
    let hash = state.hasher.hash(body.password).await.map_err(internal)?;
    match state.users.create(&body.username, &hash).await {
        Ok(_) => Ok(Json(ok(Value::Null))),
        Err(CreateError::UsernameTaken) => Err(ApiError::UserExists),
        Err(err) => Err(internal(err)),
    }
}

async fn login(State(state): AppState, Json(body): Json<Credentials>) -> Reply {
    let credentials = state
        .users
        .credentials_by_username(&body.username)
        .await
        .map_err(internal)?;
    let (id, epoch, phc) = credentials.map_or((0, 0, None), |c| {
        (c.id, c.token_epoch, Some(c.password_hash))
    });
    if !state
        .hasher
        .verify(body.password, phc)
        .await
        .map_err(internal)?
    {
        return Err(ApiError::Unauthorized("wrong username or password"));
    }
    let issued = state.keys.issue(id, epoch)?;
    let expire = humantime::format_rfc3339_seconds(issued.expires_at).to_string();
    Ok(Json(json!({
        "code": 0, "message": "Success", "token": issued.token, "expire": expire,
        "data": {"token": issued.token, "expire": expire},
    })))
}

#[derive(Debug, Deserialize)]
struct NewNote {
    title: String,
    content: String,
}

async fn create_note(
    State(state): AppState,
    headers: HeaderMap,
    Json(body): Json<NewNote>,
) -> Reply {
    let owner = user_id(&state, &headers)?;
    let created = state
        .notes
        .create(owner, &body.title, &body.content, None)
        .await
        .map_err(internal)?;
    // Without an idempotency key every create is a new note.
    let (Created::New(note_id) | Created::Replayed(note_id)) = created else {
        return Err(internal("a create without a key reported a reused key"));
    };
    Ok(Json(ok(json!({"note_id": note_id}))))
}

#[derive(Debug, Deserialize)]
struct QueryParams {
    search_key: Option<String>,
    #[serde(default)]
    offset: i64,
    #[serde(default = "ten")]
    limit: i64,
}

fn ten() -> i64 {
    10
}

/// Notes with their authors' names, as note-service attaches them (one
/// batched user lookup per page).
async fn with_authors(state: &Baseline, records: Vec<NoteRecord>) -> Result<Vec<Value>, ApiError> {
    let mut ids: Vec<i64> = records.iter().map(|r| r.user_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let names: HashMap<i64, String> = state
        .users
        .find_many(&ids)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect();
    Ok(records
        .into_iter()
        .map(|r| {
            json!({
                "note_id": r.id, "user_id": r.user_id,
                "user_name": names.get(&r.user_id).cloned().unwrap_or_default(), "user_avatar": "",
                "title": r.title, "content": r.content, "create_time": r.created_at.div_euclid(1000),
            })
        })
        .collect())
}

async fn query_notes(
    State(state): AppState,
    headers: HeaderMap,
    Query(params): Query<QueryParams>,
) -> Reply {
    let owner = user_id(&state, &headers)?;
    if !(1..=100).contains(&params.limit) || params.offset < 0 {
        return Err(ApiError::BadRequest("bad paging".to_owned()));
    }
    let page = state
        .notes
        .query_by_owner(
            owner,
            params.search_key.as_deref(),
            PageStart::Offset(params.offset),
            params.limit,
        )
        .await
        .map_err(internal)?;
    let notes = with_authors(&state, page.notes).await?;
    Ok(Json(ok(json!({"total": page.total, "notes": notes}))))
}

async fn get_note(State(state): AppState, headers: HeaderMap, Path(note_id): Path<i64>) -> Reply {
    let owner = user_id(&state, &headers)?;
    let records: Vec<NoteRecord> = state
        .notes
        .find_many(&[note_id], owner)
        .await
        .map_err(internal)?;
    let note = with_authors(&state, records)
        .await?
        .pop()
        .ok_or(ApiError::NoteNotFound)?;
    Ok(Json(ok(note)))
}

#[derive(Debug, Deserialize)]
struct NoteUpdate {
    title: Option<String>,
    content: Option<String>,
}

async fn update_note(
    State(state): AppState,
    headers: HeaderMap,
    Path(note_id): Path<i64>,
    Json(body): Json<NoteUpdate>,
) -> Reply {
    let owner = user_id(&state, &headers)?;
    let changes = NoteChanges {
        title: body.title.as_deref(),
        content: body.content.as_deref(),
    };
    if state
        .notes
        .update(note_id, owner, &changes)
        .await
        .map_err(internal)?
    {
        Ok(Json(ok(Value::Null)))
    } else {
        Err(ApiError::NoteNotFound)
    }
}

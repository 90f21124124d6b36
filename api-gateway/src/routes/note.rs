//! `/v1/note…`: create, query, get, update and delete the caller's notes.

use axum::{
    Router,
    extract::{Query, State},
    routing::{get, post},
};
use easynote_shared::{
    grpc,
    proto::note::v1::{
        CreateNoteRequest, DeleteNoteRequest, MGetNoteRequest, Note, QueryNoteRequest,
        UpdateNoteRequest,
    },
    validate::{self, Invalid},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::AuthUser,
    envelope::Envelope,
    error::{ApiError, ApiResult},
    extract::{ApiJson, NoteId},
    state::AppState,
};

/// Routes of the note resource; all need a token.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/note", post(create))
        .route("/v1/note/query", get(query))
        .route("/v1/note/{note_id}", get(fetch).put(update).delete(delete))
}

/// A note as the API shows it.
#[derive(Debug, Serialize)]
pub struct NoteView {
    note_id: i64,
    user_id: i64,
    user_name: String,
    user_avatar: String,
    title: String,
    content: String,
    /// Unix seconds.
    create_time: i64,
}

impl From<Note> for NoteView {
    fn from(note: Note) -> Self {
        Self {
            note_id: note.note_id,
            user_id: note.user_id,
            user_name: note.user_name,
            user_avatar: note.user_avatar,
            title: note.title,
            content: note.content,
            create_time: note.create_time,
        }
    }
}

/// Body of `POST /v1/note`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    title: String,
    content: String,
}

/// `data` of `POST /v1/note`.
#[derive(Debug, Serialize)]
pub struct Created {
    note_id: i64,
}
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Envelope<Created>> {
    validate::title(&body.title)?;
    validate::content(&body.content)?;
    let request = CreateNoteRequest {
        user_id: user.id,
        title: body.title,
        content: body.content,
    };
    let note_id = state
        .notes
        .call("CreateNote", request, |channel, request| async move {
            grpc::note_client(channel).create_note(request).await
        })
        .await?
        .into_inner()
        .note_id;
    Ok(Envelope::ok(Created { note_id }))
}

/// Query string of `GET /v1/note/query`. Numbers are taken as text so that
/// a bad one gets a message naming it. Unknown parameters are ignored, as
/// URLs often carry some (the `token` among them).
#[derive(Debug, Deserialize)]
pub struct QueryParams {
    #[serde(alias = "search_keyword")]
    search_key: Option<String>,
    offset: Option<String>,
    limit: Option<String>,
}

fn parse_int(field: &str, raw: Option<&str>, default: i64) -> Result<i64, Invalid> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .map_err(|_| Invalid(format!("{field} must be an integer, got {raw:?}"))),
    }
}

/// `data` of `GET /v1/note/query`.
#[derive(Debug, Serialize)]
pub struct NotePage {
    total: i64,
    notes: Vec<NoteView>,
}
async fn query(
    State(state): State<AppState>,
    user: AuthUser,
    params: Result<Query<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Envelope<NotePage>> {
    let Query(params) = params?;
    let offset = parse_int("offset", params.offset.as_deref(), 0)?;
    let limit = parse_int("limit", params.limit.as_deref(), validate::LIMIT_DEFAULT)?;
    validate::page(offset, limit)?;
    let search_key = params.search_key.filter(|k| !k.is_empty());
    if let Some(key) = &search_key {
        validate::search_key(key)?;
    }
    let request = QueryNoteRequest {
        user_id: user.id,
        search_key,
        offset,
        limit,
    };
    let reply = state
        .notes
        .call("QueryNote", request, |channel, request| async move {
            grpc::note_client(channel).query_note(request).await
        })
        .await?
        .into_inner();
    Ok(Envelope::ok(NotePage {
        total: reply.total,
        notes: reply.notes.into_iter().map(NoteView::from).collect(),
    }))
}
async fn fetch(
    State(state): State<AppState>,
    user: AuthUser,
    NoteId(id): NoteId,
) -> ApiResult<Envelope<NoteView>> {
    let request = MGetNoteRequest {
        note_ids: vec![id],
        user_id: user.id,
    };
    let note = state
        .notes
        .call("MGetNote", request, |channel, request| async move {
            grpc::note_client(channel).m_get_note(request).await
        })
        .await?
        .into_inner()
        .notes
        .into_iter()
        // note-service leaves out other users' notes: another user's note
        // is answered exactly like a missing one.
        .find(|n| n.note_id == id && n.user_id == user.id)
        .ok_or(ApiError::NoteNotFound)?;
    Ok(Envelope::ok(note.into()))
}

/// Body of `PUT /v1/note/{note_id}`: at least one field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    title: Option<String>,
    content: Option<String>,
}
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    NoteId(id): NoteId,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Envelope<()>> {
    if body.title.is_none() && body.content.is_none() {
        return Err(ApiError::BadRequest(
            "at least one of title and content must be given".into(),
        ));
    }
    if let Some(title) = &body.title {
        validate::title(title)?;
    }
    if let Some(content) = &body.content {
        validate::content(content)?;
    }
    let request = UpdateNoteRequest {
        note_id: id,
        user_id: user.id,
        title: body.title,
        content: body.content,
    };
    state
        .notes
        .call("UpdateNote", request, |channel, request| async move {
            grpc::note_client(channel).update_note(request).await
        })
        .await?;
    Ok(Envelope::empty())
}
async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    NoteId(id): NoteId,
) -> ApiResult<Envelope<()>> {
    let request = DeleteNoteRequest {
        note_id: id,
        user_id: user.id,
    };
    state
        .notes
        .call("DeleteNote", request, |channel, request| async move {
            grpc::note_client(channel).delete_note(request).await
        })
        .await?;
    Ok(Envelope::empty())
}

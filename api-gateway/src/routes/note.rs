//! `/v1/note…`: create, query, get, update and delete the caller's notes.

use axum::{
    Router,
    extract::{Query, State},
    http::HeaderValue,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use easynote_shared::{
    cursor::PageCursor,
    governance,
    proto::note::v1::{
        CreateNoteRequest, DeleteNoteRequest, MGetNoteRequest, Note, QueryNoteRequest,
        UpdateNoteRequest,
    },
    rpc,
    validate::{self, Invalid},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::AuthUser,
    envelope::{EmptyReply, Envelope},
    error::{ApiError, ApiResult},
    extract::{ApiJson, IdempotencyKey, NoteId},
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
#[derive(Debug, Serialize, ToSchema)]
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
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// 1 to 128 characters, not blank.
    #[schema(min_length = 1, max_length = 128)]
    title: String,
    /// Up to 64 KiB (UTF-8 bytes).
    #[schema(max_length = 65536)]
    content: String,
}

/// `data` of `POST /v1/note`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    note_id: i64,
}
/// Creates a note.
///
/// With an `Idempotency-Key`, a retry (same key, title and content) is
/// answered with the first create's note id and `Idempotent-Replayed: true`,
/// and creates nothing; the key reused for another note is a 422.
#[utoipa::path(
    post,
    path = "/v1/note",
    tag = "note",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, max_length = 255,
         description = "1 to 255 visible ASCII characters; a retry with the same key, title and content answers the first create"),
    ),
    request_body = CreateBody,
    responses(
        (status = 200, description = "Created, or replayed for a known key", body = Envelope<Created>,
         headers(("Idempotent-Replayed" = String, description = "`true` when replayed, `false` when created; only with an Idempotency-Key"))),
        (status = 422, description = "The Idempotency-Key was used for another note (code 10002)", body = EmptyReply),
    ),
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Response> {
    validate::title(&body.title)?;
    validate::content(&body.content)?;
    let request_had_key = idempotency_key.is_some();
    let request = CreateNoteRequest {
        user_id: user.id,
        title: body.title,
        content: body.content,
        idempotency_key,
    };
    // With a key, a repeat replays the first create: if the instance
    // that took it dies mid-call, the create is retried on another.
    let reply = if request_had_key {
        state
            .notes
            .invoke_repeatable::<rpc::CreateNote>(request)
            .await
    } else {
        state.notes.invoke::<rpc::CreateNote>(request).await
    }?
    .into_inner();
    let mut response = Envelope::ok(Created {
        note_id: reply.note_id,
    })
    .into_response();
    if request_had_key {
        let replayed = HeaderValue::from_static(if reply.replayed { "true" } else { "false" });
        response.headers_mut().insert(REPLAYED, replayed);
    }
    Ok(response)
}

/// Response header of a create with an `Idempotency-Key`.
const REPLAYED: &str = "idempotent-replayed";

/// Query string of `GET /v1/note/query`. Numbers are taken as text so that
/// a bad one gets a message naming it. Unknown parameters are ignored, as
/// URLs often carry some (the `token` among them).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// A plain, case-insensitive substring of the title or content (up to
    /// 128 characters); `search_keyword` is accepted too.
    #[serde(alias = "search_keyword")]
    #[param(max_length = 128)]
    search_key: Option<String>,
    /// Notes to skip, 0 or more (default 0). The slow path: the notes
    /// skipped are still read, so deep offsets take longer the more notes
    /// there are; page with `cursor` instead.
    #[param(value_type = Option<i64>, minimum = 0)]
    offset: Option<String>,
    /// Page size, 1 to 100 (default 10).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `next_cursor` of the previous page, unchanged (opaque): this page
    /// starts right after it, as fast however deep. Replaces `offset`
    /// (which must then be absent or 0); the same `search_key` as the
    /// previous page is expected.
    #[param(max_length = 32)]
    cursor: Option<String>,
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
#[derive(Debug, Serialize, ToSchema)]
pub struct NotePage {
    /// The caller's notes; with a `search_key`, those that match it.
    total: i64,
    notes: Vec<NoteView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}
/// One page of the caller's notes, newest first.
///
/// Page through with `cursor`: each page's `next_cursor` starts the next
/// one, and notes created meanwhile neither repeat nor push notes out of
/// the pages. `offset` keeps working, but deep offsets are slow.
#[utoipa::path(
    get,
    path = "/v1/note/query",
    tag = "note",
    security(("bearer" = [])),
    params(QueryParams),
    responses(
        (status = 200, description = "A page, the number of matching notes and where the next page starts", body = Envelope<NotePage>,
            headers(("x-easynote-fallback" = String, description = "Present when the authors' names were left empty by a fallback rule (user-service wanting): names the rule"))),
        (status = 400, description = "A bad offset, limit or search_key, a cursor this API did not give out, or a cursor with an offset (code 10002)", body = EmptyReply),
    ),
)]
pub(crate) async fn query(
    State(state): State<AppState>,
    user: AuthUser,
    params: Result<Query<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<(Fallback, Envelope<NotePage>)> {
    let Query(params) = params?;
    let offset = parse_int("offset", params.offset.as_deref(), 0)?;
    let limit = parse_int("limit", params.limit.as_deref(), validate::LIMIT_DEFAULT)?;
    validate::page(offset, limit)?;
    let search_key = params.search_key.filter(|k| !k.is_empty());
    if let Some(key) = &search_key {
        validate::search_key(key)?;
    }
    let cursor = params.cursor.filter(|c| !c.is_empty());
    if let Some(cursor) = &cursor {
        if offset != 0 {
            return Err(Invalid(
                "give offset or cursor, not both: the cursor says where the page starts".into(),
            )
            .into());
        }
        PageCursor::parse(cursor)?;
    }
    let request = QueryNoteRequest {
        user_id: user.id,
        search_key,
        offset,
        limit,
        cursor,
    };
    let reply = state.notes.invoke::<rpc::QueryNote>(request).await?;
    let fallback = Fallback::of(reply.metadata());
    let reply = reply.into_inner();
    let page = NotePage {
        total: reply.total,
        notes: reply.notes.into_iter().map(NoteView::from).collect(),
        next_cursor: reply.next_cursor,
    };
    Ok((fallback, Envelope::ok(page)))
}
/// One of the caller's notes.
#[utoipa::path(
    get,
    path = "/v1/note/{note_id}",
    tag = "note",
    security(("bearer" = [])),
    params(NotePath),
    responses(
        (status = 200, description = "The note", body = Envelope<NoteView>,
            headers(("x-easynote-fallback" = String, description = "Present when the author's name was left empty by a fallback rule (user-service wanting): names the rule"))),
        (status = 404, description = "Missing, deleted, or another user's (code 10005)", body = EmptyReply),
    ),
)]
pub(crate) async fn fetch(
    State(state): State<AppState>,
    user: AuthUser,
    NoteId(id): NoteId,
) -> ApiResult<(Fallback, Envelope<NoteView>)> {
    let request = MGetNoteRequest {
        note_ids: vec![id],
        user_id: user.id,
    };
    let reply = state.notes.invoke::<rpc::MGetNote>(request).await?;
    let fallback = Fallback::of(reply.metadata());
    let note = reply
        .into_inner()
        .notes
        .into_iter()
        // note-service leaves out other users' notes: another user's note
        // is answered exactly like a missing one.
        .find(|n| n.note_id == id && n.user_id == user.id)
        .ok_or(ApiError::NoteNotFound)?;
    Ok((fallback, Envelope::ok(note.into())))
}

/// `x-easynote-fallback` passed on from note-service: the answer was made
/// without user-service, by the fallback rule it names.
pub(crate) struct Fallback(Option<HeaderValue>);

impl Fallback {
    fn of(metadata: &tonic::metadata::MetadataMap) -> Self {
        Self(
            metadata
                .get(governance::FALLBACK_HEADER)
                .and_then(|value| HeaderValue::from_bytes(value.as_bytes()).ok()),
        )
    }
}

impl axum::response::IntoResponseParts for Fallback {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut parts: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        if let Some(value) = self.0 {
            parts
                .headers_mut()
                .insert(governance::FALLBACK_HEADER, value);
        }
        Ok(parts)
    }
}

/// The `{note_id}` path segment as the OpenAPI document shows it; the
/// handlers read it with [`NoteId`].
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // describes what `NoteId` parses
struct NotePath {
    /// The note's id, a positive 64-bit integer.
    #[param(minimum = 1)]
    note_id: i64,
}

/// Body of `PUT /v1/note/{note_id}`: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// 1 to 128 characters, not blank.
    #[schema(min_length = 1, max_length = 128)]
    title: Option<String>,
    /// Up to 64 KiB (UTF-8 bytes).
    #[schema(max_length = 65536)]
    content: Option<String>,
}
/// Changes the title, the content, or both, of one of the caller's notes.
#[utoipa::path(
    put,
    path = "/v1/note/{note_id}",
    tag = "note",
    security(("bearer" = [])),
    params(NotePath),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "Updated", body = EmptyReply),
        (status = 404, description = "Missing, deleted, or another user's (code 10005)", body = EmptyReply),
    ),
)]
pub(crate) async fn update(
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
    state.notes.invoke::<rpc::UpdateNote>(request).await?;
    Ok(Envelope::empty())
}
/// Deletes one of the caller's notes.
#[utoipa::path(
    delete,
    path = "/v1/note/{note_id}",
    tag = "note",
    security(("bearer" = [])),
    params(NotePath),
    responses(
        (status = 200, description = "Deleted", body = EmptyReply),
        (status = 404, description = "Missing, already deleted, or another user's (code 10005)", body = EmptyReply),
    ),
)]
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    NoteId(id): NoteId,
) -> ApiResult<Envelope<()>> {
    let request = DeleteNoteRequest {
        note_id: id,
        user_id: user.id,
    };
    state.notes.invoke::<rpc::DeleteNote>(request).await?;
    Ok(Envelope::empty())
}

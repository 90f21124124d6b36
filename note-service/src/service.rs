//! The `easynote.note.v1.NoteService` gRPC API.

use std::collections::{BTreeSet, HashMap};

use easynote_shared::{
    cursor::PageCursor,
    governance::{self, Upstream},
    proto::{
        note::v1::{
            CreateNoteRequest, CreateNoteResponse, DeleteNoteRequest, DeleteNoteResponse,
            MGetNoteRequest, MGetNoteResponse, Note, QueryNoteRequest, QueryNoteResponse,
            UpdateNoteRequest, UpdateNoteResponse, note_service_server::NoteService,
        },
        user::v1::{MGetUserRequest, User},
    },
    rpc::{self, Rpc as _},
    validate::{self, Invalid},
};
use tonic::{Request, Response, Status, metadata::MetadataValue};

use crate::{
    error::NoteError,
    repo::{Created, Idempotency, NoteChanges, NoteRecord, NoteRepo, PageStart},
};

/// The gRPC handlers: validate, call the repository, attach authors, map errors once.
#[derive(Debug, Clone)]
pub(crate) struct NoteApi {
    repo: NoteRepo,
    users: Upstream,
}

impl NoteApi {
    pub(crate) fn new(repo: NoteRepo, users: Upstream) -> Self {
        Self { repo, users }
    }

    /// Turns records into API notes with their authors' names, asking
    /// user-service once for all the distinct authors of the batch. When
    /// user-service is wanting and the rules give `MGetUser` a fallback,
    /// the notes go out with empty author names, marked [`Authors::Left`].
    async fn with_authors(
        &self,
        records: Vec<NoteRecord>,
    ) -> Result<(Vec<Note>, Authors), NoteError> {
        if records.is_empty() {
            return Ok((Vec::new(), Authors::Named));
        }
        let request = MGetUserRequest {
            user_ids: records
                .iter()
                .map(|n| n.user_id)
                .collect::<BTreeSet<i64>>()
                .into_iter()
                .collect(),
        };
        let (users, authors): (HashMap<i64, User>, _) =
            match self.users.invoke::<rpc::MGetUser>(request).await {
                Ok(reply) => (
                    reply
                        .into_inner()
                        .users
                        .into_iter()
                        .map(|u| (u.user_id, u))
                        .collect(),
                    Authors::Named,
                ),
                Err(status) if self.users.falls_back(rpc::MGetUser::METHOD, &status) => {
                    (HashMap::new(), Authors::Left)
                }
                Err(status) => return Err(NoteError::UserService(status)),
            };
        let notes = records
            .into_iter()
            .map(|record| {
                let author = users.get(&record.user_id);
                Note {
                    note_id: record.id,
                    user_id: record.user_id,
                    user_name: author.map(|u| u.username.clone()).unwrap_or_default(),
                    user_avatar: author.map(|u| u.avatar.clone()).unwrap_or_default(),
                    title: record.title,
                    content: record.content,
                    create_time: record.created_at.div_euclid(1000),
                }
            })
            .collect();
        Ok((notes, authors))
    }

    async fn create(&self, req: CreateNoteRequest) -> Result<CreateNoteResponse, NoteError> {
        validate::id("user_id", req.user_id)?;
        validate::title(&req.title)?;
        validate::content(&req.content)?;
        let idempotency = match &req.idempotency_key {
            Some(key) => {
                validate::idempotency_key(key)?;
                Some(Idempotency {
                    key,
                    request_hash: request_hash(&req.title, &req.content),
                })
            }
            None => None,
        };
        let created = self
            .repo
            .create(req.user_id, &req.title, &req.content, idempotency.as_ref())
            .await?;
        match created {
            Created::New(note_id) => Ok(CreateNoteResponse {
                note_id,
                replayed: false,
            }),
            Created::Replayed(note_id) => Ok(CreateNoteResponse {
                note_id,
                replayed: true,
            }),
            Created::KeyReused => Err(NoteError::KeyReused),
        }
    }

    async fn mget(&self, req: MGetNoteRequest) -> Result<(Vec<Note>, Authors), NoteError> {
        let ids: BTreeSet<i64> = req.note_ids.into_iter().collect();
        if ids.len() > validate::MGET_MAX_IDS {
            return Err(Invalid(format!(
                "at most {} note ids per call",
                validate::MGET_MAX_IDS
            ))
            .into());
        }
        for &id in &ids {
            validate::id("note_id", id)?;
        }
        validate::id("user_id", req.user_id)?;
        let ids: Vec<i64> = ids.into_iter().collect();
        let records = self.repo.find_many(&ids, req.user_id).await?;
        self.with_authors(records).await
    }

    async fn delete(&self, req: DeleteNoteRequest) -> Result<(), NoteError> {
        validate::id("note_id", req.note_id)?;
        validate::id("user_id", req.user_id)?;
        if self.repo.delete(req.note_id, req.user_id).await? {
            Ok(())
        } else {
            Err(NoteError::NotFound)
        }
    }

    async fn update(&self, req: UpdateNoteRequest) -> Result<(), NoteError> {
        validate::id("note_id", req.note_id)?;
        validate::id("user_id", req.user_id)?;
        if req.title.is_none() && req.content.is_none() {
            return Err(Invalid("at least one of title and content must be given".into()).into());
        }
        if let Some(title) = &req.title {
            validate::title(title)?;
        }
        if let Some(content) = &req.content {
            validate::content(content)?;
        }
        let changes = NoteChanges {
            title: req.title.as_deref(),
            content: req.content.as_deref(),
        };
        if self.repo.update(req.note_id, req.user_id, &changes).await? {
            Ok(())
        } else {
            Err(NoteError::NotFound)
        }
    }

    async fn query(
        &self,
        req: QueryNoteRequest,
    ) -> Result<(QueryNoteResponse, Authors), NoteError> {
        validate::id("user_id", req.user_id)?;
        validate::page(req.offset, req.limit)?;
        let search = req.search_key.as_deref().filter(|k| !k.is_empty());
        if let Some(key) = search {
            validate::search_key(key)?;
        }
        let start = match req.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => PageStart::Offset(req.offset),
            Some(_) if req.offset != 0 => {
                return Err(Invalid(
                    "give offset or cursor, not both: the cursor says where the page starts".into(),
                )
                .into());
            }
            Some(cursor) => PageStart::After(PageCursor::parse(cursor)?),
        };
        let page = self
            .repo
            .query_by_owner(req.user_id, search, start, req.limit)
            .await?;
        let (notes, authors) = self.with_authors(page.notes).await?;
        let reply = QueryNoteResponse {
            notes,
            total: page.total,
            next_cursor: page.next.map(|cursor| cursor.to_string()),
        };
        Ok((reply, authors))
    }
}

/// SHA-256 (hex) of a create's title and content: what tells a retry from
/// another request reusing its idempotency key. The title's length comes
/// first, so that no two (title, content) pairs hash the same bytes.
fn request_hash(title: &str, content: &str) -> String {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    digest.update(&(title.len() as u64).to_be_bytes());
    digest.update(title.as_bytes());
    digest.update(content.as_bytes());
    digest
        .finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tonic::async_trait]
impl NoteService for NoteApi {
    async fn create_note(
        &self,
        request: Request<CreateNoteRequest>,
    ) -> Result<Response<CreateNoteResponse>, Status> {
        Ok(Response::new(self.create(request.into_inner()).await?))
    }
    async fn m_get_note(
        &self,
        request: Request<MGetNoteRequest>,
    ) -> Result<Response<MGetNoteResponse>, Status> {
        let (notes, authors) = self.mget(request.into_inner()).await?;
        Ok(authors.mark(Response::new(MGetNoteResponse { notes })))
    }
    async fn delete_note(
        &self,
        request: Request<DeleteNoteRequest>,
    ) -> Result<Response<DeleteNoteResponse>, Status> {
        self.delete(request.into_inner()).await?;
        Ok(Response::new(DeleteNoteResponse {}))
    }
    async fn update_note(
        &self,
        request: Request<UpdateNoteRequest>,
    ) -> Result<Response<UpdateNoteResponse>, Status> {
        self.update(request.into_inner()).await?;
        Ok(Response::new(UpdateNoteResponse {}))
    }
    async fn query_note(
        &self,
        request: Request<QueryNoteRequest>,
    ) -> Result<Response<QueryNoteResponse>, Status> {
        let (reply, authors) = self.query(request.into_inner()).await?;
        Ok(authors.mark(Response::new(reply)))
    }
}

/// Whether a reply's notes carry their authors' names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authors {
    /// As user-service gave them.
    Named,
    /// Left empty by the fallback rule of `MGetUser`.
    Left,
}

impl Authors {
    /// `reply`, saying in its metadata when the names were left out.
    fn mark<T>(self, mut reply: Response<T>) -> Response<T> {
        if self == Self::Left {
            reply.metadata_mut().insert(
                governance::FALLBACK_HEADER,
                MetadataValue::from_static("clients.easy-note-user.MGetUser"),
            );
        }
        reply
    }
}

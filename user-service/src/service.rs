//! The `easynote.user.v1.UserService` gRPC API.

use std::collections::BTreeSet;

use easynote_shared::{
    proto::user::v1::{
        CheckUserRequest, CheckUserResponse, CreateUserRequest, CreateUserResponse,
        MGetUserRequest, MGetUserResponse, User, user_service_server::UserService,
    },
    validate::{self, Invalid},
};
use tonic::{Request, Response, Status};

use crate::{
    error::UserError,
    password::PasswordHasher,
    repo::{CreateError, UserRepo},
};

/// Avatar sent for every user: uploads are not part of the contract yet.
const DEFAULT_AVATAR: &str = "";

/// The gRPC handlers: validate, call the repository, map errors once.
#[derive(Debug, Clone)]
pub(crate) struct UserApi {
    repo: UserRepo,
    hasher: PasswordHasher,
}

impl UserApi {
    pub(crate) fn new(repo: UserRepo) -> Self {
        let hasher = PasswordHasher::default();
        hasher.warm_up();
        Self { repo, hasher }
    }

    async fn create(&self, req: CreateUserRequest) -> Result<i64, UserError> {
        let username = validate::normalize_username(&req.username);
        validate::username(&username)?;
        validate::password(&req.password)?;
        let hash = self.hasher.hash(req.password).await?;
        match self.repo.create(&username, &hash).await {
            Ok(id) => Ok(id),
            Err(CreateError::UsernameTaken) => Err(UserError::UsernameTaken),
            Err(CreateError::Database(err)) => Err(err.into()),
        }
    }

    async fn check(&self, req: CheckUserRequest) -> Result<i64, UserError> {
        // Malformed credentials cannot match a stored account; answering them
        // like a wrong password keeps the reply uniform.
        let username = validate::normalize_username(&req.username);
        if validate::username(&username).is_err() || req.password.is_empty() {
            return Err(UserError::BadCredentials);
        }
        let stored = self.repo.credentials_by_username(&username).await?;
        let (id, phc) = stored.map_or((None, None), |c| (Some(c.id), Some(c.password_hash)));
        match (self.hasher.verify(req.password, phc).await?, id) {
            (true, Some(id)) => Ok(id),
            _ => Err(UserError::BadCredentials),
        }
    }

    async fn mget(&self, req: MGetUserRequest) -> Result<Vec<User>, UserError> {
        let ids: BTreeSet<i64> = req.user_ids.into_iter().collect();
        if ids.len() > validate::MGET_MAX_IDS {
            return Err(Invalid(format!(
                "at most {} user ids per call",
                validate::MGET_MAX_IDS
            ))
            .into());
        }
        for &id in &ids {
            validate::id("user_id", id)?;
        }
        let ids: Vec<i64> = ids.into_iter().collect();
        Ok(self
            .repo
            .find_many(&ids)
            .await?
            .into_iter()
            .map(|u| User {
                user_id: u.id,
                username: u.username,
                avatar: DEFAULT_AVATAR.to_owned(),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl UserService for UserApi {
    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let user_id = self.create(request.into_inner()).await?;
        tracing::info!(user_id, "user created");
        Ok(Response::new(CreateUserResponse { user_id }))
    }
    async fn m_get_user(
        &self,
        request: Request<MGetUserRequest>,
    ) -> Result<Response<MGetUserResponse>, Status> {
        let users = self.mget(request.into_inner()).await?;
        Ok(Response::new(MGetUserResponse { users }))
    }
    async fn check_user(
        &self,
        request: Request<CheckUserRequest>,
    ) -> Result<Response<CheckUserResponse>, Status> {
        let user_id = self.check(request.into_inner()).await?;
        Ok(Response::new(CheckUserResponse { user_id }))
    }
}

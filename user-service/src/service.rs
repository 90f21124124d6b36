//! The `easynote.user.v1.UserService` gRPC API.

use std::collections::BTreeSet;

use easynote_shared::{
    proto::user::v1::{
        CheckTokenRequest, CheckTokenResponse, CheckUserRequest, CheckUserResponse,
        CreateUserRequest, CreateUserResponse, MGetUserRequest, MGetUserResponse,
        RevokeTokensRequest, RevokeTokensResponse, User, user_service_server::UserService,
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

/// Longest `jti` accepted (the gateway's are 32 hex digits).
const MAX_JTI_LEN: usize = 64;

/// The gRPC handlers: validate, call the repository, map errors once.
#[derive(Debug, Clone)]
pub(crate) struct UserApi {
    repo: UserRepo,
    hasher: PasswordHasher,
}

impl UserApi {
    pub(crate) fn new(repo: UserRepo) -> Self {
        Self::with_hasher(repo, PasswordHasher::default())
    }

    fn with_hasher(repo: UserRepo, hasher: PasswordHasher) -> Self {
        hasher.warm_up();
        Self { repo, hasher }
    }

    async fn create(&self, req: CreateUserRequest) -> Result<i64, UserError> {
        let username = validate::normalize_username(&req.username);
        validate::username(&username)?;
        validate::password(&req.password)?;
        // A taken name is refused before it costs a hash; the unique index
        // still decides between two registrations racing for a free one.
        if self.repo.username_taken(&username).await? {
            return Err(UserError::UsernameTaken);
        }
        let hash = self.hasher.hash(req.password).await?;
        match self.repo.create(&username, &hash).await {
            Ok(id) => Ok(id),
            Err(CreateError::UsernameTaken) => Err(UserError::UsernameTaken),
            Err(CreateError::Database(err)) => Err(err.into()),
        }
    }

    /// The user's id and token epoch when the password matches.
    async fn check(&self, req: CheckUserRequest) -> Result<(i64, i64), UserError> {
        // Malformed credentials cannot match a stored account; answering them
        // like a wrong password keeps the reply uniform.
        let username = validate::normalize_username(&req.username);
        if validate::username(&username).is_err() || req.password.is_empty() {
            return Err(UserError::BadCredentials);
        }
        let stored = self.repo.credentials_by_username(&username).await?;
        let (account, phc) = stored.map_or((None, None), |c| {
            (Some((c.id, c.token_epoch)), Some(c.password_hash))
        });
        match (self.hasher.verify(req.password, phc).await?, account) {
            (true, Some(account)) => Ok(account),
            _ => Err(UserError::BadCredentials),
        }
    }

    /// The user's token epoch after revoking.
    async fn revoke(&self, req: RevokeTokensRequest) -> Result<i64, UserError> {
        validate::id("user_id", req.user_id)?;
        let epoch = if req.everywhere {
            self.repo.revoke_all(req.user_id).await?
        } else {
            jti(&req.jti)?;
            let expires_at_millis = req.expires_at.saturating_mul(1000);
            self.repo
                .revoke_one(req.user_id, &req.jti, expires_at_millis)
                .await?
        };
        epoch.ok_or(UserError::UserNotFound)
    }

    async fn token_state(&self, req: CheckTokenRequest) -> Result<CheckTokenResponse, UserError> {
        validate::id("user_id", req.user_id)?;
        jti(&req.jti)?;
        Ok(match self.repo.token_state(req.user_id, &req.jti).await? {
            Some(state) => CheckTokenResponse {
                token_epoch: state.token_epoch,
                revoked: state.jti_revoked,
            },
            None => CheckTokenResponse {
                token_epoch: 0,
                revoked: true,
            },
        })
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

fn jti(jti: &str) -> Result<(), Invalid> {
    if jti.is_empty() || jti.len() > MAX_JTI_LEN || !jti.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Invalid(format!(
            "jti must be 1 to {MAX_JTI_LEN} printable ASCII characters"
        )));
    }
    Ok(())
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
        let (user_id, token_epoch) = self.check(request.into_inner()).await?;
        Ok(Response::new(CheckUserResponse {
            user_id,
            token_epoch,
        }))
    }
    async fn revoke_tokens(
        &self,
        request: Request<RevokeTokensRequest>,
    ) -> Result<Response<RevokeTokensResponse>, Status> {
        let request = request.into_inner();
        let (user_id, everywhere) = (request.user_id, request.everywhere);
        let token_epoch = self.revoke(request).await?;
        tracing::info!(user_id, everywhere, "tokens revoked");
        Ok(Response::new(RevokeTokensResponse { token_epoch }))
    }
    async fn check_token(
        &self,
        request: Request<CheckTokenRequest>,
    ) -> Result<Response<CheckTokenResponse>, Status> {
        Ok(Response::new(self.token_state(request.into_inner()).await?))
    }
}

#[cfg(test)]
mod tests {
    use easynote_shared::db::Database;
    use easynote_testkit::TestDatabase;

    use super::*;

    #[tokio::test]
    async fn registering_a_taken_name_does_not_hash() {
        let db = TestDatabase::sqlite();
        let pool = Database::connect(&db.config(), &crate::migrations())
            .await
            .expect("connect and migrate");
        let api = UserApi::with_hasher(UserRepo::new(pool), PasswordHasher::with_workers(1));
        let request = || CreateUserRequest {
            username: "taken".into(),
            password: "password123".into(),
        };
        api.create(request()).await.expect("the first registration");
        assert_eq!(api.hasher.hashed(), 1);
        assert!(matches!(
            api.create(request()).await,
            Err(UserError::UsernameTaken)
        ));
        assert_eq!(api.hasher.hashed(), 1, "the taken name cost a hash");
    }
}

//! Username/password login to open-source Nacos, done here rather than by
//! the SDK's plugin, which logs the password at debug level and sends it in
//! the URL: the password goes in the form body and never in a log line.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nacos_sdk::api::plugin::{AuthContext, AuthPlugin, LoginIdentityContext, RequestResource};
use secrecy::{ExposeSecret as _, SecretString};

/// Username/password login against `/nacos/v1/auth/login`, with the
/// password in the form body and never in a log line.
pub(super) struct PasswordLogin {
    pub(super) username: String,
    password: SecretString,
    http: reqwest::Client,
    state: Mutex<LoginState>,
}

#[derive(Default)]
struct LoginState {
    token: Option<String>,
    refresh_after: Option<Instant>,
    outcome: LoginOutcome,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(super) enum LoginOutcome {
    #[default]
    NotTried,
    LoggedIn,
    Refused {
        server: String,
        status: u16,
    },
    Failed(String),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginReply {
    access_token: String,
    #[serde(default)]
    token_ttl: u64,
}

impl PasswordLogin {
    pub(super) fn new(username: String, password: SecretString) -> Self {
        Self {
            username,
            password,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            state: Mutex::default(),
        }
    }

    pub(super) fn outcome(&self) -> LoginOutcome {
        self.lock().outcome.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoginState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn login_at(&self, server: &str) -> Result<(String, u64), LoginOutcome> {
        let url = format!("http://{server}/nacos/v1/auth/login");
        let form = [
            ("username", self.username.as_str()),
            ("password", self.password.expose_secret()),
        ];
        let response = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|err| LoginOutcome::Failed(format!("{server}: {}", without_url(&err))))?;
        let status = response.status();
        if status == reqwest::StatusCode::FORBIDDEN || status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(LoginOutcome::Refused {
                server: server.to_owned(),
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(LoginOutcome::Failed(format!("{server}: HTTP {status}")));
        }
        let reply: LoginReply = response.json().await.map_err(|err| {
            LoginOutcome::Failed(format!(
                "{server}: unexpected login reply: {}",
                without_url(&err)
            ))
        })?;
        Ok((reply.access_token, reply.token_ttl))
    }
}

/// A reqwest error without the URL (which could one day carry credentials).
fn without_url(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = match err.source() {
        Some(cause) => cause.to_string(),
        None => "request failed".to_owned(),
    };
    if err.is_timeout() {
        text = "timed out".to_owned();
    }
    text
}

#[tonic::async_trait]
impl AuthPlugin for PasswordLogin {
    async fn login(&self, server_list: Arc<Vec<String>>, _: Arc<AuthContext>) {
        // The SDK calls this at start and every 30 s; the token is renewed
        // once half its lifetime has passed.
        if self
            .lock()
            .refresh_after
            .is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        let mut outcome = LoginOutcome::Failed("no Nacos server to log in to".to_owned());
        for server in server_list.iter() {
            match self.login_at(server).await {
                Ok((token, ttl)) => {
                    let renew_in = Duration::from_secs(ttl / 2).max(Duration::from_secs(5));
                    let mut state = self.lock();
                    state.token = Some(token);
                    state.refresh_after = Some(Instant::now() + renew_in);
                    state.outcome = LoginOutcome::LoggedIn;
                    return;
                }
                Err(err @ LoginOutcome::Refused { .. }) => {
                    outcome = err;
                    break;
                }
                Err(err) => outcome = err,
            }
        }
        let mut state = self.lock();
        if state.outcome != outcome {
            match &outcome {
                LoginOutcome::Refused { server, status } => tracing::error!(
                    %server, username = %self.username, status,
                    "Nacos refused the login: check NACOS_USERNAME and NACOS_PASSWORD"
                ),
                LoginOutcome::Failed(reason) => {
                    tracing::warn!(username = %self.username, %reason, "cannot log in to Nacos");
                }
                LoginOutcome::LoggedIn | LoginOutcome::NotTried => {}
            }
        }
        state.outcome = outcome;
    }

    fn get_login_identity(&self, _: RequestResource) -> LoginIdentityContext {
        match &self.lock().token {
            Some(token) => {
                LoginIdentityContext::default().add_context("accessToken", token.clone())
            }
            None => LoginIdentityContext::default(),
        }
    }
}

//! Opening a Nacos client, naming or config: a quick probe of the gRPC
//! port, our settings over the SDK's, the login, and retries with backoff
//! while the server cannot be reached, for at most `NACOS_CONNECT_TIMEOUT`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nacos_sdk::api::{
    config::{ConfigService, ConfigServiceBuilder},
    naming::{NamingService, NamingServiceBuilder},
    props::ClientProps,
};
use secrecy::ExposeSecret as _;

use super::{
    NACOS_GRPC_PORT_OFFSET, NacosAuth, NacosConfig, NacosError,
    login::{LoginOutcome, PasswordLogin},
};
use crate::addr::HostPort;

/// Bound on one attempt to open a client (connect, health check, login).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on connecting to a server's gRPC port when probing it.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause between start-up attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Opens a naming client, retrying with backoff while the server cannot be
/// reached, for at most `NACOS_CONNECT_TIMEOUT`.
pub(super) async fn open_client(
    config: &NacosConfig,
    purpose: &str,
) -> Result<NamingService, NacosError> {
    open_with(config, purpose, || try_open_client(config)).await
}

/// Runs `attempt` until it succeeds, fails fatally, or
/// `NACOS_CONNECT_TIMEOUT` is spent, with backoff in between.
async fn open_with<T, F, Fut>(
    config: &NacosConfig,
    purpose: &str,
    attempt: F,
) -> Result<T, NacosError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Attempt>>,
{
    let started = Instant::now();
    let deadline = started + config.connect_timeout;
    let mut backoff = config.retry_backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_secs(1), ATTEMPT_TIMEOUT);
        let last = match tokio::time::timeout(budget, attempt()).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(Attempt::Fatal(err))) => return Err(*err),
            Ok(Err(Attempt::Failed(reason))) => reason,
            Err(_) => format!("no answer within {budget:?}"),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(NacosError::Unreachable {
                servers: config.server_list(),
                attempts,
                elapsed: started.elapsed(),
                last,
            });
        }
        // The last pause ends at the deadline, for one last attempt.
        let pause = backoff.min(remaining);
        tracing::warn!(
            servers = %config.server_list(),
            purpose,
            attempt = attempts,
            retry_in = ?pause,
            error = %last,
            "Nacos is not reachable yet; retrying"
        );
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

enum Attempt {
    /// Worth retrying.
    Failed(String),
    /// Retrying cannot help.
    Fatal(Box<NacosError>),
}

/// Whether any server's gRPC port accepts connections: a quick, quiet
/// check before the SDK, which would spend seconds (and many log lines) on
/// a server that is not there.
async fn probe_grpc_ports(config: &NacosConfig) -> Result<(), String> {
    let mut failures = Vec::new();
    for server in &config.server_addrs {
        let Ok(server) = server.parse::<HostPort>() else {
            continue;
        };
        let grpc = HostPort::new(
            server.host,
            server.port.saturating_add(NACOS_GRPC_PORT_OFFSET),
        );
        let connect = tokio::net::TcpStream::connect((grpc.host.as_str(), grpc.port));
        match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(err)) => failures.push(format!("{grpc}: {err}")),
            Err(_) => failures.push(format!("{grpc}: no answer within {PROBE_TIMEOUT:?}")),
        }
    }
    Err(failures.join("; "))
}

/// The SDK's client settings and how to authenticate, shared by the
/// naming client and the config client.
fn client_setup(config: &NacosConfig) -> (ClientProps, ClientAuth) {
    let mut props = ClientProps::new()
        .server_addr(config.server_list())
        .namespace(config.namespace.clone())
        .app_name("easy-note")
        // Our variables, not NACOS_CLIENT_* or a .env file, decide.
        .env_first(false)
        .naming_push_empty_protection(true)
        .naming_load_cache_at_start(false)
        .config_load_cache_at_start(false);
    if let Some(dir) = &config.cache_dir {
        props = props.cache_dir(dir.clone());
    }
    let auth = match &config.auth {
        NacosAuth::None => ClientAuth::None,
        NacosAuth::Password { username, password } => ClientAuth::Password(Arc::new(
            PasswordLogin::new(username.clone(), password.clone()),
        )),
        NacosAuth::AccessKey {
            access_key,
            secret_key,
            region,
        } => {
            props = props
                .auth_access_key(access_key.clone())
                .auth_access_secret(secret_key.expose_secret());
            if let Some(region) = region {
                props = props.auth_signature_region_id(region.clone());
            }
            ClientAuth::Aliyun
        }
    };
    (props, auth)
}

/// How a client authenticates.
enum ClientAuth {
    None,
    Password(Arc<PasswordLogin>),
    Aliyun,
}

impl ClientAuth {
    /// After a client was built: a refused login is fatal, a failed one
    /// worth retrying.
    fn check(&self) -> Result<(), Attempt> {
        let Self::Password(login) = self else {
            return Ok(());
        };
        match login.outcome() {
            LoginOutcome::Refused { server, status } => {
                Err(Attempt::Fatal(Box::new(NacosError::LoginRefused {
                    server,
                    username: login.username.clone(),
                    status,
                })))
            }
            LoginOutcome::Failed(reason) => {
                Err(Attempt::Failed(format!("logging in to Nacos: {reason}")))
            }
            LoginOutcome::LoggedIn | LoginOutcome::NotTried => Ok(()),
        }
    }
}

/// One attempt at a client of the SDK's `$builder` kind (the naming and
/// config builders share these methods but no trait): probe, settings,
/// authentication, build, then the login's verdict.
macro_rules! try_open {
    ($builder:ident, $config:expr) => {{
        let config = $config;
        probe_grpc_ports(config).await.map_err(Attempt::Failed)?;
        let (props, auth) = client_setup(config);
        let builder = $builder::new(props);
        let builder = match &auth {
            ClientAuth::None => builder,
            ClientAuth::Password(plugin) => builder.with_auth_plugin(plugin.clone()),
            ClientAuth::Aliyun => builder.enable_auth_plugin_aliyun(),
        };
        let client = builder
            .build()
            .await
            .map_err(|err| Attempt::Failed(err.to_string()))?;
        auth.check()?;
        Ok(client)
    }};
}

async fn try_open_client(config: &NacosConfig) -> Result<NamingService, Attempt> {
    try_open!(NamingServiceBuilder, config)
}

async fn try_open_config_client(config: &NacosConfig) -> Result<ConfigService, Attempt> {
    try_open!(ConfigServiceBuilder, config)
}

/// Opens a config-center client (the governance rules' source), retrying
/// an unreachable server like the naming client does.
pub(crate) async fn open_config_client(config: &NacosConfig) -> Result<ConfigService, NacosError> {
    open_with(config, "config", || try_open_config_client(config)).await
}

//! Services as real child processes, for tests that need what only a
//! process has: its own telemetry resource, a SIGTERM or a SIGKILL.
//!
//! No test picks a port for a child to bind later (another process could
//! take it in between): every child binds port 0 and writes the address it
//! bound to `EASYNOTE_ADDR_FILE`, which [`ProcessSuite`] reads. Tests of
//! the root crate pass `env!("CARGO_BIN_EXE_easy-note")`, which cargo
//! builds fresh for them.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use tempfile::TempDir;

pub use crate::child::{Proc, refusing_addr, tail};
use crate::{
    client::GatewayClient,
    eventually::try_eventually,
    rnacos::{REGISTRY_WITHIN, Rnacos},
};

/// Registry names.
pub const USER: &str = easynote_shared::service_name::USER;
/// Registry names.
pub const NOTE: &str = easynote_shared::service_name::NOTE;
/// Registry names.
pub const GATEWAY: &str = easynote_shared::service_name::GATEWAY;

/// Bound on a child's start: its address file written, or registered.
pub const START_WITHIN: Duration = Duration::from_secs(30);

/// How the children of a [`ProcessSuite`] find each other.
#[derive(Debug)]
pub enum SuiteDiscovery {
    /// Static lists: each child is given the addresses of those started before it.
    Static,
    /// A real rnacos, started for the suite.
    Nacos(Rnacos),
}

/// The suite as separate processes, each on port 0, sharing one directory
/// (databases, logs, address files) and one registry.
#[derive(Debug)]
pub struct ProcessSuite {
    /// The registry the children use.
    pub registry: SuiteDiscovery,
    /// Their working directory.
    pub dir: TempDir,
    /// An HTTP client for tests.
    pub http: reqwest::Client,
    program: PathBuf,
    env: Vec<(String, String)>,
    started: u32,
    user_addr: Option<String>,
    note_addr: Option<String>,
}

/// One service process and its addresses.
#[derive(Debug)]
pub struct Service {
    /// The process.
    pub proc: Proc,
    /// Its registry name.
    pub service: String,
    /// The address callers use: registered (advertised) under Nacos, bound otherwise.
    pub addr: String,
    /// The address it is bound to.
    pub bound: String,
}

impl ProcessSuite {
    /// A suite of `program` (`easy-note`) children with static discovery.
    pub fn with_static_lists(program: &Path) -> Self {
        Self::new(program, SuiteDiscovery::Static)
    }

    /// A suite of `program` children around a fresh rnacos.
    pub async fn with_rnacos(program: &Path) -> Self {
        Self::new(program, SuiteDiscovery::Nacos(Rnacos::start().await))
    }

    fn new(program: &Path, registry: SuiteDiscovery) -> Self {
        Self {
            registry,
            dir: tempfile::tempdir().expect("a directory for the services"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("an HTTP client"),
            program: program.to_owned(),
            env: Vec::new(),
            started: 0,
            user_addr: None,
            note_addr: None,
        }
    }

    /// The rnacos of a Nacos suite.
    pub fn nacos(&self) -> &Rnacos {
        match &self.registry {
            SuiteDiscovery::Nacos(nacos) => nacos,
            SuiteDiscovery::Static => panic!("this suite runs on static discovery, without rnacos"),
        }
    }

    /// The rnacos of a Nacos suite, to stop or restart it.
    pub fn nacos_mut(&mut self) -> &mut Rnacos {
        match &mut self.registry {
            SuiteDiscovery::Nacos(nacos) => nacos,
            SuiteDiscovery::Static => panic!("this suite runs on static discovery, without rnacos"),
        }
    }

    /// Adds settings every child started from now on gets (later ones win).
    pub fn set(&mut self, pairs: &[(&str, String)]) -> &mut Self {
        self.env
            .extend(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        self
    }

    /// What every child gets: quiet libraries, short shutdown bounds, the
    /// registry, then the suite's own settings.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            (
                "RUST_LOG",
                "info,nacos_sdk=warn,nacos_sdk::config::worker=off,nacos_sdk::common::cache=error,h2=warn,hyper=warn,tower=warn,sqlx=warn".to_owned(),
            ),
            ("EASYNOTE_SHUTDOWN_TIMEOUT", "5s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let SuiteDiscovery::Nacos(nacos) = &self.registry {
            for (k, v) in [
                ("EASYNOTE_REGISTRY", "nacos".to_owned()),
                ("NACOS_SERVER_ADDR", nacos.addr()),
                (
                    "NACOS_CACHE_DIR",
                    self.dir.path().join("nacos-cache").display().to_string(),
                ),
                ("NACOS_CONNECT_TIMEOUT", "20s".to_owned()),
                ("NACOS_RETRY_BACKOFF", "200ms".to_owned()),
                ("EASYNOTE_DEREGISTER_GRACE", "1s".to_owned()),
            ] {
                env.push((k.to_owned(), v));
            }
        }
        env.extend(self.env.iter().cloned());
        env
    }

    /// A SQLite URL for a file in the suite's directory.
    pub fn database(&self, name: &str) -> String {
        format!("sqlite://{}", self.dir.path().join(name).display())
    }

    /// The tail of every child's log so far, for failure messages.
    pub fn logs(&self) -> String {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|dir| {
                dir.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default();
        logs.sort();
        logs.iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                format!("----- {} -----\n{}", path.display(), tail(&text, 40))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls `check` for at most `within`; on failure panics naming `what`
    /// with every child's log.
    pub async fn eventually<T, E, F, Fut>(&self, within: Duration, what: &str, check: F) -> T
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        match try_eventually(within, check).await {
            Ok(value) => value,
            Err(last) => panic!(
                "{what}: not within {within:?}; last seen: {last}\n{}",
                self.logs()
            ),
        }
    }

    /// Starts `easy-note <command>` with the suite's settings plus `extra`,
    /// listening on port 0, and waits for the address it reports under `key`.
    async fn spawn(
        &mut self,
        command: &str,
        key: &str,
        extra: &[(&str, String)],
    ) -> (Proc, String) {
        self.started += 1;
        let name = format!("{command}-{}", self.started);
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let mut env = self.env();
        env.push((
            "EASYNOTE_ADDR_FILE".to_owned(),
            addr_file.display().to_string(),
        ));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut proc = Proc::spawn(&name, &self.program, &[command], self.dir.path(), &env);
        let what = format!("{name} reports its address in {}", addr_file.display());
        let bound = self
            .eventually(START_WITHIN, &what, || {
                let exited = !proc.is_running();
                let file = addr_file.clone();
                async move {
                    if exited {
                        return Err("the process exited".to_owned());
                    }
                    read_addr(&file, key)
                }
            })
            .await;
        (proc, bound)
    }

    /// Starts a user-service (all share one database).
    pub async fn start_user(&mut self) -> Service {
        self.start_user_with(&[]).await
    }

    /// Starts a user-service; `extra` adds or overrides settings.
    pub async fn start_user_with(&mut self, extra: &[(&str, String)]) -> Service {
        let database = self.database("user.db");
        let service = self
            .start(
                "user-service",
                USER,
                "user_grpc",
                &[
                    ("EASYNOTE_GRPC_ADDR", "127.0.0.1:0".to_owned()),
                    ("EASYNOTE_DATABASE_URL", database),
                ],
                extra,
            )
            .await;
        self.user_addr = Some(service.addr.clone());
        service
    }

    /// Starts a note-service (all share one database).
    pub async fn start_note(&mut self) -> Service {
        self.start_note_with(&[]).await
    }

    /// Starts a note-service; `extra` adds or overrides settings.
    pub async fn start_note_with(&mut self, extra: &[(&str, String)]) -> Service {
        let database = self.database("note.db");
        let service = self
            .start(
                "note-service",
                NOTE,
                "note_grpc",
                &[
                    ("EASYNOTE_GRPC_ADDR", "127.0.0.1:0".to_owned()),
                    ("EASYNOTE_DATABASE_URL", database),
                ],
                extra,
            )
            .await;
        self.note_addr = Some(service.addr.clone());
        service
    }

    /// Starts a gateway.
    pub async fn start_gateway(&mut self) -> Service {
        self.start_gateway_with(&[]).await
    }

    /// Starts a gateway; `extra` adds or overrides settings.
    pub async fn start_gateway_with(&mut self, extra: &[(&str, String)]) -> Service {
        self.start(
            "api-gateway",
            GATEWAY,
            "http",
            &[("EASYNOTE_HTTP_ADDR", "127.0.0.1:0".to_owned())],
            extra,
        )
        .await
    }

    /// Starts `easy-note <command>` (registered as `service`) on port 0 with
    /// `defaults`, the static lists so far and `extra` (later settings win);
    /// waits for the address it reports under `key` and, under Nacos, for
    /// its registration.
    async fn start(
        &mut self,
        command: &str,
        service: &str,
        key: &str,
        defaults: &[(&'static str, String)],
        extra: &[(&str, String)],
    ) -> Service {
        let mut all: Vec<(&str, String)> = defaults.to_vec();
        all.extend(self.static_lists());
        all.extend(extra.iter().cloned());
        let (proc, bound) = self.spawn(command, key, &all).await;
        self.started_service(service, proc, bound, &all).await
    }

    /// Under static discovery, the addresses of the services started so far.
    fn static_lists(&self) -> Vec<(&'static str, String)> {
        if !matches!(self.registry, SuiteDiscovery::Static) {
            return Vec::new();
        }
        let mut lists = Vec::new();
        if let Some(user) = &self.user_addr {
            lists.push(("EASYNOTE_USER_ADDRS", user.clone()));
        }
        if let Some(note) = &self.note_addr {
            lists.push(("EASYNOTE_NOTE_ADDRS", note.clone()));
        }
        lists
    }

    /// Under Nacos, waits until the child is registered at its advertised
    /// address (`EASYNOTE_ADVERTISE_ADDR` when given, else the bound one).
    async fn started_service(
        &self,
        service: &str,
        mut proc: Proc,
        bound: String,
        env: &[(&str, String)],
    ) -> Service {
        let addr = env
            .iter()
            .rev()
            .find(|(k, _)| *k == "EASYNOTE_ADVERTISE_ADDR")
            .map_or_else(|| bound.clone(), |(_, v)| v.clone());
        if let SuiteDiscovery::Nacos(nacos) = &self.registry {
            let what = format!("{} registers {addr} as {service}", proc.name);
            self.eventually(REGISTRY_WITHIN, &what, || {
                let exited = !proc.is_running();
                let addr = addr.clone();
                async move {
                    if exited {
                        return Err("the process exited".to_owned());
                    }
                    let listed = nacos.addrs(service).await;
                    if listed.contains(&addr) {
                        Ok(())
                    } else {
                        Err(format!("listed: {listed:?}"))
                    }
                }
            })
            .await;
        }
        Service {
            proc,
            service: service.to_owned(),
            addr,
            bound,
        }
    }

    /// A client of `gateway`, through this suite's HTTP client.
    pub fn client(&self, gateway: &Service) -> GatewayClient {
        GatewayClient::new(&gateway.addr, self.http.clone())
    }

    /// Waits until the gateway says both services are ready.
    pub async fn wait_ready(&self, gateway: &Service) {
        let url = format!("http://{}/readyz", gateway.addr);
        self.eventually(REGISTRY_WITHIN, "the gateway is ready", || async {
            match self.http.get(&url).send().await {
                Ok(reply) if reply.status().is_success() => Ok(()),
                Ok(reply) => Err(format!("/readyz answered {}", reply.status())),
                Err(err) => Err(err.to_string()),
            }
        })
        .await;
    }
}

/// The address under `key` in an address file, once it has been written.
fn read_addr(file: &Path, key: &str) -> Result<String, String> {
    let text =
        std::fs::read_to_string(file).map_err(|err| format!("no address file yet ({err})"))?;
    let addrs: Value =
        serde_json::from_str(&text).map_err(|err| format!("unreadable address file: {err}"))?;
    addrs[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {key:?} in {text}"))
}

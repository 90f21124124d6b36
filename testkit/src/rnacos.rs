//! A real rnacos server (a Nacos-compatible registry) per test, on its own
//! loopback ports and data directory, killed on drop.
//!
//! rnacos is found at `RNACOS_BIN` or on `PATH` (`cargo install --locked
//! rnacos`; `scripts/test.sh` installs it). A test that cannot find it
//! fails, naming what is missing: it never passes by skipping.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;

use crate::child::{Proc, program, tail};

/// Bound on anything the registry should do "soon": appear, disappear, push.
pub const REGISTRY_WITHIN: Duration = Duration::from_secs(20);

/// The rnacos binary: `RNACOS_BIN`, else `rnacos` on `PATH`.
fn rnacos_bin() -> PathBuf {
    program(
        "RNACOS_BIN",
        "rnacos",
        "these tests need a real rnacos server: `cargo install --locked rnacos` \
         (./scripts/test.sh does this)",
    )
}

/// A Nacos address where nothing answers, neither its HTTP port `p` nor
/// its gRPC port `p + 1000`: both are held bound (never listening) by the
/// returned sockets, so connections are refused and no other process can
/// take either port while they live.
pub fn unreachable_nacos() -> (Vec<tokio::net::TcpSocket>, String) {
    for _ in 0..100 {
        let (http, addr) = crate::child::refusing_addr();
        let Some(grpc_port) = addr.port().checked_add(1000) else {
            continue;
        };
        let grpc = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        if grpc.bind(([127, 0, 0, 1], grpc_port).into()).is_ok() {
            return (vec![http, grpc], addr.to_string());
        }
    }
    panic!("no pair of free ports p, p+1000 on 127.0.0.1 after 100 tries");
}

/// A port `p` with `p` and `p + 1000` both free right now (rnacos HTTP and
/// gRPC: Nacos clients always find gRPC at HTTP + 1000, so rnacos cannot
/// bind port 0 and report back). Both lie below Linux's ephemeral range
/// (32768 and up), so no port-0 bind elsewhere can take them meanwhile;
/// a start that fails all the same is retried on another pair.
fn free_port_pair() -> u16 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let mut x = SEED.fetch_add(1, Ordering::Relaxed)
        ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos().into())
            .unwrap_or(7);
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 11_000) as u16;
        let both = TcpListener::bind(("127.0.0.1", port))
            .and_then(|a| TcpListener::bind(("127.0.0.1", port + 1000)).map(|b| (a, b)));
        if both.is_ok() {
            return port;
        }
    }
    panic!("no free pair of ports p, p+1000 on 127.0.0.1");
}

/// A registered instance as rnacos's open API lists it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub addr: String,
    pub weight: f64,
    pub healthy: bool,
    pub enabled: bool,
    pub ephemeral: bool,
    pub metadata: HashMap<String, String>,
}

/// An rnacos server on free loopback ports with its own data directory.
#[derive(Debug)]
pub struct Rnacos {
    pub http_port: u16,
    dir: TempDir,
    /// `(username, password)` when open-API auth is on.
    auth: Option<(String, String)>,
    /// The console served without a login (for screenshots).
    open_console: bool,
    proc: Option<Proc>,
    http: reqwest::Client,
    runs: u32,
}

impl Rnacos {
    /// rnacos without auth, as a developer runs it.
    pub async fn start() -> Self {
        Self::start_with(None, false).await
    }

    /// rnacos with open-API auth on and one admin user.
    pub async fn start_with_auth(username: &str, password: &str) -> Self {
        Self::start_with(Some((username.to_owned(), password.to_owned())), false).await
    }

    /// rnacos without auth whose console (`/rnacos/`, on the HTTP port)
    /// needs no login either: what `scripts/screenshots.sh` shows.
    pub async fn start_with_open_console() -> Self {
        Self::start_with(None, true).await
    }

    async fn start_with(auth: Option<(String, String)>, open_console: bool) -> Self {
        let mut nacos = Self {
            http_port: free_port_pair(),
            dir: tempfile::tempdir().expect("a directory for rnacos"),
            auth,
            open_console,
            proc: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client"),
            runs: 0,
        };
        nacos.restart().await;
        nacos
    }

    /// `host:port` to give as `NACOS_SERVER_ADDR`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// Kills the server (its data directory stays).
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.sigkill();
        }
    }

    /// Starts the server (again) on the same ports and data, and waits
    /// until it answers. rnacos 0.8 now and then panics in one of its actors
    /// while it starts (`Option::unwrap()` on `None`, more often under
    /// load): such a start is retried, on a fresh data directory when it is
    /// the first, at most seven times.
    pub async fn restart(&mut self) {
        const ATTEMPTS: u32 = 8;
        let first_start = self.runs == 0;
        for attempt in 1..=ATTEMPTS {
            match self.start_once().await {
                Ok(()) => return,
                Err(output) if attempt < ATTEMPTS => {
                    eprintln!(
                        "rnacos start {attempt} failed; retrying:\n{}",
                        tail(&output, 20)
                    );
                    self.stop();
                    if first_start {
                        // Nobody knows these ports yet: a port taken
                        // meanwhile costs a new pair, not a failed test.
                        let _ = std::fs::remove_dir_all(self.dir.path().join("data"));
                        self.http_port = free_port_pair();
                    }
                }
                Err(output) => panic!(
                    "rnacos did not come up on {} in {ATTEMPTS} attempts:\n{output}",
                    self.addr()
                ),
            }
        }
    }

    /// One start; the server's output when it does not come up.
    async fn start_once(&mut self) -> Result<(), String> {
        self.stop();
        self.runs += 1;
        let mut env = vec![
            ("RNACOS_HTTP_PORT", self.http_port.to_string()),
            ("RNACOS_GRPC_PORT", (self.http_port + 1000).to_string()),
            // 0 turns the separate console server off.
            ("RNACOS_HTTP_CONSOLE_PORT", "0".to_owned()),
            ("RNACOS_SDK_HOST", "127.0.0.1".to_owned()),
            ("RNACOS_CONSOLE_HOST", "127.0.0.1".to_owned()),
            (
                "RNACOS_DATA_DIR",
                self.dir.path().join("data").display().to_string(),
            ),
            ("RNACOS_HTTP_WORKERS", "2".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        if let Some((username, password)) = &self.auth {
            env.push(("RNACOS_ENABLE_OPEN_API_AUTH", "true".to_owned()));
            env.push(("RNACOS_INIT_ADMIN_USERNAME", username.clone()));
            env.push(("RNACOS_INIT_ADMIN_PASSWORD", password.clone()));
        }
        if self.open_console {
            env.push(("RNACOS_ENABLE_NO_AUTH_CONSOLE", "true".to_owned()));
        }
        let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.proc = Some(Proc::spawn(
            &format!("rnacos-{}", self.runs),
            &rnacos_bin(),
            &[],
            self.dir.path(),
            &env,
        ));
        let deadline = Instant::now() + Duration::from_secs(15);
        let grpc: SocketAddr = ([127, 0, 0, 1], self.http_port + 1000).into();
        loop {
            let http_up = self
                .http
                .get(format!(
                    "http://{}/nacos/v1/ns/instance/list?serviceName=probe",
                    self.addr()
                ))
                .send()
                .await
                .is_ok();
            let up = http_up
                && TcpStream::connect_timeout(&grpc, Duration::from_millis(200)).is_ok()
                && self.admin_can_log_in().await;
            let proc = self.proc.as_mut().expect("started");
            let output = proc.output();
            // The known start-up failure: a panic in one of its actors.
            if output.contains("panicked") || output.contains("unwrap()") {
                return Err(output);
            }
            if up {
                return Ok(());
            }
            if !proc.is_running() || Instant::now() >= deadline {
                return Err(output);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the initial admin exists yet (rnacos creates it shortly
    /// after it starts); true when auth is off.
    async fn admin_can_log_in(&self) -> bool {
        let Some((username, password)) = &self.auth else {
            return true;
        };
        self.http
            .post(format!("http://{}/nacos/v1/auth/login", self.addr()))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// `&accessToken=…` for the open API when auth is on, else nothing.
    async fn token_param(&self) -> String {
        let Some((username, password)) = &self.auth else {
            return String::new();
        };
        let reply: Value = self
            .http
            .post(format!("http://{}/nacos/v1/auth/login", self.addr()))
            .form(&[("username", username), ("password", password)])
            .send()
            .await
            .expect("log in to rnacos")
            .json()
            .await
            .expect("a login reply");
        let token = reply["accessToken"].as_str().expect("an access token");
        format!("&accessToken={token}")
    }

    /// Publishes `content` as config `data_id` in the default namespace and
    /// group, through the open API (`POST /nacos/v1/cs/configs`), as an
    /// operator would with `curl`.
    pub async fn publish_config(&self, data_id: &str, content: &str) {
        // rnacos writes configs through its raft log, which refuses writes
        // for a moment after a start (and now and then panics in one of its
        // actors while it starts): a refused write is retried for a few
        // seconds, each refusal shown, before the test fails on it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let url = format!(
                "http://{}/nacos/v1/cs/configs?x=1{}",
                self.addr(),
                self.token_param().await
            );
            let reply = self
                .http
                .post(url)
                .form(&[
                    ("dataId", data_id),
                    ("group", "DEFAULT_GROUP"),
                    ("content", content),
                    ("type", "json"),
                ])
                .send()
                .await;
            let refused = match reply {
                Ok(reply) => {
                    let status = reply.status();
                    let body = reply.text().await.unwrap_or_default();
                    if status.is_success() && body.trim() == "true" {
                        return;
                    }
                    format!("{status} {body}")
                }
                Err(err) => format!("no answer: {err}"),
            };
            assert!(
                Instant::now() < deadline,
                "publishing {data_id}: {refused}\nrnacos's output:\n{}",
                self.proc
                    .as_ref()
                    .map(|proc| tail(&proc.output(), 30))
                    .unwrap_or_default()
            );
            eprintln!("publishing {data_id} refused ({refused}); retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Deletes config `data_id` (`DELETE /nacos/v1/cs/configs`).
    pub async fn delete_config(&self, data_id: &str) {
        let url = format!(
            "http://{}/nacos/v1/cs/configs?dataId={data_id}&group=DEFAULT_GROUP{}",
            self.addr(),
            self.token_param().await
        );
        let reply = self.http.delete(url).send().await.expect("rnacos answers");
        assert!(
            reply.status().is_success(),
            "deleting {data_id}: {}",
            reply.status()
        );
    }

    /// The instances of `service` in the default namespace and group.
    pub async fn instances(&self, service: &str) -> Vec<Listed> {
        let url = format!(
            "http://{}/nacos/v1/ns/instance/list?serviceName={service}&groupName=DEFAULT_GROUP{}",
            self.addr(),
            self.token_param().await
        );
        let reply: Value = self
            .http
            .get(url)
            .send()
            .await
            .expect("rnacos answers")
            .json()
            .await
            .expect("an instance list");
        reply["hosts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|host| Listed {
                addr: format!(
                    "{}:{}",
                    host["ip"].as_str().unwrap_or_default(),
                    host["port"].as_u64().unwrap_or_default()
                ),
                weight: host["weight"].as_f64().unwrap_or_default(),
                healthy: host["healthy"].as_bool().unwrap_or_default(),
                enabled: host["enabled"].as_bool().unwrap_or_default(),
                ephemeral: host["ephemeral"].as_bool().unwrap_or_default(),
                metadata: host["metadata"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Addresses of `service`'s instances.
    pub async fn addrs(&self, service: &str) -> Vec<String> {
        let mut addrs: Vec<String> = self
            .instances(service)
            .await
            .into_iter()
            .map(|i| i.addr)
            .collect();
        addrs.sort();
        addrs
    }

    /// Waits until `service`'s instance at `addr` is listed (or not);
    /// answers how long that took.
    pub async fn wait_listed(&self, service: &str, addr: &str, listed: bool) -> Duration {
        let started = Instant::now();
        let what = format!(
            "{service} {addr} {}",
            if listed { "is listed" } else { "is gone" }
        );
        crate::eventually(REGISTRY_WITHIN, &what, || async {
            let addrs = self.addrs(service).await;
            if addrs.iter().any(|a| a == addr) == listed {
                Ok(())
            } else {
                Err(format!("listed: {addrs:?}"))
            }
        })
        .await;
        started.elapsed()
    }
}

//! One child process of a test: spawned with its output captured to a file,
//! shown when a test fails, and killed when dropped.

use std::{
    fs::File,
    io::Read as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A program the tests need: the file the variable `var` names (it must
/// exist), else `name` on `PATH`. Missing, the test fails with `missing`,
/// which says how to get it: a test never passes by skipping.
pub fn program(var: &str, name: &str, missing: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} is not a file; {missing}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{name} not found ({var} or PATH): {missing}"))
}

/// A loopback address where connections are refused for as long as the
/// returned socket lives: bound, never listening, so no one else can take
/// the port meanwhile.
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind a loopback port");
    let addr = socket.local_addr().expect("a bound address");
    (socket, addr)
}

/// A child process with a clean environment, its output going to a file;
/// killed on drop (and its output shown if the test is failing).
#[derive(Debug)]
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `program args…` in `dir` with exactly `env` (plus `PATH`).
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[&str],
        dir: &Path,
        env: &[(String, String)],
    ) -> Self {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("create a log file");
        let err = out.try_clone().expect("clone the log file");
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", program.display()));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn output(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Asks the process to stop gracefully (what Kubernetes does).
    pub fn sigterm(&self) {
        self.signal("-TERM");
    }

    /// Freezes the process (SIGSTOP), as a hung process or a paused
    /// container is: its kernel still accepts connections, nothing answers.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.name);
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, for at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}; output:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- output of {} -----\n{}",
                self.name,
                tail(&self.output(), 60)
            );
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

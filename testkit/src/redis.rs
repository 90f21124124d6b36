//! A Redis server of the test's own (`redis-server` from `REDIS_SERVER_BIN`
//! or `PATH`), on a free loopback port, with nothing saved: the test may
//! freeze it, thaw it or kill it, and the machine's own Redis is left
//! alone.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::child::{Proc, program, refusing_addr};

/// A running `redis-server`; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The process, to freeze or stop.
    pub proc: Proc,
}

impl RedisServer {
    /// Starts one, its log in `dir`, and waits until it answers `PING`.
    pub async fn start(dir: &Path) -> Self {
        let bin = program(
            "REDIS_SERVER_BIN",
            "redis-server",
            "install Redis (apt-get install redis-server; scripts/tools.sh does)",
        );
        // A port nobody holds: taken by a socket that never listens, then
        // handed over.
        let (socket, addr) = refusing_addr();
        drop(socket);
        let port = addr.port().to_string();
        let proc = Proc::spawn(
            "redis",
            &bin,
            &[
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            dir,
            &[],
        );
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while !answers(&addr).await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not answer PING on {addr}:\n{}",
                proc.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            url: format!("redis://{addr}"),
            addr,
            proc,
        }
    }
}

/// Whether a Redis at `addr` answers `PING` within a second.
pub async fn answers(addr: &str) -> bool {
    let ping = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await.ok()?;
        (&reply == b"+PONG\r\n").then_some(())
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Some(()))
    )
}

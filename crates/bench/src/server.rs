//! The Quarters server under test, run as a subprocess of its own binary.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http::Method;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::net::call_once;

/// How long the server may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it may take to end every environment after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ServerProcess {
    pub addr: SocketAddr,
    /// The API gateway's data plane.
    pub gateway: SocketAddr,
    child: Child,
    stopped: bool,
    _data_dir: tempfile::TempDir,
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl ServerProcess {
    /// Spawn `<quarters> serve` on a free port with a fresh data directory and wait until it
    /// answers ListFunctions. Without `hardening`, it gets the hidden `--no-hardening` flag.
    pub async fn start(quarters: &Path, hardening: bool) -> Result<Self> {
        Self::start_with(quarters, hardening, &[]).await
    }

    /// [`ServerProcess::start`] with more arguments to `serve` (such as `--memory-budget-mb`).
    pub async fn start_with(quarters: &Path, hardening: bool, extra: &[String]) -> Result<Self> {
        let data_dir = tempfile::Builder::new().prefix("quarters-bench-").tempdir().context("creating a data dir")?;
        let port = free_port()?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let gateway: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut cmd = Command::new(quarters);
        cmd.arg("serve");
        if !hardening {
            cmd.arg("--no-hardening");
        }
        let mut child = cmd
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--idle-timeout", "600"])
            // The bench's own client does not sign; SigV4 verification (2-6 µs a request) is
            // measured apart, by the sigv4 crate's `bench_verify`.
            .arg("--no-auth")
            .arg("--gateway-listen")
            .arg(gateway.to_string())
            .args(extra)
            .env("QUARTERS_LOG", "warn")
            .env_remove("QUARTERS_NO_HARDENING")
            .env_remove("QUARTERS_MEMORY_BUDGET_MB")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", quarters.display()))?;
        let tag = if hardening { "server" } else { "server (no hardening)" };
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("      {tag}: {line}");
                }
            });
        }
        let mut server = ServerProcess { addr, gateway, child, stopped: false, _data_dir: data_dir };
        if let Err(e) = server.wait_ready().await {
            server.stop().await;
            return Err(e);
        }
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited before answering ({status})");
            }
            match call_once(self.addr, Method::GET, "/2015-03-31/functions", None).await {
                Ok((status, _, _)) if status.as_u16() == 200 => return Ok(()),
                Ok((status, _, body)) if Instant::now() > deadline => {
                    bail!("the server answers {status}: {}", String::from_utf8_lossy(&body))
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("the server did not answer within {START_TIMEOUT:?}")));
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The server's process id (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, unless it has ended (and been reaped) already.
    fn terminate(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return false;
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped (so it cannot have been
            // reused) and a valid signal number; it touches no memory of ours.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        true
    }

    /// SIGTERM, then wait for the server to end its environments; SIGKILL if it takes too long.
    pub async fn stop(mut self) {
        self.stopped = true;
        if !self.terminate() {
            return;
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if !status.success() => eprintln!("      the server exited with {status}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("      waiting for the server: {e}"),
            Err(_) => {
                eprintln!("      the server did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it");
                let _ = self.child.kill().await;
            }
        }
    }
}

impl Drop for ServerProcess {
    /// A server that was not stopped (an error or panic unwound past it, or its future was
    /// dropped) still gets SIGTERM and time to end its sandboxes and remove their cgroups,
    /// waited for here, blocking; then SIGKILL.
    fn drop(&mut self) {
        if self.stopped || !self.terminate() {
            return;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                _ => return,
            }
        }
        let _ = self.child.start_kill();
    }
}

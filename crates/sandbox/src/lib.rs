//! Execution-environment sandboxes.
//!
//! A [`Sandbox`] turns a [`SandboxSpec`] into a running, isolated process tree. The environment
//! manager only sees this trait, so its logic is testable without root, and a stronger backend
//! (a microVM) can be added later.
//!
//! The real backend, [`BwrapSandbox`], spawns by fork+exec only: `bwrap` from Debian's
//! bubblewrap makes the namespaces and mounts, then execs the init, a small static program
//! built from `init/main.rs` by this crate's build script and embedded in the `quarters` binary
//! ([`INIT_PROGRAM`], written out at start by [`install_init`]), which supervises the
//! function's runtime. The sandbox runs in a network namespace the platform made ([`netns`]) with the environment's
//! Runtime API listener already inside; where that is not possible, the init relays the Runtime
//! API port to the environment's private Unix socket instead.

mod bwrap;
pub mod cgroup;
pub mod netns;
pub mod scratch;
pub mod seccomp;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use bwrap::{BwrapConfig, BwrapSandbox, one_off_job};
use quarters_types::EnvId;
pub use scratch::{ScratchConfig, ScratchDisk, ScratchDisks};
use tokio::sync::{mpsc, oneshot};

// Shared with the init program (init/main.rs), which is built on its own.
include!("paths.rs");
/// The address, inside the sandbox, of the relay to the platform's own AWS API (made only where
/// the platform makes the environment's network namespace; see [`netns`]).
pub const API_RELAY_ADDR: &str = "127.0.0.1:9002";

/// The init program (`init/main.rs`, statically linked): a few hundred kilobytes that start in
/// a fraction of the time the whole `quarters` binary takes to load.
pub const INIT_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/quarters-init"));
/// Its file name where [`install_init`] writes it.
pub const INIT_FILE: &str = "quarters-init";

/// Write the init program into `dir` (made if missing), executable, and check that it runs
/// there (a directory on a `noexec` mount would fail every sandbox). Returns its path.
pub fn install_init(dir: &Path) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(INIT_FILE);
    let tmp = dir.join(format!(".{INIT_FILE}.{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o755).open(&tmp)?;
    f.write_all(INIT_PROGRAM)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    let out = std::process::Command::new(&path).arg("--check").output()?;
    if !out.status.success() || out.stdout != b"ok\n" {
        return Err(std::io::Error::other(format!("{} does not run here ({})", path.display(), out.status)));
    }
    Ok(path)
}

/// What to run, and with which limits.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub env_id: EnvId,
    /// Unpacked function code; mounted read-only at `/var/task`.
    pub task_dir: PathBuf,
    /// The environment's private host directory, mounted at [`SANDBOX_RUN_DIR`].
    pub run_dir: PathBuf,
    /// The runtime's environment variables (the sandbox starts from an empty environment).
    pub env: Vec<(String, String)>,
    pub memory_mb: u32,
    pub tmp_mb: u32,
    /// The runtime's command line, as seen inside the sandbox.
    pub command: Vec<String>,
    /// More read-only binds, host path to sandbox path: a managed runtime's files, layers.
    pub ro_binds: Vec<(PathBuf, String)>,
    /// A container image's unpacked root, which replaces the host's `/usr` (and `task_dir`).
    pub root: Option<PathBuf>,
    /// The runtime's working directory (default `/var/task`).
    pub workdir: Option<String>,
    /// The network namespace to run in, made by [`Sandbox::runtime_channel`] (else the
    /// sandbox makes its own and relays the Runtime API to a Unix socket).
    pub netns: Option<std::sync::Arc<OwnedFd>>,
}

/// How the runtime inside a sandbox reaches its environment's Runtime API.
pub enum RuntimeChannel {
    /// The platform serves a Unix socket at this path; the sandbox init relays
    /// `127.0.0.1:9001` to it.
    Unix(PathBuf),
    /// The platform serves this listener, bound at `127.0.0.1:9001` inside the environment's
    /// own network namespace `netns`, which the sandbox then runs in: no relay. `relay` is a
    /// second listener in that namespace, at [`API_RELAY_ADDR`], whose connections the platform
    /// may relay to its own API (or close, by dropping it).
    Netns { listener: std::net::TcpListener, netns: OwnedFd, relay: Option<std::net::TcpListener> },
}

/// How a sandbox's runtime ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
    /// It ended and nothing says how.
    Unknown,
}

impl ExitInfo {
    /// Go-style wording, as Lambda's `Runtime.ExitError` uses: `exit status 1`, `signal: killed`.
    pub fn describe(self) -> String {
        match self {
            Self::Code(c) => format!("exit status {c}"),
            Self::Signal(s) => format!("signal: {}", signal_name(s)),
            Self::Unknown => "exit status unknown".to_string(),
        }
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "killed".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGILL => "illegal instruction".into(),
        libc::SIGFPE => "floating point exception".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGPIPE => "broken pipe".into(),
        other => format!("signal {other}"),
    }
}

/// The end of a sandbox, with the accounting taken just before its cgroups were removed.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: ExitInfo,
    pub oom_killed: bool,
    pub memory_peak_bytes: Option<u64>,
}

/// A started sandbox.
pub struct Launched {
    /// Read end of the pipe that carries the runtime's stdout and stderr; non-blocking.
    pub output: OwnedFd,
    /// Resolves once the whole sandbox is gone.
    pub exited: oneshot::Receiver<Exit>,
    pub control: SandboxControl,
}

/// A handle to kill a sandbox and read its accounting.
#[derive(Clone)]
pub struct SandboxControl {
    kill: mpsc::Sender<()>,
    cgroup: Option<std::sync::Arc<cgroup::EnvCgroup>>,
}

impl SandboxControl {
    pub fn new(kill: mpsc::Sender<()>, cgroup: Option<std::sync::Arc<cgroup::EnvCgroup>>) -> Self {
        Self { kill, cgroup }
    }

    /// Ask for the sandbox to be killed; `exited` resolves when it is gone.
    pub fn kill(&self) {
        let _ = self.kill.try_send(());
    }

    /// Peak memory of the sandbox's process tree, where the host can measure it.
    pub fn memory_peak_bytes(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(|c| c.memory_peak_bytes())
    }

    /// Whether the kernel's OOM killer has acted inside this sandbox.
    pub fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_killed())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("bubblewrap (bwrap) was not found; install Debian's bubblewrap package")]
    NoBwrap,
    #[error("failed to prepare the sandbox: {0}")]
    Prepare(std::io::Error),
    #[error("failed to start the sandbox: {0}")]
    Spawn(std::io::Error),
}

/// A backend that starts isolated execution environments.
pub trait Sandbox: Send + Sync + 'static {
    /// Start the sandbox. Must be called from within a tokio runtime.
    fn launch(&self, spec: &SandboxSpec) -> Result<Launched, SandboxError>;

    /// A short name for logs and `quarters envs` (e.g. `bwrap`).
    fn name(&self) -> &'static str;

    /// Prepare the channel of a new environment's Runtime API (before [`Sandbox::launch`]).
    fn runtime_channel(&self, run_dir: &std::path::Path) -> Result<RuntimeChannel, SandboxError> {
        Ok(RuntimeChannel::Unix(run_dir.join(RAPI_SOCKET)))
    }
}

/// Create a pipe; the read end is non-blocking, both ends close on exec.
pub fn output_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(&r)?;
    Ok((r, w))
}

pub fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on an fd we own; F_GETFL/F_SETFL have no memory effects.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod init_tests {
    /// The embedded init is a static executable that runs where it is written.
    #[test]
    fn the_init_program_installs_and_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = super::install_init(dir.path()).expect("install");
        assert_eq!(path, dir.path().join(super::INIT_FILE));
        assert!(super::INIT_PROGRAM.starts_with(b"\x7fELF"));
        let out = std::process::Command::new(&path).output().expect("run");
        assert_eq!(out.status.code(), Some(126), "no command: a usage error");
    }
}

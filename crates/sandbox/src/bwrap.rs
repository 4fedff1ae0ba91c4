//! The bubblewrap backend.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::cgroup::{CgroupLayout, Limits};
use crate::seccomp::Filters;
use crate::{
    EXIT_FILE, Exit, ExitInfo, Launched, SANDBOX_RUN_DIR, Sandbox, SandboxControl, SandboxError, SandboxSpec,
    output_pipe,
};

/// The uid and gid a function runs as inside its user namespace (as Lambda's `sbx_user1051`).
pub const SANDBOX_UID: u32 = 993;
pub const SANDBOX_GID: u32 = 990;
/// Where our own binary is mounted inside the sandbox, to run as its init.
const INIT_PATH: &str = "/var/runtime/quarters-init";

#[derive(Debug, Clone)]
pub struct BwrapConfig {
    pub bwrap: PathBuf,
    /// This binary: it runs inside each sandbox in `sandbox-init` mode.
    pub init_exe: PathBuf,
    pub cgroups: CgroupLayout,
    pub pids_max: u32,
    /// Seccomp filters, a read-only root, and `no_new_privs`. Off only to measure their cost.
    pub hardening: bool,
}

impl BwrapConfig {
    /// Find `bwrap` on the usual paths.
    pub fn find_bwrap() -> Result<PathBuf, SandboxError> {
        ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(SandboxError::NoBwrap)
    }
}

pub struct BwrapSandbox {
    config: BwrapConfig,
    seccomp: Option<Filters>,
}

impl BwrapSandbox {
    pub fn new(config: BwrapConfig) -> Result<Self, SandboxError> {
        let seccomp = if config.hardening {
            Some(Filters::build().map_err(|e| SandboxError::Prepare(std::io::Error::other(e.to_string())))?)
        } else {
            None
        };
        Ok(Self { config, seccomp })
    }

    fn args(&self, spec: &SandboxSpec, seccomp_fds: &[i32]) -> Vec<String> {
        let mut a: Vec<String> = Vec::with_capacity(64 + 3 * spec.env.len());
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        push(&["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
        push(&["--uid", &SANDBOX_UID.to_string(), "--gid", &SANDBOX_GID.to_string()]);
        push(&["--hostname", "localhost"]);
        push(&["--ro-bind", "/usr", "/usr"]);
        push(&["--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib"]);
        push(&["--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin"]);
        for etc in ["/etc/ld.so.cache", "/etc/ssl", "/etc/ca-certificates", "/etc/alternatives", "/etc/localtime"] {
            push(&["--ro-bind-try", etc, etc]);
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        let tmp_bytes = u64::from(spec.tmp_mb) * 1024 * 1024;
        push(&["--size", &tmp_bytes.to_string(), "--tmpfs", "/tmp"]);
        push(&["--ro-bind", &path_str(&spec.task_dir), "/var/task"]);
        push(&["--ro-bind", &path_str(&self.config.init_exe), INIT_PATH]);
        push(&["--bind", &path_str(&spec.run_dir), SANDBOX_RUN_DIR]);
        push(&["--chdir", "/var/task", "--clearenv"]);
        for fd in seccomp_fds {
            push(&["--add-seccomp-fd", &fd.to_string()]);
        }
        if self.config.hardening {
            push(&["--remount-ro", "/"]);
        }
        for (k, v) in &spec.env {
            push(&["--setenv", k, v]);
        }
        push(&["--", INIT_PATH, "sandbox-init", "--"]);
        a.extend(spec.command.iter().cloned());
        a
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Sandbox for BwrapSandbox {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn launch(&self, spec: &SandboxSpec) -> Result<Launched, SandboxError> {
        let limits = Limits::for_memory(spec.memory_mb, self.config.pids_max);
        let cgroup = self.config.cgroups.create(spec.env_id, limits).map_err(SandboxError::Prepare)?.map(Arc::new);
        let (read, write) = output_pipe().map_err(SandboxError::Prepare)?;
        let write2: OwnedFd = write.try_clone().map_err(SandboxError::Prepare)?;

        let seccomp: Vec<OwnedFd> = match &self.seccomp {
            Some(f) => {
                f.programs.iter().map(|p| sealed_memfd(p)).collect::<Result<_, _>>().map_err(SandboxError::Prepare)?
            }
            None => Vec::new(),
        };
        let seccomp_fds: Vec<i32> = seccomp.iter().map(|f| f.as_raw_fd()).collect();
        let inherit = seccomp_fds.clone();
        let mut cmd = Command::new(&self.config.bwrap);
        cmd.args(self.args(spec, &seccomp_fds))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2));
        let attach: Vec<i32> = cgroup.as_ref().map(|c| c.attach_fds()).unwrap_or_default();
        // SAFETY: the closure runs between fork and exec in the child. It only calls write(2)
        // and fcntl(2) on fds that were opened before the fork and stay open until spawn
        // returns; both are async-signal-safe and the closure allocates nothing. Clearing
        // FD_CLOEXEC here affects only the child's copies, so no other spawn inherits them.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &attach {
                    if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for fd in &inherit {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn();
        drop(cmd); // closes our copies of the pipe's write end
        drop(seccomp);
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                if let Some(cg) = &cgroup {
                    cg.destroy();
                }
                return Err(SandboxError::Spawn(e));
            }
        };

        let (kill_tx, mut kill_rx) = mpsc::channel::<()>(1);
        let (exit_tx, exit_rx) = oneshot::channel();
        let exit_file = spec.run_dir.join(EXIT_FILE);
        let cg = cgroup.clone();
        let env_id = spec.env_id;
        tokio::spawn(async move {
            let status = tokio::select! {
                s = child.wait() => s,
                _ = kill_rx.recv() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            let recorded = tokio::fs::read_to_string(&exit_file).await.ok().and_then(|s| parse_exit_record(&s));
            let status = recorded.unwrap_or_else(|| match status {
                Ok(s) => exit_info(s),
                Err(_) => ExitInfo::Unknown,
            });
            let (oom_killed, memory_peak_bytes) = match &cg {
                Some(c) => (c.oom_killed(), c.memory_peak_bytes()),
                None => (false, None),
            };
            if let Some(c) = cg {
                let _ = tokio::task::spawn_blocking(move || c.destroy()).await;
            }
            tracing::debug!(env = %env_id, ?status, oom_killed, "sandbox ended");
            let _ = exit_tx.send(Exit { status, oom_killed, memory_peak_bytes });
        });
        let _ = read.as_raw_fd();
        Ok(Launched { output: read, exited: exit_rx, control: SandboxControl::new(kill_tx, cgroup) })
    }
}

/// A memfd holding `data`, positioned at its start, closed on exec unless cleared.
fn sealed_memfd(data: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::{Seek, Write};
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid NUL-terminated name; on success we own the new fd.
    let fd = unsafe { libc::memfd_create(c"quarters-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(data)?;
    file.rewind()?;
    Ok(file.into())
}

fn exit_info(status: std::process::ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => ExitInfo::Code(c),
        (None, Some(s)) => ExitInfo::Signal(s),
        _ => ExitInfo::Unknown,
    }
}

/// The init writes `code N` or `signal N` when the runtime ends.
pub(crate) fn parse_exit_record(s: &str) -> Option<ExitInfo> {
    let (kind, n) = s.trim().split_once(' ')?;
    let n: i32 = n.parse().ok()?;
    match kind {
        "code" => Some(ExitInfo::Code(n)),
        "signal" => Some(ExitInfo::Signal(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records() {
        assert_eq!(parse_exit_record("code 3\n"), Some(ExitInfo::Code(3)));
        assert_eq!(parse_exit_record("signal 9"), Some(ExitInfo::Signal(9)));
        assert_eq!(parse_exit_record("garbage"), None);
        assert_eq!(ExitInfo::Signal(9).describe(), "signal: killed");
        assert_eq!(ExitInfo::Code(1).describe(), "exit status 1");
    }
}

//! The bubblewrap backend.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;
use tokio::sync::{mpsc, oneshot};

use crate::cgroup::{CgroupLayout, Limits};
use crate::netns::NetnsFactory;
use crate::scratch::{NarrowView, ScratchDisk, ScratchDisks};
use crate::seccomp::Filters;
use crate::{
    EXIT_FILE, Exit, ExitInfo, Launched, RuntimeChannel, SANDBOX_RUN_DIR, Sandbox, SandboxControl, SandboxError,
    SandboxSpec, output_pipe,
};

/// The uid and gid a function runs as inside its user namespace (as Lambda's `sbx_user1051`).
pub const SANDBOX_UID: u32 = 993;
pub const SANDBOX_GID: u32 = 990;
/// Where our own binary is mounted inside the sandbox, to run as its init.
const INIT_PATH: &str = "/var/runtime/quarters-init";
/// Where the init is in a container image's sandbox (the image may have its own `/var`).
const IMAGE_INIT_PATH: &str = "/run/quarters-init";

#[derive(Debug, Clone)]
pub struct BwrapConfig {
    pub bwrap: PathBuf,
    /// The init program ([`crate::install_init`]): it runs inside each sandbox as `sandbox-init`.
    pub init_exe: PathBuf,
    pub cgroups: CgroupLayout,
    pub pids_max: u32,
    /// Seccomp filters, a read-only root, and `no_new_privs`. Off only to measure their cost.
    pub hardening: bool,
}

/// The host's part of a sandbox's root when it has no image: `/usr` (read-only), the usual links
/// into it, and the few `/etc` files programs need.
#[rustfmt::skip]
const HOST_ROOT_ARGS: &[&str] = &[
    "--ro-bind", "/usr", "/usr",
    "--symlink", "usr/bin", "/bin",
    "--symlink", "usr/lib", "/lib",
    "--symlink", "usr/lib64", "/lib64",
    "--symlink", "usr/sbin", "/sbin",
    "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
    "--ro-bind-try", "/etc/ssl", "/etc/ssl",
    "--ro-bind-try", "/etc/ca-certificates", "/etc/ca-certificates",
    "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
    "--ro-bind-try", "/etc/localtime", "/etc/localtime",
];

/// A one-off job in a sandbox of its own, for work on untrusted input outside any environment
/// (say, compiling a code package): new namespaces (no network), no capabilities, the host's
/// root as environments see it, a private `/tmp`, and `dir` bound read-write at `at` (also the
/// working directory). The caller appends `--`, the program and its arguments. Not tied to the
/// spawning thread (no `--die-with-parent`: it may be a transient one); the caller bounds it.
pub fn one_off_job(dir: &Path, at: &str) -> Result<std::process::Command, SandboxError> {
    let mut cmd = std::process::Command::new(BwrapConfig::find_bwrap()?);
    cmd.args(["--unshare-all", "--new-session", "--cap-drop", "ALL"])
        .args(HOST_ROOT_ARGS)
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind"])
        .arg(dir)
        .args([at, "--chdir", at, "--clearenv"]);
    Ok(cmd)
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
    /// Where each sandbox's `/tmp` comes from; without it, a tmpfs (charged to the sandbox's
    /// memory cgroup).
    scratch: Option<Arc<ScratchDisks>>,
    netns: Option<Arc<NetnsFactory>>,
}

impl BwrapSandbox {
    pub fn new(config: BwrapConfig) -> Result<Self, SandboxError> {
        let seccomp = if config.hardening {
            Some(Filters::build().map_err(|e| SandboxError::Prepare(std::io::Error::other(e.to_string())))?)
        } else {
            None
        };
        Ok(Self { config, seccomp, scratch: None, netns: None })
    }

    /// Give every sandbox its own scratch disk of `SandboxSpec::tmp_mb` as `/tmp`, instead of a
    /// tmpfs of that size, so that `/tmp` does not count against the function's memory.
    /// Run each sandbox in a network namespace the platform made, with the Runtime API
    /// listener already inside it (no relay).
    pub fn with_netns(mut self, factory: Arc<NetnsFactory>) -> Self {
        self.netns = Some(factory);
        self
    }

    pub fn with_scratch(mut self, disks: Arc<ScratchDisks>) -> Self {
        self.scratch = Some(disks);
        self
    }

    /// bwrap's arguments. `tmp` is the host directory to bind at `/tmp`; without one, `/tmp` is
    /// a tmpfs of `spec.tmp_mb`.
    fn args(&self, spec: &SandboxSpec, seccomp_fds: &[i32], tmp: Option<&Path>) -> Vec<String> {
        let mut a: Vec<String> = Vec::with_capacity(64 + 3 * spec.env.len());
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        if spec.netns.is_some() {
            // The network namespace is the one made for this environment (entered before exec).
            push(&["--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]);
        } else {
            push(&["--unshare-all"]);
        }
        push(&["--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
        push(&["--uid", &SANDBOX_UID.to_string(), "--gid", &SANDBOX_GID.to_string()]);
        push(&["--hostname", "localhost"]);
        match &spec.root {
            // A container image: its own tree, read-only, in place of the host's.
            Some(root) => {
                for (name, link) in image_top_level(root) {
                    let inside = format!("/{name}");
                    match link {
                        Some(target) => push(&["--symlink", &target, &inside]),
                        None => push(&["--ro-bind", &path_str(&root.join(&name)), &inside]),
                    }
                }
            }
            None => push(HOST_ROOT_ARGS),
        }
        push(&["--proc", "/proc", "--dev", "/dev"]);
        match tmp {
            Some(dir) => push(&["--bind", &path_str(dir), "/tmp"]),
            None => {
                let tmp_bytes = u64::from(spec.tmp_mb) * 1024 * 1024;
                push(&["--size", &tmp_bytes.to_string(), "--tmpfs", "/tmp"]);
            }
        }
        // An image brings its code (and may have its own /var); our init then lives in /run.
        let init_path = if spec.root.is_some() { IMAGE_INIT_PATH } else { INIT_PATH };
        if spec.root.is_none() {
            push(&["--ro-bind", &path_str(&spec.task_dir), "/var/task"]);
        }
        for (host, inside) in &spec.ro_binds {
            push(&["--ro-bind", &path_str(host), inside]);
        }
        push(&["--ro-bind", &path_str(&self.config.init_exe), init_path]);
        push(&["--bind", &path_str(&spec.run_dir), SANDBOX_RUN_DIR]);
        push(&["--chdir", spec.workdir.as_deref().unwrap_or("/var/task"), "--clearenv"]);
        for fd in seccomp_fds {
            push(&["--add-seccomp-fd", &fd.to_string()]);
        }
        if self.config.hardening {
            push(&["--remount-ro", "/"]);
        }
        for (k, v) in &spec.env {
            push(&["--setenv", k, v]);
        }
        if spec.netns.is_some() {
            push(&["--", init_path, "sandbox-init", "--direct", "--"]);
        } else {
            push(&["--", init_path, "sandbox-init", "--"]);
        }
        a.extend(spec.command.iter().cloned());
        a
    }
}

/// The top-level entries of an image's root to mount (with a symbolic link's target), leaving
/// out what the sandbox provides itself.
fn image_top_level(root: &Path) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "proc" | "dev" | "tmp" | "run" | "sys") {
            continue;
        }
        let link = match e.file_type() {
            Ok(t) if t.is_symlink() => match std::fs::read_link(e.path()) {
                Ok(target) => Some(target.to_string_lossy().into_owned()),
                Err(_) => continue,
            },
            Ok(_) => None,
            Err(_) => continue,
        };
        out.push((name, link));
    }
    out.sort();
    out
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Sandbox for BwrapSandbox {
    fn name(&self) -> &'static str {
        "bwrap"
    }

    fn runtime_channel(&self, run_dir: &Path) -> Result<RuntimeChannel, SandboxError> {
        match &self.netns {
            Some(f) => {
                let p = f.take().map_err(SandboxError::Prepare)?;
                Ok(RuntimeChannel::Netns { listener: p.listener, netns: p.netns, relay: Some(p.relay) })
            }
            None => Ok(RuntimeChannel::Unix(run_dir.join(crate::RAPI_SOCKET))),
        }
    }

    fn launch(&self, spec: &SandboxSpec) -> Result<Launched, SandboxError> {
        let limits = Limits::for_memory(spec.memory_mb, self.config.pids_max);
        let cgroup = self.config.cgroups.create(spec.env_id, limits).map_err(SandboxError::Prepare)?.map(Arc::new);
        // Until the sandbox runs, a failure must undo the cgroups (the scratch disk, if any,
        // is released by its drop).
        let undo = |e: std::io::Error| {
            if let Some(cg) = &cgroup {
                cg.destroy();
            }
            e
        };
        let scratch: Option<ScratchDisk> = match &self.scratch {
            // Blocking, but only a mkdir and a move_mount when a spare disk is ready.
            Some(disks) => Some(disks.attach(spec.env_id, spec.tmp_mb).map_err(|e| SandboxError::Prepare(undo(e)))?),
            None => None,
        };
        let view: Option<NarrowView> = match (&self.scratch, &scratch) {
            (Some(disks), Some(disk)) => {
                Some(NarrowView::new(disks, disk).map_err(|e| SandboxError::Prepare(undo(e)))?)
            }
            _ => None,
        };
        let (read, write) = output_pipe().map_err(|e| SandboxError::Prepare(undo(e)))?;
        let write2: OwnedFd = write.try_clone().map_err(|e| SandboxError::Prepare(undo(e)))?;

        let seccomp: Vec<OwnedFd> = match &self.seccomp {
            Some(f) => f
                .programs
                .iter()
                .map(|p| sealed_memfd(p))
                .collect::<Result<_, _>>()
                .map_err(|e| SandboxError::Prepare(undo(e)))?,
            None => Vec::new(),
        };
        let seccomp_fds: Vec<i32> = seccomp.iter().map(|f| f.as_raw_fd()).collect();
        // The arguments go through a memfd (`--args FD`), so that the sandbox's own `ps` does
        // not show host paths or the environment variables of bwrap's command line.
        // (bwrap takes options from the fd; the command after `--` stays on the command line.)
        // With the narrowed view, the disk is at the scratch directory's own path.
        let tmp_path = view.as_ref().map(|v| PathBuf::from(std::ffi::OsStr::from_bytes(v.path().to_bytes())));
        let all = self.args(spec, &seccomp_fds, tmp_path.as_deref());
        let split = all.iter().position(|a| a == "--").unwrap_or(all.len());
        let (options, command) = all.split_at(split);
        let mut packed = Vec::new();
        for a in options {
            packed.extend_from_slice(a.as_bytes());
            packed.push(0);
        }
        let args_fd = sealed_memfd(&packed).map_err(|e| SandboxError::Prepare(undo(e)))?;
        let mut inherit = seccomp_fds.clone();
        inherit.push(args_fd.as_raw_fd());
        let mut cmd = Command::new(&self.config.bwrap);
        cmd.arg("--args")
            .arg(args_fd.as_raw_fd().to_string())
            .args(command)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2));
        let attach: Vec<i32> = cgroup.as_ref().map(|c| c.attach_fds()).unwrap_or_default();
        let netns_fd: i32 = spec.netns.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let view = view.map(Arc::new);
        let child_view = view.clone();
        // SAFETY: the closure runs between fork and exec in the child. It only calls write(2),
        // setns(2), fcntl(2) and (NarrowView::enter) unshare, mount, open_tree, umount2,
        // move_mount and close, on fds and strings made before the fork that stay alive until
        // spawn returns (`spec` and `view` outlive the spawn); it allocates nothing. Clearing
        // FD_CLOEXEC and entering the namespaces affect only the child, so no other spawn
        // inherits either.
        unsafe {
            cmd.pre_exec(move || {
                if netns_fd >= 0 && libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(v) = &child_view {
                    v.enter()?;
                }
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
        drop(cmd); // closes our copies of the pipe's write end (and the child's view)
        drop(view);
        drop(seccomp);
        drop(args_fd);
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return Err(SandboxError::Spawn(undo(e))),
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
                    // Kill the sandbox from the inside first, so its outer bwrap reaps it.
                    let inside = match (&cg, child.id()) {
                        (Some(c), Some(pid)) => {
                            let c = c.clone();
                            let _ = tokio::task::spawn_blocking(move || c.kill_except(pid)).await;
                            true
                        }
                        _ => false,
                    };
                    match tokio::time::timeout(std::time::Duration::from_secs(if inside { 3 } else { 0 }), child.wait()).await {
                        Ok(s) => s,
                        Err(_) => {
                            let _ = child.start_kill();
                            child.wait().await
                        }
                    }
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
            // The cgroups first: destroying them kills and waits out any straggler, so that
            // nothing uses the scratch disk when it is unmounted.
            if cg.is_some() || scratch.is_some() {
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(c) = cg {
                        c.destroy();
                    }
                    drop(scratch);
                })
                .await;
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
    let fd = unsafe { libc::memfd_create(c"quarters-bwrap".as_ptr(), libc::MFD_CLOEXEC) };
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

    /// A real sandbox in a 128 MB memory cgroup, with `/tmp` of 512 MB, running `script`
    /// under `/bin/sh`; with or without a scratch disk. Returns its output and how it ended.
    async fn run_in_sandbox(scratch: bool, script: &str) -> (String, Exit) {
        use std::io::Read;
        use std::os::unix::fs::PermissionsExt;

        use crate::scratch::ScratchConfig;

        let dir = tempfile::tempdir().expect("tempdir");
        // Stands in for `quarters sandbox-init`: drop its `sandbox-init --` and run the command.
        let init = dir.path().join("init");
        std::fs::write(&init, "#!/bin/sh\nshift 2\nexec \"$@\"\n").expect("init");
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let (task_dir, run_dir) = (dir.path().join("task"), dir.path().join("run"));
        std::fs::create_dir(&task_dir).expect("task");
        std::fs::create_dir(&run_dir).expect("run");
        let instance = format!("test-{}", hex::encode(rand::random::<[u8; 6]>()));
        let cgroups = CgroupLayout::detect(&instance);
        assert!(
            matches!(&cgroups, CgroupLayout::V1 { memory: Some(_), .. } | CgroupLayout::V2 { .. }),
            "needs root and a memory cgroup"
        );
        let config = BwrapConfig {
            bwrap: BwrapConfig::find_bwrap().expect("bwrap"),
            init_exe: init,
            cgroups: cgroups.clone(),
            pids_max: 64,
            hardening: true,
        };
        let mut sandbox = BwrapSandbox::new(config).expect("sandbox");
        let disks = scratch.then(|| {
            let config = ScratchConfig { dir: dir.path().join("scratch"), spares: 1, warm_sizes: vec![512] };
            Arc::new(ScratchDisks::new(config).expect("scratch disks"))
        });
        if let Some(d) = &disks {
            sandbox = sandbox.with_scratch(d.clone());
        }
        let spec = SandboxSpec {
            env_id: quarters_types::EnvId::from_random(rand::random()),
            task_dir,
            run_dir,
            env: vec![("PATH".into(), "/usr/bin".into())],
            memory_mb: 128,
            tmp_mb: 512,
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ro_binds: Vec::new(),
            root: None,
            workdir: None,
            netns: None,
        };
        let launched = sandbox.launch(&spec).expect("launch");
        let exit = tokio::time::timeout(std::time::Duration::from_secs(120), launched.exited)
            .await
            .expect("the sandbox ends")
            .expect("exit");
        let mut output = Vec::new();
        let mut pipe = std::fs::File::from(launched.output);
        let _ = pipe.read_to_end(&mut output);
        if let Some(d) = &disks {
            let mount = d.dir().join(spec.env_id.to_string());
            assert!(!mount.exists(), "the scratch disk is released when the sandbox ends");
        }
        for parent in cgroups.parents() {
            let _ = std::fs::remove_dir(parent);
        }
        (String::from_utf8_lossy(&output).into_owned(), exit)
    }

    const FILL_TMP: &str = "id -u; stat -c '%u %a' /tmp; dd if=/dev/zero of=/tmp/f bs=1M count=600; \
                            echo dd=$?; stat -c 'size=%s' /tmp/f";

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tmp_on_a_scratch_disk_fills_to_enospc_without_an_oom_kill() {
        let (out, exit) = run_in_sandbox(true, FILL_TMP).await;
        eprintln!("{out}{exit:?}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("993"), "{out}");
        // Host root owns the disk's root, and the user namespace maps host root to the sandbox
        // user: /tmp is the sandbox user's, and world-writable anyway.
        assert_eq!(lines.next(), Some("993 1777"), "{out}");
        assert!(out.contains("No space left on device"), "{out}");
        assert!(out.contains("dd=1"), "{out}");
        let size: u64 =
            out.lines().find_map(|l| l.strip_prefix("size=")).and_then(|s| s.parse().ok()).expect("the file's size");
        assert!((500..=512).contains(&(size >> 20)), "ENOSPC after {} MiB", size >> 20);
        assert!(!exit.oom_killed, "{exit:?}");
        assert_eq!(exit.status, ExitInfo::Code(0));
    }

    /// The problem the scratch disk solves (and proof that the memory limit is in force): a
    /// tmpfs `/tmp` is charged to the sandbox's memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tmp_on_a_tmpfs_counts_against_memory() {
        let (out, exit) = run_in_sandbox(false, FILL_TMP).await;
        assert!(exit.oom_killed, "{out}{exit:?}");
    }
}

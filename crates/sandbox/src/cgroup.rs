//! Per-environment cgroups, on cgroup v1 (and hybrid hosts) and on pure cgroup v2.
//!
//! Every environment gets one cgroup per controller, named by its [`EnvId`] under a parent
//! named for this server instance (`quarters-<instance>`), never by anything a tenant chose.
//! The sandbox enters its cgroups between fork and exec (see [`EnvCgroup::attach_fds`]), so
//! everything it ever starts is accounted and limited.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use quarters_types::EnvId;

const ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup layout the host has, and where this instance's parents are.
#[derive(Debug, Clone)]
pub enum CgroupLayout {
    /// v1 controllers (possibly beside a controller-less v2 mount).
    V1 { memory: Option<PathBuf>, pids: Option<PathBuf>, cpu: Option<PathBuf> },
    /// Pure v2 with the memory and pids controllers available.
    V2 { parent: PathBuf },
    /// No usable cgroups (not root, or nothing mounted): run without limits or accounting.
    None,
}

/// Limits for one environment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: u64,
    pub pids: u32,
    /// CPU weight relative to other environments, proportional to memory (Lambda gives one
    /// vCPU per 1,769 MB): v1 `cpu.shares` (1024 = one default share).
    pub cpu_shares: u64,
}

impl Limits {
    /// Limits for a function of `memory_mb`.
    pub fn for_memory(memory_mb: u32, pids: u32) -> Self {
        let mb = u64::from(memory_mb);
        Self { memory_bytes: mb * 1024 * 1024, pids, cpu_shares: (mb * 1024 / 1769).max(2) }
    }

    /// The v2 `cpu.weight` equivalent of the v1 shares (100 = 1024 shares).
    fn cpu_weight(&self) -> u64 {
        (self.cpu_shares * 100 / 1024).clamp(1, 10_000)
    }
}

impl CgroupLayout {
    /// Find the layout and make this instance's parent cgroups. `instance` must be a safe name.
    pub fn detect(instance: &str) -> Self {
        match Self::try_detect(instance) {
            Ok(layout) => layout,
            Err(e) => {
                tracing::warn!(error = %e, "cgroups unavailable: environments run without memory limits or accounting");
                Self::None
            }
        }
    }

    fn try_detect(instance: &str) -> io::Result<Self> {
        let leaf = format!("quarters-{instance}");
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let v2_controllers = fs::read_to_string(Path::new(ROOT).join("cgroup.controllers")).unwrap_or_default();
        if v2_controllers.split_whitespace().any(|c| c == "memory") {
            // Pure v2: controllers must be enabled top-down, and a cgroup with controllers
            // enabled for its children may hold no processes, so use a sibling of the root.
            let parent = Path::new(ROOT).join(&leaf);
            enable_controllers(Path::new(ROOT))?;
            fs::create_dir_all(&parent)?;
            enable_controllers(&parent)?;
            return Ok(Self::V2 { parent });
        }
        let mut memory = None;
        let mut pids = None;
        let mut cpu = None;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
            for c in controllers.split(',') {
                let slot = match c {
                    "memory" => &mut memory,
                    "pids" => &mut pids,
                    "cpu" => &mut cpu,
                    _ => continue,
                };
                let dir = Path::new(ROOT).join(c).join(path.trim_start_matches('/')).join(&leaf);
                match fs::create_dir_all(&dir) {
                    Ok(()) => *slot = Some(dir),
                    Err(e) => {
                        tracing::warn!(controller = c, error = %e, "cannot create cgroup parent")
                    }
                }
            }
        }
        if memory.is_none() && pids.is_none() {
            return Err(io::Error::other("no v1 memory or pids controller is writable"));
        }
        Ok(Self::V1 { memory, pids, cpu })
    }

    /// Make moving processes between cgroups cheap, as a platform that puts every new sandbox
    /// in its own cgroups needs: remount a cgroup hierarchy with `favordynmods`.
    ///
    /// Without it, every migration (our sandbox entering its cgroups between fork and exec)
    /// takes the kernel's global `cgroup_threadgroup_rwsem` for writing, which waits for an RCU
    /// grace period: 8–16 ms per new environment on our machines, most of a cold start. With
    /// it, the lock stays in its slow-reader mode and a migration costs microseconds, at the
    /// price of slightly slower fork and exit for every process (the kernel's documented
    /// trade-off). The switch is global, so one hierarchy is enough: the v2 mount if there is
    /// one (hybrid and pure v2 hosts), else a v1 hierarchy. Returns where it was set, or `None`
    /// when it already was; an error leaves the host as it was.
    pub fn favor_dynamic_modifications(&self) -> io::Result<Option<PathBuf>> {
        if matches!(self, Self::None) {
            return Ok(None);
        }
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(CgroupMount::parse).collect();
        if mounts.iter().any(|m| m.super_options.iter().any(|o| o == "favordynmods")) {
            return Ok(None);
        }
        let Some(target) = mounts
            .iter()
            .find(|m| m.v2)
            .or_else(|| mounts.iter().find(|m| m.super_options.iter().any(|o| o == "memory" || o == "pids")))
        else {
            return Err(io::Error::other("no cgroup hierarchy is mounted"));
        };
        target.remount_with("favordynmods")?;
        Ok(Some(target.path.clone()))
    }

    pub(crate) fn parents(&self) -> Vec<PathBuf> {
        match self {
            Self::V1 { memory, pids, cpu } => memory.iter().chain(pids.iter()).chain(cpu.iter()).cloned().collect(),
            Self::V2 { parent } => vec![parent.clone()],
            Self::None => Vec::new(),
        }
    }

    /// Remove this instance's (empty) parent cgroups, when the server stops.
    pub fn remove_parents(&self) {
        for parent in self.parents() {
            let _ = fs::remove_dir(&parent);
        }
    }

    /// Kill every process left in this instance's cgroups (by a crash or `kill -9` of an
    /// earlier server) and remove the cgroups. Returns how many cgroups were removed.
    pub fn remove_leftovers(&self) -> usize {
        let mut removed = 0;
        for parent in self.parents() {
            let Ok(entries) = fs::read_dir(&parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_dir() || EnvId::parse_hex(&entry.file_name().to_string_lossy()).is_none() {
                    continue;
                }
                kill_all(&path);
                if remove_dir_retrying(&path) {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Make the cgroups of one environment and set its limits.
    pub fn create(&self, env: EnvId, limits: Limits) -> io::Result<Option<EnvCgroup>> {
        let name = env.to_string();
        let mut cg = EnvCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            memory: None,
            v2: false,
            peak: std::sync::OnceLock::new(),
        };
        match self {
            Self::None => return Ok(None),
            Self::V1 { memory, pids, cpu } => {
                if let Some(parent) = memory {
                    let dir = cg.make(parent.join(&name))?;
                    write(&dir.join("memory.limit_in_bytes"), &limits.memory_bytes.to_string())?;
                    // Keep the kernel from swapping a tenant's memory out behind our back.
                    let _ = write(&dir.join("memory.swappiness"), "0");
                    cg.memory = Some(dir);
                }
                if let Some(parent) = pids {
                    let dir = cg.make(parent.join(&name))?;
                    write(&dir.join("pids.max"), &limits.pids.to_string())?;
                }
                if let Some(parent) = cpu {
                    let dir = cg.make(parent.join(&name))?;
                    write(&dir.join("cpu.shares"), &limits.cpu_shares.to_string())?;
                }
            }
            Self::V2 { parent } => {
                let dir = cg.make(parent.join(&name))?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0");
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                let _ = write(&dir.join("cpu.weight"), &limits.cpu_weight().to_string());
                cg.memory = Some(dir);
                cg.v2 = true;
            }
        }
        Ok(Some(cg))
    }
}

fn enable_controllers(dir: &Path) -> io::Result<()> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
    let wanted: Vec<String> = ["memory", "pids", "cpu"]
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// SIGKILL every process in a cgroup until it is empty (bounded).
fn kill_all(dir: &Path) {
    let kill_file = dir.join("cgroup.kill");
    if kill_file.exists() {
        let _ = write(&kill_file, "1");
    }
    for _ in 0..50 {
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory effects; a stale pid at worst gets ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remove_dir_retrying(dir: &Path) -> bool {
    for _ in 0..100 {
        match fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    tracing::warn!(path = %dir.display(), "cgroup still busy; left in place");
    false
}

/// The cgroups of one environment.
#[derive(Debug)]
pub struct EnvCgroup {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each dir, opened for writing before the fork.
    procs: Vec<OwnedFd>,
    memory: Option<PathBuf>,
    v2: bool,
    /// The memory peak file, opened at its first read and read again from offset 0 after every
    /// invocation (for REPORT's Max Memory Used), instead of an open, read and close each time.
    peak: std::sync::OnceLock<Option<fs::File>>,
}

impl EnvCgroup {
    fn make(&mut self, dir: PathBuf) -> io::Result<PathBuf> {
        fs::create_dir(&dir)?;
        self.dirs.push(dir.clone());
        let procs = fs::OpenOptions::new().write(true).open(dir.join("cgroup.procs"))?;
        self.procs.push(procs.into());
        Ok(dir)
    }

    /// The fds a child writes `0` to between fork and exec, to enter the cgroups.
    pub fn attach_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    pub fn memory_peak_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let file = self
            .peak
            .get_or_init(|| {
                let dir = self.memory.as_ref()?;
                fs::File::open(dir.join(if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" })).ok()
            })
            .as_ref()?;
        let mut buf = [0u8; 32];
        let n = file.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(buf.get(..n)?).ok()?.trim().parse().ok()
    }

    pub fn oom_killed(&self) -> bool {
        let Some(dir) = self.memory.as_ref() else {
            return false;
        };
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = fs::read_to_string(dir.join(file)).unwrap_or_default();
        text.lines().filter_map(|l| l.strip_prefix("oom_kill ")).any(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// SIGKILL every process of the environment except `keep` (the outer bwrap, which then
    /// reaps the sandbox's pid 1 and exits, so no zombie is left for the host's init to reap
    /// while it still pins the cgroup).
    pub fn kill_except(&self, keep: u32) {
        let Some(dir) = self.dirs.first() else { return };
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if pid as u32 != keep {
                // SAFETY: kill(2) has no memory effects; a stale pid at worst gets ESRCH.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Kill whatever is left and remove the cgroups. Blocking; call off the async workers.
    pub fn destroy(&self) {
        for dir in &self.dirs {
            kill_all(dir);
            remove_dir_retrying(dir);
        }
    }
}

/// One cgroup mount, from a line of `/proc/self/mountinfo`.
#[derive(Debug, PartialEq)]
struct CgroupMount {
    path: PathBuf,
    v2: bool,
    /// Per-mount options (`rw`, `nosuid`, `relatime`...).
    mount_options: Vec<String>,
    /// The file system's own options (`rw`, `nsdelegate`, `memory`...).
    super_options: Vec<String>,
}

impl CgroupMount {
    /// `36 25 0:31 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory`
    fn parse(line: &str) -> Option<Self> {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let (path, mount_options) = (fields.get(4)?, fields.get(5)?);
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let super_options = right.nth(1).unwrap_or("");
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        let split = |s: &str| s.split(',').filter(|o| !o.is_empty()).map(str::to_owned).collect();
        Some(Self {
            path: crate::scratch::unescape_mount_path(path),
            v2,
            mount_options: split(mount_options),
            super_options: split(super_options),
        })
    }

    /// Remount with the same options plus `option`. A remount reconfigures the file system
    /// from the options given, so the current ones are all passed again.
    fn remount_with(&self, option: &str) -> io::Result<()> {
        use std::ffi::CString;
        let mut flags: libc::c_ulong = libc::MS_REMOUNT;
        for o in &self.mount_options {
            flags |= match o.as_str() {
                "ro" => libc::MS_RDONLY,
                "nosuid" => libc::MS_NOSUID,
                "nodev" => libc::MS_NODEV,
                "noexec" => libc::MS_NOEXEC,
                "relatime" => libc::MS_RELATIME,
                "noatime" => libc::MS_NOATIME,
                "nodiratime" => libc::MS_NODIRATIME,
                _ => 0,
            };
        }
        let mut data: Vec<&str> =
            self.super_options.iter().map(String::as_str).filter(|o| !matches!(*o, "rw" | "ro")).collect();
        data.push(option);
        let target = CString::new(self.path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
        let data = CString::new(data.join(",")).map_err(io::Error::other)?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call; a remount changes
        // only the options of the cgroup file system at `target`.
        let rc =
            unsafe { libc::mount(std::ptr::null(), target.as_ptr(), std::ptr::null(), flags, data.as_ptr().cast()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let v1 = "36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid,relatime shared:9 - cgroup cgroup rw,memory";
        assert_eq!(
            CgroupMount::parse(v1),
            Some(CgroupMount {
                path: "/sys/fs/cgroup/memory".into(),
                v2: false,
                mount_options: vec!["rw".into(), "nosuid".into(), "relatime".into()],
                super_options: vec!["rw".into(), "memory".into()],
            })
        );
        let v2 = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 \
                  rw,nsdelegate,memory_recursiveprot";
        let m = CgroupMount::parse(v2).expect("v2");
        assert!(m.v2);
        assert_eq!(m.super_options, ["rw", "nsdelegate", "memory_recursiveprot"]);
        let other = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw";
        assert_eq!(CgroupMount::parse(other), None);
        assert_eq!(crate::scratch::unescape_mount_path("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
    }

    /// On a host with cgroups (root), the switch is set, or was already.
    #[test]
    fn favordynmods_is_set_once() {
        let layout = CgroupLayout::detect(&format!("test-{}", std::process::id()));
        if matches!(layout, CgroupLayout::None) {
            eprintln!("no cgroups here");
            return;
        }
        layout.favor_dynamic_modifications().expect("remount");
        let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            info.lines().filter_map(CgroupMount::parse).any(|m| m.super_options.iter().any(|o| o == "favordynmods"))
        );
        assert_eq!(layout.favor_dynamic_modifications().expect("again"), None);
        for p in layout.parents() {
            let _ = fs::remove_dir(p);
        }
    }
}

//! What the sandboxes of a server cost in memory, read from `/proc` and the cgroup files.
//!
//! The server's environments are its child processes: each is an outer `bwrap` (in the host's
//! pid namespace), which forks the inner `bwrap` (pid 1 of the sandbox), which starts our init
//! (`/var/runtime/quarters-init sandbox-init`, pid 2), which starts the function's runtime. The
//! platform's own memory per environment is that of the two `bwrap`s and the init; the runtime's
//! is the function's. Everything here is read as root (PSS of processes in other user
//! namespaces needs it) and tolerates processes that end while they are read.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

/// The kernel stack of one thread (`THREAD_SIZE` on x86-64 and arm64 without KASAN): what
/// `KernelStack` in `/proc/meminfo` grows by per thread.
pub const KERNEL_STACK_KB: u64 = 16;

/// Where the init is mounted in every sandbox, and the mode it runs in.
const INIT_ARGV0: &str = "/var/runtime/quarters-init";
const INIT_ARGV1: &str = "sandbox-init";

/// One process of the process table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    pub ppid: u32,
    pub threads: u32,
}

/// `ppid` and `num_threads` from the text of `/proc/<pid>/stat`. The command name (field 2)
/// may hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<Proc> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (3), ppid (4), ..., num_threads (20).
    Some(Proc { ppid: f.get(1)?.parse().ok()?, threads: f.get(17)?.parse().ok()? })
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`: the CPU time of every
/// thread the process has had, ended ones included.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime (14) and stime (15), counted from state (3).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The CPU time a process has used (all its threads, ended ones included), in milliseconds, to
/// the resolution of a clock tick (10 ms): for long-running processes like the server.
pub fn process_cpu_ms(pid: u32) -> Option<f64> {
    let ticks = parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // SAFETY: sysconf has no preconditions; it reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks as f64 * 1000.0 / hz as f64)
}

/// The CPU time of a process's live threads, in nanoseconds (the first field of each thread's
/// `schedstat`): precise, for short-lived processes that have not ended threads.
pub fn threads_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// How many file descriptors a process has open (0 when it is gone).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Every process now: pid -> (ppid, threads).
pub fn process_table() -> Result<HashMap<u32, Proc>> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Some(p) = std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(parse_stat) {
            out.insert(pid, p);
        }
    }
    Ok(out)
}

/// The direct children of `pid`, ascending.
pub fn children(table: &HashMap<u32, Proc>, pid: u32) -> Vec<u32> {
    let mut v: Vec<u32> = table.iter().filter(|(_, p)| p.ppid == pid).map(|(c, _)| *c).collect();
    v.sort_unstable();
    v
}

/// `root` and everything below it.
pub fn subtree(table: &HashMap<u32, Proc>, root: u32) -> Vec<u32> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, p) in table {
        kids.entry(p.ppid).or_default().push(*pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        if let Some(k) = kids.get(&out[i]) {
            out.extend(k.iter().copied().filter(|c| *c != root));
        }
        i += 1;
    }
    out
}

/// What a process of an environment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Bwrap,
    Init,
    Runtime,
}

/// The role of a process from its NUL-separated command line and its `comm`.
pub fn classify(cmdline: &[u8], comm: &str) -> Role {
    let mut argv = cmdline.split(|b| *b == 0).map(|a| std::str::from_utf8(a).unwrap_or(""));
    let argv0 = argv.next().unwrap_or("");
    let argv1 = argv.next().unwrap_or("");
    if argv0 == INIT_ARGV0 && argv1 == INIT_ARGV1 {
        Role::Init
    } else if comm.trim() == "bwrap" || Path::new(argv0).file_name().is_some_and(|n| n == "bwrap") {
        Role::Bwrap
    } else {
        Role::Runtime
    }
}

/// Memory of one process (or a sum of them), in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub processes: u64,
    pub threads: u64,
    pub rss: u64,
    pub pss: u64,
    pub pss_anon: u64,
    pub pss_file: u64,
    /// Page tables (`VmPTE`).
    pub pte: u64,
    /// CPU time of its live threads (ns).
    pub cpu_ns: u64,
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.processes += o.processes;
        self.threads += o.threads;
        self.rss += o.rss;
        self.pss += o.pss;
        self.pss_anon += o.pss_anon;
        self.pss_file += o.pss_file;
        self.pte += o.pte;
        self.cpu_ns += o.cpu_ns;
    }

    /// What the process holds that `/proc/meminfo` counts in AnonPages, PageTables and
    /// KernelStack: its anonymous pages (its share of them), page tables and threads' stacks.
    pub fn kernel_counted_kb(&self) -> u64 {
        self.pss_anon + self.pte + self.threads * KERNEL_STACK_KB
    }

    pub fn to_json(self, per: f64) -> Value {
        let per = |kb: u64| mib(kb as f64 / per);
        json!({
            "processes": self.processes,
            "threads": self.threads,
            "rss_kib": self.rss,
            "pss_kib": self.pss,
            "pss_anon_kib": self.pss_anon,
            "pss_file_kib": self.pss_file,
            "page_tables_kib": self.pte,
            "cpu_ms": (self.cpu_ns as f64 / 1e4).round() / 100.0,
            "per_env_mib": {
                "pss": per(self.pss),
                "pss_anon": per(self.pss_anon),
                "pss_file": per(self.pss_file),
                "page_tables": per(self.pte),
                "kernel_stacks": per(self.threads * KERNEL_STACK_KB),
            },
        })
    }
}

/// The value in KiB of `key:` in text of the `/proc/<pid>/status` or `smaps_rollup` form.
pub fn field_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.split_whitespace().next()?.parse().ok())?
    })
}

/// A process's usage from the texts of its `smaps_rollup` and `status`.
pub fn parse_usage(smaps_rollup: &str, status: &str) -> Usage {
    let s = |k| field_kb(smaps_rollup, k).unwrap_or(0);
    Usage {
        processes: 1,
        threads: field_kb(status, "Threads").unwrap_or(1),
        rss: s("Rss"),
        pss: s("Pss"),
        pss_anon: s("Pss_Anon"),
        pss_file: s("Pss_File"),
        pte: field_kb(status, "VmPTE").unwrap_or(0),
        cpu_ns: 0,
    }
}

/// A process's usage, or None when it is gone or unreadable.
pub fn usage_of(pid: u32) -> Option<Usage> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let rollup = std::fs::read_to_string(dir.join("smaps_rollup")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    Some(Usage { cpu_ns: threads_cpu_ns(pid), ..parse_usage(&rollup, &status) })
}

/// `RssAnon` of a process (KiB), 0 for kernel threads and processes that are gone.
pub fn rss_anon_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| field_kb(&s, "RssAnon")).unwrap_or(0)
}

/// The lines of `/proc/meminfo` a sandbox's kernel side shows in, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub anon_pages: u64,
    pub page_tables: u64,
    pub kernel_stack: u64,
    pub sunreclaim: u64,
    pub shmem: u64,
    pub mem_available: u64,
}

impl Meminfo {
    pub fn parse(text: &str) -> Option<Self> {
        let f = |k| field_kb(text, k);
        Some(Meminfo {
            anon_pages: f("AnonPages")?,
            page_tables: f("PageTables")?,
            kernel_stack: f("KernelStack")?,
            sunreclaim: f("SUnreclaim")?,
            shmem: f("Shmem").unwrap_or(0),
            mem_available: f("MemAvailable").unwrap_or(0),
        })
    }

    pub fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
        Meminfo::parse(&text).context("/proc/meminfo lacks AnonPages, PageTables, KernelStack or SUnreclaim")
    }

    /// AnonPages + PageTables + KernelStack + SUnreclaim.
    pub fn counted(&self) -> u64 {
        self.anon_pages + self.page_tables + self.kernel_stack + self.sunreclaim
    }

    pub fn to_json(self) -> Value {
        json!({
            "anon_pages_kib": self.anon_pages,
            "page_tables_kib": self.page_tables,
            "kernel_stack_kib": self.kernel_stack,
            "sunreclaim_kib": self.sunreclaim,
            "shmem_kib": self.shmem,
            "mem_available_kib": self.mem_available,
        })
    }
}

/// What one cgroup's memory controller has charged, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupMem {
    pub groups: u64,
    pub total: u64,
    pub anon: u64,
    /// Slab, kernel stacks, page tables (v1: `memory.kmem.usage_in_bytes`; v2: `kernel`).
    pub kernel: u64,
}

impl CgroupMem {
    pub fn add(&mut self, o: &CgroupMem) {
        self.groups += o.groups;
        self.total += o.total;
        self.anon += o.anon;
        self.kernel += o.kernel;
    }
}

/// The memory cgroup directory of a process, from the text of its `/proc/<pid>/cgroup`.
pub fn memory_cgroup_dir(proc_cgroup: &str, root: &Path) -> Option<PathBuf> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            return Some(root.join("memory").join(rel));
        }
        if controllers.is_empty() {
            v2 = Some(root.join(rel));
        }
    }
    v2.filter(|d| d.join("memory.current").exists())
}

/// What a memory cgroup has charged, on v1 or v2.
pub fn read_cgroup(dir: &Path) -> Option<CgroupMem> {
    let bytes = |f: &str| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse::<u64>().ok().map(|b| b / 1024);
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let stat_kb = |k: &str| {
        stat.lines().find_map(|l| {
            let (name, v) = l.split_once(' ')?;
            (name == k).then(|| v.trim().parse::<u64>().ok().map(|b| b / 1024))?
        })
    };
    if let Some(total) = bytes("memory.usage_in_bytes") {
        Some(CgroupMem {
            groups: 1,
            total,
            anon: stat_kb("rss").unwrap_or(0) + stat_kb("rss_huge").unwrap_or(0),
            kernel: bytes("memory.kmem.usage_in_bytes").unwrap_or(0),
        })
    } else {
        Some(CgroupMem {
            groups: 1,
            total: bytes("memory.current")?,
            anon: stat_kb("anon").unwrap_or(0),
            kernel: stat_kb("kernel").unwrap_or(0),
        })
    }
}

/// The memory cgroup of a process, charged.
pub fn cgroup_of(pid: u32) -> Option<CgroupMem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    read_cgroup(&memory_cgroup_dir(&text, Path::new("/sys/fs/cgroup"))?)
}

/// The environments of a server: its child processes (one outer `bwrap` each).
pub fn environments(table: &HashMap<u32, Proc>, server: u32) -> HashSet<u32> {
    children(table, server).into_iter().collect()
}

/// The platform's processes' and the runtimes' memory over some environments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EnvsUsage {
    pub envs: u64,
    pub bwrap: Usage,
    pub init: Usage,
    pub runtime: Usage,
    /// Processes that ended or could not be read.
    pub unreadable: u64,
    pub cgroup: CgroupMem,
}

impl EnvsUsage {
    pub fn platform(&self) -> Usage {
        let mut u = self.bwrap;
        u.add(&self.init);
        u
    }

    /// CPU time of every process of the environments since they started (ns).
    pub fn cpu_ns(&self) -> u64 {
        self.platform().cpu_ns + self.runtime.cpu_ns
    }
}

/// Read the memory of every process of the environments `envs` (outer `bwrap` pids).
pub fn envs_usage(table: &HashMap<u32, Proc>, envs: &[u32]) -> EnvsUsage {
    let mut out = EnvsUsage::default();
    for &env in envs {
        out.envs += 1;
        if let Some(c) = cgroup_of(env) {
            out.cgroup.add(&c);
        }
        for pid in subtree(table, env) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let Some(u) = usage_of(pid) else {
                out.unreadable += 1;
                continue;
            };
            match classify(&cmdline, &comm) {
                Role::Bwrap => out.bwrap.add(&u),
                Role::Init => out.init.add(&u),
                Role::Runtime => out.runtime.add(&u),
            }
        }
    }
    out
}

/// KiB to MiB, rounded for JSON.
pub fn mib(kb: f64) -> f64 {
    (kb / 1024.0 * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_parsed_past_odd_names() {
        let s =
            "1234 (a) b (c)) S 77 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 12345 1000 10 18446744073709551615";
        assert_eq!(parse_stat(s), Some(Proc { ppid: 77, threads: 3 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn cpu_ticks() {
        let s = "1234 (a b) S 77 1234 1234 0 -1 4194560 100 0 0 0 17 25 3 4 20 0 3 0 12345 1000 10";
        assert_eq!(parse_cpu_ticks(s), Some(42));
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
        let me = std::process::id();
        assert!(process_cpu_ms(me).is_some());
        assert!(threads_cpu_ns(me) > 0);
    }

    #[test]
    fn trees() {
        let p = |ppid| Proc { ppid, threads: 1 };
        let table: HashMap<u32, Proc> =
            [(1, p(0)), (10, p(1)), (11, p(10)), (12, p(11)), (13, p(12)), (20, p(10)), (21, p(20)), (30, p(1))]
                .into_iter()
                .collect();
        assert_eq!(children(&table, 10), vec![11, 20]);
        let mut s = subtree(&table, 10);
        s.sort_unstable();
        assert_eq!(s, vec![10, 11, 12, 13, 20, 21]);
        assert_eq!(subtree(&table, 99), vec![99]);
        assert_eq!(environments(&table, 10), [11, 20].into_iter().collect());
    }

    #[test]
    fn roles() {
        assert_eq!(
            classify(b"/var/runtime/quarters-init\0sandbox-init\0--\0/var/task/bootstrap\0", "quarters-init\n"),
            Role::Init
        );
        assert_eq!(classify(b"/usr/bin/bwrap\0--unshare-all\0", "bwrap\n"), Role::Bwrap);
        assert_eq!(classify(b"", "bwrap\n"), Role::Bwrap);
        assert_eq!(classify(b"/var/task/bootstrap\0", "bootstrap\n"), Role::Runtime);
        // The init's binary running anything but sandbox-init is not the init.
        assert_eq!(classify(b"/var/runtime/quarters-init\0serve\0", "quarters-init\n"), Role::Runtime);
    }

    #[test]
    fn usage_from_proc_texts() {
        let rollup = "55d0c0000000-7ffd4b1ff000 ---p 00000000 00:00 0    [rollup]\nRss:                3696 kB\nPss:                1050 kB\nPss_Dirty:           432 kB\nPss_Anon:            432 kB\nPss_File:            618 kB\nPss_Shmem:             0 kB\n";
        let status =
            "Name:\tquarters-init\nVmRSS:\t    3696 kB\nRssAnon:\t     432 kB\nVmPTE:\t      72 kB\nThreads:\t4\n";
        let u = parse_usage(rollup, status);
        assert_eq!(
            u,
            Usage { processes: 1, threads: 4, rss: 3696, pss: 1050, pss_anon: 432, pss_file: 618, pte: 72, cpu_ns: 0 }
        );
        assert_eq!(u.kernel_counted_kb(), 432 + 72 + 4 * KERNEL_STACK_KB);
        assert_eq!(field_kb(status, "RssAnon"), Some(432));
        assert_eq!(field_kb(status, "Rss"), None);
        let mut sum = u;
        sum.add(&u);
        assert_eq!((sum.processes, sum.pss, sum.threads), (2, 2100, 8));
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24684084 kB\nMemAvailable:   24224232 kB\nShmem:              8872 kB\nAnonPages:         13456 kB\nSUnreclaim:        48148 kB\nKernelStack:        1456 kB\nPageTables:         2140 kB\n";
        let m = Meminfo::parse(text).expect("parsed");
        assert_eq!(m.counted(), 13456 + 2140 + 1456 + 48148);
        assert_eq!(m.shmem, 8872);
        assert_eq!(Meminfo::parse("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn memory_cgroups_are_found() {
        let root = Path::new("/sys/fs/cgroup");
        let v1 = "12:pids:/a/b\n4:memory:/process_api/x/quarters-1/e1\n0::/user.slice\n";
        assert_eq!(
            memory_cgroup_dir(v1, root),
            Some(PathBuf::from("/sys/fs/cgroup/memory/process_api/x/quarters-1/e1"))
        );
        // Pure v2 without a memory.current there (this test does not create one): none.
        assert_eq!(memory_cgroup_dir("0::/nonexistent-quarters-bench-test\n", root), None);
    }

    #[test]
    fn cgroup_files_are_read() -> Result<()> {
        let d = tempfile::tempdir()?;
        std::fs::write(d.path().join("memory.usage_in_bytes"), "2039808\n")?;
        std::fs::write(d.path().join("memory.kmem.usage_in_bytes"), "700416\n")?;
        std::fs::write(d.path().join("memory.stat"), "cache 16384\nrss 970752\nrss_huge 0\n")?;
        assert_eq!(read_cgroup(d.path()), Some(CgroupMem { groups: 1, total: 1992, anon: 948, kernel: 684 }));
        let d2 = tempfile::tempdir()?;
        std::fs::write(d2.path().join("memory.current"), "4096000\n")?;
        std::fs::write(d2.path().join("memory.stat"), "anon 1024000\nfile 0\nkernel 2048000\n")?;
        assert_eq!(read_cgroup(d2.path()), Some(CgroupMem { groups: 1, total: 4000, anon: 1000, kernel: 2000 }));
        Ok(())
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        let table = process_table().expect("proc");
        assert!(table.contains_key(&me));
        assert!(usage_of(me).is_some_and(|u| u.threads >= 1 && u.cpu_ns > 0));
        assert!(rss_anon_of(me) > 0);
        assert!(open_fds(me) >= 3);
        assert!(Meminfo::read().is_ok());
        assert_eq!(mib(1536.0), 1.5);
    }
}

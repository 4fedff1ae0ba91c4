//! The sandbox-hardening figures: how fast new environments start with several clients, what
//! an idle environment costs the platform in memory, and what the hardening (seccomp filters,
//! read-only root) adds to a cold start.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::mem::{self, EnvsUsage, Meminfo};
use crate::net::{Conn, Endpoint, Tally, timed_call};
use crate::stats::{Summary, round2};

/// Cold starts alternate between the hardened and the unhardened server in chunks of this many
/// (about 30 ms of each, in A B B A order): noise on this machine comes in bursts of tens of
/// milliseconds, so short chunks share it best.
pub const HARDENING_CHUNK: usize = 2;
/// How long new environments are given to settle (the runtime back on `/next`) before their
/// memory is read.
pub const SETTLE: Duration = Duration::from_millis(300);

/// K new tenants at once, by a few clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Creation {
    pub attempted: usize,
    pub clients: usize,
    /// From the first request to the last response.
    pub elapsed: Duration,
    /// Of the successful invocations, each the start of a new environment.
    pub latency: Summary,
}

impl Creation {
    pub fn created(&self) -> usize {
        self.latency.count
    }

    pub fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.created() as f64 / s } else { 0.0 }
    }

    pub fn to_json(self) -> Value {
        json!({
            "attempted": self.attempted,
            "created": self.created(),
            "clients": self.clients,
            "elapsed_s": (self.elapsed.as_secs_f64() * 1e4).round() / 1e4,
            "per_s": round2(self.per_sec()),
            "latency": self.latency.to_json(),
        })
    }
}

/// Invoke `k` new tenants (each a new environment) with `clients` connections taking the next
/// tenant as soon as they are free. Returns the tally and the wall time.
pub async fn create(ep: &Endpoint, k: usize, clients: usize) -> Result<(Tally, Duration)> {
    let clients = clients.clamp(1, k.max(1));
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(ep.addr).await?);
    }
    let run = uuid::Uuid::new_v4().simple().to_string();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (ep, next, run) = (ep.clone(), next.clone(), run.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= k {
                        break;
                    }
                    timed_call(&mut conn, &ep, &format!("env-{i}-{run}"), &mut t).await?;
                }
                Ok::<_, anyhow::Error>(t)
            })
        })
        .collect();
    let mut tally = Tally::default();
    for h in handles {
        tally.merge(h.await.context("a client task")??);
    }
    Ok((tally, start.elapsed()))
}

/// What is read before the environments are created.
pub struct Before {
    envs: HashSet<u32>,
    meminfo: Meminfo,
    others_anon_kb: u64,
    server_anon_kb: u64,
    server_cpu_ms: Option<f64>,
    server_fds: usize,
}

/// `RssAnon` of every process outside the server's tree (this bench, concurrent builds, ...), so
/// their changes can be taken out of the system-wide `/proc/meminfo` delta.
fn others_anon_kb(table: &std::collections::HashMap<u32, mem::Proc>, server: u32) -> u64 {
    let ours: HashSet<u32> = mem::subtree(table, server).into_iter().collect();
    table.keys().filter(|p| !ours.contains(p)).map(|p| mem::rss_anon_of(*p)).sum()
}

pub fn before(server: u32) -> Result<Before> {
    let table = mem::process_table()?;
    let envs = mem::environments(&table, server);
    let others_anon_kb = others_anon_kb(&table, server);
    let server_anon_kb = mem::usage_of(server).map_or(0, |u| u.pss_anon);
    let server_cpu_ms = mem::process_cpu_ms(server);
    let server_fds = mem::open_fds(server);
    let meminfo = Meminfo::read()?;
    Ok(Before { envs, meminfo, others_anon_kb, server_anon_kb, server_cpu_ms, server_fds })
}

/// The platform's memory per idle environment, over the environments created since `before`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub usage: EnvsUsage,
    pub meminfo_before: Meminfo,
    pub meminfo_after: Meminfo,
    /// How much `RssAnon` the processes outside the server's tree gained meanwhile (KiB).
    pub others_anon_delta_kb: i64,
    /// How much anonymous memory (PSS) the server process gained meanwhile (KiB).
    pub server_anon_delta_kb: i64,
    /// The CPU time the server used meanwhile (ms, to 10 ms).
    pub server_cpu_ms: Option<f64>,
    /// How many environments the server had before these, and how many fds it had open: every
    /// sandbox's `bwrap` inherits a file table as large as the server's.
    pub existing_envs: usize,
    pub server_fds_before: usize,
}

pub fn after(server: u32, before: &Before) -> Result<Memory> {
    let meminfo_after = Meminfo::read()?;
    let table = mem::process_table()?;
    let others = others_anon_kb(&table, server);
    let server_anon = mem::usage_of(server).map_or(0, |u| u.pss_anon);
    let mut new: Vec<u32> = mem::environments(&table, server).difference(&before.envs).copied().collect();
    new.sort_unstable();
    let usage = mem::envs_usage(&table, &new);
    let server_cpu_ms = before.server_cpu_ms.zip(mem::process_cpu_ms(server)).map(|(b, a)| a - b);
    Ok(Memory {
        server_cpu_ms,
        existing_envs: before.envs.len(),
        server_fds_before: before.server_fds,
        usage,
        meminfo_before: before.meminfo,
        meminfo_after,
        others_anon_delta_kb: others as i64 - before.others_anon_kb as i64,
        server_anon_delta_kb: server_anon as i64 - before.server_anon_kb as i64,
    })
}

fn per_env_mib(kb: f64, envs: u64) -> f64 {
    if envs == 0 { 0.0 } else { kb / envs as f64 / 1024.0 }
}

impl Memory {
    pub fn envs(&self) -> u64 {
        self.usage.envs
    }

    /// PSS of the two `bwrap`s and the init of each environment.
    pub fn platform_pss_mib(&self) -> f64 {
        per_env_mib(self.usage.platform().pss as f64, self.envs())
    }

    pub fn runtime_pss_mib(&self) -> f64 {
        per_env_mib(self.usage.runtime.pss as f64, self.envs())
    }

    /// The growth of AnonPages + PageTables + KernelStack + SUnreclaim (KiB).
    pub fn meminfo_delta_kb(&self) -> i64 {
        self.meminfo_after.counted() as i64 - self.meminfo_before.counted() as i64
    }

    /// What the runtimes hold of what that growth counts: their anonymous PSS, page tables and
    /// kernel stacks (their file-backed PSS is page cache, not in those lines).
    pub fn runtime_kernel_counted_kb(&self) -> u64 {
        self.usage.runtime.kernel_counted_kb()
    }

    /// Everything the platform holds per environment as the kernel counts it: the meminfo
    /// growth, less what other processes gained, less the runtimes' own. It includes the
    /// sandboxes' anonymous memory, page tables, kernel stacks and unreclaimable slab
    /// (namespaces, mounts, sockets, cgroups) and the server's own growth per environment.
    pub fn kernel_inclusive_mib(&self) -> f64 {
        let kb = self.meminfo_delta_kb() - self.others_anon_delta_kb - self.runtime_kernel_counted_kb() as i64;
        per_env_mib(kb as f64, self.envs())
    }

    /// The same without taking the other processes' changes out (noisy on a shared machine).
    pub fn kernel_inclusive_raw_mib(&self) -> f64 {
        let kb = self.meminfo_delta_kb() - self.runtime_kernel_counted_kb() as i64;
        per_env_mib(kb as f64, self.envs())
    }

    /// What the environments' memory cgroups are charged, less the runtimes' own, per
    /// environment: immune to other processes, but without the server's share.
    pub fn cgroup_platform_mib(&self) -> Option<f64> {
        let c = &self.usage.cgroup;
        (c.groups == self.envs() && c.groups > 0)
            .then(|| per_env_mib(c.total as f64 - self.runtime_kernel_counted_kb() as f64, self.envs()))
    }

    pub fn server_mib(&self) -> f64 {
        per_env_mib(self.server_anon_delta_kb as f64, self.envs())
    }

    /// The CPU time one new environment took: the server's (HTTP, cgroups, spawning) and its
    /// sandbox's processes' (bwrap's namespaces and mounts, the init, the runtime's start).
    pub fn cpu_ms_per_env(&self) -> Option<f64> {
        let server = self.server_cpu_ms?;
        (self.envs() > 0).then(|| (server + self.usage.cpu_ns() as f64 / 1e6) / self.envs() as f64)
    }

    /// How many environments per second `cores` could start if CPU were all that limits it.
    pub fn cpu_bound_rate(&self, cores: usize) -> Option<f64> {
        self.cpu_ms_per_env().filter(|ms| *ms > 0.0).map(|ms| cores as f64 * 1000.0 / ms)
    }

    pub fn to_json(self) -> Value {
        let n = self.envs().max(1) as f64;
        let d = |a: u64, b: u64| a as i64 - b as i64;
        let (b, a) = (self.meminfo_before, self.meminfo_after);
        let c = self.usage.cgroup;
        json!({
            "environments": self.envs(),
            "existing_environments": self.existing_envs,
            "server_fds_before": self.server_fds_before,
            "unreadable_processes": self.usage.unreadable,
            "per_env_mib": {
                "platform_pss": mem::mib(self.platform_pss_mib() * 1024.0),
                "platform_kernel_inclusive": mem::mib(self.kernel_inclusive_mib() * 1024.0),
                "platform_kernel_inclusive_uncorrected": mem::mib(self.kernel_inclusive_raw_mib() * 1024.0),
                "platform_cgroup": self.cgroup_platform_mib().map(|m| mem::mib(m * 1024.0)),
                "runtime_pss": mem::mib(self.runtime_pss_mib() * 1024.0),
                "server_anon": mem::mib(self.server_mib() * 1024.0),
            },
            "bwrap": self.usage.bwrap.to_json(n),
            "init": self.usage.init.to_json(n),
            "runtime": self.usage.runtime.to_json(n),
            "meminfo_before": b.to_json(),
            "meminfo_after": a.to_json(),
            "meminfo_delta_kib": {
                "anon_pages": d(a.anon_pages, b.anon_pages),
                "page_tables": d(a.page_tables, b.page_tables),
                "kernel_stack": d(a.kernel_stack, b.kernel_stack),
                "sunreclaim": d(a.sunreclaim, b.sunreclaim),
                "shmem": d(a.shmem, b.shmem),
                "counted": self.meminfo_delta_kb(),
            },
            "others_anon_delta_kib": self.others_anon_delta_kb,
            "server_anon_delta_kib": self.server_anon_delta_kb,
            "cpu": {
                "server_ms": self.server_cpu_ms.map(round2),
                "sandboxes_ms": round2(self.usage.cpu_ns() as f64 / 1e6),
                "per_env_ms": self.cpu_ms_per_env().map(round2),
            },
            "runtime_kernel_counted_kib": self.runtime_kernel_counted_kb(),
            "kernel_stack_per_thread_kib": mem::KERNEL_STACK_KB,
            "cgroups": {
                "groups": c.groups,
                "total_kib": c.total,
                "anon_kib": c.anon,
                "kernel_kib": c.kernel,
                "per_env_mib": { "total": mem::mib(c.total as f64 / n), "anon": mem::mib(c.anon as f64 / n), "kernel": mem::mib(c.kernel as f64 / n) },
            },
        })
    }
}

/// Cold starts on two servers, `eps[0]` and `eps[1]`, in chunks of [`HARDENING_CHUNK`], the
/// order of the two flipping every round so that noise and drift land on both alike. Each
/// invocation is by a new tenant. Returns the two tallies.
pub async fn interleaved_cold(eps: [&Endpoint; 2], n: usize, warmup: usize) -> Result<([Tally; 2], [Tally; 2])> {
    let mut conns = [Conn::open(eps[0].addr).await?, Conn::open(eps[1].addr).await?];
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut warm = [Tally::default(), Tally::default()];
    for i in 0..warmup {
        for side in 0..2 {
            timed_call(&mut conns[side], eps[side], &format!("hw-{side}-{i}-{run}"), &mut warm[side]).await?;
        }
    }
    let mut tallies = [Tally::default(), Tally::default()];
    let (mut done, mut round) = (0, 0);
    while done < n {
        let k = HARDENING_CHUNK.min(n - done);
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            for i in done..done + k {
                timed_call(&mut conns[side], eps[side], &format!("h-{side}-{i}-{run}"), &mut tallies[side]).await?;
            }
        }
        done += k;
        round += 1;
    }
    Ok((warm, tallies))
}

/// Cold starts with the hardening on and off.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Hardening {
    pub on: Summary,
    pub off: Summary,
}

impl Hardening {
    /// p50 with / p50 without.
    pub fn ratio(&self) -> f64 {
        if self.off.p50 > 0.0 { self.on.p50 / self.off.p50 } else { 0.0 }
    }

    /// What the hardening adds to a cold start's p50, in percent of the unhardened one.
    pub fn cost_percent(&self) -> f64 {
        (self.ratio() - 1.0) * 100.0
    }

    pub fn to_json(self) -> Value {
        json!({
            "on": self.on.to_json(),
            "off": self.off.to_json(),
            "p50_ms": { "on": round2(self.on.p50 / 1e3), "off": round2(self.off.p50 / 1e3) },
            "p99_ms": { "on": round2(self.on.p99 / 1e3), "off": round2(self.off.p99 / 1e3) },
            "ratio_p50": (self.ratio() * 1000.0).round() / 1000.0,
            "cost_percent_p50": round2(self.cost_percent()),
            "chunk": HARDENING_CHUNK,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{CgroupMem, Usage};

    fn usage(pss: u64, pss_anon: u64, pte: u64, threads: u64) -> Usage {
        Usage { processes: 1, threads, rss: pss, pss, pss_anon, pss_file: pss - pss_anon, pte, cpu_ns: 20_000_000 }
    }

    #[test]
    fn memory_per_env() {
        let before = Meminfo {
            anon_pages: 10_000,
            page_tables: 1000,
            kernel_stack: 1000,
            sunreclaim: 40_000,
            ..Default::default()
        };
        // 10 environments: +15,000 KiB anon, +1,000 page tables, +1,000 stacks, +6,000 slab.
        let after = Meminfo {
            anon_pages: 25_000,
            page_tables: 2000,
            kernel_stack: 2000,
            sunreclaim: 46_000,
            ..Default::default()
        };
        let m = Memory {
            usage: EnvsUsage {
                envs: 10,
                bwrap: usage(5120, 2048, 960, 20),
                init: usage(10240, 4096, 720, 40),
                // 10 runtimes: 5,000 anon, 500 page tables, 10 threads (160 stacks).
                runtime: usage(12_000, 5000, 500, 10),
                unreadable: 0,
                cgroup: CgroupMem { groups: 10, total: 20_000, anon: 10_000, kernel: 8000 },
            },
            server_cpu_ms: Some(40.0),
            existing_envs: 7,
            server_fds_before: 80,
            meminfo_before: before,
            meminfo_after: after,
            others_anon_delta_kb: 1000,
            server_anon_delta_kb: 512,
        };
        assert_eq!(m.meminfo_delta_kb(), 23_000);
        assert_eq!(m.runtime_kernel_counted_kb(), 5660);
        assert!((m.platform_pss_mib() - 1.5).abs() < 1e-9);
        // (23,000 - 1,000 - 5,660) / 10 KiB.
        assert!((m.kernel_inclusive_mib() - 16_340.0 / 10.0 / 1024.0).abs() < 1e-9);
        assert!((m.kernel_inclusive_raw_mib() - 17_340.0 / 10.0 / 1024.0).abs() < 1e-9);
        assert_eq!(m.cgroup_platform_mib(), Some(14_340.0 / 10.0 / 1024.0));
        assert!((m.server_mib() - 0.05).abs() < 1e-9);
        assert_eq!(m.cpu_ms_per_env(), Some(10.0));
        assert_eq!(m.cpu_bound_rate(2), Some(200.0));
        assert_eq!(Memory { server_cpu_ms: None, ..m }.cpu_ms_per_env(), None);
        let v = m.to_json();
        assert_eq!(v["environments"], json!(10));
        assert_eq!(v["existing_environments"], json!(7));
        assert_eq!(v["meminfo_delta_kib"]["sunreclaim"], json!(6000));
        assert_eq!(v["per_env_mib"]["platform_pss"], json!(1.5));
        // Without a cgroup for every environment there is no cgroup figure.
        let partial = Memory { usage: EnvsUsage { cgroup: CgroupMem { groups: 9, ..m.usage.cgroup }, ..m.usage }, ..m };
        assert_eq!(partial.cgroup_platform_mib(), None);
        let none = Memory { usage: EnvsUsage::default(), ..m };
        assert_eq!(none.platform_pss_mib(), 0.0);
    }

    #[test]
    fn hardening_cost() {
        let s = |p50: f64| Summary { count: 1, p50, ..Summary::default() };
        let h = Hardening { on: s(12_000.0), off: s(10_000.0) };
        assert!((h.ratio() - 1.2).abs() < 1e-9);
        assert!((h.cost_percent() - 20.0).abs() < 1e-9);
        assert_eq!(h.to_json()["ratio_p50"], json!(1.2));
        assert_eq!(Hardening { on: s(1.0), off: s(0.0) }.ratio(), 0.0);
    }

    #[test]
    fn creation_rate() {
        let c = Creation {
            attempted: 100,
            clients: 8,
            elapsed: Duration::from_millis(500),
            latency: Summary { count: 99, ..Summary::default() },
        };
        assert_eq!(c.created(), 99);
        assert!((c.per_sec() - 198.0).abs() < 1e-9);
        assert_eq!(c.to_json()["created"], json!(99));
    }
}

//! Many tenants cycling through one function on a server with a memory budget
//! (`--memory-budget-mb`): every tenant is new, so every call starts an environment, and the
//! budget holds only a few, so every start past the first few evicts the least recently used idle
//! one. In windows of tenants: the calls' latency, the most environments alive at once (the
//! manager's count and the sandboxes' processes), and the memory of the server's process tree,
//! which must stay bounded, and the latency flat, however many tenants have come and gone.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use http::Method;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::mem::{self, Meminfo, Role};
use crate::net::{Conn, Endpoint, Tally, join_clients, timed_call};
use crate::server::ServerProcess;
use crate::stats::{Summary, round2};

/// The function the tenants call (the probe, at the bench's MemorySize).
pub const FUNCTION: &str = "bench-cycle";
/// The server's memory budget for this phase, in MB.
pub const BUDGET_MB: u64 = 2048;
/// How often the live environments are counted while a window runs.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Windows at least this large (smaller runs have fewer windows).
pub const MIN_WINDOW: usize = 100;
/// A run is cut into about this many windows.
pub const WINDOWS: usize = 20;

/// How many tenants each window has: `tenants / WINDOWS`, at least [`MIN_WINDOW`].
pub fn window_size(tenants: usize) -> usize {
    (tenants / WINDOWS).max(MIN_WINDOW).min(tenants.max(1))
}

/// The server's process tree at one moment, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TreeSample {
    /// Live environments as the manager lists them (`/quarters/v1/environments`).
    pub envs: Option<usize>,
    /// The server's sandboxes: its child processes that are `bwrap`s.
    pub sandboxes: usize,
    /// Processes in the tree, the server's included.
    pub processes: usize,
    pub tree_rss: u64,
    pub tree_pss: u64,
    pub server_rss: u64,
    pub server_pss: u64,
    pub meminfo: Option<Meminfo>,
}

impl TreeSample {
    pub fn to_json(self) -> Value {
        json!({
            "environments": self.envs,
            "sandboxes": self.sandboxes,
            "processes": self.processes,
            "tree_rss_mib": mem::mib(self.tree_rss as f64),
            "tree_pss_mib": mem::mib(self.tree_pss as f64),
            "server_rss_mib": mem::mib(self.server_rss as f64),
            "server_pss_mib": mem::mib(self.server_pss as f64),
            "meminfo": self.meminfo.map(Meminfo::to_json),
        })
    }
}

/// The server's direct children that are sandboxes (outer `bwrap`s).
fn sandboxes(table: &HashMap<u32, mem::Proc>, server: u32) -> usize {
    mem::children(table, server)
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            mem::classify(&cmdline, &comm) == Role::Bwrap
        })
        .count()
}

/// How many sandboxes the server has now (0 when `/proc` cannot be read).
fn count_sandboxes(server: u32) -> usize {
    mem::process_table().map(|t| sandboxes(&t, server)).unwrap_or(0)
}

/// Memory of the server and everything below it (blocking: reads `/proc`).
fn sample_tree(server: u32) -> TreeSample {
    let Ok(table) = mem::process_table() else { return TreeSample::default() };
    let mut out = TreeSample { sandboxes: sandboxes(&table, server), ..TreeSample::default() };
    for pid in mem::subtree(&table, server) {
        let Some(u) = mem::usage_of(pid) else { continue };
        out.processes += 1;
        out.tree_rss += u.rss;
        out.tree_pss += u.pss;
        if pid == server {
            out.server_rss = u.rss;
            out.server_pss = u.pss;
        }
    }
    out.meminfo = Meminfo::read().ok();
    out
}

/// Live environments of the whole server, as its manager lists them.
async fn live_envs(conn: &mut Conn) -> Option<usize> {
    let (status, _, body) = conn.call(Method::GET, "/quarters/v1/environments", None).await.ok()?;
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    Some(v["Environments"].as_array()?.len())
}

/// The most environments and sandboxes seen while a window ran.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Peak {
    pub envs: Option<usize>,
    pub sandboxes: usize,
    pub samples: usize,
}

impl Peak {
    fn see(&mut self, envs: Option<usize>, sandboxes: usize) {
        if let Some(n) = envs {
            self.envs = Some(self.envs.map_or(n, |m| m.max(n)));
        }
        self.sandboxes = self.sandboxes.max(sandboxes);
    }
}

/// Count the environments every [`SAMPLE_EVERY`] until `stop` changes.
async fn watch_peaks(addr: std::net::SocketAddr, server: u32, mut stop: watch::Receiver<bool>) -> Peak {
    let mut peak = Peak::default();
    let mut conn = Conn::open(addr).await.ok();
    loop {
        let envs = match conn.as_mut() {
            Some(c) => live_envs(c).await,
            None => None,
        };
        let sandboxes = tokio::task::spawn_blocking(move || count_sandboxes(server)).await.unwrap_or(0);
        peak.see(envs, sandboxes);
        peak.samples += 1;
        tokio::select! {
            _ = stop.changed() => return peak,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}

/// One window of tenants.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub first_tenant: usize,
    pub tenants: usize,
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub elapsed: Duration,
    pub peak: Peak,
    /// Right after the window's last response.
    pub end: TreeSample,
}

impl Window {
    pub fn latency(&self) -> Summary {
        Summary::of(&self.latencies)
    }

    /// The most environments the manager listed (while it ran, or at its end).
    pub fn max_envs(&self) -> Option<usize> {
        match (self.peak.envs, self.end.envs) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn max_sandboxes(&self) -> usize {
        self.peak.sandboxes.max(self.end.sandboxes)
    }

    pub fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.latencies.len() as f64 / s } else { 0.0 }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "first_tenant": self.first_tenant,
            "tenants": self.tenants,
            "latency": self.latency().to_json(),
            "errors": self.errors,
            "elapsed_s": round2(self.elapsed.as_secs_f64()),
            "per_s": round2(self.per_sec()),
            "max_environments": self.max_envs(),
            "max_sandboxes": self.max_sandboxes(),
            "samples": self.peak.samples,
            "end": self.end.to_json(),
        })
    }
}

/// The whole cycling run.
#[derive(Debug, Clone, PartialEq)]
pub struct Cycle {
    pub tenants: usize,
    pub clients: usize,
    pub budget_mb: u64,
    pub memory_mb: u64,
    pub windows: Vec<Window>,
    pub elapsed: Duration,
}

impl Cycle {
    /// How many environments the budget holds.
    pub fn bound(&self) -> u64 {
        self.budget_mb.checked_div(self.memory_mb).unwrap_or(0)
    }

    /// How many windows make "the first" and "the last": a quarter of them, at least one.
    pub fn edge(&self) -> usize {
        (self.windows.len() / 4).max(1)
    }

    fn latencies<'a>(ws: impl Iterator<Item = &'a Window>) -> Vec<Duration> {
        ws.flat_map(|w| w.latencies.iter().copied()).collect()
    }

    /// Latency over the first [`Cycle::edge`] windows.
    pub fn first_latency(&self) -> Summary {
        Summary::of(&Self::latencies(self.windows.iter().take(self.edge())))
    }

    /// Latency over the last [`Cycle::edge`] windows.
    pub fn last_latency(&self) -> Summary {
        let skip = self.windows.len().saturating_sub(self.edge());
        Summary::of(&Self::latencies(self.windows.iter().skip(skip)))
    }

    pub fn latency(&self) -> Summary {
        Summary::of(&Self::latencies(self.windows.iter()))
    }

    pub fn errors(&self) -> u64 {
        self.windows.iter().map(|w| w.errors).sum()
    }

    pub fn max_envs(&self) -> Option<usize> {
        self.windows.iter().filter_map(Window::max_envs).max()
    }

    pub fn max_sandboxes(&self) -> usize {
        self.windows.iter().map(Window::max_sandboxes).max().unwrap_or(0)
    }

    /// The process tree's PSS at the end of the first and of the last window (KiB).
    pub fn first_last_pss(&self) -> Option<(u64, u64)> {
        Some((self.windows.first()?.end.tree_pss, self.windows.last()?.end.tree_pss))
    }

    /// The server process's own PSS at the end of the first and of the last window (KiB).
    pub fn first_last_server_pss(&self) -> Option<(u64, u64)> {
        Some((self.windows.first()?.end.server_pss, self.windows.last()?.end.server_pss))
    }

    /// The sandboxes' PSS (the tree's less the server's) at the end of the first and of the last
    /// window (KiB): what the budget bounds.
    pub fn first_last_sandboxes_pss(&self) -> Option<(u64, u64)> {
        let of = |s: &TreeSample| s.tree_pss.saturating_sub(s.server_pss);
        Some((of(&self.windows.first()?.end), of(&self.windows.last()?.end)))
    }

    /// How much the server's own PSS grew per tenant from the first window's end to the last's
    /// (KiB).
    pub fn server_kib_per_tenant(&self) -> Option<f64> {
        let (a, b) = self.first_last_server_pss()?;
        let (first, last) = (self.windows.first()?, self.windows.last()?);
        let tenants = (last.first_tenant + last.tenants).saturating_sub(first.first_tenant + first.tenants);
        (tenants > 0).then(|| (b as f64 - a as f64) / tenants as f64)
    }

    /// How much the tree's PSS grew from the first window's end to the last's, in percent.
    pub fn pss_growth_percent(&self) -> Option<f64> {
        let (a, b) = self.first_last_pss().filter(|(a, _)| *a > 0)?;
        Some((b as f64 / a as f64 - 1.0) * 100.0)
    }

    /// Of the first and last [`Cycle::edge`] windows: last p99 / first p99.
    pub fn p99_ratio(&self) -> f64 {
        let (a, b) = (self.first_latency().p99, self.last_latency().p99);
        if a > 0.0 { b / a } else { 0.0 }
    }

    pub fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.latency().count as f64 / s } else { 0.0 }
    }

    pub fn to_json(&self) -> Value {
        let (first_pss, last_pss) = self.first_last_pss().unwrap_or_default();
        let (first_server, last_server) = self.first_last_server_pss().unwrap_or_default();
        let (first_sandboxes, last_sandboxes) = self.first_last_sandboxes_pss().unwrap_or_default();
        json!({
            "tenants": self.tenants,
            "clients": self.clients,
            "budget_mb": self.budget_mb,
            "memory_size_mb": self.memory_mb,
            "bound_environments": self.bound(),
            "max_environments": self.max_envs(),
            "max_sandboxes": self.max_sandboxes(),
            "elapsed_s": round2(self.elapsed.as_secs_f64()),
            "per_s": round2(self.per_sec()),
            "errors": self.errors(),
            "latency": self.latency().to_json(),
            "edge_windows": self.edge(),
            "first_windows_latency": self.first_latency().to_json(),
            "last_windows_latency": self.last_latency().to_json(),
            "p99_ratio_last_to_first": (self.p99_ratio() * 1000.0).round() / 1000.0,
            "tree_pss_mib": { "first_window": mem::mib(first_pss as f64), "last_window": mem::mib(last_pss as f64) },
            "tree_pss_growth_percent": self.pss_growth_percent().map(round2),
            "server_pss_mib": { "first_window": mem::mib(first_server as f64), "last_window": mem::mib(last_server as f64) },
            "server_pss_kib_per_tenant": self.server_kib_per_tenant().map(round2),
            "sandboxes_pss_mib": { "first_window": mem::mib(first_sandboxes as f64), "last_window": mem::mib(last_sandboxes as f64) },
            "windows": self.windows.iter().map(Window::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Invoke tenants `range` once each, `conns` taking the next as soon as they are free.
async fn run_window(
    conns: Vec<Conn>,
    ep: &Endpoint,
    range: std::ops::Range<usize>,
    run: &str,
) -> Result<(Vec<Conn>, Tally)> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let (ep, next, run) = (ep.clone(), next.clone(), run.to_owned());
            tokio::spawn(async move {
                let mut t = Tally::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        break;
                    }
                    timed_call(&mut conn, &ep, &format!("cycle-{i}-{run}"), &mut t).await?;
                }
                Ok::<_, anyhow::Error>((conn, t))
            })
        })
        .collect();
    join_clients(handles).await
}

/// On `server` (started with `--memory-budget-mb` [`BUDGET_MB`]): deploy [`FUNCTION`] and invoke
/// `tenants` new tenants once each with `clients` connections, in windows of
/// [`window_size`]. Every call's outcome is added to `calls`; `progress` gets a line a window.
pub async fn measure(
    server: &ServerProcess,
    zip: &[u8],
    tenants: usize,
    clients: usize,
    calls: &mut Tally,
    progress: impl Fn(&str),
) -> Result<Cycle> {
    crate::deploy_function(server, FUNCTION, "provided.al2023", "bootstrap", zip).await?;
    let server_pid = server.pid().context("the server has no pid")?;
    let ep = Endpoint {
        addr: server.addr,
        path: format!("/2015-03-31/functions/{FUNCTION}/invocations"),
        payload: bytes::Bytes::from_static(crate::PAYLOAD),
        is_invoke: true,
    };
    let size = window_size(tenants);
    let clients = clients.clamp(1, size);
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(Conn::open(server.addr).await?);
    }
    let mut control = Conn::open(server.addr).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut cycle = Cycle {
        tenants,
        clients,
        budget_mb: BUDGET_MB,
        memory_mb: u64::from(crate::MEMORY_MB),
        windows: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let bound = cycle.bound();
    let count = tenants.div_ceil(size);
    let started = Instant::now();
    for w in 0..count {
        let range = w * size..((w + 1) * size).min(tenants);
        let (stop_tx, stop_rx) = watch::channel(false);
        let watcher = tokio::spawn(watch_peaks(server.addr, server_pid, stop_rx));
        let window_start = Instant::now();
        let ran = run_window(conns, &ep, range.clone(), &run).await;
        let elapsed = window_start.elapsed();
        let _ = stop_tx.send(true);
        let peak = watcher.await.unwrap_or_default();
        let (c, tally) = ran?;
        conns = c;
        let envs = live_envs(&mut control).await;
        let mut end = tokio::task::spawn_blocking(move || sample_tree(server_pid)).await.unwrap_or_default();
        end.envs = envs;
        let window = Window {
            first_tenant: range.start,
            tenants: range.len(),
            latencies: tally.latencies.clone(),
            errors: tally.errors,
            elapsed,
            peak,
            end,
        };
        let l = window.latency();
        progress(&format!(
            "window {}/{count} (tenants {}-{}): {:.0}/s, p50 {:.1} ms p99 {:.1} ms; environments max {} (bound {bound}), sandboxes max {}; PSS of server + sandboxes {:.1} MiB (server {:.1}); {} error(s)",
            w + 1,
            range.start + 1,
            range.end,
            window.per_sec(),
            l.p50 / 1e3,
            l.p99 / 1e3,
            window.max_envs().map_or("?".to_string(), |n| n.to_string()),
            window.max_sandboxes(),
            end.tree_pss as f64 / 1024.0,
            end.server_pss as f64 / 1024.0,
            window.errors
        ));
        calls.merge(tally);
        cycle.windows.push(window);
    }
    cycle.elapsed = started.elapsed();
    if cycle.latency().count == 0 && tenants > 0 {
        bail!("every call of the cycling run failed: {}", calls.first_error.clone().unwrap_or_default());
    }
    Ok(cycle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(first_tenant: usize, ms: &[u64], pss: u64, envs: usize) -> Window {
        Window {
            first_tenant,
            tenants: ms.len(),
            latencies: ms.iter().map(|m| Duration::from_millis(*m)).collect(),
            errors: 0,
            elapsed: Duration::from_secs(1),
            peak: Peak { envs: Some(envs), sandboxes: envs + 1, samples: 3 },
            end: TreeSample { envs: Some(envs - 1), tree_pss: pss, server_pss: pss / 2, ..TreeSample::default() },
        }
    }

    #[test]
    fn windows() {
        assert_eq!(window_size(10_000), 500);
        assert_eq!(window_size(1000), 100);
        assert_eq!(window_size(50), 50);
        assert_eq!(window_size(0), 1);
    }

    #[test]
    fn figures_of_a_run() {
        let c = Cycle {
            tenants: 8,
            clients: 4,
            budget_mb: 2048,
            memory_mb: 128,
            windows: vec![
                window(0, &[10, 20], 40_960, 15),
                window(2, &[10, 30], 41_000, 16),
                window(4, &[10, 20], 42_000, 16),
                window(6, &[10, 40], 45_056, 14),
            ],
            elapsed: Duration::from_secs(4),
        };
        assert_eq!(c.bound(), 16);
        assert_eq!(c.edge(), 1);
        assert_eq!(c.max_envs(), Some(16));
        assert_eq!(c.max_sandboxes(), 17);
        assert_eq!(c.first_latency().p99, 20_000.0);
        assert_eq!(c.last_latency().p99, 40_000.0);
        assert!((c.p99_ratio() - 2.0).abs() < 1e-9);
        assert_eq!(c.first_last_pss(), Some((40_960, 45_056)));
        assert!(c.pss_growth_percent().is_some_and(|g| (g - 10.0).abs() < 1e-9));
        assert_eq!(c.first_last_server_pss(), Some((20_480, 22_528)));
        assert_eq!(c.first_last_sandboxes_pss(), Some((20_480, 22_528)));
        // 2,048 KiB over the 6 tenants after the first window.
        assert!(c.server_kib_per_tenant().is_some_and(|k| (k - 2048.0 / 6.0).abs() < 1e-9));
        assert!((c.per_sec() - 2.0).abs() < 1e-9);
        let v = c.to_json();
        assert_eq!(v["bound_environments"], json!(16));
        assert_eq!(v["tree_pss_mib"]["first_window"], json!(40.0));
        assert_eq!(v["windows"].as_array().map(Vec::len), Some(4));
        assert_eq!(v["windows"][0]["max_environments"], json!(15));
        let none = Cycle { windows: Vec::new(), ..c };
        assert_eq!(none.max_envs(), None);
        assert_eq!(none.pss_growth_percent(), None);
        assert_eq!(none.p99_ratio(), 0.0);
    }

    #[test]
    fn peaks() {
        let mut p = Peak::default();
        p.see(None, 3);
        assert_eq!(p, Peak { envs: None, sandboxes: 3, samples: 0 });
        p.see(Some(12), 2);
        p.see(Some(9), 5);
        assert_eq!((p.envs, p.sandboxes), (Some(12), 5));
    }

    #[test]
    fn own_tree_is_sampled() {
        let s = sample_tree(std::process::id());
        assert!(s.processes >= 1 && s.server_rss > 0 && s.tree_rss >= s.server_rss);
    }
}

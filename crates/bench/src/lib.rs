//! `quarters bench`: how fast the invoke path is, next to what this machine can do at all.
//!
//! The bench starts its own server (the `quarters` binary, as a subprocess with a fresh data
//! directory), deploys the `probe` function with PER_TENANT isolation, and starts a bare
//! HTTP/1.1 echo server in-process on its own runtime: the physical floor of the machine. It
//! then measures, for Invoke and for the echo alike, over raw keep-alive hyper connections:
//!
//! 1. warm latency: one client, sequential requests, one tenant (so a warm environment);
//! 2. throughput: several clients for a fixed time, one tenant (so as many environments);
//! 3. cold starts: sequential invocations, each by a new tenant (so a new environment);
//! 4. environment creation: K new tenants at once by a few clients, in environments per second;
//! 5. memory per idle environment: of those K, what the platform's processes (the `bwrap`s and
//!    the init, not the function's runtime) hold, by PSS and with the kernel's side added;
//! 6. a new tenant's first call from a tenant-ready pool (PutProvisionedConcurrencyConfig), each
//!    with the pool full, right after a few warm calls;
//! 7. what hardening costs: once that server is stopped, cold starts on two fresh servers, one
//!    started with `--no-hardening` (no seccomp filters, writable root), interleaved;
//! 8. cold starts per runtime, on a fresh server;
//! 9. many tenants cycling through one function on a fresh server with a memory budget
//!    (`--memory-budget-mb`): in windows of tenants, latency, live environments against the
//!    budget's bound, and the memory of the server's process tree.
//!
//! It is not a timed test: it prints figures with their baselines and ratios, and checks them
//! against targets. The machines it runs on are shared and noisy, so it reports medians and
//! p99, measures the baseline in the same run, and interleaves echo and Invoke (in chunks of
//! requests, or slices of time) so noise lands on both alike. The run fails only when more than
//! 1% of the invocations fail.

mod cycle;
mod envs;
mod gateway;
mod mem;
mod net;
mod observability;
mod pool;
mod registry;
mod report;
mod runtimes;
mod security;
mod server;
mod stats;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::envs::{Creation, Hardening, Memory};
use crate::net::{Conn, EchoServer, Endpoint, Tally, call_once, join_clients, timed_call};
use crate::report::{Row, Target, Unit, format_table};
use crate::server::ServerProcess;
use crate::stats::{Summary, round2};

/// What `quarters bench` can be told.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Make every count about 5x smaller (and the throughput run 1.5 s).
    #[arg(long)]
    pub quick: bool,
    /// Sequential warm invocations (and as many echoes) [default: 2000, quick 400].
    #[arg(long, value_name = "N")]
    pub requests: Option<usize>,
    /// Seconds of the throughput run, for Invoke and for the echo each [default: 5, quick 1.5].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Concurrent clients (keep-alive connections) of the throughput run.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub clients: usize,
    /// Sequential invocations each by a new tenant [default: 200, quick 40].
    #[arg(long, value_name = "N")]
    pub cold: Option<usize>,
    /// New environments started at once for the creation rate and the memory per idle
    /// environment [default: 100, quick 30].
    #[arg(long, value_name = "K")]
    pub envs: Option<usize>,
    /// Concurrent clients starting those environments.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub env_clients: usize,
    /// Cold starts per runtime (native, Python, Node.js) and as many bare starts of each
    /// [default: 40, quick 10].
    #[arg(long, value_name = "N")]
    pub runtime_cold: Option<usize>,
    /// Cold starts on each of the hardened and the unhardened server [default: as --cold].
    #[arg(long, value_name = "N")]
    pub hardening_cold: Option<usize>,
    /// New tenants' first calls served from a tenant-ready pool, each with the pool full
    /// [default: 100, quick 30].
    #[arg(long, value_name = "N")]
    pub pool_calls: Option<usize>,
    /// Distinct tenants cycling through one function on a server with a memory budget of
    /// 2048 MB, each invoked once; 0 skips it [default: 10000, quick 1000].
    #[arg(long, value_name = "N")]
    pub cycle_tenants: Option<usize>,
    /// Concurrent clients of the cycling tenants (at most the 16 environments the budget holds).
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub cycle_clients: usize,
    /// What to measure: `core` (invoke latency, throughput, cold starts, environments,
    /// tenant-ready pools, hardening, runtimes, tenants cycling under a memory budget) or `observability` (log ingest, logging cost, Insights query
    /// latency over a million records, the metrics registry with 10,000 tenants).
    /// `gateway` (what the API gateway adds per request beside a direct Invoke, without an
    /// authorizer, with a cached TOKEN authorizer and with the JWT authorizer).
    /// `security` (SigV4 verification, IAM evaluation with 100 statements, S3 PUT/GET of 4 KiB
    /// and 4 MiB beside local disk). `runtimes` (only the cold starts per runtime beside the
    /// bare starts of their programs).
    #[arg(long, default_value = "core", value_parser = ["core", "observability", "gateway", "security", "runtimes"])]
    pub suite: String,
    /// Where to write the results as JSON [default: bench-results/bench-<unix-seconds>.json].
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// The `quarters` binary to start as the server; the `probe` binary is looked for next to
    /// it [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub quarters: Option<PathBuf>,
}

/// The first targets.
const TARGET_WARM_P50_US: f64 = 1000.0;
const TARGET_THROUGHPUT: f64 = 5000.0;
const TARGET_COLD_P50_MS: f64 = 25.0;
/// The sandbox-hardening issue's targets.
const TARGET_ENVS_PER_SEC: f64 = 100.0;
const TARGET_PLATFORM_MIB: f64 = 2.0;
const TARGET_HARDENING_PERCENT: f64 = 20.0;
const MAX_ERROR_PERCENT: f64 = 1.0;
/// Issue 4's targets: a new tenant's first call from a tenant-ready pool costs at most this many
/// warm calls (p50); with many tenants cycling under a memory budget, the live environments stay
/// within the budget, the memory of the server's process tree does not grow from the first
/// window to the last by more than this, and nor does the calls' p99 (the last quarter of the
/// windows against the first).
const TARGET_POOL_WARM_RATIO: f64 = 2.0;
const TARGET_CYCLE_GROWTH_PERCENT: f64 = 10.0;
const TARGET_CYCLE_P99_RATIO: f64 = 1.5;
/// The managed-runtimes issue's target: what the platform adds to a runtime's own start.
const TARGET_RUNTIME_ADDED_MS: f64 = 10.0;

const FUNCTION: &str = "bench-probe";
/// The MemorySize of every function the bench deploys.
const MEMORY_MB: u32 = 128;
const WARM_TENANT: &str = "bench-warm";
const PAYLOAD: &[u8] = br#"{"action":"echo"}"#;
/// Warm latency alternates between echo and Invoke every this many requests.
const CHUNK: usize = 100;
const STEPS: usize = 12;

/// How much of everything, from the arguments.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    warm_requests: usize,
    warmup_requests: usize,
    duration: Duration,
    warmup_duration: Duration,
    clients: usize,
    cold: usize,
    cold_warmup: usize,
    envs: usize,
    env_clients: usize,
    hardening_cold: usize,
    runtime_cold: usize,
    pool_calls: usize,
    cycle_tenants: usize,
    cycle_clients: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> Result<Self> {
        let q = args.quick;
        let warm_requests = args.requests.unwrap_or(if q { 400 } else { 2000 });
        let secs = args.duration.unwrap_or(if q { 1.5 } else { 5.0 });
        if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
            bail!("--duration must be a number of seconds between 0 and 3600");
        }
        if args.clients == 0 || args.clients > 1024 {
            bail!("--clients must be between 1 and 1024");
        }
        if warm_requests == 0 {
            bail!("--requests must be at least 1");
        }
        let cold = args.cold.unwrap_or(if q { 40 } else { 200 });
        if cold == 0 {
            bail!("--cold must be at least 1");
        }
        let envs = args.envs.unwrap_or(if q { 30 } else { 100 });
        if envs == 0 || envs > 2000 {
            bail!("--envs must be between 1 and 2000");
        }
        if args.env_clients == 0 || args.env_clients > 1024 {
            bail!("--env-clients must be between 1 and 1024");
        }
        let runtime_cold = args.runtime_cold.unwrap_or(if q { 10 } else { 40 });
        if runtime_cold == 0 {
            bail!("--runtime-cold must be at least 1");
        }
        let hardening_cold = args.hardening_cold.unwrap_or(cold);
        if hardening_cold == 0 {
            bail!("--hardening-cold must be at least 1");
        }
        let pool_calls = args.pool_calls.unwrap_or(if q { 30 } else { 100 });
        if pool_calls == 0 {
            bail!("--pool-calls must be at least 1");
        }
        let cycle_tenants = args.cycle_tenants.unwrap_or(if q { 1000 } else { 10_000 });
        if cycle_tenants > 1_000_000 {
            bail!("--cycle-tenants must be at most 1000000");
        }
        let bound = cycle::BUDGET_MB / u64::from(MEMORY_MB);
        if args.cycle_clients == 0 || args.cycle_clients as u64 > bound {
            bail!("--cycle-clients must be between 1 and {bound} (the environments the memory budget holds)");
        }
        Ok(Plan {
            warm_requests,
            warmup_requests: (warm_requests / 10).clamp(20, 200),
            duration: Duration::from_secs_f64(secs),
            warmup_duration: Duration::from_millis(if q { 300 } else { 500 }),
            clients: args.clients,
            cold,
            cold_warmup: if q { 2 } else { 3 },
            envs,
            env_clients: args.env_clients,
            hardening_cold,
            runtime_cold,
            pool_calls,
            cycle_tenants,
            cycle_clients: args.cycle_clients,
        })
    }

    /// The throughput run alternates echo and Invoke in slices of about a second.
    fn slices(&self) -> u32 {
        (self.duration.as_secs_f64().round() as u32).max(1)
    }
}

fn step(n: usize, what: &str) {
    eprintln!("[{n}/{STEPS}] {what}");
}

fn detail(what: &str) {
    eprintln!("      {what}");
}

/// Run the bench: start a server, deploy, measure, print the table to stdout and write JSON.
pub async fn run(args: BenchArgs) -> Result<()> {
    let plan = Plan::from_args(&args)?;
    let quarters = match &args.quarters {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let probe = probe_path(&quarters);
    if !probe.is_file() {
        bail!("no probe function binary at {}: build with cargo build --release --workspace", probe.display());
    }
    let zip = zip_bootstrap(&std::fs::read(&probe).with_context(|| format!("reading {}", probe.display()))?)?;
    if args.suite == "security" {
        let out = args.out.clone().unwrap_or_else(|| default_out_path(unix_now()).with_extension("security.json"));
        return security::run(&out, args.quick).await;
    }
    if args.suite == "gateway" {
        let out = args.out.clone().unwrap_or_else(|| default_out_path(unix_now()).with_extension("gateway.json"));
        return gateway::run(&quarters, &zip, &out, args.quick).await;
    }
    if args.suite == "observability" {
        let out = args.out.clone().unwrap_or_else(|| default_out_path(unix_now()).with_extension("observability.json"));
        return observability::run(&quarters, &zip, &out, args.quick).await;
    }
    if args.suite == "runtimes" {
        let out = args.out.clone().unwrap_or_else(|| default_out_path(unix_now()).with_extension("runtimes.json"));
        return runtimes_only(&plan, &quarters, &probe, &zip, &out).await;
    }

    step(1, &format!("starting the server: {} serve (fresh data dir, idle timeout 600 s)", quarters.display()));
    let started = Instant::now();
    let server = ServerProcess::start(&quarters, true).await?;
    detail(&format!("serving at {} after {} ms", server.addr, started.elapsed().as_millis()));
    // Ctrl-C ends a measurement, not the bench: its servers are still stopped (and waited for).
    let measured = tokio::select! {
        m = measure(&plan, &server, &zip) => m,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    let stopping = Instant::now();
    server.stop().await;
    detail(&format!("server stopped after {} ms", stopping.elapsed().as_millis()));
    let mut m = measured?;
    // Hardening on against off, on two fresh servers (so neither has the first one's hundreds of
    // idle environments), after the first one has ended its own.
    let compared = tokio::select! {
        h = compare_hardening(&plan, &quarters, &zip, &mut m.invoke_errors) => h,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    m.hardening = compared?;
    // Cold starts per runtime, on a fresh server of their own (no hundreds of idle environments).
    let per_runtime = tokio::select! {
        r = runtimes_on_fresh_server(&plan, &quarters, &probe, &zip, &mut m.invoke_errors) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    m.runtimes = per_runtime?;
    // Many tenants through one function under a memory budget, on a fresh server of its own.
    if plan.cycle_tenants > 0 {
        let cycled = tokio::select! {
            c = cycle_on_fresh_server(&plan, &quarters, &zip, &mut m.invoke_errors) => c,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        m.cycle = Some(cycled?);
    }

    let rows = rows(&m, &plan);
    let out = args.out.clone().unwrap_or_else(|| default_out_path(unix_now()));
    step(STEPS, &format!("results (also in {})", out.display()));
    print!("{}", format_table(&rows));
    let doc = results_json(&m, &plan, &rows, &quarters);
    write_json(&out, &doc)?;
    let failed_percent = m.invoke_errors.percent();
    if failed_percent > MAX_ERROR_PERCENT {
        bail!(
            "{} of {} invocations failed ({:.2}%, more than {MAX_ERROR_PERCENT}%); the first: {}",
            m.invoke_errors.errors,
            m.invoke_errors.attempts,
            failed_percent,
            m.invoke_errors.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}

/// `probe` next to the `quarters` binary.
fn probe_path(quarters: &Path) -> PathBuf {
    quarters.parent().unwrap_or_else(|| Path::new(".")).join("probe")
}

/// A zip holding one executable as `bootstrap`.
fn zip_bootstrap(exe: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("bootstrap", opts)?;
    w.write_all(exe)?;
    Ok(w.finish()?.into_inner())
}

/// Everything measured.
struct Measured {
    warm_invoke: Summary,
    warm_echo: Summary,
    tp_invoke: Throughput,
    tp_echo: Throughput,
    warm_tenant_envs: Option<usize>,
    cold: Summary,
    creation: Creation,
    memory: Option<Memory>,
    hardening: Hardening,
    runtimes: Vec<runtimes::RuntimeCold>,
    pool: pool::PoolFirst,
    cycle: Option<cycle::Cycle>,
    invoke_errors: Book,
    echo_errors: Book,
}

#[derive(Debug, Clone, Copy)]
struct Throughput {
    ok: usize,
    elapsed: Duration,
    latency: Summary,
}

impl Throughput {
    fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }
}

/// Every call of one kind, warm-ups included: how many, and how many failed.
#[derive(Debug, Default)]
struct Book {
    attempts: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Book {
    /// Count the calls of a tally; its latencies go on to their own summary.
    fn keep(&mut self, t: Tally) -> Vec<Duration> {
        self.attempts += t.attempts();
        self.errors += t.errors;
        if self.first_error.is_none() {
            self.first_error = t.first_error;
        }
        t.latencies
    }

    fn percent(&self) -> f64 {
        error_percent(self.errors, self.attempts)
    }
}

async fn measure(plan: &Plan, server: &ServerProcess, zip: &[u8]) -> Result<Measured> {
    step(
        2,
        &format!(
            "deploying probe ({} KiB zipped) as {FUNCTION} (PER_TENANT); starting the echo baseline",
            zip.len() / 1024
        ),
    );
    deploy(server, zip).await?;
    let echo_server = EchoServer::start()?;
    let path = format!("/2015-03-31/functions/{FUNCTION}/invocations");
    let payload = Bytes::from_static(PAYLOAD);
    let invoke = Endpoint { addr: server.addr, path: path.clone(), payload: payload.clone(), is_invoke: true };
    let echo = Endpoint { addr: echo_server.addr, path, payload, is_invoke: false };
    let first = first_invoke(&invoke).await?;
    detail(&format!("first invoke of tenant {WARM_TENANT} (a cold start) took {:.1} ms", first.as_secs_f64() * 1e3));
    let mut invoke_errors = Book::default();
    let mut echo_errors = Book::default();

    // Warm latency: one connection each, chunks of echo and Invoke in turn.
    step(
        3,
        &format!(
            "warm latency: {} invokes (tenant {WARM_TENANT}) and {} echoes, 1 client, after {} of each to warm up...",
            plan.warm_requests, plan.warm_requests, plan.warmup_requests
        ),
    );
    let mut ic = Conn::open(invoke.addr).await?;
    let mut ec = Conn::open(echo.addr).await?;
    let mut wi = Tally::default();
    let mut we = Tally::default();
    for _ in 0..plan.warmup_requests {
        timed_call(&mut ec, &echo, WARM_TENANT, &mut we).await?;
        timed_call(&mut ic, &invoke, WARM_TENANT, &mut wi).await?;
    }
    invoke_errors.keep(std::mem::take(&mut wi));
    echo_errors.keep(std::mem::take(&mut we));
    let mut done = 0;
    while done < plan.warm_requests {
        let n = CHUNK.min(plan.warm_requests - done);
        for _ in 0..n {
            timed_call(&mut ec, &echo, WARM_TENANT, &mut we).await?;
        }
        for _ in 0..n {
            timed_call(&mut ic, &invoke, WARM_TENANT, &mut wi).await?;
        }
        done += n;
    }
    let warm_invoke = Summary::of(&invoke_errors.keep(wi));
    let warm_echo = Summary::of(&echo_errors.keep(we));
    detail(&format!(
        "invoke p50 {:.0} µs p99 {:.0} µs; echo p50 {:.0} µs p99 {:.0} µs",
        warm_invoke.p50, warm_invoke.p99, warm_echo.p50, warm_echo.p99
    ));

    // Throughput: `clients` connections each, slices of echo and Invoke in turn.
    step(
        4,
        &format!(
            "throughput: {} clients for {:.1} s of invokes (tenant {WARM_TENANT}) and {:.1} s of echoes, in {} slice(s) each...",
            plan.clients,
            plan.duration.as_secs_f64(),
            plan.duration.as_secs_f64(),
            plan.slices()
        ),
    );
    let mut iconns = open_all(invoke.addr, plan.clients).await?;
    let mut econns = open_all(echo.addr, plan.clients).await?;
    let (c, t, _) = run_clients(econns, &echo, WARM_TENANT, plan.warmup_duration).await?;
    econns = c;
    echo_errors.keep(t);
    let (c, t, _) = run_clients(iconns, &invoke, WARM_TENANT, plan.warmup_duration).await?;
    iconns = c;
    invoke_errors.keep(t);
    let slice = plan.duration / plan.slices();
    let (mut ti, mut te) = (Tally::default(), Tally::default());
    let (mut ti_time, mut te_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..plan.slices() {
        let (c, t, el) = run_clients(econns, &echo, WARM_TENANT, slice).await?;
        econns = c;
        te.merge(t);
        te_time += el;
        let (c, t, el) = run_clients(iconns, &invoke, WARM_TENANT, slice).await?;
        iconns = c;
        ti.merge(t);
        ti_time += el;
    }
    drop((iconns, econns));
    let lat = invoke_errors.keep(ti);
    let tp_invoke = Throughput { ok: lat.len(), elapsed: ti_time, latency: Summary::of(&lat) };
    let lat = echo_errors.keep(te);
    let tp_echo = Throughput { ok: lat.len(), elapsed: te_time, latency: Summary::of(&lat) };
    let warm_tenant_envs = count_envs(server, WARM_TENANT).await;
    detail(&format!(
        "invoke {:.0}/s, echo {:.0}/s; tenant {WARM_TENANT} has {} environment(s)",
        tp_invoke.per_sec(),
        tp_echo.per_sec(),
        warm_tenant_envs.map_or("?".to_string(), |n| n.to_string())
    ));

    // Cold starts: one connection, a new tenant every time.
    step(
        5,
        &format!("cold start: {} invokes, each by a new tenant, after {} to warm up...", plan.cold, plan.cold_warmup),
    );
    let mut tc = Tally::default();
    for i in 0..plan.cold_warmup {
        timed_call(&mut ic, &invoke, &format!("cold-warmup-{i}-{}", uuid::Uuid::new_v4()), &mut tc).await?;
    }
    invoke_errors.keep(std::mem::take(&mut tc));
    for i in 0..plan.cold {
        timed_call(&mut ic, &invoke, &format!("cold-{i}-{}", uuid::Uuid::new_v4()), &mut tc).await?;
    }
    let cold = Summary::of(&invoke_errors.keep(tc));
    detail(&format!("p50 {:.2} ms p99 {:.2} ms", cold.p50 / 1e3, cold.p99 / 1e3));
    drop(echo_server);
    drop(ic);

    // Environment creation: K new tenants by a few clients at once; memory before and after.
    step(
        6,
        &format!(
            "environment creation: {} new tenants by {} concurrent clients, as fast as they go...",
            plan.envs,
            plan.env_clients.min(plan.envs)
        ),
    );
    let server_pid = server.pid().context("the server has no pid")?;
    tokio::time::sleep(envs::SETTLE).await;
    let before = envs::before(server_pid);
    let (t, elapsed) = envs::create(&invoke, plan.envs, plan.env_clients).await?;
    let latency = Summary::of(&invoke_errors.keep(t));
    let creation = Creation { attempted: plan.envs, clients: plan.env_clients.min(plan.envs), elapsed, latency };
    detail(&format!(
        "{} environments in {:.0} ms: {:.0}/s; each invoke p50 {:.2} ms p99 {:.2} ms",
        creation.created(),
        elapsed.as_secs_f64() * 1e3,
        creation.per_sec(),
        latency.p50 / 1e3,
        latency.p99 / 1e3
    ));

    step(7, &format!("memory of the {} new idle environments (PSS by process; /proc/meminfo; cgroups)...", plan.envs));
    tokio::time::sleep(envs::SETTLE).await;
    let memory = match before.and_then(|b| envs::after(server_pid, &b)) {
        Ok(m) if m.envs() > 0 => {
            describe_memory(&m, plan.envs);
            Some(m)
        }
        Ok(_) => {
            detail("no new environment found among the server's child processes: no memory figures");
            None
        }
        Err(e) => {
            detail(&format!("cannot read the processes' memory ({e:#}): no memory figures"));
            None
        }
    };

    // A tenant-ready pool: after the memory figures, so its tenants' environments are not
    // among those measured or beside them.
    step(
        8,
        &format!(
            "tenant-ready pool: {} (PER_TENANT) published, a pool of {}; {} new tenants' first and second calls, each with the pool full, after {} warm calls (tenant {WARM_TENANT}; the last {} counted)...",
            pool::FUNCTION,
            pool::SIZE,
            plan.pool_calls,
            pool::WARM_BESIDE,
            pool::WARM_BESIDE - pool::WAKE_UP
        ),
    );
    let mut calls = Tally::default();
    let measured_pool =
        pool::measure(server, zip, &invoke, WARM_TENANT, plan.pool_calls, plan.cold_warmup, &mut calls).await;
    invoke_errors.keep(calls);
    let pool = measured_pool?;
    detail(&format!(
        "first call p50 {:.0} µs p99 {:.0} µs; warm beside it p50 {:.0} µs p99 {:.0} µs: {:.2}x ({:.2}x the warm p50 of step 3); the second call p50 {:.0} µs; {} of {} served from the pool; the pool filled in {:.0} ms, refilled in {:.0} ms (p50)",
        pool.first.p50,
        pool.first.p99,
        pool.warm.p50,
        pool.warm.p99,
        pool.ratio(),
        report::ratio(pool.first.p50, Some(warm_invoke.p50)).unwrap_or(0.0),
        pool.second.p50,
        pool.served_from_pool,
        pool.first.count,
        pool.initial_fill.as_secs_f64() * 1e3,
        pool.refill.p50 / 1e3
    ));

    Ok(Measured {
        warm_invoke,
        warm_echo,
        tp_invoke,
        tp_echo,
        warm_tenant_envs,
        cold,
        creation,
        memory,
        hardening: Hardening::default(),
        runtimes: Vec::new(),
        pool,
        cycle: None,
        invoke_errors,
        echo_errors,
    })
}

/// Many tenants through one function on a fresh server with a memory budget.
async fn cycle_on_fresh_server(plan: &Plan, quarters: &Path, zip: &[u8], book: &mut Book) -> Result<cycle::Cycle> {
    step(
        11,
        &format!(
            "{} new tenants cycling through {} (MemorySize {MEMORY_MB} MB) on a new server with --memory-budget-mb {} (at most {} environments), {} clients, in windows of {}...",
            plan.cycle_tenants,
            cycle::FUNCTION,
            cycle::BUDGET_MB,
            cycle::BUDGET_MB / u64::from(MEMORY_MB),
            plan.cycle_clients,
            cycle::window_size(plan.cycle_tenants)
        ),
    );
    let budget = ["--memory-budget-mb".to_string(), cycle::BUDGET_MB.to_string()];
    let server = ServerProcess::start_with(quarters, true, &budget).await?;
    let mut calls = Tally::default();
    let measured = cycle::measure(&server, zip, plan.cycle_tenants, plan.cycle_clients, &mut calls, detail).await;
    server.stop().await;
    book.keep(calls);
    let c = measured?;
    let (first, last) = (c.first_latency(), c.last_latency());
    detail(&format!(
        "{} tenants in {:.1} s ({:.0}/s); environments max {} (bound {}), sandboxes max {}; p99 {:.1} ms in the first {} window(s), {:.1} ms in the last {}: {:.2}x; PSS of server + sandboxes {:+.1}% from the first window to the last (the server's own {:+.2} KiB per tenant); {} error(s)",
        c.latency().count,
        c.elapsed.as_secs_f64(),
        c.per_sec(),
        c.max_envs().map_or("?".to_string(), |n| n.to_string()),
        c.bound(),
        c.max_sandboxes(),
        first.p99 / 1e3,
        c.edge(),
        last.p99 / 1e3,
        c.edge(),
        c.p99_ratio(),
        c.pss_growth_percent().unwrap_or(0.0),
        c.server_kib_per_tenant().unwrap_or(0.0),
        c.errors()
    ));
    Ok(c)
}

async fn runtimes_on_fresh_server(
    plan: &Plan,
    quarters: &Path,
    probe: &Path,
    zip: &[u8],
    book: &mut Book,
) -> Result<Vec<runtimes::RuntimeCold>> {
    step(
        10,
        &format!(
            "cold starts per runtime on a new server: {} new tenants each, in turn with a bare start of the same program...",
            plan.runtime_cold
        ),
    );
    let server = ServerProcess::start(quarters, true).await?;
    let mut calls = Tally::default();
    let measured = runtimes::measure(&server, probe, zip, plan.runtime_cold, &mut calls, detail).await;
    server.stop().await;
    book.keep(calls);
    measured
}

/// `--suite runtimes`: only the cold starts per runtime beside their bare starts.
async fn runtimes_only(plan: &Plan, quarters: &Path, probe: &Path, zip: &[u8], out: &Path) -> Result<()> {
    let mut book = Book::default();
    let measured = tokio::select! {
        r = runtimes_on_fresh_server(plan, quarters, probe, zip, &mut book) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    }?;
    let rows = runtime_rows(&measured);
    step(STEPS, &format!("results (also in {})", out.display()));
    print!("{}", format_table(&rows));
    let doc = json!({
        "suite": "runtimes",
        "quarters": quarters.display().to_string(),
        "runtime_cold": plan.runtime_cold,
        "runtimes": measured.iter().map(runtimes::RuntimeCold::to_json).collect::<Vec<_>>(),
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    write_json(out, &doc)?;
    let failed = book.percent();
    if failed > MAX_ERROR_PERCENT {
        bail!("{failed:.2}% of the cold starts failed; the first: {}", book.first_error.as_deref().unwrap_or("?"));
    }
    Ok(())
}

/// Cold starts with and without the hardening: two fresh servers, one started with
/// `--no-hardening`, the same function deployed on both, new tenants on both in turn.
async fn compare_hardening(plan: &Plan, quarters: &Path, zip: &[u8], book: &mut Book) -> Result<Hardening> {
    step(
        9,
        &format!(
            "hardening: two new servers, one with --no-hardening; {} cold starts on each, interleaved in chunks of {}...",
            plan.hardening_cold,
            envs::HARDENING_CHUNK
        ),
    );
    let started = Instant::now();
    let (on, off) = tokio::join!(ServerProcess::start(quarters, true), ServerProcess::start(quarters, false));
    let (on, off) = match (on, off) {
        (Ok(on), Ok(off)) => (on, off),
        (on, off) => {
            // Stop whichever did start before reporting why the other did not.
            let mut err = None;
            for s in [on, off] {
                match s {
                    Ok(s) => s.stop().await,
                    Err(e) => err = err.or(Some(e)),
                }
            }
            return Err(err.unwrap_or_else(|| anyhow::anyhow!("a server did not start")));
        }
    };
    detail(&format!(
        "serving at {} (hardened) and {} (not) after {} ms",
        on.addr,
        off.addr,
        started.elapsed().as_millis()
    ));
    let measured = async {
        tokio::try_join!(deploy(&on, zip), deploy(&off, zip))?;
        let path = format!("/2015-03-31/functions/{FUNCTION}/invocations");
        let ep = |addr| Endpoint { addr, path: path.clone(), payload: Bytes::from_static(PAYLOAD), is_invoke: true };
        envs::interleaved_cold([&ep(on.addr), &ep(off.addr)], plan.hardening_cold, plan.cold_warmup).await
    }
    .await;
    let stopping = Instant::now();
    tokio::join!(on.stop(), off.stop());
    detail(&format!("both stopped after {} ms", stopping.elapsed().as_millis()));
    let ([w_on, w_off], [t_on, t_off]) = measured?;
    book.keep(w_on);
    book.keep(w_off);
    let h = Hardening { on: Summary::of(&book.keep(t_on)), off: Summary::of(&book.keep(t_off)) };
    detail(&format!(
        "cold start p50 {:.2} ms hardened, {:.2} ms not: {:.3}x ({:+.1}%); p99 {:.2} / {:.2} ms",
        h.on.p50 / 1e3,
        h.off.p50 / 1e3,
        h.ratio(),
        h.cost_percent(),
        h.on.p99 / 1e3,
        h.off.p99 / 1e3
    ));
    Ok(h)
}

/// The progress lines of the memory figures.
fn describe_memory(m: &Memory, expected: usize) {
    let n = m.envs().max(1) as f64;
    let per = |kb: u64| kb as f64 / n / 1024.0;
    let u = &m.usage;
    detail(&format!(
        "found {} new environments (of {expected}; {} processes unreadable) beside {} older ones; the server had {} fds open",
        m.envs(),
        u.unreadable,
        m.existing_envs,
        m.server_fds_before
    ));
    detail(&format!(
        "per environment, PSS: platform {:.2} MiB (bwrap x{:.0} {:.2}, init {:.2}: anon {:.2}, file {:.2}); runtime {:.2} MiB",
        m.platform_pss_mib(),
        u.bwrap.processes as f64 / n,
        per(u.bwrap.pss),
        per(u.init.pss),
        per(u.platform().pss_anon),
        per(u.platform().pss_file),
        m.runtime_pss_mib()
    ));
    let d = |a: u64, b: u64| (a as f64 - b as f64) / n / 1024.0;
    let (b, a) = (m.meminfo_before, m.meminfo_after);
    detail(&format!(
        "per environment, /proc/meminfo: AnonPages {:+.2}, PageTables {:+.2}, KernelStack {:+.2}, SUnreclaim {:+.2} MiB; less the runtime's {:.2} (anon, page tables, stacks) and others' {:+.2}: platform {:.2} MiB (server's share {:+.2})",
        d(a.anon_pages, b.anon_pages),
        d(a.page_tables, b.page_tables),
        d(a.kernel_stack, b.kernel_stack),
        d(a.sunreclaim, b.sunreclaim),
        per(m.runtime_kernel_counted_kb()),
        m.others_anon_delta_kb as f64 / n / 1024.0,
        m.kernel_inclusive_mib(),
        m.server_mib()
    ));
    if let Some(ms) = m.cpu_ms_per_env() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        detail(&format!(
            "CPU per new environment: {ms:.1} ms (server {:.1}, bwrap {:.1}, init {:.1}, runtime {:.1}): at most {:.0}/s on {cores} cores",
            m.server_cpu_ms.unwrap_or(0.0) / n,
            u.bwrap.cpu_ns as f64 / 1e6 / n,
            u.init.cpu_ns as f64 / 1e6 / n,
            u.runtime.cpu_ns as f64 / 1e6 / n,
            m.cpu_bound_rate(cores).unwrap_or(0.0)
        ));
    }
    let c = &u.cgroup;
    if let Some(cg) = m.cgroup_platform_mib() {
        detail(&format!(
            "per environment, memory cgroup: {:.2} MiB charged (anon {:.2}, kernel {:.2}); less the runtime's: platform {:.2} MiB",
            per(c.total),
            per(c.anon),
            per(c.kernel),
            cg
        ));
    }
}

async fn deploy(server: &ServerProcess, zip: &[u8]) -> Result<()> {
    deploy_function(server, FUNCTION, "provided.al2023", "bootstrap", zip).await
}

/// Create a PER_TENANT function and wait until it is Active.
async fn deploy_function(server: &ServerProcess, name: &str, runtime: &str, handler: &str, zip: &[u8]) -> Result<()> {
    deploy_with(server, name, runtime, handler, zip, true).await
}

/// A PER_TENANT function from a container image (`PackageType: Image`), once Active (pulled).
async fn deploy_image(server: &ServerProcess, name: &str, image_uri: &str) -> Result<()> {
    let body = json!({
        "FunctionName": name,
        "PackageType": "Image",
        "Role": "arn:aws:iam::000000000000:role/bench",
        "Code": { "ImageUri": image_uri },
        "MemorySize": MEMORY_MB,
        "Timeout": 10,
        "TenancyConfig": { "TenantIsolationMode": "PER_TENANT" },
    });
    create_and_wait(server, name, body).await
}

/// Create a function (PER_TENANT or not) and wait until it is Active.
async fn deploy_with(
    server: &ServerProcess,
    name: &str,
    runtime: &str,
    handler: &str,
    zip: &[u8],
    per_tenant: bool,
) -> Result<()> {
    let mut body = json!({
        "FunctionName": name,
        "Runtime": runtime,
        "Role": "arn:aws:iam::000000000000:role/bench",
        "Handler": handler,
        "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
        "MemorySize": MEMORY_MB,
        "Timeout": 10,
    });
    if per_tenant {
        body["TenancyConfig"] = json!({ "TenantIsolationMode": "PER_TENANT" });
    }
    create_and_wait(server, name, body).await
}

/// CreateFunction with `body`, then wait until the function is Active.
async fn create_and_wait(server: &ServerProcess, name: &str, body: Value) -> Result<()> {
    let (status, _, resp) =
        call_once(server.addr, http::Method::POST, "/2015-03-31/functions", Some(Bytes::from(body.to_string())))
            .await
            .context("CreateFunction")?;
    if !status.is_success() {
        bail!("CreateFunction answered {status}: {}", String::from_utf8_lossy(&resp));
    }
    // Lambda clients wait for the function to be Active before invoking it; so does the bench.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, resp) =
            call_once(server.addr, http::Method::GET, &format!("/2015-03-31/functions/{name}"), None).await?;
        let v: Value = serde_json::from_slice(&resp).unwrap_or(Value::Null);
        let state = v["Configuration"]["State"].as_str().unwrap_or("");
        if status.is_success() && (state == "Active" || state.is_empty()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the function is not Active after 30 s (GetFunction: {status}, State {state:?})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first invoke, checked for what the probe must answer.
async fn first_invoke(invoke: &Endpoint) -> Result<Duration> {
    let mut conn = Conn::open(invoke.addr).await?;
    let start = Instant::now();
    let (status, headers, body) = conn.send(invoke.request(WARM_TENANT)?).await?;
    let took = start.elapsed();
    let fe = headers.get("x-amz-function-error").map(|v| v.to_str().unwrap_or("?").to_owned());
    if let Err(e) = net::check_response(status.as_u16(), fe.as_deref()) {
        bail!("the first invoke failed: {e}: {}", String::from_utf8_lossy(&body));
    }
    let v: Value = serde_json::from_slice(&body).context("the probe's answer is not JSON")?;
    if v["tenantId"] != WARM_TENANT || v["payload"]["action"] != "echo" {
        bail!("the probe's answer is not an echo for tenant {WARM_TENANT}: {v}");
    }
    Ok(took)
}

async fn open_all(addr: std::net::SocketAddr, n: usize) -> Result<Vec<Conn>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(Conn::open(addr).await?);
    }
    Ok(out)
}

/// Every connection sends requests back to back until `dur` is over; returns the connections,
/// the merged tally and the wall time until the last response.
async fn run_clients(
    conns: Vec<Conn>,
    ep: &Endpoint,
    tenant: &str,
    dur: Duration,
) -> Result<(Vec<Conn>, Tally, Duration)> {
    let start = Instant::now();
    let until = start + dur;
    let handles: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let ep = ep.clone();
            let tenant = tenant.to_owned();
            tokio::spawn(async move {
                let mut t = Tally::default();
                while Instant::now() < until {
                    timed_call(&mut conn, &ep, &tenant, &mut t).await?;
                }
                Ok::<_, anyhow::Error>((conn, t))
            })
        })
        .collect();
    let (conns, tally) = join_clients(handles).await?;
    Ok((conns, tally, start.elapsed()))
}

/// How many environments one tenant of the bench function has (diagnostic only).
async fn count_envs(server: &ServerProcess, tenant: &str) -> Option<usize> {
    let path = format!("/quarters/v1/environments?function={FUNCTION}");
    let (status, _, body) = call_once(server.addr, http::Method::GET, &path, None).await.ok()?;
    if !status.is_success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    Some(v["Environments"].as_array()?.iter().filter(|e| e["Tenant"] == tenant).count())
}

fn error_percent(errors: u64, attempts: u64) -> f64 {
    if attempts == 0 { 0.0 } else { 100.0 * errors as f64 / attempts as f64 }
}

/// Each runtime's cold start beside its bare start, and what the platform adds.
fn runtime_rows(runtimes: &[runtimes::RuntimeCold]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in runtimes {
        rows.push(
            Row::new(format!("cold start p50, {}", r.label), Unit::Millis, r.cold.p50 / 1e3)
                .baseline("bare start", r.bare.p50 / 1e3),
        );
        rows.push(
            Row::new(format!("platform adds, {}", r.label), Unit::Millis, r.added_ms())
                .target(Target::AtMost(TARGET_RUNTIME_ADDED_MS)),
        );
    }
    rows
}

fn rows(m: &Measured, plan: &Plan) -> Vec<Row> {
    let (wi, we) = (&m.warm_invoke, &m.warm_echo);
    let (ti, te) = (&m.tp_invoke, &m.tp_echo);
    let mut rows = vec![
        Row::new("warm invoke p50", Unit::Micros, wi.p50)
            .baseline("echo", we.p50)
            .target(Target::AtMost(TARGET_WARM_P50_US)),
        Row::new("warm invoke p90", Unit::Micros, wi.p90).baseline("echo", we.p90),
        Row::new("warm invoke p99", Unit::Micros, wi.p99).baseline("echo", we.p99),
        Row::new("warm invoke mean", Unit::Micros, wi.mean).baseline("echo", we.mean),
        Row::new(format!("throughput, {} clients", plan.clients), Unit::PerSec, ti.per_sec())
            .baseline("echo", te.per_sec())
            .target(Target::AtLeast(TARGET_THROUGHPUT)),
        Row::new("throughput p50", Unit::Micros, ti.latency.p50).baseline("echo", te.latency.p50),
        Row::new("throughput p99", Unit::Micros, ti.latency.p99).baseline("echo", te.latency.p99),
        Row::new("new-tenant cold start p50", Unit::Millis, m.cold.p50 / 1e3)
            .baseline("warm", wi.p50 / 1e3)
            .target(Target::AtMost(TARGET_COLD_P50_MS)),
        Row::new("new-tenant cold start p99", Unit::Millis, m.cold.p99 / 1e3).baseline("warm", wi.p99 / 1e3),
    ];
    let c = &m.creation;
    rows.push(
        Row::new(format!("environments started, {} clients", c.clients), Unit::PerSec, c.per_sec())
            .target(Target::AtLeast(TARGET_ENVS_PER_SEC)),
    );
    rows.push(
        Row::new(format!("cold start p50, {} clients", c.clients), Unit::Millis, c.latency.p50 / 1e3)
            .baseline("1 client", m.cold.p50 / 1e3),
    );
    if let Some(ms) = m.memory.as_ref().and_then(Memory::cpu_ms_per_env) {
        rows.push(Row::new("CPU per new environment", Unit::Millis, ms));
    }
    if let Some(mem) = &m.memory {
        rows.push(
            Row::new("platform memory/idle env, PSS", Unit::Mib, mem.platform_pss_mib())
                .target(Target::AtMost(TARGET_PLATFORM_MIB)),
        );
        rows.push(
            Row::new("platform memory/idle env, +kernel", Unit::Mib, mem.kernel_inclusive_mib())
                .target(Target::AtMost(TARGET_PLATFORM_MIB)),
        );
        if let Some(cg) = mem.cgroup_platform_mib() {
            rows.push(Row::new("platform memory/idle env, cgroup", Unit::Mib, cg));
        }
        rows.push(Row::new("runtime PSS/idle env (probe)", Unit::Mib, mem.runtime_pss_mib()));
    }
    let p = &m.pool;
    rows.push(
        Row::new("pool first call p50", Unit::Micros, p.first.p50)
            .baseline("warm", p.warm.p50)
            .target(Target::AtMost(TARGET_POOL_WARM_RATIO * p.warm.p50)),
    );
    rows.push(Row::new("pool first call p99", Unit::Micros, p.first.p99).baseline("warm", p.warm.p99));
    let h = &m.hardening;
    rows.push(
        Row::new("cold start p50, hardened", Unit::Millis, h.on.p50 / 1e3).baseline("unhardened", h.off.p50 / 1e3),
    );
    rows.push(
        Row::new("cold start p99, hardened", Unit::Millis, h.on.p99 / 1e3).baseline("unhardened", h.off.p99 / 1e3),
    );
    rows.push(
        Row::new("hardening cost, cold p50", Unit::Percent, h.cost_percent())
            .target(Target::AtMost(TARGET_HARDENING_PERCENT)),
    );
    rows.extend(runtime_rows(&m.runtimes));
    if let Some(c) = &m.cycle {
        let bound = c.bound() as f64;
        let n = c.tenants;
        if let Some(envs) = c.max_envs() {
            rows.push(
                Row::new(format!("live envs max, {n} tenants cycling"), Unit::Count, envs as f64)
                    .baseline("budget", bound)
                    .target(Target::AtMost(bound)),
            );
        }
        rows.push(Row::new("sandboxes max, cycling", Unit::Count, c.max_sandboxes() as f64).baseline("budget", bound));
        if let Some((first, last)) = c.first_last_pss() {
            rows.push(
                Row::new("server+sandboxes PSS, last window", Unit::Mib, last as f64 / 1024.0)
                    .baseline("first", first as f64 / 1024.0)
                    .target(Target::AtMost((1.0 + TARGET_CYCLE_GROWTH_PERCENT / 100.0) * first as f64 / 1024.0)),
            );
        }
        if let Some((first, last)) = c.first_last_sandboxes_pss() {
            rows.push(
                Row::new("of which sandboxes", Unit::Mib, last as f64 / 1024.0)
                    .baseline("first", first as f64 / 1024.0),
            );
        }
        if let Some((first, last)) = c.first_last_server_pss() {
            rows.push(
                Row::new("of which the server", Unit::Mib, last as f64 / 1024.0)
                    .baseline("first", first as f64 / 1024.0),
            );
        }
        let (first, last) = (c.first_latency(), c.last_latency());
        rows.push(
            Row::new("cycling p50, last windows", Unit::Millis, last.p50 / 1e3).baseline("first", first.p50 / 1e3),
        );
        rows.push(
            Row::new("cycling p99, last windows", Unit::Millis, last.p99 / 1e3)
                .baseline("first", first.p99 / 1e3)
                .target(Target::AtMost(TARGET_CYCLE_P99_RATIO * first.p99 / 1e3)),
        );
        rows.push(Row::new("cycling tenants/s", Unit::PerSec, c.per_sec()));
    }
    rows.push(
        Row::new("failed invocations", Unit::Percent, m.invoke_errors.percent())
            .target(Target::AtMost(MAX_ERROR_PERCENT)),
    );
    rows
}

fn throughput_json(t: &Throughput) -> Value {
    json!({
        "requests": t.ok,
        "elapsed_s": round2(t.elapsed.as_secs_f64()),
        "per_s": round2(t.per_sec()),
        "latency": t.latency.to_json(),
    })
}

fn results_json(m: &Measured, plan: &Plan, rows: &[Row], quarters: &Path) -> Value {
    json!({
        "timestamp": unix_now(),
        "quarters": quarters.display().to_string(),
        "git": git_info(quarters),
        "machine": machine_info(),
        "config": {
            "warm_requests": plan.warm_requests,
            "warmup_requests": plan.warmup_requests,
            "throughput_clients": plan.clients,
            "throughput_duration_s": plan.duration.as_secs_f64(),
            "cold_starts": plan.cold,
            "new_environments": plan.envs,
            "environment_clients": plan.env_clients,
            "hardening_cold_starts": plan.hardening_cold,
            "runtime_cold_starts": plan.runtime_cold,
            "pool_calls": plan.pool_calls,
            "pool_size": pool::SIZE,
            "cycle_tenants": plan.cycle_tenants,
            "cycle_clients": plan.cycle_clients,
            "cycle_window": cycle::window_size(plan.cycle_tenants),
            "cycle_budget_mb": cycle::BUDGET_MB,
            "memory_size_mb": MEMORY_MB,
        },
        "metrics": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "targets_met": rows.iter().all(|r| r.met() != Some(false)),
        "warm": { "invoke": m.warm_invoke.to_json(), "echo": m.warm_echo.to_json() },
        "throughput": {
            "invoke": throughput_json(&m.tp_invoke),
            "echo": throughput_json(&m.tp_echo),
            "environments_of_tenant": m.warm_tenant_envs,
        },
        "cold": { "latency": m.cold.to_json(), "p50_ms": round2(m.cold.p50 / 1e3), "p99_ms": round2(m.cold.p99 / 1e3) },
        "environment_creation": m.creation.to_json(),
        "memory": m.memory.map(Memory::to_json),
        "hardening": m.hardening.to_json(),
        "runtimes": m.runtimes.iter().map(runtimes::RuntimeCold::to_json).collect::<Vec<_>>(),
        "pool": {
            "first_call_p50_us": round2(m.pool.first.p50),
            "first_call_p99_us": round2(m.pool.first.p99),
            "warm_p50_us": round2(m.pool.warm.p50),
            "second_call_p50_us": round2(m.pool.second.p50),
            "ratio_to_warm_p50": (m.pool.ratio() * 1000.0).round() / 1000.0,
            "ratio_to_warm_step_p50": (report::ratio(m.pool.first.p50, Some(m.warm_invoke.p50)).unwrap_or(0.0) * 1000.0).round() / 1000.0,
            "ratio_to_cold_p50": (report::ratio(m.pool.first.p50, Some(m.cold.p50)).unwrap_or(0.0) * 1000.0).round() / 1000.0,
            "details": m.pool.to_json(),
        },
        "cycle": m.cycle.as_ref().map(cycle::Cycle::to_json),
        "errors": {
            "invokes": m.invoke_errors.attempts,
            "failed": m.invoke_errors.errors,
            "first": m.invoke_errors.first_error,
            "echoes": m.echo_errors.attempts,
            "echo_failed": m.echo_errors.errors,
            "echo_first": m.echo_errors.first_error,
        },
    })
}

fn write_json(path: &Path, doc: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(doc)?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn default_out_path(unix_secs: u64) -> PathBuf {
    PathBuf::from("bench-results").join(format!("bench-{unix_secs}.json"))
}

/// The `model name` of the first CPU in `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_string())
    })
}

fn machine_info() -> Value {
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().as_deref().and_then(cpu_model),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
    })
}

/// The commit the benchmarked binary was (probably) built from: that of the repository holding
/// it, else that of the working directory.
fn git_info(quarters: &Path) -> Value {
    let git = |dir: Option<&Path>, args: &[&str]| {
        let mut cmd = std::process::Command::new("git");
        cmd.args(args).stderr(std::process::Stdio::null());
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let out = cmd.output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    for dir in [quarters.parent(), None] {
        if let Some(commit) = git(dir, &["rev-parse", "HEAD"]).filter(|c| !c.is_empty()) {
            let dirty = git(dir, &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
            return json!({ "commit": commit, "dirty": dirty });
        }
    }
    Value::Null
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchArgs {
        BenchArgs {
            quick: false,
            requests: None,
            duration: None,
            clients: 4,
            cold: None,
            envs: None,
            env_clients: 8,
            hardening_cold: None,
            runtime_cold: None,
            pool_calls: None,
            cycle_tenants: None,
            cycle_clients: 4,
            suite: "core".into(),
            out: None,
            quarters: None,
        }
    }

    #[test]
    fn plans() -> Result<()> {
        let full = Plan::from_args(&args())?;
        assert_eq!(full.warm_requests, 2000);
        assert_eq!(full.duration, Duration::from_secs(5));
        assert_eq!(full.cold, 200);
        assert_eq!(full.slices(), 5);
        assert_eq!((full.envs, full.env_clients, full.hardening_cold), (100, 8, 200));
        assert_eq!((full.pool_calls, full.cycle_tenants, full.cycle_clients), (100, 10_000, 4));
        let quick = Plan::from_args(&BenchArgs { quick: true, ..args() })?;
        assert_eq!(quick.warm_requests, 400);
        assert_eq!(quick.duration, Duration::from_millis(1500));
        assert_eq!(quick.cold, 40);
        assert_eq!(quick.slices(), 2);
        assert_eq!((quick.envs, quick.hardening_cold), (30, 40));
        assert_eq!((quick.pool_calls, quick.cycle_tenants), (30, 1000));
        assert_eq!(Plan::from_args(&BenchArgs { cycle_tenants: Some(0), ..args() })?.cycle_tenants, 0);
        assert!(Plan::from_args(&BenchArgs { pool_calls: Some(0), ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { cycle_clients: 0, ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { cycle_clients: 17, ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { cycle_clients: 16, ..args() }).is_ok());
        let custom = Plan::from_args(&BenchArgs { quick: true, requests: Some(10), cold: Some(3), ..args() })?;
        assert_eq!((custom.warm_requests, custom.warmup_requests, custom.cold), (10, 20, 3));
        assert!(Plan::from_args(&BenchArgs { duration: Some(0.0), ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { clients: 0, ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { envs: Some(0), ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { env_clients: 0, ..args() }).is_err());
        assert!(Plan::from_args(&BenchArgs { hardening_cold: Some(0), ..args() }).is_err());
        assert_eq!(Plan::from_args(&BenchArgs { cold: Some(7), ..args() })?.hardening_cold, 7);
        assert_eq!(Plan::from_args(&BenchArgs { duration: Some(0.2), ..args() })?.slices(), 1);
        Ok(())
    }

    #[test]
    fn cpu_model_is_found() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t: fpu\n\nprocessor\t: 1\nmodel name\t: other\n";
        assert_eq!(cpu_model(info).as_deref(), Some("Intel(R) Xeon(R) Processor"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn paths() {
        assert_eq!(default_out_path(1700000000), PathBuf::from("bench-results/bench-1700000000.json"));
        assert_eq!(probe_path(Path::new("/x/target/release/quarters")), PathBuf::from("/x/target/release/probe"));
    }

    #[test]
    fn error_percentages() {
        assert_eq!(error_percent(0, 0), 0.0);
        assert_eq!(error_percent(1, 200), 0.5);
        assert!(error_percent(3, 200) > MAX_ERROR_PERCENT);
    }

    #[test]
    fn bootstrap_zip_is_executable() -> Result<()> {
        let zip = zip_bootstrap(b"#!/bin/sh\n")?;
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip))?;
        let f = archive.by_name("bootstrap")?;
        assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
        assert_eq!(f.size(), 10);
        Ok(())
    }

    #[test]
    fn books_count_every_call() {
        let mut book = Book::default();
        let mut t = Tally::default();
        t.latencies.push(Duration::from_millis(1));
        t.latencies.push(Duration::from_millis(2));
        t.error("boom".into());
        let lat = book.keep(t);
        assert_eq!(lat.len(), 2);
        assert_eq!((book.attempts, book.errors), (3, 1));
        assert_eq!(book.first_error.as_deref(), Some("boom"));
        let mut t = Tally::default();
        t.latencies.push(Duration::from_millis(1));
        book.keep(t);
        assert_eq!(book.attempts, 4);
        assert_eq!(book.percent(), 25.0);
    }

    #[test]
    fn rows_check_the_targets() {
        let s = |p50: f64| Summary { count: 1, min: p50, p50, p90: p50, p99: p50, max: p50, mean: p50 };
        let tp = |ok| Throughput { ok, elapsed: Duration::from_secs(1), latency: s(100.0) };
        let m = Measured {
            warm_invoke: s(800.0),
            warm_echo: s(50.0),
            tp_invoke: tp(4000),
            tp_echo: tp(40000),
            warm_tenant_envs: Some(4),
            cold: s(20_000.0),
            creation: Creation {
                attempted: 100,
                clients: 8,
                elapsed: Duration::from_millis(800),
                latency: Summary { count: 100, ..s(60_000.0) },
            },
            memory: None,
            hardening: Hardening { on: s(11_000.0), off: s(10_000.0) },
            runtimes: vec![runtimes::RuntimeCold {
                label: "python3.11".into(),
                cold: s(70_000.0),
                bare: s(25_000.0),
                bare_command: "/usr/bin/python3 -c pass".into(),
            }],
            pool: pool::PoolFirst { size: 4, first: s(1000.0), warm: s(400.0), ..pool::PoolFirst::default() },
            cycle: None,
            invoke_errors: Book { attempts: 200, errors: 1, first_error: None },
            echo_errors: Book::default(),
        };
        let plan = Plan::from_args(&args()).expect("plan");
        let rows = rows(&m, &plan);
        let met: Vec<Option<bool>> = rows.iter().map(Row::met).filter(Option::is_some).collect();
        // warm, throughput, cold, environments/s, pool first call, hardening cost, Python's added
        // start, failures.
        assert_eq!(
            met,
            vec![Some(true), Some(false), Some(true), Some(true), Some(false), Some(true), Some(false), Some(true)]
        );
        assert!(rows.iter().any(|r| r.name == "pool first call p50" && r.baseline == Some(400.0)));
        assert!(rows.iter().any(|r| r.name == "platform adds, python3.11" && (r.value - 45.0).abs() < 1e-9));
        assert!(rows.iter().any(|r| r.name == "environments started, 8 clients" && r.value == 125.0));
        assert!(rows.iter().any(|r| r.name == "hardening cost, cold p50" && (r.value - 10.0).abs() < 1e-9));
        assert!(!rows.iter().any(|r| r.unit == Unit::Mib));
        assert!(rows.iter().any(|r| r.name == "failed invocations" && r.value == 0.5));
        let doc = results_json(&m, &plan, &rows, Path::new("/nonexistent/quarters"));
        assert_eq!(doc["targets_met"], json!(false));
        assert_eq!(doc["metrics"].as_array().map(Vec::len), Some(rows.len()));
        assert_eq!(doc["throughput"]["environments_of_tenant"], json!(4));
        assert_eq!(doc["errors"]["invokes"], json!(200));
        assert_eq!(doc["errors"]["failed"], json!(1));
        assert_eq!(doc["environment_creation"]["per_s"], json!(125.0));
        assert_eq!(doc["memory"], Value::Null);
        assert_eq!(doc["hardening"]["ratio_p50"], json!(1.1));
        assert_eq!(doc["runtimes"][0]["added_p50_ms"], json!(45.0));
        assert_eq!(doc["pool"]["ratio_to_warm_p50"], json!(2.5));
        assert_eq!(doc["pool"]["ratio_to_cold_p50"], json!(0.05));
        assert_eq!(doc["cycle"], Value::Null);

        // With a cycling run: the live environments, memory and p99 rows, each checked.
        let w = |first_tenant, ms: u64, pss_kib, envs| cycle::Window {
            first_tenant,
            tenants: 1,
            latencies: vec![Duration::from_millis(ms)],
            errors: 0,
            elapsed: Duration::from_millis(100),
            peak: cycle::Peak { envs: Some(envs), sandboxes: envs, samples: 1 },
            end: cycle::TreeSample { tree_pss: pss_kib, ..cycle::TreeSample::default() },
        };
        let m = Measured {
            cycle: Some(cycle::Cycle {
                tenants: 2,
                clients: 1,
                budget_mb: 2048,
                memory_mb: 128,
                windows: vec![w(0, 20, 50 * 1024, 16), w(1, 40, 52 * 1024, 17)],
                elapsed: Duration::from_millis(200),
            }),
            ..m
        };
        let rows = super::rows(&m, &plan);
        let find = |name: &str| rows.iter().find(|r| r.name == name).cloned();
        assert_eq!(find("live envs max, 2 tenants cycling").and_then(|r| r.met()), Some(false));
        assert_eq!(find("server+sandboxes PSS, last window").and_then(|r| r.met()), Some(true));
        assert_eq!(find("cycling p99, last windows").and_then(|r| r.met()), Some(false));
        let doc = results_json(&m, &plan, &rows, Path::new("/nonexistent/quarters"));
        assert_eq!(doc["cycle"]["max_environments"], json!(17));
    }
}

//! `quarters bench --suite observability`: the log store's ingest rate, the cost of logging on
//! warm invokes (a function that logs against one that does not, in the same run), Logs Insights
//! tenant-query latency over a million stored records, and the memory of the metrics registry
//! with 10,000 tenants.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use quarters_telemetry::insights::Query;
use quarters_telemetry::metrics::{Metrics, Outcome};
use quarters_telemetry::{LogRecord, LogStore};
use quarters_types::TenantId;
use serde_json::{Value, json};

use crate::net::{Conn, Endpoint, Tally, timed_call};
use crate::report::{Row, Target, Unit, format_table};
use crate::server::ServerProcess;
use crate::stats::Summary;

const TARGET_LOGGING_COST_PERCENT: f64 = 10.0;
const TARGET_QUERY_MS: f64 = 200.0;

fn step(n: usize, what: &str) {
    eprintln!("[{n}/5] {what}");
}

fn detail(what: &str) {
    eprintln!("      {what}");
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn record(i: u64, tenants: u64, now: u64) -> LogRecord {
    let tenant = format!("tenant-{}", i % tenants);
    let message = json!({
        "timestamp": "2026-01-01T00:00:00Z", "level": "INFO", "requestId": format!("req-{i}"),
        "message": format!("order {i} placed"), "tenantId": tenant,
    })
    .to_string();
    LogRecord {
        ts_ms: now + i / 1000,
        log_group: "/aws/lambda/bench".into(),
        log_stream: format!("2026/01/01/[$LATEST]{:032x}", i % tenants).into(),
        function: "bench".into(),
        version: "$LATEST".into(),
        tenant: TenantId::parse(&tenant).ok(),
        request_id: None,
        message,
    }
}

/// Append `n` records as fast as the queue takes them (waiting when it is full, so none is
/// dropped), and time until the writer has stored them all.
fn ingest(store: &LogStore, n: u64, tenants: u64) -> Duration {
    let now = quarters_types::time::now_ms();
    let before = store.written();
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        if store.append(record(i, tenants, now)) {
            i += 1;
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    while store.written() - before < n {
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

pub async fn run(quarters: &Path, probe_zip: &[u8], out: &Path, quick: bool) -> Result<()> {
    let records: u64 = if quick { 200_000 } else { 1_000_000 };
    let tenants: u64 = 1_000;
    let dir = tempfile::Builder::new().prefix("quarters-bench-logs-").tempdir()?;
    let store = Arc::new(LogStore::open(&dir.path().join("logs.db"))?);

    step(1, &format!("log ingest: {records} JSON records of {tenants} tenants into a new logs.db..."));
    let s = store.clone();
    let took = tokio::task::spawn_blocking(move || ingest(&s, records, tenants)).await?;
    let rate = records as f64 / took.as_secs_f64();
    detail(&format!(
        "{records} records stored in {:.2} s: {rate:.0}/s (none lost: the bench waited {} times on a full queue, where an invocation's record would be dropped and counted)",
        took.as_secs_f64(),
        store.dropped()
    ));

    step(2, &format!("Logs Insights tenant query over the {records} stored records, 20 runs..."));
    let q = Query::parse(
        "fields @logStream, @message | filter tenantId=='tenant-7' or record.tenantId=='tenant-7' | stats count() as n by @logStream",
    )
    .map_err(anyhow::Error::msg)?;
    let mut lat = Vec::new();
    let mut matched = 0;
    for _ in 0..20 {
        let (s, q) = (store.clone(), q.clone());
        let (d, m) = tokio::task::spawn_blocking(move || -> Result<(Duration, usize)> {
            let t = Instant::now();
            let events = s.query_events(
                &["/aws/lambda/bench".to_string()],
                0,
                u64::MAX / 2,
                q.tenant_hint().as_deref(),
                500_000,
            )?;
            let (_, m) = quarters_telemetry::insights::run(&q, &events);
            Ok((t.elapsed(), m))
        })
        .await??;
        lat.push(d);
        matched = m;
    }
    let query = Summary::of(&lat);
    detail(&format!("p50 {:.1} ms, p99 {:.1} ms; {matched} records matched", query.p50 / 1e3, query.p99 / 1e3));

    step(3, "metrics registry: 10,000 tenants, one invocation each...");
    let before = rss_kib();
    let metrics = Metrics::new(100);
    for i in 0..10_000 {
        metrics.invoked(
            "bench",
            Some(&format!("tenant-{i}")),
            Outcome { error: false, cold_start: i % 2 == 0, duration: Duration::from_micros(500 + i), init: None },
        );
    }
    let grown_kib = rss_kib().saturating_sub(before);
    let t = Instant::now();
    let text = metrics.render(&Default::default());
    let render = t.elapsed();
    detail(&format!(
        "{} series held, +{:.1} MiB RSS; exposition {} KiB in {:.1} ms (top 100 tenants + __other__)",
        metrics.series_count(),
        grown_kib as f64 / 1024.0,
        text.len() / 1024,
        render.as_secs_f64() * 1e3
    ));

    step(4, "logging cost on warm invokes: a function logging 10 lines per call against the same one logging none...");
    let server = ServerProcess::start(quarters, true).await?;
    let measured = logging_cost(&server, probe_zip, if quick { 400 } else { 2000 }).await;
    server.stop().await;
    let (off, on) = measured?;
    let cost = (on.p50 / off.p50 - 1.0) * 100.0;
    detail(&format!("warm p50 {:.0} µs without logs, {:.0} µs with 10 lines: {cost:+.1}%", off.p50, on.p50));

    step(5, &format!("results (also in {})", out.display()));
    let rows = vec![
        Row::new("log ingest (records stored)", Unit::PerSec, rate),
        Row::new("Insights tenant query p50, 1M records", Unit::Millis, query.p50 / 1e3)
            .target(Target::AtMost(TARGET_QUERY_MS)),
        Row::new("Insights tenant query p99", Unit::Millis, query.p99 / 1e3),
        Row::new("metrics registry, 10k tenants", Unit::Mib, grown_kib as f64 / 1024.0),
        Row::new("warm invoke p50, logging 10 lines", Unit::Micros, on.p50).baseline("no logs", off.p50),
        Row::new("logging cost, warm p50", Unit::Percent, cost).target(Target::AtMost(TARGET_LOGGING_COST_PERCENT)),
    ];
    print!("{}", format_table(&rows));
    let doc = json!({
        "suite": "observability",
        "records": records,
        "tenants": tenants,
        "ingest": { "seconds": took.as_secs_f64(), "per_s": rate, "queue_full_waits": store.dropped() },
        "insights_query": { "latency": query.to_json(), "matched": matched },
        "metrics_registry": { "tenants": 10_000, "rss_growth_kib": grown_kib, "render_ms": render.as_secs_f64() * 1e3 },
        "logging_cost": { "off": off.to_json(), "on": on.to_json(), "percent": cost },
        "metrics": rows.iter().map(Row::to_json).collect::<Vec<Value>>(),
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Warm p50 of the probe echoing (no log lines) and printing 10 lines, alternating in chunks.
async fn logging_cost(server: &ServerProcess, zip: &[u8], n: usize) -> Result<(Summary, Summary)> {
    crate::deploy_function(server, "bench-logs", "provided.al2023", "bootstrap", zip).await?;
    let path = "/2015-03-31/functions/bench-logs/invocations".to_string();
    let lines: Vec<String> =
        (0..10).map(|i| format!("log line {i} of a warm invocation, about eighty bytes long......")).collect();
    let quiet = Endpoint {
        addr: server.addr,
        path: path.clone(),
        payload: Bytes::from_static(br#"{"action":"echo"}"#),
        is_invoke: true,
    };
    let loud = Endpoint {
        addr: server.addr,
        path,
        payload: Bytes::from(json!({ "action": "print", "lines": lines }).to_string()),
        is_invoke: true,
    };
    let mut conn = Conn::open(server.addr).await?;
    let (mut off, mut on, mut warm) = (Tally::default(), Tally::default(), Tally::default());
    for _ in 0..50 {
        timed_call(&mut conn, &quiet, "bench-logs", &mut warm).await?;
        timed_call(&mut conn, &loud, "bench-logs", &mut warm).await?;
    }
    let mut done = 0;
    while done < n {
        for _ in 0..50 {
            timed_call(&mut conn, &quiet, "bench-logs", &mut off).await?;
        }
        for _ in 0..50 {
            timed_call(&mut conn, &loud, "bench-logs", &mut on).await?;
        }
        done += 50;
    }
    if off.errors + on.errors > 0 {
        anyhow::bail!("invocations failed: {}", off.first_error.or(on.first_error).unwrap_or_default());
    }
    Ok((Summary::of(&off.latencies), Summary::of(&on.latencies)))
}

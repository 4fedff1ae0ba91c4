//! A new tenant's first invocation served from a tenant-ready pool (PutProvisionedConcurrencyConfig
//! on a PER_TENANT function): an environment that has run its init and never served anyone,
//! bound to the tenant at this call. Measured beside warm invocations of one tenant, interleaved
//! call by call so that noise lands on both alike.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::net::{Conn, Endpoint, Tally, timed_call};
use crate::server::ServerProcess;
use crate::stats::{Summary, round2};

/// The function the pool is configured on (the same probe as the bench's function).
pub const FUNCTION: &str = "bench-pool";
/// Environments the pool keeps ready.
pub const SIZE: u32 = 4;
/// Warm invocations (of the bench's warm tenant) right before each pool call: the first
/// [`WAKE_UP`] wake the invoke path after the pause (each is 2-4 times slower than the next),
/// the rest are the baseline, so that it and the pool call find the machine in the same state.
pub const WARM_BESIDE: usize = 10;
pub const WAKE_UP: usize = 5;
/// Once the pool is full again, a moment for its newest environment's start to settle (its
/// runtime's first `/next`, the background preparation of a spare scratch disk) before the next
/// calls, so they see a quiet pool, not its refill.
pub const SETTLE: Duration = Duration::from_millis(50);
/// How long the pool may take to fill (at the start, and after each call).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often its status is asked for while it fills.
const POLL: Duration = Duration::from_millis(5);

/// What the pool's first calls took, beside warm calls.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PoolFirst {
    pub size: u32,
    /// Each a new tenant's first invocation, with the pool full before it.
    pub first: Summary,
    /// Warm invocations of one tenant right before each pool call (the last
    /// [`WARM_BESIDE`] - [`WAKE_UP`]).
    pub warm: Summary,
    /// The same tenant's second call, right after its first: its environment's first warm call.
    pub second: Summary,
    /// Pool calls after which the pool was found one short at once: taken from the pool (the
    /// others were served some other way, e.g. a cold start).
    pub served_from_pool: usize,
    /// From the response to the tenant's second call (about a millisecond after its first) to
    /// the pool being full again.
    pub refill: Summary,
    /// How long the pool took to fill after it was configured.
    pub initial_fill: Duration,
}

impl PoolFirst {
    /// First call p50 / warm p50.
    pub fn ratio(&self) -> f64 {
        if self.warm.p50 > 0.0 { self.first.p50 / self.warm.p50 } else { 0.0 }
    }

    /// First call p50 / the same environment's second call's p50.
    pub fn ratio_to_second(&self) -> f64 {
        if self.second.p50 > 0.0 { self.first.p50 / self.second.p50 } else { 0.0 }
    }

    pub fn to_json(self) -> Value {
        json!({
            "size": self.size,
            "first_call": self.first.to_json(),
            "warm_beside": self.warm.to_json(),
            "second_call": self.second.to_json(),
            "ratio_to_second_p50": (self.ratio_to_second() * 1000.0).round() / 1000.0,
            "warm_calls_per_pool_call": WARM_BESIDE,
            "warm_calls_uncounted": WAKE_UP,
            "ratio_p50": (self.ratio() * 1000.0).round() / 1000.0,
            "served_from_pool": self.served_from_pool,
            "refill": self.refill.to_json(),
            "refill_p50_ms": round2(self.refill.p50 / 1e3),
            "initial_fill_ms": round2(self.initial_fill.as_secs_f64() * 1e3),
            "settle_ms": SETTLE.as_millis() as u64,
        })
    }
}

/// The pool's status: (available, requested, READY).
fn parse_status(v: &Value) -> Option<(u64, u64, bool)> {
    Some((
        v["AvailableProvisionedConcurrentExecutions"].as_u64()?,
        v["RequestedProvisionedConcurrentExecutions"].as_u64()?,
        v["Status"].as_str()? == "READY",
    ))
}

/// GetProvisionedConcurrencyConfig: how many environments the pool has ready.
async fn available(conn: &mut Conn, path: &str) -> Result<(u64, bool)> {
    let (status, _, body) = conn.call(Method::GET, path, None).await.context("GetProvisionedConcurrencyConfig")?;
    if !status.is_success() {
        bail!("GetProvisionedConcurrencyConfig answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let v: Value = serde_json::from_slice(&body).context("GetProvisionedConcurrencyConfig's answer is not JSON")?;
    let (avail, _, ready) = parse_status(&v).with_context(|| format!("GetProvisionedConcurrencyConfig: {v}"))?;
    Ok((avail, ready))
}

/// Poll until the pool is READY with `size` environments; returns the first answer's count and
/// the time it took.
async fn wait_full(conn: &mut Conn, path: &str, size: u32) -> Result<(u64, Duration)> {
    let start = Instant::now();
    let mut first = None;
    loop {
        let (avail, ready) = available(conn, path).await?;
        first.get_or_insert(avail);
        if ready && avail >= u64::from(size) {
            return Ok((first.unwrap_or(avail), start.elapsed()));
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!("the pool of {FUNCTION} has {avail} of {size} environments ready after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deploy the pool's function, publish a version, give it a pool of [`SIZE`], then `n` new
/// tenants' first calls (after `warmup` uncounted ones), each with the pool full and settled
/// and right after [`WARM_BESIDE`] warm calls of `warm_tenant` on `warm`, and followed by the
/// same tenant's second call. Every call's outcome is added to `calls`.
pub async fn measure(
    server: &ServerProcess,
    zip: &[u8],
    warm: &Endpoint,
    warm_tenant: &str,
    n: usize,
    warmup: usize,
    calls: &mut Tally,
) -> Result<PoolFirst> {
    crate::deploy_function(server, FUNCTION, "provided.al2023", "bootstrap", zip).await?;
    let mut control = Conn::open(server.addr).await?;
    let (status, _, body) = control
        .call(Method::POST, &format!("/2015-03-31/functions/{FUNCTION}/versions"), Some(Bytes::from_static(b"{}")))
        .await
        .context("PublishVersion")?;
    if !status.is_success() {
        bail!("PublishVersion answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let v: Value = serde_json::from_slice(&body).context("PublishVersion's answer is not JSON")?;
    let version = v["Version"].as_str().with_context(|| format!("PublishVersion answered no Version: {v}"))?.to_owned();
    let config = format!("/2019-09-30/functions/{FUNCTION}/provisioned-concurrency?Qualifier={version}");
    let put = json!({ "ProvisionedConcurrentExecutions": SIZE }).to_string();
    let (status, _, body) =
        control.call(Method::PUT, &config, Some(Bytes::from(put))).await.context("PutProvisionedConcurrencyConfig")?;
    if !status.is_success() {
        bail!("PutProvisionedConcurrencyConfig answered {status}: {}", String::from_utf8_lossy(&body));
    }
    let (_, initial_fill) = wait_full(&mut control, &config, SIZE).await?;

    let pooled = Endpoint {
        addr: server.addr,
        path: format!("/2015-03-31/functions/{FUNCTION}/invocations?Qualifier={version}"),
        payload: warm.payload.clone(),
        is_invoke: true,
    };
    let mut conn = Conn::open(server.addr).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (mut first, mut second, mut beside) = (Tally::default(), Tally::default(), Tally::default());
    let mut uncounted = Tally::default();
    let mut refills = Vec::with_capacity(n);
    let mut served_from_pool = 0;
    for i in 0..warmup + n {
        tokio::time::sleep(SETTLE).await;
        let counted = i >= warmup;
        for k in 0..WARM_BESIDE {
            let into = if counted && k >= WAKE_UP { &mut beside } else { &mut uncounted };
            timed_call(&mut conn, warm, warm_tenant, into).await?;
        }
        let tenant = format!("pool-{i}-{run}");
        timed_call(&mut conn, &pooled, &tenant, if counted { &mut first } else { &mut uncounted }).await?;
        timed_call(&mut conn, &pooled, &tenant, if counted { &mut second } else { &mut uncounted }).await?;
        let (avail_after, refill) = wait_full(&mut control, &config, SIZE).await?;
        if counted {
            refills.push(refill);
            if avail_after < u64::from(SIZE) {
                served_from_pool += 1;
            }
        }
    }
    let out = PoolFirst {
        size: SIZE,
        first: Summary::of(&first.latencies),
        warm: Summary::of(&beside.latencies),
        second: Summary::of(&second.latencies),
        served_from_pool,
        refill: Summary::of(&refills),
        initial_fill,
    };
    calls.merge(uncounted);
    calls.merge(beside);
    calls.merge(first);
    calls.merge(second);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read() {
        let v = json!({
            "RequestedProvisionedConcurrentExecutions": 4,
            "AvailableProvisionedConcurrentExecutions": 3,
            "AllocatedProvisionedConcurrentExecutions": 3,
            "Status": "IN_PROGRESS",
        });
        assert_eq!(parse_status(&v), Some((3, 4, false)));
        let v = json!({
            "RequestedProvisionedConcurrentExecutions": 4,
            "AvailableProvisionedConcurrentExecutions": 4,
            "Status": "READY",
        });
        assert_eq!(parse_status(&v), Some((4, 4, true)));
        assert_eq!(parse_status(&json!({ "Status": "READY" })), None);
    }

    #[test]
    fn ratio_to_warm() {
        let s = |p50: f64| Summary { count: 1, p50, ..Summary::default() };
        let p = PoolFirst { first: s(900.0), warm: s(450.0), second: s(600.0), ..PoolFirst::default() };
        assert!((p.ratio() - 2.0).abs() < 1e-9);
        assert_eq!(p.to_json()["ratio_p50"], json!(2.0));
        assert_eq!(p.to_json()["ratio_to_second_p50"], json!(1.5));
        assert_eq!(PoolFirst { warm: s(0.0), ..p }.ratio(), 0.0);
    }
}

//! `quarters bench --suite security`: what tenant-scoped credentials and storage cost. SigV4
//! verification per request (beside one SHA-256 of a 1 KiB request, in the same run), IAM
//! policy evaluation with 100 statements (beside one statement), and S3 PUT/GET throughput for
//! 4 KiB and 4 MiB objects through the store's HTTP service (beside writing the same bytes to a
//! local file with the same durability — write, fsync, rename — and reading them back).

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::report::{Row, Unit, format_table};

fn step(n: usize, what: &str) {
    eprintln!("[{n}/4] {what}");
}

fn per_op_ns(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e9 / n as f64
}

/// Median of `runs` timings of `f`, each over `n` operations, in ns per operation.
fn median_ns(runs: usize, n: usize, mut f: impl FnMut(usize) -> Duration) -> f64 {
    let mut v: Vec<f64> = (0..runs).map(|_| per_op_ns(f(n), n)).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Local disk with the store's durability: each file written to a temp name, fsynced, renamed;
/// then each read back. Returns (put, get) durations.
fn disk_roundtrip(dir: &Path, size: usize, n: usize) -> Result<(Duration, Duration)> {
    let data = vec![7u8; size];
    let t = Instant::now();
    for i in 0..n {
        let tmp = dir.join(format!("{i}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(format!("{i}.obj")))?;
    }
    std::fs::File::open(dir)?.sync_all()?;
    let put = t.elapsed();
    let t = Instant::now();
    let mut buf = Vec::with_capacity(size);
    for i in 0..n {
        buf.clear();
        std::fs::File::open(dir.join(format!("{i}.obj")))?.read_to_end(&mut buf)?;
        black_box(&buf);
    }
    Ok((put, t.elapsed()))
}

pub async fn run(out: &Path, quick: bool) -> Result<()> {
    let n_sig = if quick { 20_000 } else { 100_000 };
    step(1, &format!("SigV4 verification: {n_sig} verifications of a signed Lambda Invoke, 5 runs..."));
    let verify = median_ns(5, n_sig, quarters_sigv4::bench_verify);
    let block = vec![1u8; 1024];
    let sha = median_ns(5, n_sig, |n| {
        use sha2::Digest;
        let t = Instant::now();
        for _ in 0..n {
            black_box(sha2::Sha256::digest(black_box(&block)));
        }
        t.elapsed()
    });
    eprintln!("      {verify:.0} ns per verification; one SHA-256 of 1 KiB: {sha:.0} ns");

    step(2, "IAM policy evaluation: a role with 100 statements (the match in the last) against one...");
    let n_eval = if quick { 20_000 } else { 100_000 };
    let big = quarters_iam::fixtures::tenant_policy(100).map_err(|e| anyhow::anyhow!("{e}"))?;
    let small = quarters_iam::fixtures::tenant_policy(1).map_err(|e| anyhow::anyhow!("{e}"))?;
    let ctx = quarters_iam::fixtures::tenant_context("blue");
    let resource = quarters_iam::fixtures::tenant_resource("blue");
    let req = quarters_iam::Request { action: quarters_iam::fixtures::ACTION, resource: &resource, context: &ctx };
    let eval = |doc: &quarters_iam::PolicyDocument, n: usize| {
        let t = Instant::now();
        for _ in 0..n {
            black_box(quarters_iam::evaluate_session(&[black_box(doc)], None, &req));
        }
        t.elapsed()
    };
    let allowed = quarters_iam::evaluate_session(&[&big], None, &req);
    anyhow::ensure!(allowed.is_allowed(), "the 100-statement fixture must allow its tenant's request");
    let eval100 = median_ns(5, n_eval, |n| eval(&big, n));
    let eval1 = median_ns(5, n_eval, |n| eval(&small, n));
    eprintln!("      {eval100:.0} ns with 100 statements, {eval1:.0} ns with one");

    let sizes: [(usize, usize, &str); 2] =
        [(4 * 1024, if quick { 100 } else { 400 }, "4 KiB"), (4 * 1024 * 1024, if quick { 8 } else { 24 }, "4 MiB")];
    step(3, "S3 PUT and GET through the store's HTTP service, beside the same bytes on local disk...");
    let mut s3_rows = Vec::new();
    let mut rows = vec![
        Row::new("SigV4 verification per request", Unit::Micros, verify / 1e3).baseline("SHA-256 of 1 KiB", sha / 1e3),
        Row::new("IAM evaluation, 100 statements", Unit::Micros, eval100 / 1e3).baseline("1 statement", eval1 / 1e3),
    ];
    for (size, n, label) in sizes {
        let dir = tempfile::Builder::new().prefix("quarters-bench-s3-").tempdir()?;
        let report = quarters_s3::bench_roundtrip(dir.path().join("store"), size, n)
            .await
            .map_err(|e| anyhow::anyhow!("S3 round trip: {e}"))?;
        let disk_dir = dir.path().join("disk");
        std::fs::create_dir_all(&disk_dir)?;
        let (dput, dget) = tokio::task::spawn_blocking(move || disk_roundtrip(&disk_dir, size, n)).await??;
        let rate = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        let mib = |d: Duration| rate(d) * size as f64 / (1024.0 * 1024.0);
        eprintln!(
            "      {label}: PUT {:.0}/s ({:.1} MiB/s; disk {:.0}/s), GET {:.0}/s ({:.1} MiB/s; disk {:.0}/s)",
            rate(report.put),
            mib(report.put),
            rate(dput),
            rate(report.get),
            mib(report.get),
            rate(dget)
        );
        rows.push(
            Row::new(format!("S3 PUT {label} (durable)"), Unit::PerSec, rate(report.put))
                .baseline("local disk", rate(dput)),
        );
        rows.push(
            Row::new(format!("S3 GET {label}"), Unit::PerSec, rate(report.get)).baseline("local disk", rate(dget)),
        );
        s3_rows.push(json!({
            "size": size, "objects": n,
            "s3": {"put_per_s": rate(report.put), "put_mib_s": mib(report.put), "get_per_s": rate(report.get), "get_mib_s": mib(report.get)},
            "disk": {"put_per_s": rate(dput), "get_per_s": rate(dget)},
        }));
    }
    step(4, &format!("results (also in {})", out.display()));
    print!("{}", format_table(&rows));
    let doc = json!({
        "suite": "security",
        "sigv4": {"verify_ns": verify, "sha256_1k_ns": sha, "n": n_sig},
        "iam": {"statements_100_ns": eval100, "statements_1_ns": eval1, "n": n_eval},
        "s3": s3_rows,
        "metrics": rows.iter().map(Row::to_json).collect::<Vec<Value>>(),
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

//! Cold starts per runtime (native, Python, Node.js, a container image) beside the bare start
//! of the same program on the host, measured in turn in the same run: what the platform adds to
//! a runtime's own start-up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use quarters_types::{Runtime, RuntimeFamily};
use serde_json::{Value, json};

use crate::net::{Conn, Endpoint, Tally, timed_call};
use crate::server::ServerProcess;
use crate::stats::Summary;

/// One runtime's figures.
#[derive(Debug, Clone)]
pub struct RuntimeCold {
    /// `native`, `python3.11`, `nodejs20.x`.
    pub label: String,
    /// A new tenant's first invocation (sandbox, runtime start, init, the call).
    pub cold: Summary,
    /// The same program started bare on the host (no sandbox, no platform).
    pub bare: Summary,
    /// What the bare start ran.
    pub bare_command: String,
}

impl RuntimeCold {
    /// The platform's share of a cold start, p50, in ms.
    pub fn added_ms(&self) -> f64 {
        (self.cold.p50 - self.bare.p50) / 1e3
    }

    pub fn to_json(&self) -> Value {
        json!({
            "runtime": self.label,
            "cold": self.cold.to_json(),
            "bare": self.bare.to_json(),
            "bare_command": self.bare_command,
            "added_p50_ms": (self.added_ms() * 100.0).round() / 100.0,
        })
    }
}

const PY_HANDLER: &str = "def handler(event, context):\n    return event\n";
const NODE_HANDLER: &str = "exports.handler = async (event) => event;\n";

pub(crate) fn zip_of(name: &str, text: &[u8], mode: u32) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default().unix_permissions(mode))?;
    w.write_all(text)?;
    Ok(w.finish()?.into_inner())
}

/// The managed runtime of `family` that matches this host's interpreter, if the host has one.
fn host_runtime(family: RuntimeFamily) -> Option<(Runtime, PathBuf)> {
    Runtime::ALL.iter().filter(|r| r.family() == family).find_map(|r| {
        quarters_invoke::runtimes::interpreter(*r).filter(|i| i.matches(*r)).map(|i| (*r, i.path.clone()))
    })
}

/// What each runtime is, how to deploy it and how to start it bare.
struct Case {
    label: String,
    runtime: &'static str,
    handler: &'static str,
    code: Code,
    bare: Vec<String>,
}

enum Code {
    Zip(Vec<u8>),
    /// `PackageType: Image`, pulled from the bench's own registry.
    Image(String),
}

fn cases(probe: &Path, probe_zip: &[u8], image: Option<String>) -> Result<Vec<Case>> {
    let probe_str = probe.to_string_lossy().into_owned();
    let mut out = vec![Case {
        label: "native (lambda_runtime)".into(),
        runtime: "provided.al2023",
        handler: "bootstrap",
        code: Code::Zip(probe_zip.to_vec()),
        // Without a Runtime API the probe exits at once: its start-up, to the first syscall
        // that needs the platform.
        bare: vec![probe_str.clone()],
    }];
    if let Some(uri) = image {
        // The same probe, as the entrypoint of an image with its own root (its libraries).
        out.push(Case {
            label: "image (probe)".into(),
            runtime: "",
            handler: "",
            code: Code::Image(uri),
            bare: vec![probe_str],
        });
    }
    if let Some((rt, python)) = host_runtime(RuntimeFamily::Python) {
        out.push(Case {
            label: rt.as_str().into(),
            runtime: rt.as_str(),
            handler: "lambda_function.handler",
            code: Code::Zip(zip_of("lambda_function.py", PY_HANDLER.as_bytes(), 0o644)?),
            bare: vec![python.to_string_lossy().into_owned(), "-c".into(), "pass".into()],
        });
    }
    if let Some((rt, node)) = host_runtime(RuntimeFamily::Node) {
        out.push(Case {
            label: rt.as_str().into(),
            runtime: rt.as_str(),
            handler: "index.handler",
            code: Code::Zip(zip_of("index.js", NODE_HANDLER.as_bytes(), 0o644)?),
            bare: vec![node.to_string_lossy().into_owned(), "-e".into(), "0".into()],
        });
    }
    Ok(out)
}

/// Start `cmd` with an empty environment and wait for it to end.
async fn bare_start(cmd: &[String]) -> Result<Duration> {
    let cmd = cmd.to_vec();
    tokio::task::spawn_blocking(move || -> Result<Duration> {
        let (prog, args) = cmd.split_first().context("an empty command")?;
        let start = Instant::now();
        std::process::Command::new(prog)
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {prog}"))?;
        Ok(start.elapsed())
    })
    .await?
}

/// For each runtime this host has: `n` new tenants' first invocations, each right after one bare
/// start of the same program, so both see the same noise.
pub async fn measure(
    server: &ServerProcess,
    probe: &Path,
    probe_zip: &[u8],
    n: usize,
    errors: &mut Tally,
    detail: impl Fn(&str),
) -> Result<Vec<RuntimeCold>> {
    let mut out = Vec::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Served for as long as the image row runs (pulled once, at the function's creation).
    let registry = match crate::registry::Registry::serve_probe(probe).await {
        Ok(r) => Some(r),
        Err(e) => {
            detail(&format!("no image row: {e:#}"));
            None
        }
    };
    for (k, case) in cases(probe, probe_zip, registry.as_ref().map(|r| r.image_uri()))?.into_iter().enumerate() {
        let name = format!("bench-rt-{k}");
        match &case.code {
            Code::Zip(zip) => crate::deploy_function(server, &name, case.runtime, case.handler, zip).await?,
            Code::Image(uri) => crate::deploy_image(server, &name, uri).await?,
        }
        let ep = Endpoint {
            addr: server.addr,
            path: format!("/2015-03-31/functions/{name}/invocations"),
            payload: Bytes::from_static(br#"{"action":"echo"}"#),
            is_invoke: true,
        };
        let mut conn = Conn::open(ep.addr).await?;
        let mut cold = Tally::default();
        let mut bare = Vec::with_capacity(n);
        // One of each first, to warm the page cache.
        bare_start(&case.bare).await?;
        timed_call(&mut conn, &ep, &format!("rt-warmup-{k}-{run}"), &mut Tally::default()).await?;
        for i in 0..n {
            bare.push(bare_start(&case.bare).await?);
            timed_call(&mut conn, &ep, &format!("rt-{k}-{i}-{run}"), &mut cold).await?;
        }
        if cold.latencies.is_empty() {
            bail!("every cold start of {} failed: {}", case.label, cold.first_error.unwrap_or_default());
        }
        let r = RuntimeCold {
            label: case.label.clone(),
            cold: Summary::of(&cold.latencies),
            bare: Summary::of(&bare),
            bare_command: case.bare.join(" "),
        };
        detail(&format!(
            "{}: cold p50 {:.1} ms, bare start p50 {:.1} ms ({}), platform adds {:.1} ms",
            r.label,
            r.cold.p50 / 1e3,
            r.bare.p50 / 1e3,
            r.bare_command,
            r.added_ms()
        ));
        errors.merge(cold);
        out.push(r);
    }
    Ok(out)
}

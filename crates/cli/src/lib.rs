//! The `quarters` command line: the server, a client of its API, the demo and the bench.

mod app;
mod client;
mod demo;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use client::{Client, DeployOptions};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(
    name = "quarters",
    version,
    about = "A Lambda-compatible function platform with per-tenant execution environments"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Endpoint {
    /// The Quarters server to talk to.
    #[arg(long, env = "QUARTERS_ENDPOINT", default_value = "http://127.0.0.1:9000")]
    endpoint: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (state in SQLite under --data-dir).
    Serve(server::ServerConfig),
    /// Start a server, deploy the counter function with PER_TENANT isolation and show tenants
    /// getting their own environments.
    Demo {
        #[command(flatten)]
        server: server::ServerConfig,
        /// Stop the server when the demo is done instead of serving on.
        #[arg(long)]
        exit: bool,
    },
    /// Deploy a function from a directory, a zip, or a single executable (as `bootstrap`); or
    /// apply an app file (`app.toml`): functions, REST API routes, authorizers, usage plans, API
    /// keys and custom domains, created or updated to match it (`--dry-run` shows what would change).
    ///
    /// Without --runtime, a directory's contents decide: `bootstrap` is a custom runtime,
    /// `index.mjs`/`index.js` Node.js, `*.py` Python (on the server's interpreter version).
    Deploy {
        /// A directory, zip or executable (with --name), or an app file ending in `.toml`.
        path: PathBuf,
        /// The function's name (for a directory, zip or executable).
        #[arg(long)]
        name: Option<String>,
        /// `provided.al2023`, `python3.9`..`python3.14`, `nodejs18.x`..`nodejs24.x`.
        #[arg(long)]
        runtime: Option<String>,
        /// `bootstrap` for custom runtimes; `file.function` for Python and Node.js.
        #[arg(long)]
        handler: Option<String>,
        /// Memory in MB [default: 128].
        #[arg(long)]
        memory: Option<u32>,
        /// Timeout in seconds [default: 3].
        #[arg(long)]
        timeout: Option<u32>,
        /// Tenant isolation: `per-tenant` or `none` (fixed at creation) [default: none].
        #[arg(long, value_parser = ["none", "per-tenant"])]
        tenancy: Option<String>,
        /// With an app file: print what would be created and updated, and change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Invoke a function and print its response.
    Invoke {
        name: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Also print the invocation's log.
        #[arg(long)]
        tail: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List functions.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show the live execution environments of a function (or all), grouped by tenant.
    Envs {
        function: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Destroy every environment of one tenant (offboarding).
    Offboard {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        function: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Keep a pool of environments that have run their init, ready for new tenants (sets the
    /// provisioned concurrency of a version or alias; 0 removes it; no --size shows it).
    Pool {
        function: String,
        #[arg(long)]
        size: Option<u32>,
        #[arg(long, default_value = "$LATEST")]
        qualifier: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Cap how many invocations of a function one tenant may have in flight (beyond Lambda).
    TenantLimit {
        function: String,
        /// The cap; omit (with --clear) to remove it.
        #[arg(long)]
        max_concurrency: Option<u32>,
        #[arg(long, conflicts_with = "max_concurrency")]
        clear: bool,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Measure Quarters against baselines taken in the same run (starts its own server).
    Bench(quarters_bench::BenchArgs),
    /// Print recent log records of a function, optionally of one tenant.
    /// Usage per hour, for billing: invocations, errors, GB-seconds, bytes in and out.
    Usage {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        function: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Recent log records of a function (or one tenant's); `logs tail` follows them live,
    /// `logs query` runs a Logs Insights query.
    #[command(args_conflicts_with_subcommands = true)]
    Logs {
        #[command(subcommand)]
        action: Option<LogsAction>,
        function: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Only records of this level: ERROR, WARN, INFO, DEBUG, PLATFORM...
        #[arg(long)]
        level: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

#[derive(Debug, Subcommand)]
enum LogsAction {
    /// Follow a function's new log records as they are written (Ctrl-C to stop).
    Tail {
        function: String,
        #[arg(long)]
        tenant: Option<String>,
        /// A CloudWatch filter pattern: terms, or `{ $.field = "value" }`.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Run a Logs Insights query over a function's log group and print a table.
    Query {
        function: String,
        query: String,
        /// How far back to look, in minutes.
        #[arg(long, default_value_t = 60)]
        since: u64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Limit a function's log group by size and/or age; the oldest records go first.
    Retention {
        function: String,
        /// Keep about this many bytes of messages (`none`: no limit).
        #[arg(long)]
        max_bytes: Option<String>,
        /// Keep this many days (`none`: forever).
        #[arg(long)]
        days: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo's own output is the point; the platform's logs stay at warnings unless asked.
    quarters_telemetry::init_tracing(if matches!(cli.command, Command::Demo { .. }) { "warn" } else { "info" });
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(cfg) => {
            let server = server::start(&cfg).await?;
            eprintln!("Quarters is serving the Lambda API at {} (Ctrl-C to stop)", server.endpoint());
            if let Some(g) = server.gateway_addr {
                eprintln!("The API gateway serves deployed REST APIs at http://{g}");
            }
            server.run_until_signal().await?;
        }
        Command::Demo { server, exit } => demo::run(&server, exit).await?,
        Command::Bench(args) => quarters_bench::run(args).await?,
        Command::Deploy { path, name, runtime, handler, memory, timeout, tenancy, dry_run, endpoint } => {
            let quarters = Client::new(&endpoint.endpoint);
            if app::is_app_file(&path) {
                let given: Vec<&str> = [
                    ("--name", name.is_some()),
                    ("--runtime", runtime.is_some()),
                    ("--handler", handler.is_some()),
                    ("--memory", memory.is_some()),
                    ("--timeout", timeout.is_some()),
                    ("--tenancy", tenancy.is_some()),
                ]
                .into_iter()
                .filter_map(|(flag, set)| set.then_some(flag))
                .collect();
                if !given.is_empty() {
                    let verb = if given.len() == 1 { "does" } else { "do" };
                    anyhow::bail!(
                        "{} {verb} not apply to an app file: set them in {}",
                        given.join(", "),
                        path.display()
                    );
                }
                app::deploy(&quarters, &path, dry_run).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let Some(name) = name else {
                anyhow::bail!(
                    "--name is required to deploy a directory, zip or executable (an app file's name ends in .toml)"
                );
            };
            if dry_run {
                anyhow::bail!("--dry-run is for app files (.toml)");
            }
            let (runtime, handler) = client::detect_runtime(&path, runtime, handler)?;
            let zip = client::package(&path)?;
            let opts = DeployOptions {
                runtime,
                handler,
                memory: memory.unwrap_or(128),
                timeout: timeout.unwrap_or(3),
                per_tenant: tenancy.as_deref() == Some("per-tenant"),
            };
            let cfg = quarters.deploy(&name, &zip, &opts).await?;
            println!(
                "deployed {} ({}, handler {}; {} bytes, CodeSha256 {})",
                name,
                opts.runtime,
                opts.handler,
                zip.len(),
                cfg["CodeSha256"].as_str().unwrap_or("?")
            );
            if let Some(note) = client::runtime_note(&cfg) {
                eprintln!("{note}");
            }
        }
        Command::Invoke { name, tenant, payload, tail, endpoint } => {
            let out = Client::new(&endpoint.endpoint).invoke(&name, tenant.as_deref(), &payload, tail).await?;
            if let Some(log) = &out.log_tail {
                eprintln!("{log}");
            }
            println!("{}", out.body);
            if out.status >= 400 || out.function_error.is_some() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::List { endpoint } => {
            let v = Client::new(&endpoint.endpoint).ok(reqwest::Method::GET, "/2015-03-31/functions", None).await?;
            println!("{:<32} {:<16} {:>7} {:>7}  TENANCY", "NAME", "RUNTIME", "MEMORY", "TIMEOUT");
            for f in v["Functions"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<16} {:>7} {:>7}  {}",
                    f["FunctionName"].as_str().unwrap_or(""),
                    f["Runtime"].as_str().unwrap_or(""),
                    f["MemorySize"],
                    f["Timeout"],
                    f["TenancyConfig"]["TenantIsolationMode"].as_str().unwrap_or("-"),
                );
            }
        }
        Command::Envs { function, endpoint } => {
            let path = match &function {
                Some(f) => format!("/quarters/v1/environments?function={}", urlencode(f)),
                None => "/quarters/v1/environments".to_string(),
            };
            let v = Client::new(&endpoint.endpoint).ok(reqwest::Method::GET, &path, None).await?;
            print_envs(&v);
        }
        Command::Offboard { tenant, function, endpoint } => {
            let mut path = format!("/quarters/v1/environments?tenant={}", urlencode(&tenant));
            if let Some(f) = &function {
                path.push_str(&format!("&function={}", urlencode(f)));
            }
            let v = Client::new(&endpoint.endpoint).ok(reqwest::Method::DELETE, &path, None).await?;
            println!("destroyed {} environment(s) of tenant {tenant}", v["DestroyedEnvironments"]);
        }
        Command::Pool { function, size, qualifier, endpoint } => {
            let c = Client::new(&endpoint.endpoint);
            let path = format!(
                "/2019-09-30/functions/{}/provisioned-concurrency?Qualifier={}",
                urlencode(&function),
                urlencode(&qualifier)
            );
            match size {
                Some(0) => {
                    c.ok(reqwest::Method::DELETE, &path, None).await?;
                    println!("removed the tenant-ready pool of {function}:{qualifier}");
                }
                Some(n) => {
                    c.ok(
                        reqwest::Method::PUT,
                        &path,
                        Some(serde_json::json!({ "ProvisionedConcurrentExecutions": n })),
                    )
                    .await?;
                    println!("{function}:{qualifier} keeps {n} environment(s) ready for new tenants");
                }
                None => {
                    let v = c.ok(reqwest::Method::GET, &path, None).await?;
                    println!(
                        "{function}:{qualifier}: {} of {} ready ({})",
                        v["AvailableProvisionedConcurrentExecutions"],
                        v["RequestedProvisionedConcurrentExecutions"],
                        v["Status"].as_str().unwrap_or("?")
                    );
                }
            }
        }
        Command::TenantLimit { function, max_concurrency, clear, endpoint } => {
            let c = Client::new(&endpoint.endpoint);
            let path = format!("/quarters/v1/functions/{}/tenant-concurrency", urlencode(&function));
            match (max_concurrency, clear) {
                (Some(n), _) => {
                    c.ok(reqwest::Method::PUT, &path, Some(serde_json::json!({ "MaxConcurrencyPerTenant": n })))
                        .await?;
                    println!("each tenant of {function} may now have at most {n} invocation(s) in flight");
                }
                (None, true) => {
                    c.ok(reqwest::Method::DELETE, &path, None).await?;
                    println!("removed the per-tenant concurrency limit of {function}");
                }
                (None, false) => {
                    let v = c.ok(reqwest::Method::GET, &path, None).await?;
                    match v["MaxConcurrencyPerTenant"].as_u64() {
                        Some(n) => println!("{function}: at most {n} invocation(s) in flight per tenant"),
                        None => println!("{function}: no per-tenant concurrency limit"),
                    }
                }
            }
        }
        Command::Usage { tenant, function, endpoint } => {
            let mut q = Vec::new();
            if let Some(t) = &tenant {
                q.push(format!("tenant={}", urlencode(t)));
            }
            if let Some(f) = &function {
                q.push(format!("function={}", urlencode(f)));
            }
            let path = format!("/quarters/v1/usage?{}", q.join("&"));
            let v = Client::new(&endpoint.endpoint).ok(reqwest::Method::GET, &path, None).await?;
            println!(
                "{:<21} {:<24} {:<20} {:>11} {:>7} {:>12} {:>10} {:>10}",
                "HOUR", "FUNCTION", "TENANT", "INVOCATIONS", "ERRORS", "GB-SECONDS", "BYTES IN", "BYTES OUT"
            );
            let row = |hour: &str, f: &str, t: &str, r: &Value| {
                println!(
                    "{:<21} {:<24} {:<20} {:>11} {:>7} {:>12.6} {:>10} {:>10}",
                    hour,
                    f,
                    t,
                    r["Invocations"].as_u64().unwrap_or(0),
                    r["Errors"].as_u64().unwrap_or(0),
                    r["GBSeconds"].as_f64().unwrap_or(0.0),
                    r["BytesIn"].as_u64().unwrap_or(0),
                    r["BytesOut"].as_u64().unwrap_or(0)
                )
            };
            for r in v["Usage"].as_array().into_iter().flatten() {
                let hour = r["Hour"].as_str().unwrap_or("").get(..16).unwrap_or("");
                row(hour, r["Function"].as_str().unwrap_or(""), r["Tenant"].as_str().unwrap_or("-"), r);
            }
            row("total", "", "", &v["Total"]);
        }
        Command::Logs { action: Some(LogsAction::Tail { function, tenant, filter, endpoint }), .. } => {
            let mut path = format!("/quarters/v1/logs/tail?function={}", urlencode(&function));
            if let Some(t) = &tenant {
                path.push_str(&format!("&tenant={}", urlencode(t)));
            }
            if let Some(f) = &filter {
                path.push_str(&format!("&filter={}", urlencode(f)));
            }
            eprintln!("following the log of {function} (Ctrl-C to stop)");
            Client::new(&endpoint.endpoint)
                .follow(&path, |data| {
                    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    println!(
                        "{} [{}] {}",
                        quarters_types::time::rfc3339_ms(v["timestamp"].as_u64().unwrap_or(0)),
                        v["tenant"].as_str().unwrap_or("-"),
                        v["message"].as_str().unwrap_or("")
                    );
                })
                .await?;
        }
        Command::Logs { action: Some(LogsAction::Query { function, query, since, endpoint }), .. } => {
            let client = Client::new(&endpoint.endpoint);
            let cfg = client.get_function(&function).await?.ok_or_else(|| anyhow::anyhow!("no function {function}"))?;
            let group = cfg["Configuration"]["LoggingConfig"]["LogGroup"].as_str().unwrap_or("").to_string();
            let now = quarters_types::time::now_ms() / 1000;
            let started = client
                .logs(
                    "StartQuery",
                    serde_json::json!({ "logGroupName": group, "startTime": now.saturating_sub(since * 60), "endTime": now + 1, "queryString": query }),
                )
                .await?;
            let id = started["queryId"].as_str().unwrap_or("").to_string();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let out = loop {
                let out = client.logs("GetQueryResults", serde_json::json!({ "queryId": id })).await?;
                if out["status"] != "Running" || std::time::Instant::now() > deadline {
                    break out;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            print_query_table(&out);
        }
        Command::Logs { action: Some(LogsAction::Retention { function, max_bytes, days, endpoint }), .. } => {
            let client = Client::new(&endpoint.endpoint);
            let f = client
                .ok(reqwest::Method::GET, &format!("/2015-03-31/functions/{}", urlencode(&function)), None)
                .await?;
            let group = f["Configuration"]["LoggingConfig"]["LogGroup"].as_str().unwrap_or_default().to_string();
            let mut path = format!("/quarters/v1/log-groups?group={}", urlencode(&group));
            if let Some(b) = &max_bytes {
                path.push_str(&format!("&maxBytes={}", urlencode(b)));
            }
            if let Some(d) = &days {
                path.push_str(&format!("&retentionInDays={}", urlencode(d)));
            }
            let v = client.ok(reqwest::Method::PUT, &path, None).await?;
            println!("{group}: {} old records deleted", v["Deleted"]);
        }
        Command::Logs { action: None, function: None, .. } => {
            anyhow::bail!("name a function: quarters logs <function> [--tenant T], or quarters logs tail|query ...");
        }
        Command::Logs { action: None, function: Some(function), tenant, level, limit, endpoint } => {
            let mut path = format!("/quarters/v1/logs?function={}&limit={limit}", urlencode(&function));
            if let Some(t) = &tenant {
                path.push_str(&format!("&tenant={}", urlencode(t)));
            }
            if let Some(l) = &level {
                path.push_str(&format!("&level={}", urlencode(l)));
            }
            let v = Client::new(&endpoint.endpoint).ok(reqwest::Method::GET, &path, None).await?;
            for r in v["Records"].as_array().into_iter().flatten() {
                println!(
                    "{} [{}] {}",
                    quarters_types::time::rfc3339_ms(r["ts_ms"].as_u64().unwrap_or(0)),
                    r["tenant"].as_str().unwrap_or("-"),
                    r["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An Insights result as an aligned table (values cut at 80 characters).
fn print_query_table(out: &Value) {
    let rows: Vec<Vec<(String, String)>> = out["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let v: String = c["value"].as_str().unwrap_or("").chars().take(80).collect();
                    (c["field"].as_str().unwrap_or("").to_string(), v.replace(['\n', '\r'], " "))
                })
                .collect()
        })
        .collect();
    let mut cols: Vec<String> = Vec::new();
    for r in &rows {
        for (f, _) in r {
            if !cols.contains(f) {
                cols.push(f.clone());
            }
        }
    }
    let width = |c: &String| {
        rows.iter()
            .filter_map(|r| r.iter().find(|(f, _)| f == c).map(|(_, v)| v.chars().count()))
            .chain(std::iter::once(c.len()))
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = cols.iter().map(width).collect();
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(String::as_str).collect());
    for r in &rows {
        line(cols.iter().map(|c| r.iter().find(|(f, _)| f == c).map(|(_, v)| v.as_str()).unwrap_or("")).collect());
    }
    let s = &out["statistics"];
    eprintln!(
        "{} ({} rows; {} records matched of {} scanned)",
        out["status"].as_str().unwrap_or("?"),
        rows.len(),
        s["recordsMatched"],
        s["recordsScanned"]
    );
}

/// Print environments grouped by tenant.
fn print_envs(v: &Value) {
    let envs = v["Environments"].as_array().cloned().unwrap_or_default();
    if envs.is_empty() {
        println!("no live environments");
        return;
    }
    let mut current: Option<String> = None;
    for e in &envs {
        let tenant = e["Tenant"].as_str().unwrap_or("(no tenant)").to_owned();
        if current.as_deref() != Some(&tenant) {
            let n = envs.iter().filter(|x| x["Tenant"].as_str().unwrap_or("(no tenant)") == tenant).count();
            println!("tenant {tenant:?}: {n} environment(s)");
            current = Some(tenant);
        }
        println!(
            "  {}  {:<12} {:<6} {} invocation(s)  stream {}",
            &e["Id"].as_str().unwrap_or("")[..12.min(e["Id"].as_str().unwrap_or("").len())],
            e["Function"].as_str().unwrap_or(""),
            e["State"].as_str().unwrap_or(""),
            e["Invocations"],
            e["LogStream"].as_str().unwrap_or(""),
        );
    }
}

pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

//! `quarters demo`: the talk's counter demo, against a server started here.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::client::{Client, DeployOptions, package};
use crate::server::{self, ServerConfig};

/// The counter function's binary, built with the workspace next to this binary.
fn counter_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    let p = dir.join("counter");
    if p.is_file() {
        return Ok(p);
    }
    bail!("the counter function was not found at {}; build it with `cargo build --release --workspace`", p.display())
}

pub async fn run(cfg: &ServerConfig, exit: bool) -> Result<()> {
    println!("[1/4] starting Quarters (state in {})", cfg.data_dir.display());
    let server = server::start(cfg).await?;
    let mut client = Client::new(&server.endpoint());
    if let Some((id, secret)) = &server.admin {
        client = client.with_credentials(id, secret);
    }
    let result = steps(&client).await;
    if let Err(e) = &result {
        eprintln!("demo failed: {e:#}");
    }
    if exit || result.is_err() {
        server.stop().await?;
        return result;
    }
    println!();
    println!("Quarters keeps serving at {} (Ctrl-C to stop). Try:", server.endpoint());
    if let Some((id, _)) = &server.admin {
        println!(
            "  export AWS_ACCESS_KEY_ID={id} AWS_SECRET_ACCESS_KEY=<the secret in {}> AWS_DEFAULT_REGION=us-east-1",
            cfg.data_dir.join("admin-credentials").display()
        );
    }
    println!(
        "  aws lambda invoke --endpoint-url {} --function-name counter --tenant-id BlueTenant out.json && cat out.json",
        server.endpoint()
    );
    server.run_until_signal().await
}

async fn steps(client: &Client) -> Result<()> {
    let bin = counter_binary()?;
    let zip = package(&bin)?;
    println!("[2/4] deploying the counter function ({} KiB) with TenantIsolationMode PER_TENANT", zip.len() / 1024);
    let opts = DeployOptions {
        runtime: "provided.al2023".into(),
        handler: "bootstrap".into(),
        memory: 128,
        timeout: 10,
        per_tenant: true,
    };
    if let Some(existing) = client.get_function("counter").await?
        && existing["Configuration"]["TenancyConfig"]["TenantIsolationMode"] != "PER_TENANT"
    {
        client.ok(reqwest::Method::DELETE, "/2015-03-31/functions/counter", None).await?;
    }
    client.deploy("counter", &zip, &opts).await?;

    println!("[3/4] invoking: each tenant gets its own execution environments");
    println!("      {:<13} {:>14} {:>12}  environment", "tenant", "memoryCounter", "diskCounter");
    let sequence = [
        "BlueTenant",
        "BlueTenant",
        "BlueTenant",
        "BlueTenant",
        "BlueTenant",
        "GreenTenant",
        "BlueTenant",
        "OrangeTenant",
    ];
    for tenant in sequence {
        let out = client.invoke("counter", Some(tenant), "{}", false).await?;
        if out.status != 200 || out.function_error.is_some() {
            bail!("invoke for {tenant} failed: HTTP {} {}", out.status, out.body);
        }
        let v: Value = serde_json::from_str(&out.body).context("counter response")?;
        let env = v["environment"].as_str().unwrap_or("");
        println!(
            "      {:<13} {:>14} {:>12}  {}",
            v["tenantId"].as_str().unwrap_or("?"),
            v["memoryCounter"].to_string(),
            v["diskCounter"].to_string(),
            env.rsplit(']').next().map(|s| &s[..12.min(s.len())]).unwrap_or(""),
        );
    }
    println!("[4/4] live environments of counter, by tenant:");
    let v = client.ok(reqwest::Method::GET, "/quarters/v1/environments?function=counter", None).await?;
    crate::print_envs(&v);
    Ok(())
}

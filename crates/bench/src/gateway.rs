//! `quarters bench --suite gateway`: what the API gateway adds per request, beside a direct
//! Invoke of the same warm function in the same run. Three routes reach one PER_TENANT probe
//! through a Lambda (non-proxy) integration, so the function's work is the same as on Invoke:
//! no authorizer (the tenant from a header), a TOKEN Lambda authorizer whose answer is cached,
//! and the built-in JWT authorizer (HS256, the tenant from a claim). Calls alternate between the
//! four in chunks, on one keep-alive connection each, so drift hits them alike.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use serde_json::{Value, json};

use crate::net::{Conn, REQUEST_TIMEOUT, Tally, call_once};
use crate::report::{Row, Target, Unit, format_table};
use crate::server::ServerProcess;
use crate::stats::Summary;

/// The gateway issue's target: at most this much added at p50 with a cached or JWT authorizer.
const TARGET_ADDED_US: f64 = 150.0;
const TENANT: &str = "bench-gw";
const SECRET: &str = "bench-secret-of-at-least-32-bytes!";
const CHUNK: usize = 50;

const AUTHORIZER: &str = r#"
def handler(event, context):
    arn = event["methodArn"].split("/")[0] + "/*"
    return {"principalId": "bench",
            "policyDocument": {"Version": "2012-10-17",
                               "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": arn}]},
            "context": {"tenantId": event["authorizationToken"].removeprefix("Bearer ")}}
"#;

fn step(n: usize, what: &str) {
    eprintln!("[{n}/4] {what}");
}

fn detail(what: &str) {
    eprintln!("      {what}");
}

async fn api(addr: SocketAddr, method: Method, path: &str, body: Value) -> Result<Value> {
    let (status, _, resp) = call_once(addr, method, path, Some(Bytes::from(body.to_string()))).await?;
    if !status.is_success() {
        bail!("{path}: {status}: {}", String::from_utf8_lossy(&resp));
    }
    Ok(serde_json::from_slice(&resp).unwrap_or(Value::Null))
}

fn lambda_uri(function: &str) -> String {
    format!(
        "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:{function}/invocations"
    )
}

fn b64url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An HS256 token (signed here, with the crate the server verifies with being separate code).
fn jwt(claims: &Value) -> Result<String> {
    use sha2::Digest;
    let head = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64url(claims.to_string().as_bytes());
    let msg = format!("{head}.{body}");
    // HMAC-SHA256 by its definition (RFC 2104), to need no other crate.
    let mut key = [0u8; 64];
    key[..SECRET.len()].copy_from_slice(SECRET.as_bytes());
    let ipad: Vec<u8> = key.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = key.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha2::Sha256::digest([ipad.as_slice(), msg.as_bytes()].concat());
    let mac = sha2::Sha256::digest([opad.as_slice(), inner.as_slice()].concat());
    Ok(format!("{msg}.{}", b64url(&mac)))
}

/// Define the API: `/open`, `/token`, `/jwt`, each to `function` with the tenant mapped.
async fn define(server: &ServerProcess, function: &str, authorizer: Option<&str>) -> Result<String> {
    let a = server.addr;
    let rest = api(a, Method::POST, "/restapis", json!({"name": "bench"})).await?;
    let id = rest["id"].as_str().context("rest api id")?.to_string();
    let root = rest["rootResourceId"].as_str().context("root id")?.to_string();
    let jwt_az = api(
        a,
        Method::POST,
        &format!("/restapis/{id}/authorizers"),
        json!({"name": "jwt", "type": "JWT", "identitySource": "method.request.header.Authorization",
               "providerARNs": [format!("secret={SECRET}"), "issuer=bench", "tenantClaim=tenant"]}),
    )
    .await?["id"]
        .as_str()
        .context("authorizer id")?
        .to_string();
    let token_az = match authorizer {
        Some(f) => Some(
            api(
                a,
                Method::POST,
                &format!("/restapis/{id}/authorizers"),
                json!({"name": "token", "type": "TOKEN", "authorizerUri": lambda_uri(f),
                       "identitySource": "method.request.header.Authorization", "authorizerResultTtlInSeconds": 300}),
            )
            .await?["id"]
                .as_str()
                .context("authorizer id")?
                .to_string(),
        ),
        None => None,
    };
    let routes: Vec<(&str, Option<&str>, &str)> = [
        Some(("open", None, "method.request.header.x-tenant-id")),
        Some(("jwt", Some(jwt_az.as_str()), "context.authorizer.tenantId")),
        token_az.as_deref().map(|t| ("token", Some(t), "context.authorizer.tenantId")),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (part, az, tenant) in routes {
        let r = api(a, Method::POST, &format!("/restapis/{id}/resources/{root}"), json!({"pathPart": part})).await?;
        let rid = r["id"].as_str().context("resource id")?;
        let mut m = json!({"authorizationType": if az.is_some() { "CUSTOM" } else { "NONE" }});
        if let Some(az) = az {
            m["authorizerId"] = json!(az);
        }
        api(a, Method::PUT, &format!("/restapis/{id}/resources/{rid}/methods/POST"), m).await?;
        api(
            a,
            Method::PUT,
            &format!("/restapis/{id}/resources/{rid}/methods/POST/integration"),
            json!({"type": "AWS", "httpMethod": "POST", "uri": lambda_uri(function),
                   "requestParameters": {"integration.request.header.X-Amz-Tenant-Id": tenant}}),
        )
        .await?;
    }
    api(a, Method::POST, &format!("/restapis/{id}/deployments"), json!({"stageName": "prod"})).await?;
    Ok(id)
}

struct Route {
    name: &'static str,
    addr: SocketAddr,
    path: String,
    headers: Vec<(&'static str, String)>,
}

impl Route {
    fn request(&self) -> Result<Request<Full<Bytes>>> {
        let mut r = Request::builder()
            .method(Method::POST)
            .uri(&self.path)
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            r = r.header(*k, v);
        }
        Ok(r.body(Full::new(Bytes::from_static(br#"{"action":"echo"}"#)))?)
    }
}

async fn timed(conn: &mut Conn, route: &Route, tally: &mut Tally) -> Result<()> {
    let start = Instant::now();
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.send(route.request()?)).await {
        Ok(Ok((status, headers, _))) if status.as_u16() == 200 && headers.get("x-amz-function-error").is_none() => {
            tally.latencies.push(start.elapsed());
        }
        Ok(Ok((status, _, body))) => {
            tally.error(format!("{}: HTTP {status}: {}", route.name, String::from_utf8_lossy(&body)));
        }
        Ok(Err(e)) => {
            tally.error(format!("{}: {e:#}", route.name));
            conn.reopen().await?;
        }
        Err(_) => {
            tally.error(format!("{}: no response", route.name));
            conn.reopen().await?;
        }
    }
    Ok(())
}

pub async fn run(quarters: &Path, probe_zip: &[u8], out: &Path, quick: bool) -> Result<()> {
    let n = if quick { 400 } else { 2000 };
    step(1, "starting the server and deploying the probe (PER_TENANT) and a Python TOKEN authorizer...");
    let server = ServerProcess::start(quarters, true).await?;
    let measured = measure(&server, probe_zip, n).await;
    server.stop().await;
    let (results, authorizer) = measured?;
    let invoke = results[0].1;
    step(4, &format!("results (also in {})", out.display()));
    let mut rows = vec![Row::new("direct Invoke p50 (same function, warm)", Unit::Micros, invoke.p50)];
    for (name, s) in &results[1..] {
        let added = s.p50 - invoke.p50;
        let row = Row::new(format!("gateway {name} p50"), Unit::Micros, s.p50).baseline("direct Invoke", invoke.p50);
        rows.push(row);
        let mut added_row = Row::new(format!("gateway {name}: added at p50"), Unit::Micros, added);
        if *name != "no authorizer" {
            added_row = added_row.target(Target::AtMost(TARGET_ADDED_US));
        }
        rows.push(added_row);
        rows.push(Row::new(format!("gateway {name} p99"), Unit::Micros, s.p99).baseline("direct Invoke", invoke.p99));
    }
    print!("{}", format_table(&rows));
    let doc = json!({
        "suite": "gateway",
        "requests_per_route": n,
        "token_authorizer": authorizer,
        "routes": results.iter().map(|(name, s)| json!({"route": name, "latency": s.to_json()})).collect::<Vec<_>>(),
        "metrics": rows.iter().map(Row::to_json).collect::<Vec<Value>>(),
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(out, serde_json::to_vec_pretty(&doc)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

async fn measure(server: &ServerProcess, zip: &[u8], n: usize) -> Result<(Vec<(&'static str, Summary)>, bool)> {
    crate::deploy_function(server, "bench-gw", "provided.al2023", "bootstrap", zip).await?;
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"].iter().any(|p| Path::new(p).exists());
    let authorizer = if python {
        let zip = crate::runtimes::zip_of("az.py", AUTHORIZER.as_bytes(), 0o644)?;
        crate::deploy_with(server, "bench-gw-az", "python3.12", "az.handler", &zip, false).await?;
        Some("bench-gw-az")
    } else {
        detail("no python3 on this host: the TOKEN authorizer row is left out");
        None
    };
    let id = define(server, "bench-gw", authorizer).await?;
    let stage = |p: &str| format!("/restapis/{id}/prod/_user_request_/{p}");
    let token = jwt(&json!({"iss": "bench", "tenant": TENANT, "sub": "bench"}))?;
    let mut routes = vec![
        Route {
            name: "direct Invoke",
            addr: server.addr,
            path: "/2015-03-31/functions/bench-gw/invocations".into(),
            headers: vec![("x-amz-tenant-id", TENANT.into())],
        },
        Route {
            name: "no authorizer",
            addr: server.gateway,
            path: stage("open"),
            headers: vec![("x-tenant-id", TENANT.into())],
        },
        Route {
            name: "JWT authorizer",
            addr: server.gateway,
            path: stage("jwt"),
            headers: vec![("authorization", format!("Bearer {token}"))],
        },
    ];
    if authorizer.is_some() {
        routes.push(Route {
            name: "cached TOKEN authorizer",
            addr: server.gateway,
            path: stage("token"),
            headers: vec![("authorization", TENANT.into())],
        });
    }
    step(2, &format!("warming up: {} routes to one environment of tenant {TENANT}...", routes.len()));
    let mut conns = Vec::new();
    for r in &routes {
        conns.push(Conn::open(r.addr).await?);
    }
    let mut warm = Tally::default();
    for _ in 0..20 {
        for (r, c) in routes.iter().zip(conns.iter_mut()) {
            timed(c, r, &mut warm).await?;
        }
    }
    if warm.errors > 0 {
        bail!("warm-up failed: {}", warm.first_error.unwrap_or_default());
    }
    step(3, &format!("{n} requests per route, alternating in chunks of {CHUNK}..."));
    let mut tallies: Vec<Tally> = routes.iter().map(|_| Tally::default()).collect();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        for ((r, c), t) in routes.iter().zip(conns.iter_mut()).zip(tallies.iter_mut()) {
            for _ in 0..CHUNK {
                timed(c, r, t).await?;
            }
        }
        done += CHUNK;
    }
    detail(&format!("{} requests in {:.1} s", n * routes.len(), started.elapsed().as_secs_f64()));
    let mut out = Vec::new();
    for (r, t) in routes.iter().zip(tallies) {
        if t.errors > 0 {
            bail!("{} of {} requests failed: {}", t.errors, t.attempts(), t.first_error.unwrap_or_default());
        }
        let s = Summary::of(&t.latencies);
        detail(&format!("{:<26} p50 {:>6.0} µs  p99 {:>6.0} µs", r.name, s.p50, s.p99));
        out.push((r.name, s));
    }
    Ok((out, authorizer.is_some()))
}

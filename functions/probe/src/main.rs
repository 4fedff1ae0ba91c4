//! A test function built on the `lambda_runtime` crate. The payload's `action` says what to do,
//! so one binary can probe everything the end-to-end tests check from inside an environment.

use std::sync::OnceLock;

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// Random per process: two calls that see the same id ran in the same environment.
fn instance() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let bytes = std::fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim().to_string()
    })
}

fn list_dir(path: &str) -> Value {
    match std::fs::read_dir(path) {
        Ok(rd) => {
            let mut names: Vec<String> = rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            json!(names)
        }
        Err(e) => json!({ "error": e.to_string() }),
    }
}

fn processes() -> Value {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.bytes().all(|b| b.is_ascii_digit()) {
                let cmd = std::fs::read(format!("/proc/{name}/cmdline")).unwrap_or_default();
                let cmd: Vec<String> = cmd
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect();
                out.push(json!({ "pid": name, "cmdline": cmd.join(" ") }));
            }
        }
    }
    json!(out)
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    let action = payload["action"].as_str().unwrap_or("echo");
    let base = json!({
        "tenantId": ctx.tenant_id,
        "requestId": ctx.request_id,
        "instance": instance(),
        "stream": std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
    });
    let mut out = base;
    match action {
        "echo" => out["payload"] = payload.clone(),
        "env" => {
            let vars: serde_json::Map<String, Value> = std::env::vars().map(|(k, v)| (k, Value::String(v))).collect();
            out["env"] = Value::Object(vars);
            out["deadlineMs"] = json!(ctx.deadline);
            out["invokedFunctionArn"] = json!(ctx.invoked_function_arn);
            out["clientContext"] = json!(ctx.client_context.map(|c| c.custom));
        }
        "write_tmp" => {
            let name = payload["name"].as_str().unwrap_or("file");
            let data = payload["data"].as_str().unwrap_or("");
            std::fs::write(format!("/tmp/{name}"), data)?;
            out["tmp"] = list_dir("/tmp");
        }
        "list_tmp" => out["tmp"] = list_dir("/tmp"),
        "read" => {
            let path = payload["path"].as_str().unwrap_or("/");
            out["content"] = match std::fs::read_to_string(path) {
                Ok(s) => json!(s),
                Err(e) => json!({ "error": e.to_string() }),
            };
        }
        "ls" => out["entries"] = list_dir(payload["path"].as_str().unwrap_or("/")),
        "ps" => out["processes"] = processes(),
        "id" => {
            out["status"] = json!(std::fs::read_to_string("/proc/self/status").unwrap_or_default());
            out["hostname"] = json!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim());
        }
        "connect" => {
            let addr = payload["addr"].as_str().unwrap_or("127.0.0.1:9000");
            let parsed: Result<std::net::SocketAddr, _> = addr.parse();
            out["connect"] = match parsed {
                Ok(a) => match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(500)) {
                    Ok(_) => json!("connected"),
                    Err(e) => json!({ "error": e.to_string() }),
                },
                Err(e) => json!({ "error": e.to_string() }),
            };
        }
        "print" => {
            for line in payload["lines"].as_array().into_iter().flatten() {
                println!("{}", line.as_str().unwrap_or(""));
            }
        }
        "sleep" => {
            let ms = payload["ms"].as_u64().unwrap_or(100);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        "error" => {
            return Err(payload["message"].as_str().unwrap_or("requested failure").into());
        }
        "exit" => {
            println!("exiting as asked");
            std::process::exit(payload["code"].as_i64().unwrap_or(1) as i32);
        }
        "alloc" => {
            let mb = payload["mb"].as_u64().unwrap_or(10) as usize;
            let mut v: Vec<u8> = Vec::with_capacity(mb * 1024 * 1024);
            for i in 0..mb * 1024 * 1024 {
                v.push((i % 251) as u8);
            }
            out["allocated_mb"] = json!(mb);
            out["checksum"] = json!(v.iter().map(|b| u64::from(*b)).sum::<u64>());
        }
        "big" => {
            let n = payload["bytes"].as_u64().unwrap_or(1024) as usize;
            out["blob"] = json!("x".repeat(n));
        }
        other => return Err(format!("unknown action {other}").into()),
    }
    Ok(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::var("PROBE_INIT_FAIL").is_ok() {
        eprintln!("init failing as configured");
        std::process::exit(3);
    }
    lambda_runtime::run(service_fn(handler)).await
}

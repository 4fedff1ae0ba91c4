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
        "echo" => {
            if payload.get("action").is_none() {
                // An event from elsewhere (a destination record, say): log it for the tests.
                println!("event: {payload}");
            }
            out["payload"] = payload.clone();
        }
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
        "attempt" => out["result"] = json!(attempt(payload["what"].as_str().unwrap_or(""), &payload)),
        "spin" => {
            // Burn CPU for `ms` milliseconds.
            let until =
                std::time::Instant::now() + std::time::Duration::from_millis(payload["ms"].as_u64().unwrap_or(1000));
            let mut x: u64 = 0;
            while std::time::Instant::now() < until {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            out["spun"] = json!(x % 2);
        }
        "forkbomb" => {
            // Start processes until the kernel refuses; report how many got started.
            let mut children = Vec::new();
            let mut error = None;
            for _ in 0..100_000 {
                match std::process::Command::new("/bin/sleep").arg("30").spawn() {
                    Ok(c) => children.push(c),
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            out["started"] = json!(children.len());
            out["error"] = json!(error);
            for mut c in children {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        "fill_tmp" => {
            // Write until the disk is full; report bytes written and the error.
            use std::io::Write;
            let mut f = std::fs::File::create("/tmp/fill")?;
            let chunk = vec![7u8; 1024 * 1024];
            let mut written: u64 = 0;
            let mut error = None;
            loop {
                match f.write_all(&chunk) {
                    Ok(()) => written += chunk.len() as u64,
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
                if written > 20 * 1024 * 1024 * 1024 {
                    break;
                }
            }
            let _ = std::fs::remove_file("/tmp/fill");
            out["written"] = json!(written);
            out["error"] = json!(error);
        }
        other => return Err(format!("unknown action {other}").into()),
    }
    Ok(out)
}

/// Try something a sandboxed function must not be able to do; returns "ok" or the error.
fn attempt(what: &str, payload: &Value) -> String {
    fn res(rc: libc::c_long) -> String {
        if rc >= 0 { "ok".into() } else { format!("error: {}", std::io::Error::last_os_error()) }
    }
    fn cstr(s: &str) -> std::ffi::CString {
        std::ffi::CString::new(s).unwrap_or_default()
    }
    // SAFETY (for every call below): each syscall gets valid NUL-terminated strings or null
    // pointers and plain integer arguments; failures are reported, never dereferenced.
    unsafe {
        match what {
            "mount_tmpfs" => {
                let (src, dst, fs) = (cstr("none"), cstr("/tmp"), cstr("tmpfs"));
                res(libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) as libc::c_long)
            }
            "umount_proc" => res(libc::umount2(cstr("/proc").as_ptr(), libc::MNT_DETACH) as libc::c_long),
            "unshare_user" => res(libc::unshare(libc::CLONE_NEWUSER) as libc::c_long),
            "unshare_net" => res(libc::unshare(libc::CLONE_NEWNET) as libc::c_long),
            "ptrace_parent" => res(libc::ptrace(libc::PTRACE_ATTACH, libc::getppid(), 0, 0)),
            "ptrace_pid1" => res(libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0)),
            "kill_pid1" => res(libc::kill(1, libc::SIGKILL) as libc::c_long),
            "kill_all" => res(libc::kill(-1, libc::SIGKILL) as libc::c_long),
            "mknod" => {
                res(libc::mknod(cstr("/tmp/sda").as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(8, 0)) as libc::c_long)
            }
            "init_module" => {
                res(libc::syscall(libc::SYS_init_module, std::ptr::null::<u8>(), 0usize, cstr("").as_ptr()))
            }
            "bpf" => res(libc::syscall(libc::SYS_bpf, 0, std::ptr::null::<u8>(), 0)),
            "keyctl" => res(libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0)),
            "chroot" => res(libc::chroot(cstr("/tmp").as_ptr()) as libc::c_long),
            "setuid0" => res(libc::setuid(0) as libc::c_long),
            "reboot" => res(libc::reboot(libc::RB_POWER_OFF) as libc::c_long),
            "write_root" => match std::fs::write("/evil", "x") {
                Ok(()) => "ok".into(),
                Err(e) => format!("error: {e}"),
            },
            "write_task" => match std::fs::write("/var/task/evil", "x") {
                Ok(()) => "ok".into(),
                Err(e) => format!("error: {e}"),
            },
            "cgroup_escape" => {
                // Try to move ourselves to the root cgroup of each hierarchy.
                let mut results = Vec::new();
                for p in [
                    "/sys/fs/cgroup/cgroup.procs",
                    "/sys/fs/cgroup/memory/cgroup.procs",
                    "/sys/fs/cgroup/pids/cgroup.procs",
                ] {
                    match std::fs::write(p, std::process::id().to_string()) {
                        Ok(()) => return format!("ok: {p}"),
                        Err(e) => results.push(format!("{p}: {e}")),
                    }
                }
                format!("error: {}", results.join("; "))
            }
            "open_path" => {
                let path = payload["path"].as_str().unwrap_or("/etc/shadow");
                match std::fs::read(path) {
                    Ok(b) => format!("ok: {} bytes", b.len()),
                    Err(e) => format!("error: {e}"),
                }
            }
            other => format!("error: unknown attempt {other}"),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::var("PROBE_INIT_FAIL").is_ok() {
        eprintln!("init failing as configured");
        std::process::exit(3);
    }
    lambda_runtime::run(service_fn(handler)).await
}

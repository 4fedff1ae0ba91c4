//! `quarters-init`: the first process of every sandbox (after bwrap's own pid 1).
//!
//! A program of its own, built by the crate's build script with nothing but `std`, statically
//! linked, and embedded in the `quarters` binary: it starts in a fraction of the time the whole
//! server binary takes to load, on every cold start. Its command line is
//! `quarters-init sandbox-init [--direct] [--] RUNTIME [ARGS...]` (`--check` prints `ok`).
//!
//! It runs inside the sandbox's namespaces, with no capabilities, and does three things:
//! 1. listens on [`RUNTIME_API_ADDR`] inside the sandbox's private network namespace and relays
//!    each connection, byte for byte, to the environment's private Runtime API socket (the only
//!    way out of the sandbox, and it leads only to this environment's own Runtime API);
//! 2. starts the function's runtime (with a connection to the Runtime API already open as fd 3,
//!    if the runtime's environment sets [`RUNTIME_API_FD_VAR`]);
//! 3. when the runtime ends, records how in the run directory, so the platform can tell
//!    `exit status 1` from `signal: killed`, and exits.
//!
//! It is started by exec, runs no async runtime, and uses a thread per relayed connection
//! direction; a runtime keeps one or two connections open for its whole life.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Command;

include!("../src/paths.rs");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut rest = args.get(1..).unwrap_or_default();
    match rest.first().map(String::as_str) {
        Some("--check") => {
            println!("ok");
            return;
        }
        Some("sandbox-init") => rest = &rest[1..],
        _ => fail("usage: quarters-init sandbox-init [--direct] [--] RUNTIME [ARGS...]"),
    }
    let direct = rest.first().map(String::as_str) == Some("--direct");
    if direct {
        rest = &rest[1..];
    }
    if rest.first().map(String::as_str) == Some("--") {
        rest = &rest[1..];
    }
    run(rest, direct)
}

/// `command` is the runtime's command line. With `direct`, the platform already listens on the
/// Runtime API address inside this sandbox's network namespace and there is nothing to relay.
fn run(command: &[String], direct: bool) -> ! {
    close_inherited_fds();
    let Some((program, args)) = command.split_first() else {
        fail("sandbox-init: no command given");
    };
    let run_dir = Path::new(SANDBOX_RUN_DIR);
    if !direct {
        let listener = match TcpListener::bind(RUNTIME_API_ADDR) {
            Ok(l) => l,
            Err(e) => fail(&format!("sandbox-init: cannot listen on {RUNTIME_API_ADDR}: {e}")),
        };
        let upstream = run_dir.join(RAPI_SOCKET);
        let spawned = std::thread::Builder::new()
            .name("rapi-accept".into())
            .stack_size(64 * 1024)
            .spawn(move || accept_loop(listener, &upstream));
        if let Err(e) = spawned {
            fail(&format!("sandbox-init: cannot start relay: {e}"));
        }
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    let handed_over = hand_over_runtime_api(&mut cmd);
    let spawned = cmd.spawn();
    // The runtime has its own copy (fd 3); ours would keep the connection open after it closes it.
    drop(handed_over);
    let status = match spawned.and_then(|mut child| child.wait()) {
        Ok(s) => s,
        Err(e) => {
            record(run_dir, "code 127");
            fail(&format!("sandbox-init: cannot start {program}: {e}"));
        }
    };
    let (line, code) = match (status.code(), status.signal()) {
        (Some(c), _) => (format!("code {c}"), c),
        (None, Some(s)) => (format!("signal {s}"), 128 + s),
        _ => ("code 1".to_string(), 1),
    };
    record(run_dir, &line);
    std::process::exit(code);
}

/// With [`RUNTIME_API_FD_VAR`] set to `3`, connect to the Runtime API and arrange for the
/// connection to be the runtime's fd 3. Without a connection the variable is removed (fd 3 will
/// be whatever the runtime opens first) and the runtime opens its own.
fn hand_over_runtime_api(cmd: &mut Command) -> Option<TcpStream> {
    const TARGET_FD: i32 = 3;
    let wanted = std::env::var(RUNTIME_API_FD_VAR).ok()?;
    let conn = if wanted == TARGET_FD.to_string() { TcpStream::connect(RUNTIME_API_ADDR).ok() } else { None };
    let Some(conn) = conn else {
        cmd.env_remove(RUNTIME_API_FD_VAR);
        return None;
    };
    let _ = conn.set_nodelay(true);
    let fd = conn.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec and only calls dup2(2) (and
    // fcntl(2) when the fd already is 3), which are async-signal-safe; `fd` stays open in the
    // parent until the child has been spawned (`conn` is returned to the caller).
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == TARGET_FD { fcntl(fd, F_SETFD, 0) == 0 } else { dup2(fd, TARGET_FD) == TARGET_FD };
            if ok { Ok(()) } else { Err(io::Error::last_os_error()) }
        });
    }
    Some(conn)
}

fn record(run_dir: &Path, line: &str) {
    let _ = std::fs::write(run_dir.join(EXIT_FILE), line);
}

fn fail(msg: &str) -> ! {
    let _ = writeln!(io::stderr(), "{msg}");
    std::process::exit(126);
}

unsafe extern "C" {
    /// glibc's wrapper (2.34 and later) of close_range(2).
    fn close_range(first: u32, last: u32, flags: i32) -> i32;
    fn dup2(old: i32, new: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, arg: i32) -> i32;
}

/// `F_SETFD` of fcntl(2) (the same value on every Linux architecture).
const F_SETFD: i32 = 2;

/// Close every fd above stderr, so nothing the launcher held leaks into the runtime.
fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; no Rust object owns fds above 2 yet.
    unsafe {
        close_range(3, u32::MAX, 0);
    }
}

fn accept_loop(listener: TcpListener, upstream: &Path) {
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        let _ = tcp.set_nodelay(true);
        let unix = match UnixStream::connect(upstream) {
            Ok(u) => u,
            Err(_) => continue, // the platform is gone; dropping the connection tells the runtime
        };
        let _ =
            std::thread::Builder::new().name("rapi-relay".into()).stack_size(64 * 1024).spawn(move || relay(tcp, unix));
    }
}

fn relay(tcp: TcpStream, unix: UnixStream) {
    let (Ok(tcp2), Ok(unix2)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let back = std::thread::Builder::new()
        .name("rapi-relay-back".into())
        .stack_size(64 * 1024)
        .spawn(move || pump(unix2, tcp2, |t| t.shutdown(Shutdown::Write)));
    pump(tcp, unix, |u| u.shutdown(Shutdown::Write));
    if let Ok(h) = back {
        let _ = h.join();
    }
}

fn pump<R: Read, W: Write>(mut from: R, mut to: W, close: impl FnOnce(&W) -> io::Result<()>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = close(&to);
}

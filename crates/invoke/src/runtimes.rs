//! How an environment's runtime starts: a custom runtime's `bootstrap`, or a managed runtime
//! (Python, Node.js) on the host's interpreter.
//!
//! The managed runtimes are our own runtime clients (`runtimes/python/bootstrap.py`,
//! `runtimes/node/index.js`, built into the binary), written out once per server and bound
//! read-only into each sandbox at `/var/runtime`. The interpreter is the host's: Lambda's
//! `python3.12` runs on Debian's Python 3.11 if that is what the host has, and the runtime
//! version (GetFunction, INIT_START) says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use quarters_types::{Runtime, RuntimeFamily};

const PYTHON_BOOTSTRAP: &str = include_str!("../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../runtimes/node/index.js");
const PYTHON_IN_SANDBOX: &str = "/var/runtime/bootstrap.py";
/// The same client, compiled by the host's interpreter when the server starts: compiling its
/// source took about 9 ms of every Python cold start. Its code names the source file, so
/// tracebacks show the source's lines.
const PYTHON_COMPILED_IN_SANDBOX: &str = "/var/runtime/bootstrap.pyc";
const NODE_IN_SANDBOX: &str = "/var/runtime/index.js";

/// Where interpreters are looked for. Only `/usr` is visible inside a sandbox.
const PYTHON_CANDIDATES: &[&str] = &["/usr/bin/python3", "/usr/local/bin/python3"];
const NODE_CANDIDATES: &[&str] = &["/usr/bin/node", "/usr/local/bin/node", "/usr/bin/nodejs"];

/// An interpreter found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterpreter {
    pub path: PathBuf,
    /// As the interpreter reports it: `3.11.2`, `20.20.2`.
    pub version: String,
}

impl HostInterpreter {
    /// Whether this interpreter is the language version a runtime identifier names
    /// (`python3.11` on 3.11.x, `nodejs20.x` on 20.x).
    pub fn matches(&self, runtime: Runtime) -> bool {
        match runtime.language_version() {
            Some(want) => self.version == want || self.version.starts_with(&format!("{want}.")),
            None => true,
        }
    }
}

#[derive(Debug, Default)]
struct Host {
    python: Option<HostInterpreter>,
    node: Option<HostInterpreter>,
}

static HOST: OnceLock<Host> = OnceLock::new();

fn host() -> &'static Host {
    HOST.get_or_init(|| Host {
        python: find(PYTHON_CANDIDATES, &["-c", "import platform; print(platform.python_version())"]),
        node: find(NODE_CANDIDATES, &["-p", "process.versions.node"]),
    })
}

/// The first candidate that runs and prints a version (with a deadline: a broken interpreter
/// must not hold the server's start).
fn find(candidates: &[&str], args: &[&str]) -> Option<HostInterpreter> {
    for path in candidates {
        let path = Path::new(path);
        if !path.is_file() {
            continue;
        }
        let Ok(mut child) = std::process::Command::new(path)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
        else {
            continue;
        };
        let status = wait_at_most(&mut child, Duration::from_secs(10));
        if status.is_some_and(|s| s.success()) {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            }
            let version = out.trim().to_string();
            if !version.is_empty() && version.len() < 32 {
                // Canonical, so that the sandbox sees the same file (symlinks inside /usr resolve
                // the same way there).
                let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
                return Some(HostInterpreter { path, version });
            }
        }
    }
    None
}

/// The child's exit status, or `None` if it is still running after `limit`.
fn wait_up_to(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// The child's exit status, or `None` (and the child killed) if it takes longer than `limit`.
fn wait_at_most(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let status = wait_up_to(child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    status
}

/// The longest a code package's compilation may take; what is compiled by then is kept.
const PRECOMPILE_LIMIT: Duration = Duration::from_secs(120);
/// How long a deploy waits for it. A longer compilation goes on in the background, in the same
/// directory (its bind mount follows the directory through the code store's rename), while
/// environments that start meanwhile compile at import what is not compiled yet.
const PRECOMPILE_FOREGROUND: Duration = Duration::from_secs(10);

/// Compile the Python sources of a code package (a function's or a layer's unpacked tree) to
/// bytecode beside them, as `__pycache__/*.cpython-3XX.pyc` for the host's interpreter, so that
/// no cold start compiles them again: `/var/task` and `/opt` are read-only in a sandbox, so
/// without this every new environment compiles every module it imports (a three-line handler
/// costs about 1 ms; a package with its dependencies, hundreds). Python checks each file against
/// its source's hash before using it (reading and hashing a source costs microseconds; compiling
/// it, milliseconds), and other versions ignore it.
///
/// The compiler reads untrusted code, so it runs in a sandbox of its own (bubblewrap: new
/// namespaces, no network, no capabilities, only `/usr` and the tree, which it may write), for at
/// most [`PRECOMPILE_LIMIT`], of which the caller waits at most [`PRECOMPILE_FOREGROUND`].
/// Failures are logged and leave the sources to be compiled at import, as before. Returns how
/// many `.py` files the tree has.
pub fn precompile_python(tree: &Path) -> usize {
    precompile_python_waiting(tree, PRECOMPILE_FOREGROUND)
}

fn precompile_python_waiting(tree: &Path, foreground: Duration) -> usize {
    let sources = count_python_sources(tree, 0);
    if sources == 0 {
        return 0;
    }
    let Some(python) = host().python.as_ref() else { return sources };
    let Ok(mut cmd) = quarters_sandbox::one_off_job(tree, "/var/task") else { return sources };
    let started = std::time::Instant::now();
    cmd.arg("--")
        .arg(&python.path)
        // Isolated, no site: only the standard library's compileall, silent, one process. Each
        // .pyc holds its source's hash, checked at import: in a merged /opt a later layer's
        // module replaces an earlier one's, and an earlier .pyc left beside it (the later one
        // did not compile) must not pass for it, as one checked by size and mtime (seconds) can.
        .args(["-I", "-S", "-m", "compileall", "-qq", "-j", "1", "--invalidation-mode", "checked-hash"])
        .args(["-d", "/var/task", "/var/task"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let report = move |status: Option<std::process::ExitStatus>| match status {
        // compileall exits 1 when a file does not compile: the others are compiled.
        Some(s) if s.code().is_some_and(|c| c <= 1) => {
            tracing::debug!(sources, ms = started.elapsed().as_millis() as u64, "compiled the package's Python sources")
        }
        other => tracing::warn!(?other, sources, "cannot compile the package's Python sources; they compile at import"),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the compilation of the package's Python sources");
            return sources;
        }
    };
    match wait_up_to(&mut child, foreground) {
        Some(status) => report(Some(status)),
        None => {
            tracing::info!(sources, "compiling the package's Python sources goes on in the background");
            std::thread::spawn(move || report(wait_at_most(&mut child, PRECOMPILE_LIMIT.saturating_sub(foreground))));
        }
    }
    sources
}

/// `.py` files under `dir` (not following links), up to a depth that no real package reaches.
fn count_python_sources(dir: &Path, depth: usize) -> usize {
    if depth > 32 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            n += count_python_sources(&entry.path(), depth + 1);
        } else if kind.is_file() && entry.file_name().as_encoded_bytes().ends_with(b".py") {
            n += 1;
        }
    }
    n
}

/// The host interpreter a managed runtime runs on (`None` for custom runtimes, or when the host
/// has none).
pub fn interpreter(runtime: Runtime) -> Option<&'static HostInterpreter> {
    match runtime.family() {
        RuntimeFamily::Provided => None,
        RuntimeFamily::Python => host().python.as_ref(),
        RuntimeFamily::Node => host().node.as_ref(),
    }
}

/// Detect the host's interpreters now (at server start) rather than at the first use.
pub fn detect() {
    let h = host();
    tracing::info!(
        python = h.python.as_ref().map(|p| p.version.as_str()).unwrap_or("none"),
        node = h.node.as_ref().map(|p| p.version.as_str()).unwrap_or("none"),
        "managed runtimes"
    );
}

/// Why a function with this runtime cannot run on this host, if it cannot.
pub fn unavailable(runtime: Runtime) -> Option<String> {
    let (family, what) = match runtime.family() {
        RuntimeFamily::Provided => return None,
        RuntimeFamily::Python => ("python3", "Python 3"),
        RuntimeFamily::Node => ("node", "Node.js"),
    };
    interpreter(runtime).is_none().then(|| {
        format!(
            "The runtime {} needs {what} ({family}) under /usr on the Quarters host, and this host has none.",
            runtime.as_str()
        )
    })
}

/// A note for the deployer when the host's interpreter is not the version the identifier names.
pub fn version_warning(runtime: Runtime) -> Option<String> {
    let i = interpreter(runtime)?;
    (!i.matches(runtime))
        .then(|| format!("{} runs on this host's {} {}", runtime.as_str(), language_name(runtime), i.version))
}

fn language_name(runtime: Runtime) -> &'static str {
    match runtime.family() {
        RuntimeFamily::Provided => "runtime",
        RuntimeFamily::Python => "Python",
        RuntimeFamily::Node => "Node.js",
    }
}

/// The runtime version as GetFunction's `RuntimeVersionArn` and the INIT_START line name it:
/// `python:3.12.quarters0.1.0-host3.11.2`, `provided:al2023.quarters0.1.0`.
pub fn runtime_version(runtime: Runtime) -> String {
    let ours = env!("CARGO_PKG_VERSION");
    let base = match runtime.family() {
        RuntimeFamily::Provided => runtime.as_str().replacen('.', ":", 1),
        RuntimeFamily::Python => format!("python:{}", runtime.language_version().unwrap_or_default()),
        RuntimeFamily::Node => format!("nodejs:{}", runtime.language_version().unwrap_or_default()),
    };
    match interpreter(runtime) {
        Some(i) => format!("{base}.quarters{ours}-host{}", i.version),
        None => format!("{base}.quarters{ours}"),
    }
}

/// The last part of the runtime version's ARN (`arn:aws:lambda:<region>::runtime:<this>`).
pub fn runtime_version_id(runtime: Runtime) -> String {
    runtime_version(runtime).replace(':', "-")
}

/// How an environment of one function starts inside its sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entrypoint {
    pub command: Vec<String>,
    pub ro_binds: Vec<(PathBuf, String)>,
    /// Variables a managed runtime sets (`AWS_EXECUTION_ENV`, `NODE_PATH`...).
    pub env: Vec<(String, String)>,
    /// A container image's root, instead of the host's `/usr` and the code at `/var/task`.
    pub root: Option<PathBuf>,
    /// The working directory (default `/var/task`).
    pub workdir: Option<String>,
}

/// A container image function's entrypoint: the image's command line (with the function's
/// overrides), in the image's root, with the image's variables under the function's and
/// Lambda's own.
pub fn image_entrypoint(cfg: &quarters_types::FunctionConfig, root: &Path) -> Result<Entrypoint, String> {
    let image = cfg.image.as_ref().ok_or("not an image function")?;
    let command = image.command_line();
    if command.is_empty() {
        return Err("The image has no entry point or command.".into());
    }
    if !root.is_dir() {
        return Err(format!(
            "The image {} is not in the image store: update the function's code to pull it again.",
            image.uri
        ));
    }
    let reserved = |k: &str| {
        cfg.environment.contains_key(k) || k.starts_with("AWS_") || k.starts_with("LAMBDA_") || k.starts_with('_')
    };
    Ok(Entrypoint {
        command,
        env: image.image_env.iter().filter(|(k, _)| !reserved(k)).cloned().collect(),
        root: Some(root.to_path_buf()),
        workdir: Some(image.working_dir()),
        ..Default::default()
    })
}

/// The managed runtimes' files on the host, written once per server.
#[derive(Debug)]
pub struct RuntimeFiles {
    python: PathBuf,
    /// `python`, compiled (none if the host has no Python or compiling failed).
    python_compiled: Option<PathBuf>,
    node: PathBuf,
}

impl RuntimeFiles {
    /// Write the runtime clients under `dir` (read-only files).
    pub fn write(dir: &Path) -> std::io::Result<Self> {
        let python = dir.join("python").join("bootstrap.py");
        let node = dir.join("node").join("index.js");
        for (path, text) in [(&python, PYTHON_BOOTSTRAP), (&node, NODE_BOOTSTRAP)] {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text)?;
        }
        let python_compiled = compile_python(&python);
        Ok(Self { python, python_compiled, node })
    }

    /// The entrypoint of a function with `runtime` whose code is in `task_dir`, or why it has
    /// none (the message of a `Runtime.InvalidEntrypoint` error).
    /// With layers, `opt_dir` is their merged tree, mounted at `/opt`.
    pub fn entrypoint(&self, runtime: Runtime, task_dir: &Path, opt_dir: Option<&Path>) -> Result<Entrypoint, String> {
        let mut ep = self.entrypoint_of(runtime, task_dir, opt_dir)?;
        if let Some(opt) = opt_dir {
            ep.ro_binds.push((opt.to_path_buf(), "/opt".into()));
        }
        Ok(ep)
    }

    fn entrypoint_of(&self, runtime: Runtime, task_dir: &Path, opt_dir: Option<&Path>) -> Result<Entrypoint, String> {
        let exec_env = |rt: Runtime| ("AWS_EXECUTION_ENV".to_string(), format!("AWS_Lambda_{}", rt.as_str()));
        match runtime.family() {
            RuntimeFamily::Provided => {
                // The function's own bootstrap first, then a layer's (as on Lambda).
                let command = if task_dir.join("bootstrap").is_file() {
                    "/var/task/bootstrap"
                } else if opt_dir.is_some_and(|o| o.join("bootstrap").is_file()) {
                    "/opt/bootstrap"
                } else {
                    return Err("Couldn't find valid bootstrap(s): [/var/task/bootstrap /opt/bootstrap]".into());
                };
                Ok(Entrypoint { command: vec![command.into()], ..Default::default() })
            }
            RuntimeFamily::Python => {
                let i = interpreter(runtime).ok_or_else(|| unavailable(runtime).unwrap_or_default())?;
                let mut ro_binds = vec![(self.python.clone(), PYTHON_IN_SANDBOX.into())];
                let script = match &self.python_compiled {
                    Some(pyc) => {
                        ro_binds.push((pyc.clone(), PYTHON_COMPILED_IN_SANDBOX.into()));
                        PYTHON_COMPILED_IN_SANDBOX
                    }
                    None => PYTHON_IN_SANDBOX,
                };
                Ok(Entrypoint {
                    command: vec![i.path.to_string_lossy().into_owned(), script.into()],
                    ro_binds,
                    env: vec![exec_env(runtime), ("PYTHONPATH".into(), "/var/runtime".into())],
                    ..Default::default()
                })
            }
            RuntimeFamily::Node => {
                let i = interpreter(runtime).ok_or_else(|| unavailable(runtime).unwrap_or_default())?;
                let major = runtime.language_version().unwrap_or_default();
                Ok(Entrypoint {
                    command: vec![i.path.to_string_lossy().into_owned(), NODE_IN_SANDBOX.into()],
                    ro_binds: vec![(self.node.clone(), NODE_IN_SANDBOX.into())],
                    env: vec![
                        exec_env(runtime),
                        // The sandbox's init opens the client's Runtime API connection (fd 3).
                        (quarters_sandbox::RUNTIME_API_FD_VAR.into(), "3".into()),
                        (
                            "NODE_PATH".into(),
                            format!(
                                "/opt/nodejs/node{major}/node_modules:/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task"
                            ),
                        ),
                    ],
                    ..Default::default()
                })
            }
        }
    }
}

/// Compile the Python client with the host's interpreter (the one sandboxes run), next to its
/// source, for the path it has inside sandboxes. `None` (run the source) if that fails.
fn compile_python(source: &Path) -> Option<PathBuf> {
    let python = &host().python.as_ref()?.path;
    let compiled = source.with_extension("pyc");
    let status = std::process::Command::new(python)
        .args(["-c", "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile=sys.argv[3], doraise=True)"])
        .arg(source)
        .arg(&compiled)
        .arg(PYTHON_IN_SANDBOX)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Some(compiled),
        other => {
            tracing::warn!(?other, "cannot compile the Python runtime client; it starts from source");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packages_python_sources_are_compiled_in_a_sandbox() {
        let dir = tempfile::tempdir().expect("tmp");
        let tree = dir.path();
        std::fs::create_dir_all(tree.join("pkg")).expect("pkg");
        std::fs::write(tree.join("app.py"), "def handler(e, c):\n    return e\n").expect("app");
        std::fs::write(tree.join("pkg/__init__.py"), "").expect("init");
        std::fs::write(tree.join("pkg/broken.py"), "def (:\n").expect("broken");
        std::fs::write(tree.join("data.txt"), "not python").expect("data");
        assert_eq!(count_python_sources(tree, 0), 3);
        let Some(python) = host().python.as_ref() else {
            eprintln!("no python3 on this host: nothing to compile with");
            return;
        };
        if quarters_sandbox::BwrapConfig::find_bwrap().is_err() {
            eprintln!("no bubblewrap on this host");
            return;
        }
        assert_eq!(precompile_python(tree), 3);
        let tag: String = python.version.split('.').take(2).collect::<Vec<_>>().join("");
        let compiled = |p: &str| tree.join(p).join("__pycache__");
        let names = |d: PathBuf| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        assert_eq!(names(compiled(".")), vec![format!("app.cpython-{tag}.pyc")]);
        // The broken module is left to fail at import, as it would have.
        assert_eq!(names(compiled("pkg")), vec![format!("__init__.cpython-{tag}.pyc")]);
        // Nothing to do without Python sources.
        let empty = tempfile::tempdir().expect("tmp");
        std::fs::write(empty.path().join("bootstrap"), "#!/bin/sh\n").expect("bootstrap");
        assert_eq!(precompile_python(empty.path()), 0);
        assert!(!empty.path().join("__pycache__").exists());
        // A compilation the deploy stops waiting for goes on in the background.
        let later = tempfile::tempdir().expect("tmp");
        std::fs::write(later.path().join("late.py"), "X = 1\n").expect("late");
        assert_eq!(precompile_python_waiting(later.path(), Duration::ZERO), 1);
        let pyc = later.path().join("__pycache__").join(format!("late.cpython-{tag}.pyc"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !pyc.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(pyc.exists(), "compiled in the background");
    }

    #[test]
    fn custom_runtime_needs_a_bootstrap() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = RuntimeFiles::write(&dir.path().join("rt")).expect("write");
        let task = dir.path().join("task");
        std::fs::create_dir_all(&task).expect("task");
        let e = files.entrypoint(Runtime::ProvidedAl2023, &task, None).expect_err("no bootstrap");
        assert!(e.contains("/var/task/bootstrap"), "{e}");
        let opt = dir.path().join("opt");
        std::fs::create_dir_all(&opt).expect("opt");
        std::fs::write(opt.join("bootstrap"), "#!/bin/sh\n").expect("opt bootstrap");
        let ep = files.entrypoint(Runtime::ProvidedAl2023, &task, Some(&opt)).expect("layer bootstrap");
        assert_eq!(ep.command, vec!["/opt/bootstrap".to_string()]);
        assert!(ep.ro_binds.contains(&(opt.clone(), "/opt".to_string())));
        std::fs::write(task.join("bootstrap"), "#!/bin/sh\n").expect("bootstrap");
        let ep = files.entrypoint(Runtime::ProvidedAl2023, &task, Some(&opt)).expect("bootstrap");
        assert_eq!(ep.command, vec!["/var/task/bootstrap".to_string()]);
    }

    #[test]
    fn managed_runtimes_bind_their_client() {
        let dir = tempfile::tempdir().expect("tmp");
        let files = RuntimeFiles::write(&dir.path().join("rt")).expect("write");
        let written = std::fs::read_to_string(dir.path().join("rt/python/bootstrap.py")).expect("read");
        assert_eq!(written, PYTHON_BOOTSTRAP);
        let rt = Runtime::Python(12);
        match files.entrypoint(rt, dir.path(), None) {
            Ok(ep) => {
                // Compiled by the host's interpreter, and the source beside it for tracebacks.
                assert_eq!(ep.command.last().map(String::as_str), Some(PYTHON_COMPILED_IN_SANDBOX));
                assert!(ep.ro_binds.iter().any(|(_, inside)| inside == PYTHON_IN_SANDBOX));
                assert!(ep.ro_binds.iter().any(|(_, inside)| inside == PYTHON_COMPILED_IN_SANDBOX));
                let pyc = std::fs::read(dir.path().join("rt/python/bootstrap.pyc")).expect("compiled");
                assert!(pyc.len() > 16, "a .pyc header and code");
                assert!(ep.env.contains(&("AWS_EXECUTION_ENV".into(), "AWS_Lambda_python3.12".into())));
            }
            // A host without Python says so.
            Err(e) => assert!(e.contains("python3"), "{e}"),
        }
    }

    #[test]
    fn interpreter_versions_match_identifiers() {
        let i = HostInterpreter { path: "/usr/bin/python3".into(), version: "3.11.2".into() };
        assert!(i.matches(Runtime::Python(11)));
        assert!(!i.matches(Runtime::Python(1)));
        assert!(!i.matches(Runtime::Python(12)));
        let n = HostInterpreter { path: "/usr/bin/node".into(), version: "20.20.2".into() };
        assert!(n.matches(Runtime::Node(20)));
        assert!(!n.matches(Runtime::Node(22)));
        assert!(runtime_version(Runtime::ProvidedAl2023).starts_with("provided:al2023.quarters"));
        assert!(!runtime_version_id(Runtime::Python(12)).contains(':'));
    }
}

/// Where, inside every sandbox, the environment's private directory is mounted. It holds the
/// Runtime API socket and the runtime's exit record.
pub const SANDBOX_RUN_DIR: &str = "/run/quarters";
/// The name of the Runtime API socket in the environment's run directory.
pub const RAPI_SOCKET: &str = "rapi.sock";
/// The name of the file where the init records how the runtime ended.
pub const EXIT_FILE: &str = "exit";
/// The address the Runtime API answers on inside the sandbox.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";
/// Set in a runtime's environment (to `3`), it asks the init to open a connection to the Runtime
/// API before starting the runtime and hand it over as that fd: Quarters' own Node.js client
/// reads and writes it with `fs`, without loading Node's networking stack (several ms of every
/// cold start).
pub const RUNTIME_API_FD_VAR: &str = "_QUARTERS_RUNTIME_API_FD";

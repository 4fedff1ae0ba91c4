/// Where, inside every sandbox, the environment's private directory is mounted. It holds the
/// Runtime API socket and the runtime's exit record.
pub const SANDBOX_RUN_DIR: &str = "/run/quarters";
/// The name of the Runtime API socket in the environment's run directory.
pub const RAPI_SOCKET: &str = "rapi.sock";
/// The name of the file where the init records how the runtime ended.
pub const EXIT_FILE: &str = "exit";
/// The address the Runtime API answers on inside the sandbox.
pub const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

//! A fake sandbox for unit tests of the manager: instead of a process, a task that speaks the
//! Runtime API over the environment's socket like a real runtime client, and answers each
//! event with the environment's id and the tenant it was given.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use quarters_sandbox::{Exit, ExitInfo, Launched, Sandbox, SandboxControl, SandboxError, SandboxSpec, output_pipe};
use tokio::sync::{mpsc, oneshot};

type EnvVars = Vec<(String, String)>;

pub struct FakeSandbox {
    /// How long the fake runtime works on each event.
    pub work: Duration,
    pub launched: AtomicUsize,
    /// Each launched environment's id and environment variables.
    pub envs: Mutex<Vec<(String, EnvVars)>>,
}

impl FakeSandbox {
    pub fn new(work: Duration) -> Arc<Self> {
        Arc::new(Self { work, launched: AtomicUsize::new(0), envs: Mutex::new(Vec::new()) })
    }

    /// The environment variables environment `id` was started with.
    pub fn env_of(&self, id: &str) -> Vec<(String, String)> {
        let envs = self.envs.lock().unwrap_or_else(|e| e.into_inner());
        envs.iter().find(|(e, _)| e == id).map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

impl Sandbox for FakeSandbox {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn launch(&self, spec: &SandboxSpec) -> Result<Launched, SandboxError> {
        self.launched.fetch_add(1, Ordering::SeqCst);
        self.envs.lock().unwrap_or_else(|e| e.into_inner()).push((spec.env_id.to_string(), spec.env.clone()));
        let (read, write) = output_pipe().map_err(SandboxError::Prepare)?;
        let (kill_tx, mut kill_rx) = mpsc::channel(1);
        let (exit_tx, exit_rx) = oneshot::channel();
        let socket = spec.run_dir.join(quarters_sandbox::RAPI_SOCKET);
        let env_id = spec.env_id.to_string();
        let work = self.work;
        tokio::spawn(async move {
            tokio::select! {
                _ = runtime(socket, env_id, work) => {}
                _ = kill_rx.recv() => {}
            }
            drop(write);
            let _ = exit_tx.send(Exit { status: ExitInfo::Signal(9), oom_killed: false, memory_peak_bytes: None });
        });
        Ok(Launched { output: read, exited: exit_rx, control: SandboxControl::new(kill_tx, None) })
    }
}

async fn runtime(socket: std::path::PathBuf, env_id: String, work: Duration) {
    let Ok(stream) = tokio::net::UnixStream::connect(&socket).await else { return };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else { return };
    tokio::spawn(conn);
    loop {
        let req = hyper::Request::get("/2018-06-01/runtime/invocation/next")
            .header("host", "runtime")
            .body(Full::new(Bytes::new()));
        let Ok(req) = req else { return };
        let Ok(resp) = sender.send_request(req).await else { return };
        let h = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let id = h("lambda-runtime-aws-request-id").unwrap_or_default();
        let tenant = h("lambda-runtime-aws-tenant-id");
        let _ = resp.into_body().collect().await;
        tokio::time::sleep(work).await;
        let body = serde_json::json!({ "env": env_id, "tenant": tenant }).to_string();
        let post = hyper::Request::post(format!("/2018-06-01/runtime/invocation/{id}/response"))
            .header("host", "runtime")
            .body(Full::new(Bytes::from(body)));
        let Ok(post) = post else { return };
        let Ok(resp) = sender.send_request(post).await else { return };
        let _ = resp.into_body().collect().await;
    }
}

/// A credential source for tests: execution credentials named after the function, tenant
/// credentials after the tenant, expiring `lifetime` from now; it counts its calls.
pub struct FakeCredentials {
    pub lifetime: Duration,
    pub execution_calls: AtomicUsize,
    pub tenant_calls: AtomicUsize,
}

impl FakeCredentials {
    pub fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self { lifetime, execution_calls: AtomicUsize::new(0), tenant_calls: AtomicUsize::new(0) })
    }

    fn creds(&self, id: String) -> crate::AwsCredentials {
        crate::AwsCredentials {
            secret_access_key: format!("secret-of-{id}"),
            session_token: format!("token-of-{id}"),
            access_key_id: id,
            expiration_ms: quarters_types::time::now_ms() + self.lifetime.as_millis() as u64,
        }
    }
}

impl crate::CredentialSource for FakeCredentials {
    fn execution(&self, function: &str, role_arn: &str) -> Option<crate::AwsCredentials> {
        self.execution_calls.fetch_add(1, Ordering::SeqCst);
        Some(self.creds(format!("EXEC:{function}:{role_arn}")))
    }

    fn tenant(&self, function: &str, tenant: &str) -> Option<crate::AwsCredentials> {
        self.tenant_calls.fetch_add(1, Ordering::SeqCst);
        (tenant != "refused").then(|| self.creds(format!("TENANT:{function}:{tenant}")))
    }
}

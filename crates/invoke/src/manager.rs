//! The environment manager: pools, admission, the invocation state machine, reaping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quarters_runtime_api::{CREDENTIALS_PATH, Invocation, Listener, Outcome, RuntimeApi, RuntimeEvent};
use quarters_sandbox::{API_RELAY_ADDR, Exit, ExitInfo, RUNTIME_API_ADDR, RuntimeChannel, Sandbox, SandboxSpec};
use quarters_telemetry::LogStore;
use quarters_types::time::{now_ms, rfc3339_ms, stream_date};
use quarters_types::{Arns, EnvId, FunctionConfig, LogFormat, TenantId, TenantIsolationMode, limits};
use tokio::sync::watch;
use tracing::Instrument;

use crate::credentials::{CredentialSource, EXPIRY_MARGIN, TenantCredentials, new_token};
use crate::env::{Env, EnvInfo, EnvState, EnvView};
use crate::logs::{LogCapture, StreamMeta, lock};
use crate::relay::{Relay, relay_target};
use crate::runtimes::{Entrypoint, RuntimeFiles};

/// Under the run directory: the managed runtimes' client files.
pub const RUNTIMES_DIR: &str = "runtimes";

#[path = "pool.rs"]
mod pool;
pub use pool::{PoolStatus, TargetResolver};

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Base of the environments' private run directories (kept short: socket paths are
    /// limited to 108 bytes).
    pub run_dir: PathBuf,
    /// An idle environment is destroyed after this long without an invocation.
    pub idle_timeout: Duration,
    /// An environment is retired after this long, busy or not (checked between invocations).
    pub max_lifetime: Option<Duration>,
    /// How long a runtime may take to ask for its first event.
    pub init_timeout: Duration,
    /// Invocations in flight across the whole server.
    pub account_concurrency: u32,
    /// The most memory (the sum of the MemorySize of every live environment, pooled ones
    /// included) the server commits to environments. A new environment that would exceed it
    /// first evicts idle environments, least recently used first; none: no limit.
    pub memory_budget_mb: Option<u64>,
    pub arns: Arns,
}

/// The binding of an environment, for its whole life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub function_uid: Arc<str>,
    pub version: Arc<str>,
    pub generation: u64,
    pub tenant: Option<TenantId>,
}

/// What an invocation runs, as resolved by the control plane.
#[derive(Debug, Clone)]
pub struct Target {
    /// Unique per function incarnation (a function deleted and created again gets a new one).
    pub function_uid: Arc<str>,
    pub version: Arc<str>,
    pub generation: u64,
    pub config: Arc<FunctionConfig>,
    /// The unpacked code.
    pub task_dir: PathBuf,
    /// The function's layers, merged: mounted read-only at `/opt`.
    pub opt_dir: Option<PathBuf>,
    /// A container image function's unpacked root.
    pub image_root: Option<PathBuf>,
    pub invoked_arn: String,
    pub reserved_concurrency: Option<u32>,
    /// Beyond Lambda: the most invocations one tenant may have in flight on this function.
    pub tenant_concurrency: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct InvokeRequest {
    pub target: Target,
    pub tenant: Option<TenantId>,
    pub payload: Bytes,
    pub client_context: Option<String>,
    pub tail: bool,
    pub request_id: String,
}

#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub body: Bytes,
    /// The function failed: `X-Amz-Function-Error: Unhandled`.
    pub function_error: bool,
    pub executed_version: Arc<str>,
    pub log_tail: Option<Vec<u8>>,
    pub cold_start: bool,
    pub env_id: EnvId,
    /// The invoke phase (REPORT's Duration).
    pub duration: Duration,
    /// The init this caller waited for, if it did.
    pub init: Option<Duration>,
}

/// Failures of the platform, as opposed to failures of the function.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("{message}")]
    TooManyRequests { reason: &'static str, message: String },
    #[error("could not start an execution environment: {0}")]
    Sandbox(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The function has nothing to run: no `bootstrap` in its code, or no interpreter for its
    /// runtime on this host (reported to the caller as a function error).
    #[error("invalid entrypoint: {0}")]
    InvalidEntrypoint(String),
}

#[derive(Default)]
struct FnCounters {
    inflight: u32,
    envs: u32,
}

#[derive(Default)]
struct State {
    /// Idle environments, by binding; most recently used last.
    idle: HashMap<PoolKey, Vec<Env>>,
    /// Every live environment.
    all: HashMap<EnvId, Arc<EnvInfo>>,
    inflight: u32,
    per_function: HashMap<Arc<str>, FnCounters>,
    /// In-flight invocations per (function, tenant), for per-tenant limits.
    per_tenant: HashMap<(Arc<str>, TenantId), u32>,
    /// The newest generation seen per (function, version): older environments are retired.
    generation: HashMap<(Arc<str>, Arc<str>), u64>,
    /// Tenant-ready pools, by (function uid, qualifier).
    ready: HashMap<(Arc<str>, Arc<str>), pool::ReadyPool>,
    /// MemorySize committed to live environments and to those being started (see
    /// [`ManagerConfig::memory_budget_mb`]).
    memory_mb: u64,
    shutting_down: bool,
}

impl State {
    fn release_memory(&mut self, mb: u32) {
        self.memory_mb = self.memory_mb.saturating_sub(u64::from(mb));
    }
}

struct Inner {
    cfg: ManagerConfig,
    sandbox: Arc<dyn Sandbox>,
    logs: Arc<LogStore>,
    runtimes: RuntimeFiles,
    state: Mutex<State>,
    /// Sandboxes still being torn down.
    teardown: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
    /// Where new environments' credentials come from (none: they get none).
    credentials: Mutex<Option<Arc<dyn CredentialSource>>>,
    /// The platform's own API, which new environments reach through their relay at
    /// `127.0.0.1:9002` (none: that port is closed).
    api_relay: Mutex<Option<SocketAddr>>,
}

/// The environment manager. Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

/// Releases an admitted invocation's concurrency on drop.
struct Admission {
    inner: Arc<Inner>,
    function: Arc<str>,
    tenant: Option<TenantId>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.state);
        st.inflight = st.inflight.saturating_sub(1);
        if let Some(c) = st.per_function.get_mut(&self.function) {
            c.inflight = c.inflight.saturating_sub(1);
        }
        if let Some(t) = self.tenant.take() {
            let key = (self.function.clone(), t);
            if let Some(n) = st.per_tenant.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.per_tenant.remove(&key);
                }
            }
        }
    }
}

enum Finish {
    Keep,
    Destroy,
}

impl Manager {
    pub fn new(cfg: ManagerConfig, sandbox: Arc<dyn Sandbox>, logs: Arc<LogStore>) -> std::io::Result<Self> {
        std::fs::create_dir_all(&cfg.run_dir)?;
        let runtimes = RuntimeFiles::write(&cfg.run_dir.join(RUNTIMES_DIR))?;
        crate::runtimes::detect();
        let m = Self {
            inner: Arc::new(Inner {
                cfg,
                runtimes,
                sandbox,
                logs,
                state: Mutex::new(State::default()),
                teardown: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
                credentials: Mutex::new(None),
                api_relay: Mutex::new(None),
            }),
        };
        let weak = Arc::downgrade(&m.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Manager { inner }.reap();
            }
        });
        let weak = Arc::downgrade(&m.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Manager { inner }.refill();
            }
        });
        Ok(m)
    }

    /// Give environments created from now on credentials from `source`: the execution role's
    /// in their environment variables, and (PER_TENANT functions) their tenant's from the
    /// container-credentials endpoint of their Runtime API. See [`CredentialSource`].
    pub fn set_credentials(&self, source: Option<Arc<dyn CredentialSource>>) {
        *lock(&self.inner.credentials) = source;
    }

    /// [`Manager::set_credentials`], by value.
    pub fn with_credentials(self, source: Option<Arc<dyn CredentialSource>>) -> Self {
        self.set_credentials(source);
        self
    }

    /// Relay `127.0.0.1:9002` inside environments created from now on to `api`, the server's
    /// own API address (an unspecified address such as `0.0.0.0` is reached on loopback), and
    /// set `AWS_ENDPOINT_URL` to it. Only where the platform makes the environments' network
    /// namespaces; elsewhere there is no relay.
    pub fn set_api_relay(&self, api: Option<SocketAddr>) {
        *lock(&self.inner.api_relay) = api.map(relay_target);
    }

    pub fn sandbox_name(&self) -> &'static str {
        self.inner.sandbox.name()
    }

    /// Run one invocation to completion.
    pub async fn invoke(&self, req: InvokeRequest) -> Result<InvokeResponse, InvokeError> {
        let span = tracing::info_span!(
            "invoke",
            function = %req.target.config.name,
            version = %req.target.version,
            tenant = req.tenant.as_ref().map(|t| t.as_str()).unwrap_or("-"),
            request_id = %req.request_id,
        );
        self.invoke_inner(req).instrument(span).await
    }

    async fn invoke_inner(&self, req: InvokeRequest) -> Result<InvokeResponse, InvokeError> {
        let key = PoolKey {
            function_uid: req.target.function_uid.clone(),
            version: req.target.version.clone(),
            generation: req.target.generation,
            tenant: req.tenant.clone(),
        };
        let _admission = self.admit(&req.target, req.tenant.as_ref())?;
        let (mut env, cold) = match self.acquire(&key, &req.target).await {
            Err(InvokeError::InvalidEntrypoint(why)) => {
                return Ok(InvokeResponse {
                    body: platform_error(
                        "Runtime.InvalidEntrypoint",
                        &format!("RequestId: {} Error: {why}", req.request_id),
                    ),
                    function_error: true,
                    executed_version: key.version.clone(),
                    log_tail: None,
                    cold_start: true,
                    env_id: EnvId::from_random(0),
                    duration: Duration::ZERO,
                    init: None,
                });
            }
            other => other?,
        };
        let (response, finish, undelivered) = self.run(&mut env, &key, &req, cold).await;
        self.release(env, finish);
        if !undelivered {
            return Ok(response);
        }
        // A warm environment died before its runtime took the event (it crashed between
        // invocations): the event never ran, so run it once more, in another environment.
        tracing::info!("environment died before taking the invocation; retrying in another");
        let (mut env, cold) = self.acquire(&key, &req.target).await?;
        let (response, finish, _) = self.run(&mut env, &key, &req, cold).await;
        self.release(env, finish);
        Ok(response)
    }

    fn admit(&self, target: &Target, tenant: Option<&TenantId>) -> Result<Admission, InvokeError> {
        let mut st = lock(&self.inner.state);
        if st.shutting_down {
            return Err(InvokeError::ShuttingDown);
        }
        let reserved = target.reserved_concurrency;
        let inflight = st.per_function.get(&target.function_uid).map(|c| c.inflight).unwrap_or(0);
        if let Some(limit) = reserved {
            if inflight >= limit {
                return Err(InvokeError::TooManyRequests {
                    reason: "ReservedFunctionConcurrentInvocationLimitExceeded",
                    message: "Rate Exceeded.".into(),
                });
            }
        } else if st.inflight >= self.inner.cfg.account_concurrency {
            return Err(InvokeError::TooManyRequests {
                reason: "ConcurrentInvocationLimitExceeded",
                message: "Rate Exceeded.".into(),
            });
        }
        let tenant_key = tenant.map(|t| (target.function_uid.clone(), t.clone()));
        if let (Some(limit), Some(k)) = (target.tenant_concurrency, &tenant_key)
            && st.per_tenant.get(k).copied().unwrap_or(0) >= limit
        {
            return Err(InvokeError::TooManyRequests {
                reason: "TenantConcurrentInvocationLimitExceeded",
                message: format!(
                    "Rate Exceeded. This tenant may have at most {limit} invocations of this function in flight."
                ),
            });
        }
        st.inflight += 1;
        st.per_function.entry(target.function_uid.clone()).or_default().inflight += 1;
        if let Some(k) = tenant_key {
            *st.per_tenant.entry(k).or_insert(0) += 1;
        }
        Ok(Admission { inner: self.inner.clone(), function: target.function_uid.clone(), tenant: tenant.cloned() })
    }

    /// Take an idle environment bound to `key`, or start one.
    async fn acquire(&self, key: &PoolKey, target: &Target) -> Result<(Env, bool), InvokeError> {
        let mut doomed = Vec::new();
        let found = {
            let mut st = lock(&self.inner.state);
            let newest = st.generation.entry((key.function_uid.clone(), key.version.clone())).or_insert(0);
            if key.generation > *newest {
                *newest = key.generation;
            }
            let mut found = None;
            if let Some(pool) = st.idle.get_mut(key) {
                while let Some(env) = pool.pop() {
                    if env.is_dead() || env.expired() {
                        doomed.push(env);
                    } else {
                        found = Some(env);
                        break;
                    }
                }
            }
            if found.is_none()
                && let Some(mut env) = self.take_ready(&mut st, key)
            {
                match env.bind(key) {
                    Ok(()) => {
                        st.all.insert(env.info.id, env.info.clone());
                        found = Some(env);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a pooled environment could not be bound");
                        doomed.push(env);
                    }
                }
            }
            if found.is_none() {
                // A new environment: the tenant-environment cap applies.
                if key.tenant.is_some() {
                    let conc = target.reserved_concurrency.unwrap_or(self.inner.cfg.account_concurrency).max(1);
                    let cap = (u64::from(limits::TENANT_ENVS_PER_1000) * u64::from(conc)).div_ceil(1000) as u32;
                    let envs = st.per_function.get(&key.function_uid).map(|c| c.envs).unwrap_or(0);
                    if envs >= cap {
                        match take_lru_idle(&mut st, Some(&key.function_uid)) {
                            Some(victim) => doomed.push(victim),
                            None => {
                                // Dead or expired environments already taken from the pool
                                // are still destroyed (and uncounted).
                                drop(st);
                                for env in doomed {
                                    self.destroy(env);
                                }
                                return Err(InvokeError::TooManyRequests {
                                    reason: "ConcurrentInvocationLimitExceeded",
                                    message: "Rate exceeded".into(),
                                });
                            }
                        }
                    }
                }
                if let Err(e) = self.make_room(&mut st, target.config.memory_mb, &mut doomed) {
                    drop(st);
                    for env in doomed {
                        self.destroy(env);
                    }
                    return Err(e);
                }
                st.memory_mb += u64::from(target.config.memory_mb);
                st.per_function.entry(key.function_uid.clone()).or_default().envs += 1;
            }
            found
        };
        for env in doomed {
            self.destroy(env);
        }
        if let Some(env) = found {
            env.info.set_state(EnvState::Busy);
            return Ok((env, false));
        }
        let spawned = self.entrypoint(target).and_then(|ep| self.spawn_env(key, target, ep));
        match spawned {
            Ok(env) => Ok((env, true)),
            Err(e) => {
                let mut st = lock(&self.inner.state);
                if let Some(c) = st.per_function.get_mut(&key.function_uid) {
                    c.envs = c.envs.saturating_sub(1);
                }
                st.release_memory(target.config.memory_mb);
                Err(e)
            }
        }
    }

    /// Within the memory budget, make room for a new environment of `mb`: pick idle
    /// environments to evict (into `doomed`), least recently used first across every function,
    /// then unbound ones from tenant-ready pools. Environments already in `doomed` are being
    /// evicted and count as free.
    fn make_room(&self, st: &mut State, mb: u32, doomed: &mut Vec<Env>) -> Result<(), InvokeError> {
        let Some(budget) = self.inner.cfg.memory_budget_mb else { return Ok(()) };
        let need = u64::from(mb);
        if need > budget {
            return Err(InvokeError::TooManyRequests {
                reason: "ConcurrentInvocationLimitExceeded",
                message: format!(
                    "Rate Exceeded. The function's MemorySize ({mb} MB) exceeds the server's memory budget ({budget} MB)."
                ),
            });
        }
        loop {
            let freeing: u64 = doomed.iter().map(|e| u64::from(e.info.memory_mb)).sum();
            if st.memory_mb.saturating_sub(freeing) + need <= budget {
                return Ok(());
            }
            match take_lru_idle(st, None).or_else(|| pool::take_any_ready(st)) {
                Some(victim) => {
                    tracing::debug!(env = %victim.info.id, "evicted to stay within the memory budget");
                    doomed.push(victim);
                }
                None => {
                    return Err(InvokeError::TooManyRequests {
                        reason: "ConcurrentInvocationLimitExceeded",
                        message: format!(
                            "Rate Exceeded. The server's memory budget ({budget} MB) is held by busy environments."
                        ),
                    });
                }
            }
        }
    }

    /// MemorySize committed to environments now, and the budget (see
    /// [`ManagerConfig::memory_budget_mb`]).
    pub fn memory_committed(&self) -> (u64, Option<u64>) {
        (lock(&self.inner.state).memory_mb, self.inner.cfg.memory_budget_mb)
    }

    /// How the function's environments start (one place for custom and managed runtimes).
    fn entrypoint(&self, target: &Target) -> Result<Entrypoint, InvokeError> {
        match &target.image_root {
            Some(root) => crate::runtimes::image_entrypoint(&target.config, root),
            None => self.inner.runtimes.entrypoint(target.config.runtime, &target.task_dir, target.opt_dir.as_deref()),
        }
        .map_err(InvokeError::InvalidEntrypoint)
    }

    fn spawn_env(&self, key: &PoolKey, target: &Target, ep: Entrypoint) -> Result<Env, InvokeError> {
        self.spawn_env_as(key, target, ep, false)
    }

    fn spawn_env_as(&self, key: &PoolKey, target: &Target, ep: Entrypoint, pooled: bool) -> Result<Env, InvokeError> {
        let cfg = &target.config;
        let id = EnvId::from_random(rand::random());
        let now = now_ms();
        let stream: Arc<str> = format!("{}/[{}]{}", stream_date(now), key.version, id).into();
        let run_dir = self.inner.cfg.run_dir.join(id.to_string());
        let fail = |e: std::io::Error| InvokeError::Sandbox(e.to_string());
        std::fs::create_dir_all(&run_dir).map_err(fail)?;
        let served = self.inner.sandbox.runtime_channel(&run_dir).map_err(|e| e.to_string()).and_then(|ch| match ch {
            RuntimeChannel::Unix(path) => RuntimeApi::serve(&path).map(|x| (x, None, None)).map_err(|e| e.to_string()),
            RuntimeChannel::Netns { listener, netns, relay } => tokio::net::TcpListener::from_std(listener)
                .map(|l| (RuntimeApi::serve_on(Listener::Tcp(l)), Some(Arc::new(netns)), relay))
                .map_err(|e| e.to_string()),
        });
        let ((rapi, events), netns, relay_listener) = match served {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(InvokeError::Sandbox(e));
            }
        };
        let created = Instant::now();
        let mut platform_env = Vec::new();
        // The relay to the platform's API; without a target its listener is dropped here, which
        // closes the port before the sandbox starts.
        let api = *lock(&self.inner.api_relay);
        let relay = match (relay_listener, api) {
            (Some(l), Some(to)) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => {
                    platform_env.push(("AWS_ENDPOINT_URL".to_owned(), format!("http://{API_RELAY_ADDR}")));
                    Some(Relay::start(l, to))
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&run_dir);
                    return Err(InvokeError::Sandbox(e.to_string()));
                }
            },
            (None, Some(_)) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::warn!(
                        "the platform does not make the environments' network namespaces here: no relay to its API (AWS_ENDPOINT_URL is not set)"
                    )
                });
                None
            }
            _ => None,
        };
        let source = lock(&self.inner.credentials).clone();
        let mut retire_at = self.inner.cfg.max_lifetime.map(|m| created + m);
        let mut tenant_credentials = None;
        if let Some(src) = &source {
            if let Some(c) = src.execution(&cfg.name, &cfg.role) {
                // Environment variables cannot change in a running process: the environment is
                // retired before its credentials could expire during an invocation.
                let margin = EXPIRY_MARGIN + Duration::from_secs(u64::from(cfg.timeout_s));
                let left = Duration::from_millis(c.expiration_ms.saturating_sub(now_ms())).saturating_sub(margin);
                let creds_end = created + left;
                retire_at = Some(retire_at.map_or(creds_end, |t| t.min(creds_end)));
                platform_env.push(("AWS_ACCESS_KEY_ID".to_owned(), c.access_key_id));
                platform_env.push(("AWS_SECRET_ACCESS_KEY".to_owned(), c.secret_access_key));
                platform_env.push(("AWS_SESSION_TOKEN".to_owned(), c.session_token));
            }
            if cfg.tenancy == Some(TenantIsolationMode::PerTenant) {
                let tc = Arc::new(TenantCredentials::new(src.clone(), cfg.name.clone(), key.tenant.clone()));
                let token = new_token();
                rapi.set_credentials_endpoint(token.clone(), tc.clone());
                platform_env.push((
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
                    format!("http://{RUNTIME_API_ADDR}{CREDENTIALS_PATH}"),
                ));
                platform_env.push(("AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned(), token));
                tenant_credentials = Some(tc);
            }
        }
        let spec = SandboxSpec {
            env_id: id,
            task_dir: target.task_dir.clone(),
            run_dir: run_dir.clone(),
            env: runtime_env(cfg, &key.version, &stream, &self.inner.cfg.arns, platform_env, ep.env),
            memory_mb: cfg.memory_mb,
            tmp_mb: cfg.ephemeral_mb,
            command: ep.command,
            ro_binds: ep.ro_binds,
            root: ep.root,
            workdir: ep.workdir,
            netns,
        };
        let launched_at = Instant::now();
        let launched = match self.inner.sandbox.launch(&spec) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&run_dir);
                return Err(InvokeError::Sandbox(e.to_string()));
            }
        };
        let meta = StreamMeta {
            log_group: cfg.logging.log_group.as_str().into(),
            log_stream: stream.clone(),
            function: cfg.name.as_str().into(),
            version: key.version.clone(),
            format: cfg.logging.log_format,
            tenant: key.tenant.clone().map(std::sync::OnceLock::from).unwrap_or_default(),
        };
        let logs = LogCapture::new(meta, self.inner.logs.clone(), launched.output).map_err(fail)?;
        tokio::spawn(logs.clone().run());
        let (exit_tx, exit_rx) = watch::channel(None);
        let exited = launched.exited;
        tokio::spawn(async move {
            let exit =
                exited.await.unwrap_or(Exit { status: ExitInfo::Unknown, oom_killed: false, memory_peak_bytes: None });
            let _ = exit_tx.send(Some(exit));
        });
        let mut info = EnvInfo::new(id, key.clone(), cfg.name.as_str().into(), stream, now);
        info.pooled = pooled;
        info.memory_mb = cfg.memory_mb;
        let info = Arc::new(info);
        lock(&self.inner.state).all.insert(id, info.clone());
        tracing::info!(env = %id, "environment started");
        let env = Env {
            info,
            rapi,
            events,
            exit: exit_rx,
            control: launched.control,
            logs,
            initialized: false,
            launched_at,
            last_used: launched_at,
            run_dir,
            retire_at,
            relay,
            tenant_credentials,
        };
        env.logs.platform(init_start_line(cfg, &key.version, &self.inner.cfg.arns));
        Ok(env)
    }

    /// The invocation state machine, on an environment this invocation owns.
    async fn run(
        &self,
        env: &mut Env,
        key: &PoolKey,
        req: &InvokeRequest,
        cold: bool,
    ) -> (InvokeResponse, Finish, bool) {
        let cfg = &req.target.config;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(u64::from(cfg.timeout_s));
        let deadline_ms = now_ms() + u64::from(cfg.timeout_s) * 1000;
        let request_id: Arc<str> = req.request_id.as_str().into();
        env.info.invocations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        env.logs.begin(request_id.clone(), req.tail);
        env.logs.platform(start_line(cfg.logging.log_format, &request_id, &key.version, key.tenant.as_ref()));

        let inv = Invocation {
            request_id: req.request_id.clone(),
            payload: if req.payload.is_empty() { Bytes::from_static(b"{}") } else { req.payload.clone() },
            deadline_ms,
            invoked_arn: req.target.invoked_arn.clone(),
            tenant: req.tenant.clone(),
            client_context: req.client_context.clone(),
            trace_id: trace_id(),
        };
        let mut init_duration = None;
        // Duration is the invoke phase's: from the end of init, if this call waited for one.
        let mut invoke_started = started;
        let ended = match env.dispatch(key, inv) {
            Err(e) => Ended::Platform(e.to_string()),
            Ok(outcome_rx) => {
                let init = if env.initialized {
                    Ok(())
                } else {
                    let init_limit = env.launched_at + self.inner.cfg.init_timeout;
                    let init_deadline = init_limit.min(deadline);
                    let r = match wait_init(env, init_deadline).await {
                        Err(Ended::Timeout) if init_limit < deadline => Err(Ended::InitTimeout),
                        other => other,
                    };
                    if r.is_ok() {
                        env.initialized = true;
                        env.info.set_state(EnvState::Busy);
                        init_duration = Some(env.launched_at.elapsed());
                        invoke_started = Instant::now();
                    }
                    r
                };
                match init {
                    Err(e) => e,
                    Ok(()) => wait_outcome(env, outcome_rx, deadline).await,
                }
            }
        };
        let undelivered = !cold && matches!(ended, Ended::Exited(_)) && env.rapi.withdraw();
        // Everything the runtime wrote before it answered is in the pipe now.
        env.logs.drain_now(true);
        let duration = invoke_started.elapsed();
        let timeout_s = cfg.timeout_s;
        let (body, function_error, finish, status) = match ended {
            Ended::Outcome(Outcome::Response(b)) => (b, false, Finish::Keep, "success"),
            Ended::Outcome(Outcome::Error { error_type, body }) => {
                (error_body(&error_type, body), true, Finish::Keep, "error")
            }
            Ended::Outcome(Outcome::ResponseTooLarge) => (
                platform_error(
                    "Function.ResponseSizeTooLarge",
                    &format!(
                        "Response payload size exceeded maximum allowed payload size ({} bytes).",
                        limits::RESPONSE_MAX_BYTES
                    ),
                ),
                true,
                // The runtime's post was cut short; it may not survive that: start afresh.
                Finish::Destroy,
                "error",
            ),
            Ended::InitError { error_type, body } => (error_body(&error_type, body), true, Finish::Destroy, "error"),
            Ended::InitTimeout => {
                let secs = self.inner.cfg.init_timeout.as_secs_f64();
                env.logs.platform(format!(
                    "{} {} Init timed out after {secs:.2} seconds",
                    rfc3339_ms(now_ms()),
                    request_id
                ));
                (
                    platform_error(
                        "Sandbox.Timedout",
                        &format!("RequestId: {request_id} Error: Init timed out after {secs:.2} seconds"),
                    ),
                    true,
                    Finish::Destroy,
                    "timeout",
                )
            }
            Ended::Timeout => {
                env.logs.platform(format!(
                    "{} {} Task timed out after {}.00 seconds",
                    rfc3339_ms(now_ms()),
                    request_id,
                    timeout_s
                ));
                (
                    platform_error(
                        "Sandbox.Timedout",
                        &format!("RequestId: {request_id} Error: Task timed out after {timeout_s}.00 seconds"),
                    ),
                    true,
                    Finish::Destroy,
                    "timeout",
                )
            }
            Ended::Exited(exit) => (
                platform_error(
                    "Runtime.ExitError",
                    &format!("RequestId: {request_id} Error: Runtime exited with error: {}", exit.status.describe()),
                ),
                true,
                Finish::Destroy,
                "error",
            ),
            Ended::Platform(msg) => (platform_error("Sandbox.Failure", &msg), true, Finish::Destroy, "failure"),
        };
        let peak = env
            .control
            .memory_peak_bytes()
            .or_else(|| env.exit.borrow().as_ref().and_then(|e| e.memory_peak_bytes))
            .unwrap_or(0);
        let fmt = cfg.logging.log_format;
        if fmt == LogFormat::Text {
            env.logs.platform(format!("END RequestId: {request_id}"));
        }
        env.logs.platform(report_line(&Report {
            format: fmt,
            request_id: &request_id,
            duration,
            memory_mb: cfg.memory_mb,
            max_used_mb: peak.div_ceil(1024 * 1024),
            init: init_duration,
            status,
            tenant: key.tenant.as_ref(),
        }));
        let log_tail = env.logs.finish();
        let response = InvokeResponse {
            body,
            function_error,
            executed_version: key.version.clone(),
            log_tail,
            cold_start: cold,
            env_id: env.info.id,
            duration,
            init: init_duration,
        };
        (response, finish, undelivered)
    }

    fn release(&self, mut env: Env, finish: Finish) {
        let now = Instant::now();
        env.last_used = now;
        env.info.last_used_ms.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        let expired = env.expired();
        let mut st = lock(&self.inner.state);
        let stale = st
            .generation
            .get(&(env.info.key.function_uid.clone(), env.info.key.version.clone()))
            .is_some_and(|g| *g > env.info.key.generation);
        if matches!(finish, Finish::Destroy) || expired || stale || st.shutting_down || env.is_dead() {
            drop(st);
            self.destroy(env);
            return;
        }
        env.info.set_state(EnvState::Idle);
        st.idle.entry(env.info.key.clone()).or_default().push(env);
    }

    /// Kill an environment and forget it; its sandbox and run directory go in the background.
    fn destroy(&self, env: Env) {
        env.info.set_state(EnvState::Dead);
        env.control.kill();
        {
            let mut st = lock(&self.inner.state);
            st.all.remove(&env.info.id);
            if let Some(c) = st.per_function.get_mut(&env.info.key.function_uid) {
                c.envs = c.envs.saturating_sub(1);
            }
            st.release_memory(env.info.memory_mb);
        }
        tracing::info!(env = %env.info.id, "environment destroyed");
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let Env { mut exit, run_dir, rapi, relay, .. } = env;
            let _ = tokio::time::timeout(Duration::from_secs(10), exit.wait_for(|e| e.is_some())).await;
            drop(rapi);
            drop(relay);
            let _ = tokio::fs::remove_dir_all(&run_dir).await;
            drop(inner);
        });
    }

    /// Destroy idle environments past their idle timeout or lifetime, and dead ones.
    /// (Ready pools are topped up by [`pool::refill`].)
    fn reap(&self) {
        let idle_timeout = self.inner.cfg.idle_timeout;
        let mut doomed = Vec::new();
        {
            let mut st = lock(&self.inner.state);
            for pool in st.idle.values_mut() {
                let mut i = 0;
                while i < pool.len() {
                    let e = &pool[i];
                    let old = e.last_used.elapsed() >= idle_timeout || e.expired() || e.is_dead();
                    if old {
                        doomed.push(pool.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            st.idle.retain(|_, p| !p.is_empty());
        }
        for env in doomed {
            self.destroy(env);
        }
    }

    /// Retire every environment of a function (deleted) or of one of its versions (changed):
    /// idle ones now, busy ones when their invocation ends.
    pub fn retire(&self, function_uid: &str, version: Option<&str>, new_generation: Option<u64>) {
        let mut doomed = Vec::new();
        {
            let mut st = lock(&self.inner.state);
            if let (Some(v), Some(g)) = (version, new_generation) {
                let e = st.generation.entry((function_uid.into(), v.into())).or_insert(0);
                *e = (*e).max(g);
            } else {
                let keys: Vec<_> = st
                    .generation
                    .keys()
                    .filter(|(f, v)| &**f == function_uid && version.is_none_or(|x| x == &**v))
                    .cloned()
                    .collect();
                for k in keys {
                    st.generation.insert(k, u64::MAX);
                }
            }
            let keys: Vec<PoolKey> = st
                .idle
                .keys()
                .filter(|k| &*k.function_uid == function_uid && version.is_none_or(|v| v == &*k.version))
                .cloned()
                .collect();
            for k in keys {
                if let Some(pool) = st.idle.remove(&k) {
                    doomed.extend(pool);
                }
            }
        }
        for env in doomed {
            self.destroy(env);
        }
    }

    /// Destroy every idle environment of one tenant (of one function, or of all); busy ones
    /// are destroyed when their invocation ends. Returns how many environments that was.
    pub fn offboard_tenant(&self, tenant: &TenantId, function_uid: Option<&str>) -> usize {
        let mut doomed = Vec::new();
        let busy;
        {
            let mut st = lock(&self.inner.state);
            let keys: Vec<PoolKey> = st
                .idle
                .keys()
                .filter(|k| k.tenant.as_ref() == Some(tenant) && function_uid.is_none_or(|f| f == &*k.function_uid))
                .cloned()
                .collect();
            for k in keys {
                if let Some(pool) = st.idle.remove(&k) {
                    doomed.extend(pool);
                }
            }
            busy = st
                .all
                .values()
                .filter(|i| {
                    i.key.tenant.as_ref() == Some(tenant) && function_uid.is_none_or(|f| f == &*i.key.function_uid)
                })
                .filter(|i| !doomed.iter().any(|d: &Env| d.info.id == i.id))
                .map(|i| {
                    let key = (i.key.function_uid.clone(), i.key.version.clone());
                    (key, i.key.generation)
                })
                .collect::<Vec<_>>();
            for (k, g) in &busy {
                let e = st.generation.entry(k.clone()).or_insert(0);
                *e = (*e).max(g + 1);
            }
        }
        let n = doomed.len() + busy.len();
        for env in doomed {
            self.destroy(env);
        }
        n
    }

    /// Every live environment, optionally of one function.
    pub fn environments(&self, function_uid: Option<&str>) -> Vec<EnvView> {
        let st = lock(&self.inner.state);
        let mut v: Vec<EnvView> = st
            .all
            .values()
            .filter(|i| function_uid.is_none_or(|f| f == &*i.key.function_uid))
            .map(|i| i.view())
            .collect();
        v.sort_by(|a, b| (&a.tenant, a.created_ms).cmp(&(&b.tenant, b.created_ms)));
        v
    }

    /// Stop taking invocations and destroy every environment; waits (bounded) until their
    /// sandboxes are gone.
    pub async fn shutdown(&self) {
        let doomed: Vec<Env> = {
            let mut st = lock(&self.inner.state);
            st.shutting_down = true;
            let mut all: Vec<Env> = st.idle.drain().flat_map(|(_, p)| p).collect();
            all.extend(st.ready.drain().flat_map(|(_, p)| p.envs));
            all
        };
        for env in doomed {
            self.destroy(env);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if lock(&self.inner.state).all.is_empty()
                // Environments' run directories are gone (the runtimes' files stay until the
                // server's own clean-up).
                && std::fs::read_dir(&self.inner.cfg.run_dir)
                    .map(|d| d.filter_map(Result::ok).all(|e| e.file_name() == RUNTIMES_DIR || e.file_name() == quarters_sandbox::INIT_FILE))
                    .unwrap_or(true)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.inner.teardown.lock().await.shutdown().await;
    }
}

/// The least recently used idle environment (of one function, or of any), taken out of its pool.
fn take_lru_idle(st: &mut State, function_uid: Option<&Arc<str>>) -> Option<Env> {
    let key = st
        .idle
        .iter()
        .filter(|(k, p)| function_uid.is_none_or(|f| &k.function_uid == f) && !p.is_empty())
        .min_by_key(|(_, p)| p.first().map(|e| e.last_used))
        .map(|(k, _)| k.clone())?;
    let pool = st.idle.get_mut(&key)?;
    let env = pool.remove(0);
    if pool.is_empty() {
        st.idle.remove(&key);
    }
    Some(env)
}

const UNKNOWN_EXIT: Exit = Exit { status: ExitInfo::Unknown, oom_killed: false, memory_peak_bytes: None };

enum Ended {
    Outcome(Outcome),
    InitError {
        error_type: String,
        body: Bytes,
    },
    Timeout,
    /// The runtime did not ask for its first event within the init timeout.
    InitTimeout,
    Exited(Exit),
    Platform(String),
}

/// Wait until the runtime asks for its first event.
async fn wait_init(env: &mut Env, deadline: Instant) -> Result<(), Ended> {
    let mut exit = env.exit.clone();
    tokio::select! {
        ev = env.events.recv() => match ev {
            Some(RuntimeEvent::Ready) => Ok(()),
            Some(RuntimeEvent::InitError { error_type, body }) => {
                Err(Ended::InitError { error_type, body })
            }
            None => Err(Ended::Platform("Runtime API stopped".into())),
        },
        r = exit.wait_for(|e| e.is_some()) => {
            let e = r.ok().and_then(|e| *e);
            Err(Ended::Exited(e.unwrap_or(UNKNOWN_EXIT)))
        }
        _ = tokio::time::sleep_until(deadline.into()) => Err(Ended::Timeout),
    }
}

async fn wait_outcome(env: &mut Env, rx: tokio::sync::oneshot::Receiver<Outcome>, deadline: Instant) -> Ended {
    let mut exit = env.exit.clone();
    tokio::select! {
        biased;
        r = rx => match r {
            Ok(o) => Ended::Outcome(o),
            Err(_) => Ended::Platform("the runtime abandoned the invocation".into()),
        },
        r = exit.wait_for(|e| e.is_some()) => {
            let e = r.ok().and_then(|e| *e);
            Ended::Exited(e.unwrap_or(UNKNOWN_EXIT))
        }
        _ = tokio::time::sleep_until(deadline.into()) => Ended::Timeout,
    }
}

/// The error body returned to the caller: the runtime's JSON object, or one built around what
/// it sent.
fn error_body(error_type: &str, body: Bytes) -> Bytes {
    if let Ok(serde_json::Value::Object(_)) = serde_json::from_slice::<serde_json::Value>(&body) {
        return body;
    }
    let msg = String::from_utf8_lossy(&body).into_owned();
    Bytes::from(serde_json::json!({ "errorMessage": msg, "errorType": error_type }).to_string())
}

fn platform_error(error_type: &str, message: &str) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

fn trace_id() -> String {
    let r: u128 = rand::random();
    let secs = now_ms() / 1000;
    format!("Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0", secs, r >> 32, r as u64)
}

/// The runtime's environment variables (reference §4.1).
fn runtime_env(
    cfg: &FunctionConfig,
    version: &str,
    stream: &str,
    arns: &Arns,
    platform: Vec<(String, String)>,
    runtime: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = cfg.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut set = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
    set("AWS_LAMBDA_FUNCTION_NAME", &cfg.name);
    set("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", &cfg.memory_mb.to_string());
    set("AWS_LAMBDA_FUNCTION_VERSION", version);
    set("AWS_LAMBDA_LOG_GROUP_NAME", &cfg.logging.log_group);
    set("AWS_LAMBDA_LOG_STREAM_NAME", stream);
    set("AWS_LAMBDA_RUNTIME_API", RUNTIME_API_ADDR);
    set("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand");
    set("AWS_REGION", &arns.region);
    set("AWS_DEFAULT_REGION", &arns.region);
    set("LAMBDA_TASK_ROOT", "/var/task");
    set("LAMBDA_RUNTIME_DIR", "/var/runtime");
    set("_HANDLER", &cfg.handler);
    set("LANG", "en_US.UTF-8");
    set("TZ", ":UTC");
    set("PATH", "/usr/local/bin:/usr/bin/:/bin:/opt/bin");
    set(
        "LD_LIBRARY_PATH",
        "/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    );
    set("AWS_XRAY_CONTEXT_MISSING", "LOG_ERROR");
    if cfg.logging.log_format == LogFormat::Json {
        set("AWS_LAMBDA_LOG_FORMAT", "JSON");
        if let Some(level) = &cfg.logging.application_log_level {
            set("AWS_LAMBDA_LOG_LEVEL", level);
        }
    }
    // The relay's endpoint and the credentials (after the function's own variables: later
    // values win).
    env.extend(platform);
    env.extend(runtime);
    env
}

fn init_start_line(cfg: &FunctionConfig, version: &str, arns: &Arns) -> String {
    let runtime_version = crate::runtimes::runtime_version(cfg.runtime);
    let arn = arns.runtime_version(&crate::runtimes::runtime_version_id(cfg.runtime));
    match cfg.logging.log_format {
        LogFormat::Text => {
            format!("INIT_START Runtime Version: {runtime_version}\tRuntime Version ARN: {arn}")
        }
        LogFormat::Json => serde_json::json!({
            "time": rfc3339_ms(now_ms()),
            "type": "platform.initStart",
            "record": {
                "initializationType": "on-demand",
                "phase": "init",
                "runtimeVersion": runtime_version,
                "runtimeVersionArn": arn,
                "functionName": cfg.name,
                "functionVersion": version,
            }
        })
        .to_string(),
    }
}

fn start_line(format: LogFormat, request_id: &str, version: &str, tenant: Option<&TenantId>) -> String {
    match format {
        LogFormat::Text => format!("START RequestId: {request_id} Version: {version}"),
        LogFormat::Json => {
            let mut record = serde_json::json!({ "requestId": request_id, "version": version });
            if let Some(t) = tenant {
                record["tenantId"] = t.as_str().into();
            }
            serde_json::json!({ "time": rfc3339_ms(now_ms()), "type": "platform.start", "record": record }).to_string()
        }
    }
}

struct Report<'a> {
    format: LogFormat,
    request_id: &'a str,
    duration: Duration,
    memory_mb: u32,
    max_used_mb: u64,
    init: Option<Duration>,
    status: &'a str,
    tenant: Option<&'a TenantId>,
}

fn report_line(r: &Report<'_>) -> String {
    let ms = r.duration.as_secs_f64() * 1000.0;
    let billed = ms.ceil().max(1.0) as u64;
    match r.format {
        LogFormat::Text => {
            let mut s = format!(
                "REPORT RequestId: {}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
                r.request_id, ms, billed, r.memory_mb, r.max_used_mb
            );
            if let Some(init) = r.init {
                s.push_str(&format!("Init Duration: {:.2} ms\t", init.as_secs_f64() * 1000.0));
            }
            if r.status != "success" && r.status != "error" {
                s.push_str(&format!("Status: {}\t", r.status));
            }
            s
        }
        LogFormat::Json => {
            let mut metrics = serde_json::json!({
                "durationMs": (ms * 1000.0).round() / 1000.0,
                "billedDurationMs": billed,
                "memorySizeMB": r.memory_mb,
                "maxMemoryUsedMB": r.max_used_mb,
            });
            if let Some(init) = r.init {
                metrics["initDurationMs"] = ((init.as_secs_f64() * 1_000_000.0).round() / 1000.0).into();
            }
            let mut record = serde_json::json!({ "requestId": r.request_id, "status": r.status, "metrics": metrics });
            if let Some(t) = r.tenant {
                record["tenantId"] = t.as_str().into();
            }
            serde_json::json!({ "time": rfc3339_ms(now_ms()), "type": "platform.report", "record": record }).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use quarters_types::{LoggingConfig, Runtime};

    use super::*;
    use crate::fake::FakeSandbox;

    fn config() -> FunctionConfig {
        FunctionConfig {
            name: "f".into(),
            runtime: Runtime::ProvidedAl2023,
            handler: "bootstrap".into(),
            role: "arn:aws:iam::000000000000:role/r".into(),
            description: String::new(),
            timeout_s: 5,
            memory_mb: 128,
            ephemeral_mb: 512,
            environment: BTreeMap::new(),
            architectures: vec!["x86_64".into()],
            logging: LoggingConfig {
                log_format: LogFormat::Text,
                application_log_level: None,
                system_log_level: None,
                log_group: "/aws/lambda/f".into(),
            },
            tenancy: Some(quarters_types::TenantIsolationMode::PerTenant),
            tracing_mode: "PassThrough".into(),
            layers: Vec::new(),
            image: None,
        }
    }

    struct Fixture {
        manager: Manager,
        sandbox: Arc<FakeSandbox>,
        target: Target,
        _dir: tempfile::TempDir,
    }

    fn fixture(work: Duration, idle: Duration) -> Fixture {
        fixture_with_budget(work, idle, None)
    }

    fn fixture_with_budget(work: Duration, idle: Duration, memory_budget_mb: Option<u64>) -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let task = dir.path().join("task");
        std::fs::create_dir_all(&task).expect("task dir");
        std::fs::write(task.join("bootstrap"), "").expect("bootstrap");
        let logs = Arc::new(LogStore::open(&dir.path().join("logs.db")).expect("logs"));
        let sandbox = FakeSandbox::new(work);
        let manager = Manager::new(
            ManagerConfig {
                run_dir: dir.path().join("run"),
                idle_timeout: idle,
                max_lifetime: None,
                init_timeout: Duration::from_secs(5),
                account_concurrency: 1000,
                memory_budget_mb,
                arns: Arns::default(),
            },
            sandbox.clone(),
            logs,
        )
        .expect("manager");
        let target = Target {
            function_uid: "uid-1".into(),
            version: "$LATEST".into(),
            generation: 1,
            config: Arc::new(config()),
            task_dir: task,
            opt_dir: None,
            image_root: None,
            invoked_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            reserved_concurrency: None,
            tenant_concurrency: None,
        };
        Fixture { manager, sandbox, target, _dir: dir }
    }

    fn request(target: &Target, tenant: &str) -> InvokeRequest {
        InvokeRequest {
            target: target.clone(),
            tenant: Some(TenantId::parse(tenant).expect("tenant")),
            payload: Bytes::from_static(b"{}"),
            client_context: None,
            tail: false,
            request_id: uuid_like(),
        }
    }

    fn uuid_like() -> String {
        format!("{:032x}", rand::random::<u128>())
    }

    fn served_by(resp: &InvokeResponse) -> (String, Option<String>) {
        let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("json");
        (v["env"].as_str().expect("env").to_owned(), v["tenant"].as_str().map(str::to_owned))
    }

    /// With a budget of three 128 MB environments, a fourth tenant evicts the least recently
    /// used idle one; with all three busy, a new one is refused with 429.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_memory_budget_evicts_the_least_recently_used_idle_environment() {
        use std::sync::atomic::Ordering::SeqCst;
        let f = fixture_with_budget(Duration::from_millis(1), Duration::from_secs(60), Some(3 * 128));
        for t in ["a", "b", "c"] {
            assert!(f.manager.invoke(request(&f.target, t)).await.expect("invoke").cold_start);
        }
        assert_eq!(f.manager.memory_committed(), (384, Some(384)));
        // b and c are used again, so a is the least recently used.
        for t in ["b", "c"] {
            assert!(!f.manager.invoke(request(&f.target, t)).await.expect("warm").cold_start);
        }
        assert!(f.manager.invoke(request(&f.target, "d")).await.expect("d").cold_start);
        assert_eq!(f.manager.memory_committed().0, 384, "d took a's place");
        for t in ["b", "c", "d"] {
            assert!(!f.manager.invoke(request(&f.target, t)).await.expect("still warm").cold_start, "{t}");
        }
        assert!(f.manager.invoke(request(&f.target, "a")).await.expect("a again").cold_start, "a was evicted");
        assert_eq!(f.sandbox.launched.load(SeqCst), 5);
        assert!(f.manager.memory_committed().0 <= 384);

        // Three long invocations hold the whole budget: a fourth tenant is refused.
        let slow = fixture_with_budget(Duration::from_millis(400), Duration::from_secs(60), Some(3 * 128));
        let busy: Vec<_> = ["x", "y", "z"]
            .into_iter()
            .map(|t| {
                let m = slow.manager.clone();
                let req = request(&slow.target, t);
                tokio::spawn(async move { m.invoke(req).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(150)).await;
        match slow.manager.invoke(request(&slow.target, "w")).await {
            Err(InvokeError::TooManyRequests { reason, message }) => {
                assert_eq!(reason, "ConcurrentInvocationLimitExceeded");
                assert!(message.contains("memory budget"), "{message}");
            }
            other => panic!("expected 429, got {:?}", other.map(|r| r.cold_start)),
        }
        for b in busy {
            b.await.expect("join").expect("busy invocations finish");
        }
        // Once they are idle, w fits by evicting one of them.
        assert!(slow.manager.invoke(request(&slow.target, "w")).await.expect("w").cold_start);
        assert_eq!(slow.manager.memory_committed().0, 384);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_tenants_never_share_an_environment() {
        let f = fixture(Duration::from_millis(30), Duration::from_secs(60));
        let mut tasks = Vec::new();
        for _round in 0..3 {
            for t in 0..6 {
                for _ in 0..8 {
                    let m = f.manager.clone();
                    let req = request(&f.target, &format!("tenant {t}/..:x"));
                    tasks.push(tokio::spawn(async move {
                        let tenant = req.tenant.clone();
                        (tenant, m.invoke(req).await)
                    }));
                }
            }
        }
        let mut env_tenants: HashMap<String, HashSet<Option<String>>> = HashMap::new();
        let mut tenant_envs: HashMap<String, HashSet<String>> = HashMap::new();
        for t in tasks {
            let (tenant, r) = t.await.expect("join");
            let resp = r.expect("invoke");
            assert!(!resp.function_error);
            let (env, seen) = served_by(&resp);
            let tenant = tenant.map(|t| t.as_str().to_owned());
            assert_eq!(seen, tenant, "the runtime got the invocation's own tenant");
            env_tenants.entry(env.clone()).or_default().insert(seen);
            tenant_envs.entry(tenant.unwrap_or_default()).or_default().insert(env);
        }
        for (env, tenants) in &env_tenants {
            assert_eq!(tenants.len(), 1, "environment {env} served {tenants:?}");
        }
        assert_eq!(tenant_envs.len(), 6);
        for (tenant, envs) in &tenant_envs {
            assert!(envs.len() > 1, "overlapping calls of {tenant} scaled out: {envs:?}");
        }
        // Sequential calls reuse warm environments: no new sandbox for these.
        let before = f.sandbox.launched.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..5 {
            let r = f.manager.invoke(request(&f.target, "tenant 0/..:x")).await.expect("warm");
            assert!(!r.cold_start);
        }
        assert_eq!(f.sandbox.launched.load(std::sync::atomic::Ordering::SeqCst), before);
    }

    #[tokio::test]
    async fn dispatch_refuses_a_foreign_binding() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        let blue = PoolKey {
            function_uid: f.target.function_uid.clone(),
            version: f.target.version.clone(),
            generation: 1,
            tenant: Some(TenantId::parse("blue").expect("t")),
        };
        let green = PoolKey { tenant: Some(TenantId::parse("green").expect("t")), ..blue.clone() };
        let ep = f.manager.entrypoint(&f.target).expect("entrypoint");
        let env = f.manager.spawn_env(&blue, &f.target, ep).expect("spawn");
        let inv = |tenant: &str| Invocation {
            request_id: "r".into(),
            payload: Bytes::new(),
            deadline_ms: 0,
            invoked_arn: String::new(),
            tenant: Some(TenantId::parse(tenant).expect("t")),
            client_context: None,
            trace_id: String::new(),
        };
        assert!(env.dispatch(&green, inv("green")).is_err(), "another tenant's key");
        assert!(env.dispatch(&blue, inv("green")).is_err(), "the right key but another tenant's invocation");
        let other_version = PoolKey { version: "1".into(), ..blue.clone() };
        assert!(env.dispatch(&other_version, inv("blue")).is_err(), "another version");
        assert!(env.dispatch(&blue, inv("blue")).is_ok());
        f.manager.destroy(env);
    }

    #[tokio::test]
    async fn idle_environments_are_reaped_and_new_generations_replace_old() {
        let f = fixture(Duration::ZERO, Duration::from_millis(200));
        let first = f.manager.invoke(request(&f.target, "blue")).await.expect("invoke");
        assert!(first.cold_start);
        assert_eq!(f.manager.environments(None).len(), 1);
        let mut gen2 = f.target.clone();
        gen2.generation = 2;
        let second = f.manager.invoke(request(&gen2, "blue")).await.expect("invoke");
        assert!(second.cold_start, "a new code generation never reuses an old environment");
        assert_ne!(served_by(&first).0, served_by(&second).0);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(f.manager.environments(None).is_empty(), "idle environments were reaped");
    }

    #[tokio::test]
    async fn reserved_concurrency_throttles() {
        let f = fixture(Duration::from_millis(200), Duration::from_secs(60));
        let mut t = f.target.clone();
        t.reserved_concurrency = Some(0);
        match f.manager.invoke(request(&t, "blue")).await {
            Err(InvokeError::TooManyRequests { reason, .. }) => {
                assert_eq!(reason, "ReservedFunctionConcurrentInvocationLimitExceeded")
            }
            other => panic!("expected a throttle, got {other:?}"),
        }
        t.reserved_concurrency = Some(1);
        let m = f.manager.clone();
        let req = request(&t, "blue");
        let busy = tokio::spawn(async move { m.invoke(req).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(matches!(f.manager.invoke(request(&t, "green")).await, Err(InvokeError::TooManyRequests { .. })));
        assert!(busy.await.expect("join").is_ok());
    }

    #[tokio::test]
    async fn per_tenant_limit_keeps_one_tenant_from_taking_everything() {
        let f = fixture(Duration::from_millis(300), Duration::from_secs(60));
        let mut t = f.target.clone();
        t.tenant_concurrency = Some(2);
        let mut busy = Vec::new();
        for _ in 0..2 {
            let m = f.manager.clone();
            let req = request(&t, "noisy");
            busy.push(tokio::spawn(async move { m.invoke(req).await }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        match f.manager.invoke(request(&t, "noisy")).await {
            Err(InvokeError::TooManyRequests { reason, .. }) => {
                assert_eq!(reason, "TenantConcurrentInvocationLimitExceeded")
            }
            other => panic!("expected the noisy tenant to be throttled, got {other:?}"),
        }
        assert!(f.manager.invoke(request(&t, "quiet")).await.is_ok(), "another tenant is not affected");
        for b in busy {
            assert!(b.await.expect("join").is_ok());
        }
        assert!(f.manager.invoke(request(&t, "noisy")).await.is_ok(), "the limit frees up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tenant_ready_pool_serves_new_tenants_without_init_and_refills() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        let t = f.target.clone();
        f.manager.set_ready_pool("uid-1", "$LATEST", 2, Arc::new(move || Some(t.clone())));
        let ready = |m: &Manager| m.ready_pool_status("uid-1", "$LATEST").map(|s| s.available).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ready(&f.manager) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ready(&f.manager), 2);
        let launched = f.sandbox.launched.load(std::sync::atomic::Ordering::SeqCst);
        let a = f.manager.invoke(request(&f.target, "alpha")).await.expect("alpha");
        let b = f.manager.invoke(request(&f.target, "beta")).await.expect("beta");
        assert!(!a.cold_start && !b.cold_start, "both came from the pool");
        assert_eq!(served_by(&a).1.as_deref(), Some("alpha"));
        assert_ne!(served_by(&a).0, served_by(&b).0, "each tenant got its own pooled environment");
        // Bound for life: alpha's next call goes to alpha's environment, beta never gets it.
        let a2 = f.manager.invoke(request(&f.target, "alpha")).await.expect("alpha again");
        assert_eq!(served_by(&a2).0, served_by(&a).0);
        let views = f.manager.environments(None);
        let alpha_env = views.iter().find(|v| v.id == served_by(&a).0).expect("alpha env");
        assert_eq!(alpha_env.tenant.as_deref(), Some("alpha"));
        // The pool refills in the background.
        let deadline = Instant::now() + Duration::from_secs(5);
        while ready(&f.manager) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(ready(&f.manager), 2);
        assert!(f.sandbox.launched.load(std::sync::atomic::Ordering::SeqCst) >= launched + 2);
        // A new code generation empties the pool of the old code.
        let mut gen2 = f.target.clone();
        gen2.generation = 2;
        let g = gen2.clone();
        f.manager.set_ready_pool("uid-1", "$LATEST", 1, Arc::new(move || Some(g.clone())));
        let c = f.manager.invoke(request(&gen2, "gamma")).await.expect("gamma");
        let deadline = Instant::now() + Duration::from_secs(5);
        while ready(&f.manager) < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !f.manager
                .environments(None)
                .iter()
                .any(|v| v.id == served_by(&c).0 && v.tenant.as_deref() != Some("gamma"))
        );
        f.manager.set_ready_pool("uid-1", "$LATEST", 0, Arc::new(|| None));
        assert!(f.manager.ready_pool_status("uid-1", "$LATEST").is_none());
    }

    fn var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// GET `path` from an environment's Runtime API socket.
    async fn rapi_get(run_dir: &std::path::Path, path: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
        use http_body_util::BodyExt;
        let stream =
            tokio::net::UnixStream::connect(run_dir.join(quarters_sandbox::RAPI_SOCKET)).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path).header("host", "127.0.0.1:9001");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let req = req.body(http_body_util::Full::new(Bytes::new())).expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    #[tokio::test]
    async fn environments_get_execution_credentials_and_a_container_endpoint() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        let source = crate::fake::FakeCredentials::new(Duration::from_secs(3 * 3600));
        f.manager.set_credentials(Some(source.clone()));
        // The fake sandbox has no network namespace: no relay even with an API address.
        f.manager.set_api_relay(Some("0.0.0.0:9000".parse().expect("addr")));
        let r = f.manager.invoke(request(&f.target, "blue")).await.expect("invoke");
        let (id, _) = served_by(&r);
        let env = f.sandbox.env_of(&id);
        assert_eq!(var(&env, "AWS_ACCESS_KEY_ID"), Some("EXEC:f:arn:aws:iam::000000000000:role/r"));
        assert_eq!(var(&env, "AWS_SECRET_ACCESS_KEY"), Some("secret-of-EXEC:f:arn:aws:iam::000000000000:role/r"));
        assert_eq!(var(&env, "AWS_SESSION_TOKEN"), Some("token-of-EXEC:f:arn:aws:iam::000000000000:role/r"));
        assert_eq!(var(&env, "AWS_ENDPOINT_URL"), None, "no relay without a platform-made namespace");
        assert_eq!(
            var(&env, "AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            Some("http://127.0.0.1:9001/2018-06-01/quarters/credentials")
        );
        let token = var(&env, "AWS_CONTAINER_AUTHORIZATION_TOKEN").expect("token").to_owned();
        assert_eq!(token.len(), 64);
        let run_dir = f.manager.inner.cfg.run_dir.join(&id);
        let path = quarters_runtime_api::CREDENTIALS_PATH;
        // Without the token, or with another: 403, and the source is never asked.
        assert_eq!(rapi_get(&run_dir, path, None).await.0, 403);
        assert_eq!(rapi_get(&run_dir, path, Some("nope")).await.0, 403);
        assert_eq!(rapi_get(&run_dir, path, Some(&token[..63])).await.0, 403);
        assert_eq!(source.tenant_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let (status, body) = rapi_get(&run_dir, path, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["AccessKeyId"], "TENANT:f:blue");
        assert_eq!(body["SecretAccessKey"], "secret-of-TENANT:f:blue");
        assert_eq!(body["Token"], "token-of-TENANT:f:blue");
        let exp = body["Expiration"].as_str().expect("expiration");
        assert!(exp.len() == 20 && exp.ends_with('Z') && exp.as_bytes()[10] == b'T', "{exp}");
        // Cached: the second request does not ask the source again.
        let (status, again) = rapi_get(&run_dir, path, Some(&token)).await;
        assert_eq!((status, &again["AccessKeyId"]), (200, &body["AccessKeyId"]));
        assert_eq!(source.tenant_calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Another tenant's environment has its own token and its own tenant's credentials.
        let g = f.manager.invoke(request(&f.target, "green")).await.expect("invoke");
        let (gid, _) = served_by(&g);
        let genv = f.sandbox.env_of(&gid);
        let gtoken = var(&genv, "AWS_CONTAINER_AUTHORIZATION_TOKEN").expect("token");
        assert_ne!(gtoken, token);
        let gdir = f.manager.inner.cfg.run_dir.join(&gid);
        assert_eq!(rapi_get(&gdir, path, Some(&token)).await.0, 403, "blue's token is not green's");
        assert_eq!(rapi_get(&gdir, path, Some(gtoken)).await.1["AccessKeyId"], "TENANT:f:green");
        // A refused tenant gets 404.
        let x = f.manager.invoke(request(&f.target, "refused")).await.expect("invoke");
        let (xid, _) = served_by(&x);
        let xtoken = var(&f.sandbox.env_of(&xid), "AWS_CONTAINER_AUTHORIZATION_TOKEN").expect("token").to_owned();
        assert_eq!(rapi_get(&f.manager.inner.cfg.run_dir.join(&xid), path, Some(&xtoken)).await.0, 404);
    }

    #[tokio::test]
    async fn without_a_source_or_tenancy_there_are_no_credentials() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        let r = f.manager.invoke(request(&f.target, "blue")).await.expect("invoke");
        let (id, _) = served_by(&r);
        let env = f.sandbox.env_of(&id);
        for v in ["AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL"] {
            assert_eq!(var(&env, v), None, "{v}");
        }
        let dir = f.manager.inner.cfg.run_dir.join(&id);
        assert_eq!(rapi_get(&dir, quarters_runtime_api::CREDENTIALS_PATH, Some("x")).await.0, 404);
        // A function without tenant isolation gets execution credentials only.
        f.manager.set_credentials(Some(crate::fake::FakeCredentials::new(Duration::from_secs(3 * 3600))));
        let mut t = f.target.clone();
        let mut cfg = (*t.config).clone();
        cfg.tenancy = None;
        t.config = Arc::new(cfg);
        t.function_uid = "uid-2".into();
        let mut req = request(&t, "x");
        req.tenant = None;
        let r = f.manager.invoke(req).await.expect("invoke");
        let env = f.sandbox.env_of(&served_by(&r).0);
        assert!(var(&env, "AWS_ACCESS_KEY_ID").is_some());
        assert_eq!(var(&env, "AWS_CONTAINER_CREDENTIALS_FULL_URI"), None);
        assert_eq!(var(&env, "AWS_CONTAINER_AUTHORIZATION_TOKEN"), None);
    }

    #[tokio::test]
    async fn a_pooled_environment_has_no_tenant_credentials_until_bound() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        let source = crate::fake::FakeCredentials::new(Duration::from_secs(3 * 3600));
        f.manager.set_credentials(Some(source.clone()));
        let unbound = PoolKey {
            function_uid: f.target.function_uid.clone(),
            version: f.target.version.clone(),
            generation: 1,
            tenant: None,
        };
        let ep = f.manager.entrypoint(&f.target).expect("entrypoint");
        let mut env = f.manager.spawn_env_as(&unbound, &f.target, ep, true).expect("spawn");
        let id = env.info.id.to_string();
        let vars = f.sandbox.env_of(&id);
        let token = var(&vars, "AWS_CONTAINER_AUTHORIZATION_TOKEN").expect("set at creation").to_owned();
        assert!(var(&vars, "AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some());
        assert!(vars.iter().all(|(_, v)| !v.contains("blue")), "the variables name no tenant");
        let path = quarters_runtime_api::CREDENTIALS_PATH;
        assert_eq!(rapi_get(&env.run_dir, path, Some(&token)).await.0, 404, "no tenant yet");
        assert_eq!(rapi_get(&env.run_dir, path, None).await.0, 403);
        assert_eq!(source.tenant_calls.load(std::sync::atomic::Ordering::SeqCst), 0);
        let blue = PoolKey { tenant: Some(TenantId::parse("blue").expect("t")), ..unbound.clone() };
        env.bind(&blue).expect("bind");
        let (status, body) = rapi_get(&env.run_dir, path, Some(&token)).await;
        assert_eq!((status, body["AccessKeyId"].as_str()), (200, Some("TENANT:f:blue")));
        let green = PoolKey { tenant: Some(TenantId::parse("green").expect("t")), ..unbound };
        assert!(env.bind(&green).is_err(), "bound once");
        assert_eq!(rapi_get(&env.run_dir, path, Some(&token)).await.1["AccessKeyId"], "TENANT:f:blue");
        f.manager.destroy(env);
    }

    #[tokio::test]
    async fn an_environment_never_outlives_its_execution_credentials() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        // Long-lived credentials: the environment is reused.
        f.manager.set_credentials(Some(crate::fake::FakeCredentials::new(Duration::from_secs(3 * 3600))));
        let a = f.manager.invoke(request(&f.target, "blue")).await.expect("a");
        let b = f.manager.invoke(request(&f.target, "blue")).await.expect("b");
        assert_eq!(served_by(&a).0, served_by(&b).0);
        // Credentials that end 5 minutes + the timeout (5 s) + 300 ms from now: the environment
        // is retired after 300 ms although the server's maximum lifetime is unlimited.
        let margin = EXPIRY_MARGIN + Duration::from_secs(5);
        f.manager.set_credentials(Some(crate::fake::FakeCredentials::new(margin + Duration::from_millis(300))));
        let c = f.manager.invoke(request(&f.target, "green")).await.expect("c");
        let d = f.manager.invoke(request(&f.target, "green")).await.expect("d");
        assert_eq!(served_by(&c).0, served_by(&d).0, "still valid long enough");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let e = f.manager.invoke(request(&f.target, "green")).await.expect("e");
        assert!(e.cold_start);
        assert_ne!(served_by(&e).0, served_by(&c).0, "retired before its credentials could expire");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!f.manager.environments(None).iter().any(|v| v.id == served_by(&c).0), "the reaper removed it");
        // Credentials already too close to their end: used for one invocation, then retired.
        f.manager.set_credentials(Some(crate::fake::FakeCredentials::new(Duration::from_secs(60))));
        let g = f.manager.invoke(request(&f.target, "orange")).await.expect("g");
        let h = f.manager.invoke(request(&f.target, "orange")).await.expect("h");
        assert_ne!(served_by(&g).0, served_by(&h).0);
    }

    #[tokio::test]
    async fn offboarding_destroys_only_that_tenant() {
        let f = fixture(Duration::ZERO, Duration::from_secs(60));
        for t in ["blue", "blue", "green"] {
            f.manager.invoke(request(&f.target, t)).await.expect("invoke");
        }
        let n = f.manager.offboard_tenant(&TenantId::parse("blue").expect("t"), None);
        assert_eq!(n, 1);
        let left = f.manager.environments(None);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].tenant.as_deref(), Some("green"));
    }
}

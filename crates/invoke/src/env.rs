//! One execution environment: a sandbox, its Runtime API, its log capture, and its binding.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use quarters_runtime_api::{Invocation, Outcome, RuntimeApi, RuntimeEvent};
use quarters_sandbox::{Exit, SandboxControl};
use quarters_types::EnvId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::credentials::TenantCredentials;
use crate::logs::LogCapture;
use crate::manager::PoolKey;
use crate::relay::Relay;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvState {
    Initializing,
    Busy,
    Idle,
    Dead,
}

impl EnvState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Initializing,
            1 => Self::Busy,
            2 => Self::Idle,
            _ => Self::Dead,
        }
    }
}

/// What the manager shows of an environment (shared with the registry of live environments).
pub(crate) struct EnvInfo {
    pub id: EnvId,
    pub key: PoolKey,
    /// Started ahead of demand for a tenant-ready pool, and not bound to a tenant yet.
    pub pooled: bool,
    /// Its MemorySize, held against the server's memory budget while it lives.
    pub memory_mb: u32,
    pub function_name: Arc<str>,
    pub log_stream: Arc<str>,
    pub created_ms: u64,
    state: AtomicU8,
    pub invocations: AtomicU64,
    pub last_used_ms: AtomicU64,
}

impl EnvInfo {
    pub fn new(id: EnvId, key: PoolKey, function_name: Arc<str>, log_stream: Arc<str>, now: u64) -> Self {
        Self {
            id,
            key,
            pooled: false,
            memory_mb: 0,
            function_name,
            log_stream,
            created_ms: now,
            state: AtomicU8::new(0),
            invocations: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(now),
        }
    }

    /// The same environment, bound to `key`.
    fn rebound(&self, key: PoolKey) -> Self {
        Self {
            id: self.id,
            key,
            pooled: false,
            memory_mb: self.memory_mb,
            function_name: self.function_name.clone(),
            log_stream: self.log_stream.clone(),
            created_ms: self.created_ms,
            state: AtomicU8::new(self.state.load(Ordering::Relaxed)),
            invocations: AtomicU64::new(self.invocations.load(Ordering::Relaxed)),
            last_used_ms: AtomicU64::new(self.last_used_ms.load(Ordering::Relaxed)),
        }
    }

    pub fn set_state(&self, s: EnvState) {
        self.state.store(s as u8, Ordering::Relaxed);
    }

    pub fn view(&self) -> EnvView {
        EnvView {
            id: self.id.to_string(),
            function: self.function_name.to_string(),
            version: self.key.version.to_string(),
            tenant: self.key.tenant.as_ref().map(|t| t.as_str().to_owned()),
            state: EnvState::from_u8(self.state.load(Ordering::Relaxed)),
            log_stream: self.log_stream.to_string(),
            created_ms: self.created_ms,
            last_used_ms: self.last_used_ms.load(Ordering::Relaxed),
            invocations: self.invocations.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of one live environment, for `quarters envs` and the API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvView {
    pub id: String,
    pub function: String,
    pub version: String,
    pub tenant: Option<String>,
    pub state: EnvState,
    pub log_stream: String,
    pub created_ms: u64,
    pub last_used_ms: u64,
    pub invocations: u64,
}

/// A live environment. Owned by its pool while idle and by one invocation while busy, so it
/// serves one invocation at a time by construction.
pub(crate) struct Env {
    pub info: Arc<EnvInfo>,
    pub rapi: RuntimeApi,
    pub events: mpsc::UnboundedReceiver<RuntimeEvent>,
    pub exit: watch::Receiver<Option<Exit>>,
    pub control: SandboxControl,
    pub logs: Arc<LogCapture>,
    pub initialized: bool,
    pub launched_at: Instant,
    pub last_used: Instant,
    pub run_dir: PathBuf,
    /// Retired (between invocations) at this time: its maximum lifetime, or earlier if its
    /// execution credentials would expire first.
    pub retire_at: Option<Instant>,
    /// The relay from its `127.0.0.1:9002` to the platform's API.
    pub relay: Option<Relay>,
    /// Its container-credentials endpoint, which learns the tenant when the environment is bound.
    pub tenant_credentials: Option<Arc<TenantCredentials>>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DispatchError {
    #[error("tenant invariant violated: environment {env} is bound to {bound:?} and was asked to serve {asked:?}")]
    WrongBinding { env: EnvId, bound: Box<PoolKey>, asked: Box<PoolKey> },
    #[error("environment {0} already has an invocation pending")]
    Busy(EnvId),
}

impl Env {
    /// Hand an invocation to this environment's runtime. This is the one place that enforces
    /// the tenant invariant: the invocation's key (and its tenant) must be the key the
    /// environment was bound to when it was created.
    pub fn dispatch(&self, key: &PoolKey, inv: Invocation) -> Result<oneshot::Receiver<Outcome>, DispatchError> {
        if self.info.key != *key || inv.tenant != self.info.key.tenant {
            tracing::error!(env = %self.info.id, bound = ?self.info.key, asked = ?key, "tenant invariant violation refused");
            return Err(DispatchError::WrongBinding {
                env: self.info.id,
                bound: Box::new(self.info.key.clone()),
                asked: Box::new(key.clone()),
            });
        }
        self.rapi.dispatch(inv).map_err(|_| DispatchError::Busy(self.info.id))
    }

    /// Bind a pooled environment, which has run its init but never served an invocation, to
    /// `key` (and so to its tenant) for the rest of its life. Besides creation, this is the only
    /// place an environment's binding is set, and it can happen once.
    pub fn bind(&mut self, key: &PoolKey) -> Result<(), DispatchError> {
        let i = &self.info;
        let fresh = i.pooled && i.key.tenant.is_none() && i.invocations.load(Ordering::SeqCst) == 0;
        let same_code = i.key.function_uid == key.function_uid
            && i.key.version == key.version
            && i.key.generation == key.generation;
        if !fresh || !same_code {
            return Err(DispatchError::WrongBinding {
                env: i.id,
                bound: Box::new(i.key.clone()),
                asked: Box::new(key.clone()),
            });
        }
        if let (Some(t), Some(c)) = (&key.tenant, &self.tenant_credentials)
            && !c.bind(t)
        {
            return Err(DispatchError::WrongBinding {
                env: i.id,
                bound: Box::new(i.key.clone()),
                asked: Box::new(key.clone()),
            });
        }
        if let Some(t) = &key.tenant {
            self.logs.bind_tenant(t.clone());
        }
        self.info = Arc::new(self.info.rebound(key.clone()));
        Ok(())
    }

    pub fn is_dead(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// Past its maximum lifetime (or its credentials' end): it takes no more invocations.
    pub fn expired(&self) -> bool {
        self.retire_at.is_some_and(|t| Instant::now() >= t)
    }
}

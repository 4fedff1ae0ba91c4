//! Tenant-ready pools (beyond Lambda, which offers no pre-warming for tenant-isolated
//! functions).
//!
//! The init phase never sees a tenant: the tenant id exists only during an invocation. So an
//! environment can be started and run its whole init before any tenant is chosen, wait on its
//! first `/next`, and be bound to a tenant at that tenant's first call ([`Env::bind`]). A pooled
//! environment has never served anyone; once bound it never serves anyone else.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::{Env, Manager, PoolKey, State, Target, lock, wait_init};
use crate::env::EnvState;

/// Finds what a pool should run now (the configuration and code may have changed since the
/// pool was configured). `None` means the function or qualifier is gone.
pub type TargetResolver = Arc<dyn Fn() -> Option<Target> + Send + Sync>;

pub(crate) struct ReadyPool {
    size: u32,
    resolver: TargetResolver,
    /// Initialised, unbound environments.
    pub envs: Vec<Env>,
    starting: u32,
    /// The target the pool's environments were started for.
    current: Option<Target>,
}

/// What `GetProvisionedConcurrencyConfig` reports.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub requested: u32,
    pub available: u32,
}

/// An unbound environment from the fullest tenant-ready pool, to free its memory when bound
/// environments need it (the pool refills when there is room again).
pub(super) fn take_any_ready(st: &mut State) -> Option<Env> {
    st.ready.values_mut().filter(|p| !p.envs.is_empty()).max_by_key(|p| p.envs.len())?.envs.pop()
}

fn same_code(a: &Target, key: &PoolKey) -> bool {
    a.function_uid == key.function_uid && a.version == key.version && a.generation == key.generation
}

impl Manager {
    /// Keep `size` initialised, unbound environments of what `resolver` names (0 removes the
    /// pool). `qualifier` names the pool (a version, an alias or `$LATEST`).
    pub fn set_ready_pool(&self, function_uid: &str, qualifier: &str, size: u32, resolver: TargetResolver) {
        let mut doomed = Vec::new();
        {
            let mut st = lock(&self.inner.state);
            let k = (Arc::from(function_uid), Arc::from(qualifier));
            if size == 0 {
                if let Some(p) = st.ready.remove(&k) {
                    doomed.extend(p.envs);
                }
            } else {
                let p = st.ready.entry(k).or_insert_with(|| ReadyPool {
                    size,
                    resolver: resolver.clone(),
                    envs: Vec::new(),
                    starting: 0,
                    current: None,
                });
                p.size = size;
                p.resolver = resolver;
                while p.envs.len() > size as usize {
                    if let Some(e) = p.envs.pop() {
                        doomed.push(e);
                    }
                }
            }
        }
        for env in doomed {
            self.destroy(env);
        }
    }

    pub fn ready_pool_status(&self, function_uid: &str, qualifier: &str) -> Option<PoolStatus> {
        let st = lock(&self.inner.state);
        st.ready
            .get(&(Arc::from(function_uid), Arc::from(qualifier)))
            .map(|p| PoolStatus { requested: p.size, available: p.envs.len() as u32 })
    }

    /// Take an initialised environment of exactly this code from any pool.
    pub(super) fn take_ready(&self, st: &mut State, key: &PoolKey) -> Option<Env> {
        for pool in st.ready.values_mut() {
            if let Some(i) = pool.envs.iter().position(|e| {
                e.info.key.function_uid == key.function_uid
                    && e.info.key.version == key.version
                    && e.info.key.generation == key.generation
                    && !e.is_dead()
                    && !e.expired()
            }) {
                return Some(pool.envs.swap_remove(i));
            }
        }
        None
    }

    /// Top up every pool; drop environments of code that changed. Runs every 50 ms.
    pub(super) fn refill(&self) {
        let mut doomed = Vec::new();
        let mut to_start: Vec<(Arc<str>, Arc<str>, Target)> = Vec::new();
        {
            let mut guard = lock(&self.inner.state);
            let st = &mut *guard;
            if st.shutting_down {
                return;
            }
            let budget = self.inner.cfg.account_concurrency as usize;
            let memory_budget = self.inner.cfg.memory_budget_mb.unwrap_or(u64::MAX);
            let mut live = st.all.len();
            let keys: Vec<_> = st.ready.keys().cloned().collect();
            for k in keys {
                let Some(pool) = st.ready.get_mut(&k) else { continue };
                let Some(target) = (pool.resolver)() else {
                    if let Some(p) = st.ready.remove(&k) {
                        doomed.extend(p.envs);
                    }
                    continue;
                };
                let mut i = 0;
                while i < pool.envs.len() {
                    let e = &pool.envs[i];
                    if e.is_dead() || e.expired() || !same_code(&target, &e.info.key) {
                        doomed.push(pool.envs.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                pool.current = Some(target.clone());
                let have = pool.envs.len() as u32 + pool.starting;
                let mb = u64::from(target.config.memory_mb);
                for _ in have..pool.size {
                    // Pools fill only into free budget: they never evict anyone's warm environment.
                    if live >= budget || st.memory_mb + mb > memory_budget {
                        break;
                    }
                    live += 1;
                    st.memory_mb += mb;
                    pool.starting += 1;
                    to_start.push((k.0.clone(), k.1.clone(), target.clone()));
                }
            }
        }
        for env in doomed {
            self.destroy(env);
        }
        for (uid, qualifier, target) in to_start {
            let m = self.clone();
            tokio::spawn(async move { m.start_pooled(uid, qualifier, target).await });
        }
    }

    async fn start_pooled(&self, uid: Arc<str>, qualifier: Arc<str>, target: Target) {
        let key = PoolKey {
            function_uid: target.function_uid.clone(),
            version: target.version.clone(),
            generation: target.generation,
            tenant: None,
        };
        let mb = target.config.memory_mb;
        let started = if let Ok(ep) = self.entrypoint(&target) {
            lock(&self.inner.state).per_function.entry(key.function_uid.clone()).or_default().envs += 1;
            match self.spawn_env_as(&key, &target, ep, true) {
                Ok(mut env) => {
                    let deadline = Instant::now() + self.inner.cfg.init_timeout;
                    match wait_init(&mut env, deadline).await {
                        Ok(()) => {
                            env.initialized = true;
                            env.info.set_state(EnvState::Idle);
                            Some(env)
                        }
                        Err(_) => {
                            tracing::warn!(env = %env.info.id, "a pooled environment failed its init");
                            self.destroy(env);
                            None
                        }
                    }
                }
                Err(e) => {
                    let mut st = lock(&self.inner.state);
                    if let Some(c) = st.per_function.get_mut(&key.function_uid) {
                        c.envs = c.envs.saturating_sub(1);
                    }
                    st.release_memory(mb);
                    tracing::warn!(error = %e, "could not start a pooled environment");
                    None
                }
            }
        } else {
            // The memory reserved for it when it was planned (refill) goes back.
            lock(&self.inner.state).release_memory(mb);
            None
        };
        let mut leftover = None;
        {
            let mut st = lock(&self.inner.state);
            let shutting_down = st.shutting_down;
            match st.ready.get_mut(&(uid, qualifier)) {
                Some(pool) => {
                    pool.starting = pool.starting.saturating_sub(1);
                    if let Some(env) = started {
                        let fits = pool.current.as_ref().is_some_and(|t| same_code(t, &env.info.key))
                            && pool.envs.len() < pool.size as usize
                            && !shutting_down;
                        if fits {
                            pool.envs.push(env);
                        } else {
                            leftover = Some(env);
                        }
                    }
                }
                None => leftover = started,
            }
        }
        if let Some(env) = leftover {
            self.destroy(env);
        }
    }
}

//! The invoke path and the environment manager.
//!
//! Environments live in pools keyed by [`PoolKey`]: (function, version, generation, tenant).
//! An invocation takes an idle environment of exactly its key, or starts a new one bound to that
//! key for life; concurrent invocations of one key therefore scale out to more environments, and
//! an environment never serves another tenant, function, version or code generation. That rule
//! is checked in one place, [`env::Env::dispatch`], on every invocation.

mod credentials;
mod env;
mod logs;
mod manager;
mod relay;
pub mod runtimes;

pub use credentials::{AwsCredentials, CredentialSource, EXPIRY_MARGIN};
pub use env::{EnvState, EnvView};
pub use manager::{
    InvokeError, InvokeRequest, InvokeResponse, Manager, ManagerConfig, PoolKey, PoolStatus, RUNTIMES_DIR, Target,
    TargetResolver,
};
pub use relay::{MAX_RELAY_CONNECTIONS, relay_target};

#[cfg(test)]
mod fake;

//! AWS credentials inside execution environments.
//!
//! As Lambda does, an environment gets its function's execution-role credentials in its
//! environment variables when it is created. Beyond Lambda, an environment of a PER_TENANT
//! function can fetch credentials of the function's tenant role for the one tenant it is bound
//! to, from the container-credentials endpoint its own Runtime API serves. Where credentials come
//! from is the [`CredentialSource`] the manager is given.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use quarters_runtime_api::AwsCredentials;
use quarters_runtime_api::CredentialsEndpoint;
use quarters_types::TenantId;
use quarters_types::time::now_ms;

use crate::logs::lock;

/// Where the platform's credentials for environments come from (its STS/identity layer).
pub trait CredentialSource: Send + Sync + 'static {
    /// The execution role's credentials for a new environment of this function (None: the
    /// environment gets none). Their lifetime should be longer than the server's
    /// `--max-lifetime`: an environment never outlives its execution credentials (it is
    /// retired early if they expire first).
    fn execution(&self, function: &str, role_arn: &str) -> Option<AwsCredentials>;
    /// Credentials of the function's tenant role for tenant `tenant` (None: no tenant role, or
    /// refused).
    fn tenant(&self, function: &str, tenant: &str) -> Option<AwsCredentials>;
}

/// How long before their expiry credentials are no longer handed out from a cache, and the
/// least time an environment's execution credentials must still be valid, beyond the function's
/// timeout, when an invocation starts.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(5 * 60);

/// One environment's container-credentials endpoint: the tenant it is bound to (set once: at
/// creation, or when a pooled environment is bound) and a cache of that tenant's credentials.
pub(crate) struct TenantCredentials {
    source: Arc<dyn CredentialSource>,
    function: String,
    tenant: OnceLock<TenantId>,
    cache: Mutex<Option<AwsCredentials>>,
}

impl TenantCredentials {
    pub fn new(source: Arc<dyn CredentialSource>, function: String, tenant: Option<TenantId>) -> Self {
        let bound = OnceLock::new();
        if let Some(t) = tenant {
            let _ = bound.set(t);
        }
        Self { source, function, tenant: bound, cache: Mutex::new(None) }
    }

    /// Bind to `tenant`; false if already bound to another one (never changes once set).
    pub fn bind(&self, tenant: &TenantId) -> bool {
        self.tenant.get_or_init(|| tenant.clone()) == tenant
    }
}

impl CredentialsEndpoint for TenantCredentials {
    fn credentials(&self) -> Option<AwsCredentials> {
        // An unbound (pooled) environment has no tenant, so nothing to give.
        let tenant = self.tenant.get()?;
        // Held across the fetch, so concurrent requests make one.
        let mut cache = lock(&self.cache);
        let margin = EXPIRY_MARGIN.as_millis() as u64;
        if let Some(c) = cache.as_ref()
            && c.expiration_ms > now_ms().saturating_add(margin)
        {
            return Some(c.clone());
        }
        let fresh = self.source.tenant(&self.function, tenant.as_str());
        cache.clone_from(&fresh);
        fresh
    }
}

/// A random token for an environment's container-credentials endpoint.
pub(crate) fn new_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

//! IAM roles, STS and temporary credentials for Quarters.
//!
//! - **State**: roles (name, path, id, trust policy, maximum session duration, description, tags) and their
//!   inline policies, in SQLite. Role and policy names are case-insensitive, as in IAM.
//! - **IAM API** (awsQuery, `Version=2010-05-08`): `CreateRole`, `GetRole`, `DeleteRole`, `ListRoles`,
//!   `PutRolePolicy`, `GetRolePolicy`, `DeleteRolePolicy`, `ListRolePolicies`.
//! - **STS API** (awsQuery, `Version=2011-06-15`): `AssumeRole` (session tags, transitive tags, session
//!   policy, external id, source identity), `GetCallerIdentity`.
//! - **Stateless credentials**: a session token is self-contained and MAC'd with the master key; the secret
//!   of a temporary key is derived from the key id. Checking a request ([`Identity::secret_for`],
//!   [`Identity::principal`]) reads no state:
//!   - access key id: `ASIA` + 12 random + 4 check characters of `A-Z2-7` (20 in all); the check characters
//!     come from `HMAC-SHA256(master, "akid:" + the first 16)`, so ids this server did not mint are refused;
//!   - secret: `base64(HMAC-SHA256(master, "secret:" + access_key_id))[..40]`;
//!   - session token: `base64url(blob ‖ HMAC-SHA256(master, blob))`, unpadded, where `blob` is the version
//!     byte `0x01` and then JSON `{"k": key id, "r": role ARN, "i": role id, "n": session name,
//!     "t": [[key, value], ...], "x": [transitive keys], "p": session policy, "e": expiry, "a": issued at,
//!     "s": source identity}` (times in epoch seconds; empty members left out). The MAC is compared in
//!     constant time before the JSON is read.
//! - **Authorisation** ([`Identity::authorize`]): a session may do what its role's inline policies allow,
//!   narrowed by its session policy, with its tags as `aws:PrincipalTag/...`. Role policies are cached parsed
//!   and dropped from the cache when they change.
//!
//! ```no_run
//! use quarters_identity::{Identity, Principal};
//! # fn main() -> Result<(), quarters_identity::IdentityError> {
//! let mut id = Identity::open("/var/lib/quarters/identity.db", [0u8; 32], "000000000000")?;
//! id.set_admin("AKIAADMIN", "admin-secret");
//! let admin = id.principal("AKIAADMIN", None, 1_800_000_000)?;
//! let form = vec![("Action".to_owned(), "GetCallerIdentity".to_owned())];
//! let (status, xml) = id.handle("sts", &admin, &form, "req-1", 1_800_000_000);
//! # let _ = (status, xml, Principal::Admin { access_key: String::new() });
//! # Ok(()) }
//! ```

mod error;
mod iam;
mod query;
mod store;
mod sts;
mod token;
mod validate;
mod xml;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use quarters_iam::{Context, PolicyDocument, PolicyKind, Request, evaluate_session};
use rusqlite::Connection;

pub use error::IdentityError;
pub use quarters_iam::{self, Decision};
pub use query::parse_form;

/// XML namespaces of the two services.
const IAM_NS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const IAM_VERSION: &str = "2010-05-08";
const STS_VERSION: &str = "2011-06-15";

/// Session lengths, seconds.
pub const MIN_SESSION_SECONDS: u64 = 900;
/// The longest session any role allows.
pub const MAX_SESSION_SECONDS: u64 = 43_200;
/// A role's `MaxSessionDuration` when none is given, and `AssumeRole`'s default `DurationSeconds`.
pub const DEFAULT_SESSION_SECONDS: u64 = 3_600;
/// The longest session a role session can get by assuming another role (role chaining).
pub const CHAINED_SESSION_SECONDS: u64 = 3_600;
/// The budget, in bytes, for a session's policy and tags together; `PackedPolicySize` is the percentage used.
pub const PACKED_LIMIT_BYTES: usize = 8_192;
/// A role's inline policies together may hold this many non-whitespace characters.
pub const ROLE_POLICY_SIZE_LIMIT: usize = 10_240;
/// Decoded sessions kept, keyed by their token's MAC.
const SESSION_CACHE: usize = 4_096;

/// Who is making a request.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The platform administrator's long-term key: may do anything.
    Admin {
        /// The access key id the request was signed with.
        access_key: String,
    },
    /// A role session, from a session token.
    Session(Arc<Session>),
}

impl Principal {
    /// The principal Quarters acts as itself.
    fn system() -> Self {
        Principal::Admin { access_key: String::new() }
    }
}

/// A role session, as read from a verified session token.
#[derive(Clone)]
pub struct Session {
    /// The temporary access key id (`ASIA...`) the token is bound to.
    pub access_key_id: String,
    /// `arn:aws:iam::<account>:role/<path><name>`.
    pub role_arn: String,
    /// The role's name.
    pub role_name: String,
    /// The role's unique id (`AROA...`). A role deleted and created again gets a new one, and the old sessions
    /// lose every permission.
    pub role_id: String,
    /// `RoleSessionName`.
    pub session_name: String,
    /// Session tags, including those inherited as transitive from a calling session.
    pub tags: Vec<(String, String)>,
    /// Keys of the tags that pass on to sessions this one creates.
    pub transitive: Vec<String>,
    /// The session policy: the session may do only what this and the role both allow.
    pub session_policy: Option<PolicyDocument>,
    /// `SourceIdentity`, kept across role chaining.
    pub source_identity: Option<String>,
    /// Issue time, epoch seconds.
    pub issued: u64,
    /// Expiry, epoch seconds.
    pub expires: u64,
}

impl Session {
    /// The account the role belongs to.
    pub fn account(&self) -> &str {
        self.role_arn.split(':').nth(4).unwrap_or_default()
    }

    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
    pub fn arn(&self) -> String {
        format!("arn:aws:sts::{}:assumed-role/{}/{}", self.account(), self.role_name, self.session_name)
    }

    /// `AROA...:<session>`, the `aws:userid` and `AssumedRoleId`.
    pub fn user_id(&self) -> String {
        format!("{}:{}", self.role_id, self.session_name)
    }

    /// The value of tag `key` (case-insensitive).
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| validate::same_key(k, key)).map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("access_key_id", &self.access_key_id)
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("tags", &self.tags)
            .field("transitive", &self.transitive)
            .field("session_policy", &self.session_policy.is_some())
            .field("source_identity", &self.source_identity)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Temporary credentials, as `AssumeRole` returns them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `ASIA...`.
    pub access_key_id: String,
    /// 40 characters.
    pub secret_access_key: String,
    /// The session token (base64url).
    pub session_token: String,
    /// Expiry, epoch seconds.
    pub expiration: u64,
    /// `AROA...:<session>`.
    pub assumed_role_id: String,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`.
    pub arn: String,
    /// How much of [`PACKED_LIMIT_BYTES`] the session policy and tags use, in percent.
    pub packed_policy_size: u64,
    /// `SourceIdentity`, if any.
    pub source_identity: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("arn", &self.arn)
            .finish_non_exhaustive()
    }
}

/// A role as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The name, case preserved.
    pub name: String,
    /// `/` or `/a/b/`.
    pub path: String,
    /// `AROA...`.
    pub role_id: String,
    /// `arn:aws:iam::<account>:role<path><name>`.
    pub arn: String,
    /// The trust policy as written.
    pub trust_policy: String,
    /// Creation time, epoch seconds.
    pub created: u64,
    /// `MaxSessionDuration`, seconds.
    pub max_session_duration: u64,
    /// `Description`.
    pub description: Option<String>,
    /// IAM tags of the role. Sessions see them as `aws:PrincipalTag/...` unless a session tag of the same key
    /// overrides them.
    pub tags: Vec<(String, String)>,
}

/// The input of [`Identity::create_role`].
#[derive(Debug, Clone, Default)]
pub struct NewRole<'a> {
    /// `RoleName`.
    pub name: &'a str,
    /// `Path` (default `/`).
    pub path: Option<&'a str>,
    /// `AssumeRolePolicyDocument`.
    pub trust_policy: &'a str,
    /// `Description`.
    pub description: Option<&'a str>,
    /// `MaxSessionDuration` (3600..=43200, default 3600).
    pub max_session_duration: Option<u64>,
    /// `Tags`.
    pub tags: Vec<(String, String)>,
}

/// A role with its trust policy and inline policies parsed.
#[derive(Debug)]
pub(crate) struct RoleEntry {
    pub role: Role,
    /// `None` if the stored trust policy no longer parses (then it trusts no one).
    pub trust: Option<PolicyDocument>,
    pub policies: Vec<PolicyDocument>,
}

#[derive(Debug, Default)]
struct Cache {
    /// ASCII-lower-cased role name → role.
    by_name: HashMap<String, Arc<RoleEntry>>,
    /// Role id → role, or `None` once known not to exist (role ids are never reused).
    by_id: HashMap<String, Option<Arc<RoleEntry>>>,
}

/// IAM roles, STS and credentials. Share it behind an `Arc`; every method takes `&self` but
/// [`Identity::set_admin`].
pub struct Identity {
    account: String,
    master: [u8; 32],
    admins: HashMap<String, String>,
    /// Lock order: `db`, then `cache`. Cache fills and invalidations both happen under `db`, so a fill can
    /// never put back what a concurrent change just invalidated.
    db: Mutex<Connection>,
    cache: RwLock<Cache>,
    /// Token MAC → decoded session, so a busy session's token is parsed once.
    sessions: Mutex<HashMap<[u8; 32], Arc<Session>>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("account", &self.account)
            .field("admins", &self.admins.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Opens (creating if needed) the store at `path`. `master_key` signs session tokens and derives
    /// temporary secrets: keep it secret, and keep it stable, or every outstanding credential stops working.
    /// `account` is the 12-digit account id Quarters presents.
    pub fn open(path: impl AsRef<Path>, master_key: [u8; 32], account: &str) -> Result<Self, IdentityError> {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityError::Validation(format!("The account id {account:?} is not 12 digits")));
        }
        let conn = store::open(path.as_ref())?;
        Ok(Self {
            account: account.to_owned(),
            master: master_key,
            admins: HashMap::new(),
            db: Mutex::new(conn),
            cache: RwLock::new(Cache::default()),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Adds (or replaces) an administrator key: a long-term key that may do anything.
    pub fn set_admin(&mut self, access_key: &str, secret: &str) {
        self.admins.insert(access_key.to_owned(), secret.to_owned());
    }

    /// The account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The secret for an access key: an administrator's, or the derived secret of a temporary key this server
    /// minted (checked by the key id's check characters, without reading any state). `None` for any other key.
    /// This says nothing about whether the session is still valid: see [`Identity::principal`].
    pub fn secret_for(&self, access_key: &str) -> Option<String> {
        if let Some(secret) = self.admins.get(access_key) {
            return Some(secret.clone());
        }
        token::is_minted_key(&self.master, access_key).then(|| token::derive_secret(&self.master, access_key))
    }

    /// Who is calling, once the request's signature checked out with [`Identity::secret_for`]'s secret: the
    /// administrator (no session token allowed), or a role session from its token. A token must carry this
    /// server's MAC, be bound to `access_key`, and be unexpired at `now` (epoch seconds): otherwise
    /// `InvalidClientTokenId`, or `ExpiredToken` for a genuine but expired one.
    pub fn principal(
        &self,
        access_key: &str,
        session_token: Option<&str>,
        now: u64,
    ) -> Result<Principal, IdentityError> {
        let session_token = session_token.filter(|t| !t.is_empty());
        if self.admins.contains_key(access_key) {
            return match session_token {
                None => Ok(Principal::Admin { access_key: access_key.to_owned() }),
                Some(_) => Err(IdentityError::InvalidClientTokenId),
            };
        }
        if !token::is_minted_key(&self.master, access_key) {
            return Err(IdentityError::InvalidClientTokenId);
        }
        let session_token = session_token.ok_or(IdentityError::InvalidClientTokenId)?;
        let (mac, blob) =
            token::verify(&self.master, session_token).map_err(|_| IdentityError::InvalidClientTokenId)?;
        let cached = self.sessions.lock().unwrap_or_else(PoisonError::into_inner).get(&mac).cloned();
        let session = match cached {
            Some(s) => s,
            None => {
                let s = Arc::new(session_from_body(
                    token::decode(&blob).map_err(|_| IdentityError::InvalidClientTokenId)?,
                )?);
                let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
                if sessions.len() >= SESSION_CACHE {
                    sessions.retain(|_, s| s.expires > now);
                    if sessions.len() >= SESSION_CACHE {
                        sessions.clear();
                    }
                }
                sessions.insert(mac, Arc::clone(&s));
                s
            }
        };
        if session.access_key_id != access_key {
            return Err(IdentityError::InvalidClientTokenId);
        }
        if now >= session.expires {
            return Err(IdentityError::ExpiredToken);
        }
        Ok(Principal::Session(session))
    }

    /// Authorises `action` on `resource` for a principal. The administrator may do anything. A session may do
    /// what its role's inline policies allow and its session policy (if any) also allows; an explicit `Deny`
    /// in either wins. The context holds `aws:PrincipalTag/<k>` for the role's tags overridden by the session's,
    /// `aws:PrincipalArn` (the role ARN), `aws:PrincipalAccount`, `aws:PrincipalType` (`AssumedRole`),
    /// `aws:userid` (`AROA...:session`), `aws:SourceIdentity`, `aws:TokenIssueTime`, `aws:CurrentTime`,
    /// `aws:EpochTime`, and then `extra` (e.g. `s3:prefix`; repeat a key for several values). Entries of
    /// `extra` cannot set or add to identity keys (`aws:Principal*`, `aws:userid`, `aws:username`,
    /// `aws:SourceIdentity`, `aws:TokenIssueTime`): those are skipped.
    pub fn authorize(&self, p: &Principal, action: &str, resource: &str, extra: &[(&str, &str)]) -> Decision {
        let Principal::Session(session) = p else { return Decision::Allow };
        let entry = match self.role_by_id(&session.role_id) {
            Ok(Some(entry)) => entry,
            Ok(None) => return Decision::ImplicitDeny,
            Err(e) => {
                tracing::error!(error = %e, role = %session.role_arn, "identity store failed during authorisation");
                return Decision::ImplicitDeny;
            }
        };
        let ctx = self.session_context(session, &entry, extra, quarters_types::time::now_ms() / 1000);
        let role: Vec<&PolicyDocument> = entry.policies.iter().collect();
        evaluate_session(&role, session.session_policy.as_ref(), &Request { action, resource, context: &ctx })
    }

    /// Mints credentials for a role without a trust-policy check, for Quarters' own use (an environment's
    /// execution role, a tenant role tagged `TenantId=T`). Every tag is made transitive, so a session that
    /// assumes another role keeps them and cannot replace them. `duration_s` must be 900..=43200; the role's
    /// `MaxSessionDuration` does not apply.
    pub fn mint(
        &self,
        role_arn: &str,
        session_name: &str,
        tags: &[(String, String)],
        duration_s: u64,
        now: u64,
    ) -> Result<Credentials, IdentityError> {
        let mut checks = error::Checks::new();
        sts::check_session_name(&mut checks, Some(session_name));
        checks.integer("durationSeconds", Some(&duration_s.to_string()), MIN_SESSION_SECONDS, MAX_SESSION_SECONDS);
        validate::check_tags(&mut checks, tags)?;
        checks.finish()?;
        let entry = self
            .role_by_arn(role_arn)?
            .ok_or_else(|| IdentityError::NoSuchEntity(format!("The role {role_arn} cannot be found.")))?;
        let transitive = tags.iter().map(|(k, _)| k.clone()).collect();
        sts::issue(
            self,
            sts::Issue {
                entry: &entry,
                session_name,
                tags: tags.to_vec(),
                transitive,
                policy: None,
                source_identity: None,
                duration: duration_s,
                now,
            },
        )
    }

    /// Handles one awsQuery request for `service` (`"iam"` or `"sts"`) from an authenticated `caller`, with
    /// the request's decoded form parameters (see [`parse_form`]). Returns the HTTP status and the XML body.
    pub fn handle(
        &self,
        service: &str,
        caller: &Principal,
        form: &[(String, String)],
        request_id: &str,
        now: u64,
    ) -> (u16, String) {
        let (ns, version) = match service {
            "sts" => (STS_NS, STS_VERSION),
            _ => (IAM_NS, IAM_VERSION),
        };
        let result = (|| {
            let params = query::Params::new(form)?;
            let action = params.get("Action").ok_or(IdentityError::MissingAction)?;
            if let Some(v) = params.get("Version")
                && v != version
            {
                return Err(IdentityError::InvalidAction { action: action.to_owned(), version: v.to_owned() });
            }
            let unknown = || IdentityError::InvalidAction { action: action.to_owned(), version: version.to_owned() };
            match service {
                "iam" => iam::handle(self, action, caller, &params, request_id, now)?.ok_or_else(unknown),
                "sts" => sts::handle(self, action, caller, &params, request_id, now)?.ok_or_else(unknown),
                _ => Err(unknown()),
            }
        })();
        match result {
            Ok(xml) => (200, xml),
            Err(e) => {
                if let IdentityError::Storage(err) = &e {
                    tracing::error!(error = %err, service, "identity store failed");
                }
                (e.http_status(), error_xml(ns, &e, request_id))
            }
        }
    }

    /// The `<ErrorResponse>` for an error raised outside [`Identity::handle`] (e.g. by
    /// [`Identity::principal`] while authenticating an IAM or STS request): the HTTP status and the XML body.
    pub fn error_response(&self, service: &str, e: &IdentityError, request_id: &str) -> (u16, String) {
        let ns = if service == "sts" { STS_NS } else { IAM_NS };
        (e.http_status(), error_xml(ns, e, request_id))
    }

    // ---- Programmatic role management (as the administrator) ----

    /// Creates a role, as `CreateRole` does.
    pub fn create_role(&self, spec: &NewRole<'_>, now: u64) -> Result<Role, IdentityError> {
        iam::create_role(self, &Principal::system(), spec, now)
    }

    /// The role of that name (case-insensitive).
    pub fn get_role(&self, name: &str) -> Result<Option<Role>, IdentityError> {
        Ok(self.role_by_name(name)?.map(|e| e.role.clone()))
    }

    /// Deletes a role, as `DeleteRole` does (it must have no inline policies).
    pub fn delete_role(&self, name: &str) -> Result<(), IdentityError> {
        iam::delete_role(self, &Principal::system(), name)
    }

    /// Creates or replaces an inline policy of a role, as `PutRolePolicy` does.
    pub fn put_role_policy(&self, role_name: &str, policy_name: &str, document: &str) -> Result<(), IdentityError> {
        iam::put_role_policy(self, &Principal::system(), role_name, policy_name, document)
    }

    /// Deletes an inline policy of a role, as `DeleteRolePolicy` does.
    pub fn delete_role_policy(&self, role_name: &str, policy_name: &str) -> Result<(), IdentityError> {
        iam::delete_role_policy(self, &Principal::system(), role_name, policy_name)
    }

    // ---- Internals ----

    /// The caller's ARN: the account root for the administrator, the assumed-role ARN for a session.
    pub fn caller_arn(&self, p: &Principal) -> String {
        match p {
            Principal::Admin { .. } => format!("arn:aws:iam::{}:root", self.account),
            Principal::Session(s) => s.arn(),
        }
    }

    /// `arn:aws:iam::<account>:role<path><name>`.
    pub(crate) fn role_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:role{}{}", self.account, path, name)
    }

    /// Fails with `AccessDenied` unless `p` may do `action` on `resource`.
    pub(crate) fn require(
        &self,
        p: &Principal,
        action: &str,
        resource: &str,
        extra: &[(&str, &str)],
    ) -> Result<(), IdentityError> {
        let why = match self.authorize(p, action, resource, extra) {
            Decision::Allow => return Ok(()),
            Decision::ExplicitDeny => "with an explicit deny in an identity-based policy".to_owned(),
            Decision::ImplicitDeny => format!("because no identity-based policy allows the {action} action"),
        };
        Err(IdentityError::AccessDenied(format!(
            "User: {} is not authorized to perform: {action} on resource: {resource} {why}",
            self.caller_arn(p)
        )))
    }

    /// The condition keys describing a session (see [`Identity::authorize`]).
    pub(crate) fn session_context(&self, s: &Session, entry: &RoleEntry, extra: &[(&str, &str)], now: u64) -> Context {
        let mut ctx = Context::new();
        let mut key = String::with_capacity(64);
        for (k, v) in entry.role.tags.iter().chain(&s.tags) {
            key.clear();
            key.push_str(quarters_iam::keys::PRINCIPAL_TAG_PREFIX);
            key.push_str(k);
            // `set` replaces: a session tag overrides the role tag of the same (case-insensitive) key.
            ctx.set(&key, [v.as_str()]);
        }
        ctx.insert(quarters_iam::keys::PRINCIPAL_ARN, s.role_arn.as_str())
            .insert(quarters_iam::keys::PRINCIPAL_ACCOUNT, self.account.as_str())
            .insert("aws:PrincipalType", "AssumedRole")
            .insert(quarters_iam::keys::USER_ID, s.user_id())
            .insert("aws:TokenIssueTime", iso8601(s.issued));
        if let Some(source) = &s.source_identity {
            ctx.insert("aws:SourceIdentity", source.as_str());
        }
        add_time(&mut ctx, now);
        for (k, v) in extra {
            if !is_identity_key(k) {
                ctx.insert(k, *v);
            }
        }
        ctx
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A role by id, from the cache or else the store.
    pub(crate) fn role_by_id(&self, role_id: &str) -> Result<Option<Arc<RoleEntry>>, IdentityError> {
        if let Some(hit) = self.cache_read().by_id.get(role_id) {
            return Ok(hit.clone());
        }
        let conn = self.db();
        if let Some(hit) = self.cache_read().by_id.get(role_id) {
            return Ok(hit.clone());
        }
        let entry = store::role_by_id(&conn, role_id)?.map(|role| load_entry(&conn, role)).transpose()?;
        let mut cache = self.cache_write();
        match &entry {
            Some(e) => cache_insert(&mut cache, e),
            None => {
                cache.by_id.insert(role_id.to_owned(), None);
            }
        }
        Ok(entry)
    }

    /// A role by name (case-insensitive), from the cache or else the store.
    pub(crate) fn role_by_name(&self, name: &str) -> Result<Option<Arc<RoleEntry>>, IdentityError> {
        let key = name.to_ascii_lowercase();
        if let Some(hit) = self.cache_read().by_name.get(&key) {
            return Ok(Some(Arc::clone(hit)));
        }
        let conn = self.db();
        if let Some(hit) = self.cache_read().by_name.get(&key) {
            return Ok(Some(Arc::clone(hit)));
        }
        let entry = store::role_by_name(&conn, name)?.map(|role| load_entry(&conn, role)).transpose()?;
        if let Some(e) = &entry {
            cache_insert(&mut self.cache_write(), e);
        }
        Ok(entry)
    }

    /// The role an ARN of this account names, if it exists with exactly that ARN (path included).
    pub(crate) fn role_by_arn(&self, arn: &str) -> Result<Option<Arc<RoleEntry>>, IdentityError> {
        let prefix = format!("arn:aws:iam::{}:role/", self.account);
        let Some(rest) = arn.strip_prefix(&prefix) else { return Ok(None) };
        let name = rest.rsplit('/').next().unwrap_or(rest);
        if name.is_empty() {
            return Ok(None);
        }
        Ok(self.role_by_name(name)?.filter(|e| e.role.arn == arn))
    }

    /// Drops a role from the cache. Call with the store locked, after changing it.
    pub(crate) fn invalidate(&self, role: &Role) {
        let mut cache = self.cache_write();
        cache.by_name.remove(&role.name.to_ascii_lowercase());
        cache.by_id.remove(&role.role_id);
    }

    /// Runs `f` with the store locked.
    pub(crate) fn with_db<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        f(&self.db())
    }

    pub(crate) fn master(&self) -> &[u8; 32] {
        &self.master
    }
}

fn cache_insert(cache: &mut Cache, entry: &Arc<RoleEntry>) {
    cache.by_name.insert(entry.role.name.to_ascii_lowercase(), Arc::clone(entry));
    cache.by_id.insert(entry.role.role_id.clone(), Some(Arc::clone(entry)));
}

/// Parses a stored role's policies. Stored documents were validated when written; one that no longer parses
/// (a stricter parser) is skipped, which can only remove permissions.
fn load_entry(conn: &Connection, role: Role) -> Result<Arc<RoleEntry>, IdentityError> {
    let trust = match PolicyDocument::parse_as(&role.trust_policy, PolicyKind::Trust) {
        Ok(doc) => Some(doc),
        Err(e) => {
            tracing::error!(role = %role.arn, error = %e, "stored trust policy does not parse; the role trusts no one");
            None
        }
    };
    let mut policies = Vec::new();
    for (name, doc) in store::policies(conn, &role.role_id)? {
        match PolicyDocument::parse_as(&doc, PolicyKind::Identity) {
            Ok(doc) => policies.push(doc),
            Err(e) => {
                tracing::error!(role = %role.arn, policy = %name, error = %e, "stored policy does not parse; skipped")
            }
        }
    }
    Ok(Arc::new(RoleEntry { role, trust, policies }))
}

fn session_from_body(body: token::TokenBody) -> Result<Session, IdentityError> {
    let session_policy = match &body.p {
        // The policy was validated when the token was issued; failing now means a parser change.
        Some(text) => Some(
            PolicyDocument::parse_as(text, PolicyKind::Identity).map_err(|_| IdentityError::InvalidClientTokenId)?,
        ),
        None => None,
    };
    let role_name = body.r.rsplit('/').next().unwrap_or_default().to_owned();
    Ok(Session {
        access_key_id: body.k,
        role_arn: body.r,
        role_name,
        role_id: body.i,
        session_name: body.n,
        tags: body.t,
        transitive: body.x,
        session_policy,
        source_identity: body.s,
        issued: body.a,
        expires: body.e,
    })
}

/// Keys that describe the caller and that callers of [`Identity::authorize`] may not supply.
fn is_identity_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.starts_with("aws:principal")
        || matches!(k.as_str(), "aws:userid" | "aws:username" | "aws:sourceidentity" | "aws:tokenissuetime")
}

/// `aws:CurrentTime` and `aws:EpochTime`.
pub(crate) fn add_time(ctx: &mut Context, now: u64) {
    ctx.insert("aws:CurrentTime", iso8601(now)).insert("aws:EpochTime", now.to_string());
}

/// `2026-11-27T12:00:00Z`.
pub fn iso8601(epoch_s: u64) -> String {
    let (y, mo, d) = quarters_types::time::civil((epoch_s / 86_400) as i64);
    let rem = epoch_s % 86_400;
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `<ErrorResponse>` for an error.
fn error_xml(ns: &str, e: &IdentityError, request_id: &str) -> String {
    let mut x = xml::Xml::new();
    x.root("ErrorResponse", ns, |x| {
        x.elem("Error", |x| {
            x.leaf("Type", if e.is_sender_fault() { "Sender" } else { "Receiver" });
            x.leaf("Code", e.aws_code());
            x.leaf("Message", &e.client_message());
        });
        x.leaf("RequestId", request_id);
    });
    x.finish()
}

/// `<{action}Response><{action}Result>...</{action}Result><ResponseMetadata>...` for a successful call;
/// `result` is `None` for actions without output.
pub(crate) fn response(
    ns: &str,
    action: &str,
    request_id: &str,
    result: Option<&mut dyn FnMut(&mut xml::Xml)>,
) -> String {
    let mut x = xml::Xml::new();
    x.root(&format!("{action}Response"), ns, |x| {
        if let Some(f) = result {
            x.elem(&format!("{action}Result"), f);
        }
        x.elem("ResponseMetadata", |x| x.leaf("RequestId", request_id));
    });
    x.finish()
}

#[cfg(test)]
mod tests;

//! Built-in JWT authorizer of the API gateway.
//!
//! A [`JwtVerifier`] is built once per authorizer from a [`JwtConfig`]: all keys are parsed into
//! [`DecodingKey`]s up front so that [`JwtVerifier::verify`] on the request path only decodes the
//! token, checks one (or a few) signatures and inspects the claims.
//!
//! Key selection is by algorithm family, so a token can never be verified with a key of another
//! type: `HS*` tokens are only checked against the shared secrets, `RS*`/`PS*` only against RSA
//! keys, `ES256`/`ES384` only against EC keys of the matching curve (and `EdDSA` against Ed25519
//! keys). `alg: none` is always refused.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Minimum time between two JWKS fetches triggered by tokens naming an unknown `kid`.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Tokens longer than this are rejected before any decoding.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Largest JWKS document accepted from `jwks_url`.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Largest accepted `leeway_seconds` (one day).
const MAX_LEEWAY_SECONDS: u64 = 86_400;
/// Overall timeout of one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout of one JWKS fetch.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a JWT authorizer checks a token. Deserialisable from JSON (camelCase) and TOML-like serde.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JwtConfig {
    /// `iss` must be present and equal to this when set.
    pub issuer: Option<String>,
    /// When non-empty, `aud` (string or array) must be present and contain one of these.
    pub audience: Vec<String>,
    /// Shared secrets (UTF-8) for HS256/HS384/HS512.
    pub hs256_secrets: Vec<String>,
    /// RSA, EC (P-256/P-384) or Ed25519 public keys in PEM (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`).
    pub public_keys_pem: Vec<String>,
    /// Path of a JWKS JSON file, loaded once by [`JwtVerifier::new`].
    pub jwks_file: Option<String>,
    /// `http(s)://` URL of a JWKS, fetched by [`JwtVerifier::refresh_jwks`] (https needs a TLS-enabled reqwest).
    pub jwks_url: Option<String>,
    /// Claims that must be present (`"sub"`), or have a value (`"role=admin"`, compared as strings).
    /// Dotted paths (`"custom.role"`) reach into nested objects.
    pub required_claims: Vec<String>,
    /// Claim holding the tenant (dotted path allowed: `"custom.tenant"`); required when set.
    pub tenant_claim: Option<String>,
    /// Allowed clock skew for `exp`/`nbf`, in seconds (at most one day).
    pub leeway_seconds: u64,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("hs256_secrets", &format_args!("[{} redacted]", self.hs256_secrets.len()))
            .field("public_keys_pem", &format_args!("[{} keys]", self.public_keys_pem.len()))
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("required_claims", &self.required_claims)
            .field("tenant_claim", &self.tenant_claim)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

/// Why a token was rejected, or why the authorizer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token is not a well-formed compact JWS (bad shape, base64 or JSON).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token's `alg` is `none`, unknown, or has no configured key family (e.g. HS256 without secrets).
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// No candidate key verified the signature.
    #[error("invalid token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` differs from the configured issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` contains none of the configured audiences.
    #[error("token audience not accepted")]
    WrongAudience,
    /// A required claim (or the tenant claim) is absent or null.
    #[error("missing required claim `{0}`")]
    MissingClaim(String),
    /// A `name=value` required claim has another value.
    #[error("claim `{0}` does not have the required value")]
    WrongClaimValue(String),
    /// A claim has the wrong type (e.g. non-numeric `exp`, object as tenant).
    #[error("claim `{0}` has an invalid type or format")]
    InvalidClaim(String),
    /// The token names a `kid` that no key has, or no configured key fits its algorithm.
    #[error("no known key for this token")]
    UnknownKey,
    /// The authorizer configuration is invalid.
    #[error("invalid JWT authorizer configuration: {0}")]
    Config(String),
    /// Fetching or parsing the remote JWKS failed.
    #[error("JWKS fetch failed: {0}")]
    Fetch(String),
}

impl JwtError {
    /// True when the token itself was rejected (answer 401), false for configuration/fetch problems.
    pub fn is_token_error(&self) -> bool {
        !matches!(self, JwtError::Config(_) | JwtError::Fetch(_))
    }
}

/// A successfully verified token.
#[derive(Debug, Clone)]
pub struct Verified {
    /// All claims of the token.
    pub claims: Map<String, Value>,
    /// Value of the tenant claim (numbers/bools stringified); `None` if no tenant claim is configured.
    pub tenant: Option<String>,
    /// The `sub` claim, if present.
    pub subject: Option<String>,
}

/// One asymmetric verification key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    family: AlgorithmFamily,
    /// Set when the key may only be used with one algorithm (EC curve, or a JWK `alg`).
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl Key {
    fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// A `required_claims` entry.
#[derive(Debug)]
struct RequiredClaim {
    name: String,
    value: Option<String>,
}

/// Pre-built signature/time validation settings, one per algorithm family.
struct Validations {
    hmac: Validation,
    rsa: Validation,
    ec: Validation,
    ed: Validation,
}

impl Validations {
    fn new(cfg: &JwtConfig) -> Self {
        let build = |family: AlgorithmFamily| {
            let mut v = Validation::new_for_family(family);
            // `exp` is validated when present but not required; `iss` is checked by us (exact match).
            v.required_spec_claims = HashSet::new();
            v.leeway = cfg.leeway_seconds;
            v.validate_exp = true;
            v.validate_nbf = true;
            if cfg.audience.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&cfg.audience);
                v.required_spec_claims.insert("aud".to_owned());
            }
            v
        };
        Self {
            hmac: build(AlgorithmFamily::Hmac),
            rsa: build(AlgorithmFamily::Rsa),
            ec: build(AlgorithmFamily::Ec),
            ed: build(AlgorithmFamily::Ed),
        }
    }

    fn get(&self, family: AlgorithmFamily) -> &Validation {
        match family {
            AlgorithmFamily::Hmac => &self.hmac,
            AlgorithmFamily::Rsa => &self.rsa,
            AlgorithmFamily::Ec => &self.ec,
            AlgorithmFamily::Ed => &self.ed,
        }
    }
}

/// Verifies JWTs for one authorizer. Cheap to share: `Send + Sync`, put it in an `Arc`.
///
/// `exp` and `nbf` are validated when present (with `leeway_seconds`); following common practice a
/// token without `exp` is accepted — require it with `required_claims: ["exp"]` if needed.
pub struct JwtVerifier {
    issuer: Option<String>,
    required: Vec<RequiredClaim>,
    tenant_claim: Option<String>,
    secrets: Vec<DecodingKey>,
    /// Keys from `public_keys_pem` and `jwks_file`.
    static_keys: Vec<Key>,
    /// Keys from `jwks_url`, replaced on each successful fetch.
    remote_keys: RwLock<Arc<Vec<Key>>>,
    /// Incremented each time `remote_keys` is replaced.
    generation: AtomicU64,
    jwks_url: Option<String>,
    http: Option<reqwest::Client>,
    /// Time of the last fetch attempt; also serialises fetches.
    refresh_gate: tokio::sync::Mutex<Option<Instant>>,
    refresh_interval: Duration,
    validations: Validations,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("required", &self.required)
            .field("tenant_claim", &self.tenant_claim)
            .field("secrets", &self.secrets.len())
            .field("static_keys", &self.static_keys.len())
            .field("remote_keys", &self.remote_snapshot().len())
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds keys from the config; loads `jwks_file` now. Errors name what is wrong.
    ///
    /// Does not fetch `jwks_url`: call [`refresh_jwks`](Self::refresh_jwks) once afterwards (or let
    /// [`verify_async`](Self::verify_async) fetch it on first use).
    pub fn new(cfg: JwtConfig) -> Result<Self, JwtError> {
        if cfg.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(JwtError::Config(format!(
                "leewaySeconds {} is too large (max {MAX_LEEWAY_SECONDS})",
                cfg.leeway_seconds
            )));
        }
        if cfg.issuer.as_deref().is_some_and(str::is_empty) {
            return Err(JwtError::Config("issuer is empty".into()));
        }
        if let Some(i) = cfg.audience.iter().position(String::is_empty) {
            return Err(JwtError::Config(format!("audience[{i}] is empty")));
        }

        let mut secrets = Vec::with_capacity(cfg.hs256_secrets.len());
        for (i, secret) in cfg.hs256_secrets.iter().enumerate() {
            if secret.is_empty() {
                return Err(JwtError::Config(format!("hs256Secrets[{i}] is empty")));
            }
            if secret.len() < 32 {
                tracing::warn!(index = i, "JWT authorizer: hs256Secrets entry is shorter than 32 bytes");
            }
            secrets.push(DecodingKey::from_secret(secret.as_bytes()));
        }

        let mut static_keys = Vec::new();
        for (i, pem) in cfg.public_keys_pem.iter().enumerate() {
            static_keys.push(parse_pem_key(pem).map_err(|e| JwtError::Config(format!("publicKeysPem[{i}]: {e}")))?);
        }

        if let Some(path) = &cfg.jwks_file {
            let bytes = std::fs::read(path).map_err(|e| JwtError::Config(format!("jwksFile {path}: {e}")))?;
            let keys = parse_jwks(&bytes).map_err(|e| JwtError::Config(format!("jwksFile {path}: {e}")))?;
            if keys.is_empty() {
                return Err(JwtError::Config(format!("jwksFile {path}: contains no usable signing keys")));
            }
            static_keys.extend(keys);
        }

        let http = match &cfg.jwks_url {
            None => None,
            Some(url) => {
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(JwtError::Config(format!("jwksUrl {url}: must be an http:// or https:// URL")));
                }
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .connect_timeout(CONNECT_TIMEOUT)
                    .build()
                    .map_err(|e| JwtError::Config(format!("jwksUrl {url}: cannot build HTTP client: {e}")))?;
                Some(client)
            }
        };

        let mut required = Vec::with_capacity(cfg.required_claims.len());
        for (i, rc) in cfg.required_claims.iter().enumerate() {
            let (name, value) = match rc.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.to_owned())),
                None => (rc.trim(), None),
            };
            if name.is_empty() {
                return Err(JwtError::Config(format!("requiredClaims[{i}] has an empty claim name")));
            }
            required.push(RequiredClaim { name: name.to_owned(), value });
        }

        if cfg.tenant_claim.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(JwtError::Config("tenantClaim is empty".into()));
        }

        if secrets.is_empty() && static_keys.is_empty() && cfg.jwks_url.is_none() {
            return Err(JwtError::Config(
                "no keys configured: set hs256Secrets, publicKeysPem, jwksFile or jwksUrl".into(),
            ));
        }

        let validations = Validations::new(&cfg);
        Ok(Self {
            issuer: cfg.issuer,
            required,
            tenant_claim: cfg.tenant_claim.map(|t| t.trim().to_owned()),
            secrets,
            static_keys,
            remote_keys: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            jwks_url: cfg.jwks_url,
            http,
            refresh_gate: tokio::sync::Mutex::new(None),
            refresh_interval: MIN_REFRESH_INTERVAL,
            validations,
        })
    }

    /// For `jwks_url`: fetch and (re)load the key set now (no rate limit; a no-op without `jwks_url`).
    ///
    /// On failure the previously loaded keys stay in use.
    pub async fn refresh_jwks(&self) -> Result<(), JwtError> {
        if self.jwks_url.is_none() {
            return Ok(());
        }
        let mut last = self.refresh_gate.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_store().await
    }

    /// Verify a token (the raw header value; a leading "Bearer " is stripped case-insensitively).
    /// Returns the claims.
    pub fn verify(&self, token: &str) -> Result<Verified, JwtError> {
        let token = strip_bearer(token);
        let (alg, kid) = parse_header(token)?;
        let claims = self.check_signature(token, alg, kid.as_deref())?;
        self.check_claims(claims)
    }

    /// Like [`verify`](Self::verify), but if no key is known for the token and a `jwks_url` is
    /// configured, refreshes the JWKS (at most once per 60 s per verifier) and retries once.
    pub async fn verify_async(&self, token: &str) -> Result<Verified, JwtError> {
        let generation = self.generation.load(Ordering::Acquire);
        match self.verify(token) {
            Err(JwtError::UnknownKey) if self.jwks_url.is_some() => {
                self.refresh_rate_limited().await;
                if self.generation.load(Ordering::Acquire) != generation {
                    self.verify(token)
                } else {
                    Err(JwtError::UnknownKey)
                }
            }
            other => other,
        }
    }

    /// Fetches the JWKS unless an attempt was made less than `refresh_interval` ago. Concurrent
    /// callers wait for the running fetch instead of starting their own.
    async fn refresh_rate_limited(&self) {
        let mut last = self.refresh_gate.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.refresh_interval) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_store().await {
            tracing::warn!(error = %e, "JWT authorizer: JWKS refresh for unknown key failed");
        }
    }

    async fn fetch_and_store(&self) -> Result<(), JwtError> {
        let (Some(url), Some(http)) = (&self.jwks_url, &self.http) else {
            return Ok(());
        };
        let fetch_err = |msg: String| JwtError::Fetch(format!("{url}: {msg}"));
        let mut resp = http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fetch_err(format!("HTTP {status}")));
        }
        if resp.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(fetch_err(format!("document larger than {MAX_JWKS_BYTES} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| fetch_err(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(fetch_err(format!("document larger than {MAX_JWKS_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body).map_err(fetch_err)?;
        if keys.is_empty() {
            tracing::warn!(url = %url, "JWT authorizer: fetched JWKS contains no usable signing keys");
        } else {
            tracing::debug!(url = %url, keys = keys.len(), "JWT authorizer: JWKS loaded");
        }
        *self.remote_keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    fn remote_snapshot(&self) -> Arc<Vec<Key>> {
        Arc::clone(&self.remote_keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Checks the signature with the right key(s), plus `exp`/`nbf`/`aud`; returns the claims.
    fn check_signature(&self, token: &str, alg: Algorithm, kid: Option<&str>) -> Result<Map<String, Value>, JwtError> {
        let validation = self.validations.get(alg.family());
        if alg.family() == AlgorithmFamily::Hmac {
            if self.secrets.is_empty() {
                return Err(JwtError::UnsupportedAlgorithm(format!("{alg:?} (no shared secret configured)")));
            }
            let mut tried = 0;
            return try_keys(token, validation, self.secrets.iter(), &mut tried).unwrap_or(Err(JwtError::BadSignature));
        }

        let remote = self.remote_snapshot();
        let all = || self.static_keys.iter().chain(remote.iter());
        if let Some(kid) = kid
            && all().any(|k| k.kid.as_deref() == Some(kid))
        {
            // The kid is known: only that key (of the right type) may verify the token.
            let keys = all().filter(|k| k.kid.as_deref() == Some(kid) && k.accepts(alg)).map(|k| &k.key);
            let mut tried = 0;
            return try_keys(token, validation, keys, &mut tried).unwrap_or(Err(JwtError::BadSignature));
        }

        let keys = all().filter(|k| k.accepts(alg)).map(|k| &k.key);
        let mut tried = 0;
        match try_keys(token, validation, keys, &mut tried) {
            Some(result) => result,
            None if tried == 0 || kid.is_some() => Err(JwtError::UnknownKey),
            None => Err(JwtError::BadSignature),
        }
    }

    /// Issuer, required claims, tenant and subject.
    fn check_claims(&self, claims: Map<String, Value>) -> Result<Verified, JwtError> {
        if let Some(issuer) = &self.issuer {
            match claims.get("iss") {
                None | Some(Value::Null) => return Err(JwtError::MissingClaim("iss".into())),
                Some(Value::String(iss)) if iss == issuer => {}
                Some(_) => return Err(JwtError::WrongIssuer),
            }
        }
        for rc in &self.required {
            let value = lookup(&claims, &rc.name).ok_or_else(|| JwtError::MissingClaim(rc.name.clone()))?;
            if let Some(want) = &rc.value
                && !scalar_equals(value, want)
            {
                return Err(JwtError::WrongClaimValue(rc.name.clone()));
            }
        }
        let tenant = match &self.tenant_claim {
            None => None,
            Some(path) => {
                let value = lookup(&claims, path).ok_or_else(|| JwtError::MissingClaim(path.clone()))?;
                let tenant = scalar_to_string(value).ok_or_else(|| JwtError::InvalidClaim(path.clone()))?;
                if tenant.is_empty() {
                    return Err(JwtError::MissingClaim(path.clone()));
                }
                Some(tenant)
            }
        };
        let subject = claims.get("sub").and_then(scalar_to_string);
        Ok(Verified { claims, tenant, subject })
    }
}

/// Tries the keys in turn. `None` when no key verified the signature (`tried` counts the keys).
/// Errors other than a signature/key mismatch are final: they only happen once a signature matched
/// (claims) or apply to every key (malformed token).
fn try_keys<'a>(
    token: &str,
    validation: &Validation,
    keys: impl Iterator<Item = &'a DecodingKey>,
    tried: &mut usize,
) -> Option<Result<Map<String, Value>, JwtError>> {
    for key in keys {
        *tried += 1;
        match jsonwebtoken::decode::<Map<String, Value>>(token, key, validation) {
            Ok(data) => return Some(Ok(data.claims)),
            Err(e) => match e.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidAlgorithm => continue,
                _ => return Some(Err(map_jwt_error(e))),
            },
        }
    }
    None
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> JwtError {
    match e.into_kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(c),
        ErrorKind::InvalidClaimFormat(c) => JwtError::InvalidClaim(c),
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm | ErrorKind::InvalidAlgorithmName => {
            JwtError::UnsupportedAlgorithm("algorithm not accepted".into())
        }
        ErrorKind::Base64(_) => JwtError::Malformed("invalid base64url".into()),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => JwtError::Malformed("payload is not a JSON object".into()),
        other => JwtError::Malformed(format!("{other:?}")),
    }
}

/// Strips surrounding whitespace and a leading `Bearer ` (any case).
fn strip_bearer(raw: &str) -> &str {
    let t = raw.trim();
    match t.split_at_checked(7) {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case("bearer ") => rest.trim_start(),
        _ => t,
    }
}

#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

/// Reads `alg` and `kid` from the token header, refusing `none`, unknown algorithms and `crit`.
fn parse_header(token: &str) -> Result<(Algorithm, Option<String>), JwtError> {
    if token.is_empty() {
        return Err(JwtError::Malformed("empty token".into()));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed(format!("token longer than {MAX_TOKEN_LEN} bytes")));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated parts".into()));
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| JwtError::Malformed("header is not base64url".into()))?;
    let header: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("header is not a JSON object with a string `alg`".into()))?;
    if header.crit.is_some() {
        return Err(JwtError::Malformed("unsupported critical header parameters (`crit`)".into()));
    }
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(JwtError::UnsupportedAlgorithm("none".into()));
    }
    let alg = Algorithm::from_str(&header.alg).map_err(|_| JwtError::UnsupportedAlgorithm(header.alg.clone()))?;
    Ok((alg, header.kid))
}

/// Finds a claim by exact name, else by dotted path into nested objects. `null` counts as absent.
fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let found = match claims.get(path) {
        Some(v) => Some(v),
        None if path.contains('.') => {
            let mut segments = path.split('.');
            let mut current = claims.get(segments.next()?)?;
            for segment in segments {
                current = current.as_object()?.get(segment)?;
            }
            Some(current)
        }
        None => None,
    };
    found.filter(|v| !v.is_null())
}

/// Strings as-is, numbers and booleans stringified; `None` for other types.
fn scalar_to_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn scalar_equals(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Number(n) => n.to_string() == want,
        _ => false,
    }
}

/// Parses a public key PEM into a key bound to its family (and curve).
fn parse_pem_key(pem: &str) -> Result<Key, String> {
    if pem.contains("PRIVATE KEY") {
        return Err("is a private key; configure the public key".into());
    }
    let bytes = pem.trim().as_bytes();
    let key = |family, alg, key| Key { kid: None, family, alg, key };
    if let Ok(k) = DecodingKey::from_rsa_pem(bytes) {
        return Ok(key(AlgorithmFamily::Rsa, None, k));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(bytes) {
        // SEC1 point: uncompressed 0x04||x||y or compressed 0x02/0x03||x.
        let alg = match k.try_get_as_bytes().ok().map(<[u8]>::len) {
            Some(65 | 33) => Algorithm::ES256,
            Some(97 | 49) => Algorithm::ES384,
            _ => return Err("unsupported EC curve (P-256 and P-384 are supported)".into()),
        };
        return Ok(key(AlgorithmFamily::Ec, Some(alg), k));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(bytes) {
        if k.try_get_as_bytes().ok().map(<[u8]>::len) != Some(32) {
            return Err("unsupported Edwards curve (Ed25519 is supported)".into());
        }
        return Ok(key(AlgorithmFamily::Ed, Some(Algorithm::EdDSA), k));
    }
    Err("not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM format".into())
}

#[derive(serde::Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

/// Parses a JWKS document; keys that cannot be used for signature verification are skipped.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::with_capacity(raw.keys.len());
    for (index, value) in raw.keys.into_iter().enumerate() {
        let kid = value.get("kid").and_then(Value::as_str).unwrap_or("").to_owned();
        match serde_json::from_value::<Jwk>(value).map_err(|e| e.to_string()).and_then(|jwk| jwk_to_key(&jwk)) {
            Ok(key) => keys.push(key),
            Err(reason) => tracing::debug!(index, kid = %kid, %reason, "JWT authorizer: skipping JWKS key"),
        }
    }
    Ok(keys)
}

/// Converts one JWK into a verification key, refusing symmetric and non-signing keys.
fn jwk_to_key(jwk: &Jwk) -> Result<Key, String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(other) => return Err(format!("key use {other:?} is not `sig`")),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return Err("key_ops does not include `verify`".into());
    }
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(Algorithm::try_from(ka).map_err(|_| format!("unsupported alg {ka}"))?),
    };
    let (family, bound, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let key = DecodingKey::from_rsa_components(p.n.trim_end_matches('='), p.e.trim_end_matches('='))
                .map_err(|e| format!("invalid RSA n/e: {e}"))?;
            (AlgorithmFamily::Rsa, None, key)
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (alg, point_len) = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 65),
                EllipticCurve::P384 => (Algorithm::ES384, 97),
                ref other => return Err(format!("unsupported curve {other:?}")),
            };
            let key = DecodingKey::from_ec_components(p.x.trim_end_matches('='), p.y.trim_end_matches('='))
                .map_err(|e| format!("invalid EC x/y: {e}"))?;
            if key.try_get_as_bytes().ok().map(<[u8]>::len) != Some(point_len) {
                return Err("EC x/y have the wrong length for the curve".into());
            }
            (AlgorithmFamily::Ec, Some(alg), key)
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err(format!("unsupported curve {:?}", p.curve));
            }
            let key = DecodingKey::from_ed_components(p.x.trim_end_matches('='))
                .map_err(|e| format!("invalid OKP x: {e}"))?;
            (AlgorithmFamily::Ed, Some(Algorithm::EdDSA), key)
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are not accepted from a JWKS; use hs256Secrets".into());
        }
        _ => return Err("unsupported key type".into()),
    };
    if let Some(declared) = declared
        && (declared.family() != family || bound.is_some_and(|b| b != declared))
    {
        return Err(format!("alg {declared:?} does not match the key type"));
    }
    Ok(Key { kid: jwk.common.key_id.clone(), family, alg: declared.or(bound), key })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    // Test-only keys, generated with `openssl genrsa 2048` / `openssl ecparam -genkey` and converted
    // with `openssl pkcs8 -topk8 -nocrypt` and `openssl pkey -pubout`.
    const RSA1_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDbMmW1wt03+RjT
6xsSYKu6S7jk05eRyYH+3tXtW8Wvmmvm7Eg7li9a/Iroy1S6FiDo1gXeyazuIZlg
5wSJvrI7njurRrlCk2knEEQMBHDUqwzSJIn7NaboJTpujJEFYAZm7r7EJTCKrDMa
04WIfttlVjwEAHvdTd5VJJ2oT0UXyFDq4WonIrkwfAbJw6wVPaiAN8oUTZHpA+ee
ag4p96HtGc9EKEcKSrmAfM0POBhDOB8QFwgJj57vAczOL6hHpjuit1APd3ma+OR1
ThdVwo6vzRec46s2mmwH0nfRQlzQLn3aCGL+EpVBhZFuJ4EggokWpsZsBTZlcbeD
hsGQGdNTAgMBAAECggEAFuMlQZxOMvj8gawr0Hhtle8wKBx72AodW7pyxezuME7E
c4E6bZZZ7XsvGe2ZNDD5ULaAOGoAd4DknfyhOazCuXzlKBYjY/M2aJDHOiYAjgQq
O4r7KVLJ0bWJa1+cCN6k7HyDSMHFVsVyNJvfdoggam1dqOFQDaSC0YsYNynHwhrD
3nX6Wz4FHsHqU6uyjUadRs453N2H+KcvRSN7LUdXcazMM0AO3ihCG2tYdAL5gDaQ
UI00mYjgC6Md6Cyu5vCbCuH0/TpnZQBcGgortKTUs12gkuau7FWYYLNm7qzgnqpo
YHMxKxF8+jOaNvav0OsCJ8mQeexmwYkBmDK7B8skWQKBgQD8c07NknlKrJWQr1qn
6M/Aj3/6bYTFXw38K37qVVkJmNMwwvzoe7m6jO3Zl9d5LXjk9d+8MC5/BklpxzoX
mWDHs+hduXYrFHIg1bg+Rpt8IrLeyVywYRGYz/nmlTWTnM03rIRyzFsgfIWfEyaw
BfuswHg8tYXvZCipmE9ZXsb8XQKBgQDeR2TKZnuz2F8ujWi/AKcfl2Z+Pit+dNFf
XzZl6A227ixvvVptZpt2AO82h6wiUF3nC/sFttTtAvnycrd/j5NhLAMQcclRPcWv
S2bLhgXp9BTMukP79K2SrImbhQHtBQcAQ03uidTIxId4JtG5qXqWWWjZ3YVZkCCl
bHUgMf2TbwKBgCs9ML0jHmU85C0w660gwhywN3JUOc54dnO/m3BVh/eN1nZen2TO
dERQiRig2kYmFLParSSVeBFHqWFVv0x1d88csGsFLgk46kdXc8Qu4cjERLDF+ns3
VQVAcgQdgFy1Ga00fkcPW3hX+6cAZ7r0e2PeX3m+eZ9EH3bU4JplEl39AoGBANMq
9kkG5ZxtAbfjJdDXWO49UmS6wW1Io6Q8exyDQYw5Z0Pcmyz13tlTd+7RI6oRubQH
gLnkARMN0dEQRN3N09DsFBkqUHx69/RZ6NWPhMzHUn9QsceKot+GRNDXooW/UfBh
AIeOr/TwKFbwYixFIy300RSxS79TmoAtsnQcqe/HAoGBAOx1YpTE8zZ+yU7oyP8E
AikDzJJ3vT5EhWPfPiIvXb0yyr1mjbfF476s6UZwOvfNxkVBXMf8HrNe1tHkLEhI
8kun7mDSUsEnGsKcVWXZ5t1CIpAZhuRtu3xK5cwZ75o4kGlxQ3AKGC6SQBAXUc+s
f3cS2u0fCvxOYglkB51LVdCI
-----END PRIVATE KEY-----
";
    const RSA1_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2zJltcLdN/kY0+sbEmCr
uku45NOXkcmB/t7V7VvFr5pr5uxIO5YvWvyK6MtUuhYg6NYF3sms7iGZYOcEib6y
O547q0a5QpNpJxBEDARw1KsM0iSJ+zWm6CU6boyRBWAGZu6+xCUwiqwzGtOFiH7b
ZVY8BAB73U3eVSSdqE9FF8hQ6uFqJyK5MHwGycOsFT2ogDfKFE2R6QPnnmoOKfeh
7RnPRChHCkq5gHzNDzgYQzgfEBcICY+e7wHMzi+oR6Y7ordQD3d5mvjkdU4XVcKO
r80XnOOrNppsB9J30UJc0C592ghi/hKVQYWRbieBIIKJFqbGbAU2ZXG3g4bBkBnT
UwIDAQAB
-----END PUBLIC KEY-----
";
    const RSA2_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDObGUiHcxQkIV+
OyfWtu1matDi3G5/sLazry1DAsXse858Zd5ydHYgCPMnOmjEvh/T3ZmWdLXr00mp
q2oE3nRt2LOu7+1N1nkHUCQpwSRGfk5cr0YgJhMz8zEXYl060Po/BWi20trf+wXU
tKz9y9206Cv/9S+GLdXa5/zkbbvROZhB9sd2Xa9QWHd+dWnuhP996NhyWj8d9F+x
TmCecpMz+3KatcdWdW5V00e8yM6tzfWcbT+amfST/ll245jZcrdsRZavAdlpzwa9
WVkcHPWe7C4gLmEJ/yxmUqgTU7kdONXtc/TQG77cxbI9PWSz5nZRbr0MFJs8cho9
tr/hOVtNAgMBAAECggEADZDcGKDis4y76S7UEG1XLrroXXBlJqkjaK2jiNrezQrZ
6Bz9wIHc3YAZEsPo7L0d9FuE43lqF0R8e9UTE5zXA/0Q2fdUnh/xNkTTC5dw3d0h
I0A1mJlH+8sIt+O0AtCHEas2VYWH8t5ZZMA2+jryqBf2BE1FwUiz3D4QxaZciIRl
MWXFF81y5+JV7n9GtBOr20pyciALpxPkMOnm2dGE/rKASmKa2a2CY4e5AqRgh5Ho
P0K+DI/pNphgcze65+j0MFGuJwfPh9BByoNy1YtQJ/o2MNm/IWY2MgSKPASoXB7b
YD2EetlxJECFTqGTD6o379+7wviVX+txzaT6LWYBFQKBgQD1BmvjxOvO1Lvik+lv
GALpKPfAd49msav1aA4qE9MIr+CaRf2RIhUFAfAcUAaffcjuMq9oxQv4AVdM0rW6
PW8z022lmlmezeLr6coX/vJXvqkJDp6NG7/Etg5sURumEAZiLc4jadT/PuJ29rU2
IoSf9e8vOKU7tauQ0V8hb7sVkwKBgQDXq1kNFmXjQbReLwHVbiwGWF8CqrMzxaU9
1oecu3WWv1XO8kvXj/MKlLpNsu6TC/lj1FCS0aJT6rRrlo6gowknoUqhGBtTxhOY
X5ThXAsSp5iMIW9+oNbCMvyYcu9b75WBiFEx2IVllg/WGlEpFdpmyVwIG5KKO4mh
EwUR6MZXnwKBgGR/PcEuA4nRtz43bIckUg1PwE4wu6BjPyRoiWa4utXVTUn5awcb
84MaSGFUcWL5NHB+WXOfXklaQ3Q++Epq6DFZhp9lr1xzFZ+tRDaTWtKiYLJWTLGT
sBP+l+vVWIHEENoz71iXD8WhBUHF7o1FmyAAvxmfIiZbXQMI3PvZ1+IBAoGAfO6Z
a2dqJjdNkLGSUly7zAEtKJJRtM/tZOD9NeGxwF2eC394R6rvk1WMhq38Xdo14YqA
Eky1x/7R/PD+Nje7eeWJIcChM+ouN7pGuDVlhKzpRWOo/qWVQnHeuUD7PzqOVLbu
sf1HaQ2ApvofwbkTBy/lzByMyt6qX1BxQ2qgWukCgYEA70aXa8Fr1RXW37yDfk6y
urouNSdVNcSbi0j/FYGIJlrRVHFLgwA4rOQer05GVv3UAp4y6h0BSndQW/Le+fg5
UP+065ReSur9BH9qXLB9SUgSwPhg0dYuHeqgFJzh45dOkVNsMhaRZnVfZ4/3vaCK
gWOGcSRn9HraUC6Cvj8K1lQ=
-----END PRIVATE KEY-----
";
    const RSA2_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzmxlIh3MUJCFfjsn1rbt
ZmrQ4txuf7C2s68tQwLF7HvOfGXecnR2IAjzJzpoxL4f092ZlnS169NJqatqBN50
bdizru/tTdZ5B1AkKcEkRn5OXK9GICYTM/MxF2JdOtD6PwVottLa3/sF1LSs/cvd
tOgr//Uvhi3V2uf85G270TmYQfbHdl2vUFh3fnVp7oT/fejYclo/HfRfsU5gnnKT
M/tymrXHVnVuVdNHvMjOrc31nG0/mpn0k/5ZduOY2XK3bEWWrwHZac8GvVlZHBz1
nuwuIC5hCf8sZlKoE1O5HTjV7XP00Bu+3MWyPT1ks+Z2UW69DBSbPHIaPba/4Tlb
TQIDAQAB
-----END PUBLIC KEY-----
";
    const EC256_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgHGA4jAyzp5eVnk8c
MAWAsW6wjaTW/z1DDlsCFs6m/lihRANCAASi+Uw0gBai+HlGpa3/BtMcnZBv1B9V
BqOLcQ5sXjHmlLvWuehCRJX0+E8jPtSZT1lSZ4Ro55UeWurndEE99bpZ
-----END PRIVATE KEY-----
";
    const EC256_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEovlMNIAWovh5RqWt/wbTHJ2Qb9Qf
VQaji3EObF4x5pS71rnoQkSV9PhPIz7UmU9ZUmeEaOeVHlrq53RBPfW6WQ==
-----END PUBLIC KEY-----
";
    const EC384_PRIVATE: &str = "\
-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBVELZu5O3/kbydJ06/
mIo8n1ZbRcE5DTr45JfELosU1lrk0Il7S1Bt91bCX5GIZF+hZANiAATMX6StoMJ/
6VGfHl8A/zf3DFGGqBLjTvj8Ryufpxl1m1Dao4rTyvrvozGXVrokEQq32al62wco
0suotzIQe3xKHZdJ7bUQacT2FxJzpqixwKtNe8m0eFxVk3+RXv5BMHU=
-----END PRIVATE KEY-----
";
    const EC384_PUBLIC: &str = "\
-----BEGIN PUBLIC KEY-----
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEzF+kraDCf+lRnx5fAP839wxRhqgS4074
/Ecrn6cZdZtQ2qOK08r676Mxl1a6JBEKt9mpetsHKNLLqLcyEHt8Sh2XSe21EGnE
9hcSc6aoscCrTXvJtHhcVZN/kV7+QTB1
-----END PUBLIC KEY-----
";

    const SECRET: &str = "quarters-test-secret-0123456789abcdef";

    fn now() -> i64 {
        i64::try_from(get_current_timestamp()).expect("timestamp fits i64")
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        encode(&header, claims, key).expect("encode token")
    }

    fn hs(secret: &str, claims: &Value) -> String {
        sign(Algorithm::HS256, None, &EncodingKey::from_secret(secret.as_bytes()), claims)
    }

    fn rsa_key(pem: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa private key")
    }

    fn ec_key(pem: &str) -> EncodingKey {
        EncodingKey::from_ec_pem(pem.as_bytes()).expect("ec private key")
    }

    fn secret_cfg() -> JwtConfig {
        JwtConfig { hs256_secrets: vec![SECRET.into()], ..JwtConfig::default() }
    }

    fn verifier(cfg: JwtConfig) -> JwtVerifier {
        JwtVerifier::new(cfg).expect("valid config")
    }

    /// JWKS JSON holding the public halves of the given (private key, alg, kid) triples.
    fn jwks_json(keys: &[(&EncodingKey, Algorithm, &str)]) -> String {
        let keys = keys
            .iter()
            .map(|(key, alg, kid)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).expect("jwk from key");
                jwk.common.key_id = Some((*kid).to_owned());
                jwk
            })
            .collect();
        serde_json::to_string(&JwkSet { keys }).expect("serialize jwks")
    }

    fn write_temp(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, contents.as_bytes()).expect("write temp file");
        file
    }

    #[test]
    fn verifier_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<JwtVerifier>();
        assert_send_sync::<Verified>();
    }

    #[test]
    fn config_deserializes_camel_case_with_defaults() {
        let cfg: JwtConfig = serde_json::from_value(json!({
            "issuer": "https://idp",
            "hs256Secrets": ["s"],
            "requiredClaims": ["sub"],
            "tenantClaim": "custom.tenant",
            "leewaySeconds": 5
        }))
        .expect("deserialize config");
        assert_eq!(cfg.issuer.as_deref(), Some("https://idp"));
        assert_eq!(cfg.hs256_secrets, vec!["s".to_owned()]);
        assert_eq!(cfg.tenant_claim.as_deref(), Some("custom.tenant"));
        assert_eq!(cfg.leeway_seconds, 5);
        assert!(cfg.audience.is_empty() && cfg.jwks_url.is_none());
        assert!(!format!("{cfg:?}").contains("\"s\""), "secrets must not appear in Debug output");
    }

    #[test]
    fn hs256_valid_token_returns_claims_tenant_and_subject() {
        let v = verifier(JwtConfig {
            issuer: Some("https://idp.example".into()),
            audience: vec!["other".into(), "quarters".into()],
            required_claims: vec!["sub".into(), "tenantId".into(), "role=admin".into(), "level=3".into()],
            tenant_claim: Some("tenantId".into()),
            ..secret_cfg()
        });
        let token = hs(
            SECRET,
            &json!({"sub": "user-1", "iss": "https://idp.example", "aud": ["x", "quarters"], "tenantId": "acme",
                    "role": "admin", "level": 3, "exp": now() + 300, "nbf": now() - 10, "scope": "read"}),
        );
        let ok = v.verify(&token).expect("token accepted");
        assert_eq!(ok.tenant.as_deref(), Some("acme"));
        assert_eq!(ok.subject.as_deref(), Some("user-1"));
        assert_eq!(ok.claims.get("scope"), Some(&json!("read")));

        // Audience as a plain string also works.
        let token = hs(
            SECRET,
            &json!({"sub": "u", "iss": "https://idp.example", "aud": "quarters", "tenantId": 42,
                                        "role": "admin", "level": "3"}),
        );
        let ok = v.verify(&token).expect("string aud accepted");
        assert_eq!(ok.tenant.as_deref(), Some("42"), "numeric tenant is stringified");
    }

    #[test]
    fn tenant_is_none_when_not_configured() {
        let ok = verifier(secret_cfg()).verify(&hs(SECRET, &json!({"tenantId": "acme"}))).expect("accepted");
        assert_eq!(ok.tenant, None);
        assert_eq!(ok.subject, None);
    }

    #[test]
    fn hs384_and_hs512_accepted() {
        let v = verifier(secret_cfg());
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            v.verify(&sign(alg, None, &key, &json!({"sub": "u"}))).expect("hs384/512 accepted");
        }
    }

    #[test]
    fn second_secret_is_tried() {
        let v =
            verifier(JwtConfig { hs256_secrets: vec!["first-secret".into(), SECRET.into()], ..JwtConfig::default() });
        v.verify(&hs(SECRET, &json!({"sub": "u"}))).expect("second secret accepted");
    }

    #[test]
    fn wrong_secret_rejected() {
        let err = verifier(secret_cfg()).verify(&hs("another-secret-0123456789abcdefgh", &json!({"sub": "u"})));
        assert!(matches!(err, Err(JwtError::BadSignature)), "{err:?}");
    }

    #[test]
    fn tampered_payload_rejected() {
        let token = hs(SECRET, &json!({"sub": "user"}));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        let err = verifier(secret_cfg()).verify(&parts.join("."));
        assert!(matches!(err, Err(JwtError::BadSignature)), "{err:?}");
    }

    #[test]
    fn expired_and_not_yet_valid_rejected_with_leeway() {
        let v = verifier(secret_cfg());
        let expired = hs(SECRET, &json!({"sub": "u", "exp": now() - 120}));
        assert!(matches!(v.verify(&expired), Err(JwtError::Expired)));
        let future = hs(SECRET, &json!({"sub": "u", "nbf": now() + 120}));
        assert!(matches!(v.verify(&future), Err(JwtError::NotYetValid)));
        let bad_exp = hs(SECRET, &json!({"sub": "u", "exp": "tomorrow"}));
        assert!(matches!(v.verify(&bad_exp), Err(JwtError::InvalidClaim(c)) if c == "exp"));

        let lenient = verifier(JwtConfig { leeway_seconds: 300, ..secret_cfg() });
        lenient.verify(&expired).expect("within leeway");
        lenient.verify(&future).expect("within leeway");
    }

    #[test]
    fn token_without_exp_accepted() {
        verifier(secret_cfg()).verify(&hs(SECRET, &json!({"sub": "u"}))).expect("no exp is fine");
        let require_exp = verifier(JwtConfig { required_claims: vec!["exp".into()], ..secret_cfg() });
        assert!(
            matches!(require_exp.verify(&hs(SECRET, &json!({"sub": "u"}))), Err(JwtError::MissingClaim(c)) if c == "exp")
        );
    }

    #[test]
    fn wrong_or_missing_issuer_rejected() {
        let v = verifier(JwtConfig { issuer: Some("https://idp".into()), ..secret_cfg() });
        let err = v.verify(&hs(SECRET, &json!({"iss": "https://evil"})));
        assert!(matches!(err, Err(JwtError::WrongIssuer)), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"iss": ["https://idp", "https://evil"]})));
        assert!(matches!(err, Err(JwtError::WrongIssuer)), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"sub": "u"})));
        assert!(matches!(err, Err(JwtError::MissingClaim(ref c)) if c == "iss"), "{err:?}");
        v.verify(&hs(SECRET, &json!({"iss": "https://idp"}))).expect("right issuer");
    }

    #[test]
    fn wrong_or_missing_audience_rejected() {
        let v = verifier(JwtConfig { audience: vec!["quarters".into()], ..secret_cfg() });
        let err = v.verify(&hs(SECRET, &json!({"aud": "someone-else"})));
        assert!(matches!(err, Err(JwtError::WrongAudience)), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"aud": ["a", "b"]})));
        assert!(matches!(err, Err(JwtError::WrongAudience)), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"sub": "u"})));
        assert!(matches!(err, Err(JwtError::MissingClaim(ref c)) if c == "aud"), "{err:?}");

        // Without configured audience any `aud` is fine.
        verifier(secret_cfg()).verify(&hs(SECRET, &json!({"aud": "anything"}))).expect("aud ignored");
    }

    #[test]
    fn required_claims_enforced() {
        let v = verifier(JwtConfig {
            required_claims: vec!["sub".into(), "tenantId".into(), "role=admin".into()],
            ..secret_cfg()
        });
        let err = v.verify(&hs(SECRET, &json!({"sub": "u", "role": "admin"})));
        assert!(matches!(err, Err(JwtError::MissingClaim(ref c)) if c == "tenantId"), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"sub": "u", "tenantId": null, "role": "admin"})));
        assert!(
            matches!(err, Err(JwtError::MissingClaim(ref c)) if c == "tenantId"),
            "null counts as missing: {err:?}"
        );
        let err = v.verify(&hs(SECRET, &json!({"sub": "u", "tenantId": "t", "role": "user"})));
        assert!(matches!(err, Err(JwtError::WrongClaimValue(ref c)) if c == "role"), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"sub": "u", "tenantId": "t", "role": ["admin"]})));
        assert!(matches!(err, Err(JwtError::WrongClaimValue(ref c)) if c == "role"), "{err:?}");
        v.verify(&hs(SECRET, &json!({"sub": "u", "tenantId": "t", "role": "admin"}))).expect("all present");
    }

    #[test]
    fn dotted_tenant_claim_path() {
        let v = verifier(JwtConfig { tenant_claim: Some("custom.tenant".into()), ..secret_cfg() });
        let ok = v.verify(&hs(SECRET, &json!({"custom": {"tenant": "acme"}}))).expect("nested tenant");
        assert_eq!(ok.tenant.as_deref(), Some("acme"));
        let ok = v.verify(&hs(SECRET, &json!({"custom": {"tenant": true}}))).expect("bool tenant");
        assert_eq!(ok.tenant.as_deref(), Some("true"));
        let err = v.verify(&hs(SECRET, &json!({"custom": {"other": "x"}})));
        assert!(matches!(err, Err(JwtError::MissingClaim(ref c)) if c == "custom.tenant"), "{err:?}");
        let err = v.verify(&hs(SECRET, &json!({"custom": {"tenant": ""}})));
        assert!(matches!(err, Err(JwtError::MissingClaim(ref c)) if c == "custom.tenant"), "empty tenant: {err:?}");
        let err = v.verify(&hs(SECRET, &json!({"custom": {"tenant": {"id": 1}}})));
        assert!(matches!(err, Err(JwtError::InvalidClaim(ref c)) if c == "custom.tenant"), "{err:?}");

        // Namespaced claim names containing dots match literally first.
        let v = verifier(JwtConfig { tenant_claim: Some("https://quarters.dev/tenant".into()), ..secret_cfg() });
        let ok = v.verify(&hs(SECRET, &json!({"https://quarters.dev/tenant": "t1"}))).expect("literal name");
        assert_eq!(ok.tenant.as_deref(), Some("t1"));

        // Dotted required claims.
        let v = verifier(JwtConfig { required_claims: vec!["org.plan=pro".into()], ..secret_cfg() });
        v.verify(&hs(SECRET, &json!({"org": {"plan": "pro"}}))).expect("nested required value");
        assert!(matches!(v.verify(&hs(SECRET, &json!({"org": {"plan": "free"}}))), Err(JwtError::WrongClaimValue(_))));
    }

    #[test]
    fn bearer_prefix_handled() {
        let v = verifier(secret_cfg());
        let token = hs(SECRET, &json!({"sub": "u"}));
        for raw in [format!("Bearer {token}"), format!("bearer {token}"), format!("BEARER   {token} "), token.clone()] {
            v.verify(&raw).expect("bearer variants accepted");
        }
        assert!(matches!(v.verify(&format!("Basic {token}")), Err(JwtError::Malformed(_))));
        assert!(matches!(v.verify("Bearer "), Err(JwtError::Malformed(_))));
    }

    #[test]
    fn malformed_tokens_rejected() {
        let v = verifier(secret_cfg());
        for raw in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig", "eyJhbGciOiJIUzI1NiJ9.!!!.x"] {
            let err = v.verify(raw);
            assert!(matches!(err, Err(JwtError::Malformed(_)) | Err(JwtError::BadSignature)), "{raw}: {err:?}");
        }
        assert!(matches!(v.verify("a.b"), Err(JwtError::Malformed(_))));
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(v.verify(&long), Err(JwtError::Malformed(_))));
        // A payload that is not a JSON object.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(b"[1,2]");
        let body = format!("{header}.{payload}");
        let token = format!("{body}.{}", hs_signature(&body));
        assert!(matches!(v.verify(&token), Err(JwtError::Malformed(_))), "{:?}", v.verify(&token));
        // `crit` is refused.
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","crit":["exp"]}"#);
        let body = format!("{header}.{}", URL_SAFE_NO_PAD.encode(b"{}"));
        let token = format!("{body}.{}", hs_signature(&body));
        assert!(matches!(v.verify(&token), Err(JwtError::Malformed(_))));
    }

    /// HS256 signature of `body` with [`SECRET`], via jsonwebtoken's JWS signing.
    fn hs_signature(body: &str) -> String {
        let signer =
            jsonwebtoken::crypto::sign(body.as_bytes(), &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256);
        signer.expect("sign")
    }

    #[test]
    fn alg_none_rejected() {
        let v = verifier(secret_cfg());
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        for alg in ["none", "None", "NONE"] {
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            for token in [format!("{header}.{payload}."), format!("{header}.{payload}.c2ln")] {
                let err = v.verify(&token);
                assert!(matches!(err, Err(JwtError::UnsupportedAlgorithm(_))), "{alg}: {err:?}");
            }
        }
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"XS999"}"#);
        assert!(matches!(v.verify(&format!("{header}.{payload}.c2ln")), Err(JwtError::UnsupportedAlgorithm(_))));
    }

    #[test]
    fn rs256_and_ps256_via_pem_accepted() {
        let v = verifier(JwtConfig { public_keys_pem: vec![RSA1_PUBLIC.into()], ..JwtConfig::default() });
        let claims = json!({"sub": "rsa-user", "exp": now() + 60});
        for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
            let ok = v.verify(&sign(alg, None, &rsa_key(RSA1_PRIVATE), &claims)).expect("rsa token accepted");
            assert_eq!(ok.subject.as_deref(), Some("rsa-user"));
        }
        let err = v.verify(&sign(Algorithm::RS256, None, &rsa_key(RSA2_PRIVATE), &claims));
        assert!(matches!(err, Err(JwtError::BadSignature)), "{err:?}");
        // Expiry is still checked for RSA tokens.
        let err = v.verify(&sign(Algorithm::RS256, None, &rsa_key(RSA1_PRIVATE), &json!({"exp": now() - 100})));
        assert!(matches!(err, Err(JwtError::Expired)), "{err:?}");
    }

    #[test]
    fn several_pem_keys_are_tried() {
        let v = verifier(JwtConfig {
            public_keys_pem: vec![EC256_PUBLIC.into(), RSA2_PUBLIC.into(), RSA1_PUBLIC.into()],
            ..JwtConfig::default()
        });
        v.verify(&sign(Algorithm::RS256, None, &rsa_key(RSA1_PRIVATE), &json!({}))).expect("rsa1");
        v.verify(&sign(Algorithm::RS256, None, &rsa_key(RSA2_PRIVATE), &json!({}))).expect("rsa2");
        v.verify(&sign(Algorithm::ES256, None, &ec_key(EC256_PRIVATE), &json!({}))).expect("ec");
    }

    #[test]
    fn es256_and_es384_via_pem_accepted() {
        let v = verifier(JwtConfig { public_keys_pem: vec![EC256_PUBLIC.into()], ..JwtConfig::default() });
        let ok = v.verify(&sign(Algorithm::ES256, None, &ec_key(EC256_PRIVATE), &json!({"sub": "ec"}))).expect("es256");
        assert_eq!(ok.subject.as_deref(), Some("ec"));
        // ES384 token: no P-384 key configured.
        let es384 = sign(Algorithm::ES384, None, &ec_key(EC384_PRIVATE), &json!({"sub": "ec"}));
        assert!(matches!(v.verify(&es384), Err(JwtError::UnknownKey)));
        // RS256 token against an EC-only verifier.
        let rs = sign(Algorithm::RS256, None, &rsa_key(RSA1_PRIVATE), &json!({}));
        assert!(matches!(v.verify(&rs), Err(JwtError::UnknownKey)));

        let v = verifier(JwtConfig { public_keys_pem: vec![EC384_PUBLIC.into()], ..JwtConfig::default() });
        v.verify(&es384).expect("es384");
    }

    #[test]
    fn algorithm_confusion_rejected() {
        let claims = json!({"sub": "admin"});
        // HS256 "signed" with the RSA public key PEM as the shared secret.
        let forged = hs(RSA1_PUBLIC, &claims);
        let pem_only = verifier(JwtConfig { public_keys_pem: vec![RSA1_PUBLIC.into()], ..JwtConfig::default() });
        let err = pem_only.verify(&forged);
        assert!(matches!(err, Err(JwtError::UnsupportedAlgorithm(_))), "{err:?}");

        let both = verifier(JwtConfig { public_keys_pem: vec![RSA1_PUBLIC.into()], ..secret_cfg() });
        let err = both.verify(&forged);
        assert!(matches!(err, Err(JwtError::BadSignature)), "{err:?}");

        // Also with a JWKS key and the token naming its kid.
        let jwks = write_temp(&jwks_json(&[(&rsa_key(RSA1_PRIVATE), Algorithm::RS256, "k1")]));
        let v = verifier(JwtConfig { jwks_file: Some(path_of(&jwks)), ..secret_cfg() });
        let forged = sign(Algorithm::HS256, Some("k1"), &EncodingKey::from_secret(RSA1_PUBLIC.as_bytes()), &claims);
        assert!(matches!(v.verify(&forged), Err(JwtError::BadSignature)));

        // A JWK declared RS256 refuses PS256 tokens; an EC kid refuses RSA tokens.
        let jwks = write_temp(&jwks_json(&[
            (&rsa_key(RSA1_PRIVATE), Algorithm::RS256, "k1"),
            (&ec_key(EC256_PRIVATE), Algorithm::ES256, "e1"),
        ]));
        let v = verifier(JwtConfig { jwks_file: Some(path_of(&jwks)), ..JwtConfig::default() });
        let ps = sign(Algorithm::PS256, Some("k1"), &rsa_key(RSA1_PRIVATE), &claims);
        assert!(matches!(v.verify(&ps), Err(JwtError::BadSignature)));
        let rs_with_ec_kid = sign(Algorithm::RS256, Some("e1"), &rsa_key(RSA1_PRIVATE), &claims);
        assert!(matches!(v.verify(&rs_with_ec_kid), Err(JwtError::BadSignature)));
    }

    fn path_of(file: &tempfile::NamedTempFile) -> String {
        file.path().to_str().expect("utf-8 temp path").to_owned()
    }

    #[test]
    fn jwks_file_with_kid_matching() {
        let jwks = write_temp(&jwks_json(&[
            (&rsa_key(RSA1_PRIVATE), Algorithm::RS256, "k1"),
            (&rsa_key(RSA2_PRIVATE), Algorithm::RS256, "k2"),
            (&ec_key(EC256_PRIVATE), Algorithm::ES256, "e1"),
        ]));
        let v = verifier(JwtConfig { jwks_file: Some(path_of(&jwks)), ..JwtConfig::default() });
        let claims = json!({"sub": "jwks-user"});
        let ok = v.verify(&sign(Algorithm::RS256, Some("k1"), &rsa_key(RSA1_PRIVATE), &claims)).expect("k1");
        assert_eq!(ok.subject.as_deref(), Some("jwks-user"));
        v.verify(&sign(Algorithm::RS256, Some("k2"), &rsa_key(RSA2_PRIVATE), &claims)).expect("k2");
        v.verify(&sign(Algorithm::ES256, Some("e1"), &ec_key(EC256_PRIVATE), &claims)).expect("e1");
        // No kid: all RSA keys are tried.
        v.verify(&sign(Algorithm::RS256, None, &rsa_key(RSA2_PRIVATE), &claims)).expect("no kid");
        // Unknown kid: falls back to every compatible key.
        v.verify(&sign(Algorithm::RS256, Some("zzz"), &rsa_key(RSA1_PRIVATE), &claims)).expect("unknown kid fallback");
        // A known kid pins the key: signed by rsa1 but naming k2 fails.
        let err = v.verify(&sign(Algorithm::RS256, Some("k2"), &rsa_key(RSA1_PRIVATE), &claims));
        assert!(matches!(err, Err(JwtError::BadSignature)), "{err:?}");

        // Only rsa1 known: rsa2-signed tokens fail, as UnknownKey when they name an unknown kid.
        let jwks = write_temp(&jwks_json(&[(&rsa_key(RSA1_PRIVATE), Algorithm::RS256, "k1")]));
        let v = verifier(JwtConfig { jwks_file: Some(path_of(&jwks)), ..JwtConfig::default() });
        let err = v.verify(&sign(Algorithm::RS256, Some("k9"), &rsa_key(RSA2_PRIVATE), &claims));
        assert!(matches!(err, Err(JwtError::UnknownKey)), "{err:?}");
        let err = v.verify(&sign(Algorithm::RS256, None, &rsa_key(RSA2_PRIVATE), &claims));
        assert!(matches!(err, Err(JwtError::BadSignature)), "{err:?}");
    }

    #[test]
    fn jwks_skips_unusable_keys() {
        let usable = jwks_json(&[(&rsa_key(RSA1_PRIVATE), Algorithm::RS256, "k1")]);
        let mut doc: Value = serde_json::from_str(&usable).expect("json");
        let keys = doc["keys"].as_array_mut().expect("keys array");
        keys.push(json!({"kty": "oct", "kid": "sym", "k": URL_SAFE_NO_PAD.encode(SECRET)}));
        keys.push(json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}));
        keys.push(json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}));
        keys.push(json!({"kty": "weird", "kid": "w"}));
        let file = write_temp(&doc.to_string());
        let v = verifier(JwtConfig { jwks_file: Some(path_of(&file)), ..JwtConfig::default() });
        assert_eq!(v.static_keys.len(), 1);
        // An HS256 token naming the oct key is not verified with it.
        let forged = sign(Algorithm::HS256, Some("sym"), &EncodingKey::from_secret(SECRET.as_bytes()), &json!({}));
        assert!(matches!(v.verify(&forged), Err(JwtError::UnsupportedAlgorithm(_))));

        let only_oct = write_temp(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#);
        let err = JwtVerifier::new(JwtConfig { jwks_file: Some(path_of(&only_oct)), ..JwtConfig::default() });
        assert!(matches!(err, Err(JwtError::Config(ref m)) if m.contains("no usable")), "{err:?}");
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = |cfg: JwtConfig| match JwtVerifier::new(cfg) {
            Err(JwtError::Config(msg)) => msg,
            other => panic!("expected config error, got {other:?}"),
        };
        assert!(err(JwtConfig::default()).contains("no keys configured"));
        assert!(
            err(JwtConfig { public_keys_pem: vec![RSA1_PRIVATE.into()], ..JwtConfig::default() })
                .contains("publicKeysPem[0]: is a private key")
        );
        assert!(
            err(JwtConfig { public_keys_pem: vec!["garbage".into()], ..JwtConfig::default() })
                .contains("publicKeysPem[0]")
        );
        assert!(
            err(JwtConfig { hs256_secrets: vec![String::new()], ..JwtConfig::default() }).contains("hs256Secrets[0]")
        );
        assert!(
            err(JwtConfig { jwks_file: Some("/nonexistent/jwks.json".into()), ..JwtConfig::default() })
                .contains("/nonexistent/jwks.json")
        );
        let bad = write_temp("{not json");
        assert!(err(JwtConfig { jwks_file: Some(path_of(&bad)), ..JwtConfig::default() }).contains("not a JWKS"));
        assert!(err(JwtConfig { jwks_url: Some("ftp://x/jwks".into()), ..JwtConfig::default() }).contains("jwksUrl"));
        assert!(err(JwtConfig { leeway_seconds: u64::MAX, ..secret_cfg() }).contains("leewaySeconds"));
        assert!(err(JwtConfig { required_claims: vec!["=x".into()], ..secret_cfg() }).contains("requiredClaims[0]"));
        assert!(err(JwtConfig { tenant_claim: Some(" ".into()), ..secret_cfg() }).contains("tenantClaim"));
        assert!(err(JwtConfig { issuer: Some(String::new()), ..secret_cfg() }).contains("issuer"));
    }

    #[tokio::test]
    async fn refresh_jwks_without_url_is_noop() {
        verifier(secret_cfg()).refresh_jwks().await.expect("no-op");
    }

    /// Tiny HTTP server answering every request with the current `body`; counts requests.
    async fn serve(body: Arc<Mutex<String>>, status: &'static str, hits: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                hits.fetch_add(1, Ordering::SeqCst);
                let body = body.lock().expect("body lock").clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}/.well-known/jwks.json")
    }

    #[tokio::test]
    async fn jwks_url_fetch_and_unknown_kid_refresh() {
        let rsa1 = rsa_key(RSA1_PRIVATE);
        let rsa2 = rsa_key(RSA2_PRIVATE);
        let ec = ec_key(EC256_PRIVATE);
        let body = Arc::new(Mutex::new(jwks_json(&[(&rsa1, Algorithm::RS256, "k1")])));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = serve(Arc::clone(&body), "200 OK", Arc::clone(&hits)).await;
        let claims = json!({"sub": "remote"});
        let t1 = sign(Algorithm::RS256, Some("k1"), &rsa1, &claims);
        let t2 = sign(Algorithm::RS256, Some("k2"), &rsa2, &claims);
        let t3 = sign(Algorithm::ES256, Some("e1"), &ec, &claims);

        // Explicit refresh after construction.
        let v = verifier(JwtConfig { jwks_url: Some(url.clone()), ..JwtConfig::default() });
        assert!(matches!(v.verify(&t1), Err(JwtError::UnknownKey)), "nothing loaded yet");
        v.refresh_jwks().await.expect("fetch jwks");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let ok = v.verify(&t1).expect("k1 from url");
        assert_eq!(ok.subject.as_deref(), Some("remote"));

        // The IdP rotates in k2; the sync path does not fetch, the async one is rate-limited
        // (an explicit refresh happened just now).
        *body.lock().expect("body lock") =
            jwks_json(&[(&rsa1, Algorithm::RS256, "k1"), (&rsa2, Algorithm::RS256, "k2")]);
        assert!(matches!(v.verify(&t2), Err(JwtError::UnknownKey)));
        assert!(matches!(v.verify_async(&t2).await, Err(JwtError::UnknownKey)));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "rate limit must prevent a fetch");

        // A fresh verifier fetches lazily on the first unknown kid, then is rate-limited.
        let v = verifier(JwtConfig { jwks_url: Some(url.clone()), ..JwtConfig::default() });
        v.verify_async(&t2).await.expect("k2 after refresh");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        v.verify_async(&t1).await.expect("k1 known, no fetch");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        *body.lock().expect("body lock") = jwks_json(&[(&ec, Algorithm::ES256, "e1")]);
        assert!(matches!(v.verify_async(&t3).await, Err(JwtError::UnknownKey)));
        assert_eq!(hits.load(Ordering::SeqCst), 2, "second unknown kid within 60 s must not fetch");

        // Once the interval has passed, an unknown kid refreshes again and old keys are dropped.
        let mut v = v;
        v.refresh_interval = Duration::ZERO;
        v.verify_async(&t3).await.expect("e1 after second refresh");
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert!(matches!(v.verify(&t1), Err(JwtError::UnknownKey)), "k1 was rotated out");

        // Concurrent unknown-kid requests share one fetch.
        let v = Arc::new(verifier(JwtConfig { jwks_url: Some(url), ..JwtConfig::default() }));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let v = Arc::clone(&v);
                let t3 = t3.clone();
                tokio::spawn(async move { v.verify_async(&t3).await.map(|ok| ok.subject) })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("join").expect("verified").as_deref(), Some("remote"));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn jwks_url_failures_keep_old_keys() {
        let rsa1 = rsa_key(RSA1_PRIVATE);
        let body = Arc::new(Mutex::new(jwks_json(&[(&rsa1, Algorithm::RS256, "k1")])));
        let hits = Arc::new(AtomicUsize::new(0));
        let url = serve(Arc::clone(&body), "200 OK", Arc::clone(&hits)).await;
        let v = verifier(JwtConfig { jwks_url: Some(url), ..JwtConfig::default() });
        v.refresh_jwks().await.expect("first fetch");

        *body.lock().expect("body lock") = "<html>oops</html>".into();
        let err = v.refresh_jwks().await;
        assert!(matches!(err, Err(JwtError::Fetch(ref m)) if m.contains("not a JWKS")), "{err:?}");
        v.verify(&sign(Algorithm::RS256, Some("k1"), &rsa1, &json!({}))).expect("old keys still used");

        let not_found = serve(body, "404 Not Found", Arc::new(AtomicUsize::new(0))).await;
        let v = verifier(JwtConfig { jwks_url: Some(not_found), ..JwtConfig::default() });
        let err = v.refresh_jwks().await;
        assert!(matches!(err, Err(JwtError::Fetch(ref m)) if m.contains("404")), "{err:?}");

        // Nothing listening.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        drop(listener);
        let v = verifier(JwtConfig { jwks_url: Some(dead), ..JwtConfig::default() });
        assert!(matches!(v.refresh_jwks().await, Err(JwtError::Fetch(_))));
        let token = sign(Algorithm::RS256, Some("k1"), &rsa1, &json!({}));
        assert!(matches!(v.verify_async(&token).await, Err(JwtError::UnknownKey)));
        assert!(JwtError::UnknownKey.is_token_error() && !JwtError::Fetch(String::new()).is_token_error());
    }
}

//! Authentication of the one AWS-compatible endpoint: every request must carry a valid AWS
//! Signature Version 4 (header or presigned query) by a known access key, except `GET /metrics`
//! (for Prometheus scrapers). The admin's keys are set at start or made at the first start of a
//! data directory; `--no-auth` (development only) turns the check off.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use quarters_sigv4::{PayloadHash, SignedRequest, SigningKey, VerifyOptions};

use crate::ApiError;

/// Who made a request (in the request's extensions once it is authenticated).
#[derive(Debug, Clone)]
pub enum Caller {
    /// The administrator's key, or a role session from an STS token.
    Principal(quarters_identity::Principal),
    /// Authentication is off (`--no-auth`).
    Anonymous,
}

impl Caller {
    /// The identity layer's view of the caller (authentication off: the administrator).
    pub fn principal(&self) -> quarters_identity::Principal {
        match self {
            Caller::Principal(p) => p.clone(),
            Caller::Anonymous => quarters_identity::Principal::Admin { access_key: String::new() },
        }
    }

    pub fn is_admin(&self) -> bool {
        !matches!(self, Caller::Principal(quarters_identity::Principal::Session(_)))
    }
}

/// A credential scope: access key, date, region, service.
type Scope = (String, String, String, String);

/// The keys the endpoint accepts.
#[derive(Clone, Default)]
pub struct Authenticator {
    /// Secrets (the admin's, and those of the temporary keys this server minted) and sessions.
    /// None with authentication off.
    identity: Option<Arc<quarters_identity::Identity>>,
    enabled: bool,
    /// Signing keys by (access key, date, region, service): deriving one costs four HMACs.
    cache: Arc<std::sync::Mutex<HashMap<Scope, SigningKey>>>,
}

/// The largest body authenticated (a CreateFunction with a 50 MB zip, base64).
const MAX_BODY: usize = quarters_types::limits::CREATE_REQUEST_MAX_BYTES + 1;

impl Authenticator {
    /// Requests are checked against `identity`'s keys (its admin set with `set_admin`).
    pub fn new(identity: Arc<quarters_identity::Identity>) -> Self {
        Authenticator { identity: Some(identity), enabled: true, cache: Default::default() }
    }

    /// Authentication off: every request is served as `Caller::Anonymous`.
    pub fn disabled() -> Self {
        Authenticator::default()
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Check a request's signature; on success the request (with its body restored) carries
    /// its `Caller`.
    pub async fn authenticate(&self, req: Request) -> Result<Request, Denied> {
        if !self.enabled {
            let mut req = req;
            req.extensions_mut().insert(Caller::Anonymous);
            return Ok(req);
        }
        if req.method() == axum::http::Method::GET && req.uri().path() == "/metrics" {
            return Ok(req);
        }
        let Some(identity) = self.identity.clone() else {
            return Err(deny(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "no identity store"));
        };
        let (parts, body) = req.into_parts();
        let body = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => {
                return Err(deny(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "RequestEntityTooLargeException",
                    "The request body is too large",
                ));
            }
        };
        let signed = SignedRequest::from_parts(&parts, PayloadHash::Body(&body));
        let parsed = match quarters_sigv4::parse(&signed) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Err(deny(
                    StatusCode::FORBIDDEN,
                    "MissingAuthenticationTokenException",
                    "Missing Authentication Token",
                ));
            }
            Err(e) => return Err(deny(StatusCode::BAD_REQUEST, e.code(), &e.message())),
        };
        let Some(secret) = identity.secret_for(&parsed.access_key_id) else {
            return Err(deny(
                StatusCode::FORBIDDEN,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ));
        };
        let cache_key =
            (parsed.access_key_id.clone(), parsed.date.clone(), parsed.region.clone(), parsed.service.clone());
        let key = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() > 4096 {
                cache.clear();
            }
            cache
                .entry(cache_key)
                .or_insert_with(|| SigningKey::derive(&secret, &parsed.date, &parsed.region, &parsed.service))
                .clone()
        };
        let now = quarters_types::time::now_ms() / 1000;
        let opts = VerifyOptions::for_service(&parsed.service);
        if let Err(e) = quarters_sigv4::verify_with_key(&signed, &parsed, &key, now, &opts) {
            let code = match e {
                quarters_sigv4::SigV4Error::SignatureDoesNotMatch => "InvalidSignatureException",
                _ => e.code(),
            };
            let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            return Err(deny(status, code, &e.message()));
        }
        let principal = match identity.principal(&parsed.access_key_id, parsed.session_token.as_deref(), now) {
            Ok(p) => p,
            Err(e) => {
                let code = e.aws_code();
                let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN);
                return Err(deny(status, code, &e.to_string()));
            }
        };
        let mut req = Request::from_parts(parts, Body::from(body));
        req.extensions_mut().insert(Caller::Principal(principal));
        Ok(req)
    }
}

/// A refused request: its status, AWS error code and message, rendered in the protocol of the
/// service asked for (JSON for the REST and awsJson services, XML for IAM and STS).
#[derive(Debug)]
pub struct Denied {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Denied {
    /// The awsQuery (IAM, STS) error document.
    pub fn xml(&self) -> Response {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let body = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            self.code,
            esc(&self.message),
            uuid::Uuid::new_v4()
        );
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert("content-type", axum::http::HeaderValue::from_static("text/xml"));
        resp
    }

    pub fn json(&self) -> Response {
        ApiError::new(self.status, self.code, self.message.clone()).into_response()
    }
}

fn deny(status: StatusCode, code: &'static str, message: &str) -> Denied {
    Denied { status, code, message: message.to_owned() }
}

/// The server's master key (`<data dir>/master.key`, 32 random bytes, 0600, made at the first
/// start): temporary keys' secrets and session tokens are derived from and sealed with it.
pub fn master_key(data_dir: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let path = data_dir.join("master.key");
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        return Err(std::io::Error::other(format!("{} is not 32 bytes", path.display())));
    }
    let mut key = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut key[..]);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok(key)
}

/// The admin's keys: given, or read from `<data dir>/admin-credentials`, or made there (0600)
/// at the first start. Returns the keys and whether they were just made (to show them once).
pub fn admin_credentials(
    data_dir: &std::path::Path,
    given: Option<(String, String)>,
) -> std::io::Result<((String, String), bool)> {
    if let Some(k) = given {
        return Ok((k, false));
    }
    let path = data_dir.join("admin-credentials");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut lines = text.lines();
        if let (Some(id), Some(secret)) = (lines.next(), lines.next())
            && !id.is_empty()
            && !secret.is_empty()
        {
            return Ok(((id.to_owned(), secret.to_owned()), false));
        }
    }
    use rand::Rng;
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    let id: String = "AKIA".chars().chain((0..16).map(|_| UPPER[rng.random_range(0..UPPER.len())] as char)).collect();
    let secret: String = (0..40).map(|_| ANY[rng.random_range(0..ANY.len())] as char).collect();
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    writeln!(f, "{id}\n{secret}")?;
    f.sync_all()?;
    Ok(((id, secret), true))
}

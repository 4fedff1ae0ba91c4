//! IAM and STS (awsQuery: form-encoded `POST /`, XML answers) on the one endpoint, for requests
//! whose SigV4 scope names `iam` or `sts`. The operations are `quarters_identity`'s.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

use crate::auth::Caller;
use crate::{App, RequestId};

fn xml(status: u16, body: String) -> Response {
    let status = axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}

/// One awsQuery request of `service` ("iam" or "sts").
pub async fn handle(State(app): State<Arc<App>>, service: &'static str, req: Request) -> Response {
    let caller = req.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous);
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(_) => {
            let e = quarters_identity::IdentityError::MalformedQueryString("the request body is too large".into());
            let (s, b) = app.identity.error_response(service, &e, &request_id);
            return xml(s, b);
        }
    };
    let identity = app.identity.clone();
    let out = tokio::task::spawn_blocking(move || {
        let now = quarters_types::time::now_ms() / 1000;
        match quarters_identity::parse_form(&body) {
            Ok(form) => identity.handle(service, &caller.principal(), &form, &request_id, now),
            Err(e) => identity.error_response(service, &e, &request_id),
        }
    })
    .await;
    match out {
        Ok((s, b)) => xml(s, b),
        Err(e) => xml(500, format!("worker failed: {e}")),
    }
}

/// Where environments' credentials come from: STS sessions minted by the identity layer.
/// - the execution role (the function's `Role`) for every environment, as Lambda does (none when
///   the role does not exist in Quarters' IAM);
/// - beyond Lambda, the tenant role named by the function's `QUARTERS_TENANT_ROLE_ARN`
///   environment variable, tagged `TenantId=<tenant>` (transitive), for the tenant an
///   environment is bound to.
pub struct IdentityCredentials {
    pub identity: Arc<quarters_identity::Identity>,
    pub control: Arc<quarters_control::ControlPlane>,
}

/// Longer than any environment lives (`--max-lifetime` is 2 h by default; an environment is
/// retired before its credentials expire in any case).
const SESSION_SECONDS: u64 = 43_200;

/// The environment variable that names a PER_TENANT function's tenant role.
pub const TENANT_ROLE_VARIABLE: &str = "QUARTERS_TENANT_ROLE_ARN";

fn converted(c: quarters_identity::Credentials) -> quarters_invoke::AwsCredentials {
    quarters_invoke::AwsCredentials {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
        session_token: c.session_token,
        expiration_ms: c.expiration.saturating_mul(1000),
    }
}

/// A session name for a tenant: tenant ids may hold characters a session name may not.
fn tenant_session(tenant: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(tenant.as_bytes());
    format!("tenant-{}", hex::encode(&digest[..8]))
}

impl quarters_invoke::CredentialSource for IdentityCredentials {
    fn execution(&self, function: &str, role_arn: &str) -> Option<quarters_invoke::AwsCredentials> {
        let now = quarters_types::time::now_ms() / 1000;
        let session: String =
            function.chars().filter(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(*c)).take(64).collect();
        match self.identity.mint(role_arn, &session, &[], SESSION_SECONDS, now) {
            Ok(c) => Some(converted(c)),
            Err(e) => {
                tracing::debug!(function, role_arn, "no execution-role credentials: {e}");
                None
            }
        }
    }

    fn tenant(&self, function: &str, tenant: &str) -> Option<quarters_invoke::AwsCredentials> {
        let entry = self.control.get(function).ok()?;
        let role = entry.latest.config.environment.get(TENANT_ROLE_VARIABLE)?.clone();
        let now = quarters_types::time::now_ms() / 1000;
        let tags = [("TenantId".to_string(), tenant.to_string())];
        match self.identity.mint(&role, &tenant_session(tenant), &tags, SESSION_SECONDS, now) {
            Ok(c) => Some(converted(c)),
            Err(e) => {
                tracing::warn!(function, role, "no tenant credentials: {e}");
                None
            }
        }
    }
}

/// The S3 store's keys and decisions, from the identity layer: the admin may do anything; a
/// role session what its role's policies (and its session policy) allow, with its tags as
/// `aws:PrincipalTag/*` — which is how `${aws:PrincipalTag/TenantId}` keeps a tenant in its prefix.
pub struct S3Identity(pub Arc<quarters_identity::Identity>);

impl quarters_s3::Secrets for S3Identity {
    fn secret(&self, access_key: &str) -> Option<String> {
        self.0.secret_for(access_key)
    }
}

impl quarters_s3::Authorizer for S3Identity {
    fn check(&self, req: &quarters_s3::AccessRequest<'_>) -> Result<(), quarters_s3::AccessDenied> {
        let denied = || quarters_s3::AccessDenied::new("Access Denied");
        let key = req.access_key.ok_or_else(denied)?;
        let now = quarters_types::time::now_ms() / 1000;
        let principal =
            self.0.principal(key, req.session_token, now).map_err(|e| quarters_s3::AccessDenied::new(e.to_string()))?;
        let extra: Vec<(&str, &str)> = req.prefix.map(|p| vec![("s3:prefix", p)]).unwrap_or_default();
        match self.0.authorize(&principal, req.action, &req.resource, &extra) {
            quarters_identity::Decision::Allow => Ok(()),
            _ => Err(denied()),
        }
    }

    /// One account owns every bucket, whoever (admin or session) made it.
    fn owner(&self, access_key: Option<&str>, _session_token: Option<&str>) -> Option<String> {
        access_key.map(|_| self.0.account().to_owned())
    }
}

//! The API gateway: AWS API Gateway REST (v1) resources, stored and served. The management
//! API's wire shapes live in `quarters-api`; this crate holds the model, its store, and the
//! data plane's pure parts (routing, parameter mapping, proxy events, authorizer policies,
//! JWTs, throttles and quotas).

pub mod dataplane;
pub mod jwt;
pub mod mgmt;
pub mod policy;
pub mod proxy;
pub mod routes;
pub mod store;
pub mod throttle;

use std::collections::BTreeMap;

/// A request as the data plane received it, after the stage (or base path) is taken off.
#[derive(Debug, Clone, Default)]
pub struct InboundRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path within the stage, starting with `/` (`/orders/42`), percent-decoded.
    pub path: String,
    /// The raw query string, without `?` (may be empty).
    pub raw_query: String,
    /// Headers in the order received, names as received.
    pub headers: Vec<(String, String)>,
    pub body: bytes::Bytes,
    pub source_ip: String,
}

/// The resource a request matched.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub resource_id: String,
    /// The resource's template, such as `/orders/{id}` or `/{proxy+}`.
    pub resource_path: String,
    /// `{id}` → `42`; `{proxy+}` binds the rest of the path under `proxy`.
    pub path_params: BTreeMap<String, String>,
}

/// What an authorizer (Lambda or JWT) said about a request.
#[derive(Debug, Clone, Default)]
pub struct AuthorizerResult {
    pub principal_id: Option<String>,
    /// `context` values, each a string, number or boolean.
    pub context: serde_json::Map<String, serde_json::Value>,
    /// JWT claims, for a JWT authorizer (appear as `requestContext.authorizer.claims`).
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The API key the authorizer chose (`usageIdentifierKey`).
    pub usage_identifier_key: Option<String>,
}

/// Everything about a request that is not in the request itself.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub account_id: String,
    pub region: String,
    pub api_id: String,
    pub stage: String,
    pub stage_variables: BTreeMap<String, String>,
    /// The Host the client used (`abc123.execute-api.localhost`, `blue.api.example.test`).
    pub domain_name: String,
    /// Its first label (`blue` for `blue.api.example.test`).
    pub domain_prefix: String,
    pub request_id: String,
    /// Epoch milliseconds.
    pub request_time_ms: u64,
    pub authorizer: Option<AuthorizerResult>,
    /// The API key used, if any: (key id, key value).
    pub api_key: Option<(String, String)>,
}

/// An HTTP response the data plane sends back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Errors of the gateway's management layer; `quarters-api` maps them to API Gateway's
/// error shapes (`NotFoundException`, `BadRequestException`, `ConflictException`).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("gateway store: {0}")]
    Db(#[from] rusqlite::Error),
}

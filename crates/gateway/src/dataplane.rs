//! The gateway's data plane (`--gateway-listen`): from an HTTP request to a function
//! invocation and back, as API Gateway REST APIs do. A request is matched to an API and a
//! stage (by path `/restapis/{id}/{stage}/_user_request_/...`, by `Host: {id}.execute-api.*`,
//! or by a custom domain and its base path mappings), then to a resource and method of the
//! stage's deployment; then the request validator, the authorizer (Lambda TOKEN/REQUEST, with
//! its result cached for the TTL, or JWT), the API key and its usage plan (throttle, quota),
//! and the integration (Lambda proxy, Lambda custom, or mock) run in that order.
//!
//! What is served is compiled from the store and recompiled when the store's generation moves.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tracing::{debug, warn};

use crate::policy::{AuthorizerOutput, Decision, INVOKE_ACTION};
use crate::proxy::{self, Source};
use crate::routes::Node;
use crate::store::{Kind, Store};
use crate::throttle::{Limiter, Period};
use crate::{AuthorizerResult, GatewayError, HttpResponse, InboundRequest, RequestContext, RouteMatch};

/// How a function invocation went, as the data plane needs it.
#[derive(Debug)]
pub enum InvokeOutcome {
    Ok {
        payload: Bytes,
        function_error: bool,
    },
    Throttled,
    /// The function does not exist, the tenant id is invalid...: a 500 to the client.
    Failed(String),
}

pub type InvokeFuture = Pin<Box<dyn Future<Output = InvokeOutcome> + Send>>;

/// Invokes functions for the gateway (implemented by `quarters-api` on the invoke path).
pub trait Invoker: Send + Sync + 'static {
    /// `function`: a name or ARN, optionally qualified. `tenant`: the `X-Amz-Tenant-Id`.
    fn invoke(&self, function: String, tenant: Option<String>, payload: Bytes, request_id: String) -> InvokeFuture;
}

/// Settings of the data plane.
#[derive(Debug, Clone)]
pub struct Settings {
    pub region: String,
    pub account: String,
    /// `Host: {api}.execute-api.<domain>` selects an API.
    pub domain: String,
}

// ---- compiled state ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ParamKind {
    Header,
    Query,
    Path,
}

struct Integration {
    kind: IntegrationKind,
    function: String,
    timeout: Duration,
    params: Vec<(ParamKind, String, Source)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntegrationKind {
    /// `AWS_PROXY`, payload format 1.0 (REST APIs).
    Proxy,
    /// `AWS_PROXY` with `payloadFormatVersion: "2.0"` (HTTP APIs' format; a Quarters extension
    /// for REST APIs, set through the app file or the JSON API).
    ProxyV2,
    Custom,
    Mock,
}

struct Method {
    authorizer: Option<String>,
    api_key_required: bool,
    /// Required method request parameters, when a validator checks them.
    required: Vec<(ParamKind, String)>,
    integration: Integration,
}

enum AuthorizerKind {
    Token { function: String },
    Request { function: String },
    Jwt(Box<crate::jwt::JwtVerifier>),
}

struct Authorizer {
    kind: AuthorizerKind,
    /// Identity sources: `method.request.header.X`, `method.request.querystring.X`, ...
    sources: Vec<Source>,
    ttl: Duration,
}

struct Stage {
    api_id: String,
    name: String,
    variables: BTreeMap<String, String>,
    key_from_authorizer: bool,
    routes: Node<Method>,
    authorizers: HashMap<String, Authorizer>,
}

struct Plan {
    id: String,
    throttle: Option<(f64, u32)>,
    /// `"/path/METHOD"` → (rate, burst).
    method_throttle: HashMap<String, (f64, u32)>,
    quota: Option<(u64, Period, u32)>,
}

struct Key {
    id: String,
    enabled: bool,
}

/// A domain's base path mappings: (base path or "", api id, stage or None).
type Mappings = Vec<(String, String, Option<String>)>;

#[derive(Default)]
struct Compiled {
    generation: u64,
    /// (api id, stage name) → stage.
    stages: HashMap<(String, String), Arc<Stage>>,
    /// Exact custom domains and wildcard suffixes (`api.example.test` for `*.api.example.test`),
    /// each with its base path mappings: (base path or "", api, stage or None).
    domains: HashMap<String, Mappings>,
    wildcards: Vec<(String, Mappings)>,
    keys: HashMap<String, Key>,
    /// (key id, api id, stage) → plan.
    plans: HashMap<(String, String, String), Arc<Plan>>,
}

fn param_kind(expr: &str) -> Option<(ParamKind, &str)> {
    for (p, k) in [
        ("method.request.header.", ParamKind::Header),
        ("method.request.querystring.", ParamKind::Query),
        ("method.request.path.", ParamKind::Path),
        ("integration.request.header.", ParamKind::Header),
        ("integration.request.querystring.", ParamKind::Query),
        ("integration.request.path.", ParamKind::Path),
    ] {
        if let Some(name) = expr.strip_prefix(p) {
            return Some((k, name));
        }
    }
    None
}

fn throttle_of(v: Option<&Value>) -> Option<(f64, u32)> {
    let t = v?;
    let rate = t.get("rateLimit").and_then(Value::as_f64)?;
    let burst = t.get("burstLimit").and_then(Value::as_u64).unwrap_or(rate.ceil() as u64);
    Some((rate, u32::try_from(burst).unwrap_or(u32::MAX)))
}

fn compile(store: &Store) -> Result<Compiled, GatewayError> {
    let generation = store.generation();
    let mut c = Compiled { generation, ..Default::default() };
    for api in store.list(Kind::RestApi, "")? {
        let Some(api_id) = api.get("id").and_then(Value::as_str) else { continue };
        let deployments: HashMap<String, Value> = store
            .list(Kind::Deployment, api_id)?
            .into_iter()
            .filter_map(|d| Some((d.get("id")?.as_str()?.to_string(), d)))
            .collect();
        for st in store.list(Kind::Stage, api_id)? {
            let Some(name) = st.get("stageName").and_then(Value::as_str) else { continue };
            let Some(dep) = st.get("deploymentId").and_then(Value::as_str).and_then(|d| deployments.get(d)) else {
                continue;
            };
            match compile_stage(api_id, name, &st, dep) {
                Ok(stage) => {
                    c.stages.insert((api_id.to_string(), name.to_string()), Arc::new(stage));
                }
                Err(e) => warn!(api = api_id, stage = name, "cannot serve this stage: {e}"),
            }
        }
    }
    for d in store.list(Kind::DomainName, "")? {
        let Some(name) = d.get("domainName").and_then(Value::as_str) else { continue };
        let maps: Vec<_> = store
            .list(Kind::BasePathMapping, name)?
            .iter()
            .filter_map(|m| {
                let base = m.get("basePath")?.as_str()?;
                let base = if base == "(none)" { String::new() } else { base.trim_matches('/').to_string() };
                Some((
                    base,
                    m.get("restApiId")?.as_str()?.to_string(),
                    m.get("stage").and_then(Value::as_str).map(String::from),
                ))
            })
            .collect();
        match name.strip_prefix("*.") {
            Some(suffix) => c.wildcards.push((suffix.to_string(), maps)),
            None => {
                c.domains.insert(name.to_string(), maps);
            }
        }
    }
    // Longer wildcard suffixes are more specific.
    c.wildcards.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    for k in store.list(Kind::ApiKey, "")? {
        let (Some(id), Some(value)) = (k.get("id").and_then(Value::as_str), k.get("value").and_then(Value::as_str))
        else {
            continue;
        };
        let enabled = k.get("enabled").and_then(Value::as_bool).unwrap_or(false);
        c.keys.insert(value.to_string(), Key { id: id.to_string(), enabled });
    }
    for plan in store.list(Kind::UsagePlan, "")? {
        let Some(pid) = plan.get("id").and_then(Value::as_str) else { continue };
        let quota = plan.get("quota").and_then(|q| {
            let period = match q.get("period")?.as_str()? {
                "DAY" => Period::Day,
                "WEEK" => Period::Week,
                "MONTH" => Period::Month,
                _ => return None,
            };
            Some((q.get("limit")?.as_u64()?, period, q.get("offset").and_then(Value::as_u64).unwrap_or(0) as u32))
        });
        let keys = store.list(Kind::UsagePlanKey, pid)?;
        for st in plan.get("apiStages").and_then(Value::as_array).into_iter().flatten() {
            let (Some(api), Some(stage)) =
                (st.get("apiId").and_then(Value::as_str), st.get("stage").and_then(Value::as_str))
            else {
                continue;
            };
            let method_throttle = st
                .get("throttle")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), throttle_of(Some(v))?)))
                .collect();
            let p = Arc::new(Plan {
                id: pid.to_string(),
                throttle: throttle_of(plan.get("throttle")),
                method_throttle,
                quota,
            });
            for k in &keys {
                if let Some(kid) = k.get("id").and_then(Value::as_str) {
                    c.plans.insert((kid.to_string(), api.to_string(), stage.to_string()), p.clone());
                }
            }
        }
    }
    Ok(c)
}

fn compile_stage(api_id: &str, name: &str, stage: &Value, dep: &Value) -> Result<Stage, GatewayError> {
    let snap = dep.get("_snapshot").ok_or_else(|| GatewayError::Internal("deployment without a snapshot".into()))?;
    let validators: HashMap<&str, bool> = snap
        .get("validators")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v.get("id")?.as_str()?, v.get("validateRequestParameters")?.as_bool()?)))
        .collect();
    let mut authorizers = HashMap::new();
    for a in snap.get("authorizers").and_then(Value::as_array).into_iter().flatten() {
        let Some(id) = a.get("id").and_then(Value::as_str) else { continue };
        let function = a
            .get("authorizerUri")
            .and_then(Value::as_str)
            .and_then(crate::mgmt::function_of_uri)
            .map(String::from)
            .unwrap_or_default();
        let kind = match a.get("type").and_then(Value::as_str) {
            Some("TOKEN") => AuthorizerKind::Token { function },
            Some("REQUEST") => AuthorizerKind::Request { function },
            Some("JWT") => {
                let cfg = crate::mgmt::jwt_config(a)?;
                AuthorizerKind::Jwt(Box::new(
                    crate::jwt::JwtVerifier::new(cfg).map_err(|e| GatewayError::BadRequest(e.to_string()))?,
                ))
            }
            _ => continue,
        };
        let sources = a
            .get("identitySource")
            .and_then(Value::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Source::parse(s).map_err(|e| GatewayError::BadRequest(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let ttl = Duration::from_secs(a.get("authorizerResultTtlInSeconds").and_then(Value::as_u64).unwrap_or(300));
        authorizers.insert(id.to_string(), Authorizer { kind, sources, ttl });
    }
    let mut routes = Node::new();
    for r in snap.get("resources").and_then(Value::as_array).into_iter().flatten() {
        let (Some(rid), Some(path)) = (r.get("id").and_then(Value::as_str), r.get("path").and_then(Value::as_str))
        else {
            continue;
        };
        let mut methods = HashMap::new();
        for (verb, m) in r.get("resourceMethods").and_then(Value::as_object).into_iter().flatten() {
            let Some(integ) = m.get("methodIntegration") else { continue };
            let v2 = integ.get("payloadFormatVersion").and_then(Value::as_str) == Some("2.0");
            let kind = match integ.get("type").and_then(Value::as_str) {
                Some("AWS_PROXY") if v2 => IntegrationKind::ProxyV2,
                Some("AWS_PROXY") => IntegrationKind::Proxy,
                Some("AWS") => IntegrationKind::Custom,
                _ => IntegrationKind::Mock,
            };
            let function = integ
                .get("uri")
                .and_then(Value::as_str)
                .and_then(crate::mgmt::function_of_uri)
                .map(String::from)
                .unwrap_or_default();
            let mut params = Vec::new();
            for (target, expr) in integ.get("requestParameters").and_then(Value::as_object).into_iter().flatten() {
                let (Some((kind, name)), Some(expr)) = (param_kind(target), expr.as_str()) else { continue };
                let src = Source::parse(expr).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
                params.push((kind, name.to_string(), src));
            }
            let validate = m
                .get("requestValidatorId")
                .and_then(Value::as_str)
                .and_then(|v| validators.get(v).copied())
                .unwrap_or(false);
            let required = if validate {
                m.get("requestParameters")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter(|(_, req)| req.as_bool() == Some(true))
                    .filter_map(|(k, _)| param_kind(k).map(|(kind, n)| (kind, n.to_string())))
                    .collect()
            } else {
                Vec::new()
            };
            let authorizer = match m.get("authorizationType").and_then(Value::as_str) {
                Some("CUSTOM" | "COGNITO_USER_POOLS") => {
                    m.get("authorizerId").and_then(Value::as_str).map(String::from)
                }
                _ => None,
            };
            methods.insert(
                verb.clone(),
                Method {
                    authorizer,
                    api_key_required: m.get("apiKeyRequired").and_then(Value::as_bool).unwrap_or(false),
                    required,
                    integration: Integration {
                        kind,
                        function,
                        timeout: Duration::from_millis(
                            integ.get("timeoutInMillis").and_then(Value::as_u64).unwrap_or(29_000),
                        ),
                        params,
                    },
                },
            );
        }
        routes.insert(path, rid, methods);
    }
    let variables = stage
        .get("variables")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    Ok(Stage {
        api_id: api_id.to_string(),
        name: name.to_string(),
        variables,
        key_from_authorizer: snap.get("apiKeySource").and_then(Value::as_str) == Some("AUTHORIZER"),
        routes,
        authorizers,
    })
}

// ---- the gateway ----

/// A cached authorizer answer.
#[derive(Clone)]
enum Cached {
    Lambda(Arc<AuthorizerOutput>),
    Unauthorized,
}

pub struct Gateway {
    store: Arc<Store>,
    invoker: Arc<dyn Invoker>,
    settings: Settings,
    compiled: RwLock<Arc<Compiled>>,
    auth_cache: Mutex<HashMap<(String, String), (Instant, Cached)>>,
    limiter: Limiter<(String, String, String)>,
    /// Requests per (plan, key, day start) not yet written to the store.
    pending: Mutex<HashMap<(String, String, u64), u64>>,
    /// Requests per (plan, key, period start) counted against the quota: loaded from the store
    /// at first use, then kept here.
    quota_used: Mutex<HashMap<(String, String, u64), u64>>,
}

/// A gateway error response: status, `x-amzn-ErrorType`, and the JSON body.
fn error(status: u16, kind: &str, body: Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into()), ("x-amzn-ErrorType".into(), kind.into())],
        body: body.to_string().into_bytes(),
    }
}

fn forbidden() -> HttpResponse {
    error(403, "ForbiddenException", json!({"message": "Forbidden"}))
}

fn missing_token() -> HttpResponse {
    error(403, "MissingAuthenticationTokenException", json!({"message": "Missing Authentication Token"}))
}

fn unauthorized() -> HttpResponse {
    error(401, "UnauthorizedException", json!({"message": "Unauthorized"}))
}

fn internal() -> HttpResponse {
    error(500, "InternalServerErrorException", json!({"message": "Internal server error"}))
}

fn authorizer_failure() -> HttpResponse {
    error(500, "AuthorizerConfigurationException", json!({"message": null}))
}

const DAY_MS: u64 = 86_400_000;

impl Gateway {
    pub fn new(store: Arc<Store>, invoker: Arc<dyn Invoker>, settings: Settings) -> Arc<Gateway> {
        Arc::new(Gateway {
            store,
            invoker,
            settings,
            compiled: RwLock::new(Arc::new(Compiled::default())),
            auth_cache: Mutex::new(HashMap::new()),
            limiter: Limiter::new(),
            pending: Mutex::new(HashMap::new()),
            quota_used: Mutex::new(HashMap::new()),
        })
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What is served now, recompiled if the store changed.
    fn current(&self) -> Arc<Compiled> {
        let now = self.store.generation();
        {
            let c = self.compiled.read().unwrap_or_else(|p| p.into_inner());
            if c.generation == now {
                return c.clone();
            }
        }
        match compile(&self.store) {
            Ok(c) => {
                let c = Arc::new(c);
                *self.compiled.write().unwrap_or_else(|p| p.into_inner()) = c.clone();
                // Cached authorizer answers may name authorizers that changed.
                self.auth_cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
                c
            }
            Err(e) => {
                warn!("cannot compile the gateway's APIs: {e}");
                self.compiled.read().unwrap_or_else(|p| p.into_inner()).clone()
            }
        }
    }

    /// FlushStageAuthorizersCache: forget every cached authorizer answer.
    pub fn flush_authorizer_cache(&self) {
        self.auth_cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Requests not yet in the store, for GetUsage.
    pub fn pending_usage(&self, plan: &str, key: &str, day: u64) -> u64 {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(plan.to_string(), key.to_string(), day))
            .copied()
            .unwrap_or(0)
    }

    /// Write counted requests to the store (every second, and at shutdown).
    pub fn flush_usage(&self) {
        let batch: Vec<(String, String, u64, u64)> = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.drain().map(|((plan, key, day), n)| (plan, key, day, n)).collect()
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.add_usage(&batch) {
            warn!("cannot store API key usage: {e}");
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (plan, key, day, n) in batch {
                *p.entry((plan, key, day)).or_default() += n;
            }
        }
        let now = Instant::now();
        self.limiter.retain_recent(Duration::from_secs(300), now);
        let mut cache = self.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (exp, _)| *exp > now);
    }

    /// Which API, stage and path a request is for, and the domain it came through.
    fn locate(&self, c: &Compiled, host: &str, path: &str) -> Option<(Arc<Stage>, String, String)> {
        let host = host.split(':').next().unwrap_or("").to_ascii_lowercase();
        let prefix = host.split('.').next().unwrap_or("").to_string();
        if let Some(rest) = path.strip_prefix("/restapis/") {
            let mut parts = rest.splitn(3, '/');
            let (api, stage, tail) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
            let tail = tail.strip_prefix("_user_request_").unwrap_or(tail);
            let st = c.stages.get(&(api.to_string(), stage.to_string()))?;
            return Some((st.clone(), format!("/{}", tail.trim_start_matches('/')), prefix));
        }
        if let Some(api) =
            host.strip_suffix(&format!(".execute-api.{}", self.settings.domain)).filter(|a| !a.contains('.'))
        {
            let rest = path.trim_start_matches('/');
            let (stage, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let st = c.stages.get(&(api.to_string(), stage.to_string()))?;
            return Some((st.clone(), format!("/{tail}"), prefix));
        }
        let maps = c.domains.get(&host).or_else(|| {
            c.wildcards
                .iter()
                .find(|(suffix, _)| host.strip_suffix(suffix.as_str()).is_some_and(|p| p.ends_with('.') && p.len() > 1))
                .map(|(_, m)| m)
        })?;
        let rest = path.trim_start_matches('/');
        // The longest base path that prefixes the path, else the empty one.
        let (base, api, stage) = maps
            .iter()
            .filter(|(b, _, _)| b.is_empty() || rest == b || rest.starts_with(&format!("{b}/")))
            .max_by_key(|(b, _, _)| b.len())?;
        let after = rest[base.len()..].trim_start_matches('/');
        let (stage, tail) = match stage {
            Some(s) => (s.as_str(), after),
            None => after.split_once('/').unwrap_or((after, "")),
        };
        let st = c.stages.get(&(api.clone(), stage.to_string()))?;
        Some((st.clone(), format!("/{tail}"), prefix))
    }

    /// Serve one request.
    pub async fn handle(&self, mut req: InboundRequest, host: &str, full_path: &str) -> HttpResponse {
        let c = self.current();
        let Some((stage, path, prefix)) = self.locate(&c, host, full_path) else {
            return forbidden();
        };
        req.path = path;
        // A client cannot smuggle reserved headers (X-Amz-Tenant-Id above all) to the function.
        req.headers.retain(|(k, _)| !proxy::is_reserved_header(k));
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut ctx = RequestContext {
            account_id: self.settings.account.clone(),
            region: self.settings.region.clone(),
            api_id: stage.api_id.clone(),
            stage: stage.name.clone(),
            stage_variables: stage.variables.clone(),
            domain_name: host.split(':').next().unwrap_or("").to_string(),
            domain_prefix: prefix,
            request_id: request_id.clone(),
            request_time_ms: quarters_types::time::now_ms(),
            authorizer: None,
            api_key: None,
        };
        let Some((route, method)) = stage.routes.find(&req.path, &req.method) else {
            return missing_token();
        };
        let mut resp = self.serve_method(&c, &stage, &req, &route, method, &mut ctx).await;
        resp.headers.push(("x-amzn-RequestId".into(), request_id));
        resp
    }

    async fn serve_method(
        &self,
        c: &Compiled,
        stage: &Stage,
        req: &InboundRequest,
        route: &RouteMatch,
        method: &Method,
        ctx: &mut RequestContext,
    ) -> HttpResponse {
        // Required request parameters (with a validator that checks them).
        let missing: Vec<&str> = method
            .required
            .iter()
            .filter(|(kind, name)| match kind {
                ParamKind::Header => !req.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)),
                ParamKind::Query => !query_has(&req.raw_query, name),
                ParamKind::Path => !route.path_params.contains_key(name),
            })
            .map(|(_, n)| n.as_str())
            .collect();
        if !missing.is_empty() {
            return error(
                400,
                "BadRequestException",
                json!({"message": format!("Missing required request parameters: [{}]", missing.join(", "))}),
            );
        }
        // The authorizer.
        if let Some(az_id) = &method.authorizer {
            let Some(az) = stage.authorizers.get(az_id) else { return authorizer_failure() };
            match self.authorize(stage, az_id, az, req, route, ctx).await {
                Ok(result) => ctx.authorizer = Some(result),
                Err(resp) => return resp,
            }
        }
        // The API key and its usage plan.
        if method.api_key_required {
            let value = if stage.key_from_authorizer {
                ctx.authorizer.as_ref().and_then(|a| a.usage_identifier_key.clone())
            } else {
                req.headers.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case("x-api-key")).map(|(_, v)| v.clone())
            };
            let Some(value) = value else { return forbidden() };
            let Some(key) = c.keys.get(&value).filter(|k| k.enabled) else { return forbidden() };
            let Some(plan) = c.plans.get(&(key.id.clone(), stage.api_id.clone(), stage.name.clone())) else {
                return forbidden();
            };
            let method_key = format!("{}/{}", route.resource_path, req.method);
            let limit = plan.method_throttle.get(&method_key).copied().or(plan.throttle);
            if let Some((rate, burst)) = limit {
                let bucket = (plan.id.clone(), key.id.clone(), method_key);
                if !self.limiter.check(&bucket, rate, burst, Instant::now()) {
                    return error(429, "TooManyRequestsException", json!({"message": "Too Many Requests"}));
                }
            }
            if !self.count_quota(plan, &key.id) {
                return error(429, "LimitExceededException", json!({"message": "Limit Exceeded"}));
            }
            ctx.api_key = Some((key.id.clone(), value));
        }
        self.integrate(stage, req, route, method, ctx).await
    }

    /// Count one request against the key's quota; false when the quota is spent.
    fn count_quota(&self, plan: &Plan, key: &str) -> bool {
        let now = quarters_types::time::now_ms();
        let day = now - now % DAY_MS;
        if let Some((limit, period, offset)) = plan.quota {
            let start = crate::throttle::period_start(period, offset, now);
            let k = (plan.id.clone(), key.to_string(), start);
            let mut used = self.quota_used.lock().unwrap_or_else(|p| p.into_inner());
            let n = match used.get_mut(&k) {
                Some(n) => n,
                None => {
                    let stored: u64 = self
                        .store
                        .usage(&plan.id, Some(key), start, now)
                        .map(|rows| rows.iter().map(|(_, _, n)| *n).sum())
                        .unwrap_or(0);
                    let pending: u64 = self
                        .pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|((p, kk, d), _)| p == &plan.id && kk == key && *d >= start)
                        .map(|(_, n)| *n)
                        .sum();
                    used.entry(k).or_insert(stored + pending)
                }
            };
            if *n >= limit {
                return false;
            }
            *n += 1;
        }
        *self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((plan.id.clone(), key.to_string(), day))
            .or_default() += 1;
        true
    }

    async fn authorize(
        &self,
        stage: &Stage,
        az_id: &str,
        az: &Authorizer,
        req: &InboundRequest,
        route: &RouteMatch,
        ctx: &RequestContext,
    ) -> Result<AuthorizerResult, HttpResponse> {
        let mut identity = Vec::with_capacity(az.sources.len());
        for s in &az.sources {
            match s.eval(req, route, ctx).filter(|v| !v.is_empty()) {
                Some(v) => identity.push(v),
                // A missing identity source: 401 without calling the authorizer.
                None => return Err(unauthorized()),
            }
        }
        let method_arn = crate::policy::method_arn(
            &self.settings.region,
            &self.settings.account,
            &stage.api_id,
            &stage.name,
            &req.method,
            req.path.trim_start_matches('/'),
        );
        if let AuthorizerKind::Jwt(verifier) = &az.kind {
            let token = identity.first().map(String::as_str).unwrap_or("");
            return match verifier.verify_async(token).await {
                Ok(v) => {
                    let mut context = serde_json::Map::new();
                    if let Some(t) = &v.tenant {
                        context.insert("tenantId".into(), json!(t));
                    }
                    Ok(AuthorizerResult {
                        principal_id: v.subject.clone(),
                        context,
                        claims: Some(v.claims),
                        usage_identifier_key: None,
                    })
                }
                Err(e) => {
                    debug!("JWT refused: {e}");
                    Err(unauthorized())
                }
            };
        }
        let cache_key = (az_id.to_string(), identity.join("\u{1f}"));
        let cached = if az.ttl.is_zero() {
            None
        } else {
            let cache = self.auth_cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.get(&cache_key).filter(|(exp, _)| *exp > Instant::now()).map(|(_, c)| c.clone())
        };
        let answer = match cached {
            Some(c) => c,
            None => {
                let (function, event) = match &az.kind {
                    AuthorizerKind::Token { function } => (
                        function,
                        proxy::token_authorizer_event(identity.first().map(String::as_str).unwrap_or(""), &method_arn),
                    ),
                    AuthorizerKind::Request { function } => {
                        (function, proxy::request_authorizer_event(req, route, ctx, &method_arn))
                    }
                    AuthorizerKind::Jwt(_) => return Err(authorizer_failure()),
                };
                let out = self
                    .invoker
                    .invoke(function.clone(), None, Bytes::from(event.to_string()), uuid::Uuid::new_v4().to_string())
                    .await;
                let answer = match out {
                    InvokeOutcome::Ok { payload, function_error: true } => {
                        // `throw new Error("Unauthorized")` / `raise Exception("Unauthorized")`.
                        let msg = serde_json::from_slice::<Value>(&payload)
                            .ok()
                            .and_then(|v| v.get("errorMessage").and_then(Value::as_str).map(String::from));
                        if msg.as_deref() == Some("Unauthorized") {
                            Cached::Unauthorized
                        } else {
                            warn!(authorizer = az_id, "the authorizer failed: {}", String::from_utf8_lossy(&payload));
                            return Err(authorizer_failure());
                        }
                    }
                    InvokeOutcome::Ok { payload, function_error: false } => match AuthorizerOutput::parse(&payload) {
                        Ok(o) => Cached::Lambda(Arc::new(o)),
                        Err(e) => {
                            warn!(authorizer = az_id, "the authorizer's answer is malformed: {e}");
                            return Err(authorizer_failure());
                        }
                    },
                    InvokeOutcome::Throttled | InvokeOutcome::Failed(_) => return Err(authorizer_failure()),
                };
                if !az.ttl.is_zero() {
                    self.auth_cache
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(cache_key, (Instant::now() + az.ttl, answer.clone()));
                }
                answer
            }
        };
        let out = match answer {
            Cached::Unauthorized => return Err(unauthorized()),
            Cached::Lambda(o) => o,
        };
        match out.policy.evaluate(INVOKE_ACTION, &method_arn) {
            Decision::Allow => Ok(AuthorizerResult {
                principal_id: out.principal_id.clone(),
                context: out.context.clone(),
                claims: None,
                usage_identifier_key: out.usage_identifier_key.clone(),
            }),
            Decision::Deny => Err(error(
                403,
                "AccessDeniedException",
                json!({"Message": "User is not authorized to access this resource with an explicit deny"}),
            )),
            Decision::NotAllowed => Err(error(
                403,
                "AccessDeniedException",
                json!({"Message": "User is not authorized to access this resource"}),
            )),
        }
    }

    async fn integrate(
        &self,
        _stage: &Stage,
        req: &InboundRequest,
        route: &RouteMatch,
        method: &Method,
        ctx: &RequestContext,
    ) -> HttpResponse {
        let integ = &method.integration;
        if integ.kind == IntegrationKind::Mock {
            return HttpResponse {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: Vec::new(),
            };
        }
        let mut tenant = None;
        let mut function = integ.function.clone();
        for (kind, name, src) in &integ.params {
            let Some(v) = src.eval(req, route, ctx) else { continue };
            match kind {
                ParamKind::Header if name.eq_ignore_ascii_case("x-amz-tenant-id") => tenant = Some(v),
                // A stage variable in the function's ARN (`...:function:${stageVariables.fn}`)
                // is the common use; other integration parameters have nowhere to go in a
                // Lambda invocation.
                _ => {}
            }
        }
        if function.contains("${stageVariables.") {
            for (k, v) in &ctx.stage_variables {
                function = function.replace(&format!("${{stageVariables.{k}}}"), v);
            }
        }
        let payload = match integ.kind {
            IntegrationKind::Proxy => Bytes::from(proxy::event_v1(req, route, ctx).to_string()),
            IntegrationKind::ProxyV2 => Bytes::from(proxy::event_v2(req, route, ctx).to_string()),
            _ if req.body.iter().all(u8::is_ascii_whitespace) => Bytes::from_static(b"{}"),
            _ => req.body.clone(),
        };
        let call = self.invoker.invoke(function, tenant, payload, ctx.request_id.clone());
        let out = match tokio::time::timeout(integ.timeout, call).await {
            Ok(o) => o,
            Err(_) => {
                return error(504, "IntegrationTimeoutException", json!({"message": "Endpoint request timed out"}));
            }
        };
        match out {
            InvokeOutcome::Ok { payload, function_error } => match integ.kind {
                IntegrationKind::Proxy | IntegrationKind::ProxyV2 if function_error => {
                    proxy::malformed_gateway_response()
                }
                IntegrationKind::ProxyV2 => proxy::response_v2(&payload),
                IntegrationKind::Proxy => match proxy::response_v1(&payload) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!("malformed Lambda proxy response: {e}");
                        proxy::malformed_gateway_response()
                    }
                },
                _ => HttpResponse {
                    status: 200,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: payload.to_vec(),
                },
            },
            InvokeOutcome::Throttled => error(429, "TooManyRequestsException", json!({"message": "Too Many Requests"})),
            InvokeOutcome::Failed(why) => {
                warn!("the integration failed: {why}");
                internal()
            }
        }
    }
}

fn query_has(raw: &str, name: &str) -> bool {
    raw.split('&').any(|kv| kv.split('=').next() == Some(name))
}

// ---- the HTTP server ----

/// Serve the data plane on a listener until `shutdown` resolves.
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let flusher = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let g = gw.clone();
                let _ = tokio::task::spawn_blocking(move || g.flush_usage()).await;
            }
        })
    };
    let app = axum::Router::new().fallback(handler).with_state(gw.clone());
    let result = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await;
    flusher.abort();
    gw.flush_usage();
    result
}

async fn handler(
    axum::extract::State(gw): axum::extract::State<Arc<Gateway>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    req: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, 10 * 1024 * 1024).await {
        Ok(b) => b,
        Err(_) => {
            return to_response(error(413, "RequestTooLargeException", json!({"message": "Request Too Long"})));
        }
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host())
        .unwrap_or("")
        .to_string();
    let full_path = percent_decode(parts.uri.path());
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let inbound = InboundRequest {
        method: parts.method.as_str().to_string(),
        path: String::new(),
        raw_query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body,
        source_ip: peer.ip().to_string(),
    };
    to_response(gw.handle(inbound, &host, &full_path).await)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn to_response(r: HttpResponse) -> axum::response::Response {
    let mut resp = axum::response::Response::new(axum::body::Body::from(r.body));
    *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(k.as_bytes()), http::HeaderValue::from_str(&v)) {
            h.append(k, v);
        }
    }
    resp
}

//! Quarters' HTTP edge: the AWS Lambda API (and Quarters' own API under `/quarters/v1`) on
//! one listener. Protocol types live here and nowhere else; errors of every layer become
//! AWS-shaped responses in [`error`].

pub mod apigateway;
pub mod auth;
pub mod cwlogs;
mod error;
pub mod events;
pub mod identity;
mod lambda;
mod layers;
mod quarters;
pub mod service;
mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
pub use error::ApiError;
use quarters_control::ControlPlane;
use quarters_invoke::Manager;
use quarters_telemetry::LogStore;

/// Everything the handlers share.
pub struct App {
    pub control: Arc<ControlPlane>,
    pub manager: Manager,
    pub logs: Arc<LogStore>,
    /// The durable queue of asynchronous (Event) invocations.
    pub events: quarters_events::EventQueue,
    /// Container images of `PackageType: Image` functions.
    pub images: Arc<quarters_image::ImageStore>,
    /// Invocation metrics by function and tenant (`GET /metrics`).
    pub metrics: Arc<quarters_telemetry::metrics::Metrics>,
    /// Logs Insights queries, running and finished.
    pub queries: Arc<cwlogs::Queries>,
    /// Usage per tenant per hour, for billing.
    pub usage: Arc<quarters_telemetry::usage::UsageMeter>,
    /// How clients reach this server, for URLs in responses.
    pub base_url: String,
    /// The API gateway: its store (managed here) and its data plane (`--gateway-listen`).
    pub gateway: Arc<quarters_gateway::dataplane::Gateway>,
    /// SigV4 verification of every request (or none, with `--no-auth`).
    pub auth: auth::Authenticator,
    /// IAM roles, STS sessions and the keys they sign with.
    pub identity: Arc<quarters_identity::Identity>,
    /// The S3-compatible store (requests whose SigV4 scope names `s3`; it checks their
    /// signatures itself, and every request against the caller's policies).
    pub s3: Option<quarters_s3::S3Service>,
}

/// The request id of the request being served (`x-amzn-RequestId`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Run blocking control-plane work (SQLite, unzipping) off the async workers.
pub(crate) async fn blocking<T: Send + 'static, E: Send + 'static + From<quarters_control::ControlError>>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(quarters_control::ControlError::Internal(format!("worker failed: {e}")).into()),
    }
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().entry("x-amzn-requestid").or_insert(v);
    }
    resp
}

/// Prometheus exposition: invocations by function and tenant, and environment gauges.
async fn metrics(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    let mut envs: std::collections::HashMap<String, quarters_telemetry::metrics::EnvCounts> =
        std::collections::HashMap::new();
    for e in app.manager.environments(None) {
        if e.state == quarters_invoke::EnvState::Dead {
            continue;
        }
        let c = envs.entry(e.function.clone()).or_default();
        c.live += 1;
        c.busy += u64::from(e.state == quarters_invoke::EnvState::Busy);
    }
    let mut text = app.metrics.render(&envs);
    text.push_str(&app.logs.emf().render());
    let mut resp = axum::response::IntoResponse::into_response(text);
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// Invoke, and count how it went for the metrics (every invocation goes through here).
pub(crate) async fn invoke_counted(
    app_metrics: &quarters_telemetry::metrics::Metrics,
    usage: &quarters_telemetry::usage::UsageMeter,
    manager: &Manager,
    req: quarters_invoke::InvokeRequest,
) -> Result<quarters_invoke::InvokeResponse, quarters_invoke::InvokeError> {
    let function = req.target.config.name.clone();
    let memory_mb = req.target.config.memory_mb;
    let bytes_in = req.payload.len() as u64;
    let tenant = req.tenant.clone();
    let tenant = tenant.as_ref().map(|t| t.as_str());
    let out = manager.invoke(req).await;
    if let Ok(r) = &out {
        usage.record(
            quarters_types::time::now_ms(),
            &function,
            tenant,
            quarters_telemetry::usage::Use {
                error: r.function_error,
                duration_s: r.duration.as_secs_f64(),
                memory_mb,
                bytes_in,
                bytes_out: r.body.len() as u64,
            },
        );
    }
    match &out {
        Ok(r) => app_metrics.invoked(
            &function,
            tenant,
            quarters_telemetry::metrics::Outcome {
                error: r.function_error,
                cold_start: r.cold_start,
                duration: r.duration,
                init: r.init,
            },
        ),
        Err(quarters_invoke::InvokeError::TooManyRequests { .. }) => app_metrics.throttled(&function, tenant),
        Err(_) => {}
    }
    out
}

/// The CloudWatch Logs service alone, for requests whose SigV4 scope names `logs`.
fn logs_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", post(cwlogs::dispatch))
        .fallback(not_found)
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// IAM or STS alone, for requests whose SigV4 scope names them.
fn identity_router(app: Arc<App>, service: &'static str) -> Router {
    Router::new()
        .route("/", post(move |state, req| identity::handle(state, service, req)))
        .fallback(not_found)
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// `POST /`: the awsJson1.1 services, by `X-Amz-Target` (CloudWatch Logs).
async fn root(
    state: axum::extract::State<Arc<App>>,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    if cwlogs::is_logs(&headers) {
        return cwlogs::dispatch(state, headers, body).await;
    }
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("(none)").to_string();
    Err(ApiError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "UnknownOperationException",
        format!("No service of this endpoint handles X-Amz-Target {target}"),
    ))
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("No operation matches {} {}", req.method(), req.uri().path()),
    )
}

pub fn router(app: Arc<App>) -> Router {
    use lambda::*;
    Router::new()
        .route("/2015-03-31/functions", post(create_function).get(list_functions))
        .route("/2015-03-31/functions/{name}", get(get_function).delete(delete_function))
        .route("/2015-03-31/functions/{name}/configuration", get(get_configuration).put(update_configuration))
        .route("/2015-03-31/functions/{name}/code", put(update_code))
        .route("/2015-03-31/functions/{name}/versions", post(publish_version).get(list_versions))
        .route("/2015-03-31/functions/{name}/aliases", post(create_alias).get(list_aliases))
        .route("/2015-03-31/functions/{name}/aliases/{alias}", get(get_alias).put(update_alias).delete(delete_alias))
        .route("/2015-03-31/functions/{name}/invocations", post(invoke))
        .route("/2017-10-31/functions/{name}/concurrency", put(put_concurrency).delete(delete_concurrency))
        .route("/2019-09-30/functions/{name}/concurrency", get(get_concurrency))
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            get(get_provisioned).put(put_provisioned).delete(delete_provisioned),
        )
        .route("/2016-08-19/account-settings", get(account_settings))
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(events::get_config).put(events::put_config).post(events::update_config).delete(events::delete_config),
        )
        .route("/2019-09-25/functions/{name}/event-invoke-config/list", get(events::list_configs))
        .route("/", post(root))
        .route("/metrics", get(metrics))
        .route("/2018-10-31/layers", get(layers::list))
        .route("/2018-10-31/layers/{name}/versions", post(layers::publish).get(layers::list_versions))
        .route("/2018-10-31/layers/{name}/versions/{version}", get(layers::get).delete(layers::delete))
        .route("/quarters/v1/async", get(events::stats))
        .merge(quarters::routes())
        .merge(apigateway::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(quarters_types::limits::CREATE_REQUEST_MAX_BYTES + 1))
        .layer(middleware::from_fn(request_id))
        .with_state(app)
}

/// Older botocore sends some paths with a trailing slash; route them as without.
fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let new = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = new.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// Start the tenant-ready pools stored with each function (after a restart).
pub fn restore_pools(app: &App) {
    for e in app.control.list() {
        for (q, (n, _)) in &e.provisioned {
            if let Ok(q) = quarters_types::Qualifier::parse(q) {
                lambda::register_pool(app, &e.uid, &e.latest.config.name, &q, *n);
            }
        }
    }
}

/// Serve until `shutdown` resolves, then end every environment.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let manager = app.manager.clone();
    let events = app.events.clone();
    let by_path = router(app.clone());
    let authn = app.auth.clone();
    let (sts, iam) = (identity_router(app.clone(), "sts"), identity_router(app.clone(), "iam"));
    let s3 = app.s3.clone();
    let logs = logs_router(app);
    // One endpoint for every service: the request's SigV4 scope (or target) picks the service's
    // routes; an unsigned request is routed by path.
    let dispatch = tower::service_fn(move |req: Request| {
        use service::Service;
        let svc = service::of(req.headers(), req.uri());
        let routes = match svc {
            Some(Service::Logs) => logs.clone(),
            Some(Service::Sts) => sts.clone(),
            Some(Service::Iam) => iam.clone(),
            Some(Service::Lambda | Service::ApiGateway | Service::S3) | None => by_path.clone(),
        };
        let authn = authn.clone();
        let s3 = s3.clone();
        async move {
            // S3 requests go to the store untouched: it verifies their signatures (with S3's
            // rules, streaming payloads included) and authorises each against the caller's policies.
            if let (Some(Service::S3), Some(s3)) = (svc, s3) {
                return Ok(match tower::ServiceExt::oneshot(s3, req).await {
                    Ok(resp) => resp.map(axum::body::Body::new),
                    Err(e) => axum::response::IntoResponse::into_response(ApiError::internal(format!("{e:?}"))),
                });
            }
            // The signature covers the path as sent; only then is it normalised.
            let req = match authn.authenticate(req).await {
                Ok(req) => req,
                Err(denied) if matches!(svc, Some(Service::Sts | Service::Iam)) => return Ok(denied.xml()),
                Err(denied) => return Ok(denied.json()),
            };
            // Role sessions (tenant-scoped credentials) may use STS and IAM, as their policies
            // allow; managing functions, logs and APIs takes the administrator.
            let session = req.extensions().get::<auth::Caller>().is_some_and(|c| !c.is_admin());
            if session && !matches!(svc, Some(Service::Sts | Service::Iam)) {
                return Ok(axum::response::IntoResponse::into_response(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    "AccessDeniedException",
                    "Role sessions may not call this API: it takes the administrator's credentials",
                )));
            }
            tower::ServiceExt::oneshot(routes, trim_trailing_slash(req)).await
        }
    });
    let result = axum::serve(listener, axum::ServiceExt::<Request>::into_make_service(dispatch))
        .with_graceful_shutdown(shutdown)
        .await;
    events.shutdown().await;
    manager.shutdown().await;
    result
}

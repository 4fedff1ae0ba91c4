//! The API Gateway REST (v1) management API (rest-json, service `apigateway`): routes and wire
//! shapes. The operations themselves are in `quarters_gateway::mgmt`; the data plane that
//! serves what is defined here listens on `--gateway-listen`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use quarters_gateway::GatewayError;
use quarters_gateway::mgmt::{self, public};
use quarters_gateway::store::{Kind, Store};
use serde_json::{Value, json};

use crate::{ApiError, App};

type Q = axum::extract::Query<std::collections::HashMap<String, String>>;
type R = Result<Response, ApiError>;

/// Run store work off the async workers.
async fn run<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&Store) -> Result<T, GatewayError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = app.gateway.store().clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("worker failed: {e}"))),
    }
}

fn input(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::from(GatewayError::BadRequest(format!("Could not parse the request body as JSON: {e}"))))
}

fn created(v: Value) -> R {
    Ok((StatusCode::CREATED, axum::Json(public(v))).into_response())
}

fn ok(v: Value) -> R {
    Ok(axum::Json(public(v)).into_response())
}

fn items(list: Vec<Value>) -> R {
    Ok(axum::Json(json!({"item": list.into_iter().map(public).collect::<Vec<_>>()})).into_response())
}

fn accepted() -> R {
    Ok(StatusCode::ACCEPTED.into_response())
}

fn no_content() -> R {
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/restapis", post(create_api).get(list_apis))
        .route("/restapis/{api}", get(get_api).delete(delete_api).patch(update_api))
        .route("/restapis/{api}/resources", get(list_resources))
        .route("/restapis/{api}/resources/{rid}", post(create_resource).get(get_resource).delete(delete_resource))
        .route(
            "/restapis/{api}/resources/{rid}/methods/{m}",
            get(get_method).put(put_method).delete(delete_method).patch(update_method),
        )
        .route(
            "/restapis/{api}/resources/{rid}/methods/{m}/integration",
            get(get_integration).put(put_integration).delete(delete_integration),
        )
        .route(
            "/restapis/{api}/resources/{rid}/methods/{m}/responses/{status}",
            get(get_method_response).put(put_method_response),
        )
        .route(
            "/restapis/{api}/resources/{rid}/methods/{m}/integration/responses/{status}",
            get(get_integration_response).put(put_integration_response),
        )
        .route("/restapis/{api}/authorizers", post(create_authorizer).get(list_authorizers))
        .route(
            "/restapis/{api}/authorizers/{id}",
            get(get_authorizer).delete(delete_authorizer).patch(update_authorizer),
        )
        .route("/restapis/{api}/requestvalidators", post(create_validator).get(list_validators))
        .route("/restapis/{api}/requestvalidators/{id}", get(get_validator).delete(delete_validator))
        .route("/restapis/{api}/deployments", post(create_deployment).get(list_deployments))
        .route("/restapis/{api}/deployments/{id}", get(get_deployment).delete(delete_deployment))
        .route("/restapis/{api}/stages", post(create_stage).get(list_stages))
        .route("/restapis/{api}/stages/{name}", get(get_stage).delete(delete_stage).patch(update_stage))
        .route("/restapis/{api}/stages/{name}/cache/authorizers", axum::routing::delete(flush_authorizers))
        .route("/usageplans", post(create_plan).get(list_plans))
        .route("/usageplans/{id}", get(get_plan).delete(delete_plan).patch(update_plan))
        .route("/usageplans/{id}/keys", post(create_plan_key).get(list_plan_keys))
        .route("/usageplans/{id}/keys/{key}", get(get_plan_key).delete(delete_plan_key))
        .route("/usageplans/{id}/usage", get(get_usage))
        .route("/apikeys", post(create_key).get(list_keys))
        .route("/apikeys/{id}", get(get_key).delete(delete_key).patch(update_key))
        .route("/domainnames", post(create_domain).get(list_domains))
        .route("/domainnames/{name}", get(get_domain).delete(delete_domain))
        .route("/domainnames/{name}/basepathmappings", post(create_mapping).get(list_mappings))
        .route("/domainnames/{name}/basepathmappings/{base}", get(get_mapping).delete(delete_mapping))
}

// ---- REST APIs, resources, methods, integrations ----

async fn create_api(State(app): State<Arc<App>>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_rest_api(s, &i)).await?)
}

async fn list_apis(State(app): State<Arc<App>>) -> R {
    items(run(&app, |s| s.list(Kind::RestApi, "")).await?)
}

async fn get_api(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    ok(run(&app, move |s| mgmt::rest_api(s, &api)).await?)
}

async fn delete_api(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    run(&app, move |s| mgmt::delete_rest_api(s, &api)).await?;
    accepted()
}

async fn update_api(State(app): State<Arc<App>>, Path(api): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    ok(run(&app, move |s| mgmt::update_rest_api(s, &api, &i)).await?)
}

async fn list_resources(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::rest_api(s, &api)?;
            s.list(Kind::Resource, &api)
        })
        .await?,
    )
}

async fn create_resource(State(app): State<Arc<App>>, Path((api, parent)): Path<(String, String)>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_resource(s, &api, &parent, &i)).await?)
}

async fn get_resource(State(app): State<Arc<App>>, Path((api, rid)): Path<(String, String)>) -> R {
    ok(run(&app, move |s| mgmt::resource(s, &api, &rid)).await?)
}

async fn delete_resource(State(app): State<Arc<App>>, Path((api, rid)): Path<(String, String)>) -> R {
    run(&app, move |s| mgmt::delete_resource(s, &api, &rid)).await?;
    accepted()
}

type MethodPath = Path<(String, String, String)>;

async fn put_method(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::put_method(s, &api, &rid, &m, &i)).await?)
}

async fn get_method(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath) -> R {
    ok(run(&app, move |s| mgmt::method(s, &api, &rid, &m)).await?)
}

async fn delete_method(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath) -> R {
    run(&app, move |s| mgmt::delete_method(s, &api, &rid, &m)).await?;
    no_content()
}

async fn update_method(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath, body: Bytes) -> R {
    let i = input(&body)?;
    ok(run(&app, move |s| mgmt::update_method(s, &api, &rid, &m, &i)).await?)
}

async fn put_integration(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::put_integration(s, &api, &rid, &m, &i)).await?)
}

async fn get_integration(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath) -> R {
    ok(run(&app, move |s| mgmt::integration(s, &api, &rid, &m)).await?)
}

async fn delete_integration(State(app): State<Arc<App>>, Path((api, rid, m)): MethodPath) -> R {
    run(&app, move |s| mgmt::delete_integration(s, &api, &rid, &m)).await?;
    no_content()
}

type StatusPath = Path<(String, String, String, String)>;

async fn put_method_response(State(app): State<Arc<App>>, Path((api, rid, m, st)): StatusPath, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::put_response(s, &api, &rid, &m, &st, false, &i)).await?)
}

async fn get_method_response(State(app): State<Arc<App>>, Path((api, rid, m, st)): StatusPath) -> R {
    let v = run(&app, move |s| mgmt::method(s, &api, &rid, &m)).await?;
    v.get("methodResponses")
        .and_then(|r| r.get(&st))
        .cloned()
        .map_or_else(|| Err(GatewayError::NotFound("Invalid Response status code specified".into()).into()), ok)
}

async fn put_integration_response(State(app): State<Arc<App>>, Path((api, rid, m, st)): StatusPath, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::put_response(s, &api, &rid, &m, &st, true, &i)).await?)
}

async fn get_integration_response(State(app): State<Arc<App>>, Path((api, rid, m, st)): StatusPath) -> R {
    let v = run(&app, move |s| mgmt::integration(s, &api, &rid, &m)).await?;
    v.get("integrationResponses")
        .and_then(|r| r.get(&st))
        .cloned()
        .map_or_else(|| Err(GatewayError::NotFound("Invalid Response status code specified".into()).into()), ok)
}

// ---- authorizers, validators, deployments, stages ----

type Two = Path<(String, String)>;

async fn create_authorizer(State(app): State<Arc<App>>, Path(api): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_authorizer(s, &api, &i)).await?)
}

async fn list_authorizers(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::rest_api(s, &api)?;
            s.list(Kind::Authorizer, &api)
        })
        .await?,
    )
}

async fn get_authorizer(State(app): State<Arc<App>>, Path((api, id)): Two) -> R {
    ok(run(&app, move |s| mgmt::authorizer(s, &api, &id)).await?)
}

async fn delete_authorizer(State(app): State<Arc<App>>, Path((api, id)): Two) -> R {
    run(&app, move |s| mgmt::delete_authorizer(s, &api, &id)).await?;
    accepted()
}

async fn update_authorizer(State(app): State<Arc<App>>, Path((api, id)): Two, body: Bytes) -> R {
    let i = input(&body)?;
    ok(run(&app, move |s| mgmt::update_authorizer(s, &api, &id, &i)).await?)
}

async fn create_validator(State(app): State<Arc<App>>, Path(api): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_validator(s, &api, &i)).await?)
}

async fn list_validators(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::rest_api(s, &api)?;
            s.list(Kind::RequestValidator, &api)
        })
        .await?,
    )
}

async fn get_validator(State(app): State<Arc<App>>, Path((api, id)): Two) -> R {
    ok(run(&app, move |s| mgmt::validator(s, &api, &id)).await?)
}

async fn delete_validator(State(app): State<Arc<App>>, Path((api, id)): Two) -> R {
    run(&app, move |s| {
        mgmt::validator(s, &api, &id)?;
        s.delete(Kind::RequestValidator, &api, &id)
    })
    .await?;
    accepted()
}

async fn create_deployment(State(app): State<Arc<App>>, Path(api): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_deployment(s, &api, &i)).await?)
}

async fn list_deployments(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::rest_api(s, &api)?;
            s.list(Kind::Deployment, &api)
        })
        .await?,
    )
}

async fn get_deployment(State(app): State<Arc<App>>, Path((api, id)): Two) -> R {
    ok(run(&app, move |s| mgmt::deployment(s, &api, &id)).await?)
}

async fn delete_deployment(State(app): State<Arc<App>>, Path((api, id)): Two) -> R {
    run(&app, move |s| mgmt::delete_deployment(s, &api, &id)).await?;
    accepted()
}

async fn create_stage(State(app): State<Arc<App>>, Path(api): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_stage(s, &api, &i)).await?)
}

async fn list_stages(State(app): State<Arc<App>>, Path(api): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::rest_api(s, &api)?;
            s.list(Kind::Stage, &api)
        })
        .await?,
    )
}

async fn get_stage(State(app): State<Arc<App>>, Path((api, name)): Two) -> R {
    ok(run(&app, move |s| mgmt::stage(s, &api, &name)).await?)
}

async fn delete_stage(State(app): State<Arc<App>>, Path((api, name)): Two) -> R {
    run(&app, move |s| {
        mgmt::stage(s, &api, &name)?;
        s.delete(Kind::Stage, &api, &name)
    })
    .await?;
    accepted()
}

async fn update_stage(State(app): State<Arc<App>>, Path((api, name)): Two, body: Bytes) -> R {
    let i = input(&body)?;
    ok(run(&app, move |s| mgmt::update_stage(s, &api, &name, &i)).await?)
}

async fn flush_authorizers(State(app): State<Arc<App>>, Path((api, name)): Two) -> R {
    run(&app, move |s| mgmt::stage(s, &api, &name)).await?;
    app.gateway.flush_authorizer_cache();
    accepted()
}

// ---- usage plans and keys ----

async fn create_plan(State(app): State<Arc<App>>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_usage_plan(s, &i)).await?)
}

async fn list_plans(State(app): State<Arc<App>>, q: Q) -> R {
    let key = q.get("keyId").cloned();
    items(
        run(&app, move |s| {
            let plans = s.list(Kind::UsagePlan, "")?;
            match key {
                None => Ok(plans),
                Some(k) => Ok(plans
                    .into_iter()
                    .filter(|p| {
                        p.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| matches!(s.get(Kind::UsagePlanKey, id, &k), Ok(Some(_))))
                    })
                    .collect()),
            }
        })
        .await?,
    )
}

async fn get_plan(State(app): State<Arc<App>>, Path(id): Path<String>) -> R {
    ok(run(&app, move |s| mgmt::usage_plan(s, &id)).await?)
}

async fn delete_plan(State(app): State<Arc<App>>, Path(id): Path<String>) -> R {
    run(&app, move |s| mgmt::delete_usage_plan(s, &id)).await?;
    accepted()
}

async fn update_plan(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    ok(run(&app, move |s| mgmt::update_usage_plan(s, &id, &i)).await?)
}

async fn create_plan_key(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_usage_plan_key(s, &id, &i)).await?)
}

async fn list_plan_keys(State(app): State<Arc<App>>, Path(id): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::usage_plan(s, &id)?;
            s.list(Kind::UsagePlanKey, &id)
        })
        .await?,
    )
}

async fn get_plan_key(State(app): State<Arc<App>>, Path((id, key)): Two) -> R {
    ok(run(&app, move |s| mgmt::usage_plan_key(s, &id, &key)).await?)
}

async fn delete_plan_key(State(app): State<Arc<App>>, Path((id, key)): Two) -> R {
    run(&app, move |s| {
        mgmt::usage_plan_key(s, &id, &key)?;
        s.delete(Kind::UsagePlanKey, &id, &key)
    })
    .await?;
    accepted()
}

async fn get_usage(State(app): State<Arc<App>>, Path(id): Path<String>, q: Q) -> R {
    let (Some(start), Some(end)) = (q.get("startDate").cloned(), q.get("endDate").cloned()) else {
        return Err(GatewayError::BadRequest("startDate and endDate are required".into()).into());
    };
    let key = q.get("keyId").cloned();
    let gw = app.gateway.clone();
    let v = run(&app, move |s| {
        mgmt::usage(s, &id, key.as_deref(), &start, &end, &|plan, k, day| gw.pending_usage(plan, k, day))
    })
    .await?;
    Ok(axum::Json(v).into_response())
}

async fn create_key(State(app): State<Arc<App>>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_api_key(s, &i)).await?)
}

async fn list_keys(State(app): State<Arc<App>>, q: Q) -> R {
    let include = q.get("includeValues").is_some_and(|v| v == "true");
    let name = q.get("name").cloned();
    let keys = run(&app, |s| s.list(Kind::ApiKey, "")).await?;
    items(
        keys.into_iter()
            .filter(|k| {
                name.as_deref()
                    .is_none_or(|n| k.get("name").and_then(Value::as_str).is_some_and(|kn| kn.starts_with(n)))
            })
            .map(|k| mgmt::show_key(k, include))
            .collect(),
    )
}

async fn get_key(State(app): State<Arc<App>>, Path(id): Path<String>, q: Q) -> R {
    let include = q.get("includeValue").is_some_and(|v| v == "true");
    ok(mgmt::show_key(run(&app, move |s| mgmt::api_key(s, &id)).await?, include))
}

async fn delete_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> R {
    run(&app, move |s| mgmt::delete_api_key(s, &id)).await?;
    accepted()
}

async fn update_key(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    ok(mgmt::show_key(run(&app, move |s| mgmt::update_api_key(s, &id, &i)).await?, false))
}

// ---- custom domains ----

async fn create_domain(State(app): State<Arc<App>>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_domain_name(s, &i)).await?)
}

async fn list_domains(State(app): State<Arc<App>>) -> R {
    items(run(&app, |s| s.list(Kind::DomainName, "")).await?)
}

async fn get_domain(State(app): State<Arc<App>>, Path(name): Path<String>) -> R {
    ok(run(&app, move |s| mgmt::domain_name(s, &name)).await?)
}

async fn delete_domain(State(app): State<Arc<App>>, Path(name): Path<String>) -> R {
    run(&app, move |s| mgmt::delete_domain_name(s, &name)).await?;
    accepted()
}

async fn create_mapping(State(app): State<Arc<App>>, Path(name): Path<String>, body: Bytes) -> R {
    let i = input(&body)?;
    created(run(&app, move |s| mgmt::create_base_path_mapping(s, &name, &i)).await?)
}

async fn list_mappings(State(app): State<Arc<App>>, Path(name): Path<String>) -> R {
    items(
        run(&app, move |s| {
            mgmt::domain_name(s, &name)?;
            s.list(Kind::BasePathMapping, &name.to_ascii_lowercase())
        })
        .await?,
    )
}

async fn get_mapping(State(app): State<Arc<App>>, Path((name, base)): Two) -> R {
    ok(run(&app, move |s| mgmt::base_path_mapping(s, &name, &base)).await?)
}

async fn delete_mapping(State(app): State<Arc<App>>, Path((name, base)): Two) -> R {
    run(&app, move |s| {
        mgmt::base_path_mapping(s, &name, &base)?;
        let base = if base.is_empty() { "(none)".to_string() } else { base };
        s.delete(Kind::BasePathMapping, &name.to_ascii_lowercase(), &base)
    })
    .await?;
    accepted()
}

// ---- the gateway's way to invoke functions ----

/// The gateway invokes through the same path (metrics, usage, limits) as the Invoke API.
impl quarters_gateway::dataplane::Invoker for crate::events::ManagerInvoker {
    fn invoke(
        &self,
        function: String,
        tenant: Option<String>,
        payload: Bytes,
        request_id: String,
    ) -> quarters_gateway::dataplane::InvokeFuture {
        use quarters_gateway::dataplane::InvokeOutcome;
        let this = self.clone();
        Box::pin(async move {
            let r = match quarters_types::FunctionRef::parse(&function, None) {
                Ok(r) => r,
                Err(e) => return InvokeOutcome::Failed(format!("integration function {function}: {}", e.message)),
            };
            let q = r.qualifier.map(|q| q.to_string());
            match this.call(r.name.as_str(), q.as_deref(), tenant.as_deref(), payload, None, request_id).await {
                Ok(out) => InvokeOutcome::Ok { payload: out.body, function_error: out.function_error },
                Err(crate::events::Refused::Throttled) => InvokeOutcome::Throttled,
                Err(crate::events::Refused::Rejected(m) | crate::events::Refused::Failed(m)) => {
                    InvokeOutcome::Failed(format!("{function}: {m}"))
                }
            }
        })
    }
}

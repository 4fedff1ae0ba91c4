//! Handlers of the Lambda API (control plane and Invoke).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use quarters_control::{FunctionEntry, Resolved};
use quarters_invoke::{InvokeRequest, Target};
use quarters_types::{FunctionRef, Qualifier, TenantId, limits};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::wire::{self, View};
use crate::{App, RequestId, blocking};

type Q = Query<HashMap<String, String>>;
type ApiResult = Result<Response, ApiError>;

fn fref(name: &str, q: &Q) -> Result<FunctionRef, ApiError> {
    Ok(FunctionRef::parse(name, q.get("Qualifier").map(String::as_str))?)
}

fn ok(status: StatusCode, v: Value) -> ApiResult {
    Ok((status, Json(v)).into_response())
}

pub async fn create_function(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    if body.len() > limits::CREATE_REQUEST_MAX_BYTES {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {} bytes for the CreateFunction operation",
            limits::CREATE_REQUEST_MAX_BYTES
        )));
    }
    let input: wire::CreateFunctionIn = wire::parse(&body)?;
    let mut new = input.into_new_function()?;
    if let Some(settings) = new.config.image.as_mut() {
        pull_into(&app, settings).await?;
    }
    let a = app.clone();
    let entry = blocking(move || a.control.create(new)).await?;
    tracing::info!(function = %entry.latest.config.name, "function created");
    // Its log group exists from now on, as on Lambda with CloudWatch.
    let (logs, group) = (app.logs.clone(), entry.latest.config.logging.log_group.clone());
    if let Err(e) = tokio::task::spawn_blocking(move || logs.ensure_group(&group, quarters_types::time::now_ms())).await
    {
        tracing::warn!(error = %e, "could not register the log group");
    }
    ok(StatusCode::CREATED, wire::function_configuration(&app.control.arns, &entry.latest, View::Created))
}

/// The version a qualified Get* names.
fn version_of<'a>(
    app: &App,
    e: &'a FunctionEntry,
    r: &FunctionRef,
) -> Result<&'a quarters_types::VersionRecord, ApiError> {
    let name = r.name.as_str();
    match &r.qualifier {
        None | Some(Qualifier::Latest) => Ok(&e.latest),
        Some(Qualifier::Version(n)) => {
            e.versions.get(n).ok_or_else(|| app.control.not_found(name, Some(&n.to_string())).into())
        }
        Some(Qualifier::Alias(a)) => {
            let alias = e.aliases.get(a).ok_or_else(|| ApiError::from(app.control.not_found(name, Some(a))))?;
            match alias.function_version.parse::<u64>() {
                Ok(n) => e.versions.get(&n).ok_or_else(|| app.control.not_found(name, Some(&n.to_string())).into()),
                Err(_) => Ok(&e.latest),
            }
        }
    }
}

pub async fn get_function(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = fref(&name, &q)?;
    let e = app.control.get(r.name.as_str())?;
    let v = version_of(&app, &e, &r)?;
    let mut out = json!({
        "Configuration": wire::function_configuration(&app.control.arns, v, View::Get),
        "Code": match &v.config.image {
            None => json!({ "RepositoryType": "S3", "Location": format!("{}/quarters/v1/code/{}", app.base_url, v.code.sha256_hex) }),
            Some(i) => json!({ "RepositoryType": "ECR", "ImageUri": i.uri, "ResolvedImageUri": i.resolved_uri }),
        },
    });
    if !e.tags.is_empty() {
        out["Tags"] = json!(e.tags);
    }
    if let Some(n) = e.reserved_concurrency {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
    }
    ok(StatusCode::OK, out)
}

pub async fn get_configuration(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = fref(&name, &q)?;
    let e = app.control.get(r.name.as_str())?;
    let v = version_of(&app, &e, &r)?;
    ok(StatusCode::OK, wire::function_configuration(&app.control.arns, v, View::Get))
}

pub async fn list_functions(State(app): State<Arc<App>>, q: Q) -> ApiResult {
    let max = parse_max_items(&q)?;
    let all_versions = q.get("FunctionVersion").is_some_and(|v| v == "ALL");
    let entries = app.control.list();
    let items: Vec<(String, Value)> = entries
        .iter()
        .flat_map(|e| {
            let versions: Vec<_> = if all_versions { wire::all_versions(e).collect() } else { vec![&e.latest] };
            versions.into_iter().map(|v| {
                (
                    format!("{}:{:020}", v.config.name, v.version.parse::<u64>().unwrap_or(0)),
                    wire::function_configuration(&app.control.arns, v, View::List),
                )
            })
        })
        .collect();
    let (page, next) = paginate(items, q.get("Marker"), max);
    ok(StatusCode::OK, page_body("Functions", page, next))
}

pub(crate) fn parse_max_items(q: &Q) -> Result<usize, ApiError> {
    match q.get("MaxItems") {
        None => Ok(limits::LIST_MAX_ITEMS),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=10_000).contains(&n) => Ok(n.min(limits::LIST_MAX_ITEMS)),
            _ => Err(quarters_types::ValidationError::constraint(
                s,
                "maxItems",
                "Member must have value between 1 and 10000",
            )
            .into()),
        },
    }
}

/// A list response: the page under `key`, and `NextMarker` when there is more.
pub(crate) fn page_body(key: &str, page: Vec<Value>, next: Option<String>) -> Value {
    let mut out = json!({ key: page });
    if let Some(m) = next {
        out["NextMarker"] = m.into();
    }
    out
}

/// Items are sorted by key; a marker is the key of the first item of the next page.
pub(crate) fn paginate(
    mut items: Vec<(String, Value)>,
    marker: Option<&String>,
    max: usize,
) -> (Vec<Value>, Option<String>) {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = match marker.filter(|m| !m.is_empty()) {
        Some(m) => {
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(m)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            items.iter().position(|(k, _)| *k >= key).unwrap_or(items.len())
        }
        None => 0,
    };
    let end = (start + max).min(items.len());
    let next = items.get(end).map(|(k, _)| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k));
    (items.drain(start..end).map(|(_, v)| v).collect(), next)
}

pub async fn delete_function(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = fref(&name, &q)?;
    let a = app.clone();
    let qual = r.qualifier.clone();
    let n = r.name.as_str().to_owned();
    let uid = blocking(move || a.control.delete(&n, qual.as_ref())).await?;
    match &r.qualifier {
        None | Some(Qualifier::Latest) => app.manager.retire(&uid, None, None),
        Some(q) => app.manager.retire(&uid, Some(&q.to_string()), None),
    }
    tracing::info!(function = %r.name, "function deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn update_configuration(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    q: Q,
    body: Bytes,
) -> ApiResult {
    let r = fref(&name, &q)?;
    let mut input: wire::UpdateConfigIn = wire::parse(&body)?;
    let current = app.control.get(r.name.as_str())?;
    // Validate on a copy first, so a bad field is reported as itself; the update then only
    // lands on the revision it was computed from.
    let mut config = current.latest.config.clone();
    let revision = input.revision_id.clone().unwrap_or_else(|| current.latest.revision_id.clone());
    let layer_arns = input.layers.take();
    input.apply(&mut config)?;
    if let Some(arns) = layer_arns {
        let a = app.clone();
        config.layers = blocking(move || a.control.resolve_layers(&arns)).await?;
    }
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    let entry = blocking(move || {
        a.control.update_config(&n, Some(&revision), |c| {
            *c = config;
            Ok(())
        })
    })
    .await?;
    app.manager.retire(&entry.uid, Some("$LATEST"), Some(entry.latest.generation));
    ok(StatusCode::OK, wire::function_configuration(&app.control.arns, &entry.latest, View::Updated))
}

pub async fn update_code(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q, body: Bytes) -> ApiResult {
    if body.len() > limits::CREATE_REQUEST_MAX_BYTES {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {} bytes for the UpdateFunctionCode operation",
            limits::CREATE_REQUEST_MAX_BYTES
        )));
    }
    let r = fref(&name, &q)?;
    let input: wire::UpdateCodeIn = wire::parse(&body)?;
    if input.s3_bucket.is_some() {
        return Err(ApiError::invalid("Code from S3 is not supported by this Quarters server yet."));
    }
    if let Some(uri) = input.image_uri.filter(|u| !u.is_empty()) {
        let current = app.control.get(r.name.as_str())?;
        let Some(mut settings) = current.latest.config.image.clone() else {
            return Err(ApiError::invalid(
                "Please don't provide ImageUri when updating a function with packageType Zip.",
            ));
        };
        settings.uri = uri;
        if input.dry_run.unwrap_or(false) {
            return ok(StatusCode::OK, wire::function_configuration(&app.control.arns, &current.latest, View::Updated));
        }
        pull_into(&app, &mut settings).await?;
        let a = app.clone();
        let n = r.name.as_str().to_owned();
        let publish = input.publish.unwrap_or(false);
        let revision = input.revision_id;
        let entry = blocking(move || a.control.update_image(&n, settings, publish, revision.as_deref())).await?;
        app.manager.retire(&entry.uid, Some("$LATEST"), Some(entry.latest.generation));
        return ok(StatusCode::OK, wire::function_configuration(&app.control.arns, &entry.latest, View::Updated));
    }
    let zip = wire::decode_zip(
        &input.zip_file.ok_or_else(|| ApiError::invalid("Please provide a source for function code."))?,
    )?;
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    let entry = if input.dry_run.unwrap_or(false) {
        app.control.get(&n)?
    } else {
        let publish = input.publish.unwrap_or(false);
        let revision = input.revision_id;
        blocking(move || a.control.update_code(&n, &zip, publish, revision.as_deref())).await?
    };
    app.manager.retire(&entry.uid, Some("$LATEST"), Some(entry.latest.generation));
    ok(StatusCode::OK, wire::function_configuration(&app.control.arns, &entry.latest, View::Updated))
}

pub async fn publish_version(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q, body: Bytes) -> ApiResult {
    let r = fref(&name, &q)?;
    let input: wire::PublishIn = wire::parse(&body)?;
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    let v = blocking(move || {
        a.control.publish_version(&n, input.description, input.code_sha256.as_deref(), input.revision_id.as_deref())
    })
    .await?;
    ok(StatusCode::CREATED, wire::function_configuration(&app.control.arns, &v, View::Get))
}

pub async fn list_versions(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = fref(&name, &q)?;
    let max = parse_max_items(&q)?;
    let e = app.control.get(r.name.as_str())?;
    let items = wire::all_versions(&e)
        .map(|v| {
            (
                format!("{:020}", v.version.parse::<u64>().unwrap_or(0)),
                wire::function_configuration(&app.control.arns, v, View::List),
            )
        })
        .collect();
    let (page, next) = paginate(items, q.get("Marker"), max);
    ok(StatusCode::OK, page_body("Versions", page, next))
}

pub async fn create_alias(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q, body: Bytes) -> ApiResult {
    let r = fref(&name, &q)?;
    let input: wire::AliasIn = wire::parse(&body)?;
    let rec = input.into_record(None)?;
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    let alias = blocking(move || a.control.put_alias(&n, rec, true, None)).await?;
    ok(StatusCode::CREATED, wire::alias_configuration(&app.control.arns, r.name.as_str(), &alias))
}

pub async fn get_alias(State(app): State<Arc<App>>, Path((name, alias)): Path<(String, String)>) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let e = app.control.get(r.name.as_str())?;
    let a = e.aliases.get(&alias).ok_or_else(|| {
        ApiError::not_found(format!("Cannot find alias arn: {}", app.control.arns.qualified(r.name.as_str(), &alias)))
    })?;
    ok(StatusCode::OK, wire::alias_configuration(&app.control.arns, r.name.as_str(), a))
}

pub async fn update_alias(
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let input: wire::AliasIn = wire::parse(&body)?;
    let e = app.control.get(r.name.as_str())?;
    let old = e.aliases.get(&alias).ok_or_else(|| {
        ApiError::not_found(format!("Cannot find alias arn: {}", app.control.arns.qualified(r.name.as_str(), &alias)))
    })?;
    let revision = input.revision_id.clone();
    let rec = quarters_control::AliasRecord {
        name: alias.clone(),
        function_version: input.function_version.unwrap_or_else(|| old.function_version.clone()),
        description: input.description.unwrap_or_else(|| old.description.clone()),
        routing: match input.routing_config {
            Some(rc) => rc.additional_version_weights.unwrap_or_default(),
            None => old.routing.clone(),
        },
        revision_id: uuid::Uuid::new_v4().to_string(),
    };
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    let alias = blocking(move || a.control.put_alias(&n, rec, false, revision.as_deref())).await?;
    ok(StatusCode::OK, wire::alias_configuration(&app.control.arns, r.name.as_str(), &alias))
}

pub async fn delete_alias(State(app): State<Arc<App>>, Path((name, alias)): Path<(String, String)>) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    blocking(move || a.control.delete_alias(&n, &alias)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_aliases(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let max = parse_max_items(&q)?;
    let e = app.control.get(r.name.as_str())?;
    let items = e
        .aliases
        .values()
        .filter(|a| q.get("FunctionVersion").is_none_or(|v| *v == a.function_version))
        .map(|a| (a.name.clone(), wire::alias_configuration(&app.control.arns, r.name.as_str(), a)))
        .collect();
    let (page, next) = paginate(items, q.get("Marker"), max);
    ok(StatusCode::OK, page_body("Aliases", page, next))
}

pub async fn put_concurrency(State(app): State<Arc<App>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let input: wire::ConcurrencyIn = wire::parse(&body)?;
    let n = input.reserved_concurrent_executions.ok_or_else(|| {
        ApiError::from(quarters_types::ValidationError::model(
            "1 validation error detected: Value null at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must not be null",
        ))
    })?;
    if n < 0 {
        return Err(quarters_types::ValidationError::constraint(
            &n.to_string(),
            "reservedConcurrentExecutions",
            "Member must have value greater than or equal to 0",
        )
        .into());
    }
    let n = u32::try_from(n).map_err(|_| ApiError::invalid("ReservedConcurrentExecutions is too large"))?;
    let a = app.clone();
    let fname = r.name.as_str().to_owned();
    blocking(move || a.control.set_concurrency(&fname, Some(n))).await?;
    ok(StatusCode::OK, json!({ "ReservedConcurrentExecutions": n }))
}

pub async fn get_concurrency(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let e = app.control.get(r.name.as_str())?;
    match e.reserved_concurrency {
        Some(n) => ok(StatusCode::OK, json!({ "ReservedConcurrentExecutions": n })),
        None => ok(StatusCode::OK, json!({})),
    }
}

pub async fn delete_concurrency(State(app): State<Arc<App>>, Path(name): Path<String>) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    blocking(move || a.control.set_concurrency(&n, None)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn account_settings(State(app): State<Arc<App>>) -> ApiResult {
    let functions = app.control.list();
    let reserved: u32 = functions.iter().filter_map(|f| f.reserved_concurrency).sum();
    let limit = app.control.account_concurrency;
    ok(
        StatusCode::OK,
        json!({
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800u64,
                "CodeSizeUnzipped": limits::UNZIPPED_MAX_BYTES,
                "CodeSizeZipped": limits::ZIP_MAX_BYTES,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": limit.saturating_sub(reserved),
            },
            "AccountUsage": { "TotalCodeSize": app.control.total_code_size(), "FunctionCount": functions.len() },
        }),
    )
}

/// What the environment manager needs to run a resolved version.
pub(crate) fn target_of(resolved: &Resolved, invoked_arn: String) -> Target {
    Target {
        function_uid: resolved.entry.uid.as_str().into(),
        version: resolved.version.version.as_str().into(),
        generation: resolved.version.generation,
        config: Arc::new(resolved.version.config.clone()),
        task_dir: resolved.task_dir.clone(),
        opt_dir: resolved.opt_dir.clone(),
        image_root: resolved.image_root.clone(),
        invoked_arn,
        reserved_concurrency: resolved.entry.reserved_concurrency,
        tenant_concurrency: resolved.entry.tenant_concurrency,
    }
}

/// Keep a tenant-ready pool of `size` environments of `name:qualifier` (0 removes it).
pub(crate) fn register_pool(app: &App, uid: &str, name: &str, qualifier: &Qualifier, size: u32) {
    let control = app.control.clone();
    let (n, q) = (name.to_owned(), qualifier.clone());
    let arn = app.control.arns.qualified(name, &qualifier.to_string());
    let resolver: quarters_invoke::TargetResolver =
        Arc::new(move || control.resolve(&n, Some(&q)).ok().map(|r| target_of(&r, arn.clone())));
    app.manager.set_ready_pool(uid, &qualifier.to_string(), size, resolver);
}

fn provisioned_body(app: &App, e: &FunctionEntry, qualifier: &str, requested: u32, set_ms: u64) -> Value {
    let available = app.manager.ready_pool_status(&e.uid, qualifier).map(|s| s.available).unwrap_or(0).min(requested);
    json!({
        "RequestedProvisionedConcurrentExecutions": requested,
        "AvailableProvisionedConcurrentExecutions": available,
        "AllocatedProvisionedConcurrentExecutions": available,
        "Status": if available >= requested { "READY" } else { "IN_PROGRESS" },
        "LastModified": quarters_types::time::last_modified(set_ms),
    })
}

fn required_qualifier(q: &Q) -> Result<Qualifier, ApiError> {
    let raw = q.get("Qualifier").filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::from(quarters_types::ValidationError::model(
            "1 validation error detected: Value null at 'qualifier' failed to satisfy constraint: Member must not be null",
        ))
    })?;
    Ok(Qualifier::parse(raw)?)
}

/// PutProvisionedConcurrencyConfig. AWS refuses it for tenant-isolated functions; Quarters
/// gives it a meaning there: a pool of environments that have run their init and are bound to
/// a tenant at that tenant's first call.
pub async fn put_provisioned(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q, body: Bytes) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let qualifier = required_qualifier(&q)?;
    let input: wire::ProvisionedIn = wire::parse(&body)?;
    let n = input.provisioned_concurrent_executions.ok_or_else(|| {
        ApiError::from(quarters_types::ValidationError::model(
            "1 validation error detected: Value null at 'provisionedConcurrentExecutions' failed to satisfy constraint: Member must not be null",
        ))
    })?;
    if n < 1 {
        return Err(quarters_types::ValidationError::constraint(
            &n.to_string(),
            "provisionedConcurrentExecutions",
            "Member must have value greater than or equal to 1",
        )
        .into());
    }
    let n = u32::try_from(n).map_err(|_| ApiError::invalid("ProvisionedConcurrentExecutions is too large"))?;
    if n > app.control.account_concurrency {
        return Err(ApiError::invalid(format!(
            "Requested Provisioned Concurrency should not be greater than the account's concurrency limit of {}.",
            app.control.account_concurrency
        )));
    }
    app.control.resolve(r.name.as_str(), Some(&qualifier))?;
    let a = app.clone();
    let (fname, qs) = (r.name.as_str().to_owned(), qualifier.to_string());
    blocking(move || a.control.set_provisioned(&fname, &qs, Some(n))).await?;
    let e = app.control.get(r.name.as_str())?;
    register_pool(&app, &e.uid, r.name.as_str(), &qualifier, n);
    let set = e.provisioned.get(&qualifier.to_string()).map(|(_, t)| *t).unwrap_or(0);
    ok(StatusCode::ACCEPTED, provisioned_body(&app, &e, &qualifier.to_string(), n, set))
}

fn provisioned_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "ProvisionedConcurrencyConfigNotFoundException",
        "No Provisioned Concurrency Config found for this function",
    )
}

pub async fn get_provisioned(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let e = app.control.get(r.name.as_str())?;
    if q.get("List").is_some() {
        let configs: Vec<Value> = e
            .provisioned
            .iter()
            .map(|(qual, (n, t))| {
                let mut v = provisioned_body(&app, &e, qual, *n, *t);
                v["FunctionArn"] = app.control.arns.qualified(r.name.as_str(), qual).into();
                v
            })
            .collect();
        return ok(StatusCode::OK, json!({ "ProvisionedConcurrencyConfigs": configs }));
    }
    let qualifier = required_qualifier(&q)?.to_string();
    let (n, t) = e.provisioned.get(&qualifier).copied().ok_or_else(provisioned_not_found)?;
    ok(StatusCode::OK, provisioned_body(&app, &e, &qualifier, n, t))
}

pub async fn delete_provisioned(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let r = FunctionRef::parse(&name, None)?;
    let qualifier = required_qualifier(&q)?;
    let e = app.control.get(r.name.as_str())?;
    if !e.provisioned.contains_key(&qualifier.to_string()) {
        return Err(provisioned_not_found());
    }
    let a = app.clone();
    let (fname, qs) = (r.name.as_str().to_owned(), qualifier.to_string());
    blocking(move || a.control.set_provisioned(&fname, &qs, None)).await?;
    register_pool(&app, &e.uid, r.name.as_str(), &qualifier, 0);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

const TENANT_REQUIRED: &str =
    "The invoked function is enabled with tenancy configuration. Add a valid tenant ID in your request and try again.";
const TENANT_NOT_ALLOWED: &str = "The invoked function is not enabled with tenancy configuration. Remove the tenant ID from your request and try again.";

pub async fn invoke(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    q: Q,
    axum::Extension(RequestId(request_id)): axum::Extension<RequestId>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let r = fref(&name, &q)?;
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse");
    if !matches!(invocation_type, "RequestResponse" | "Event" | "DryRun") {
        return Err(quarters_types::ValidationError::constraint(
            invocation_type,
            "invocationType",
            "Member must satisfy enum value set: [Event, RequestResponse, DryRun]",
        )
        .into());
    }
    let tail = match header(&headers, "x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(quarters_types::ValidationError::constraint(
                other,
                "logType",
                "Member must satisfy enum value set: [None, Tail]",
            )
            .into());
        }
    };
    let resolved = app.control.resolve(r.name.as_str(), r.qualifier.as_ref())?;
    let config = &resolved.version.config;
    // Any byte outside visible ASCII breaks the pattern; decode leniently only to show it.
    let tenant = match headers.get("x-amz-tenant-id") {
        Some(v) => Some(TenantId::parse(&String::from_utf8_lossy(v.as_bytes()))?),
        None => None,
    };
    match (config.tenancy.is_some(), tenant.is_some()) {
        (true, false) => return Err(ApiError::invalid(TENANT_REQUIRED)),
        (false, true) => return Err(ApiError::invalid(TENANT_NOT_ALLOWED)),
        _ => {}
    }
    let limit =
        if invocation_type == "Event" { limits::ASYNC_PAYLOAD_MAX_BYTES } else { limits::SYNC_PAYLOAD_MAX_BYTES };
    if body.len() > limit {
        return Err(ApiError::too_large(if invocation_type == "Event" {
            format!("{} byte payload is too large for the Event invocation type (limit {limit} bytes)", body.len())
        } else {
            format!("Request must be smaller than {limit} bytes for the InvokeFunction operation")
        }));
    }
    if !body.iter().all(u8::is_ascii_whitespace)
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
    {
        return Err(ApiError::bad_content(format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        )));
    }
    let client_context = match header(&headers, "x-amz-client-context") {
        None => None,
        Some(cc) => {
            let bad = || ApiError::invalid("Client context must be a valid Base64-encoded JSON object.");
            if cc.len() > limits::CLIENT_CONTEXT_MAX_BYTES {
                return Err(ApiError::invalid(format!(
                    "Client context must be at most {} bytes.",
                    limits::CLIENT_CONTEXT_MAX_BYTES
                )));
            }
            let raw = base64::engine::general_purpose::STANDARD.decode(cc).map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(|_| bad())?;
            Some(text)
        }
    };
    if invocation_type == "DryRun" {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let invoked_arn = match &r.qualifier {
        Some(q) => app.control.arns.qualified(r.name.as_str(), &q.to_string()),
        None => app.control.arns.function(r.name.as_str()),
    };
    let req = InvokeRequest {
        target: target_of(&resolved, invoked_arn),
        tenant,
        payload: body,
        client_context,
        tail: tail && invocation_type == "RequestResponse",
        request_id,
    };
    if invocation_type == "Event" {
        // Stored durably before the 202; run (and retried) by the queue.
        let ev = quarters_events::QueuedEvent::new(
            req.request_id,
            r.name.as_str(),
            r.qualifier.as_ref().map(|q| q.to_string()),
            req.tenant.map(|t| t.as_str().to_owned()),
            req.payload,
            req.client_context,
        );
        app.events.enqueue(ev).await.map_err(|e| ApiError::internal(format!("cannot queue the event: {e}")))?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let out = crate::invoke_counted(&app.metrics, &app.usage, &app.manager, req).await?;
    let mut resp = (StatusCode::OK, out.body).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&out.executed_version) {
        h.insert("x-amz-executed-version", v);
    }
    if out.function_error {
        h.insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
    }
    if let Some(tail) = out.log_tail
        && let Ok(v) = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(tail))
    {
        h.insert("x-amz-log-result", v);
    }
    Ok(resp)
}

/// Pull an image function's image and record what it resolved to and what it runs.
async fn pull_into(app: &App, settings: &mut quarters_types::ImageSettings) -> Result<(), ApiError> {
    let pulled = app.images.pull(&settings.uri).await?;
    settings.digest = pulled.digest;
    settings.resolved_uri = pulled.resolved_uri;
    settings.image_entrypoint = pulled.config.entrypoint;
    settings.image_cmd = pulled.config.cmd;
    settings.image_working_dir = pulled.config.working_dir;
    settings.image_env = pulled.config.env;
    if settings.command_line().is_empty() {
        return Err(ApiError::invalid(format!(
            "The image {} has no entry point or command, and the function's ImageConfig gives none.",
            settings.uri
        )));
    }
    Ok(())
}

//! Quarters' own API (`/quarters/v1`): what Lambda has no operation for.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use quarters_types::{FunctionRef, TenantId};
use serde_json::json;

use crate::error::ApiError;
use crate::{App, blocking};

type Q = Query<HashMap<String, String>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/quarters/v1/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/quarters/v1/environments", get(environments).delete(offboard))
        .route("/quarters/v1/logs", get(logs))
        .route("/quarters/v1/usage", get(usage))
        .route("/quarters/v1/log-groups", axum::routing::put(log_group_limits))
        .route("/quarters/v1/logs/tail", get(tail))
        .route("/quarters/v1/metrics/emf", get(emf_metrics))
        .route("/quarters/v1/code/{sha}", get(code))
        .route(
            "/quarters/v1/functions/{name}/tenant-concurrency",
            get(get_tenant_limit).put(put_tenant_limit).delete(delete_tenant_limit),
        )
}

fn function_uid(app: &App, q: &Q) -> Result<Option<String>, ApiError> {
    match q.get("function") {
        None => Ok(None),
        Some(f) => {
            let r = FunctionRef::parse(f, None)?;
            Ok(Some(app.control.get(r.name.as_str())?.uid.clone()))
        }
    }
}

/// Live environments, optionally of one function.
async fn environments(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let uid = function_uid(&app, &q)?;
    let envs = app.manager.environments(uid.as_deref());
    let (committed, budget) = app.manager.memory_committed();
    Ok(Json(json!({
        "Sandbox": app.manager.sandbox_name(),
        "Environments": envs,
        "MemoryCommittedMB": committed,
        "MemoryBudgetMB": budget,
    }))
    .into_response())
}

/// Tenant offboarding: destroy every environment of one tenant.
async fn offboard(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let tenant = q.get("tenant").ok_or_else(|| ApiError::invalid("The 'tenant' query parameter is required."))?;
    let tenant = TenantId::parse(tenant)?;
    let uid = function_uid(&app, &q)?;
    let n = app.manager.offboard_tenant(&tenant, uid.as_deref());
    tracing::info!(tenant = %tenant, destroyed = n, "tenant offboarded");
    Ok(Json(json!({ "Tenant": tenant.as_str(), "DestroyedEnvironments": n })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TenantLimitIn {
    max_concurrency_per_tenant: Option<i64>,
}

/// Beyond Lambda: cap how many invocations of a function one tenant may have in flight.
async fn put_tenant_limit(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let input: TenantLimitIn = crate::wire::parse(&body)?;
    let n =
        input.max_concurrency_per_tenant.ok_or_else(|| ApiError::invalid("MaxConcurrencyPerTenant is required."))?;
    let n = u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
        ApiError::invalid(format!("MaxConcurrencyPerTenant must be between 1 and {}, not {n}.", u32::MAX))
    })?;
    let a = app.clone();
    let fname = r.name.as_str().to_owned();
    blocking(move || a.control.set_tenant_concurrency(&fname, Some(n))).await?;
    Ok(Json(json!({ "MaxConcurrencyPerTenant": n })).into_response())
}

async fn get_tenant_limit(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let e = app.control.get(r.name.as_str())?;
    Ok(Json(match e.tenant_concurrency {
        Some(n) => json!({ "MaxConcurrencyPerTenant": n }),
        None => json!({}),
    })
    .into_response())
}

async fn delete_tenant_limit(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let a = app.clone();
    let fname = r.name.as_str().to_owned();
    blocking(move || a.control.set_tenant_concurrency(&fname, None)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Recent log records of a function, optionally of one tenant.
async fn logs(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let f = q.get("function").ok_or_else(|| ApiError::invalid("The 'function' query parameter is required."))?;
    let r = FunctionRef::parse(f, None)?;
    let e = app.control.get(r.name.as_str())?;
    let group = e.latest.config.logging.log_group.clone();
    let tenant = q.get("tenant").map(|t| TenantId::parse(t)).transpose()?;
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(100usize).min(10_000);
    let level = q.get("level").map(|l| l.to_ascii_uppercase());
    let logs = app.logs.clone();
    let records = blocking(move || {
        logs.read(&group, tenant.as_ref().map(|t| t.as_str()), level.as_deref(), limit)
            .map_err(|e| quarters_control::ControlError::Internal(e.to_string()))
    })
    .await
    .map_err(ApiError::from)?;
    Ok(Json(json!({ "Records": records, "Dropped": app.logs.dropped() })).into_response())
}

/// Live tail (server-sent events): every new record of a function, optionally only of one
/// tenant, one stream, or matching a CloudWatch filter pattern. `data:` lines carry the record
/// as JSON; `: lost N` says when the listener fell behind.
async fn tail(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let f = q.get("function").ok_or_else(|| ApiError::invalid("The 'function' query parameter is required."))?;
    let r = FunctionRef::parse(f, None)?;
    let group: Arc<str> = app.control.get(r.name.as_str())?.latest.config.logging.log_group.as_str().into();
    let tenant = q.get("tenant").map(|t| TenantId::parse(t)).transpose()?;
    let stream = q.get("stream").cloned();
    let pattern = quarters_telemetry::filter::FilterPattern::parse(q.get("filter").map(String::as_str).unwrap_or(""))
        .map_err(|e| ApiError::invalid(format!("Invalid filter pattern: {e}")))?;
    let rx = app.logs.subscribe();
    let keep = move |rec: &quarters_telemetry::LogRecord| {
        rec.log_group == group
            && tenant.as_ref().is_none_or(|t| rec.tenant.as_ref() == Some(t))
            && stream.as_deref().is_none_or(|s| &*rec.log_stream == s)
            && pattern.matches(&rec.message)
    };
    let events = futures_util::stream::unfold((rx, keep), |(mut rx, keep)| async move {
        loop {
            let chunk = match tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv()).await {
                // A comment now and then keeps proxies from closing an idle stream.
                Err(_) => ": keep-alive\n\n".to_string(),
                Ok(Ok(rec)) if keep(&rec) => {
                    let v = json!({
                        "timestamp": rec.ts_ms,
                        "logStream": &*rec.log_stream,
                        "tenant": rec.tenant.as_ref().map(|t| t.as_str()),
                        "requestId": rec.request_id.as_deref(),
                        "message": rec.message,
                    });
                    format!("data: {v}\n\n")
                }
                Ok(Ok(_)) => continue,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => format!(": lost {n}\n\n"),
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => return None,
            };
            return Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(chunk)), (rx, keep)));
        }
    });
    let mut resp = axum::body::Body::from_stream(events).into_response();
    let h = resp.headers_mut();
    h.insert("content-type", axum::http::HeaderValue::from_static("text/event-stream"));
    h.insert("cache-control", axum::http::HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// Metrics logged in Embedded Metric Format: `?namespace=&metric=&function=&tenant=`, each
/// optional.
async fn emf_metrics(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let get = |k: &str| q.get(k).map(String::as_str);
    let series = app.logs.emf().query(get("namespace"), get("metric"), get("function"), get("tenant"));
    let items: Vec<serde_json::Value> = series
        .iter()
        .map(|(k, s)| {
            json!({
                "Namespace": k.namespace,
                "MetricName": k.metric,
                "Unit": k.unit,
                "Dimensions": k.dimensions.iter().map(|(n, v)| json!({ "Name": n, "Value": v })).collect::<Vec<_>>(),
                "Function": k.function,
                "Tenant": k.tenant,
                "SampleCount": s.count,
                "Sum": s.sum,
                "Minimum": s.min,
                "Maximum": s.max,
                "Average": if s.count > 0 { s.sum / s.count as f64 } else { 0.0 },
            })
        })
        .collect();
    Ok(Json(json!({ "Metrics": items, "DroppedSeries": app.logs.emf().dropped() })).into_response())
}

/// A log group's retention, beyond CloudWatch's by-age policy: `?group=G&maxBytes=N` (or
/// `maxBytes=none`), and optionally `retentionInDays=D` (or `none`). Applied at once and every
/// minute.
async fn log_group_limits(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let group = q.get("group").cloned().ok_or_else(|| ApiError::invalid("The 'group' query parameter is required."))?;
    let opt = |k: &str| -> Result<Option<Option<u64>>, ApiError> {
        match q.get(k).map(String::as_str) {
            None => Ok(None),
            Some("none") => Ok(Some(None)),
            Some(v) => v
                .parse::<u64>()
                .map(|n| Some(Some(n)))
                .map_err(|_| ApiError::invalid(format!("'{k}' must be a number or 'none'"))),
        }
    };
    let (max_bytes, days) = (opt("maxBytes")?, opt("retentionInDays")?);
    let logs = app.logs.clone();
    let g = group.clone();
    let deleted = blocking(move || {
        let run = || -> Result<usize, quarters_telemetry::TelemetryError> {
            if let Some(b) = max_bytes {
                logs.set_size_limit(&g, b)?;
            }
            if let Some(d) = days {
                logs.set_retention(&g, d.map(|d| d.min(u64::from(u32::MAX)) as u32))?;
            }
            logs.enforce_retention(quarters_types::time::now_ms())
        };
        run().map_err(|e| quarters_control::ControlError::Internal(e.to_string()))
    })
    .await
    .map_err(ApiError::from)?;
    Ok(Json(json!({ "LogGroup": group, "Deleted": deleted })).into_response())
}

/// Usage per hour (beyond Lambda): `?tenant=T&function=F&from=<epoch ms>&to=<epoch ms>`, every
/// filter optional. Counted on every invocation and written every few seconds; read after a flush.
async fn usage(State(app): State<Arc<App>>, q: Q) -> Result<Response, ApiError> {
    let tenant = q.get("tenant").map(|t| TenantId::parse(t)).transpose()?;
    let function = q.get("function").cloned();
    let ms = |k: &str| -> Result<Option<u64>, ApiError> {
        q.get(k)
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::invalid(format!("'{k}' must be epoch milliseconds"))))
            .transpose()
    };
    let (from, to) = (ms("from")?.unwrap_or(0), ms("to")?.unwrap_or(u64::MAX));
    let (logs, meter) = (app.logs.clone(), app.usage.clone());
    let rows = blocking(move || {
        meter
            .flush(&logs)
            .and_then(|_| logs.usage(tenant.as_ref().map(|t| t.as_str()), function.as_deref(), from, to))
            .map_err(|e| quarters_control::ControlError::Internal(e.to_string()))
    })
    .await
    .map_err(ApiError::from)?;
    let mut total = quarters_telemetry::usage::UsageRow::default();
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            total.invocations += r.invocations;
            total.errors += r.errors;
            total.gb_seconds += r.gb_seconds;
            total.bytes_in += r.bytes_in;
            total.bytes_out += r.bytes_out;
            json!({
                "Hour": quarters_types::time::rfc3339_ms(r.hour_ms),
                "Function": r.function,
                "Tenant": r.tenant,
                "Invocations": r.invocations,
                "Errors": r.errors,
                "GBSeconds": (r.gb_seconds * 1e6).round() / 1e6,
                "BytesIn": r.bytes_in,
                "BytesOut": r.bytes_out,
            })
        })
        .collect();
    Ok(Json(json!({
        "Usage": items,
        "Total": {
            "Invocations": total.invocations,
            "Errors": total.errors,
            "GBSeconds": (total.gb_seconds * 1e6).round() / 1e6,
            "BytesIn": total.bytes_in,
            "BytesOut": total.bytes_out,
        },
    }))
    .into_response())
}

/// Download a stored code package (GetFunction's `Code.Location`).
async fn code(State(app): State<Arc<App>>, Path(sha): Path<String>) -> Result<Response, ApiError> {
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::not_found("No such code package"));
    }
    let path = app.control.code_store().zip_path(&quarters_types::CodeInfo {
        sha256_hex: sha,
        sha256_b64: String::new(),
        size: 0,
    });
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((StatusCode::OK, [("content-type", "application/zip")], bytes).into_response()),
        Err(_) => Err(ApiError::not_found("No such code package")),
    }
}

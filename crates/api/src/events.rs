//! Asynchronous (Event) invocations: the durable queue's view of the platform, and the
//! FunctionEventInvokeConfig operations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use quarters_control::{ControlError, ControlPlane, EventInvokeSettings, FunctionEntry};
use quarters_events::{BoxFuture, EventInvokeConfig, InvokeOutcome, Invoker, QueuedEvent};
use quarters_invoke::{InvokeError, InvokeRequest, Manager};
use quarters_types::time::now_ms;
use quarters_types::{FunctionRef, Qualifier, TenantId, ValidationError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::lambda::target_of;
use crate::{App, blocking};

/// Runs queued events through the environment manager, resolving the function anew on every
/// attempt (its code or configuration may have changed since the event was queued).
#[derive(Clone)]
pub struct ManagerInvoker {
    pub control: Arc<ControlPlane>,
    pub manager: Manager,
    pub metrics: Arc<quarters_telemetry::metrics::Metrics>,
    pub usage: Arc<quarters_telemetry::usage::UsageMeter>,
}

/// Why an invocation by name did not run.
pub(crate) enum Refused {
    /// The request can never succeed (no such function, bad tenant id...).
    Rejected(String),
    Throttled,
    Failed(String),
}

impl ManagerInvoker {
    /// Invoke a function by name (and qualifier) for a tenant, as the Invoke API would.
    pub(crate) async fn call(
        &self,
        function: &str,
        qualifier: Option<&str>,
        tenant: Option<&str>,
        payload: bytes::Bytes,
        client_context: Option<String>,
        request_id: String,
    ) -> Result<quarters_invoke::InvokeResponse, Refused> {
        let q = qualifier.map(Qualifier::parse).transpose().map_err(|e| Refused::Rejected(e.to_string()))?;
        let resolved = match self.control.resolve(function, q.as_ref()) {
            Ok(r) => r,
            Err(ControlError::NotFound(m)) => return Err(Refused::Rejected(m)),
            Err(e) => return Err(Refused::Failed(e.to_string())),
        };
        let tenant = tenant.map(TenantId::parse).transpose().map_err(|e| Refused::Rejected(e.to_string()))?;
        if resolved.version.config.tenancy.is_some() != tenant.is_some() {
            return Err(Refused::Rejected("the tenant id does not match the function's tenancy configuration".into()));
        }
        let arns = &self.control.arns;
        let arn = match qualifier {
            Some(q) => arns.qualified(function, q),
            None => arns.function(function),
        };
        let req = InvokeRequest {
            target: target_of(&resolved, arn),
            tenant,
            payload,
            client_context,
            tail: false,
            request_id,
        };
        match crate::invoke_counted(&self.metrics, &self.usage, &self.manager, req).await {
            Ok(r) => Ok(r),
            Err(InvokeError::TooManyRequests { .. }) => Err(Refused::Throttled),
            Err(e) => Err(Refused::Failed(e.to_string())),
        }
    }
}

impl Invoker for ManagerInvoker {
    fn invoke<'a>(&'a self, ev: &'a QueuedEvent) -> BoxFuture<'a, InvokeOutcome> {
        Box::pin(async move {
            let out = self
                .call(
                    &ev.function,
                    ev.qualifier.as_deref(),
                    ev.tenant.as_deref(),
                    ev.payload.clone(),
                    ev.client_context.clone(),
                    ev.request_id.clone(),
                )
                .await;
            match out {
                Ok(r) if r.function_error => {
                    InvokeOutcome::FunctionError { body: r.body, executed_version: r.executed_version.to_string() }
                }
                Ok(r) => InvokeOutcome::Success { body: r.body, executed_version: r.executed_version.to_string() },
                Err(Refused::Rejected(m)) => InvokeOutcome::Rejected(m),
                Err(Refused::Throttled) => InvokeOutcome::Throttled,
                Err(Refused::Failed(m)) => InvokeOutcome::Failed(m),
            }
        })
    }

    fn event_config(&self, function: &str, qualifier: Option<&str>) -> EventInvokeConfig {
        let Ok(e) = self.control.get(function) else { return EventInvokeConfig::default() };
        let s = e.event_invoke.get(qualifier.unwrap_or("$LATEST")).or_else(|| e.event_invoke.get("$LATEST"));
        match s {
            None => EventInvokeConfig::default(),
            Some(s) => {
                let d = EventInvokeConfig::default();
                EventInvokeConfig {
                    maximum_retry_attempts: s.maximum_retry_attempts.unwrap_or(d.maximum_retry_attempts),
                    maximum_event_age_s: s.maximum_event_age_s.unwrap_or(d.maximum_event_age_s),
                    on_success: s.on_success.clone(),
                    on_failure: s.on_failure.clone(),
                }
                .normalized()
            }
        }
    }
}

type Q = Query<HashMap<String, String>>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationIn {
    destination: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DestinationConfigIn {
    on_success: Option<DestinationIn>,
    on_failure: Option<DestinationIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventInvokeConfigIn {
    maximum_retry_attempts: Option<i64>,
    maximum_event_age_in_seconds: Option<i64>,
    destination_config: Option<DestinationConfigIn>,
}

fn qualifier_of(q: &Q) -> Result<String, ApiError> {
    match q.get("Qualifier").filter(|s| !s.is_empty()) {
        Some(s) => Ok(Qualifier::parse(s)?.to_string()),
        None => Ok("$LATEST".into()),
    }
}

fn destination(d: Option<DestinationIn>) -> Result<Option<String>, ApiError> {
    match d.and_then(|d| d.destination) {
        None => Ok(None),
        Some(arn) if quarters_events::parse_function_destination(&arn).is_some() => Ok(Some(arn)),
        Some(arn) => Err(ApiError::invalid(format!(
            "The destination ARN {arn} is not supported by this Quarters server; use a Lambda function ARN."
        ))),
    }
}

fn config_body(app: &App, name: &str, qualifier: &str, s: &EventInvokeSettings) -> Value {
    let dest = |d: &Option<String>| match d {
        Some(x) => json!({ "Destination": x }),
        None => json!({}),
    };
    json!({
        "LastModified": s.last_modified_ms as f64 / 1000.0,
        "FunctionArn": app.control.arns.qualified(name, qualifier),
        "MaximumRetryAttempts": s.maximum_retry_attempts.unwrap_or(2),
        "MaximumEventAgeInSeconds": s.maximum_event_age_s.unwrap_or(21_600),
        "DestinationConfig": { "OnSuccess": dest(&s.on_success), "OnFailure": dest(&s.on_failure) },
    })
}

fn not_configured(app: &App, name: &str, qualifier: &str) -> ApiError {
    ApiError::not_found(format!(
        "The function {} doesn't have an EventInvokeConfig",
        app.control.arns.qualified(name, qualifier)
    ))
}

/// Put (replace) or Update (merge) a FunctionEventInvokeConfig.
async fn store(app: Arc<App>, name: String, q: Q, body: Bytes, merge: bool) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let qualifier = qualifier_of(&q)?;
    let input: EventInvokeConfigIn = crate::wire::parse(&body)?;
    let e: Arc<FunctionEntry> = app.control.get(r.name.as_str())?;
    let base = if merge { e.event_invoke.get(&qualifier).cloned() } else { None };
    if merge && base.is_none() {
        return Err(not_configured(&app, r.name.as_str(), &qualifier));
    }
    let retries = input
        .maximum_retry_attempts
        .map(|n| {
            u32::try_from(n).ok().filter(|n| *n <= 2).ok_or_else(|| {
                ApiError::from(ValidationError::constraint(
                    &n.to_string(),
                    "maximumRetryAttempts",
                    "Member must have value less than or equal to 2",
                ))
            })
        })
        .transpose()?;
    let age = input
        .maximum_event_age_in_seconds
        .map(|n| {
            u32::try_from(n).ok().filter(|n| (60..=21_600).contains(n)).ok_or_else(|| {
                ApiError::from(ValidationError::constraint(
                    &n.to_string(),
                    "maximumEventAgeInSeconds",
                    "Member must have value between 60 and 21600",
                ))
            })
        })
        .transpose()?;
    let dc = input.destination_config.unwrap_or_default();
    let (on_success, on_failure) = (destination(dc.on_success)?, destination(dc.on_failure)?);
    let base = base.unwrap_or(EventInvokeSettings {
        maximum_retry_attempts: None,
        maximum_event_age_s: None,
        on_success: None,
        on_failure: None,
        last_modified_ms: 0,
    });
    let settings = EventInvokeSettings {
        maximum_retry_attempts: retries.or(base.maximum_retry_attempts),
        maximum_event_age_s: age.or(base.maximum_event_age_s),
        on_success: on_success.or(base.on_success),
        on_failure: on_failure.or(base.on_failure),
        last_modified_ms: now_ms(),
    };
    let a = app.clone();
    let (n, qs, st) = (r.name.as_str().to_owned(), qualifier.clone(), settings.clone());
    blocking(move || a.control.set_event_invoke(&n, &qs, Some(st))).await?;
    Ok(Json(config_body(&app, r.name.as_str(), &qualifier, &settings)).into_response())
}

pub async fn put_config(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    q: Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    store(app, name, q, body, false).await
}

pub async fn update_config(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    q: Q,
    body: Bytes,
) -> Result<Response, ApiError> {
    store(app, name, q, body, true).await
}

pub async fn get_config(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let qualifier = qualifier_of(&q)?;
    let e = app.control.get(r.name.as_str())?;
    let s = e.event_invoke.get(&qualifier).ok_or_else(|| not_configured(&app, r.name.as_str(), &qualifier))?;
    Ok(Json(config_body(&app, r.name.as_str(), &qualifier, s)).into_response())
}

pub async fn delete_config(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let qualifier = qualifier_of(&q)?;
    let e = app.control.get(r.name.as_str())?;
    if !e.event_invoke.contains_key(&qualifier) {
        return Err(not_configured(&app, r.name.as_str(), &qualifier));
    }
    let a = app.clone();
    let n = r.name.as_str().to_owned();
    blocking(move || a.control.set_event_invoke(&n, &qualifier, None)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_configs(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let r = FunctionRef::parse(&name, None)?;
    let e = app.control.get(r.name.as_str())?;
    let items: Vec<Value> = e.event_invoke.iter().map(|(q, s)| config_body(&app, r.name.as_str(), q, s)).collect();
    Ok(Json(json!({ "FunctionEventInvokeConfigs": items })).into_response())
}

/// How the asynchronous queue is doing: counts and the oldest event's age.
pub async fn stats(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let total = app.events.stats().await.map_err(|e| ApiError::internal(e.to_string()))?;
    let per_function = app.events.function_stats().await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Json(json!({ "Total": total, "Functions": per_function })).into_response())
}

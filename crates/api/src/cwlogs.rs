//! A CloudWatch Logs-compatible API (awsJson1.1, `X-Amz-Target: Logs_20140328.<Operation>`)
//! over the log store, on the same endpoint as the Lambda API, so `aws logs ... --endpoint-url`
//! works: DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents (plain terms and
//! JSON patterns), PutRetentionPolicy, DeleteRetentionPolicy, and Logs Insights queries
//! (StartQuery, GetQueryResults, StopQuery) in the subset of `quarters_telemetry::insights`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use quarters_telemetry::filter::FilterPattern;
use quarters_telemetry::insights::Query;
use quarters_telemetry::{EventQuery, LogStore, StreamPage};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::{App, blocking};

pub(crate) const TARGET_PREFIX: &str = "Logs_20140328.";
/// Retention values CloudWatch Logs accepts.
const RETENTION_DAYS: &[u32] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::json11("InvalidParameterException", msg)
}

fn no_group() -> ApiError {
    ApiError::json11("ResourceNotFoundException", "The specified log group does not exist.")
}

fn store_error(e: quarters_telemetry::TelemetryError) -> ApiError {
    tracing::error!(error = %e, "log store query failed");
    ApiError::json11("ServiceUnavailableException", e.to_string())
}

fn reply(v: Value) -> Response {
    let mut resp = axum::Json(v).into_response();
    resp.headers_mut().insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
    resp
}

/// Whether a request is for this API (by its `X-Amz-Target`).
pub fn is_logs(headers: &HeaderMap) -> bool {
    headers.get("x-amz-target").and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with(TARGET_PREFIX))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Input {
    log_group_name: Option<String>,
    log_group_name_prefix: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: Option<String>,
    log_stream_name_prefix: Option<String>,
    log_stream_names: Option<Vec<String>>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    limit: Option<i64>,
    next_token: Option<String>,
    start_from_head: Option<bool>,
    order_by: Option<String>,
    descending: Option<bool>,
    retention_in_days: Option<i64>,
    log_group_identifiers: Option<Vec<String>>,
    log_group_names: Option<Vec<String>>,
    query_string: Option<String>,
    query_id: Option<String>,
}

/// Rows an Insights query reads at most.
const QUERY_SCAN: usize = 500_000;
/// Finished queries kept for GetQueryResults.
const QUERIES_KEPT: usize = 1_000;

/// A finished query.
#[derive(Debug, Clone)]
pub struct QueryDone {
    rows: Vec<quarters_telemetry::insights::ResultRow>,
    matched: usize,
    scanned: usize,
    bytes: usize,
}

#[derive(Debug, Clone)]
pub enum QueryState {
    Running,
    Complete(Arc<QueryDone>),
    Failed(String),
    Cancelled,
}

/// Logs Insights queries by id: running, and the last finished ones.
#[derive(Debug, Default)]
pub struct Queries {
    by_id: std::sync::Mutex<(std::collections::HashMap<String, QueryState>, std::collections::VecDeque<String>)>,
}

impl Queries {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (std::collections::HashMap<String, QueryState>, std::collections::VecDeque<String>)>
    {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let mut g = self.lock();
        g.0.insert(id.clone(), QueryState::Running);
        g.1.push_back(id.clone());
        while g.1.len() > QUERIES_KEPT {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
        id
    }

    fn finish(&self, id: &str, r: Result<QueryDone, String>) {
        let mut g = self.lock();
        if let Some(s) = g.0.get_mut(id)
            && matches!(s, QueryState::Running)
        {
            *s = match r {
                Ok(d) => QueryState::Complete(Arc::new(d)),
                Err(e) => QueryState::Failed(e),
            };
        }
    }

    fn cancel(&self, id: &str) {
        if let Some(s) = self.lock().0.get_mut(id) {
            *s = QueryState::Cancelled;
        }
    }

    fn get(&self, id: &str) -> Option<QueryState> {
        self.lock().0.get(id).cloned()
    }
}

impl Input {
    fn group(&self) -> Result<String, ApiError> {
        let g = self
            .log_group_name
            .clone()
            .or_else(|| {
                // An identifier may be a name or an ARN (`arn:...:log-group:<name>[:*]`).
                self.log_group_identifier.as_ref().map(|id| match id.split_once(":log-group:") {
                    Some((_, rest)) => rest.trim_end_matches(":*").to_string(),
                    None => id.clone(),
                })
            })
            .ok_or_else(|| invalid("1 validation error detected: Value null at 'logGroupName' failed to satisfy constraint: Member must not be null"))?;
        if g.is_empty() || g.len() > 512 {
            return Err(invalid(format!(
                "1 validation error detected: Value '{g}' at 'logGroupName' failed to satisfy constraint: Member must have length between 1 and 512"
            )));
        }
        Ok(g)
    }

    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(default),
            Some(n) if n >= 1 && n as usize <= max => Ok(n as usize),
            Some(n) => Err(invalid(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
            ))),
        }
    }

    fn query(&self) -> EventQuery {
        EventQuery {
            streams: self.log_stream_names.clone().unwrap_or_default(),
            stream_prefix: self.log_stream_name_prefix.clone(),
            start_ms: self.start_time.map(|t| t.max(0) as u64),
            end_ms: self.end_time.map(|t| t.max(0) as u64),
        }
    }
}

fn token_of(kind: &str, id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}/{id}"))
}

fn id_of(token: &str) -> Result<(String, i64), ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once('/').and_then(|(k, i)| i.parse().ok().map(|i| (k.to_string(), i))))
        .ok_or_else(|| invalid("The specified nextToken is invalid."))
}

/// A page of `items` (already sorted) after the name in `token`.
fn page_by_name<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> &str,
    token: Option<&str>,
    limit: usize,
) -> (Vec<T>, Option<String>) {
    let after = token.and_then(|t| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t).ok().and_then(|b| String::from_utf8(b).ok())
    });
    let mut rest: Vec<T> = items.into_iter().filter(|i| after.as_deref().is_none_or(|a| name(i) > a)).collect();
    let next =
        (rest.len() > limit).then(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name(&rest[limit - 1])));
    rest.truncate(limit);
    (rest, next)
}

async fn group_exists(logs: &Arc<LogStore>, group: &str) -> Result<bool, ApiError> {
    let (l, g) = (logs.clone(), group.to_string());
    let groups = blocking(move || l.groups(Some(&g)).map_err(store_error)).await?;
    Ok(groups.iter().any(|x| x.name == group))
}

/// POST / with `X-Amz-Target: Logs_20140328.<Operation>`.
pub async fn dispatch(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or(target).to_string();
    let input: Input = if body.iter().all(u8::is_ascii_whitespace) {
        Input::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::json11("SerializationException", e.to_string()))?
    };
    let logs = app.logs.clone();
    let arns = &app.control.arns;
    match op.as_str() {
        "DescribeLogGroups" => {
            let limit = input.limit(50, 50)?;
            let prefix = input.log_group_name_prefix.clone();
            let l = logs.clone();
            let groups = blocking(move || l.groups(prefix.as_deref()).map_err(store_error)).await?;
            let (page, next) = page_by_name(groups, |g| g.name.as_str(), input.next_token.as_deref(), limit);
            let items: Vec<Value> = page
                .iter()
                .map(|g| {
                    let arn = format!("arn:aws:logs:{}:{}:log-group:{}", arns.region, arns.account, g.name);
                    let mut v = json!({
                        "logGroupName": g.name,
                        "creationTime": g.created_ms,
                        "metricFilterCount": 0,
                        "storedBytes": g.stored_bytes,
                        "arn": format!("{arn}:*"),
                        "logGroupArn": arn,
                        "logGroupClass": "STANDARD",
                    });
                    if let Some(d) = g.retention_days {
                        v["retentionInDays"] = d.into();
                    }
                    v
                })
                .collect();
            let mut out = json!({ "logGroups": items });
            if let Some(n) = next {
                out["nextToken"] = n.into();
            }
            Ok(reply(out))
        }
        "DescribeLogStreams" => {
            let group = input.group()?;
            let limit = input.limit(50, 50)?;
            if !group_exists(&logs, &group).await? {
                return Err(no_group());
            }
            let (l, g, prefix) = (logs.clone(), group.clone(), input.log_stream_name_prefix.clone());
            let mut streams = blocking(move || l.streams(&g, prefix.as_deref()).map_err(store_error)).await?;
            let by_time = input.order_by.as_deref() == Some("LastEventTime");
            if by_time {
                if input.log_stream_name_prefix.is_some() {
                    return Err(invalid("Cannot order by LastEventTime with a logStreamNamePrefix."));
                }
                streams.sort_by_key(|s| (s.last_ms, s.name.clone()));
            }
            if input.descending.unwrap_or(false) {
                streams.reverse();
            }
            // Pages follow the order: the token is the position.
            let start = match &input.next_token {
                Some(t) => id_of(t)?.1.max(0) as usize,
                None => 0,
            };
            let end = (start + limit).min(streams.len());
            let items: Vec<Value> = streams[start.min(end)..end]
                .iter()
                .map(|s| {
                    json!({
                        "logStreamName": s.name,
                        "creationTime": s.first_ms,
                        "firstEventTimestamp": s.first_ms,
                        "lastEventTimestamp": s.last_ms,
                        "lastIngestionTime": s.last_ms,
                        "uploadSequenceToken": "1",
                        "arn": format!("arn:aws:logs:{}:{}:log-group:{}:log-stream:{}", arns.region, arns.account, group, s.name),
                        "storedBytes": s.stored_bytes,
                    })
                })
                .collect();
            let mut out = json!({ "logStreams": items });
            if end < streams.len() {
                out["nextToken"] = token_of("p", end as i64).into();
            }
            Ok(reply(out))
        }
        "GetLogEvents" => {
            let group = input.group()?;
            let stream = input.log_stream_name.clone().ok_or_else(|| {
                invalid("1 validation error detected: Value null at 'logStreamName' failed to satisfy constraint: Member must not be null")
            })?;
            let limit = input.limit(10_000, 10_000)?;
            if !group_exists(&logs, &group).await? {
                return Err(no_group());
            }
            let (after, before, forward) = match &input.next_token {
                Some(t) => match id_of(t)? {
                    (k, id) if k == "f" => (Some(id), None, true),
                    (_, id) => (None, Some(id), false),
                },
                None => (None, None, input.start_from_head.unwrap_or(false)),
            };
            let q = input.query();
            let (l, g, s) = (logs.clone(), group.clone(), stream.clone());
            let events = blocking(move || {
                l.stream_events(&g, &s, &q, StreamPage { after, before, forward, limit }).map_err(store_error)
            })
            .await?;
            // The tokens stay where they are when a page is empty, as CloudWatch's do.
            let first = events.first().map(|e| e.id).or(before).or(after).unwrap_or(0);
            let last = events.last().map(|e| e.id).or(after).or(before.map(|b| b - 1)).unwrap_or(0);
            let items: Vec<Value> = events
                .iter()
                .map(|e| json!({ "timestamp": e.ts_ms, "message": e.message, "ingestionTime": e.ts_ms }))
                .collect();
            Ok(reply(json!({
                "events": items,
                "nextForwardToken": token_of("f", last),
                "nextBackwardToken": token_of("b", first),
            })))
        }
        "FilterLogEvents" => {
            let group = input.group()?;
            let limit = input.limit(10_000, 10_000)?;
            if input.log_stream_names.is_some() && input.log_stream_name_prefix.is_some() {
                return Err(invalid("logStreamNames and logStreamNamePrefix are mutually exclusive"));
            }
            let pattern = FilterPattern::parse(input.filter_pattern.as_deref().unwrap_or(""))
                .map_err(|e| invalid(format!("Invalid filter pattern: {e}")))?;
            if !group_exists(&logs, &group).await? {
                return Err(no_group());
            }
            let after = input.next_token.as_deref().map(id_of).transpose()?.map(|(_, id)| id);
            let q = input.query();
            let (l, g) = (logs.clone(), group.clone());
            let (events, next) =
                blocking(move || l.filter(&g, &q, &pattern, after, limit).map_err(store_error)).await?;
            let items: Vec<Value> = events
                .iter()
                .map(|e| {
                    json!({
                        "logStreamName": e.log_stream,
                        "timestamp": e.ts_ms,
                        "message": e.message,
                        "ingestionTime": e.ts_ms,
                        "eventId": format!("{:020}", e.id),
                    })
                })
                .collect();
            let mut out = json!({ "events": items, "searchedLogStreams": [] });
            if let Some(n) = next {
                out["nextToken"] = token_of("n", n).into();
            }
            Ok(reply(out))
        }
        "PutRetentionPolicy" | "DeleteRetentionPolicy" => {
            let group = input.group()?;
            let days = if op == "PutRetentionPolicy" {
                let d = input.retention_in_days.ok_or_else(|| {
                    invalid("1 validation error detected: Value null at 'retentionInDays' failed to satisfy constraint: Member must not be null")
                })?;
                if !RETENTION_DAYS.contains(&(d as u32)) || d < 0 {
                    return Err(invalid(format!(
                        "1 validation error detected: Value '{d}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: {RETENTION_DAYS:?}"
                    )));
                }
                Some(d as u32)
            } else {
                None
            };
            if !group_exists(&logs, &group).await? {
                return Err(no_group());
            }
            let l = logs.clone();
            blocking(move || {
                l.set_retention(&group, days).map_err(store_error)?;
                l.enforce_retention(quarters_types::time::now_ms()).map_err(store_error)
            })
            .await?;
            Ok(reply(json!({})))
        }
        "StartQuery" => {
            let mut groups: Vec<String> = input.log_group_names.clone().unwrap_or_default();
            groups.extend(input.log_group_identifiers.clone().unwrap_or_default().into_iter().map(|id| {
                match id.split_once(":log-group:") {
                    Some((_, rest)) => rest.trim_end_matches(":*").to_string(),
                    None => id,
                }
            }));
            if let Some(g) = &input.log_group_name {
                groups.push(g.clone());
            }
            if groups.is_empty() {
                return Err(invalid("Log group names or identifiers must be specified."));
            }
            let text = input.query_string.clone().ok_or_else(|| {
                invalid("1 validation error detected: Value null at 'queryString' failed to satisfy constraint: Member must not be null")
            })?;
            let (Some(start), Some(end)) = (input.start_time, input.end_time) else {
                return Err(invalid("startTime and endTime are required."));
            };
            if end < start {
                return Err(invalid("End time should not be before the start time"));
            }
            let query = Query::parse(&text).map_err(|e| ApiError::json11("MalformedQueryException", e))?;
            for g in &groups {
                if !group_exists(&logs, g).await? {
                    return Err(ApiError::json11(
                        "ResourceNotFoundException",
                        format!("Log group '{g}' does not exist for account ID '{}'", arns.account),
                    ));
                }
            }
            let limit = input.limit.map(|l| l.clamp(1, 10_000) as usize);
            let id = app.queries.start();
            let (book, qid, l) = (app.queries.clone(), id.clone(), logs.clone());
            tokio::task::spawn_blocking(move || {
                let tenants = query.tenant_hint();
                let events = l.query_events(
                    &groups,
                    (start.max(0) as u64) * 1000,
                    (end.max(0) as u64) * 1000 + 999,
                    tenants.as_deref(),
                    QUERY_SCAN,
                );
                match events {
                    Ok(events) => {
                        let scanned = events.len();
                        let bytes: usize = events.iter().map(|(_, e)| e.message.len()).sum();
                        let (mut rows, matched) = quarters_telemetry::insights::run(&query, &events);
                        if let Some(n) = limit {
                            rows.truncate(n);
                        }
                        book.finish(&qid, Ok(QueryDone { rows, matched, scanned, bytes }));
                    }
                    Err(e) => book.finish(&qid, Err(e.to_string())),
                }
            });
            Ok(reply(json!({ "queryId": id })))
        }
        "GetQueryResults" => {
            let id = input.query_id.clone().ok_or_else(|| invalid("queryId is required."))?;
            let state = app
                .queries
                .get(&id)
                .ok_or_else(|| ApiError::json11("ResourceNotFoundException", format!("Query {id} does not exist.")))?;
            let (status, results, stats) = match state {
                QueryState::Running => ("Running", Vec::new(), (0, 0, 0)),
                QueryState::Cancelled => ("Cancelled", Vec::new(), (0, 0, 0)),
                QueryState::Failed(e) => {
                    tracing::warn!(query = %id, error = %e, "Insights query failed");
                    ("Failed", Vec::new(), (0, 0, 0))
                }
                QueryState::Complete(d) => {
                    let rows: Vec<Value> = d
                        .rows
                        .iter()
                        .map(|r| Value::Array(r.iter().map(|(f, v)| json!({ "field": f, "value": v })).collect()))
                        .collect();
                    ("Complete", rows, (d.matched, d.scanned, d.bytes))
                }
            };
            Ok(reply(json!({
                "results": results,
                "statistics": { "recordsMatched": stats.0 as f64, "recordsScanned": stats.1 as f64, "bytesScanned": stats.2 as f64 },
                "status": status,
            })))
        }
        "StopQuery" => {
            let id = input.query_id.clone().ok_or_else(|| invalid("queryId is required."))?;
            match app.queries.get(&id) {
                None => Err(ApiError::json11("ResourceNotFoundException", format!("Query {id} does not exist."))),
                Some(QueryState::Running) => {
                    app.queries.cancel(&id);
                    Ok(reply(json!({ "success": true })))
                }
                Some(_) => Ok(reply(json!({ "success": false }))),
            }
        }
        other => Err(ApiError::json11(
            "UnknownOperationException",
            format!("Quarters does not implement the CloudWatch Logs operation {other} yet."),
        )),
    }
}

//! Lambda proxy integration, as AWS API Gateway does it: the events sent to functions (payload
//! formats 1.0 and 2.0, authorizer inputs), the mapping of function responses back to HTTP, and
//! the integration request-parameter mapping expressions (`method.request.header.X`, ...).
//!
//! Everything here is pure: no IO, no clocks.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use serde_json::{Map, Value, json};

use crate::{AuthorizerResult, HttpResponse, InboundRequest, RequestContext, RouteMatch};

/// Base64 for function responses: standard alphabet, padding optional.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Hop-by-hop headers: never forwarded from a client request.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
];

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Headers grouped case-insensitively (the first spelling is kept), values in the order received.
fn group_headers(headers: &[(String, String)]) -> Vec<(&str, Vec<&str>)> {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in headers {
        match groups.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some((_, values)) => values.push(value),
            None => groups.push((name, vec![value])),
        }
    }
    groups
}

/// The last value of a header, name matched case-insensitively.
fn header_last<'a>(req: &'a InboundRequest, name: &str) -> Option<&'a str> {
    req.headers.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one query-string component byte by byte: `+` is a space, and a malformed
/// escape is kept as it is.
struct Decode<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Iterator for Decode<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(match b {
            b'+' => b' ',
            b'%' => {
                let hi = self.bytes.get(self.pos).copied().and_then(hex_digit);
                let lo = self.bytes.get(self.pos + 1).copied().and_then(hex_digit);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        self.pos += 2;
                        (hi << 4) | lo
                    }
                    _ => b'%',
                }
            }
            other => other,
        })
    }
}

fn decode(component: &str) -> Decode<'_> {
    Decode { bytes: component.as_bytes(), pos: 0 }
}

/// Bytes as a `String`, invalid UTF-8 replaced by U+FFFD.
fn bytes_to_string(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn decode_string(component: &str) -> String {
    bytes_to_string(decode(component).collect())
}

/// The raw `key=value` pairs of a query string, still percent-encoded (`key` alone means an empty value).
fn query_pairs(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// Query parameters decoded and grouped by name, in order of first appearance, values in order.
fn group_query(raw: &str) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (k, v) in query_pairs(raw) {
        let key = decode_string(k);
        if key.is_empty() {
            continue;
        }
        let value = decode_string(v);
        match groups.iter_mut().find(|(n, _)| *n == key) {
            Some((_, values)) => values.push(value),
            None => groups.push((key, vec![value])),
        }
    }
    groups
}

/// A JSON value as API Gateway stringifies it: strings as they are, numbers and booleans in
/// their JSON spelling, objects and arrays as compact JSON; `null` is no value.
fn stringify(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Like [`stringify`], taking the value (no copy of a string).
fn stringify_owned(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Every value of a map stringified (`null`s dropped).
fn stringify_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter().filter_map(|(k, v)| stringify(v).map(|s| (k.clone(), Value::String(s)))).collect()
}

/// A string map as JSON, or `null` when empty.
fn string_map_or_null(map: &BTreeMap<String, String>) -> Value {
    if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    }
}

/// `(body, isBase64Encoded)`: `null` when empty, text as is, other bytes base64.
fn body_fields(body: &[u8]) -> (Value, bool) {
    if body.is_empty() {
        return (Value::Null, false);
    }
    match std::str::from_utf8(body) {
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (Value::String(STANDARD.encode(body)), true),
    }
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31).
fn civil_from_days(days: i64) -> (i64, usize, i64) {
    let (y, m, d) = quarters_types::time::civil(days);
    (y, m as usize, i64::from(d))
}

/// Epoch milliseconds as API Gateway writes request times: `09/Apr/2015:12:34:56 +0000`.
pub fn format_request_time(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let month = MONTHS.get(month.wrapping_sub(1)).copied().unwrap_or("Jan");
    format!("{day:02}/{month}/{year:04}:{:02}:{:02}:{:02} +0000", rem / 3600, rem % 3600 / 60, rem % 60)
}

// ---------------------------------------------------------------------------------------------
// Payload format 1.0
// ---------------------------------------------------------------------------------------------

/// `(headers, multiValueHeaders)`: last value / all values per name; both `null` when there are none.
fn v1_headers(req: &InboundRequest) -> (Value, Value) {
    if req.headers.is_empty() {
        return (Value::Null, Value::Null);
    }
    let mut single = Map::new();
    let mut multi = Map::new();
    for (name, values) in group_headers(&req.headers) {
        let last = values.last().copied().unwrap_or_default();
        single.insert(name.to_owned(), Value::from(last));
        multi.insert(name.to_owned(), Value::from(values));
    }
    (Value::Object(single), Value::Object(multi))
}

/// `(queryStringParameters, multiValueQueryStringParameters)`; both `null` when there are none.
fn v1_query(req: &InboundRequest) -> (Value, Value) {
    let groups = group_query(&req.raw_query);
    if groups.is_empty() {
        return (Value::Null, Value::Null);
    }
    let mut single = Map::new();
    let mut multi = Map::new();
    for (name, values) in groups {
        let last = values.last().cloned().unwrap_or_default();
        single.insert(name.clone(), Value::String(last));
        multi.insert(name, Value::from(values));
    }
    (Value::Object(single), Value::Object(multi))
}

/// `requestContext.authorizer` for format 1.0: context values stringified, `principalId`, and
/// `claims` (stringified) for a JWT authorizer.
fn v1_authorizer(auth: &AuthorizerResult) -> Value {
    let mut out = stringify_map(&auth.context);
    if let Some(principal) = &auth.principal_id {
        out.insert("principalId".to_owned(), Value::String(principal.clone()));
    }
    if let Some(claims) = &auth.claims {
        out.insert("claims".to_owned(), Value::Object(stringify_map(claims)));
    }
    Value::Object(out)
}

/// `requestContext` for format 1.0 (also used by REQUEST authorizer inputs).
fn v1_request_context(req: &InboundRequest, route: &RouteMatch, ctx: &RequestContext) -> Value {
    let (api_key_id, api_key) = match &ctx.api_key {
        Some((id, value)) => (Value::String(id.clone()), Value::String(value.clone())),
        None => (Value::Null, Value::Null),
    };
    let mut rc = json!({
        "accountId": ctx.account_id,
        "apiId": ctx.api_id,
        "domainName": ctx.domain_name,
        "domainPrefix": ctx.domain_prefix,
        "extendedRequestId": ctx.request_id,
        "httpMethod": req.method,
        "identity": {
            "accessKey": null,
            "accountId": null,
            "apiKey": api_key,
            "apiKeyId": api_key_id,
            "caller": null,
            "clientCert": null,
            "cognitoAuthenticationProvider": null,
            "cognitoAuthenticationType": null,
            "cognitoIdentityId": null,
            "cognitoIdentityPoolId": null,
            "principalOrgId": null,
            "sourceIp": req.source_ip,
            "user": null,
            "userAgent": header_last(req, "user-agent"),
            "userArn": null,
        },
        "path": format!("/{}{}", ctx.stage, req.path),
        "protocol": "HTTP/1.1",
        "requestId": ctx.request_id,
        "requestTime": format_request_time(ctx.request_time_ms),
        "requestTimeEpoch": ctx.request_time_ms,
        "resourceId": route.resource_id,
        "resourcePath": route.resource_path,
        "stage": ctx.stage,
    });
    if let Some(auth) = &ctx.authorizer {
        rc["authorizer"] = v1_authorizer(auth);
    }
    rc
}

/// The Lambda proxy event, payload format 1.0, as a REST API sends it.
pub fn event_v1(req: &InboundRequest, route: &RouteMatch, ctx: &RequestContext) -> Value {
    let (headers, multi_headers) = v1_headers(req);
    let (query, multi_query) = v1_query(req);
    let (body, is_base64) = body_fields(&req.body);
    json!({
        "resource": route.resource_path,
        "path": req.path,
        "httpMethod": req.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": string_map_or_null(&route.path_params),
        "stageVariables": string_map_or_null(&ctx.stage_variables),
        "requestContext": v1_request_context(req, route, ctx),
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

// ---------------------------------------------------------------------------------------------
// Payload format 2.0
// ---------------------------------------------------------------------------------------------

/// The Lambda proxy event, payload format 2.0. Empty optional fields are left out, as AWS does.
///
/// `rawPath` and `requestContext.http.path` carry the stage (`/prod/orders/42`), as HTTP APIs do
/// for a named stage; the `$default` stage adds nothing.
pub fn event_v2(req: &InboundRequest, route: &RouteMatch, ctx: &RequestContext) -> Value {
    let mut headers = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for (name, value) in &req.headers {
        if name.eq_ignore_ascii_case("cookie") {
            cookies.extend(value.split(';').map(str::trim).filter(|c| !c.is_empty()).map(Value::from));
            continue;
        }
        let key = name.to_ascii_lowercase();
        match headers.get_mut(&key) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                headers.insert(key, Value::String(value.clone()));
            }
        }
    }

    let route_key = format!("{} {}", req.method, route.resource_path);
    let raw_path = if ctx.stage.is_empty() || ctx.stage == "$default" {
        req.path.clone()
    } else {
        format!("/{}{}", ctx.stage, req.path)
    };

    let mut http = Map::new();
    http.insert("method".to_owned(), Value::String(req.method.clone()));
    http.insert("path".to_owned(), Value::String(raw_path.clone()));
    http.insert("protocol".to_owned(), Value::from("HTTP/1.1"));
    http.insert("sourceIp".to_owned(), Value::String(req.source_ip.clone()));
    http.insert("userAgent".to_owned(), Value::from(header_last(req, "user-agent").unwrap_or_default()));

    let mut rc = Map::new();
    rc.insert("accountId".to_owned(), Value::String(ctx.account_id.clone()));
    rc.insert("apiId".to_owned(), Value::String(ctx.api_id.clone()));
    if let Some(auth) = &ctx.authorizer {
        let authorizer = match &auth.claims {
            Some(claims) => json!({ "jwt": { "claims": stringify_map(claims), "scopes": null } }),
            None => json!({ "lambda": auth.context }),
        };
        rc.insert("authorizer".to_owned(), authorizer);
    }
    rc.insert("domainName".to_owned(), Value::String(ctx.domain_name.clone()));
    rc.insert("domainPrefix".to_owned(), Value::String(ctx.domain_prefix.clone()));
    rc.insert("http".to_owned(), Value::Object(http));
    rc.insert("requestId".to_owned(), Value::String(ctx.request_id.clone()));
    rc.insert("routeKey".to_owned(), Value::String(route_key.clone()));
    rc.insert("stage".to_owned(), Value::String(ctx.stage.clone()));
    rc.insert("time".to_owned(), Value::String(format_request_time(ctx.request_time_ms)));
    rc.insert("timeEpoch".to_owned(), Value::from(ctx.request_time_ms));

    let mut event = Map::new();
    event.insert("version".to_owned(), Value::from("2.0"));
    event.insert("routeKey".to_owned(), Value::String(route_key));
    event.insert("rawPath".to_owned(), Value::String(raw_path));
    event.insert("rawQueryString".to_owned(), Value::String(req.raw_query.clone()));
    if !cookies.is_empty() {
        event.insert("cookies".to_owned(), Value::Array(cookies));
    }
    event.insert("headers".to_owned(), Value::Object(headers));
    let query: Map<String, Value> =
        group_query(&req.raw_query).into_iter().map(|(k, values)| (k, Value::String(values.join(",")))).collect();
    if !query.is_empty() {
        event.insert("queryStringParameters".to_owned(), Value::Object(query));
    }
    if !route.path_params.is_empty() {
        event.insert("pathParameters".to_owned(), string_map_or_null(&route.path_params));
    }
    if !ctx.stage_variables.is_empty() {
        event.insert("stageVariables".to_owned(), string_map_or_null(&ctx.stage_variables));
    }
    let (body, is_base64) = body_fields(&req.body);
    if !body.is_null() {
        event.insert("body".to_owned(), body);
    }
    event.insert("isBase64Encoded".to_owned(), Value::Bool(is_base64));
    event.insert("requestContext".to_owned(), Value::Object(rc));
    Value::Object(event)
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// A function's proxy response API Gateway cannot use; the caller answers with
/// [`malformed_gateway_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Malformed Lambda proxy response: {0}")]
pub struct MalformedResponse(pub String);

fn malformed(reason: impl Into<String>) -> MalformedResponse {
    MalformedResponse(reason.into())
}

/// `statusCode`: an integer or a string of digits in 100..=599; 200 when absent.
fn parse_status(value: Option<&Value>) -> Result<u16, MalformedResponse> {
    let code = match value {
        None | Some(Value::Null) => return Ok(200),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse::<u64>().ok(),
        Some(_) => None,
    };
    code.and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..=599).contains(c))
        .ok_or_else(|| malformed(format!("invalid statusCode {}", value.map(Value::to_string).unwrap_or_default())))
}

/// A header value: strings as they are, numbers and booleans stringified, `null` dropped.
fn header_value(name: &str, value: &Value) -> Result<Option<String>, MalformedResponse> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(_) | Value::Bool(_) => Ok(Some(value.to_string())),
        _ => Err(malformed(format!("header `{name}` is not a string"))),
    }
}

/// `headers`: an object of scalar values.
fn parse_headers(value: Option<&Value>) -> Result<Vec<(String, String)>, MalformedResponse> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(malformed("headers is not an object")),
    };
    let mut out = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        if let Some(v) = header_value(name, v)? {
            out.push((name.clone(), v));
        }
    }
    Ok(out)
}

/// `multiValueHeaders`: an object of arrays of scalar values.
fn parse_multi_headers(value: Option<&Value>) -> Result<Vec<(String, String)>, MalformedResponse> {
    let obj = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(obj)) => obj,
        Some(_) => return Err(malformed("multiValueHeaders is not an object")),
    };
    let mut out = Vec::new();
    for (name, values) in obj {
        match values {
            Value::Null => {}
            Value::Array(values) => {
                for v in values {
                    if let Some(v) = header_value(name, v)? {
                        out.push((name.clone(), v));
                    }
                }
            }
            _ => return Err(malformed(format!("multiValueHeaders `{name}` is not an array"))),
        }
    }
    Ok(out)
}

/// `body` (a string, or absent) with `isBase64Encoded` (a boolean, or absent).
fn parse_body(body: Option<&Value>, is_base64: Option<&Value>) -> Result<Vec<u8>, MalformedResponse> {
    let is_base64 = match is_base64 {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(malformed("isBase64Encoded is not a boolean")),
    };
    let text = match body {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(s)) => s,
        Some(_) => return Err(malformed("body is not a string")),
    };
    if !is_base64 {
        return Ok(text.as_bytes().to_vec());
    }
    let decoded = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        LENIENT_B64.decode(compact)
    } else {
        LENIENT_B64.decode(text)
    };
    decoded.map_err(|e| malformed(format!("body is not valid base64: {e}")))
}

/// `headers` then `multiValueHeaders`; a name in `multiValueHeaders` replaces that name's `headers` value.
fn merge_headers(single: Vec<(String, String)>, multi: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        single.into_iter().filter(|(n, _)| !multi.iter().any(|(m, _)| m.eq_ignore_ascii_case(n))).collect();
    out.extend(multi);
    out
}

fn default_content_type(headers: &mut Vec<(String, String)>) {
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        headers.push(("content-type".to_owned(), "application/json".to_owned()));
    }
}

const V1_FIELDS: [&str; 5] = ["statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"];

/// Maps a function's format 1.0 proxy response to HTTP.
///
/// The payload must be a JSON object with only `statusCode`, `headers`, `multiValueHeaders`,
/// `body` and `isBase64Encoded`. Without a `Content-Type`, the response gets `application/json`,
/// as API Gateway REST APIs do.
pub fn response_v1(payload: &[u8]) -> Result<HttpResponse, MalformedResponse> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(malformed("not a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !V1_FIELDS.contains(&k.as_str())) {
        return Err(malformed(format!("unknown field `{unknown}`")));
    }
    let status = parse_status(obj.get("statusCode"))?;
    let mut headers =
        merge_headers(parse_headers(obj.get("headers"))?, parse_multi_headers(obj.get("multiValueHeaders"))?);
    let body = parse_body(obj.get("body"), obj.get("isBase64Encoded"))?;
    default_content_type(&mut headers);
    Ok(HttpResponse { status, headers, body })
}

/// A structured format 2.0 response (an object with `statusCode`); other fields are ignored.
fn structured_v2(obj: &Map<String, Value>) -> Result<HttpResponse, MalformedResponse> {
    let status = parse_status(obj.get("statusCode"))?;
    let mut headers =
        merge_headers(parse_headers(obj.get("headers"))?, parse_multi_headers(obj.get("multiValueHeaders"))?);
    match obj.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(cookies)) => {
            for cookie in cookies {
                match cookie {
                    Value::String(c) => headers.push(("set-cookie".to_owned(), c.clone())),
                    _ => return Err(malformed("cookie is not a string")),
                }
            }
        }
        Some(_) => return Err(malformed("cookies is not an array")),
    }
    let body = parse_body(obj.get("body"), obj.get("isBase64Encoded"))?;
    default_content_type(&mut headers);
    Ok(HttpResponse { status, headers, body })
}

/// Maps a function's format 2.0 response to HTTP. Never fails: a payload that is not a JSON
/// object with `statusCode` is a 200 `application/json` response carrying the payload itself; an
/// object with `statusCode` maps like [`response_v1`] (unknown fields ignored) plus `cookies`
/// as `set-cookie` headers, and one that cannot be mapped is [`malformed_gateway_response`].
pub fn response_v2(payload: &[u8]) -> HttpResponse {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(obj)) if obj.contains_key("statusCode") => {
            structured_v2(&obj).unwrap_or_else(|_| malformed_gateway_response())
        }
        _ => HttpResponse {
            status: 200,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: payload.to_vec(),
        },
    }
}

/// The 502 API Gateway answers with when a function's response is malformed.
pub fn malformed_gateway_response() -> HttpResponse {
    HttpResponse {
        status: 502,
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-amzn-ErrorType".to_owned(), "InternalServerErrorException".to_owned()),
        ],
        body: br#"{"message": "Internal server error"}"#.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Authorizer inputs
// ---------------------------------------------------------------------------------------------

/// Input of a TOKEN Lambda authorizer.
pub fn token_authorizer_event(token: &str, method_arn: &str) -> Value {
    json!({ "type": "TOKEN", "authorizationToken": token, "methodArn": method_arn })
}

/// Input of a REQUEST Lambda authorizer of a REST API.
pub fn request_authorizer_event(
    req: &InboundRequest,
    route: &RouteMatch,
    ctx: &RequestContext,
    method_arn: &str,
) -> Value {
    let (headers, multi_headers) = v1_headers(req);
    let (query, multi_query) = v1_query(req);
    json!({
        "type": "REQUEST",
        "methodArn": method_arn,
        "resource": route.resource_path,
        "path": req.path,
        "httpMethod": req.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": string_map_or_null(&route.path_params),
        "stageVariables": string_map_or_null(&ctx.stage_variables),
        "requestContext": v1_request_context(req, route, ctx),
    })
}

// ---------------------------------------------------------------------------------------------
// Parameter mapping
// ---------------------------------------------------------------------------------------------

/// A mapping expression the gateway refuses (at configuration time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    /// An expression this gateway does not understand; holds the expression.
    #[error("unsupported mapping expression: {0}")]
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSegment {
    Key(String),
    Index(usize),
}

/// A JSONPath into a request body: `$`-rooted (`$.customer.id`) or bare (`items[0].id`), with
/// dotted keys, `[n]` indexes and `['quoted key']` (or `["quoted key"]`). No wildcards, filters
/// or recursive descent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<PathSegment>,
}

impl JsonPath {
    /// Parses a path; the error holds the path.
    pub fn parse(path: &str) -> Result<JsonPath, MappingError> {
        let bad = || MappingError::Unsupported(path.to_owned());
        let mut segments = Vec::new();
        let (mut rest, mut expect_key) = match path.strip_prefix('$') {
            Some(r) => (r, false),
            None if path.starts_with('[') => (path, false),
            None => (path, true),
        };
        if rest.is_empty() && expect_key {
            return Err(bad());
        }
        loop {
            if expect_key {
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let (key, tail) = rest.split_at(end);
                if key.is_empty() || key.contains(['*', ']', '\'', '"', '$']) {
                    return Err(bad());
                }
                segments.push(PathSegment::Key(key.to_owned()));
                rest = tail;
                expect_key = false;
            }
            let Some(first) = rest.chars().next() else { break };
            match first {
                '.' => {
                    rest = &rest[1..];
                    expect_key = true;
                    if rest.is_empty() {
                        return Err(bad());
                    }
                }
                '[' => {
                    let inner = &rest[1..];
                    let (segment, tail) = match inner.chars().next() {
                        Some(q @ ('\'' | '"')) => parse_quoted(&inner[1..], q).ok_or_else(bad)?,
                        _ => {
                            let end = inner.find(']').ok_or_else(bad)?;
                            let digits = &inner[..end];
                            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                                return Err(bad());
                            }
                            let index = digits.parse().map_err(|_| bad())?;
                            (PathSegment::Index(index), &inner[end + 1..])
                        }
                    };
                    segments.push(segment);
                    rest = tail;
                }
                _ => return Err(bad()),
            }
        }
        Ok(JsonPath { segments })
    }

    /// The value the path selects, if any.
    pub fn select<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.segments.iter().try_fold(root, |cur, seg| match seg {
            PathSegment::Key(k) => cur.as_object()?.get(k),
            PathSegment::Index(i) => cur.as_array()?.get(*i),
        })
    }

    fn select_mut<'a>(&self, root: &'a mut Value) -> Option<&'a mut Value> {
        self.segments.iter().try_fold(root, |cur, seg| match seg {
            PathSegment::Key(k) => cur.as_object_mut()?.get_mut(k),
            PathSegment::Index(i) => cur.as_array_mut()?.get_mut(*i),
        })
    }
}

/// A quoted key after its opening quote, up to the closing quote and `]`; `\` escapes the next
/// character. Returns the key and what follows the `]`.
fn parse_quoted(s: &str, quote: char) -> Option<(PathSegment, &str)> {
    let mut key = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            key.push(chars.next()?.1);
        } else if c == quote {
            let tail = s[i + c.len_utf8()..].strip_prefix(']')?;
            return Some((PathSegment::Key(key), tail));
        } else {
            key.push(c);
        }
    }
    None
}

/// Builds a [`Source`] from the name after its prefix.
type MakeSource = fn(String) -> Source;

/// Where an integration request parameter takes its value from (`requestParameters` values).
/// Parse once at deploy time, evaluate per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `method.request.header.X`: the header's last value (name case-insensitive).
    Header(String),
    /// `method.request.multivalueheader.X`: all the header's values, comma-joined.
    MultiHeader(String),
    /// `method.request.querystring.X`: the parameter's last value.
    Query(String),
    /// `method.request.multivaluequerystring.X`: all the parameter's values, comma-joined.
    MultiQuery(String),
    /// `method.request.path.X`.
    Path(String),
    /// `method.request.body.<JSONPath>`.
    Body(JsonPath),
    /// `context.authorizer.X`: `principalId`, a context key, or `claims.<name>`.
    Authorizer(String),
    /// `context.domainPrefix`.
    DomainPrefix,
    /// `context.domainName`.
    DomainName,
    /// `stageVariables.X`.
    StageVariable(String),
    /// `context.requestId`.
    RequestId,
    /// `'literal'`.
    Literal(String),
}

impl Source {
    /// Parses a mapping expression; anything not listed on [`Source`] is refused.
    pub fn parse(expr: &str) -> Result<Source, MappingError> {
        let unsupported = || MappingError::Unsupported(expr.to_owned());
        let named = |rest: &str| if rest.is_empty() { Err(unsupported()) } else { Ok(rest.to_owned()) };
        let prefixed: [(&str, MakeSource); 7] = [
            ("method.request.header.", Source::Header),
            ("method.request.multivalueheader.", Source::MultiHeader),
            ("method.request.querystring.", Source::Query),
            ("method.request.multivaluequerystring.", Source::MultiQuery),
            ("method.request.path.", Source::Path),
            ("context.authorizer.", Source::Authorizer),
            ("stageVariables.", Source::StageVariable),
        ];
        for (prefix, make) in prefixed {
            if let Some(rest) = expr.strip_prefix(prefix) {
                return named(rest).map(make);
            }
        }
        if let Some(path) = expr.strip_prefix("method.request.body.") {
            return JsonPath::parse(path).map(Source::Body).map_err(|_| unsupported());
        }
        if let Some(literal) = expr.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            return Ok(Source::Literal(literal.to_owned()));
        }
        match expr {
            "context.domainPrefix" => Ok(Source::DomainPrefix),
            "context.domainName" => Ok(Source::DomainName),
            "context.requestId" => Ok(Source::RequestId),
            _ => Err(unsupported()),
        }
    }

    /// The value for one request; `None` when the request has none.
    pub fn eval(&self, req: &InboundRequest, route: &RouteMatch, ctx: &RequestContext) -> Option<String> {
        match self {
            Source::Header(name) => header_last(req, name).map(str::to_owned),
            Source::MultiHeader(name) => {
                let mut joined: Option<String> = None;
                for (_, value) in req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    match &mut joined {
                        Some(s) => {
                            s.push(',');
                            s.push_str(value);
                        }
                        None => joined = Some(value.clone()),
                    }
                }
                joined
            }
            Source::Query(name) => query_pairs(&req.raw_query)
                .filter(|(k, _)| decode(k).eq(name.bytes()))
                .last()
                .map(|(_, v)| decode_string(v)),
            Source::MultiQuery(name) => {
                let mut joined: Option<Vec<u8>> = None;
                for (_, value) in query_pairs(&req.raw_query).filter(|(k, _)| decode(k).eq(name.bytes())) {
                    let buf = match &mut joined {
                        Some(buf) => {
                            buf.push(b',');
                            buf
                        }
                        None => joined.insert(Vec::new()),
                    };
                    buf.extend(decode(value));
                }
                joined.map(bytes_to_string)
            }
            Source::Path(name) => route.path_params.get(name).cloned(),
            Source::Body(path) => {
                let mut body: Value = serde_json::from_slice(&req.body).ok()?;
                path.select_mut(&mut body).map(Value::take).and_then(stringify_owned)
            }
            Source::Authorizer(key) => {
                let auth = ctx.authorizer.as_ref()?;
                if key == "principalId"
                    && let Some(principal) = &auth.principal_id
                {
                    return Some(principal.clone());
                }
                if let Some(claim) = key.strip_prefix("claims.")
                    && let Some(value) = auth.claims.as_ref().and_then(|c| c.get(claim))
                {
                    return stringify(value);
                }
                auth.context.get(key).and_then(stringify)
            }
            Source::DomainPrefix => non_empty(&ctx.domain_prefix),
            Source::DomainName => non_empty(&ctx.domain_name),
            Source::RequestId => non_empty(&ctx.request_id),
            Source::StageVariable(name) => ctx.stage_variables.get(name).cloned(),
            Source::Literal(value) => Some(value.clone()),
        }
    }
}

fn non_empty(s: &str) -> Option<String> {
    if s.is_empty() { None } else { Some(s.to_owned()) }
}

/// Whether a client request header is dropped before it reaches an integration: `x-amz-*` and
/// `x-amzn-*` (reserved, so a client cannot send `X-Amz-Tenant-Id` itself) and hop-by-hop
/// headers. `Host` is kept.
pub fn is_reserved_header(name: &str) -> bool {
    let starts_with =
        |prefix: &str| name.as_bytes().get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()));
    starts_with("x-amz-") || starts_with("x-amzn-") || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn request() -> InboundRequest {
        InboundRequest {
            method: "GET".to_owned(),
            path: "/orders/42".to_owned(),
            raw_query: "a=1&a=2&q=x%20y+z&flag".to_owned(),
            headers: strings(&[
                ("Host", "abc123.execute-api.localhost"),
                ("User-Agent", "curl/8.5"),
                ("X-Multi", "one"),
                ("x-multi", "two"),
                ("Accept", "*/*"),
            ]),
            body: bytes::Bytes::new(),
            source_ip: "203.0.113.9".to_owned(),
        }
    }

    fn route() -> RouteMatch {
        RouteMatch {
            resource_id: "res1".to_owned(),
            resource_path: "/orders/{id}".to_owned(),
            path_params: BTreeMap::from([("id".to_owned(), "42".to_owned())]),
        }
    }

    fn lambda_authorizer() -> AuthorizerResult {
        let context = json!({"tenantId": "blue", "n": 1, "b": true});
        AuthorizerResult {
            principal_id: Some("user-1".to_owned()),
            context: context.as_object().cloned().expect("object"),
            claims: None,
            usage_identifier_key: None,
        }
    }

    fn jwt_authorizer() -> AuthorizerResult {
        let claims = json!({"sub": "abc", "email": "a@example.test", "exp": 1700000000, "email_verified": true});
        AuthorizerResult {
            principal_id: None,
            context: Map::new(),
            claims: Some(claims.as_object().cloned().expect("object")),
            usage_identifier_key: None,
        }
    }

    fn context() -> RequestContext {
        RequestContext {
            account_id: "123456789012".to_owned(),
            region: "us-east-1".to_owned(),
            api_id: "abc123".to_owned(),
            stage: "prod".to_owned(),
            stage_variables: BTreeMap::from([("alias".to_owned(), "live".to_owned())]),
            domain_name: "abc123.execute-api.localhost".to_owned(),
            domain_prefix: "abc123".to_owned(),
            request_id: "req-1".to_owned(),
            request_time_ms: 1_428_582_896_000,
            authorizer: Some(lambda_authorizer()),
            api_key: Some(("key-id".to_owned(), "key-value-0123456789".to_owned())),
        }
    }

    fn bare_context() -> RequestContext {
        RequestContext { authorizer: None, api_key: None, stage_variables: BTreeMap::new(), ..context() }
    }

    // ----- format 1.0 -----

    #[test]
    fn v1_event_get_shape() {
        let event = event_v1(&request(), &route(), &context());
        assert_eq!(event["resource"], "/orders/{id}");
        assert_eq!(event["path"], "/orders/42");
        assert_eq!(event["httpMethod"], "GET");
        assert_eq!(
            event["headers"],
            json!({"Host": "abc123.execute-api.localhost", "User-Agent": "curl/8.5", "X-Multi": "two", "Accept": "*/*"})
        );
        assert_eq!(event["multiValueHeaders"]["X-Multi"], json!(["one", "two"]));
        assert_eq!(event["multiValueHeaders"]["Accept"], json!(["*/*"]));
        assert_eq!(event["queryStringParameters"], json!({"a": "2", "q": "x y z", "flag": ""}));
        assert_eq!(event["multiValueQueryStringParameters"], json!({"a": ["1", "2"], "q": ["x y z"], "flag": [""]}));
        assert_eq!(event["pathParameters"], json!({"id": "42"}));
        assert_eq!(event["stageVariables"], json!({"alias": "live"}));
        assert_eq!(event["body"], Value::Null);
        assert_eq!(event["isBase64Encoded"], false);
        let keys: Vec<&str> = event.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 12, "{keys:?}");

        let rc = &event["requestContext"];
        assert_eq!(rc["accountId"], "123456789012");
        assert_eq!(rc["apiId"], "abc123");
        assert_eq!(rc["authorizer"], json!({"principalId": "user-1", "tenantId": "blue", "n": "1", "b": "true"}));
        assert_eq!(rc["domainName"], "abc123.execute-api.localhost");
        assert_eq!(rc["domainPrefix"], "abc123");
        assert_eq!(rc["extendedRequestId"], "req-1");
        assert_eq!(rc["httpMethod"], "GET");
        assert_eq!(rc["path"], "/prod/orders/42");
        assert_eq!(rc["protocol"], "HTTP/1.1");
        assert_eq!(rc["requestId"], "req-1");
        assert_eq!(rc["requestTime"], "09/Apr/2015:12:34:56 +0000");
        assert_eq!(rc["requestTimeEpoch"], 1_428_582_896_000_u64);
        assert_eq!(rc["resourceId"], "res1");
        assert_eq!(rc["resourcePath"], "/orders/{id}");
        assert_eq!(rc["stage"], "prod");
        let identity = &rc["identity"];
        assert_eq!(identity["sourceIp"], "203.0.113.9");
        assert_eq!(identity["userAgent"], "curl/8.5");
        assert_eq!(identity["apiKey"], "key-value-0123456789");
        assert_eq!(identity["apiKeyId"], "key-id");
        for field in [
            "caller",
            "user",
            "userArn",
            "accountId",
            "accessKey",
            "cognitoIdentityId",
            "cognitoIdentityPoolId",
            "cognitoAuthenticationType",
            "cognitoAuthenticationProvider",
            "principalOrgId",
            "clientCert",
        ] {
            assert_eq!(identity.get(field), Some(&Value::Null), "identity.{field}");
        }
    }

    #[test]
    fn v1_event_nulls_when_empty() {
        let req = InboundRequest {
            method: "POST".to_owned(),
            path: "/".to_owned(),
            source_ip: "10.0.0.1".to_owned(),
            ..InboundRequest::default()
        };
        let route =
            RouteMatch { resource_id: "root".to_owned(), resource_path: "/".to_owned(), ..RouteMatch::default() };
        let event = event_v1(&req, &route, &bare_context());
        for field in [
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "pathParameters",
            "stageVariables",
            "body",
        ] {
            assert_eq!(event.get(field), Some(&Value::Null), "{field}");
        }
        assert_eq!(event["isBase64Encoded"], false);
        let rc = &event["requestContext"];
        assert!(rc.get("authorizer").is_none(), "no authorizer key without an authorizer");
        assert_eq!(rc["identity"]["apiKey"], Value::Null);
        assert_eq!(rc["identity"]["apiKeyId"], Value::Null);
        assert_eq!(rc["identity"]["userAgent"], Value::Null);
        assert_eq!(rc["path"], "/prod/");
    }

    #[test]
    fn v1_event_bodies() {
        let text = InboundRequest { body: bytes::Bytes::from_static("{\"a\":\"é\"}".as_bytes()), ..request() };
        let event = event_v1(&text, &route(), &context());
        assert_eq!(event["body"], "{\"a\":\"é\"}");
        assert_eq!(event["isBase64Encoded"], false);

        let binary = InboundRequest { body: bytes::Bytes::from_static(&[0xff, 0x00, 0xfe, 0x41]), ..request() };
        let event = event_v1(&binary, &route(), &context());
        assert_eq!(event["body"], "/wD+QQ==");
        assert_eq!(event["isBase64Encoded"], true);
    }

    #[test]
    fn v1_event_jwt_claims() {
        let ctx = RequestContext { authorizer: Some(jwt_authorizer()), ..context() };
        let event = event_v1(&request(), &route(), &ctx);
        assert_eq!(
            event["requestContext"]["authorizer"],
            json!({"claims": {"sub": "abc", "email": "a@example.test", "exp": "1700000000", "email_verified": "true"}})
        );
    }

    #[test]
    fn request_time_format() {
        assert_eq!(format_request_time(1_428_582_896_000), "09/Apr/2015:12:34:56 +0000");
        assert_eq!(format_request_time(1_584_039_838_999), "12/Mar/2020:19:03:58 +0000");
        assert_eq!(format_request_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(format_request_time(951_825_600_000), "29/Feb/2000:12:00:00 +0000");
        assert_eq!(format_request_time(1_735_689_599_000), "31/Dec/2024:23:59:59 +0000");
    }

    // ----- format 2.0 -----

    #[test]
    fn v2_event_shape() {
        let mut req = request();
        req.headers.extend(strings(&[("Cookie", "a=1; b=2"), ("cookie", "c=3")]));
        req.body = bytes::Bytes::from_static(b"hello");
        let event = event_v2(&req, &route(), &context());
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "GET /orders/{id}");
        assert_eq!(event["rawPath"], "/prod/orders/42");
        assert_eq!(event["rawQueryString"], "a=1&a=2&q=x%20y+z&flag");
        assert_eq!(event["cookies"], json!(["a=1", "b=2", "c=3"]));
        assert_eq!(
            event["headers"],
            json!({
                "host": "abc123.execute-api.localhost",
                "user-agent": "curl/8.5",
                "x-multi": "one,two",
                "accept": "*/*",
            })
        );
        assert_eq!(event["queryStringParameters"], json!({"a": "1,2", "q": "x y z", "flag": ""}));
        assert_eq!(event["pathParameters"], json!({"id": "42"}));
        assert_eq!(event["stageVariables"], json!({"alias": "live"}));
        assert_eq!(event["body"], "hello");
        assert_eq!(event["isBase64Encoded"], false);
        let rc = &event["requestContext"];
        assert_eq!(rc["accountId"], "123456789012");
        assert_eq!(rc["apiId"], "abc123");
        assert_eq!(rc["authorizer"], json!({"lambda": {"tenantId": "blue", "n": 1, "b": true}}));
        assert_eq!(rc["domainName"], "abc123.execute-api.localhost");
        assert_eq!(rc["domainPrefix"], "abc123");
        assert_eq!(
            rc["http"],
            json!({
                "method": "GET",
                "path": "/prod/orders/42",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.9",
                "userAgent": "curl/8.5",
            })
        );
        assert_eq!(rc["requestId"], "req-1");
        assert_eq!(rc["routeKey"], "GET /orders/{id}");
        assert_eq!(rc["stage"], "prod");
        assert_eq!(rc["time"], "09/Apr/2015:12:34:56 +0000");
        assert_eq!(rc["timeEpoch"], 1_428_582_896_000_u64);
    }

    #[test]
    fn v2_event_jwt_and_omitted_fields() {
        let req = InboundRequest {
            method: "POST".to_owned(),
            path: "/things".to_owned(),
            headers: strings(&[("Content-Type", "application/json")]),
            source_ip: "10.0.0.1".to_owned(),
            ..InboundRequest::default()
        };
        let route = RouteMatch { resource_path: "/things".to_owned(), ..RouteMatch::default() };
        let ctx = RequestContext { authorizer: Some(jwt_authorizer()), stage: "$default".to_owned(), ..bare_context() };
        let event = event_v2(&req, &route, &ctx);
        for absent in ["cookies", "queryStringParameters", "pathParameters", "stageVariables", "body"] {
            assert!(event.get(absent).is_none(), "{absent} should be absent");
        }
        assert_eq!(event["rawPath"], "/things");
        assert_eq!(event["isBase64Encoded"], false);
        assert_eq!(event["headers"], json!({"content-type": "application/json"}));
        assert_eq!(event["requestContext"]["authorizer"]["jwt"]["claims"]["exp"], "1700000000");
        assert_eq!(event["requestContext"]["authorizer"]["jwt"]["scopes"], Value::Null);

        let no_auth = event_v2(&req, &route, &bare_context());
        assert!(no_auth["requestContext"].get("authorizer").is_none());
    }

    #[test]
    fn v2_event_binary_body() {
        let req = InboundRequest { body: bytes::Bytes::from_static(&[0x89, 0x50, 0x4e, 0x47]), ..request() };
        let event = event_v2(&req, &route(), &context());
        assert_eq!(event["body"], "iVBORw==");
        assert_eq!(event["isBase64Encoded"], true);
    }

    // ----- responses -----

    fn header<'a>(resp: &'a HttpResponse, name: &str) -> Vec<&'a str> {
        resp.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn response_v1_defaults() {
        let resp = response_v1(b"{}").expect("valid");
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
        assert_eq!(header(&resp, "content-type"), ["application/json"]);

        let resp = response_v1(br#"{"statusCode": 201, "body": "made", "headers": {"Content-Type": "text/plain"}}"#)
            .expect("valid");
        assert_eq!(resp.status, 201);
        assert_eq!(resp.body, b"made");
        assert_eq!(resp.headers, strings(&[("Content-Type", "text/plain")]));

        let nulls = br#"{"statusCode": null, "headers": null, "multiValueHeaders": null, "body": null, "isBase64Encoded": null}"#;
        let resp = response_v1(nulls).expect("nulls are absent fields");
        assert_eq!(resp.status, 200);
        assert!(resp.body.is_empty());
    }

    #[test]
    fn response_v1_string_status() {
        assert_eq!(response_v1(br#"{"statusCode": "404"}"#).expect("valid").status, 404);
        assert!(response_v1(br#"{"statusCode": "4o4"}"#).is_err());
        assert!(response_v1(br#"{"statusCode": ""}"#).is_err());
    }

    #[test]
    fn response_v1_multi_value_headers() {
        let payload = br#"{
            "statusCode": 200,
            "headers": {"X-One": "1", "X-Num": 7, "X-Bool": false, "Set-Cookie": "replaced=1"},
            "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Many": ["x", 3]}
        }"#;
        let resp = response_v1(payload).expect("valid");
        assert_eq!(header(&resp, "x-one"), ["1"]);
        assert_eq!(header(&resp, "x-num"), ["7"]);
        assert_eq!(header(&resp, "x-bool"), ["false"]);
        assert_eq!(header(&resp, "set-cookie"), ["a=1", "b=2"]);
        assert_eq!(header(&resp, "x-many"), ["x", "3"]);
        let set_cookie_at = resp.headers.iter().position(|(n, _)| n == "Set-Cookie").expect("set-cookie");
        let x_one_at = resp.headers.iter().position(|(n, _)| n == "X-One").expect("x-one");
        assert!(x_one_at < set_cookie_at, "multiValueHeaders come after headers");

        assert!(response_v1(br#"{"headers": {"X": {"nested": 1}}}"#).is_err());
        assert!(response_v1(br#"{"multiValueHeaders": {"X": "not-an-array"}}"#).is_err());
        assert!(response_v1(br#"{"headers": ["X"]}"#).is_err());
    }

    #[test]
    fn response_v1_base64_body() {
        let resp = response_v1(br#"{"statusCode": 200, "body": "/wD+QQ==", "isBase64Encoded": true}"#).expect("valid");
        assert_eq!(resp.body, [0xff, 0x00, 0xfe, 0x41]);
        let unpadded = response_v1(br#"{"body": "aGk", "isBase64Encoded": true}"#).expect("valid");
        assert_eq!(unpadded.body, b"hi");
        let wrapped = response_v1(br#"{"body": "aGVs\nbG8=", "isBase64Encoded": true}"#).expect("valid");
        assert_eq!(wrapped.body, b"hello");
        let plain = response_v1(br#"{"body": "/wD+QQ==", "isBase64Encoded": false}"#).expect("valid");
        assert_eq!(plain.body, b"/wD+QQ==");
        assert!(response_v1(br#"{"body": "!!!", "isBase64Encoded": true}"#).is_err());
        assert!(response_v1(br#"{"body": "aGk=", "isBase64Encoded": "yes"}"#).is_err());
    }

    #[test]
    fn response_v1_non_string_body_malformed() {
        for payload in [&br#"{"body": {"a": 1}}"#[..], br#"{"body": 5}"#, br#"{"body": ["x"]}"#, br#"{"body": true}"#] {
            assert!(response_v1(payload).is_err(), "{}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn response_v1_unknown_field_malformed() {
        let err = response_v1(br#"{"statusCode": 200, "body": "x", "cookies": ["a=1"]}"#).expect_err("malformed");
        assert!(err.to_string().contains("Malformed Lambda proxy response"), "{err}");
        assert!(err.to_string().contains("cookies"), "{err}");
    }

    #[test]
    fn response_v1_non_json_or_non_object_malformed() {
        for payload in [&b"not json"[..], b"", b"\"a string\"", b"[1, 2]", b"42", b"null"] {
            assert!(response_v1(payload).is_err(), "{}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn response_v1_status_out_of_range_malformed() {
        for payload in [
            &br#"{"statusCode": 700}"#[..],
            br#"{"statusCode": 99}"#,
            br#"{"statusCode": 600}"#,
            br#"{"statusCode": -1}"#,
            br#"{"statusCode": 200.5}"#,
            br#"{"statusCode": 70000}"#,
            br#"{"statusCode": "700"}"#,
            br#"{"statusCode": true}"#,
        ] {
            assert!(response_v1(payload).is_err(), "{}", String::from_utf8_lossy(payload));
        }
        assert_eq!(response_v1(br#"{"statusCode": 100}"#).expect("valid").status, 100);
        assert_eq!(response_v1(br#"{"statusCode": 599}"#).expect("valid").status, 599);
    }

    #[test]
    fn response_v2_plain_payload() {
        let resp = response_v2(b"\"hello\"");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.headers, strings(&[("content-type", "application/json")]));
        assert_eq!(resp.body, b"\"hello\"");

        let object = br#"{"message": "no status here"}"#;
        let resp = response_v2(object);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body, object);

        assert_eq!(response_v2(b"[1,2]").body, b"[1,2]");
        assert_eq!(response_v2(b"not json").status, 200);
    }

    #[test]
    fn response_v2_structured_with_cookies() {
        let payload = br#"{
            "statusCode": 302,
            "headers": {"Location": "/next", "X-Count": 2},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": "aGk=",
            "isBase64Encoded": true,
            "extra": "ignored"
        }"#;
        let resp = response_v2(payload);
        assert_eq!(resp.status, 302);
        assert_eq!(header(&resp, "location"), ["/next"]);
        assert_eq!(header(&resp, "x-count"), ["2"]);
        assert_eq!(header(&resp, "set-cookie"), ["a=1; Path=/", "b=2"]);
        assert_eq!(resp.body, b"hi");

        assert_eq!(response_v2(br#"{"statusCode": "204"}"#).status, 204);
        assert_eq!(response_v2(br#"{"statusCode": 900}"#), malformed_gateway_response());
        assert_eq!(response_v2(br#"{"statusCode": 200, "cookies": "a=1"}"#), malformed_gateway_response());
    }

    #[test]
    fn malformed_response_shape() {
        let resp = malformed_gateway_response();
        assert_eq!(resp.status, 502);
        assert_eq!(resp.body, br#"{"message": "Internal server error"}"#);
        assert_eq!(header(&resp, "content-type"), ["application/json"]);
        assert_eq!(header(&resp, "x-amzn-ErrorType"), ["InternalServerErrorException"]);
        assert!(resp.headers.iter().any(|(n, _)| n == "x-amzn-ErrorType"), "exact header spelling");
    }

    // ----- authorizer inputs -----

    #[test]
    fn token_authorizer_input() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/orders/42";
        assert_eq!(
            token_authorizer_event("Bearer xyz", arn),
            json!({"type": "TOKEN", "authorizationToken": "Bearer xyz", "methodArn": arn})
        );
    }

    #[test]
    fn request_authorizer_input() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/orders/42";
        let ctx = RequestContext { authorizer: None, ..context() };
        let event = request_authorizer_event(&request(), &route(), &ctx, arn);
        let v1 = event_v1(&request(), &route(), &ctx);
        assert_eq!(event["type"], "REQUEST");
        assert_eq!(event["methodArn"], arn);
        for field in [
            "resource",
            "path",
            "httpMethod",
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "pathParameters",
            "stageVariables",
            "requestContext",
        ] {
            assert_eq!(event[field], v1[field], "{field}");
        }
        assert_eq!(event.as_object().expect("object").len(), 12);
        assert!(event.get("body").is_none());
    }

    // ----- parameter mapping -----

    fn eval(expr: &str, req: &InboundRequest, ctx: &RequestContext) -> Option<String> {
        Source::parse(expr).expect("supported").eval(req, &route(), ctx)
    }

    #[test]
    fn mapping_headers() {
        let req = request();
        let ctx = context();
        assert_eq!(eval("method.request.header.x-multi", &req, &ctx).as_deref(), Some("two"));
        assert_eq!(eval("method.request.header.USER-AGENT", &req, &ctx).as_deref(), Some("curl/8.5"));
        assert_eq!(eval("method.request.multivalueheader.X-MULTI", &req, &ctx).as_deref(), Some("one,two"));
        assert_eq!(eval("method.request.multivalueheader.accept", &req, &ctx).as_deref(), Some("*/*"));
        assert_eq!(eval("method.request.header.x-missing", &req, &ctx), None);
        assert_eq!(eval("method.request.multivalueheader.x-missing", &req, &ctx), None);
    }

    #[test]
    fn mapping_query_and_path() {
        let req = InboundRequest { raw_query: "a=1&a=2&q=x%20y+z&flag&t%65n=b%2Cc&bad=%zz".to_owned(), ..request() };
        let ctx = context();
        assert_eq!(eval("method.request.querystring.a", &req, &ctx).as_deref(), Some("2"));
        assert_eq!(eval("method.request.querystring.q", &req, &ctx).as_deref(), Some("x y z"));
        assert_eq!(eval("method.request.querystring.flag", &req, &ctx).as_deref(), Some(""));
        assert_eq!(eval("method.request.querystring.ten", &req, &ctx).as_deref(), Some("b,c"));
        assert_eq!(eval("method.request.querystring.bad", &req, &ctx).as_deref(), Some("%zz"));
        assert_eq!(eval("method.request.querystring.A", &req, &ctx), None, "query names are case-sensitive");
        assert_eq!(eval("method.request.multivaluequerystring.a", &req, &ctx).as_deref(), Some("1,2"));
        assert_eq!(eval("method.request.multivaluequerystring.q", &req, &ctx).as_deref(), Some("x y z"));
        assert_eq!(eval("method.request.multivaluequerystring.none", &req, &ctx), None);
        assert_eq!(eval("method.request.path.id", &req, &ctx).as_deref(), Some("42"));
        assert_eq!(eval("method.request.path.other", &req, &ctx), None);
    }

    #[test]
    fn mapping_body_json_paths() {
        let body = r#"{"tenant": "blue", "customer": {"id": 7, "vip": true, "tags": ["a", "b"]},
                       "items": [{"id": "i-0"}, {"id": "i-1"}], "odd key": {"x.y": "dotted"}, "nothing": null}"#;
        let req = InboundRequest { body: bytes::Bytes::from(body.to_owned()), ..request() };
        let ctx = context();
        let cases = [
            ("method.request.body.tenant", Some("blue")),
            ("method.request.body.$.tenant", Some("blue")),
            ("method.request.body.$.customer.id", Some("7")),
            ("method.request.body.customer.vip", Some("true")),
            ("method.request.body.customer.tags", Some(r#"["a","b"]"#)),
            ("method.request.body.$.customer.tags[1]", Some("b")),
            ("method.request.body.items[0].id", Some("i-0")),
            ("method.request.body.$.items[1].id", Some("i-1")),
            ("method.request.body.$['odd key']['x.y']", Some("dotted")),
            ("method.request.body.$[\"odd key\"][\"x.y\"]", Some("dotted")),
            ("method.request.body.items[0]", Some(r#"{"id":"i-0"}"#)),
            ("method.request.body.items[2].id", None),
            ("method.request.body.customer.missing", None),
            ("method.request.body.tenant.deeper", None),
            ("method.request.body.items.id", None),
            ("method.request.body.nothing", None),
        ];
        for (expr, want) in cases {
            assert_eq!(eval(expr, &req, &ctx).as_deref(), want, "{expr}");
        }
        let whole = eval("method.request.body.$", &req, &ctx).expect("root");
        let reparsed: Value = serde_json::from_str(&whole).expect("compact JSON");
        assert_eq!(reparsed["tenant"], "blue");

        let not_json = InboundRequest { body: bytes::Bytes::from_static(b"tenant=blue"), ..request() };
        assert_eq!(eval("method.request.body.tenant", &not_json, &ctx), None);
        assert_eq!(eval("method.request.body.tenant", &request(), &ctx), None, "empty body");
    }

    #[test]
    fn json_path_parse_errors() {
        for bad in
            ["", ".a", "a.", "a..b", "$.", "$a", "a[", "a[x]", "a[-1]", "a[*]", "$..a", "$.*", "a['x'", "a['x']b"]
        {
            assert!(JsonPath::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let escaped = JsonPath::parse(r"$['it\'s']").expect("escaped quote");
        assert_eq!(escaped.select(&json!({"it's": 1})), Some(&json!(1)));
        assert_eq!(JsonPath::parse("[1]").expect("bare index").select(&json!([0, 5])), Some(&json!(5)));
    }

    #[test]
    fn mapping_authorizer() {
        let req = request();
        let ctx = context();
        assert_eq!(eval("context.authorizer.principalId", &req, &ctx).as_deref(), Some("user-1"));
        assert_eq!(eval("context.authorizer.tenantId", &req, &ctx).as_deref(), Some("blue"));
        assert_eq!(eval("context.authorizer.n", &req, &ctx).as_deref(), Some("1"));
        assert_eq!(eval("context.authorizer.b", &req, &ctx).as_deref(), Some("true"));
        assert_eq!(eval("context.authorizer.missing", &req, &ctx), None);
        assert_eq!(eval("context.authorizer.claims.sub", &req, &ctx), None, "no claims from a Lambda authorizer");

        let jwt = RequestContext { authorizer: Some(jwt_authorizer()), ..context() };
        assert_eq!(eval("context.authorizer.claims.sub", &req, &jwt).as_deref(), Some("abc"));
        assert_eq!(eval("context.authorizer.claims.exp", &req, &jwt).as_deref(), Some("1700000000"));
        assert_eq!(eval("context.authorizer.claims.nope", &req, &jwt), None);
        assert_eq!(eval("context.authorizer.principalId", &req, &jwt), None);

        assert_eq!(eval("context.authorizer.tenantId", &req, &bare_context()), None);
    }

    #[test]
    fn mapping_context_stage_and_literal() {
        let req = request();
        let ctx = context();
        assert_eq!(eval("context.domainPrefix", &req, &ctx).as_deref(), Some("abc123"));
        assert_eq!(eval("context.domainName", &req, &ctx).as_deref(), Some("abc123.execute-api.localhost"));
        assert_eq!(eval("context.requestId", &req, &ctx).as_deref(), Some("req-1"));
        assert_eq!(eval("stageVariables.alias", &req, &ctx).as_deref(), Some("live"));
        assert_eq!(eval("stageVariables.missing", &req, &ctx), None);
        assert_eq!(eval("'blue'", &req, &ctx).as_deref(), Some("blue"));
        assert_eq!(eval("'with space'", &req, &ctx).as_deref(), Some("with space"));
        assert_eq!(eval("''", &req, &ctx).as_deref(), Some(""));
        let no_prefix = RequestContext { domain_prefix: String::new(), ..context() };
        assert_eq!(eval("context.domainPrefix", &req, &no_prefix), None);
    }

    #[test]
    fn mapping_parse_variants() {
        assert_eq!(Source::parse("method.request.header.X-Tenant"), Ok(Source::Header("X-Tenant".to_owned())));
        assert_eq!(Source::parse("method.request.path.id"), Ok(Source::Path("id".to_owned())));
        assert_eq!(Source::parse("context.authorizer.claims.sub"), Ok(Source::Authorizer("claims.sub".to_owned())));
        assert_eq!(Source::parse("stageVariables.v"), Ok(Source::StageVariable("v".to_owned())));
        assert_eq!(Source::parse("context.requestId"), Ok(Source::RequestId));
        assert!(matches!(Source::parse("method.request.body.a"), Ok(Source::Body(_))));
    }

    #[test]
    fn mapping_unsupported_refused() {
        for expr in [
            "",
            "method.request.header.",
            "method.request.querystring.",
            "method.request.body",
            "method.request.body.$..a",
            "method.request.body.a[*]",
            "context.identity.sourceIp",
            "context.authorizer.",
            "context.stage",
            "stageVariables.",
            "integration.request.header.x",
            "'unterminated",
            "'",
            "Method.Request.Header.X",
        ] {
            let err = Source::parse(expr).expect_err(expr);
            assert_eq!(err, MappingError::Unsupported(expr.to_owned()));
            assert!(err.to_string().contains(expr), "{err}");
        }
    }

    #[test]
    fn reserved_headers() {
        for name in [
            "X-Amz-Tenant-Id",
            "x-amz-date",
            "X-AMZN-TRACE-ID",
            "x-amzn-RequestId",
            "Connection",
            "keep-alive",
            "Transfer-Encoding",
            "Upgrade",
            "TE",
            "Trailer",
            "Proxy-Authorization",
            "proxy-connection",
        ] {
            assert!(is_reserved_header(name), "{name}");
        }
        for name in
            ["Host", "x-amz", "X-Amzn", "x-amzfoo", "Authorization", "Content-Type", "x-api-key", "x-tenant-id", ""]
        {
            assert!(!is_reserved_header(name), "{name}");
        }
    }
}

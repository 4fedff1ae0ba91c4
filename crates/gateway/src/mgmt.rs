//! The management operations of API Gateway REST (v1), on JSON documents in AWS's shapes:
//! validation, ids, defaults, deployments' snapshots and patch operations. The HTTP routes
//! that call these are in `quarters-api`.

use serde_json::{Map, Value, json};

use crate::GatewayError;
use crate::store::{Kind, Store};

const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"];

/// A fresh id as API Gateway makes them: ten lower-case letters and digits.
pub fn new_id() -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..10).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

fn now_s() -> f64 {
    (quarters_types::time::now_ms() / 1000) as f64
}

fn bad(msg: impl Into<String>) -> GatewayError {
    GatewayError::BadRequest(msg.into())
}

fn obj(v: &Value) -> Result<&Map<String, Value>, GatewayError> {
    v.as_object().ok_or_else(|| bad("The request body must be a JSON object"))
}

fn req_str<'a>(v: &'a Value, field: &str) -> Result<&'a str, GatewayError> {
    v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
        bad(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
        ))
    })
}

/// Copy the listed optional fields of `input` into `doc`.
fn copy(doc: &mut Map<String, Value>, input: &Value, fields: &[&str]) {
    for f in fields {
        if let Some(v) = input.get(*f).filter(|v| !v.is_null()) {
            doc.insert((*f).to_string(), v.clone());
        }
    }
}

/// Strip internal fields (`_snapshot`, `_hash`...) from a document before it goes on the wire.
pub fn public(mut v: Value) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, _| !k.starts_with('_'));
    }
    v
}

// ---- REST APIs and resources ----

pub fn create_rest_api(s: &Store, input: &Value) -> Result<Value, GatewayError> {
    obj(input)?;
    let name = req_str(input, "name")?;
    let id = new_id();
    let root = new_id();
    let source = input.get("apiKeySource").and_then(Value::as_str).unwrap_or("HEADER");
    if !matches!(source, "HEADER" | "AUTHORIZER") {
        return Err(bad(format!("Invalid apiKeySource '{source}': must be HEADER or AUTHORIZER")));
    }
    let mut doc = Map::new();
    doc.insert("id".into(), json!(id));
    doc.insert("name".into(), json!(name));
    doc.insert("createdDate".into(), json!(now_s()));
    doc.insert("apiKeySource".into(), json!(source));
    doc.insert("endpointConfiguration".into(), json!({"types": ["EDGE"]}));
    doc.insert("disableExecuteApiEndpoint".into(), json!(false));
    doc.insert("rootResourceId".into(), json!(root));
    copy(&mut doc, input, &["description", "version", "binaryMediaTypes", "endpointConfiguration", "tags", "policy"]);
    let doc = Value::Object(doc);
    s.put(Kind::RestApi, "", &id, &doc)?;
    s.put(Kind::Resource, &id, &root, &json!({"id": root, "path": "/"}))?;
    Ok(doc)
}

pub fn rest_api(s: &Store, id: &str) -> Result<Value, GatewayError> {
    s.get(Kind::RestApi, "", id)?
        .ok_or_else(|| GatewayError::NotFound(format!("Invalid API identifier specified {id}")))
}

pub fn delete_rest_api(s: &Store, id: &str) -> Result<(), GatewayError> {
    rest_api(s, id)?;
    s.delete_scope(&[Kind::Resource, Kind::Authorizer, Kind::RequestValidator, Kind::Deployment, Kind::Stage], id)?;
    s.delete(Kind::RestApi, "", id)?;
    Ok(())
}

pub fn update_rest_api(s: &Store, id: &str, input: &Value) -> Result<Value, GatewayError> {
    let mut doc = rest_api(s, id)?;
    apply_patch(&mut doc, input, &["/name", "/description", "/apiKeySource", "/binaryMediaTypes", "/policy"])?;
    if let Some(src) = doc.get("apiKeySource").and_then(Value::as_str)
        && !matches!(src, "HEADER" | "AUTHORIZER")
    {
        return Err(bad(format!("Invalid apiKeySource '{src}': must be HEADER or AUTHORIZER")));
    }
    s.put(Kind::RestApi, "", id, &doc)?;
    Ok(doc)
}

pub fn resource(s: &Store, api: &str, rid: &str) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    s.get(Kind::Resource, api, rid)?
        .ok_or_else(|| GatewayError::NotFound("Invalid Resource identifier specified".into()))
}

fn valid_path_part(p: &str) -> bool {
    let inner = p.strip_prefix('{').and_then(|r| r.strip_suffix('}'));
    match inner {
        Some(name) => {
            let name = name.strip_suffix('+').unwrap_or(name);
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        }
        None => !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-._~:@!$&'()*+,;=".contains(c)),
    }
}

pub fn create_resource(s: &Store, api: &str, parent: &str, input: &Value) -> Result<Value, GatewayError> {
    let parent_doc = resource(s, api, parent)?;
    let part = req_str(input, "pathPart")?;
    if !valid_path_part(part) {
        return Err(bad(format!(
            "Resource's path part only allow a-zA-Z0-9._- and curly braces at the beginning and the end and an optional plus sign before the closing brace: {part}"
        )));
    }
    let parent_path = parent_doc.get("path").and_then(Value::as_str).unwrap_or("/");
    if parent_path.ends_with("+}") {
        return Err(bad("A greedy path variable ({proxy+}) must be the last part of a path"));
    }
    for sib in s.list(Kind::Resource, api)? {
        if sib.get("parentId").and_then(Value::as_str) == Some(parent) {
            let other = sib.get("pathPart").and_then(Value::as_str).unwrap_or("");
            let both_vars = other.starts_with('{') && part.starts_with('{');
            if other == part || both_vars {
                return Err(GatewayError::Conflict(format!(
                    "Another resource with the same parent already has this name: {part}"
                )));
            }
        }
    }
    let id = new_id();
    let path = if parent_path == "/" { format!("/{part}") } else { format!("{parent_path}/{part}") };
    let doc = json!({"id": id, "parentId": parent, "pathPart": part, "path": path});
    s.put(Kind::Resource, api, &id, &doc)?;
    Ok(doc)
}

pub fn delete_resource(s: &Store, api: &str, rid: &str) -> Result<(), GatewayError> {
    let doc = resource(s, api, rid)?;
    if doc.get("parentId").is_none() {
        return Err(bad("Cannot delete the root resource of a REST API"));
    }
    // The resource and everything under it.
    let all = s.list(Kind::Resource, api)?;
    let mut doomed = vec![rid.to_string()];
    let mut i = 0;
    while i < doomed.len() {
        for r in &all {
            if r.get("parentId").and_then(Value::as_str) == Some(doomed[i].as_str())
                && let Some(id) = r.get("id").and_then(Value::as_str)
            {
                doomed.push(id.to_string());
            }
        }
        i += 1;
    }
    for id in doomed {
        s.delete(Kind::Resource, api, &id)?;
    }
    Ok(())
}

fn check_method(m: &str) -> Result<String, GatewayError> {
    let up = m.to_ascii_uppercase();
    if METHODS.contains(&up.as_str()) {
        Ok(up)
    } else {
        Err(bad(format!("Invalid HttpMethod specified. Valid options are {}", METHODS.join(","))))
    }
}

fn method_of(res: &Value, m: &str) -> Result<Value, GatewayError> {
    res.get("resourceMethods")
        .and_then(|rm| rm.get(m))
        .cloned()
        .ok_or_else(|| GatewayError::NotFound("Invalid Method identifier specified".into()))
}

fn set_method(s: &Store, api: &str, mut res: Value, m: &str, method: Option<Value>) -> Result<(), GatewayError> {
    let rid = res.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
    let rm = res
        .as_object_mut()
        .ok_or_else(|| GatewayError::Internal("resource is not an object".into()))?
        .entry("resourceMethods")
        .or_insert_with(|| json!({}));
    if let Some(map) = rm.as_object_mut() {
        match method {
            Some(v) => {
                map.insert(m.to_string(), v);
            }
            None => {
                map.remove(m);
            }
        }
    }
    if rm.as_object().is_some_and(Map::is_empty)
        && let Some(o) = res.as_object_mut()
    {
        o.remove("resourceMethods");
    }
    s.put(Kind::Resource, api, &rid, &res)
}

/// A method's authorization type, and the authorizer and validator it names, must be real:
/// AWS answers BadRequestException (not NotFound) for a method naming a missing one.
fn check_method_refs(s: &Store, api: &str, method: &Value) -> Result<(), GatewayError> {
    let auth = method.get("authorizationType").and_then(Value::as_str).unwrap_or_default();
    if !matches!(auth, "NONE" | "AWS_IAM" | "CUSTOM" | "COGNITO_USER_POOLS") {
        return Err(bad(format!("Invalid authorization type specified: {auth}")));
    }
    if matches!(auth, "CUSTOM" | "COGNITO_USER_POOLS") {
        let known = method
            .get("authorizerId")
            .and_then(Value::as_str)
            .map(|az| s.get(Kind::Authorizer, api, az))
            .transpose()?
            .flatten();
        if known.is_none() {
            return Err(bad(
                "Invalid authorizer ID specified. Setting the authorization type to CUSTOM or COGNITO_USER_POOLS requires a valid authorizer.",
            ));
        }
    }
    if let Some(v) = method.get("requestValidatorId").and_then(Value::as_str)
        && s.get(Kind::RequestValidator, api, v)?.is_none()
    {
        return Err(bad("Invalid Request Validator identifier specified"));
    }
    Ok(())
}

fn check_method_parameters(params: Option<&Value>) -> Result<(), GatewayError> {
    let Some(p) = params else { return Ok(()) };
    let map = p.as_object().ok_or_else(|| bad("requestParameters must be a map"))?;
    for (k, v) in map {
        let ok = [
            "method.request.header.",
            "method.request.querystring.",
            "method.request.path.",
            "method.request.multivalueheader.",
            "method.request.multivaluequerystring.",
        ]
        .iter()
        .any(|p| k.strip_prefix(p).is_some_and(|n| !n.is_empty()));
        if !ok || !v.is_boolean() {
            return Err(bad(format!("Invalid method request parameter specified: {k}")));
        }
    }
    Ok(())
}

pub fn put_method(s: &Store, api: &str, rid: &str, m: &str, input: &Value) -> Result<Value, GatewayError> {
    let res = resource(s, api, rid)?;
    let m = check_method(m)?;
    let auth = req_str(input, "authorizationType")?;
    check_method_refs(s, api, input)?;
    check_method_parameters(input.get("requestParameters"))?;
    let mut doc = Map::new();
    doc.insert("httpMethod".into(), json!(m));
    doc.insert("authorizationType".into(), json!(auth));
    doc.insert("apiKeyRequired".into(), json!(input.get("apiKeyRequired").and_then(Value::as_bool).unwrap_or(false)));
    copy(
        &mut doc,
        input,
        &[
            "authorizerId",
            "requestParameters",
            "requestModels",
            "requestValidatorId",
            "operationName",
            "authorizationScopes",
        ],
    );
    let doc = Value::Object(doc);
    set_method(s, api, res, &m, Some(doc.clone()))?;
    Ok(doc)
}

pub fn method(s: &Store, api: &str, rid: &str, m: &str) -> Result<Value, GatewayError> {
    method_of(&resource(s, api, rid)?, &check_method(m)?)
}

pub fn delete_method(s: &Store, api: &str, rid: &str, m: &str) -> Result<(), GatewayError> {
    let res = resource(s, api, rid)?;
    let m = check_method(m)?;
    method_of(&res, &m)?;
    set_method(s, api, res, &m, None)
}

pub fn update_method(s: &Store, api: &str, rid: &str, m: &str, input: &Value) -> Result<Value, GatewayError> {
    let res = resource(s, api, rid)?;
    let m = check_method(m)?;
    let mut doc = method_of(&res, &m)?;
    apply_patch(
        &mut doc,
        input,
        &[
            "/apiKeyRequired",
            "/authorizationType",
            "/authorizerId",
            "/requestParameters",
            "/requestValidatorId",
            "/operationName",
        ],
    )?;
    check_method_refs(s, api, &doc)?;
    check_method_parameters(doc.get("requestParameters"))?;
    set_method(s, api, res, &m, Some(doc.clone()))?;
    Ok(doc)
}

/// The function ARN inside a Lambda integration or authorizer URI
/// (`arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<function arn>/invocations`),
/// or a bare function name or ARN.
pub fn function_of_uri(uri: &str) -> Option<&str> {
    if let Some(rest) = uri.split(":lambda:path/2015-03-31/functions/").nth(1) {
        return rest.strip_suffix("/invocations").filter(|f| !f.is_empty());
    }
    if uri.starts_with("arn:aws:lambda:") || (!uri.contains('/') && !uri.is_empty()) {
        return Some(uri);
    }
    None
}

pub fn put_integration(s: &Store, api: &str, rid: &str, m: &str, input: &Value) -> Result<Value, GatewayError> {
    let res = resource(s, api, rid)?;
    let m = check_method(m)?;
    let mut method = method_of(&res, &m)?;
    let kind = req_str(input, "type")?;
    match kind {
        "AWS" | "AWS_PROXY" => {
            let uri = req_str(input, "uri")?;
            if function_of_uri(uri).is_none() {
                return Err(bad(format!(
                    "Invalid integration URI specified: {uri}. Quarters integrates with Lambda functions: arn:aws:apigateway:<region>:lambda:path/2015-03-31/functions/<function ARN>/invocations"
                )));
            }
        }
        "MOCK" => {}
        "HTTP" | "HTTP_PROXY" => {
            return Err(bad(
                "Quarters supports AWS, AWS_PROXY and MOCK integrations; HTTP integrations are not supported",
            ));
        }
        other => return Err(bad(format!("Invalid integration type specified: {other}"))),
    }
    if let Some(p) = input.get("requestParameters") {
        let map = p.as_object().ok_or_else(|| bad("requestParameters must be a map"))?;
        for (k, v) in map {
            let target_ok =
                ["integration.request.header.", "integration.request.querystring.", "integration.request.path."]
                    .iter()
                    .any(|p| k.strip_prefix(p).is_some_and(|n| !n.is_empty()));
            let expr = v.as_str().unwrap_or_default();
            if !target_ok {
                return Err(bad(format!("Invalid mapping expression specified: {k}")));
            }
            crate::proxy::Source::parse(expr).map_err(|e| {
                bad(format!("Invalid mapping expression specified: Validation Result: warnings : [], errors : [{e}]"))
            })?;
        }
    }
    let timeout = input.get("timeoutInMillis").and_then(Value::as_u64).unwrap_or(29_000);
    if !(50..=29_000).contains(&timeout) {
        return Err(bad("Timeout should be between 50 ms and 29000 ms"));
    }
    // Beyond REST APIs: an `AWS_PROXY` integration may ask for HTTP APIs' payload format 2.0
    // (not in boto3's model; the JSON API and the app file take it).
    let format = input.get("payloadFormatVersion").and_then(Value::as_str);
    if let Some(f) = format
        && (!matches!(f, "1.0" | "2.0") || kind != "AWS_PROXY")
    {
        return Err(bad(format!("Invalid payloadFormatVersion {f}: 1.0 or 2.0, for AWS_PROXY integrations")));
    }
    let mut doc = Map::new();
    doc.insert("type".into(), json!(kind));
    doc.insert("timeoutInMillis".into(), json!(timeout));
    if let Some(f) = format {
        doc.insert("payloadFormatVersion".into(), json!(f));
    }
    doc.insert("passthroughBehavior".into(), json!("WHEN_NO_MATCH"));
    doc.insert("cacheNamespace".into(), json!(rid));
    doc.insert("cacheKeyParameters".into(), json!([]));
    copy(
        &mut doc,
        input,
        &[
            "httpMethod",
            "uri",
            "credentials",
            "requestParameters",
            "requestTemplates",
            "passthroughBehavior",
            "contentHandling",
        ],
    );
    let doc = Value::Object(doc);
    if let Some(o) = method.as_object_mut() {
        o.insert("methodIntegration".into(), doc.clone());
    }
    set_method(s, api, res, &m, Some(method))?;
    Ok(doc)
}

pub fn integration(s: &Store, api: &str, rid: &str, m: &str) -> Result<Value, GatewayError> {
    method(s, api, rid, m)?
        .get("methodIntegration")
        .cloned()
        .ok_or_else(|| GatewayError::NotFound("Invalid Integration identifier specified".into()))
}

pub fn delete_integration(s: &Store, api: &str, rid: &str, m: &str) -> Result<(), GatewayError> {
    let res = resource(s, api, rid)?;
    let m = check_method(m)?;
    let mut method = method_of(&res, &m)?;
    let had = method.as_object_mut().and_then(|o| o.remove("methodIntegration")).is_some();
    if !had {
        return Err(GatewayError::NotFound("Invalid Integration identifier specified".into()));
    }
    set_method(s, api, res, &m, Some(method))
}

/// PutMethodResponse (`integration == false`) and PutIntegrationResponse: stored for
/// round-tripping; Quarters' AWS integrations return the function's payload as the body.
pub fn put_response(
    s: &Store,
    api: &str,
    rid: &str,
    m: &str,
    status: &str,
    integration: bool,
    input: &Value,
) -> Result<Value, GatewayError> {
    let res = resource(s, api, rid)?;
    let m = check_method(m)?;
    let mut method = method_of(&res, &m)?;
    if status.len() != 3 || !status.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad(format!("Invalid status code: {status}")));
    }
    let mut doc = input.as_object().cloned().unwrap_or_default();
    doc.insert("statusCode".into(), json!(status));
    let doc = Value::Object(doc);
    let holder = if integration {
        method
            .get_mut("methodIntegration")
            .ok_or_else(|| GatewayError::NotFound("Invalid Integration identifier specified".into()))?
    } else {
        &mut method
    };
    let key = if integration { "integrationResponses" } else { "methodResponses" };
    if let Some(o) = holder.as_object_mut() {
        let map = o.entry(key).or_insert_with(|| json!({}));
        if let Some(map) = map.as_object_mut() {
            map.insert(status.to_string(), doc.clone());
        }
    }
    set_method(s, api, res, &m, Some(method))?;
    Ok(doc)
}

// ---- authorizers and validators ----

pub fn create_authorizer(s: &Store, api: &str, input: &Value) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    let name = req_str(input, "name")?;
    let kind = req_str(input, "type")?;
    let ttl = input.get("authorizerResultTtlInSeconds").and_then(Value::as_i64).unwrap_or(300);
    let source = input
        .get("identitySource")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| (kind == "TOKEN" || kind == "JWT").then(|| "method.request.header.Authorization".to_string()));
    let id = new_id();
    let mut doc = Map::new();
    doc.insert("id".into(), json!(id));
    doc.insert("name".into(), json!(name));
    doc.insert("type".into(), json!(kind));
    doc.insert("authType".into(), json!("custom"));
    doc.insert("authorizerResultTtlInSeconds".into(), json!(ttl));
    if let Some(src) = source {
        doc.insert("identitySource".into(), json!(src));
    }
    copy(
        &mut doc,
        input,
        &["authorizerUri", "authorizerCredentials", "identityValidationExpression", "providerARNs", "authType"],
    );
    let doc = Value::Object(doc);
    check_authorizer(&doc)?;
    s.put(Kind::Authorizer, api, &id, &doc)?;
    Ok(doc)
}

/// An authorizer the data plane can serve: its type, its function or JWT settings, its TTL and
/// its identity sources (each a mapping expression the data plane evaluates).
fn check_authorizer(doc: &Value) -> Result<(), GatewayError> {
    match req_str(doc, "type")? {
        "TOKEN" | "REQUEST" => {
            let uri = req_str(doc, "authorizerUri")?;
            if function_of_uri(uri).is_none() {
                return Err(bad(format!("Invalid authorizer URI specified: {uri}")));
            }
        }
        "JWT" => {
            jwt_config(doc)?;
        }
        "COGNITO_USER_POOLS" => {
            return Err(bad("COGNITO_USER_POOLS authorizers are not supported by Quarters; use type JWT"));
        }
        other => return Err(bad(format!("Invalid authorizer type specified: {other}"))),
    }
    let ttl = doc.get("authorizerResultTtlInSeconds").and_then(Value::as_i64).unwrap_or(300);
    if !(0..=3600).contains(&ttl) {
        return Err(bad("Authorizer result TTL must be between 0 and 3600 seconds"));
    }
    let sources = doc.get("identitySource").and_then(Value::as_str).unwrap_or_default();
    for src in sources.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        crate::proxy::Source::parse(src).map_err(|_| bad(format!("Invalid identity source specified: {src}")))?;
    }
    Ok(())
}

/// A JWT authorizer's settings, from `providerARNs` entries `key=value` (`issuer=`, `audience=`,
/// `secret=`, `publicKeyPem=`, `jwksFile=`, `jwksUrl=`, `require=`, `tenantClaim=`,
/// `leewaySeconds=`) and, as a JWKS location, `authorizerUri`.
pub fn jwt_config(input: &Value) -> Result<crate::jwt::JwtConfig, GatewayError> {
    let mut cfg = crate::jwt::JwtConfig::default();
    for entry in input.get("providerARNs").and_then(Value::as_array).into_iter().flatten() {
        let e = entry.as_str().unwrap_or_default();
        let (k, v) = e
            .split_once('=')
            .ok_or_else(|| bad(format!("Invalid JWT authorizer setting '{e}': expected key=value")))?;
        let v = v.to_string();
        match k {
            "issuer" => cfg.issuer = Some(v),
            "audience" => cfg.audience.push(v),
            "secret" => cfg.hs256_secrets.push(v),
            "publicKeyPem" => cfg.public_keys_pem.push(v),
            "jwksFile" => cfg.jwks_file = Some(v),
            "jwksUrl" => cfg.jwks_url = Some(v),
            "require" => cfg.required_claims.push(v),
            "tenantClaim" => cfg.tenant_claim = Some(v),
            "leewaySeconds" => cfg.leeway_seconds = v.parse().map_err(|_| bad("leewaySeconds must be a number"))?,
            other => return Err(bad(format!("Unknown JWT authorizer setting '{other}'"))),
        }
    }
    if let Some(uri) = input.get("authorizerUri").and_then(Value::as_str) {
        if let Some(p) = uri.strip_prefix("file://") {
            cfg.jwks_file = Some(p.to_string());
        } else if uri.starts_with("http://") || uri.starts_with("https://") {
            cfg.jwks_url = Some(uri.to_string());
        }
    }
    // Build it once to refuse bad keys now rather than at the first request.
    crate::jwt::JwtVerifier::new(cfg.clone()).map_err(|e| bad(format!("Invalid JWT authorizer: {e}")))?;
    Ok(cfg)
}

pub fn authorizer(s: &Store, api: &str, id: &str) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    s.get(Kind::Authorizer, api, id)?
        .ok_or_else(|| GatewayError::NotFound(format!("Invalid authorizer ID specified: {id}")))
}

pub fn update_authorizer(s: &Store, api: &str, id: &str, input: &Value) -> Result<Value, GatewayError> {
    let mut doc = authorizer(s, api, id)?;
    for op in input.get("patchOperations").and_then(Value::as_array).into_iter().flatten() {
        // `providerARNs` is a list: `add` appends the value, `remove` takes it out.
        if op.get("path").and_then(Value::as_str) == Some("/providerARNs") {
            let value = op.get("value").and_then(Value::as_str).unwrap_or_default();
            let list = doc
                .as_object_mut()
                .map(|o| o.entry("providerARNs").or_insert_with(|| json!([])))
                .and_then(Value::as_array_mut)
                .ok_or_else(|| GatewayError::Internal("stored providerARNs is not a list".into()))?;
            match op.get("op").and_then(Value::as_str).unwrap_or_default() {
                "add" if !list.iter().any(|v| v == value) => list.push(json!(value)),
                "add" => {}
                "remove" => list.retain(|v| v != value),
                other => {
                    return Err(bad(format!(
                        "Invalid patch operation specified. Must be one of: [add, remove] for /providerARNs: {other}"
                    )));
                }
            }
            continue;
        }
        apply_patch(
            &mut doc,
            &json!({"patchOperations": [op]}),
            &[
                "/name",
                "/authorizerUri",
                "/identitySource",
                "/identityValidationExpression",
                "/authorizerResultTtlInSeconds",
            ],
        )?;
    }
    check_authorizer(&doc)?;
    s.put(Kind::Authorizer, api, id, &doc)?;
    Ok(doc)
}

/// DeleteAuthorizer: refused while a method uses it.
pub fn delete_authorizer(s: &Store, api: &str, id: &str) -> Result<(), GatewayError> {
    authorizer(s, api, id)?;
    for r in s.list(Kind::Resource, api)? {
        for (m, def) in r.get("resourceMethods").and_then(Value::as_object).into_iter().flatten() {
            if def.get("authorizerId").and_then(Value::as_str) == Some(id) {
                let path = r.get("path").and_then(Value::as_str).unwrap_or("/");
                return Err(GatewayError::Conflict(format!(
                    "Cannot delete authorizer, is referenced in method: {m}/{path}"
                )));
            }
        }
    }
    s.delete(Kind::Authorizer, api, id)?;
    Ok(())
}

pub fn create_validator(s: &Store, api: &str, input: &Value) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    let id = new_id();
    let doc = json!({
        "id": id,
        "name": input.get("name").and_then(Value::as_str).unwrap_or_default(),
        "validateRequestBody": input.get("validateRequestBody").and_then(Value::as_bool).unwrap_or(false),
        "validateRequestParameters": input.get("validateRequestParameters").and_then(Value::as_bool).unwrap_or(false),
    });
    s.put(Kind::RequestValidator, api, &id, &doc)?;
    Ok(doc)
}

pub fn validator(s: &Store, api: &str, id: &str) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    s.get(Kind::RequestValidator, api, id)?
        .ok_or_else(|| GatewayError::NotFound(format!("Invalid Request Validator identifier specified: {id}")))
}

// ---- deployments and stages ----

pub fn create_deployment(s: &Store, api: &str, input: &Value) -> Result<Value, GatewayError> {
    let api_doc = rest_api(s, api)?;
    let resources = s.list(Kind::Resource, api)?;
    let mut methods = 0;
    for r in &resources {
        for (m, def) in r.get("resourceMethods").and_then(Value::as_object).into_iter().flatten() {
            methods += 1;
            if def.get("methodIntegration").is_none() {
                return Err(bad(format!(
                    "No integration defined for method {m} on {}",
                    r.get("path").and_then(Value::as_str).unwrap_or("/")
                )));
            }
        }
    }
    if methods == 0 {
        return Err(bad("The REST API doesn't contain any methods"));
    }
    // Refuse a bad stage before anything is stored, so a failed deployment leaves nothing behind.
    let stage_name = input.get("stageName").and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(name) = stage_name {
        check_stage_name(name)?;
        check_variables(input.get("variables"))?;
    }
    let id = new_id();
    let mut doc = Map::new();
    doc.insert("id".into(), json!(id));
    doc.insert("createdDate".into(), json!(now_s()));
    copy(&mut doc, input, &["description"]);
    let mut summary = Map::new();
    for r in &resources {
        let path = r.get("path").and_then(Value::as_str).unwrap_or("/").to_string();
        let mut ms = Map::new();
        for (m, def) in r.get("resourceMethods").and_then(Value::as_object).into_iter().flatten() {
            ms.insert(
                m.clone(),
                json!({"authorizationType": def.get("authorizationType"), "apiKeyRequired": def.get("apiKeyRequired")}),
            );
        }
        if !ms.is_empty() {
            summary.insert(path, Value::Object(ms));
        }
    }
    doc.insert("apiSummary".into(), Value::Object(summary));
    doc.insert(
        "_snapshot".into(),
        json!({
            "apiKeySource": api_doc.get("apiKeySource").cloned().unwrap_or(json!("HEADER")),
            "resources": resources,
            "authorizers": s.list(Kind::Authorizer, api)?,
            "validators": s.list(Kind::RequestValidator, api)?,
        }),
    );
    let doc = Value::Object(doc);
    s.put(Kind::Deployment, api, &id, &doc)?;
    if let Some(stage) = stage_name {
        match s.get(Kind::Stage, api, stage)? {
            Some(mut st) => {
                if let Some(o) = st.as_object_mut() {
                    o.insert("deploymentId".into(), json!(id));
                    o.insert("lastUpdatedDate".into(), json!(now_s()));
                    if let Some(v) = input.get("variables").filter(|v| v.is_object()) {
                        o.insert("variables".into(), v.clone());
                    }
                }
                s.put(Kind::Stage, api, stage, &st)?;
            }
            None => {
                let mut st = json!({"stageName": stage, "deploymentId": id});
                if let (Some(o), Some(v)) = (st.as_object_mut(), input.get("variables")) {
                    o.insert("variables".into(), v.clone());
                }
                if let (Some(o), Some(d)) = (st.as_object_mut(), input.get("stageDescription")) {
                    o.insert("description".into(), d.clone());
                }
                create_stage(s, api, &st)?;
            }
        }
    }
    Ok(public(doc))
}

pub fn deployment(s: &Store, api: &str, id: &str) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    s.get(Kind::Deployment, api, id)?
        .ok_or_else(|| GatewayError::NotFound(format!("Invalid Deployment identifier specified: {id}")))
}

pub fn delete_deployment(s: &Store, api: &str, id: &str) -> Result<(), GatewayError> {
    deployment(s, api, id)?;
    for st in s.list(Kind::Stage, api)? {
        if st.get("deploymentId").and_then(Value::as_str) == Some(id) {
            return Err(bad(
                "Active stages pointing to this deployment must be moved or deleted before the deployment can be deleted",
            ));
        }
    }
    s.delete(Kind::Deployment, api, id)?;
    Ok(())
}

fn check_variables(v: Option<&Value>) -> Result<(), GatewayError> {
    for (k, val) in v.and_then(Value::as_object).into_iter().flatten() {
        let name_ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let val_ok = val.as_str().is_some_and(|s| {
            s.len() <= 512 && s.chars().all(|c| c.is_ascii_alphanumeric() || " -._~:/?#&=,".contains(c))
        });
        if !name_ok || !val_ok {
            return Err(bad(format!(
                "Stage variable name {k} or value is invalid: names are [A-Za-z0-9_]+, values [A-Za-z0-9-._~:/?#&=,]+ up to 512 characters"
            )));
        }
    }
    Ok(())
}

fn check_stage_name(name: &str) -> Result<(), GatewayError> {
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || name.len() > 128 {
        return Err(bad("Stage name only allows a-zA-Z0-9_-"));
    }
    Ok(())
}

pub fn create_stage(s: &Store, api: &str, input: &Value) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    let name = req_str(input, "stageName")?;
    check_stage_name(name)?;
    let dep = req_str(input, "deploymentId")?;
    deployment(s, api, dep)?;
    check_variables(input.get("variables"))?;
    let mut doc = Map::new();
    doc.insert("stageName".into(), json!(name));
    doc.insert("deploymentId".into(), json!(dep));
    doc.insert("cacheClusterEnabled".into(), json!(false));
    doc.insert("tracingEnabled".into(), json!(false));
    doc.insert("methodSettings".into(), json!({}));
    doc.insert("createdDate".into(), json!(now_s()));
    doc.insert("lastUpdatedDate".into(), json!(now_s()));
    copy(&mut doc, input, &["description", "variables", "tags"]);
    let doc = Value::Object(doc);
    if !s.insert_new(Kind::Stage, api, name, &doc)? {
        return Err(GatewayError::Conflict("Stage already exists".into()));
    }
    Ok(doc)
}

pub fn stage(s: &Store, api: &str, name: &str) -> Result<Value, GatewayError> {
    rest_api(s, api)?;
    s.get(Kind::Stage, api, name)?.ok_or_else(|| GatewayError::NotFound("Invalid stage identifier specified".into()))
}

pub fn update_stage(s: &Store, api: &str, name: &str, input: &Value) -> Result<Value, GatewayError> {
    let mut doc = stage(s, api, name)?;
    apply_patch(&mut doc, input, &["/variables", "/deploymentId", "/description", "/methodSettings"])?;
    check_variables(doc.get("variables"))?;
    if let Some(dep) = doc.get("deploymentId").and_then(Value::as_str) {
        deployment(s, api, dep)?;
    }
    if let Some(o) = doc.as_object_mut() {
        o.insert("lastUpdatedDate".into(), json!(now_s()));
    }
    s.put(Kind::Stage, api, name, &doc)?;
    Ok(doc)
}

// ---- usage plans and API keys ----

fn check_plan(s: &Store, doc: &Value) -> Result<(), GatewayError> {
    for st in doc.get("apiStages").and_then(Value::as_array).into_iter().flatten() {
        let api = req_str(st, "apiId")?;
        let name = req_str(st, "stage")?;
        stage(s, api, name).map_err(|_| bad(format!("Invalid stage identifier specified: {api}:{name}")))?;
    }
    if let Some(q) = doc.get("quota") {
        let limit = q.get("limit").and_then(Value::as_i64).unwrap_or(-1);
        let period = q.get("period").and_then(Value::as_str).unwrap_or("");
        if limit < 0 || !matches!(period, "DAY" | "WEEK" | "MONTH") {
            return Err(bad("A quota needs a non-negative limit and a period of DAY, WEEK or MONTH"));
        }
    }
    if let Some(t) = doc.get("throttle") {
        let rate = t.get("rateLimit").and_then(Value::as_f64).unwrap_or(0.0);
        let burst = t.get("burstLimit").and_then(Value::as_i64).unwrap_or(0);
        if rate < 0.0 || burst < 0 {
            return Err(bad("Throttle rateLimit and burstLimit must not be negative"));
        }
    }
    Ok(())
}

pub fn create_usage_plan(s: &Store, input: &Value) -> Result<Value, GatewayError> {
    let name = req_str(input, "name")?;
    let id = new_id();
    let mut doc = Map::new();
    doc.insert("id".into(), json!(id));
    doc.insert("name".into(), json!(name));
    doc.insert("apiStages".into(), json!([]));
    copy(&mut doc, input, &["description", "apiStages", "throttle", "quota", "tags", "productCode"]);
    let doc = Value::Object(doc);
    check_plan(s, &doc)?;
    s.put(Kind::UsagePlan, "", &id, &doc)?;
    Ok(doc)
}

pub fn usage_plan(s: &Store, id: &str) -> Result<Value, GatewayError> {
    s.get(Kind::UsagePlan, "", id)?
        .ok_or_else(|| GatewayError::NotFound(format!("Invalid Usage Plan ID specified: {id}")))
}

pub fn delete_usage_plan(s: &Store, id: &str) -> Result<(), GatewayError> {
    usage_plan(s, id)?;
    s.delete_scope(&[Kind::UsagePlanKey], id)?;
    s.delete(Kind::UsagePlan, "", id)?;
    Ok(())
}

pub fn update_usage_plan(s: &Store, id: &str, input: &Value) -> Result<Value, GatewayError> {
    let mut doc = usage_plan(s, id)?;
    for op in input.get("patchOperations").and_then(Value::as_array).into_iter().flatten() {
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let verb = op.get("op").and_then(Value::as_str).unwrap_or_default();
        let value = op.get("value").and_then(Value::as_str).unwrap_or_default();
        // `/apiStages` add/remove `apiId:stage`; per-method throttles under
        // `/apiStages/apiId:stage/throttle/<resourcePath>/<METHOD>/{rateLimit,burstLimit}`.
        if path == "/apiStages" {
            let (api, st) = value.split_once(':').ok_or_else(|| bad("apiStages values are apiId:stage"))?;
            if let Some(o) = doc.as_object_mut() {
                o.entry("apiStages").or_insert_with(|| json!([]));
            }
            let arr = doc.get_mut("apiStages").and_then(Value::as_array_mut);
            if let Some(arr) = arr {
                arr.retain(|x| {
                    !(x.get("apiId").and_then(Value::as_str) == Some(api)
                        && x.get("stage").and_then(Value::as_str) == Some(st))
                });
                if verb == "add" {
                    arr.push(json!({"apiId": api, "stage": st}));
                }
            }
            continue;
        }
        if let Some(rest) = path.strip_prefix("/apiStages/") {
            let (key, tail) = rest.split_once("/throttle").ok_or_else(|| bad(format!("Invalid patch path {path}")))?;
            let (api, st) = key.split_once(':').ok_or_else(|| bad("apiStages keys are apiId:stage"))?;
            let tail = tail.trim_start_matches('/');
            let arr = doc.get_mut("apiStages").and_then(Value::as_array_mut).ok_or_else(|| bad("no apiStages"))?;
            let entry = arr
                .iter_mut()
                .find(|x| {
                    x.get("apiId").and_then(Value::as_str) == Some(api)
                        && x.get("stage").and_then(Value::as_str) == Some(st)
                })
                .ok_or_else(|| bad(format!("The usage plan has no stage {api}:{st}")))?;
            let throttles = entry.as_object_mut().map(|o| o.entry("throttle").or_insert_with(|| json!({})));
            let Some(throttles) = throttles.and_then(Value::as_object_mut) else { continue };
            if tail.is_empty() {
                if verb == "remove" {
                    throttles.clear();
                }
                continue;
            }
            // `<resourcePath>/<METHOD>/<field>` with the path's slashes escaped as `~1`.
            let parts: Vec<&str> = tail.rsplitn(3, '/').collect();
            match parts.as_slice() {
                [field, m, rpath] => {
                    let method_key = format!("{}/{}", rpath.replace("~1", "/"), m);
                    let t = throttles.entry(method_key).or_insert_with(|| json!({}));
                    set_typed(t, field, value, verb)?;
                }
                [m, rpath] if verb == "remove" => {
                    throttles.remove(&format!("{}/{}", rpath.replace("~1", "/"), m));
                }
                _ => return Err(bad(format!("Invalid patch path {path}"))),
            }
            continue;
        }
        let single = json!({"patchOperations": [op]});
        apply_patch(&mut doc, &single, &["/name", "/description", "/throttle", "/quota", "/productCode"])?;
    }
    check_plan(s, &doc)?;
    s.put(Kind::UsagePlan, "", id, &doc)?;
    Ok(doc)
}

pub fn create_api_key(s: &Store, input: &Value) -> Result<Value, GatewayError> {
    let value = match input.get("value").and_then(Value::as_str) {
        Some(v) if v.len() < 20 || v.len() > 128 => {
            return Err(bad("API Key value should be at least 20 characters and at most 128"));
        }
        Some(v) => v.to_string(),
        None => {
            use rand::Rng;
            const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rand::rng();
            (0..40).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
        }
    };
    if s.list(Kind::ApiKey, "")?.iter().any(|k| k.get("value").and_then(Value::as_str) == Some(value.as_str())) {
        return Err(GatewayError::Conflict("API Key already exists".into()));
    }
    let id = new_id();
    let mut doc = Map::new();
    doc.insert("id".into(), json!(id));
    doc.insert("value".into(), json!(value));
    doc.insert("name".into(), json!(input.get("name").and_then(Value::as_str).unwrap_or(&id)));
    doc.insert("enabled".into(), json!(input.get("enabled").and_then(Value::as_bool).unwrap_or(false)));
    doc.insert("createdDate".into(), json!(now_s()));
    doc.insert("lastUpdatedDate".into(), json!(now_s()));
    doc.insert("stageKeys".into(), json!([]));
    copy(&mut doc, input, &["description", "customerId", "tags"]);
    let doc = Value::Object(doc);
    s.put(Kind::ApiKey, "", &id, &doc)?;
    Ok(doc)
}

pub fn api_key(s: &Store, id: &str) -> Result<Value, GatewayError> {
    s.get(Kind::ApiKey, "", id)?.ok_or_else(|| GatewayError::NotFound("Invalid API Key identifier specified".into()))
}

/// An API key as GetApiKey(s) show it: the value only when asked for.
pub fn show_key(mut k: Value, include_value: bool) -> Value {
    if !include_value && let Some(o) = k.as_object_mut() {
        o.remove("value");
    }
    k
}

pub fn update_api_key(s: &Store, id: &str, input: &Value) -> Result<Value, GatewayError> {
    let mut doc = api_key(s, id)?;
    apply_patch(&mut doc, input, &["/enabled", "/name", "/description", "/customerId"])?;
    if let Some(o) = doc.as_object_mut() {
        o.insert("lastUpdatedDate".into(), json!(now_s()));
    }
    s.put(Kind::ApiKey, "", id, &doc)?;
    Ok(doc)
}

pub fn delete_api_key(s: &Store, id: &str) -> Result<(), GatewayError> {
    api_key(s, id)?;
    for (plan, _) in s.list_all(Kind::UsagePlanKey)? {
        s.delete(Kind::UsagePlanKey, &plan, id)?;
    }
    s.delete(Kind::ApiKey, "", id)?;
    Ok(())
}

/// A usage plan's stages as `apiId:stage`.
fn plan_stages(plan: &Value) -> Vec<String> {
    plan.get("apiStages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|st| Some(format!("{}:{}", st.get("apiId")?.as_str()?, st.get("stage")?.as_str()?)))
        .collect()
}

pub fn create_usage_plan_key(s: &Store, plan: &str, input: &Value) -> Result<Value, GatewayError> {
    let plan_doc = usage_plan(s, plan)?;
    let key_id = req_str(input, "keyId")?;
    let kind = req_str(input, "keyType")?;
    if kind != "API_KEY" {
        return Err(bad(format!("Invalid key type specified: {kind}")));
    }
    let key = api_key(s, key_id)?;
    // A key may be in one plan per API stage, or which plan's limits apply would be ambiguous.
    let stages = plan_stages(&plan_doc);
    for (other, k) in s.list_all(Kind::UsagePlanKey)? {
        if other == plan || k.get("id").and_then(Value::as_str) != Some(key_id) {
            continue;
        }
        let Some(other_doc) = s.get(Kind::UsagePlan, "", &other)? else { continue };
        if let Some(shared) = plan_stages(&other_doc).into_iter().find(|st| stages.contains(st)) {
            return Err(GatewayError::Conflict(format!(
                "Usage Plan {plan} cannot be added because API Key {key_id} cannot reference multiple Usage Plans with the same API Stage: {shared}"
            )));
        }
    }
    let doc = json!({"id": key_id, "type": "API_KEY", "value": key.get("value"), "name": key.get("name")});
    if !s.insert_new(Kind::UsagePlanKey, plan, key_id, &doc)? {
        return Err(GatewayError::Conflict(format!(
            "Usage Plan {plan} cannot be added because API Key {key_id} cannot reference multiple Usage Plans with the same API Stage"
        )));
    }
    Ok(doc)
}

pub fn usage_plan_key(s: &Store, plan: &str, key: &str) -> Result<Value, GatewayError> {
    usage_plan(s, plan)?;
    s.get(Kind::UsagePlanKey, plan, key)?
        .ok_or_else(|| GatewayError::NotFound(format!("Invalid Usage Plan Key identifier specified: {key}")))
}

/// `YYYY-MM-DD` to the epoch ms of that day's start (UTC).
pub fn parse_date(d: &str) -> Option<u64> {
    let mut it = d.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let day: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let days = quarters_types::time::days_from_civil(y, m as u32, day as u32);
    u64::try_from(days).ok().map(|d| d * 86_400_000)
}

/// GetUsage: requests per key per day between two dates, with the quota remaining.
pub fn usage(
    s: &Store,
    plan: &str,
    key: Option<&str>,
    start: &str,
    end: &str,
    live: &dyn Fn(&str, &str, u64) -> u64,
) -> Result<Value, GatewayError> {
    let doc = usage_plan(s, plan)?;
    let (Some(from), Some(to)) = (parse_date(start), parse_date(end)) else {
        return Err(bad("Invalid date format: startDate and endDate are YYYY-MM-DD"));
    };
    if to < from {
        return Err(bad("The end date must not be before the start date"));
    }
    if (to - from) / 86_400_000 > 90 {
        return Err(bad("The usage data can be retrieved for up to 90 days"));
    }
    let quota = doc.get("quota").cloned();
    let keys: Vec<String> = match key {
        Some(k) => vec![k.to_string()],
        None => {
            s.list(Kind::UsagePlanKey, plan)?.iter().filter_map(|k| k.get("id")?.as_str().map(String::from)).collect()
        }
    };
    let stored = s.usage(plan, key, from, to)?;
    let mut values = Map::new();
    for k in keys {
        let mut days = Vec::new();
        let mut day = from;
        while day <= to {
            let used = stored.iter().filter(|(kk, d, _)| kk == &k && *d == day).map(|(_, _, n)| *n).sum::<u64>()
                + live(plan, &k, day);
            let remaining = match &quota {
                Some(q) => {
                    let limit = q.get("limit").and_then(Value::as_u64).unwrap_or(0);
                    let period = match q.get("period").and_then(Value::as_str) {
                        Some("WEEK") => crate::throttle::Period::Week,
                        Some("MONTH") => crate::throttle::Period::Month,
                        _ => crate::throttle::Period::Day,
                    };
                    let offset = q.get("offset").and_then(Value::as_u64).unwrap_or(0) as u32;
                    let pstart = crate::throttle::period_start(period, offset, day);
                    let so_far: u64 = s.usage(plan, Some(&k), pstart, day)?.iter().map(|(_, _, n)| *n).sum::<u64>()
                        + (pstart..=day).step_by(86_400_000).map(|d| live(plan, &k, d)).sum::<u64>();
                    limit.saturating_sub(so_far)
                }
                None => 0,
            };
            days.push(json!([used, remaining]));
            day += 86_400_000;
        }
        values.insert(k, Value::Array(days));
    }
    Ok(json!({"usagePlanId": plan, "startDate": start, "endDate": end, "values": values}))
}

// ---- custom domains ----

fn valid_domain(d: &str) -> bool {
    let d = d.strip_prefix("*.").unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

pub fn create_domain_name(s: &Store, input: &Value) -> Result<Value, GatewayError> {
    let name = req_str(input, "domainName")?.to_ascii_lowercase();
    if !valid_domain(&name) {
        return Err(bad(format!("Invalid domain name: {name}")));
    }
    let mut doc = Map::new();
    doc.insert("domainName".into(), json!(name));
    doc.insert("domainNameStatus".into(), json!("AVAILABLE"));
    doc.insert("distributionDomainName".into(), json!(format!("{}.cloudfront.net", new_id())));
    doc.insert("regionalDomainName".into(), json!(format!("d-{}.execute-api.localhost", new_id())));
    doc.insert("endpointConfiguration".into(), json!({"types": ["EDGE"]}));
    doc.insert("securityPolicy".into(), json!("TLS_1_2"));
    copy(
        &mut doc,
        input,
        &["certificateName", "certificateArn", "regionalCertificateArn", "endpointConfiguration", "tags"],
    );
    let doc = Value::Object(doc);
    if !s.insert_new(Kind::DomainName, "", &name, &doc)? {
        return Err(GatewayError::Conflict(format!("The domain name you provided already exists: {name}")));
    }
    Ok(doc)
}

pub fn domain_name(s: &Store, name: &str) -> Result<Value, GatewayError> {
    s.get(Kind::DomainName, "", &name.to_ascii_lowercase())?
        .ok_or_else(|| GatewayError::NotFound("Invalid domain name identifier specified".into()))
}

pub fn delete_domain_name(s: &Store, name: &str) -> Result<(), GatewayError> {
    let name = name.to_ascii_lowercase();
    domain_name(s, &name)?;
    s.delete_scope(&[Kind::BasePathMapping], &name)?;
    s.delete(Kind::DomainName, "", &name)?;
    Ok(())
}

pub fn create_base_path_mapping(s: &Store, domain: &str, input: &Value) -> Result<Value, GatewayError> {
    let domain = domain.to_ascii_lowercase();
    domain_name(s, &domain)?;
    let api = req_str(input, "restApiId")?;
    if s.get(Kind::RestApi, "", api)?.is_none() {
        return Err(bad("Invalid REST API identifier specified"));
    }
    let base = input.get("basePath").and_then(Value::as_str).filter(|b| !b.is_empty()).unwrap_or("(none)");
    if base != "(none)" && !base.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c)) {
        return Err(bad(format!("Invalid base path: {base}")));
    }
    let mut doc = json!({"basePath": base, "restApiId": api});
    if let Some(st) = input.get("stage").and_then(Value::as_str) {
        stage(s, api, st).map_err(|_| bad(format!("Invalid stage identifier specified: {st}")))?;
        if let Some(o) = doc.as_object_mut() {
            o.insert("stage".into(), json!(st));
        }
    }
    if !s.insert_new(Kind::BasePathMapping, &domain, base, &doc)? {
        return Err(GatewayError::Conflict("Base path already exists for this domain name".into()));
    }
    Ok(doc)
}

pub fn base_path_mapping(s: &Store, domain: &str, base: &str) -> Result<Value, GatewayError> {
    let domain = domain.to_ascii_lowercase();
    domain_name(s, &domain)?;
    let base = if base.is_empty() { "(none)" } else { base };
    s.get(Kind::BasePathMapping, &domain, base)?
        .ok_or_else(|| GatewayError::NotFound("Invalid base path mapping identifier specified".into()))
}

// ---- patch operations ----

fn set_typed(target: &mut Value, field: &str, value: &str, op: &str) -> Result<(), GatewayError> {
    let o = target.as_object_mut().ok_or_else(|| bad("patch target is not an object"))?;
    if op == "remove" {
        o.remove(field);
        return Ok(());
    }
    let v = match field {
        "rateLimit" => json!(value.parse::<f64>().map_err(|_| bad(format!("{field} must be a number")))?),
        "burstLimit" | "limit" | "offset" | "authorizerResultTtlInSeconds" | "timeoutInMillis" => {
            json!(value.parse::<i64>().map_err(|_| bad(format!("{field} must be an integer")))?)
        }
        "enabled" | "apiKeyRequired" => json!(value.eq_ignore_ascii_case("true")),
        _ => json!(value),
    };
    o.insert(field.to_string(), v);
    Ok(())
}

/// Apply API Gateway `patchOperations` (`op` replace/add/remove, `path` a JSON pointer with
/// `~1` for `/`) to a document, allowing only paths under `allowed`.
pub fn apply_patch(doc: &mut Value, input: &Value, allowed: &[&str]) -> Result<(), GatewayError> {
    for op in input.get("patchOperations").and_then(Value::as_array).into_iter().flatten() {
        let verb = op.get("op").and_then(Value::as_str).unwrap_or("replace");
        let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
        let value = op.get("value").and_then(Value::as_str).unwrap_or_default();
        if !matches!(verb, "replace" | "add" | "remove") {
            return Err(bad(format!("Invalid patch operation specified. Must be 'add'|'remove'|'replace': {verb}")));
        }
        if !allowed.iter().any(|a| path == *a || path.starts_with(&format!("{a}/"))) {
            return Err(bad(format!(
                "Invalid patch path '{path}' specified for op '{verb}'. Must be one of: [{}]",
                allowed.join(", ")
            )));
        }
        let segs: Vec<String> =
            path.trim_start_matches('/').split('/').map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
        let (last, parents) = segs.split_last().ok_or_else(|| bad("empty patch path"))?;
        let mut cur = &mut *doc;
        for p in parents {
            let o = cur.as_object_mut().ok_or_else(|| bad(format!("Invalid patch path {path}")))?;
            cur = o.entry(p.clone()).or_insert_with(|| json!({}));
        }
        // Method request parameters are booleans.
        if parents.first().map(String::as_str) == Some("requestParameters") || last.starts_with("method.request.") {
            let o = cur.as_object_mut().ok_or_else(|| bad(format!("Invalid patch path {path}")))?;
            if verb == "remove" {
                o.remove(last);
            } else {
                o.insert(last.clone(), json!(value.eq_ignore_ascii_case("true")));
            }
            continue;
        }
        set_typed(cur, last, value, verb)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rest_api_from_resources_to_a_stage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("store");
        let api = create_rest_api(&s, &json!({"name": "orders"})).expect("api");
        let id = api["id"].as_str().expect("id").to_string();
        let root = api["rootResourceId"].as_str().expect("root").to_string();
        let orders = create_resource(&s, &id, &root, &json!({"pathPart": "orders"})).expect("orders");
        assert_eq!(orders["path"], "/orders");
        let oid = orders["id"].as_str().expect("id").to_string();
        let item = create_resource(&s, &id, &oid, &json!({"pathPart": "{id}"})).expect("item");
        assert_eq!(item["path"], "/orders/{id}");
        // Two variables under one parent conflict.
        let e = create_resource(&s, &id, &oid, &json!({"pathPart": "{other}"})).expect_err("conflict");
        assert!(matches!(e, GatewayError::Conflict(_)));
        assert!(create_resource(&s, &id, &oid, &json!({"pathPart": "a/b"})).is_err());
        // A deployment needs methods with integrations.
        assert!(create_deployment(&s, &id, &json!({})).is_err());
        let iid = item["id"].as_str().expect("id").to_string();
        put_method(
            &s,
            &id,
            &iid,
            "get",
            &json!({"authorizationType": "NONE", "requestParameters": {"method.request.header.x-tenant": true}}),
        )
        .expect("method");
        assert!(create_deployment(&s, &id, &json!({})).is_err());
        let uri = "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/arn:aws:lambda:us-east-1:000000000000:function:f/invocations";
        put_integration(
            &s,
            &id,
            &iid,
            "GET",
            &json!({"type": "AWS_PROXY", "httpMethod": "POST", "uri": uri,
                    "requestParameters": {"integration.request.header.X-Amz-Tenant-Id": "method.request.header.x-tenant"}}),
        )
        .expect("integration");
        assert!(
            put_integration(
                &s,
                &id,
                &iid,
                "GET",
                &json!({"type": "AWS_PROXY", "uri": uri,
            "requestParameters": {"integration.request.header.X": "method.nonsense"}})
            )
            .is_err()
        );
        let dep = create_deployment(&s, &id, &json!({"stageName": "prod", "variables": {"v": "1"}})).expect("deploy");
        assert!(dep.get("_snapshot").is_none());
        let st = stage(&s, &id, "prod").expect("stage");
        assert_eq!(st["deploymentId"], dep["id"]);
        let st = update_stage(
            &s,
            &id,
            "prod",
            &json!({"patchOperations": [{"op": "replace", "path": "/variables/v", "value": "2"}]}),
        )
        .expect("update");
        assert_eq!(st["variables"]["v"], "2");
        assert_eq!(function_of_uri(uri), Some("arn:aws:lambda:us-east-1:000000000000:function:f"));
        delete_resource(&s, &id, &oid).expect("delete subtree");
        assert_eq!(s.list(Kind::Resource, &id).expect("list").len(), 1);
    }

    #[test]
    fn references_between_objects_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("store");
        let api = create_rest_api(&s, &json!({"name": "refs"})).expect("api");
        let id = api["id"].as_str().expect("id").to_string();
        let root = api["rootResourceId"].as_str().expect("root").to_string();
        // A method naming a missing authorizer or validator is a bad request, not a missing method.
        let e = put_method(&s, &id, &root, "GET", &json!({"authorizationType": "CUSTOM", "authorizerId": "nope"}))
            .expect_err("no authorizer");
        assert!(matches!(e, GatewayError::BadRequest(_)));
        let e = put_method(&s, &id, &root, "GET", &json!({"authorizationType": "NONE", "requestValidatorId": "nope"}))
            .expect_err("no validator");
        assert!(matches!(e, GatewayError::BadRequest(_)));
        // Identity sources must be expressions the data plane can evaluate.
        let uri = "arn:aws:lambda:us-east-1:000000000000:function:auth";
        let req = json!({"name": "a", "type": "REQUEST", "authorizerUri": uri, "identitySource": "nonsense"});
        assert!(matches!(create_authorizer(&s, &id, &req), Err(GatewayError::BadRequest(_))));
        let az = create_authorizer(&s, &id, &json!({"name": "a", "type": "TOKEN", "authorizerUri": uri})).expect("az");
        let az = az["id"].as_str().expect("id");
        put_method(&s, &id, &root, "GET", &json!({"authorizationType": "CUSTOM", "authorizerId": az})).expect("m");
        let e = update_method(
            &s,
            &id,
            &root,
            "GET",
            &json!({"patchOperations": [{"op": "replace", "path": "/authorizerId", "value": "nope"}]}),
        )
        .expect_err("bad update");
        assert!(matches!(e, GatewayError::BadRequest(_)));
        // An authorizer in use stays.
        assert!(matches!(delete_authorizer(&s, &id, az), Err(GatewayError::Conflict(_))));
        delete_method(&s, &id, &root, "GET").expect("delete method");
        delete_authorizer(&s, &id, az).expect("delete authorizer");
        // A bad stage refuses the deployment before it is stored.
        put_method(&s, &id, &root, "GET", &json!({"authorizationType": "NONE"})).expect("m");
        put_integration(&s, &id, &root, "GET", &json!({"type": "AWS_PROXY", "uri": uri})).expect("i");
        assert!(create_deployment(&s, &id, &json!({"stageName": "a b"})).is_err());
        assert!(s.list(Kind::Deployment, &id).expect("list").is_empty());
        // One key, two plans on one stage: refused.
        create_deployment(&s, &id, &json!({"stageName": "prod"})).expect("deploy");
        let stages = json!([{"apiId": id, "stage": "prod"}]);
        let p1 = create_usage_plan(&s, &json!({"name": "a", "apiStages": stages})).expect("p1");
        let p2 = create_usage_plan(&s, &json!({"name": "b", "apiStages": stages})).expect("p2");
        let key = create_api_key(&s, &json!({"name": "k"})).expect("key");
        let pk = json!({"keyId": key["id"], "keyType": "API_KEY"});
        create_usage_plan_key(&s, p1["id"].as_str().expect("id"), &pk).expect("first plan");
        let e = create_usage_plan_key(&s, p2["id"].as_str().expect("id"), &pk).expect_err("second plan");
        assert!(matches!(e, GatewayError::Conflict(_)));
    }

    #[test]
    fn plans_keys_and_usage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path()).expect("store");
        let plan = create_usage_plan(
            &s,
            &json!({"name": "gold", "throttle": {"rateLimit": 10.0, "burstLimit": 20},
            "quota": {"limit": 100, "period": "DAY", "offset": 0}}),
        )
        .expect("plan");
        let pid = plan["id"].as_str().expect("id");
        let key = create_api_key(&s, &json!({"name": "blue", "enabled": true})).expect("key");
        assert_eq!(key["value"].as_str().expect("value").len(), 40);
        assert!(create_api_key(&s, &json!({"value": "short"})).is_err());
        let kid = key["id"].as_str().expect("id");
        create_usage_plan_key(&s, pid, &json!({"keyId": kid, "keyType": "API_KEY"})).expect("plan key");
        assert!(create_usage_plan_key(&s, pid, &json!({"keyId": kid, "keyType": "API_KEY"})).is_err());
        let day = parse_date("2026-11-27").expect("date");
        assert_eq!(day, 1_795_737_600_000);
        s.add_usage(&[(pid.to_string(), kid.to_string(), day, 7)]).expect("usage");
        let u = usage(&s, pid, None, "2026-11-26", "2026-11-27", &|_, _, _| 0).expect("usage");
        assert_eq!(u["values"][kid], json!([[0, 100], [7, 93]]));
        let p = update_usage_plan(
            &s,
            pid,
            &json!({"patchOperations": [{"op": "replace", "path": "/throttle/rateLimit", "value": "5"}]}),
        )
        .expect("patch");
        assert_eq!(p["throttle"]["rateLimit"], json!(5.0));
        delete_api_key(&s, kid).expect("delete key");
        assert!(usage_plan_key(&s, pid, kid).is_err());
    }
}

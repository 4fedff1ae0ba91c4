//! Lambda authorizer output: parsing and IAM-style policy evaluation.
//!
//! An authorizer returns `{"principalId", "policyDocument", "context", "usageIdentifierKey"}`. The policy
//! document is parsed once (its result is cached by the caller) and evaluated per request against the
//! `execute-api:Invoke` action and the request's method ARN (see [`method_arn`]).
//!
//! Evaluation follows IAM: an explicit `Deny` wins over any `Allow`; no matching statement is an implicit
//! deny ([`Decision::NotAllowed`]). Patterns use IAM wildcards: `*` matches any sequence of characters
//! (including `/` and `:`), `?` matches exactly one character. Actions match case-insensitively, resources
//! case-sensitively.
//!
//! Choices beyond the AWS documentation:
//! - `Effect` values are accepted case-insensitively (`allow` is `Allow`).
//! - A statement must have exactly one of `Action`/`NotAction` and exactly one of `Resource`/`NotResource`;
//!   anything else is a malformed policy (the authorizer fails).
//! - `Condition` is not evaluated. To fail closed, an `Allow` statement with a `Condition` never matches and
//!   a `Deny` statement with a `Condition` applies as if it were unconditional.
//! - `context` values must be strings, numbers or booleans; objects, arrays and `null` are rejected.

use serde_json::{Map, Value};

/// The IAM action API Gateway checks for a request.
pub const INVOKE_ACTION: &str = "execute-api:Invoke";

/// The outcome of evaluating a policy for one action and resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` statement matched and no `Deny` did.
    Allow,
    /// A `Deny` statement matched (explicit deny).
    Deny,
    /// No statement matched (implicit deny).
    NotAllowed,
}

/// Why an authorizer's output is malformed; upstream this is an authorizer failure (HTTP 500).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The output is not valid JSON.
    #[error("authorizer output is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The output is valid JSON but not an object.
    #[error("authorizer output is not a JSON object")]
    NotAnObject,
    /// `policyDocument` is missing or `null`.
    #[error("authorizer output has no policyDocument")]
    MissingPolicy,
    /// A field has the wrong JSON type.
    #[error("authorizer output field {field} must be {expected}")]
    InvalidField {
        /// The field's path, e.g. `policyDocument.Statement[0].Effect`.
        field: String,
        /// What it should have been.
        expected: &'static str,
    },
    /// A `context` value is an object, array or `null`.
    #[error("authorizer context value {key:?} must be a string, number or boolean")]
    InvalidContextValue {
        /// The offending key.
        key: String,
    },
}

/// A parsed Lambda authorizer response.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthorizerOutput {
    /// `principalId`, exposed to the integration as `$context.authorizer.principalId`.
    pub principal_id: Option<String>,
    /// `policyDocument`, parsed.
    pub policy: PolicyDocument,
    /// `context`: only string, number and boolean values.
    pub context: Map<String, Value>,
    /// `usageIdentifierKey`: the API key when the API's key source is `AUTHORIZER`.
    pub usage_identifier_key: Option<String>,
}

impl AuthorizerOutput {
    /// Parses an authorizer's JSON response, rejecting malformed output.
    pub fn parse(json: &[u8]) -> Result<Self, PolicyError> {
        let value: Value = serde_json::from_slice(json)?;
        let Value::Object(mut obj) = value else {
            return Err(PolicyError::NotAnObject);
        };
        let principal_id = optional_string(obj.remove("principalId"), "principalId")?;
        let usage_identifier_key = optional_string(obj.remove("usageIdentifierKey"), "usageIdentifierKey")?;
        let policy = match obj.get("policyDocument") {
            None | Some(Value::Null) => return Err(PolicyError::MissingPolicy),
            Some(doc) => PolicyDocument::from_value(doc)?,
        };
        let context = match obj.remove("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => {
                if let Some((key, _)) =
                    map.iter().find(|(_, v)| !matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))
                {
                    return Err(PolicyError::InvalidContextValue { key: key.clone() });
                }
                map
            }
            Some(_) => return Err(invalid("context", "an object")),
        };
        Ok(Self { principal_id, policy, context, usage_identifier_key })
    }
}

/// An IAM policy document (`Version`, `Statement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDocument {
    /// `Version`, if given (normally `2012-10-17`).
    pub version: Option<String>,
    /// The statements, in document order.
    pub statements: Vec<Statement>,
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Grants access.
    Allow,
    /// Denies access; wins over any `Allow`.
    Deny,
}

/// One policy statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `Effect`.
    pub effect: Effect,
    /// `Action` (or `NotAction` when negated).
    pub actions: Patterns,
    /// `Resource` (or `NotResource` when negated).
    pub resources: Patterns,
    /// Whether the statement carried a `Condition` (not evaluated; see the module docs).
    pub has_condition: bool,
}

/// A list of wildcard patterns; `negated` for `NotAction`/`NotResource`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patterns {
    /// The patterns (`*` and `?` wildcards).
    pub patterns: Vec<String>,
    /// True when the element was `NotAction`/`NotResource`: the statement applies to values matching none.
    pub negated: bool,
}

impl Patterns {
    /// Whether the element applies to `value`.
    fn applies(&self, value: &str, ignore_case: bool) -> bool {
        self.patterns.iter().any(|p| glob_match(p, value, ignore_case)) != self.negated
    }
}

impl PolicyDocument {
    /// Parses a `policyDocument` JSON value.
    pub fn from_value(value: &Value) -> Result<Self, PolicyError> {
        let Value::Object(doc) = value else {
            return Err(invalid("policyDocument", "an object"));
        };
        let version = optional_string(doc.get("Version").cloned(), "policyDocument.Version")?;
        let statements = match doc.get("Statement") {
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, s)| Statement::from_value(s, &format!("policyDocument.Statement[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Some(obj @ Value::Object(_)) => vec![Statement::from_value(obj, "policyDocument.Statement")?],
            _ => return Err(invalid("policyDocument.Statement", "an object or an array of objects")),
        };
        Ok(Self { version, statements })
    }

    /// Evaluates the policy for `action` (e.g. [`INVOKE_ACTION`]) on `resource` (a method ARN).
    pub fn evaluate(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if !s.actions.applies(action, true) || !s.resources.applies(resource, false) {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::Deny,
                Effect::Allow if !s.has_condition => allowed = true,
                Effect::Allow => {}
            }
        }
        if allowed { Decision::Allow } else { Decision::NotAllowed }
    }
}

impl Statement {
    fn from_value(value: &Value, path: &str) -> Result<Self, PolicyError> {
        let Value::Object(obj) = value else {
            return Err(PolicyError::InvalidField { field: path.to_owned(), expected: "an object" });
        };
        let effect = match obj.get("Effect").and_then(Value::as_str) {
            Some(e) if e.eq_ignore_ascii_case("allow") => Effect::Allow,
            Some(e) if e.eq_ignore_ascii_case("deny") => Effect::Deny,
            _ => return Err(invalid(&format!("{path}.Effect"), "\"Allow\" or \"Deny\"")),
        };
        let actions = patterns(obj, "Action", "NotAction", path)?;
        let resources = patterns(obj, "Resource", "NotResource", path)?;
        Ok(Self { effect, actions, resources, has_condition: obj.contains_key("Condition") })
    }
}

/// Reads exactly one of `name`/`not_name` as a string or an array of strings.
fn patterns(obj: &Map<String, Value>, name: &str, not_name: &str, path: &str) -> Result<Patterns, PolicyError> {
    let (key, value, negated) = match (obj.get(name), obj.get(not_name)) {
        (Some(v), None) => (name, v, false),
        (None, Some(v)) => (not_name, v, true),
        _ => return Err(invalid(&format!("{path}.{name}"), "present (exactly one of it and its Not- form)")),
    };
    let expected = "a string or an array of strings";
    let patterns = match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| invalid(&format!("{path}.{key}"), expected)))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(invalid(&format!("{path}.{key}"), expected)),
    };
    Ok(Patterns { patterns, negated })
}

fn optional_string(value: Option<Value>, field: &str) -> Result<Option<String>, PolicyError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(field, "a string")),
    }
}

fn invalid(field: &str, expected: &'static str) -> PolicyError {
    PolicyError::InvalidField { field: field.to_owned(), expected }
}

/// The method ARN API Gateway evaluates policies against:
/// `arn:aws:execute-api:{region}:{account}:{api_id}/{stage}/{METHOD}/{path}`, where `path` is the request
/// path as the client sent it without its leading `/` (the root path gives a trailing `/` after the method).
pub fn method_arn(region: &str, account: &str, api_id: &str, stage: &str, method: &str, path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut arn = String::with_capacity(
        "arn:aws:execute-api:::///".len()
            + region.len()
            + account.len()
            + api_id.len()
            + stage.len()
            + method.len()
            + path.len(),
    );
    for part in ["arn:aws:execute-api:", region, ":", account, ":", api_id, "/", stage, "/"] {
        arn.push_str(part);
    }
    arn.extend(method.chars().map(|c| c.to_ascii_uppercase()));
    arn.push('/');
    arn.push_str(path);
    arn
}

/// IAM wildcard match: `*` matches any sequence, `?` one character. Iterative with single-star backtracking:
/// O(len(pattern) × len(text)) worst case, no allocation.
fn glob_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if pattern == "*" {
        return true;
    }
    let (mut p, mut t) = (0usize, 0usize);
    // After the last `*` seen: the pattern index following it, and the text index it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = text[t..].chars().next() {
        match pattern[p..].chars().next() {
            Some('*') => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            Some('?') => {
                p += 1;
                t += tc.len_utf8();
                continue;
            }
            Some(pc) if chars_eq(pc, tc, ignore_case) => {
                p += pc.len_utf8();
                t += tc.len_utf8();
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character, or fail.
        let Some((sp, st)) = star else {
            return false;
        };
        let st = st + text[st..].chars().next().map_or(1, char::len_utf8);
        star = Some((sp, st));
        p = sp;
        t = st;
    }
    pattern[p..].bytes().all(|b| b == b'*')
}

fn chars_eq(a: char, b: char, ignore_case: bool) -> bool {
    a == b || (ignore_case && (a.eq_ignore_ascii_case(&b) || (!a.is_ascii() && a.to_lowercase().eq(b.to_lowercase()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    const ARN_PREFIX: &str = "arn:aws:execute-api:us-east-1:123456789012:abc123";

    fn doc(statements: &str) -> PolicyDocument {
        let json =
            format!(r#"{{"principalId":"u","policyDocument":{{"Version":"2012-10-17","Statement":{statements}}}}}"#);
        AuthorizerOutput::parse(json.as_bytes()).expect("valid authorizer output").policy
    }

    fn arn(method: &str, path: &str) -> String {
        method_arn("us-east-1", "123456789012", "abc123", "prod", method, path)
    }

    #[test]
    fn allow_exact() {
        let p = doc(&format!(
            r#"[{{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"{ARN_PREFIX}/prod/GET/orders/42"}}]"#
        ));
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/orders/42")), Decision::Allow);
        assert_eq!(p.evaluate("execute-api:invoke", &arn("GET", "/orders/42")), Decision::Allow);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/orders/43")), Decision::NotAllowed);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("POST", "/orders/42")), Decision::NotAllowed);
        assert_eq!(p.evaluate("execute-api:ManageConnections", &arn("GET", "/orders/42")), Decision::NotAllowed);
    }

    #[test]
    fn allow_wildcards() {
        let p = doc(&format!(r#"[{{"Action":"execute-api:*","Effect":"Allow","Resource":"{ARN_PREFIX}/*/GET/*"}}]"#));
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/orders/42/items")), Decision::Allow);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::Allow);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("DELETE", "/orders/42")), Decision::NotAllowed);

        let q = doc(&format!(r#"[{{"Action":"*","Effect":"Allow","Resource":"{ARN_PREFIX}/prod/GET/orders/?"}}]"#));
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/orders/7")), Decision::Allow);
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/orders/é")), Decision::Allow);
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/orders/42")), Decision::NotAllowed);
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/orders/")), Decision::NotAllowed);

        let all = doc(r#"{"Action":"*","Effect":"Allow","Resource":"*"}"#);
        assert_eq!(all.evaluate("anything:At-all", "arn:whatever/x:y"), Decision::Allow);
    }

    #[test]
    fn resource_matching_is_case_sensitive() {
        let p = doc(&format!(r#"[{{"Action":"*","Effect":"Allow","Resource":"{ARN_PREFIX}/prod/GET/Orders"}}]"#));
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/orders")), Decision::NotAllowed);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("get", "/Orders")), Decision::Allow);
    }

    #[test]
    fn explicit_deny_beats_allow() {
        let p = doc(&format!(
            r#"[{{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"*"}},
                {{"Action":["execute-api:Invoke"],"Effect":"Deny","Resource":["{ARN_PREFIX}/prod/DELETE/*"]}}]"#
        ));
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/orders/1")), Decision::Allow);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("DELETE", "/orders/1")), Decision::Deny);
        // Order does not matter.
        let q =
            doc(r#"[{"Action":"*","Effect":"Deny","Resource":"*"},{"Action":"*","Effect":"Allow","Resource":"*"}]"#);
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::Deny);
    }

    #[test]
    fn not_action_and_not_resource() {
        let p = doc(&format!(r#"{{"NotResource":"{ARN_PREFIX}/prod/*/admin/*","Effect":"Allow","Action":"*"}}"#));
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/orders")), Decision::Allow);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/admin/users")), Decision::NotAllowed);

        let q = doc(r#"[{"NotAction":["execute-api:ManageConnections"],"Effect":"Allow","Resource":"*"}]"#);
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::Allow);
        assert_eq!(q.evaluate("execute-api:manageconnections", &arn("GET", "/")), Decision::NotAllowed);

        let d = doc(
            r#"[{"Action":"*","Effect":"Allow","Resource":"*"},{"NotAction":"execute-api:Invoke","Effect":"Deny","Resource":"*"}]"#,
        );
        assert_eq!(d.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::Allow);
        assert_eq!(d.evaluate("execute-api:InvalidateCache", &arn("GET", "/")), Decision::Deny);
    }

    #[test]
    fn no_match_is_not_allowed() {
        let p = doc(r#"[]"#);
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::NotAllowed);
        let q = doc(&format!(r#"[{{"Action":"*","Effect":"Allow","Resource":"{ARN_PREFIX}/dev/*"}}]"#));
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/orders")), Decision::NotAllowed);
    }

    #[test]
    fn condition_fails_closed() {
        let p = doc(
            r#"[{"Action":"*","Effect":"Allow","Resource":"*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]"#,
        );
        assert_eq!(p.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::NotAllowed);
        let q = doc(
            r#"[{"Action":"*","Effect":"Allow","Resource":"*"},{"Action":"*","Effect":"Deny","Resource":"*","Condition":{}}]"#,
        );
        assert_eq!(q.evaluate(INVOKE_ACTION, &arn("GET", "/")), Decision::Deny);
    }

    #[test]
    fn full_output_parsed() {
        let json = br#"{"principalId":"user1","policyDocument":{"Version":"2012-10-17","Statement":[{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/orders/*"}]},"context":{"tenantId":"blue","n":1,"b":true},"usageIdentifierKey":"key123"}"#;
        let out = AuthorizerOutput::parse(json).expect("valid output");
        assert_eq!(out.principal_id.as_deref(), Some("user1"));
        assert_eq!(out.usage_identifier_key.as_deref(), Some("key123"));
        assert_eq!(out.policy.version.as_deref(), Some("2012-10-17"));
        assert_eq!(out.context.len(), 3);
        assert_eq!(out.context["tenantId"], "blue");
        assert_eq!(out.context["n"], 1);
        assert_eq!(out.context["b"], true);
        assert_eq!(out.policy.evaluate(INVOKE_ACTION, &arn("GET", "/orders/42")), Decision::Allow);
    }

    #[test]
    fn single_object_statement_and_missing_optional_fields() {
        let json =
            br#"{"policyDocument":{"Statement":{"Action":"execute-api:Invoke","Effect":"Allow","Resource":"*"}}}"#;
        let out = AuthorizerOutput::parse(json).expect("valid output");
        assert_eq!(out.principal_id, None);
        assert_eq!(out.usage_identifier_key, None);
        assert_eq!(out.policy.version, None);
        assert!(out.context.is_empty());
        assert_eq!(out.policy.statements.len(), 1);
        assert_eq!(out.policy.evaluate(INVOKE_ACTION, &arn("GET", "/x")), Decision::Allow);
    }

    #[test]
    fn context_object_or_array_rejected() {
        let policy = r#""policyDocument":{"Statement":[]}"#;
        for ctx in [r#"{"a":"x","nested":{"k":1}}"#, r#"{"list":[1,2]}"#, r#"{"nothing":null}"#] {
            let json = format!(r#"{{"principalId":"u",{policy},"context":{ctx}}}"#);
            let err = AuthorizerOutput::parse(json.as_bytes()).expect_err("context must be rejected");
            assert!(matches!(err, PolicyError::InvalidContextValue { .. }), "{err}");
        }
        let json = format!(r#"{{{policy},"context":"str"}}"#);
        assert!(AuthorizerOutput::parse(json.as_bytes()).is_err());
    }

    #[test]
    fn malformed_outputs_rejected() {
        let err = AuthorizerOutput::parse(br#"{"principalId":"u","context":{}}"#).expect_err("no policy");
        assert!(matches!(err, PolicyError::MissingPolicy));
        let err = AuthorizerOutput::parse(br#"{"principalId":"u","policyDocument":null}"#).expect_err("null policy");
        assert!(matches!(err, PolicyError::MissingPolicy));
        assert!(matches!(AuthorizerOutput::parse(b"not json"), Err(PolicyError::Json(_))));
        assert!(matches!(AuthorizerOutput::parse(b"[1]"), Err(PolicyError::NotAnObject)));
        for bad in [
            r#"{"policyDocument":{}}"#,
            r#"{"policyDocument":{"Statement":"x"}}"#,
            r#"{"policyDocument":{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}}"#,
            r#"{"policyDocument":{"Statement":[{"Effect":"Allow","Resource":"*"}]}}"#,
            r#"{"policyDocument":{"Statement":[{"Effect":"Allow","Action":"*"}]}}"#,
            r#"{"policyDocument":{"Statement":[{"Effect":"Allow","Action":"*","NotAction":"x","Resource":"*"}]}}"#,
            r#"{"policyDocument":{"Statement":[{"Effect":"Allow","Action":[1],"Resource":"*"}]}}"#,
            r#"{"principalId":7,"policyDocument":{"Statement":[]}}"#,
        ] {
            assert!(AuthorizerOutput::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn method_arn_root_and_nested() {
        assert_eq!(arn("GET", "/"), format!("{ARN_PREFIX}/prod/GET/"));
        assert_eq!(arn("get", "/orders/42"), format!("{ARN_PREFIX}/prod/GET/orders/42"));
        assert_eq!(arn("POST", "orders/42/items"), format!("{ARN_PREFIX}/prod/POST/orders/42/items"));
    }

    #[test]
    fn glob_basics() {
        assert!(glob_match("", "", false));
        assert!(!glob_match("", "a", false));
        assert!(glob_match("*", "", false));
        assert!(glob_match("a*", "a", false));
        assert!(glob_match("a**b", "axxb", false));
        assert!(glob_match("*b*", "abc", false));
        assert!(!glob_match("a?", "a", false));
        assert!(glob_match("x:*:z", "x:a/b:c:z", false));
        assert!(glob_match("ÄB*", "äbc", true));
        assert!(!glob_match("ÄB*", "äbc", false));
    }

    /// Reference matcher: dynamic programming over (pattern, text) prefixes.
    fn reference_match(pattern: &[char], text: &[char]) -> bool {
        let mut dp = vec![vec![false; text.len() + 1]; pattern.len() + 1];
        dp[0][0] = true;
        for i in 1..=pattern.len() {
            for j in 0..=text.len() {
                dp[i][j] = match pattern[i - 1] {
                    '*' => dp[i - 1][j] || (j > 0 && dp[i][j - 1]),
                    '?' => j > 0 && dp[i - 1][j - 1],
                    c => j > 0 && dp[i - 1][j - 1] && text[j - 1] == c,
                };
            }
        }
        dp[pattern.len()][text.len()]
    }

    fn all_strings(alphabet: &[char], max_len: usize) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..max_len {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            out.extend(last.iter().cloned());
        }
        out
    }

    #[test]
    fn glob_agrees_with_reference() {
        let texts = all_strings(&['a', 'b'], 6);
        for pattern in all_strings(&['a', 'b', '*', '?'], 5) {
            let pc: Vec<char> = pattern.chars().collect();
            for text in &texts {
                let tc: Vec<char> = text.chars().collect();
                assert_eq!(glob_match(&pattern, text, false), reference_match(&pc, &tc), "{pattern:?} vs {text:?}");
            }
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let text = "a".repeat(100_000);
        let start = Instant::now();
        assert!(!glob_match("a*a*a*a*a*b", &text, false));
        assert!(!glob_match("*a*a*a*a*a*a*a*a*a*a*b", &text, true));
        assert!(glob_match("a*a*a*a*a*", &text, false));
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    }
}

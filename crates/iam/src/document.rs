//! Policy documents: parsing, validation, and serialisation back to IAM JSON.
//!
//! Parsing compiles every pattern and condition value once, so evaluation does no parsing and no
//! allocation.

use std::fmt;
use std::str::FromStr;

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::condition::{Condition, ConditionError};
use crate::json::Json;
use crate::pattern::{Syntax, Template};
use crate::principal::Principals;

/// What is wrong with a policy document. Every variant is AWS's `MalformedPolicyDocument`
/// ([`PolicyError::aws_code`]); the message says what and where (`Statement[1] (Sid "ReadOwn")`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid JSON, or a JSON object with a duplicate member.
    #[error("Syntax errors in policy: {0}")]
    Syntax(String),
    /// The document is valid JSON but not an object.
    #[error("Policy document must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// An element IAM does not know (`"Actions"`, `"effect"`).
    #[error("{at}: Unknown field {field}")]
    UnknownField {
        /// Where: `Policy`, `Statement[0]`, ...
        at: String,
        /// The element name as written.
        field: String,
    },
    /// A required element is missing (`Effect`, `Action`, `Resource`, `Principal`, `Statement`).
    #[error("{at}: Missing required field {field}")]
    MissingField {
        /// Where.
        at: String,
        /// The element name.
        field: &'static str,
    },
    /// An element this kind of policy must not have (a `Principal` in an identity policy, a `Resource` in a
    /// trust policy).
    #[error("{at}: Has prohibited field {field}: {why}")]
    ProhibitedField {
        /// Where.
        at: String,
        /// The element name.
        field: &'static str,
        /// Why it is prohibited.
        why: &'static str,
    },
    /// Both halves of a pair (`Action` and `NotAction`).
    #[error("{at}: {first} and {second} cannot both be present")]
    Conflict {
        /// Where.
        at: String,
        /// One element.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// An element of the wrong JSON type.
    #[error("{at}: {field} must be {expected}, not {found}")]
    InvalidType {
        /// Where.
        at: String,
        /// The element name.
        field: String,
        /// What it should be.
        expected: &'static str,
        /// What it was.
        found: &'static str,
    },
    /// An empty list where IAM needs at least one entry.
    #[error("{at}: {field} must not be empty")]
    Empty {
        /// Where.
        at: String,
        /// The element name.
        field: String,
    },
    /// `Version` is neither `2012-10-17` nor `2008-10-17`.
    #[error("Invalid Version {0:?}: must be \"2012-10-17\" or \"2008-10-17\"")]
    InvalidVersion(String),
    /// `Effect` is neither `Allow` nor `Deny`.
    #[error("{at}: Invalid Effect {value:?}: must be \"Allow\" or \"Deny\"")]
    InvalidEffect {
        /// Where.
        at: String,
        /// The value as written.
        value: String,
    },
    /// An action without a service prefix.
    #[error("{at}: Action {value:?} must be \"*\" or prefixed by a service namespace, e.g. \"s3:GetObject\"")]
    InvalidAction {
        /// Where.
        at: String,
        /// The value as written.
        value: String,
    },
    /// A resource that is neither `*` nor an ARN.
    #[error("{at}: Resource {value:?} must be in ARN format or \"*\"")]
    InvalidResource {
        /// Where.
        at: String,
        /// The value as written.
        value: String,
    },
    /// A malformed `Principal`/`NotPrincipal`.
    #[error("{at}: Invalid principal {value:?}: {why}")]
    InvalidPrincipal {
        /// Where.
        at: String,
        /// The offending value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// An unknown condition operator (`StringEqualz`), or an invalid combination (`NullIfExists`).
    #[error("{at}: Invalid Condition operator {operator:?}")]
    UnknownOperator {
        /// Where.
        at: String,
        /// The operator as written.
        operator: String,
    },
    /// A condition key without a service prefix.
    #[error("{at}: Condition key {key:?} must be prefixed by a service namespace, e.g. \"aws:username\"")]
    InvalidConditionKey {
        /// Where.
        at: String,
        /// The key as written.
        key: String,
    },
    /// A condition value the operator cannot use.
    #[error("{at}: Invalid value {value:?} for {operator} {key}: {why}")]
    InvalidConditionValue {
        /// Where.
        at: String,
        /// The operator as written.
        operator: String,
        /// The key as written.
        key: String,
        /// The value (or the JSON type of a non-scalar value).
        value: String,
        /// What is wrong.
        why: String,
    },
    /// A malformed policy variable, or one in a policy without `"Version": "2012-10-17"`.
    #[error("{at}: {why}")]
    InvalidVariable {
        /// Where.
        at: String,
        /// What is wrong.
        why: String,
    },
    /// Two statements share a `Sid`.
    #[error("Statement IDs (SID) in a single policy must be unique: {0:?}")]
    DuplicateSid(String),
}

impl PolicyError {
    /// The AWS error code for every policy error.
    pub fn aws_code(&self) -> &'static str {
        "MalformedPolicyDocument"
    }
}

/// The policy language version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `2012-10-17`: the current language, with policy variables.
    V2012_10_17,
    /// `2008-10-17`: the original language; `${...}` is not a variable.
    V2008_10_17,
}

impl Version {
    /// The version as written in a policy.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2012_10_17 => "2012-10-17",
            Version::V2008_10_17 => "2008-10-17",
        }
    }
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Grants access, unless a `Deny` also applies.
    Allow,
    /// Denies access; wins over every `Allow`.
    Deny,
}

/// Which kind of policy a document is, for the element rules of [`PolicyDocument::parse_as`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Attached to a role or user, or passed as a session policy: no `Principal`; `Resource` required.
    Identity,
    /// A role's trust policy: `Principal` required (no `NotPrincipal`); no `Resource`.
    Trust,
    /// Attached to a resource (a bucket policy): `Principal` or `NotPrincipal` and `Resource` required.
    Resource,
}

/// A list of patterns from `Action`/`Resource`, or from `NotAction`/`NotResource` when `negated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patterns {
    pub(crate) negated: bool,
    pub(crate) items: Vec<Template>,
}

impl Patterns {
    /// Whether the element applies to `value`: it matches one of the patterns (`Action`) or none (`NotAction`).
    pub(crate) fn applies(&self, value: &str, ctx: &crate::Context, fold: bool) -> bool {
        self.items.iter().any(|p| p.matches(value, ctx, fold)) != self.negated
    }
}

/// One statement, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub(crate) sid: Option<String>,
    pub(crate) effect: Effect,
    /// `(NotPrincipal?, principals)`.
    pub(crate) principal: Option<(bool, Principals)>,
    pub(crate) action: Patterns,
    pub(crate) resource: Option<Patterns>,
    pub(crate) conditions: Vec<Condition>,
}

impl Statement {
    /// `Sid`, if any.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// `Effect`.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// Whether the statement has a `Condition` with at least one operator block.
    pub fn has_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }
}

/// A parsed and compiled IAM policy document.
///
/// Parse with [`PolicyDocument::parse`] (or `serde`); serialise back with `serde` (single values are written
/// as strings, lists as arrays).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    version: Option<Version>,
    id: Option<String>,
    statement_is_array: bool,
    pub(crate) statements: Vec<Statement>,
    /// Whether any statement has a `Principal`/`NotPrincipal` (else evaluation skips finding the caller).
    pub(crate) has_principals: bool,
}

impl PolicyDocument {
    /// Parses any policy document, checking only the rules common to every kind: one of `Action` /
    /// `NotAction`, at most one of `Resource` / `NotResource` and of `Principal` / `NotPrincipal`.
    /// Use [`PolicyDocument::parse_as`] to apply a kind's rules too.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let json: Json = serde_json::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        Self::from_json(&json, None)
    }

    /// Parses a document of the given kind (see [`PolicyKind`] for the extra rules).
    pub fn parse_as(text: &str, kind: PolicyKind) -> Result<Self, PolicyError> {
        let json: Json = serde_json::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        Self::from_json(&json, Some(kind))
    }

    /// `Version`, if given. Without `2012-10-17`, `${...}` is not a policy variable.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// `Id`, if given.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The statements in document order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }

    /// The document as compact IAM JSON.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    fn from_json(json: &Json, kind: Option<PolicyKind>) -> Result<Self, PolicyError> {
        let Json::Object(members) = json else { return Err(PolicyError::NotAnObject(json.kind())) };
        let mut version = None;
        let mut id = None;
        let mut statement = None;
        for (name, value) in members {
            match name.as_str() {
                "Version" => version = Some(value),
                "Id" => id = Some(value),
                "Statement" => statement = Some(value),
                _ => return Err(PolicyError::UnknownField { at: "Policy".into(), field: name.clone() }),
            }
        }
        let version = match version {
            None => None,
            Some(Json::String(v)) if v == "2012-10-17" => Some(Version::V2012_10_17),
            Some(Json::String(v)) if v == "2008-10-17" => Some(Version::V2008_10_17),
            Some(Json::String(v)) => return Err(PolicyError::InvalidVersion(v.clone())),
            Some(other) => return Err(invalid_type("Policy", "Version", "a string", other)),
        };
        let id = match id {
            None => None,
            Some(Json::String(s)) => Some(s.clone()),
            Some(other) => return Err(invalid_type("Policy", "Id", "a string", other)),
        };
        let variables = version == Some(Version::V2012_10_17);
        let (statement_is_array, raw): (bool, Vec<&Json>) = match statement {
            None => return Err(PolicyError::MissingField { at: "Policy".into(), field: "Statement" }),
            Some(one @ Json::Object(_)) => (false, vec![one]),
            Some(Json::Array(items)) => (true, items.iter().collect()),
            Some(other) => return Err(invalid_type("Policy", "Statement", "an object or an array of objects", other)),
        };
        let mut statements: Vec<Statement> = Vec::with_capacity(raw.len());
        for (i, value) in raw.into_iter().enumerate() {
            let index = statement_is_array.then_some(i);
            let s = parse_statement(value, index, variables, kind)?;
            if let Some(sid) = s.sid.as_deref().filter(|sid| !sid.is_empty())
                && statements.iter().any(|other| other.sid.as_deref() == Some(sid))
            {
                return Err(PolicyError::DuplicateSid(sid.to_owned()));
            }
            statements.push(s);
        }
        let has_principals = statements.iter().any(|s| s.principal.is_some());
        Ok(Self { version, id, statement_is_array, statements, has_principals })
    }
}

impl FromStr for PolicyDocument {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for PolicyDocument {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let json = Json::deserialize(deserializer)?;
        Self::from_json(&json, None).map_err(serde::de::Error::custom)
    }
}

fn invalid_type(at: &str, field: &str, expected: &'static str, found: &Json) -> PolicyError {
    PolicyError::InvalidType { at: at.to_owned(), field: field.to_owned(), expected, found: found.kind() }
}

/// The statement's location for messages: `Statement[2] (Sid "ReadOwn")`.
fn location(index: Option<usize>, members: &[(String, Json)]) -> String {
    let mut at = match index {
        Some(i) => format!("Statement[{i}]"),
        None => "Statement".to_owned(),
    };
    if let Some((_, Json::String(sid))) = members.iter().find(|(k, _)| k == "Sid")
        && !sid.is_empty()
    {
        at.push_str(&format!(" (Sid {sid:?})"));
    }
    at
}

fn parse_statement(
    value: &Json,
    index: Option<usize>,
    variables: bool,
    kind: Option<PolicyKind>,
) -> Result<Statement, PolicyError> {
    let Json::Object(members) = value else {
        let at = index.map_or_else(|| "Policy".to_owned(), |i| format!("Statement[{i}]"));
        return Err(invalid_type(&at, "Statement", "an object", value));
    };
    let at = location(index, members);
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    const KNOWN: &[&str] =
        &["Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition"];
    if let Some((name, _)) = members.iter().find(|(k, _)| !KNOWN.contains(&k.as_str())) {
        return Err(PolicyError::UnknownField { at, field: name.clone() });
    }

    let sid = match get("Sid") {
        None => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => return Err(invalid_type(&at, "Sid", "a string", other)),
    };
    let effect = match get("Effect") {
        None => return Err(PolicyError::MissingField { at, field: "Effect" }),
        Some(Json::String(e)) if e == "Allow" => Effect::Allow,
        Some(Json::String(e)) if e == "Deny" => Effect::Deny,
        Some(Json::String(e)) => return Err(PolicyError::InvalidEffect { at, value: e.clone() }),
        Some(other) => return Err(invalid_type(&at, "Effect", "a string", other)),
    };

    let principal = pair(&at, get("Principal"), get("NotPrincipal"), "Principal", "NotPrincipal")?
        .map(|(negated, field, value)| {
            Principals::parse(value).map(|p| (negated, p)).map_err(|e| PolicyError::InvalidPrincipal {
                at: format!("{at}: {field}"),
                value: e.value,
                why: e.why,
            })
        })
        .transpose()?;

    let action = match pair(&at, get("Action"), get("NotAction"), "Action", "NotAction")? {
        None => return Err(PolicyError::MissingField { at, field: "Action" }),
        Some((negated, field, value)) => {
            let items = strings(&at, field, value)?
                .into_iter()
                .map(|a| {
                    let prefixed =
                        a.split_once(':').is_some_and(|(service, name)| !service.is_empty() && !name.is_empty());
                    if a != "*" && !prefixed {
                        return Err(PolicyError::InvalidAction { at: at.clone(), value: a.to_owned() });
                    }
                    // Actions never take policy variables. Lower-cased once here so that evaluation compares
                    // them with a lower-cased request action byte for byte.
                    Template::compile_lowercase(a, Syntax { wildcards: true, variables: false })
                        .map_err(|why| PolicyError::InvalidVariable { at: at.clone(), why })
                })
                .collect::<Result<_, _>>()?;
            Patterns { negated, items }
        }
    };

    let resource = pair(&at, get("Resource"), get("NotResource"), "Resource", "NotResource")?
        .map(|(negated, field, value)| {
            let items = strings(&at, field, value)?
                .into_iter()
                .map(|r| {
                    if r != "*" && !r.starts_with("arn:") {
                        return Err(PolicyError::InvalidResource { at: at.clone(), value: r.to_owned() });
                    }
                    if !variables && r.contains("${") {
                        return Err(needs_version(&at, r));
                    }
                    compile(&at, r, Syntax { wildcards: true, variables })
                })
                .collect::<Result<_, _>>()?;
            Ok::<_, PolicyError>(Patterns { negated, items })
        })
        .transpose()?;

    let conditions = match get("Condition") {
        None => Vec::new(),
        Some(Json::Object(blocks)) => blocks
            .iter()
            .map(|(operator, block)| {
                if !variables && mentions_variable(block) {
                    return Err(needs_version(&at, operator));
                }
                Condition::compile(operator, block, variables).map_err(|e| condition_error(&at, e))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid_type(&at, "Condition", "an object", other)),
    };

    let statement = Statement { sid, effect, principal, action, resource, conditions };
    if let Some(kind) = kind {
        check_kind(&at, &statement, kind)?;
    }
    Ok(statement)
}

fn check_kind(at: &str, s: &Statement, kind: PolicyKind) -> Result<(), PolicyError> {
    let prohibited = |field, why| Err(PolicyError::ProhibitedField { at: at.to_owned(), field, why });
    let missing = |field| Err(PolicyError::MissingField { at: at.to_owned(), field });
    match kind {
        PolicyKind::Identity => {
            if let Some((negated, _)) = s.principal {
                let field = if negated { "NotPrincipal" } else { "Principal" };
                return prohibited(field, "Policy document should not specify a principal.");
            }
            if s.resource.is_none() {
                return missing("Resource");
            }
        }
        PolicyKind::Trust => {
            match s.principal {
                None => return missing("Principal"),
                Some((true, _)) => return prohibited("NotPrincipal", "a trust policy must name its principals"),
                Some((false, _)) => {}
            }
            if let Some(r) = &s.resource {
                let field = if r.negated { "NotResource" } else { "Resource" };
                return prohibited(field, "a trust policy's resource is the role itself");
            }
        }
        PolicyKind::Resource => {
            if s.principal.is_none() {
                return missing("Principal");
            }
            if s.resource.is_none() {
                return missing("Resource");
            }
        }
    }
    Ok(())
}

fn needs_version(at: &str, value: &str) -> PolicyError {
    PolicyError::InvalidVariable {
        at: at.to_owned(),
        why: format!("{value:?} uses a policy variable, which needs \"Version\": \"2012-10-17\""),
    }
}

fn mentions_variable(json: &Json) -> bool {
    match json {
        Json::String(s) => s.contains("${"),
        Json::Array(items) => items.iter().any(mentions_variable),
        Json::Object(members) => members.iter().any(|(_, v)| mentions_variable(v)),
        _ => false,
    }
}

fn compile(at: &str, source: &str, syntax: Syntax) -> Result<Template, PolicyError> {
    Template::compile(source, syntax).map_err(|why| PolicyError::InvalidVariable { at: at.to_owned(), why })
}

fn condition_error(at: &str, e: ConditionError) -> PolicyError {
    let at = format!("{at}: Condition");
    match e {
        ConditionError::UnknownOperator(operator) => PolicyError::UnknownOperator { at, operator },
        ConditionError::NotAnObject { operator, found } => {
            PolicyError::InvalidType { at, field: operator, expected: "an object of condition keys", found }
        }
        ConditionError::InvalidKey { key } => PolicyError::InvalidConditionKey { at, key },
        ConditionError::EmptyValues { operator, key } => PolicyError::Empty { at, field: format!("{operator} {key}") },
        ConditionError::InvalidValue { operator, key, value, why } => {
            PolicyError::InvalidConditionValue { at, operator, key, value, why }
        }
    }
}

/// At most one of an element and its `Not` form: `(negated, name, value)`.
fn pair<'j>(
    at: &str,
    plain: Option<&'j Json>,
    not: Option<&'j Json>,
    plain_name: &'static str,
    not_name: &'static str,
) -> Result<Option<(bool, &'static str, &'j Json)>, PolicyError> {
    match (plain, not) {
        (Some(_), Some(_)) => Err(PolicyError::Conflict { at: at.to_owned(), first: plain_name, second: not_name }),
        (Some(v), None) => Ok(Some((false, plain_name, v))),
        (None, Some(v)) => Ok(Some((true, not_name, v))),
        (None, None) => Ok(None),
    }
}

/// A string or a non-empty array of strings.
fn strings<'j>(at: &str, field: &str, value: &'j Json) -> Result<Vec<&'j str>, PolicyError> {
    const EXPECTED: &str = "a string or an array of strings";
    match value {
        Json::String(s) => Ok(vec![s.as_str()]),
        Json::Array(items) if items.is_empty() => {
            Err(PolicyError::Empty { at: at.to_owned(), field: field.to_owned() })
        }
        Json::Array(items) => items
            .iter()
            .map(|item| match item {
                Json::String(s) => Ok(s.as_str()),
                other => Err(invalid_type(at, field, EXPECTED, other)),
            })
            .collect(),
        other => Err(invalid_type(at, field, EXPECTED, other)),
    }
}

// ---- Serialisation back to IAM JSON ----

impl Serialize for PolicyDocument {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(v) = self.version {
            map.serialize_entry("Version", v.as_str())?;
        }
        if let Some(id) = &self.id {
            map.serialize_entry("Id", id)?;
        }
        match self.statements.as_slice() {
            [one] if !self.statement_is_array => map.serialize_entry("Statement", one)?,
            all => map.serialize_entry("Statement", all)?,
        }
        map.end()
    }
}

impl Serialize for Statement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        if let Some(sid) = &self.sid {
            map.serialize_entry("Sid", sid)?;
        }
        map.serialize_entry("Effect", if self.effect == Effect::Allow { "Allow" } else { "Deny" })?;
        if let Some((negated, principals)) = &self.principal {
            map.serialize_entry(if *negated { "NotPrincipal" } else { "Principal" }, &PrincipalsJson(principals))?;
        }
        fn sources(p: &Patterns) -> OneOrMany<'_> {
            OneOrMany(p.items.iter().map(Template::source).collect())
        }
        map.serialize_entry(if self.action.negated { "NotAction" } else { "Action" }, &sources(&self.action))?;
        if let Some(r) = &self.resource {
            map.serialize_entry(if r.negated { "NotResource" } else { "Resource" }, &sources(r))?;
        }
        if !self.conditions.is_empty() {
            map.serialize_entry("Condition", &ConditionsJson(&self.conditions))?;
        }
        map.end()
    }
}

/// One value as a string, several as an array.
struct OneOrMany<'a>(Vec<&'a str>);

impl Serialize for OneOrMany<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => serializer.serialize_str(one),
            all => {
                let mut seq = serializer.serialize_seq(Some(all.len()))?;
                for s in all {
                    seq.serialize_element(s)?;
                }
                seq.end()
            }
        }
    }
}

struct PrincipalsJson<'a>(&'a Principals);

impl Serialize for PrincipalsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Principals::Everyone => serializer.serialize_str("*"),
            Principals::Listed(listed) => {
                let mut map = serializer.serialize_map(Some(listed.len()))?;
                for (kind, ids) in listed {
                    map.serialize_entry(kind.name(), &OneOrMany(ids.iter().map(AsRef::as_ref).collect()))?;
                }
                map.end()
            }
        }
    }
}

struct ConditionsJson<'a>(&'a [Condition]);

impl Serialize for ConditionsJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for c in self.0 {
            map.serialize_entry(c.operator(), &BlockJson(c))?;
        }
        map.end()
    }
}

struct BlockJson<'a>(&'a Condition);

impl Serialize for BlockJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (key, values) in self.0.entries() {
            map.serialize_entry(key, &OneOrMany(values.iter().map(AsRef::as_ref).collect()))?;
        }
        map.end()
    }
}

impl fmt::Display for PolicyDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> PolicyError {
        PolicyDocument::parse(text).expect_err("policy should be rejected")
    }

    fn err_as(text: &str, kind: PolicyKind) -> PolicyError {
        PolicyDocument::parse_as(text, kind).expect_err("policy should be rejected")
    }

    const OK: &str =
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}}"#;

    #[test]
    fn parses_single_and_array_statements() {
        let one = PolicyDocument::parse(OK).expect("valid");
        assert_eq!(one.version(), Some(Version::V2012_10_17));
        assert_eq!(one.statements().len(), 1);
        assert_eq!(one.statements()[0].effect(), Effect::Allow);
        let many = PolicyDocument::parse(
            r#"{"Id": "p1", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]},
                {"Sid": "B", "Effect": "Deny", "NotAction": "s3:*", "NotResource": "arn:aws:s3:::b/*"}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(many.version(), None);
        assert_eq!(many.id(), Some("p1"));
        assert_eq!(many.statements()[1].sid(), Some("B"));
        assert_eq!(many.statements()[1].effect(), Effect::Deny);
        assert!(!many.statements()[1].has_conditions());
    }

    #[test]
    fn malformed_documents_say_what_is_wrong() {
        assert!(matches!(err("{"), PolicyError::Syntax(_)));
        assert!(matches!(err("[]"), PolicyError::NotAnObject("an array")));
        assert!(matches!(err(r#"{"Version": "2012-10-17"}"#), PolicyError::MissingField { field: "Statement", .. }));
        assert_eq!(
            err(r#"{"Version": "2020-01-01", "Statement": []}"#),
            PolicyError::InvalidVersion("2020-01-01".into())
        );
        assert!(matches!(err(r#"{"Statements": []}"#), PolicyError::UnknownField { .. }));
        let e = err(r#"{"Statement": [{"Sid": "Read", "Action": "s3:GetObject", "Resource": "*"}]}"#);
        assert_eq!(e, PolicyError::MissingField { at: "Statement[0] (Sid \"Read\")".into(), field: "Effect" });
        assert_eq!(e.to_string(), "Statement[0] (Sid \"Read\"): Missing required field Effect");
        assert_eq!(e.aws_code(), "MalformedPolicyDocument");
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "allow", "Action": "s3:*", "Resource": "*"}}"#),
            PolicyError::InvalidEffect { .. }
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Resource": "*"}}"#),
            PolicyError::MissingField { field: "Action", .. }
        ));
        let both =
            err(r#"{"Statement": {"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Put*", "Resource": "*"}}"#);
        assert_eq!(both.to_string(), "Statement: Action and NotAction cannot both be present");
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "NotResource": "*"}}"#),
            PolicyError::Conflict { first: "Resource", .. }
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Action": "GetObject", "Resource": "*"}}"#),
            PolicyError::InvalidAction { .. }
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "bucket/key"}}"#),
            PolicyError::InvalidResource { .. }
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Action": [], "Resource": "*"}}"#),
            PolicyError::Empty { .. }
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Action": ["s3:*", 5], "Resource": "*"}}"#),
            PolicyError::InvalidType { .. }
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Actions": "x"}}"#),
            PolicyError::UnknownField { .. }
        ));
        let op = err(r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*",
                "Condition": {"StringEqualz": {"aws:username": "bob"}}}}"#);
        assert_eq!(op.to_string(), "Statement: Condition: Invalid Condition operator \"StringEqualz\"");
        assert!(matches!(
            err(r#"{"Statement": [{"Sid": "A", "Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                                   {"Sid": "A", "Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}"#),
            PolicyError::DuplicateSid(_)
        ));
        assert!(matches!(
            err(r#"{"Statement": {"Effect": "Deny", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}}"#),
            PolicyError::Syntax(_)
        ));
        assert!(matches!(
            err(
                r#"{"Statement": {"Effect": "Allow", "Principal": "arn:aws:iam::000000000000:root", "Action": "sts:AssumeRole"}}"#
            ),
            PolicyError::InvalidPrincipal { .. }
        ));
    }

    #[test]
    fn policy_variables_need_version_2012() {
        let legacy =
            r#"{"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/${aws:username}/*"}}"#;
        assert!(matches!(err(legacy), PolicyError::InvalidVariable { .. }));
        let legacy_cond = r#"{"Version": "2008-10-17", "Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/t": "${aws:PrincipalTag/t}"}}}}"#;
        assert!(matches!(err(legacy_cond), PolicyError::InvalidVariable { .. }));
        let bad = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/${aws:username"}}"#;
        assert!(matches!(err(bad), PolicyError::InvalidVariable { .. }));
    }

    #[test]
    fn kinds() {
        let with_principal = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}}"#;
        let e = err_as(with_principal, PolicyKind::Identity);
        assert_eq!(
            e.to_string(),
            "Statement: Has prohibited field Principal: Policy document should not specify a principal."
        );
        PolicyDocument::parse_as(with_principal, PolicyKind::Resource).expect("a bucket policy");
        assert!(matches!(
            err_as(with_principal, PolicyKind::Trust),
            PolicyError::ProhibitedField { field: "Resource", .. }
        ));
        let no_resource = r#"{"Statement": {"Effect": "Allow", "Action": "s3:GetObject"}}"#;
        assert!(matches!(
            err_as(no_resource, PolicyKind::Identity),
            PolicyError::MissingField { field: "Resource", .. }
        ));
        PolicyDocument::parse(no_resource).expect("generic parse allows it");
        let trust = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"}, "Action": ["sts:AssumeRole", "sts:TagSession"]}}"#;
        PolicyDocument::parse_as(trust, PolicyKind::Trust).expect("a trust policy");
        assert!(matches!(err_as(trust, PolicyKind::Resource), PolicyError::MissingField { field: "Resource", .. }));
        let not_principal = r#"{"Statement": {"Effect": "Allow", "NotPrincipal": {"AWS": "000000000000"}, "Action": "sts:AssumeRole"}}"#;
        assert!(matches!(
            err_as(not_principal, PolicyKind::Trust),
            PolicyError::ProhibitedField { field: "NotPrincipal", .. }
        ));
        assert!(matches!(err_as(no_resource, PolicyKind::Trust), PolicyError::MissingField { field: "Principal", .. }));
    }

    #[test]
    fn round_trips_through_serde() {
        let text = r#"{"Version": "2012-10-17", "Id": "x", "Statement": [
            {"Sid": "S1", "Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::000000000000:root", "111111111111"], "Service": "lambda.amazonaws.com"},
             "Action": ["s3:GetObject"], "NotResource": ["arn:aws:s3:::a/*", "arn:aws:s3:::b/${aws:username}/*"],
             "Condition": {"ForAnyValue:StringLike": {"s3:prefix": ["a/*", "b/*"]}, "Bool": {"aws:SecureTransport": true},
                           "NumericLessThan": {"s3:max-keys": 10}}},
            {"Effect": "Deny", "NotPrincipal": "*", "NotAction": "s3:*", "Resource": "*"}
        ]}"#;
        let doc = PolicyDocument::parse(text).expect("valid");
        let json = doc.to_json();
        let again: PolicyDocument = serde_json::from_str(&json).expect("serialised form parses");
        assert_eq!(doc, again);
        assert!(json.contains(r#""Action":"s3:GetObject""#), "{json}");
        assert!(json.contains(r#""Bool":{"aws:SecureTransport":"true"}"#), "{json}");
        assert_eq!(json.parse::<PolicyDocument>().expect("FromStr"), doc);
        assert_eq!(doc.to_string(), json);
    }
}

//! The `Condition` element: operators, their values, and evaluation against a [`Context`].
//!
//! A `Condition` holds operator blocks (`"StringEquals": {...}`); all blocks must hold (AND). Inside a block
//! every key must hold (AND), and a key holds when the request's value matches any of the listed values (OR).
//!
//! Per key, with the request's values `R` (a missing key has none) and the policy's values `P`:
//! - a positive operator (`StringEquals`) holds for one request value `r` when `r` matches some `p` in `P`;
//!   a negated one (`StringNotEquals`) when `r` matches none of them;
//! - `ForAnyValue:` holds when some `r` in `R` holds (false when `R` is empty);
//! - `ForAllValues:` holds when every `r` in `R` holds (true when `R` is empty);
//! - no qualifier: a positive operator behaves as `ForAnyValue:` and a negated one as `ForAllValues:` (none of
//!   the request's values matches). So a missing key fails `StringEquals` and passes `StringNotEquals`;
//! - `...IfExists`: a missing key holds; otherwise as without the suffix;
//! - `Null`: `"true"` holds when the key is missing, `"false"` when it is present.
//!
//! A request value that cannot be read as the operator's type (`"abc"` for `NumericEquals`) matches no
//! policy value, so it fails the positive operator and passes the negated one.

use crate::context::{Context, lower};
use crate::json::Json;
use crate::pattern::{Syntax, Template};
use crate::scalar::{Cidr, parse_bool, parse_date, parse_number};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn test<T: PartialOrd>(self, request: T, policy: T) -> bool {
        match self {
            Cmp::Eq => request == policy,
            Cmp::Lt => request < policy,
            Cmp::Le => request <= policy,
            Cmp::Gt => request > policy,
            Cmp::Ge => request >= policy,
        }
    }
}

/// What an operator compares, before negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(Cmp),
    Date(Cmp),
    Bool,
    IpAddress,
    Arn,
    Null,
}

/// Every supported operator: name, what it compares, whether it is negated.
const OPERATORS: &[(&str, Base, bool)] = &[
    ("StringEquals", Base::StringEquals, false),
    ("StringNotEquals", Base::StringEquals, true),
    ("StringEqualsIgnoreCase", Base::StringEqualsIgnoreCase, false),
    ("StringNotEqualsIgnoreCase", Base::StringEqualsIgnoreCase, true),
    ("StringLike", Base::StringLike, false),
    ("StringNotLike", Base::StringLike, true),
    ("NumericEquals", Base::Numeric(Cmp::Eq), false),
    ("NumericNotEquals", Base::Numeric(Cmp::Eq), true),
    ("NumericLessThan", Base::Numeric(Cmp::Lt), false),
    ("NumericLessThanEquals", Base::Numeric(Cmp::Le), false),
    ("NumericGreaterThan", Base::Numeric(Cmp::Gt), false),
    ("NumericGreaterThanEquals", Base::Numeric(Cmp::Ge), false),
    ("DateEquals", Base::Date(Cmp::Eq), false),
    ("DateNotEquals", Base::Date(Cmp::Eq), true),
    ("DateLessThan", Base::Date(Cmp::Lt), false),
    ("DateLessThanEquals", Base::Date(Cmp::Le), false),
    ("DateGreaterThan", Base::Date(Cmp::Gt), false),
    ("DateGreaterThanEquals", Base::Date(Cmp::Ge), false),
    ("Bool", Base::Bool, false),
    ("IpAddress", Base::IpAddress, false),
    ("NotIpAddress", Base::IpAddress, true),
    ("ArnEquals", Base::Arn, false),
    ("ArnLike", Base::Arn, false),
    ("ArnNotEquals", Base::Arn, true),
    ("ArnNotLike", Base::Arn, true),
    ("Null", Base::Null, false),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    /// No prefix.
    Plain,
    ForAllValues,
    ForAnyValue,
}

/// The policy's values for one key, parsed for the operator.
#[derive(Debug, Clone, PartialEq)]
enum Values {
    Patterns(Vec<Template>),
    Numbers(Vec<f64>),
    Dates(Vec<i64>),
    Bools(Vec<bool>),
    Cidrs(Vec<Cidr>),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    /// The key as written.
    source_key: Box<str>,
    /// The key, lower-cased for lookup.
    key: Box<str>,
    /// The values as written.
    sources: Vec<Box<str>>,
    values: Values,
}

/// One operator block, e.g. `"ForAllValues:StringLikeIfExists": {"s3:prefix": ["a/*", "b/*"]}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    /// The operator as written.
    source: Box<str>,
    base: Base,
    negated: bool,
    qualifier: Qualifier,
    if_exists: bool,
    entries: Vec<Entry>,
}

/// What is wrong with a condition block; the statement parser adds the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConditionError {
    UnknownOperator(String),
    NotAnObject { operator: String, found: &'static str },
    InvalidKey { key: String },
    EmptyValues { operator: String, key: String },
    InvalidValue { operator: String, key: String, value: String, why: String },
}

impl Condition {
    /// Compiles one operator block. `variables`: whether `${...}` is a policy variable (Version 2012-10-17).
    pub(crate) fn compile(operator: &str, block: &Json, variables: bool) -> Result<Self, ConditionError> {
        let (qualifier, base, negated, if_exists) =
            parse_operator(operator).ok_or_else(|| ConditionError::UnknownOperator(operator.to_owned()))?;
        let Json::Object(members) = block else {
            return Err(ConditionError::NotAnObject { operator: operator.to_owned(), found: block.kind() });
        };
        let mut entries = Vec::with_capacity(members.len());
        for (key, value) in members {
            if !key.split_once(':').is_some_and(|(service, name)| !service.is_empty() && !name.is_empty()) {
                return Err(ConditionError::InvalidKey { key: key.clone() });
            }
            let invalid = |value: &str, why: String| ConditionError::InvalidValue {
                operator: operator.to_owned(),
                key: key.clone(),
                value: value.to_owned(),
                why,
            };
            let sources = condition_values(value)
                .map_err(|found| invalid(found, "values must be strings, numbers or booleans".into()))?;
            if sources.is_empty() {
                return Err(ConditionError::EmptyValues { operator: operator.to_owned(), key: key.clone() });
            }
            let values = parse_values(base, &sources, variables).map_err(|(value, why)| invalid(&value, why))?;
            entries.push(Entry {
                source_key: key.as_str().into(),
                key: lower(key),
                sources: sources.iter().map(|s| Box::from(s.as_ref())).collect(),
                values,
            });
        }
        Ok(Self { source: operator.into(), base, negated, qualifier, if_exists, entries })
    }

    /// The operator as written.
    pub(crate) fn operator(&self) -> &str {
        &self.source
    }

    /// Each key as written with its values as written, for serialisation.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &[Box<str>])> {
        self.entries.iter().map(|e| (e.source_key.as_ref(), e.sources.as_slice()))
    }

    /// Whether every key of the block holds for `ctx`.
    pub(crate) fn holds(&self, ctx: &Context) -> bool {
        self.entries.iter().all(|entry| self.entry_holds(entry, ctx))
    }

    fn entry_holds(&self, entry: &Entry, ctx: &Context) -> bool {
        let request = ctx.get_lower(&entry.key);
        if self.base == Base::Null {
            let Values::Bools(want_missing) = &entry.values else { return false };
            return want_missing.contains(&request.is_empty());
        }
        if request.is_empty() && self.if_exists {
            return true;
        }
        let one = |r: &String| self.matches_any(entry, r, ctx) != self.negated;
        let all = match self.qualifier {
            Qualifier::ForAllValues => true,
            Qualifier::ForAnyValue => false,
            Qualifier::Plain => self.negated,
        };
        if all { request.iter().all(one) } else { request.iter().any(one) }
    }

    /// Whether one request value matches any of the policy's values (the positive test).
    fn matches_any(&self, entry: &Entry, request: &str, ctx: &Context) -> bool {
        match (&entry.values, self.base) {
            (Values::Patterns(ps), Base::Arn) => ps.iter().any(|p| p.matches_arn(request, ctx)),
            (Values::Patterns(ps), base) => {
                let fold = base == Base::StringEqualsIgnoreCase;
                ps.iter().any(|p| p.matches(request, ctx, fold))
            }
            (Values::Numbers(ns), Base::Numeric(cmp)) => {
                parse_number(request).is_some_and(|r| ns.iter().any(|&n| cmp.test(r, n)))
            }
            (Values::Dates(ds), Base::Date(cmp)) => {
                parse_date(request).is_some_and(|r| ds.iter().any(|&d| cmp.test(r, d)))
            }
            (Values::Bools(bs), _) => parse_bool(request).is_some_and(|r| bs.contains(&r)),
            (Values::Cidrs(cs), _) => cs.iter().any(|c| c.contains(request)),
            _ => false,
        }
    }
}

/// `ForAnyValue:StringLikeIfExists` → (qualifier, base, negated, if_exists). Names are case-insensitive.
fn parse_operator(name: &str) -> Option<(Qualifier, Base, bool, bool)> {
    let (qualifier, rest) = if let Some(rest) = strip_prefix_ci(name, "ForAllValues:") {
        (Qualifier::ForAllValues, rest)
    } else if let Some(rest) = strip_prefix_ci(name, "ForAnyValue:") {
        (Qualifier::ForAnyValue, rest)
    } else {
        (Qualifier::Plain, name)
    };
    let (rest, if_exists) = match rest.len().checked_sub("IfExists".len()) {
        Some(at) if rest.is_char_boundary(at) && rest[at..].eq_ignore_ascii_case("IfExists") => (&rest[..at], true),
        _ => (rest, false),
    };
    let &(_, base, negated) = OPERATORS.iter().find(|(op, _, _)| op.eq_ignore_ascii_case(rest))?;
    // `NullIfExists` and `ForAllValues:Null` have no meaning.
    if base == Base::Null && (if_exists || qualifier != Qualifier::Plain) {
        return None;
    }
    Some((qualifier, base, negated, if_exists))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// A condition value or list of values, as text. `Err` names the offending JSON type.
fn condition_values(value: &Json) -> Result<Vec<std::borrow::Cow<'_, str>>, &'static str> {
    fn scalar(value: &Json) -> Result<std::borrow::Cow<'_, str>, &'static str> {
        match value {
            Json::String(s) | Json::Number(s) => Ok(s.as_str().into()),
            Json::Bool(b) => Ok(if *b { "true" } else { "false" }.into()),
            other => Err(other.kind()),
        }
    }
    match value {
        Json::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn parse_values(
    base: Base,
    sources: &[std::borrow::Cow<'_, str>],
    variables: bool,
) -> Result<Values, (String, String)> {
    let each = |parse: &dyn Fn(&str) -> Option<()>, what: &str| -> Result<(), (String, String)> {
        for s in sources {
            if parse(s).is_none() {
                let why = if s.contains("${") {
                    "policy variables are supported only in String and Arn condition values".to_owned()
                } else {
                    format!("expected {what}")
                };
                return Err((s.to_string(), why));
            }
        }
        Ok(())
    };
    let patterns = |wildcards: bool| -> Result<Values, (String, String)> {
        let syntax = Syntax { wildcards, variables };
        sources
            .iter()
            .map(|s| Template::compile(s, syntax).map_err(|why| (s.to_string(), why)))
            .collect::<Result<_, _>>()
            .map(Values::Patterns)
    };
    Ok(match base {
        Base::StringEquals | Base::StringEqualsIgnoreCase => patterns(false)?,
        Base::StringLike | Base::Arn => patterns(true)?,
        Base::Numeric(_) => {
            each(&|s| parse_number(s).map(drop), "a number")?;
            Values::Numbers(sources.iter().filter_map(|s| parse_number(s)).collect())
        }
        Base::Date(_) => {
            each(&|s| parse_date(s).map(drop), "an ISO 8601 date (2024-01-31T12:00:00Z) or epoch seconds")?;
            Values::Dates(sources.iter().filter_map(|s| parse_date(s)).collect())
        }
        Base::Bool | Base::Null => {
            each(&|s| parse_bool(s).map(drop), "true or false")?;
            Values::Bools(sources.iter().filter_map(|s| parse_bool(s)).collect())
        }
        Base::IpAddress => {
            each(&|s| Cidr::parse(s).map(drop), "an IP address or CIDR range")?;
            Values::Cidrs(sources.iter().filter_map(|s| Cidr::parse(s)).collect())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(operator: &str, block: &str) -> Condition {
        let block: Json = serde_json::from_str(block).expect("json");
        Condition::compile(operator, &block, true).expect("valid condition")
    }

    fn holds(operator: &str, block: &str, ctx: &Context) -> bool {
        cond(operator, block).holds(ctx)
    }

    #[test]
    fn string_operators() {
        let ctx = Context::new().with("aws:PrincipalTag/TenantId", "blue");
        assert!(holds("StringEquals", r#"{"aws:PrincipalTag/TenantId": "blue"}"#, &ctx));
        assert!(holds("StringEquals", r#"{"aws:PrincipalTag/TenantId": ["green", "blue"]}"#, &ctx));
        assert!(!holds("StringEquals", r#"{"aws:PrincipalTag/TenantId": "Blue"}"#, &ctx));
        assert!(!holds("StringEquals", r#"{"aws:PrincipalTag/TenantId": "b*"}"#, &ctx), "no wildcards");
        assert!(holds("StringEqualsIgnoreCase", r#"{"aws:PrincipalTag/TenantId": "BLUE"}"#, &ctx));
        assert!(!holds("StringNotEqualsIgnoreCase", r#"{"aws:PrincipalTag/TenantId": "BLUE"}"#, &ctx));
        assert!(holds("StringNotEquals", r#"{"aws:PrincipalTag/TenantId": "green"}"#, &ctx));
        assert!(!holds("StringNotEquals", r#"{"aws:PrincipalTag/TenantId": ["green", "blue"]}"#, &ctx));
        assert!(holds("StringLike", r#"{"aws:PrincipalTag/TenantId": "b?u*"}"#, &ctx));
        assert!(holds("StringNotLike", r#"{"aws:PrincipalTag/TenantId": "g*"}"#, &ctx));
        assert!(holds("stringequals", r#"{"AWS:PRINCIPALTAG/TENANTID": "blue"}"#, &ctx), "names are case-insensitive");
    }

    #[test]
    fn keys_and_values_combine_and_or() {
        let ctx = Context::new().with("aws:username", "alice").with("aws:PrincipalTag/team", "red");
        // All keys in a block (AND).
        assert!(holds("StringEquals", r#"{"aws:username": "alice", "aws:PrincipalTag/team": "red"}"#, &ctx));
        assert!(!holds("StringEquals", r#"{"aws:username": "alice", "aws:PrincipalTag/team": "blue"}"#, &ctx));
        // Any value of a key (OR).
        assert!(holds("StringEquals", r#"{"aws:username": ["bob", "alice"]}"#, &ctx));
    }

    #[test]
    fn missing_keys() {
        let empty = Context::new();
        assert!(!holds("StringEquals", r#"{"aws:PrincipalTag/TenantId": "blue"}"#, &empty), "missing tag fails");
        assert!(holds("StringNotEquals", r#"{"aws:PrincipalTag/TenantId": "blue"}"#, &empty));
        assert!(!holds("NumericLessThan", r#"{"s3:max-keys": "10"}"#, &empty));
        assert!(!holds("Bool", r#"{"aws:SecureTransport": "true"}"#, &empty));
    }

    #[test]
    fn if_exists() {
        let block = r#"{"aws:PrincipalTag/TenantId": "blue"}"#;
        assert!(holds("StringEqualsIfExists", block, &Context::new()), "missing key passes");
        let blue = Context::new().with("aws:PrincipalTag/TenantId", "blue");
        let green = Context::new().with("aws:PrincipalTag/TenantId", "green");
        assert!(holds("StringEqualsIfExists", block, &blue));
        assert!(!holds("StringEqualsIfExists", block, &green), "present key is checked");
        assert!(holds("ForAnyValue:StringEqualsIfExists", block, &Context::new()), "IfExists beats ForAnyValue");
        assert!(holds("BoolIfExists", r#"{"aws:MultiFactorAuthPresent": "false"}"#, &Context::new()));
    }

    #[test]
    fn null() {
        let tagged = Context::new().with("aws:PrincipalTag/TenantId", "blue");
        assert!(holds("Null", r#"{"aws:PrincipalTag/TenantId": "false"}"#, &tagged));
        assert!(!holds("Null", r#"{"aws:PrincipalTag/TenantId": "true"}"#, &tagged));
        assert!(holds("Null", r#"{"aws:PrincipalTag/TenantId": true}"#, &Context::new()));
        assert!(!holds("Null", r#"{"aws:PrincipalTag/TenantId": "false"}"#, &Context::new()));
    }

    #[test]
    fn for_all_values_edge_cases() {
        let block = r#"{"aws:TagKeys": ["TenantId", "Env"]}"#;
        let subset = Context::new().with_values("aws:TagKeys", ["TenantId"]);
        let superset = Context::new().with_values("aws:TagKeys", ["TenantId", "Owner"]);
        assert!(holds("ForAllValues:StringEquals", block, &subset));
        assert!(!holds("ForAllValues:StringEquals", block, &superset));
        // Vacuous truth: no values, or no key at all.
        assert!(holds("ForAllValues:StringEquals", block, &Context::new()));
        assert!(holds("ForAllValues:StringEquals", block, &Context::new().with_values("aws:TagKeys", [""; 0])));
        // Negated: none of the request's values may be listed.
        assert!(holds("ForAllValues:StringNotEquals", block, &Context::new().with("aws:TagKeys", "Owner")));
        assert!(!holds("ForAllValues:StringNotEquals", block, &superset));
    }

    #[test]
    fn for_any_value_edge_cases() {
        let block = r#"{"aws:TagKeys": ["TenantId"]}"#;
        let with = Context::new().with_values("aws:TagKeys", ["Owner", "TenantId"]);
        let without = Context::new().with_values("aws:TagKeys", ["Owner"]);
        assert!(holds("ForAnyValue:StringEquals", block, &with));
        assert!(!holds("ForAnyValue:StringEquals", block, &without));
        assert!(!holds("ForAnyValue:StringEquals", block, &Context::new()), "missing key: false");
        // Some request value is not listed.
        assert!(holds("ForAnyValue:StringNotEquals", block, &with));
        assert!(!holds("ForAnyValue:StringNotEquals", block, &Context::new().with("aws:TagKeys", "TenantId")));
        assert!(!holds("ForAnyValue:StringNotEquals", block, &Context::new()));
    }

    #[test]
    fn plain_operators_on_multi_valued_keys() {
        let ctx = Context::new().with_values("s3:prefix", ["home/alice/", "shared/"]);
        assert!(holds("StringLike", r#"{"s3:prefix": "shared/*"}"#, &ctx), "positive: any request value");
        assert!(!holds("StringNotLike", r#"{"s3:prefix": "shared/*"}"#, &ctx), "negated: no request value");
        assert!(holds("StringNotLike", r#"{"s3:prefix": "tmp/*"}"#, &ctx));
    }

    #[test]
    fn variables_in_condition_values() {
        let ctx = Context::new().with("aws:PrincipalTag/TenantId", "blue").with("aws:RequestTag/TenantId", "blue");
        let same = r#"{"aws:RequestTag/TenantId": "${aws:PrincipalTag/TenantId}"}"#;
        assert!(holds("StringEquals", same, &ctx));
        let other = Context::new().with("aws:PrincipalTag/TenantId", "blue").with("aws:RequestTag/TenantId", "green");
        assert!(!holds("StringEquals", same, &other));
        let untagged = Context::new().with("aws:RequestTag/TenantId", "${aws:PrincipalTag/TenantId}");
        assert!(!holds("StringEquals", same, &untagged), "a missing variable never matches, even literally");
        let lead = r#"{"dynamodb:LeadingKeys": ["${aws:PrincipalTag/TenantId}"]}"#;
        let keys =
            Context::new().with("aws:PrincipalTag/TenantId", "blue").with_values("dynamodb:LeadingKeys", ["blue"]);
        assert!(holds("ForAllValues:StringEquals", lead, &keys));
        let mixed = keys.clone().with("dynamodb:LeadingKeys", "green");
        assert!(!holds("ForAllValues:StringEquals", lead, &mixed));
    }

    #[test]
    fn numeric_date_bool_ip() {
        let ctx = Context::new()
            .with("s3:max-keys", "10")
            .with("aws:CurrentTime", "2025-06-01T12:00:00Z")
            .with("aws:EpochTime", "1748779200")
            .with("aws:SecureTransport", "false")
            .with("aws:SourceIp", "203.0.113.9");
        assert!(holds("NumericEquals", r#"{"s3:max-keys": 10}"#, &ctx));
        assert!(holds("NumericEquals", r#"{"s3:max-keys": "10.0"}"#, &ctx));
        assert!(holds("NumericNotEquals", r#"{"s3:max-keys": ["1", "2"]}"#, &ctx));
        assert!(holds("NumericLessThan", r#"{"s3:max-keys": "11"}"#, &ctx));
        assert!(!holds("NumericLessThan", r#"{"s3:max-keys": "10"}"#, &ctx));
        assert!(holds("NumericLessThanEquals", r#"{"s3:max-keys": "10"}"#, &ctx));
        assert!(holds("NumericGreaterThan", r#"{"s3:max-keys": "9.5"}"#, &ctx));
        assert!(holds("NumericGreaterThanEquals", r#"{"s3:max-keys": "10"}"#, &ctx));
        assert!(holds("DateGreaterThan", r#"{"aws:CurrentTime": "2025-01-01T00:00:00Z"}"#, &ctx));
        assert!(holds("DateLessThan", r#"{"aws:CurrentTime": "2025-06-01T12:00:01Z"}"#, &ctx));
        assert!(!holds("DateLessThan", r#"{"aws:CurrentTime": "2025-06-01"}"#, &ctx));
        assert!(holds("DateEquals", r#"{"aws:EpochTime": "2025-06-01T12:00:00Z"}"#, &ctx), "epoch vs ISO");
        assert!(holds("DateNotEquals", r#"{"aws:CurrentTime": "1748779201"}"#, &ctx));
        assert!(holds("DateLessThanEquals", r#"{"aws:CurrentTime": 1748779200}"#, &ctx));
        assert!(holds("DateGreaterThanEquals", r#"{"aws:CurrentTime": "2025-06-01T14:00:00+02:00"}"#, &ctx));
        assert!(holds("Bool", r#"{"aws:SecureTransport": false}"#, &ctx));
        assert!(!holds("Bool", r#"{"aws:SecureTransport": "true"}"#, &ctx));
        assert!(holds("IpAddress", r#"{"aws:SourceIp": ["10.0.0.0/8", "203.0.113.0/24"]}"#, &ctx));
        assert!(holds("NotIpAddress", r#"{"aws:SourceIp": "10.0.0.0/8"}"#, &ctx));
        // An unreadable request value matches nothing: the positive fails, the negated passes.
        let junk = Context::new().with("s3:max-keys", "lots");
        assert!(!holds("NumericEquals", r#"{"s3:max-keys": "10"}"#, &junk));
        assert!(holds("NumericNotEquals", r#"{"s3:max-keys": "10"}"#, &junk));
    }

    #[test]
    fn arn_operators() {
        let ctx = Context::new().with("aws:SourceArn", "arn:aws:lambda:eu-west-1:000000000000:function:thumbs");
        assert!(holds("ArnLike", r#"{"aws:SourceArn": "arn:aws:lambda:*:000000000000:function:*"}"#, &ctx));
        assert!(holds(
            "ArnEquals",
            r#"{"aws:SourceArn": "arn:aws:lambda:eu-west-1:000000000000:function:thumbs"}"#,
            &ctx
        ));
        assert!(!holds("ArnLike", r#"{"aws:SourceArn": "arn:aws:lambda:*:111111111111:function:*"}"#, &ctx));
        assert!(holds("ArnNotLike", r#"{"aws:SourceArn": "arn:aws:s3:::*"}"#, &ctx));
        assert!(!holds("ArnNotEquals", r#"{"aws:SourceArn": "arn:aws:lambda:*:*:function:thumbs"}"#, &ctx));
    }

    #[test]
    fn compile_errors() {
        let err = |operator: &str, block: &str| {
            let block: Json = serde_json::from_str(block).expect("json");
            Condition::compile(operator, &block, true).expect_err("invalid condition")
        };
        assert_eq!(err("StringEqualz", r#"{"a:b": "x"}"#), ConditionError::UnknownOperator("StringEqualz".into()));
        assert!(matches!(err("NullIfExists", r#"{"a:b": "true"}"#), ConditionError::UnknownOperator(_)));
        assert!(matches!(err("ForAllValues:Null", r#"{"a:b": "true"}"#), ConditionError::UnknownOperator(_)));
        assert!(matches!(err("ForSomeValues:StringEquals", r#"{"a:b": "x"}"#), ConditionError::UnknownOperator(_)));
        assert!(matches!(err("StringEquals", r#""x""#), ConditionError::NotAnObject { .. }));
        assert!(matches!(err("StringEquals", r#"{"nokey": "x"}"#), ConditionError::InvalidKey { .. }));
        assert!(matches!(err("StringEquals", r#"{"a:b": []}"#), ConditionError::EmptyValues { .. }));
        assert!(matches!(err("StringEquals", r#"{"a:b": {"c": "d"}}"#), ConditionError::InvalidValue { .. }));
        assert!(matches!(err("StringEquals", r#"{"a:b": [null]}"#), ConditionError::InvalidValue { .. }));
        assert!(matches!(err("NumericEquals", r#"{"a:b": "ten"}"#), ConditionError::InvalidValue { .. }));
        assert!(matches!(err("DateEquals", r#"{"a:b": "tomorrow"}"#), ConditionError::InvalidValue { .. }));
        assert!(matches!(err("Bool", r#"{"a:b": "yes"}"#), ConditionError::InvalidValue { .. }));
        assert!(matches!(err("IpAddress", r#"{"a:b": "10.0.0.0/40"}"#), ConditionError::InvalidValue { .. }));
        assert!(matches!(err("StringEquals", r#"{"a:b": "${oops"}"#), ConditionError::InvalidValue { .. }));
        let ConditionError::InvalidValue { why, .. } = err("NumericEquals", r#"{"a:b": "${aws:x}"}"#) else {
            panic!("expected an invalid value")
        };
        assert!(why.contains("only in String and Arn"), "{why}");
    }
}

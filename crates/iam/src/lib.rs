//! An IO-free IAM policy evaluator: parse identity, session, trust and resource policies and decide
//! requests the way AWS IAM does.
//!
//! - [`PolicyDocument::parse`] / [`PolicyDocument::parse_as`] validate a document and compile its patterns
//!   and conditions once; errors read like AWS's `MalformedPolicyDocument` messages.
//! - [`evaluate`] decides a [`Request`] against a set of identity policies: explicit `Deny`, then `Allow`,
//!   else implicit deny. [`evaluate_session`] intersects a role's policies with a session policy.
//!   [`trusts`] checks a role's trust policy for `sts:AssumeRole` / `sts:TagSession`.
//! - The [`Context`] carries condition keys (`aws:PrincipalTag/TenantId`, `aws:SecureTransport`, ...),
//!   which also feed policy variables such as `${aws:PrincipalTag/TenantId}`.
//!
//! ```
//! use quarters_iam::{Context, Decision, PolicyDocument, Request, evaluate};
//!
//! let policy = PolicyDocument::parse(r#"{
//!     "Version": "2012-10-17",
//!     "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
//!                   "Resource": "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"}
//! }"#)?;
//! let blue = Context::new().with("aws:PrincipalTag/TenantId", "blue");
//! let req = |resource| Request { action: "s3:GetObject", resource, context: &blue };
//! assert_eq!(evaluate(&[&policy], &req("arn:aws:s3:::tenant-data/blue/x")), Decision::Allow);
//! assert_eq!(evaluate(&[&policy], &req("arn:aws:s3:::tenant-data/green/x")), Decision::ImplicitDeny);
//! # Ok::<(), quarters_iam::PolicyError>(())
//! ```
//!
//! # Semantics
//!
//! - Wildcards: `*` matches any run of characters (including `/` and `:`), `?` exactly one character.
//!   Actions match case-insensitively, resources case-sensitively. `NotAction`/`NotResource` apply to
//!   everything the listed patterns do not match.
//! - Policy variables (`${key}`, `${key, 'default'}`, and the escapes `${*}`, `${?}`, `${$}`) are read in
//!   `Resource`/`NotResource` and in `String*`/`Arn*` condition values of `"Version": "2012-10-17"`
//!   policies. A substituted value is literal text (a `*` in a tag is not a wildcard). A variable whose key
//!   is missing (or multi-valued) and has no default makes that one pattern or value match nothing.
//! - Conditions: blocks AND together; inside a block every key must hold (AND); a key holds when a request
//!   value matches any listed value (OR). Condition keys and operator names are case-insensitive. For a key
//!   with request values `R`:
//!   - a positive operator (`StringEquals`) holds for a value `r` that matches some listed value, a negated
//!     one (`StringNotEquals`) for an `r` that matches none;
//!   - `ForAnyValue:` needs some `r` to hold (false when `R` is empty or missing); `ForAllValues:` needs
//!     every `r` to hold (true when `R` is empty or missing);
//!   - without a qualifier a positive operator acts as `ForAnyValue:` and a negated one as `ForAllValues:`,
//!     so a missing key fails `StringEquals` and passes `StringNotEquals`;
//!   - `...IfExists` passes a missing key; `Null: "true"` holds when the key is missing;
//!   - a request value that cannot be read as the operator's type (`"abc"` for `NumericEquals`) matches
//!     nothing: the positive operator fails, the negated one passes.
//! - Supported operators: `String[Not]Equals[IgnoreCase]`, `String[Not]Like`, `Numeric*`, `Date*` (ISO 8601
//!   or epoch seconds), `Bool`, `[Not]IpAddress`, `Arn[Not]Equals`, `Arn[Not]Like` (matched per
//!   colon-separated component), `Null`; all but `Null` with `IfExists` and the set qualifiers.
//! - Principals (`Principal`/`NotPrincipal`) are exact: `*`, an ARN, an account (`123456789012` or
//!   `arn:aws:iam::123456789012:root`, meaning every identity of that account), a service name; a role ARN
//!   also covers the role's `assumed-role` sessions.
//!
//! Choices where IAM's documentation is silent or where this crate is stricter than AWS:
//! - Duplicate JSON members (two `Effect`s) are a syntax error rather than last-one-wins.
//! - Element names and `Effect` values are case-sensitive; operator names are case-insensitive.
//! - A `${...}` in a policy without `"Version": "2012-10-17"` is rejected, not matched literally (the
//!   classic mistake that turns a per-tenant prefix into one shared literal prefix).
//! - `Numeric*`, `Date*`, `Bool`, `IpAddress` and `Null` values are validated at parse time.
//! - Empty lists (`"Action": []`) are rejected.
//! - A statement without `Resource` never allows in [`evaluate`] (a `Deny` without one denies everything it
//!   matches); in [`trusts`], a statement without `Principal` never allows.

mod condition;
mod context;
mod document;
mod eval;
pub mod fixtures;
mod json;
mod pattern;
mod principal;
mod scalar;

pub use context::{Context, keys};
pub use document::{Effect, PolicyDocument, PolicyError, PolicyKind, Statement, Version};
pub use eval::{Decision, Request, evaluate, evaluate_session, trusts};

//! Synthetic policies for benchmarks and tests.
//!
//! [`tenant_policy`] builds the kind of role policy a multi-tenant platform ends up with: many statements
//! for other services and buckets, some with conditions and policy variables, and the one that matters
//! (tenant-scoped `s3:GetObject`) *last*, so an evaluation has to look at every statement.
//!
//! ```
//! use quarters_iam::{Request, evaluate, fixtures};
//!
//! let policy = fixtures::tenant_policy(100).expect("fixture parses");
//! let ctx = fixtures::tenant_context("blue");
//! let resource = fixtures::tenant_resource("blue");
//! let req = Request { action: fixtures::ACTION, resource: &resource, context: &ctx };
//! assert!(evaluate(&[&policy], &req).is_allowed());
//! ```

use crate::{Context, PolicyDocument, PolicyError};

/// The action the fixture request performs.
pub const ACTION: &str = "s3:GetObject";

/// A role policy of `statements` statements (at least one) whose last statement allows [`ACTION`] on the
/// caller's own prefix of `tenant-data`.
pub fn tenant_policy(statements: usize) -> Result<PolicyDocument, PolicyError> {
    let mut items = Vec::with_capacity(statements.max(1));
    for i in 0..statements.saturating_sub(1) {
        items.push(match i % 5 {
            0 => format!(
                r#"{{"Sid": "Table{i}", "Effect": "Allow", "Action": ["dynamodb:GetItem", "dynamodb:Query"],
                    "Resource": "arn:aws:dynamodb:eu-west-1:000000000000:table/t{i}",
                    "Condition": {{"ForAllValues:StringEquals": {{"dynamodb:LeadingKeys": ["${{aws:PrincipalTag/TenantId}}"]}}}}}}"#
            ),
            1 => format!(
                r#"{{"Sid": "Write{i}", "Effect": "Allow", "Action": "s3:PutObject",
                    "Resource": "arn:aws:s3:::bucket-{i}/${{aws:PrincipalTag/TenantId}}/*"}}"#
            ),
            2 => format!(
                r#"{{"Sid": "NoDelete{i}", "Effect": "Deny", "Action": ["s3:DeleteBucket", "s3:PutBucketPolicy"],
                    "Resource": "arn:aws:s3:::bucket-{i}"}}"#
            ),
            3 => format!(
                r#"{{"Sid": "Shared{i}", "Effect": "Allow", "Action": ["s3:Get*", "s3:List*"],
                    "Resource": ["arn:aws:s3:::shared-{i}", "arn:aws:s3:::shared-{i}/*"],
                    "Condition": {{"StringEquals": {{"aws:PrincipalTag/Tier": "gold"}}, "Bool": {{"aws:SecureTransport": "true"}}}}}}"#
            ),
            _ => format!(
                r#"{{"Sid": "TlsOnly{i}", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::tenant-data/*",
                    "Condition": {{"Bool": {{"aws:SecureTransport": "false"}}, "StringNotEqualsIfExists": {{"aws:PrincipalTag/Role": "probe-{i}"}}}}}}"#
            ),
        });
    }
    items.push(
        r#"{"Sid": "OwnData", "Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"}"#
            .to_owned(),
    );
    PolicyDocument::parse(&format!(r#"{{"Version": "2012-10-17", "Statement": [{}]}}"#, items.join(",")))
}

/// The context of a session tagged `TenantId=<tenant>`, over TLS.
pub fn tenant_context(tenant: &str) -> Context {
    Context::new()
        .with("aws:PrincipalTag/TenantId", tenant)
        .with("aws:PrincipalArn", "arn:aws:iam::000000000000:role/tenant-role")
        .with("aws:SecureTransport", "true")
        .with("aws:username", "tenant-role")
}

/// An object in `tenant`'s prefix of `tenant-data`.
pub fn tenant_resource(tenant: &str) -> String {
    format!("arn:aws:s3:::tenant-data/{tenant}/reports/2025/06/summary.csv")
}

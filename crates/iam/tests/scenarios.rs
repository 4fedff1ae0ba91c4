//! End-to-end scenarios through the public API: tenant-scoped sessions as the platform will use them.

use std::time::{Duration, Instant};

use quarters_iam::{
    Context, Decision, PolicyDocument, PolicyKind, Request, evaluate, evaluate_session, fixtures, trusts,
};

/// The role every tenant session assumes: its own prefix of `tenant-data`, plus a bucket shared by all.
const ROLE_POLICY: &str = r#"{
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "OwnPrefix", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*"},
        {"Sid": "ListOwnPrefix", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::tenant-data",
         "Condition": {"StringLike": {"s3:prefix": ["${aws:PrincipalTag/TenantId}/*"]}}},
        {"Sid": "SharedRead", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared-assets/*"}
    ]
}"#;

fn parse(text: &str) -> PolicyDocument {
    PolicyDocument::parse_as(text, PolicyKind::Identity).expect("test policy is valid")
}

fn tenant(id: &str) -> Context {
    Context::new()
        .with("aws:PrincipalTag/TenantId", id)
        .with("aws:PrincipalArn", "arn:aws:iam::000000000000:role/tenant")
        .with("aws:SecureTransport", "true")
}

fn decide(policies: &[&PolicyDocument], action: &str, resource: &str, ctx: &Context) -> Decision {
    evaluate(policies, &Request { action, resource, context: ctx })
}

#[test]
fn tenant_reads_its_own_prefix_only() {
    let role = parse(ROLE_POLICY);
    let blue = tenant("blue");
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &blue), Decision::Allow);
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::tenant-data/green/x", &blue), Decision::ImplicitDeny);
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::tenant-data/bluex/x", &blue), Decision::ImplicitDeny);
    assert_eq!(decide(&[&role], "s3:DeleteObject", "arn:aws:s3:::tenant-data/blue/x", &blue), Decision::ImplicitDeny);
    // Actions are case-insensitive, resources are not.
    assert_eq!(decide(&[&role], "S3:getobject", "arn:aws:s3:::tenant-data/blue/x", &blue), Decision::Allow);
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::Tenant-Data/blue/x", &blue), Decision::ImplicitDeny);

    let green = tenant("green");
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::tenant-data/green/x", &green), Decision::Allow);
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &green), Decision::ImplicitDeny);
}

#[test]
fn listing_is_scoped_by_a_condition_variable() {
    let role = parse(ROLE_POLICY);
    let list = |prefix: &str, id: &str| {
        let ctx = tenant(id).with("s3:prefix", prefix);
        decide(&[&role], "s3:ListBucket", "arn:aws:s3:::tenant-data", &ctx)
    };
    assert_eq!(list("blue/reports/", "blue"), Decision::Allow);
    assert_eq!(list("green/", "blue"), Decision::ImplicitDeny);
    // No prefix at all: StringLike on a missing key fails, so a tenant cannot list the whole bucket.
    assert_eq!(decide(&[&role], "s3:ListBucket", "arn:aws:s3:::tenant-data", &tenant("blue")), Decision::ImplicitDeny);
}

#[test]
fn shared_bucket_is_readable_by_every_tenant() {
    let role = parse(ROLE_POLICY);
    for id in ["blue", "green", "red"] {
        assert_eq!(
            decide(&[&role], "s3:GetObject", "arn:aws:s3:::shared-assets/logo.png", &tenant(id)),
            Decision::Allow
        );
        assert_eq!(
            decide(&[&role], "s3:PutObject", "arn:aws:s3:::shared-assets/logo.png", &tenant(id)),
            Decision::ImplicitDeny
        );
    }
    // Even a session with no tenant tag can read the shared bucket...
    let untagged = Context::new();
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::shared-assets/logo.png", &untagged), Decision::Allow);
}

#[test]
fn missing_tag_matches_nothing_not_even_the_literal_key() {
    let role = parse(ROLE_POLICY);
    let untagged = Context::new();
    for resource in [
        "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/x",
        "arn:aws:s3:::tenant-data//x",
        "arn:aws:s3:::tenant-data/blue/x",
    ] {
        assert_eq!(decide(&[&role], "s3:GetObject", resource, &untagged), Decision::ImplicitDeny, "{resource}");
    }
    // A tag key spelled in another case is the same tag.
    let other_case = Context::new().with("aws:principaltag/tenantid", "blue");
    assert_eq!(decide(&[&role], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &other_case), Decision::Allow);
}

#[test]
fn escaped_variables_are_literal() {
    let policy = parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::b/${*}/${aws:username}-${?}${$}"}}"#,
    );
    let ctx = Context::new().with("aws:username", "alice");
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::b/*/alice-?$", &ctx), Decision::Allow);
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::b/x/alice-y$", &ctx), Decision::ImplicitDeny);
}

#[test]
fn session_policy_narrows_the_role() {
    let role = parse(ROLE_POLICY);
    // The session may only read reports, and never the shared bucket.
    let session = parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::tenant-data/*/reports/*"}}"#,
    );
    let blue = tenant("blue");
    let req = |action, resource| Request { action, resource, context: &blue };
    let both = |action, resource| evaluate_session(&[&role], Some(&session), &req(action, resource));
    assert_eq!(both("s3:GetObject", "arn:aws:s3:::tenant-data/blue/reports/q1.csv"), Decision::Allow);
    assert_eq!(both("s3:GetObject", "arn:aws:s3:::tenant-data/blue/private.txt"), Decision::ImplicitDeny);
    assert_eq!(both("s3:PutObject", "arn:aws:s3:::tenant-data/blue/reports/q1.csv"), Decision::ImplicitDeny);
    assert_eq!(both("s3:GetObject", "arn:aws:s3:::shared-assets/logo.png"), Decision::ImplicitDeny);
    // The session policy allows green's reports, but the role does not: intersection.
    assert_eq!(both("s3:GetObject", "arn:aws:s3:::tenant-data/green/reports/q1.csv"), Decision::ImplicitDeny);
    // Without a session policy the role alone decides.
    assert_eq!(
        evaluate_session(&[&role], None, &req("s3:GetObject", "arn:aws:s3:::tenant-data/blue/private.txt")),
        Decision::Allow
    );
    // A session policy that allows everything cannot widen the role.
    let wide = parse(r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#);
    assert_eq!(
        evaluate_session(&[&role], Some(&wide), &req("s3:DeleteObject", "arn:aws:s3:::tenant-data/blue/x")),
        Decision::ImplicitDeny
    );
    // An explicit deny in the session policy wins over the role's allow.
    let deny = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::shared-assets/*"}]}"#,
    );
    assert_eq!(
        evaluate_session(&[&role], Some(&deny), &req("s3:GetObject", "arn:aws:s3:::shared-assets/logo.png")),
        Decision::ExplicitDeny
    );
}

#[test]
fn explicit_deny_beats_allow_across_policies() {
    let allow = parse(ROLE_POLICY);
    let guard = parse(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Sid": "TlsOnly", "Effect": "Deny", "Action": "s3:*", "Resource": "*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "NoWritesToArchive", "Effect": "Deny", "NotAction": ["s3:Get*", "s3:List*"],
             "Resource": "arn:aws:s3:::tenant-data/*/archive/*"}]}"#,
    );
    let blue = tenant("blue");
    assert_eq!(decide(&[&allow, &guard], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &blue), Decision::Allow);
    let plain = tenant("blue").with_values("aws:SecureTransport", ["false"]);
    assert_eq!(
        decide(&[&allow, &guard], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &plain),
        Decision::ExplicitDeny
    );
    // Order of policies does not matter.
    assert_eq!(
        decide(&[&guard, &allow], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/x", &plain),
        Decision::ExplicitDeny
    );
    // NotAction: writes are denied under archive/, reads are not.
    let archive = "arn:aws:s3:::tenant-data/blue/archive/2020.tar";
    assert_eq!(decide(&[&allow, &guard], "s3:PutObject", archive, &blue), Decision::ExplicitDeny);
    assert_eq!(decide(&[&allow, &guard], "s3:GetObject", archive, &blue), Decision::Allow);
    // Deny alone is still a deny, not an implicit one.
    assert_eq!(decide(&[&guard], "s3:PutObject", archive, &blue), Decision::ExplicitDeny);
    assert_eq!(decide(&[], "s3:GetObject", archive, &blue), Decision::ImplicitDeny);
}

#[test]
fn not_resource_allows_everything_else() {
    let policy = parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "NotResource": ["arn:aws:s3:::secrets/*", "arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/private/*"]}}"#,
    );
    let blue = tenant("blue");
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::public/x", &blue), Decision::Allow);
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::secrets/x", &blue), Decision::ImplicitDeny);
    assert_eq!(
        decide(&[&policy], "s3:GetObject", "arn:aws:s3:::tenant-data/blue/private/x", &blue),
        Decision::ImplicitDeny
    );
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::tenant-data/green/private/x", &blue), Decision::Allow);
}

#[test]
fn request_tags_must_match_the_principal_tag() {
    // Tag-on-create: a tenant may only create resources tagged with its own TenantId, and only that tag key.
    let policy = parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "lambda:CreateFunction", "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:RequestTag/TenantId": "${aws:PrincipalTag/TenantId}"},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["TenantId"]}}}}"#,
    );
    let fun = "arn:aws:lambda:eu-west-1:000000000000:function:f";
    let with_tags = |tags: &[(&str, &str)]| {
        let mut ctx = tenant("blue");
        for (k, v) in tags {
            ctx.insert(&format!("aws:RequestTag/{k}"), *v);
            ctx.insert("aws:TagKeys", *k);
        }
        decide(&[&policy], "lambda:CreateFunction", fun, &ctx)
    };
    assert_eq!(with_tags(&[("TenantId", "blue")]), Decision::Allow);
    assert_eq!(with_tags(&[("TenantId", "green")]), Decision::ImplicitDeny);
    assert_eq!(with_tags(&[("TenantId", "blue"), ("Owner", "x")]), Decision::ImplicitDeny);
    assert_eq!(with_tags(&[]), Decision::ImplicitDeny, "no TenantId request tag");
}

#[test]
fn conditions_across_blocks_are_and() {
    let policy = parse(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "true"}, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
                          "DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}}}"#,
    );
    let ok = tenant("blue").with("aws:SourceIp", "10.1.2.3").with("aws:CurrentTime", "2026-03-01T00:00:00Z");
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::b/k", &ok), Decision::Allow);
    let outside = tenant("blue").with("aws:SourceIp", "192.0.2.1").with("aws:CurrentTime", "2026-03-01T00:00:00Z");
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::b/k", &outside), Decision::ImplicitDeny);
    let late = tenant("blue").with("aws:SourceIp", "10.1.2.3").with("aws:CurrentTime", "2031-01-01T00:00:00Z");
    assert_eq!(decide(&[&policy], "s3:GetObject", "arn:aws:s3:::b/k", &late), Decision::ImplicitDeny);
}

const TRUST: &str = r#"{
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "Platform", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"},
         "Action": ["sts:AssumeRole", "sts:TagSession"],
         "Condition": {"StringLike": {"aws:RequestTag/TenantId": "?*"}}},
        {"Sid": "Lambda", "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"},
        {"Sid": "NotThatOne", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::000000000000:user/intern"},
         "Action": "sts:*"}
    ]
}"#;

#[test]
fn trust_policy_by_account_root_and_service() {
    let trust = PolicyDocument::parse_as(TRUST, PolicyKind::Trust).expect("valid trust policy");
    let tagged = Context::new().with("aws:RequestTag/TenantId", "blue");
    let authorizer = "arn:aws:sts::000000000000:assumed-role/authorizer/jwt-1";
    assert!(trusts(&trust, authorizer, "sts:AssumeRole", &tagged));
    assert!(trusts(&trust, authorizer, "sts:TagSession", &tagged));
    assert!(trusts(&trust, "arn:aws:iam::000000000000:user/admin", "STS:assumerole", &tagged));
    // The tag condition: no TenantId tag, no session.
    assert!(!trusts(&trust, authorizer, "sts:TagSession", &Context::new()));
    // Another account is not trusted.
    assert!(!trusts(&trust, "arn:aws:iam::111111111111:user/admin", "sts:AssumeRole", &tagged));
    // Explicit deny for one user of the trusted account.
    assert!(!trusts(&trust, "arn:aws:iam::000000000000:user/intern", "sts:AssumeRole", &tagged));
    // The Lambda service may assume the role but not tag sessions.
    assert!(trusts(&trust, "lambda.amazonaws.com", "sts:AssumeRole", &Context::new()));
    assert!(!trusts(&trust, "lambda.amazonaws.com", "sts:TagSession", &Context::new()));
    assert!(!trusts(&trust, "ec2.amazonaws.com", "sts:AssumeRole", &Context::new()));
    // Trust is only about STS actions it lists.
    assert!(!trusts(&trust, authorizer, "s3:GetObject", &tagged));
}

#[test]
fn trust_without_principal_grants_nothing() {
    let loose = PolicyDocument::parse(r#"{"Statement": {"Effect": "Allow", "Action": "sts:AssumeRole"}}"#)
        .expect("generic parse accepts it");
    assert!(!trusts(&loose, "arn:aws:iam::000000000000:root", "sts:AssumeRole", &Context::new()));
    let everyone =
        PolicyDocument::parse(r#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "sts:AssumeRole"}}"#)
            .expect("valid");
    assert!(trusts(&everyone, "arn:aws:iam::999999999999:user/x", "sts:AssumeRole", &Context::new()));
}

#[test]
fn resource_policy_principals_use_the_context() {
    let bucket = PolicyDocument::parse_as(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:role/tenant"},
             "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"},
            {"Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:iam::000000000000:role/tenant", "arn:aws:iam::000000000000:role/admin"]},
             "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"}]}"#,
        PolicyKind::Resource,
    )
    .expect("valid bucket policy");
    let as_arn = |arn: &str| Context::new().with("aws:PrincipalArn", arn);
    assert_eq!(
        decide(&[&bucket], "s3:GetObject", "arn:aws:s3:::b/k", &as_arn("arn:aws:iam::000000000000:role/tenant")),
        Decision::Allow
    );
    assert_eq!(
        decide(&[&bucket], "s3:GetObject", "arn:aws:s3:::b/k", &as_arn("arn:aws:iam::000000000000:role/admin")),
        Decision::ImplicitDeny
    );
    assert_eq!(
        decide(&[&bucket], "s3:GetObject", "arn:aws:s3:::b/k", &as_arn("arn:aws:iam::000000000000:role/other")),
        Decision::ExplicitDeny
    );
    assert_eq!(
        decide(&[&bucket], "s3:GetObject", "arn:aws:s3:::b/k", &Context::new()),
        Decision::ExplicitDeny,
        "anonymous"
    );
}

#[test]
fn statement_without_resource_fails_closed() {
    let doc = PolicyDocument::parse(
        r#"{"Statement": [{"Effect": "Allow", "Action": "s3:*"}, {"Effect": "Deny", "Action": "s3:DeleteObject"}]}"#,
    )
    .expect("generic parse accepts it");
    let ctx = Context::new();
    assert_eq!(decide(&[&doc], "s3:GetObject", "arn:aws:s3:::b/k", &ctx), Decision::ImplicitDeny);
    assert_eq!(decide(&[&doc], "s3:DeleteObject", "arn:aws:s3:::b/k", &ctx), Decision::ExplicitDeny);
}

#[test]
fn pathological_wildcards_finish_quickly() {
    let stars = "*a".repeat(300);
    let policy = parse(&format!(
        r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "Allow", "Action": "s3:{stars}b",
            "Resource": "arn:aws:s3:::{stars}b",
            "Condition": {{"StringLike": {{"s3:prefix": "{stars}b"}}}}}}}}"#
    ));
    let long = "a".repeat(30_000);
    let ctx = Context::new().with("s3:prefix", long.as_str());
    let started = Instant::now();
    assert_eq!(
        decide(&[&policy], &format!("s3:{long}"), &format!("arn:aws:s3:::{long}"), &ctx),
        Decision::ImplicitDeny
    );
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[test]
fn fixture_policy_decides_like_the_small_one() {
    let policy = fixtures::tenant_policy(100).expect("fixture parses");
    assert_eq!(policy.statements().len(), 100);
    let blue = fixtures::tenant_context("blue");
    let own = fixtures::tenant_resource("blue");
    let other = fixtures::tenant_resource("green");
    assert_eq!(decide(&[&policy], fixtures::ACTION, &own, &blue), Decision::Allow);
    assert_eq!(decide(&[&policy], fixtures::ACTION, &other, &blue), Decision::ImplicitDeny);
    let plain = fixtures::tenant_context("blue").with_values("aws:SecureTransport", ["false"]);
    assert_eq!(decide(&[&policy], fixtures::ACTION, &own, &plain), Decision::ExplicitDeny);
}

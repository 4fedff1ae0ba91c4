//! The STS API: `AssumeRole` and `GetCallerIdentity`, and issuing credentials.
//!
//! `AssumeRole` checks, in order: the parameters; the session policy; the role (a missing role, or an ARN
//! whose path does not match, is `AccessDenied` as in AWS); the role's trust policy for `sts:AssumeRole`, for
//! `sts:TagSession` when the new session will carry tags, and for `sts:SetSourceIdentity` when it will carry a
//! source identity; and, for a session caller, its own policies for the same actions on the role. The trust
//! check sees the caller's identity keys (`aws:PrincipalTag/...`, `aws:PrincipalArn`, ...) and the request's
//! keys: `aws:RequestTag/<k>`, `aws:TagKeys`, `sts:TransitiveTagKeys`, `sts:ExternalId`,
//! `sts:RoleSessionName`, `sts:SourceIdentity`, `aws:CurrentTime`, `aws:EpochTime`.
//!
//! Role chaining (a session calling `AssumeRole`): the caller's transitive tags carry over (and stay
//! transitive); passing a tag with the key of an inherited one fails; the session is limited to one hour; a
//! source identity carries over and cannot be changed.

use quarters_iam::{Context, PolicyDocument, PolicyKind, trusts};

use crate::error::{Checks, IdentityError};
use crate::query::Params;
use crate::validate::{
    self, EXTERNAL_ID_PATTERN, POLICY_PATTERN, SESSION_NAME_PATTERN, external_id_char, name_char, policy_char, same_key,
};
use crate::xml::Xml;
use crate::{
    CHAINED_SESSION_SECONDS, Credentials, DEFAULT_SESSION_SECONDS, Identity, MAX_SESSION_SECONDS, MIN_SESSION_SECONDS,
    PACKED_LIMIT_BYTES, Principal, RoleEntry, STS_NS, add_time, iso8601, response, token,
};

/// The longest inline session policy, in characters.
const MAX_SESSION_POLICY: usize = 2048;

pub(crate) fn handle(
    id: &Identity,
    action: &str,
    caller: &Principal,
    p: &Params<'_>,
    request_id: &str,
    now: u64,
) -> Result<Option<String>, IdentityError> {
    Ok(match action {
        "AssumeRole" => {
            let creds = assume_role(id, caller, p, now)?;
            Some(response(STS_NS, action, request_id, Some(&mut |x: &mut Xml| write_assume_role(x, &creds))))
        }
        "GetCallerIdentity" => {
            let (user_id, arn) = match caller {
                Principal::Admin { .. } => (id.account().to_owned(), id.caller_arn(caller)),
                Principal::Session(s) => (s.user_id(), s.arn()),
            };
            Some(response(
                STS_NS,
                action,
                request_id,
                Some(&mut |x: &mut Xml| {
                    x.leaf("UserId", &user_id);
                    x.leaf("Account", id.account());
                    x.leaf("Arn", &arn);
                }),
            ))
        }
        _ => None,
    })
}

pub(crate) fn check_session_name(c: &mut Checks, name: Option<&str>) {
    c.length("roleSessionName", name, 2, 64);
    c.chars("roleSessionName", name, SESSION_NAME_PATTERN, name_char);
}

fn access_denied(id: &Identity, caller: &Principal, action: &str, role_arn: &str) -> IdentityError {
    IdentityError::AccessDenied(format!(
        "User: {} is not authorized to perform: {action} on resource: {role_arn}",
        id.caller_arn(caller)
    ))
}

fn assume_role(id: &Identity, caller: &Principal, p: &Params<'_>, now: u64) -> Result<Credentials, IdentityError> {
    // Parameters.
    let mut c = Checks::new();
    let role_arn = c.required("roleArn", p.get("RoleArn"));
    c.length("roleArn", role_arn, 20, 2048);
    let session_name = c.required("roleSessionName", p.get("RoleSessionName"));
    check_session_name(&mut c, session_name);
    let duration = c.integer("durationSeconds", p.get("DurationSeconds"), MIN_SESSION_SECONDS, MAX_SESSION_SECONDS);
    let policy = p.get("Policy");
    c.length("policy", policy, 1, MAX_SESSION_POLICY);
    c.chars("policy", policy, POLICY_PATTERN, policy_char);
    let external_id = p.get("ExternalId");
    c.length("externalId", external_id, 2, 1224);
    c.chars("externalId", external_id, EXTERNAL_ID_PATTERN, external_id_char);
    let source_identity = p.get("SourceIdentity");
    c.length("sourceIdentity", source_identity, 2, 64);
    c.chars("sourceIdentity", source_identity, SESSION_NAME_PATTERN, name_char);
    let tags = validate::tag_pairs(&mut c, &p.list("Tags")?);
    let transitive: Vec<String> =
        p.list("TransitiveTagKeys")?.iter().map(|item| item.get("").copied().unwrap_or_default().to_owned()).collect();
    validate::check_tag_keys(&mut c, "transitiveTagKeys", &transitive);
    let tag_check = validate::check_tags(&mut c, &tags);
    c.finish()?;
    tag_check?;
    for unsupported in ["PolicyArns", "SerialNumber", "TokenCode", "ProvidedContexts"] {
        if p.has(unsupported) {
            return Err(IdentityError::InvalidInput(format!("{unsupported} is not supported.")));
        }
    }
    if let Some(k) = transitive.iter().find(|k| !tags.iter().any(|(t, _)| same_key(t, k))) {
        return Err(IdentityError::Validation(format!(
            "The transitive tag key {k} must also be passed as a session tag."
        )));
    }
    if source_identity.is_some_and(|s| s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"))) {
        return Err(IdentityError::Validation("SourceIdentity must not start with \"aws:\".".into()));
    }
    let (role_arn, session_name) = (role_arn.unwrap_or_default(), session_name.unwrap_or_default());

    // The session policy.
    if let Some(text) = policy {
        PolicyDocument::parse_as(text, PolicyKind::Identity)
            .map_err(|e| IdentityError::MalformedPolicyDocument(e.to_string()))?;
    }

    // What carries over from a calling session.
    let (inherited, mut all_transitive, chained, caller_source) = match caller {
        Principal::Admin { .. } => (Vec::new(), Vec::new(), false, None),
        Principal::Session(s) => {
            let inherited: Vec<(String, String)> =
                s.tags.iter().filter(|(k, _)| s.transitive.iter().any(|t| same_key(t, k))).cloned().collect();
            let keys = inherited.iter().map(|(k, _)| k.clone()).collect();
            (inherited, keys, true, s.source_identity.clone())
        }
    };
    if let Some((k, _)) = tags.iter().find(|(k, _)| inherited.iter().any(|(i, _)| same_key(i, k))) {
        return Err(IdentityError::Validation(format!(
            "The session tag {k} conflicts with a transitive tag inherited from the calling session."
        )));
    }
    if let (Some(old), Some(new)) = (&caller_source, source_identity)
        && old != new
    {
        return Err(IdentityError::Validation(
            "SourceIdentity was set by the calling session and cannot be changed.".into(),
        ));
    }
    let source_identity = caller_source.or_else(|| source_identity.map(str::to_owned));

    // The role and its trust policy.
    let entry = id.role_by_arn(role_arn)?.ok_or_else(|| access_denied(id, caller, "sts:AssumeRole", role_arn))?;
    let mut request = Context::new();
    for (k, v) in &tags {
        request.insert(&format!("aws:RequestTag/{k}"), v.as_str());
    }
    request.set("aws:TagKeys", tags.iter().map(|(k, _)| k.as_str()));
    request.set("sts:TransitiveTagKeys", transitive.iter().map(String::as_str));
    if let Some(e) = external_id {
        request.insert("sts:ExternalId", e);
    }
    request.insert("sts:RoleSessionName", session_name);
    if let Some(s) = &source_identity {
        request.insert("sts:SourceIdentity", s.as_str());
    }
    let mut ctx = caller_context(id, caller, now)?;
    for (k, values) in request.iter() {
        ctx.set(k, values.iter().map(String::as_str));
    }
    let mut needed = vec!["sts:AssumeRole"];
    if !tags.is_empty() || !inherited.is_empty() {
        needed.push("sts:TagSession");
    }
    if source_identity.is_some() {
        needed.push("sts:SetSourceIdentity");
    }
    let principal_arn = id.caller_arn(caller);
    for action in &needed {
        let trusted = entry.trust.as_ref().is_some_and(|t| trusts(t, &principal_arn, action, &ctx));
        if !trusted {
            return Err(access_denied(id, caller, action, role_arn));
        }
    }
    if let Principal::Session(_) = caller {
        let extra: Vec<(&str, Vec<&str>)> =
            request.iter().map(|(k, vs)| (k, vs.iter().map(String::as_str).collect())).collect();
        let extra: Vec<(&str, &str)> = extra.iter().flat_map(|(k, vs)| vs.iter().map(move |v| (*k, *v))).collect();
        for action in &needed {
            id.require(caller, action, role_arn, &extra)?;
        }
    }

    // The session.
    let duration = duration.unwrap_or(DEFAULT_SESSION_SECONDS);
    if chained && duration > CHAINED_SESSION_SECONDS {
        return Err(IdentityError::Validation(
            "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.".into(),
        ));
    }
    if duration > entry.role.max_session_duration {
        return Err(IdentityError::Validation(
            "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.".into(),
        ));
    }
    let mut all_tags = inherited;
    all_tags.extend(tags);
    all_transitive.extend(transitive);
    issue(
        id,
        Issue {
            entry: &entry,
            session_name,
            tags: all_tags,
            transitive: all_transitive,
            policy,
            source_identity,
            duration,
            now,
        },
    )
}

/// The caller's identity keys, for a trust-policy check.
fn caller_context(id: &Identity, caller: &Principal, now: u64) -> Result<Context, IdentityError> {
    Ok(match caller {
        Principal::Admin { .. } => {
            let mut ctx = Context::new();
            ctx.insert(quarters_iam::keys::PRINCIPAL_ARN, id.caller_arn(caller))
                .insert(quarters_iam::keys::PRINCIPAL_ACCOUNT, id.account())
                .insert("aws:PrincipalType", "Account")
                .insert(quarters_iam::keys::USER_ID, id.account());
            add_time(&mut ctx, now);
            ctx
        }
        Principal::Session(s) => match id.role_by_id(&s.role_id)? {
            Some(entry) => id.session_context(s, &entry, &[], now),
            // The caller's role is gone: its tags still describe it, its role tags do not.
            None => {
                let empty = RoleEntry {
                    role: crate::Role {
                        name: s.role_name.clone(),
                        path: String::new(),
                        role_id: s.role_id.clone(),
                        arn: s.role_arn.clone(),
                        trust_policy: String::new(),
                        created: 0,
                        max_session_duration: 0,
                        description: None,
                        tags: Vec::new(),
                    },
                    trust: None,
                    policies: Vec::new(),
                };
                id.session_context(s, &empty, &[], now)
            }
        },
    })
}

/// What a new session is made of.
pub(crate) struct Issue<'a> {
    pub entry: &'a RoleEntry,
    pub session_name: &'a str,
    pub tags: Vec<(String, String)>,
    pub transitive: Vec<String>,
    pub policy: Option<&'a str>,
    pub source_identity: Option<String>,
    pub duration: u64,
    pub now: u64,
}

/// The share of [`PACKED_LIMIT_BYTES`] a session policy and tags use, in percent (rounded up).
fn packed_percent(policy: Option<&str>, tags: &[(String, String)], transitive: &[String]) -> u64 {
    let bytes = policy.map_or(0, str::len)
        + tags.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + transitive.iter().map(String::len).sum::<usize>();
    (bytes * 100).div_ceil(PACKED_LIMIT_BYTES) as u64
}

/// Mints the credentials of a new session.
pub(crate) fn issue(id: &Identity, s: Issue<'_>) -> Result<Credentials, IdentityError> {
    let packed = packed_percent(s.policy, &s.tags, &s.transitive);
    if packed > 100 {
        return Err(IdentityError::PackedPolicyTooLarge(format!(
            "Packed policy consumes {packed}% of allotted space, please use smaller policy."
        )));
    }
    let role = &s.entry.role;
    let access_key_id = token::new_access_key_id(id.master());
    let expiration = s.now + s.duration;
    let body = token::TokenBody {
        k: access_key_id.clone(),
        r: role.arn.clone(),
        i: role.role_id.clone(),
        n: s.session_name.to_owned(),
        t: s.tags,
        x: s.transitive,
        p: s.policy.map(str::to_owned),
        e: expiration,
        a: s.now,
        s: s.source_identity.clone(),
    };
    let session_token = token::seal(id.master(), &body);
    Ok(Credentials {
        secret_access_key: token::derive_secret(id.master(), &access_key_id),
        access_key_id,
        session_token,
        expiration,
        assumed_role_id: format!("{}:{}", role.role_id, s.session_name),
        arn: format!("arn:aws:sts::{}:assumed-role/{}/{}", id.account(), role.name, s.session_name),
        packed_policy_size: packed,
        source_identity: s.source_identity,
    })
}

fn write_assume_role(x: &mut Xml, c: &Credentials) {
    x.elem("Credentials", |x| {
        x.leaf("AccessKeyId", &c.access_key_id);
        x.leaf("SecretAccessKey", &c.secret_access_key);
        x.leaf("SessionToken", &c.session_token);
        x.leaf("Expiration", &iso8601(c.expiration));
    });
    x.elem("AssumedRoleUser", |x| {
        x.leaf("AssumedRoleId", &c.assumed_role_id);
        x.leaf("Arn", &c.arn);
    });
    x.leaf_num("PackedPolicySize", c.packed_policy_size);
    x.leaf_opt("SourceIdentity", c.source_identity.as_deref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_size_is_a_rounded_up_percentage() {
        assert_eq!(packed_percent(None, &[], &[]), 0);
        assert_eq!(packed_percent(Some("x"), &[], &[]), 1);
        let tags = vec![("k".repeat(96), "v".repeat(0))];
        assert_eq!(packed_percent(None, &tags, &[]), 2);
        assert_eq!(packed_percent(Some(&"p".repeat(PACKED_LIMIT_BYTES)), &[], &[]), 100);
        assert_eq!(packed_percent(Some(&"p".repeat(PACKED_LIMIT_BYTES + 1)), &[], &[]), 101);
    }
}

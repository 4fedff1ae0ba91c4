//! The `Principal` / `NotPrincipal` element and matching a caller against it.
//!
//! Principals are exact: IAM allows no partial wildcards, only a lone `*`. An AWS principal matches a caller
//! when it is
//! - `*` (any AWS principal);
//! - the caller's ARN itself;
//! - an account (`123456789012` or `arn:aws:iam::123456789012:root`): any principal of that account;
//! - a role ARN `arn:aws:iam::A:role/path/name` and the caller is one of its sessions,
//!   `arn:aws:sts::A:assumed-role/name/session`.

use crate::json::Json;

/// The kinds of principal in a `Principal` object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Aws,
    Service,
    Federated,
    CanonicalUser,
}

impl Kind {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "AWS" => Some(Kind::Aws),
            "Service" => Some(Kind::Service),
            "Federated" => Some(Kind::Federated),
            "CanonicalUser" => Some(Kind::CanonicalUser),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Aws => "AWS",
            Kind::Service => "Service",
            Kind::Federated => "Federated",
            Kind::CanonicalUser => "CanonicalUser",
        }
    }
}

/// A parsed `Principal` (or `NotPrincipal`) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principals {
    /// `"Principal": "*"`: everyone, including anonymous callers.
    Everyone,
    /// `{"AWS": [...], "Service": [...]}`, in document order.
    Listed(Vec<(Kind, Vec<Box<str>>)>),
}

/// Who is making a request, as far as `Principal` matching is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller<'a> {
    /// An IAM identity: an ARN or a bare account id.
    Arn(&'a str),
    /// A service principal (`lambda.amazonaws.com`) or a federated provider name.
    Service(&'a str),
    /// No principal known.
    Anonymous,
}

impl<'a> Caller<'a> {
    /// Reads a caller string: an ARN or 12-digit account id is an IAM identity, anything else a service.
    pub(crate) fn classify(id: &'a str) -> Self {
        if id.starts_with("arn:") || is_account_id(id) {
            Caller::Arn(id)
        } else if id.is_empty() {
            Caller::Anonymous
        } else {
            Caller::Service(id)
        }
    }
}

/// Why a principal value is invalid.
pub(crate) struct InvalidPrincipal {
    pub value: String,
    pub why: &'static str,
}

impl Principals {
    pub(crate) fn parse(value: &Json) -> Result<Self, InvalidPrincipal> {
        let invalid = |value: &str, why| InvalidPrincipal { value: value.to_owned(), why };
        match value {
            Json::String(s) if s == "*" => Ok(Principals::Everyone),
            Json::String(s) => Err(invalid(s, "a Principal string must be \"*\"; use {\"AWS\": ...} for an ARN")),
            Json::Object(members) => {
                if members.is_empty() {
                    return Err(invalid("{}", "names no principal"));
                }
                let mut listed = Vec::with_capacity(members.len());
                for (name, ids) in members {
                    let Some(kind) = Kind::from_name(name) else {
                        return Err(invalid(
                            name,
                            "the principal type must be AWS, Service, Federated or CanonicalUser",
                        ));
                    };
                    let ids = match ids {
                        Json::String(s) => vec![s.as_str()],
                        Json::Array(items) if !items.is_empty() => items
                            .iter()
                            .map(|item| match item {
                                Json::String(s) => Ok(s.as_str()),
                                other => Err(invalid(other.kind(), "principal ids must be strings")),
                            })
                            .collect::<Result<_, _>>()?,
                        Json::Array(_) => return Err(invalid(name, "empty principal list")),
                        other => return Err(invalid(other.kind(), "principal ids must be a string or an array")),
                    };
                    for id in &ids {
                        validate(kind, id).map_err(|why| invalid(id, why))?;
                    }
                    listed.push((kind, ids.into_iter().map(Box::from).collect()));
                }
                Ok(Principals::Listed(listed))
            }
            other => Err(invalid(other.kind(), "Principal must be \"*\" or an object")),
        }
    }

    /// Whether `caller` is one of these principals.
    pub(crate) fn contains(&self, caller: Caller<'_>) -> bool {
        let Principals::Listed(listed) = self else { return true };
        listed.iter().any(|(kind, ids)| {
            ids.iter().any(|id| match (kind, caller) {
                (Kind::Aws, Caller::Arn(arn)) => aws_matches(id, arn),
                (Kind::Service, Caller::Service(name)) => id.as_ref() == "*" || id.eq_ignore_ascii_case(name),
                (Kind::Federated | Kind::CanonicalUser, Caller::Arn(name) | Caller::Service(name)) => {
                    id.as_ref() == "*" || id.as_ref() == name
                }
                _ => false,
            })
        })
    }
}

fn validate(kind: Kind, id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty principal");
    }
    if id == "*" {
        return Ok(());
    }
    if id.contains(['*', '?']) {
        return Err("principals cannot contain wildcards other than a lone \"*\"");
    }
    if kind == Kind::Aws && !is_account_id(id) && !(id.starts_with("arn:") && id.matches(':').count() >= 5) {
        return Err("an AWS principal must be an ARN or a 12-digit account id");
    }
    Ok(())
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `arn:partition:service:region:account:resource` → its fields; `None` if not an ARN.
fn arn_fields(arn: &str) -> Option<(&str, &str, &str, &str)> {
    let mut it = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(_region), Some(account), Some(resource)) =
        (it.next(), it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return None;
    };
    Some((partition, service, account, resource))
}

fn aws_matches(principal: &str, caller: &str) -> bool {
    if principal == "*" || principal == caller {
        return true;
    }
    let (caller_partition, caller_account) = match arn_fields(caller) {
        Some((partition, _, account, _)) => (Some(partition), account),
        None if is_account_id(caller) => (None, caller),
        None => return false,
    };
    if is_account_id(principal) {
        return principal == caller_account;
    }
    let Some((partition, service, account, resource)) = arn_fields(principal) else { return false };
    if Some(partition) != caller_partition && caller_partition.is_some() {
        return false;
    }
    if service == "iam" && resource == "root" {
        return account == caller_account;
    }
    // A role ARN also names every session of the role.
    if service == "iam"
        && let Some(role_path) = resource.strip_prefix("role/")
        && let Some((_, caller_service, _, caller_resource)) = arn_fields(caller)
        && caller_service == "sts"
        && account == caller_account
        && let Some(session) = caller_resource.strip_prefix("assumed-role/")
    {
        let role_name = role_path.rsplit('/').next().unwrap_or(role_path);
        return session.split_once('/').is_some_and(|(name, _)| name == role_name);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(json: &str) -> Principals {
        let value: Json = serde_json::from_str(json).expect("json");
        Principals::parse(&value).map_err(|e| format!("{}: {}", e.value, e.why)).expect("valid principal")
    }

    #[test]
    fn account_root_matches_any_identity_in_the_account() {
        let root = p(r#"{"AWS": "arn:aws:iam::000000000000:root"}"#);
        assert!(root.contains(Caller::classify("arn:aws:iam::000000000000:user/alice")));
        assert!(root.contains(Caller::classify("arn:aws:sts::000000000000:assumed-role/r/s")));
        assert!(root.contains(Caller::classify("000000000000")));
        assert!(!root.contains(Caller::classify("arn:aws:iam::111111111111:user/alice")));
        assert!(!root.contains(Caller::classify("arn:aws-cn:iam::000000000000:user/alice")), "other partition");
        assert!(!root.contains(Caller::classify("lambda.amazonaws.com")));
        let bare = p(r#"{"AWS": ["000000000000"]}"#);
        assert!(bare.contains(Caller::classify("arn:aws:iam::000000000000:role/x")));
    }

    #[test]
    fn role_arn_matches_itself_and_its_sessions() {
        let role = p(r#"{"AWS": "arn:aws:iam::000000000000:role/team/app"}"#);
        assert!(role.contains(Caller::classify("arn:aws:iam::000000000000:role/team/app")));
        assert!(role.contains(Caller::classify("arn:aws:sts::000000000000:assumed-role/app/session-1")));
        assert!(!role.contains(Caller::classify("arn:aws:sts::000000000000:assumed-role/other/app")));
        assert!(!role.contains(Caller::classify("arn:aws:sts::111111111111:assumed-role/app/s")));
        assert!(!role.contains(Caller::classify("arn:aws:iam::000000000000:role/team/app2")));
    }

    #[test]
    fn services_and_everyone() {
        let svc = p(r#"{"Service": ["lambda.amazonaws.com"]}"#);
        assert!(svc.contains(Caller::classify("lambda.amazonaws.com")));
        assert!(svc.contains(Caller::classify("Lambda.AmazonAWS.com")));
        assert!(!svc.contains(Caller::classify("ec2.amazonaws.com")));
        assert!(!svc.contains(Caller::classify("arn:aws:iam::000000000000:root")));
        assert!(!svc.contains(Caller::Anonymous));
        let all = p(r#""*""#);
        assert!(all.contains(Caller::Anonymous));
        assert!(all.contains(Caller::classify("lambda.amazonaws.com")));
        let any_aws = p(r#"{"AWS": "*"}"#);
        assert!(any_aws.contains(Caller::classify("arn:aws:iam::1:user/x")));
        assert!(!any_aws.contains(Caller::classify("lambda.amazonaws.com")));
    }

    #[test]
    fn invalid_principals() {
        for bad in [
            r#""arn:aws:iam::000000000000:root""#,
            r#"{"AWS": "arn:aws:iam::*:root"}"#,
            r#"{"AWS": "alice"}"#,
            r#"{"Users": "x"}"#,
            r#"{"AWS": []}"#,
            r#"{}"#,
            r#"{"Service": 3}"#,
            "7",
        ] {
            let value: Json = serde_json::from_str(bad).expect("json");
            assert!(Principals::parse(&value).is_err(), "{bad} should be rejected");
        }
    }
}

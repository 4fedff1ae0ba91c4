//! The IAM API: roles and their inline policies.
//!
//! A session caller needs `iam:<Action>` on the role's ARN (`ListRoles`: on `arn:aws:iam::<acct>:role<prefix>*`;
//! tags on `CreateRole` also need `iam:TagRole`). Authorisation comes before any existence check, so a
//! caller learns nothing about roles it may not touch. Administrators may do anything.

use quarters_iam::{PolicyDocument, PolicyKind};

use crate::error::{Checks, IdentityError};
use crate::query::{Params, url_encode};
use crate::validate::{
    self, DESCRIPTION_PATTERN, POLICY_PATTERN, check_name, check_path, description_char, policy_char,
};
use crate::xml::Xml;
use crate::{
    DEFAULT_SESSION_SECONDS, IAM_NS, Identity, MAX_SESSION_SECONDS, NewRole, Principal, ROLE_POLICY_SIZE_LIMIT, Role,
    iso8601, response, store, token,
};

const MAX_POLICY_DOCUMENT: usize = 131_072;

/// Runs one IAM action; `None` for an action IAM does not have here.
pub(crate) fn handle(
    id: &Identity,
    action: &str,
    caller: &Principal,
    p: &Params<'_>,
    request_id: &str,
    now: u64,
) -> Result<Option<String>, IdentityError> {
    let ok = |result: Option<&mut dyn FnMut(&mut Xml)>| Some(response(IAM_NS, action, request_id, result));
    Ok(match action {
        "CreateRole" => {
            let mut c = Checks::new();
            let name = c.required("roleName", p.get("RoleName"));
            let trust = c.required("assumeRolePolicyDocument", p.get("AssumeRolePolicyDocument"));
            let max = c.integer(
                "maxSessionDuration",
                p.get("MaxSessionDuration"),
                DEFAULT_SESSION_SECONDS,
                MAX_SESSION_SECONDS,
            );
            let tags = validate::tag_pairs(&mut c, &p.list("Tags")?);
            c.finish()?;
            if p.has("PermissionsBoundary") {
                return Err(IdentityError::InvalidInput("Permissions boundaries are not supported.".into()));
            }
            let spec = NewRole {
                name: name.unwrap_or_default(),
                path: p.get("Path"),
                trust_policy: trust.unwrap_or_default(),
                description: p.get("Description"),
                max_session_duration: max,
                tags,
            };
            let role = create_role(id, caller, &spec, now)?;
            ok(Some(&mut |x| write_role(x, &role, true)))
        }
        "GetRole" => {
            let name = required_name(p, "RoleName", "roleName", 64)?;
            let role = existing_role(id, caller, "iam:GetRole", name)?;
            ok(Some(&mut |x| write_role(x, &role, true)))
        }
        "DeleteRole" => {
            let name = required_name(p, "RoleName", "roleName", 64)?;
            delete_role(id, caller, name)?;
            ok(None)
        }
        "ListRoles" => {
            let mut c = Checks::new();
            let prefix = p.get("PathPrefix");
            c.length("pathPrefix", prefix, 1, 512);
            if let Some(v) = prefix
                && !(v.starts_with('/') && v.chars().all(|ch| matches!(ch, '!'..='\u{7F}')))
            {
                c.fail("pathPrefix", prefix, r"Member must satisfy regular expression pattern: \u002F[\u0021-\u007F]*");
            }
            let (marker, max_items) = paging(&mut c, p);
            c.finish()?;
            let prefix = prefix.unwrap_or("/");
            id.require(caller, "iam:ListRoles", &format!("arn:aws:iam::{}:role{prefix}*", id.account()), &[])?;
            let mut roles = id.with_db(|conn| Ok(store::list_roles(conn, prefix, marker, max_items + 1)?))?;
            let next = (roles.len() > max_items).then(|| roles.swap_remove(max_items).name);
            ok(Some(&mut |x| {
                x.elem("Roles", |x| {
                    for role in &roles {
                        x.elem("member", |x| write_role_fields(x, role, false));
                    }
                });
                x.leaf_bool("IsTruncated", next.is_some());
                x.leaf_opt("Marker", next.as_deref());
            }))
        }
        "PutRolePolicy" => {
            let (role, policy) = role_and_policy_names(p)?;
            let mut c = Checks::new();
            let doc = c.required("policyDocument", p.get("PolicyDocument"));
            c.finish()?;
            put_role_policy(id, caller, role, policy, doc.unwrap_or_default())?;
            ok(None)
        }
        "GetRolePolicy" => {
            let (role_name, policy_name) = role_and_policy_names(p)?;
            let role = existing_role(id, caller, "iam:GetRolePolicy", role_name)?;
            let (name, doc) = id
                .with_db(|conn| Ok(store::policy(conn, &role.role_id, policy_name)?))?
                .ok_or_else(|| no_such_policy(policy_name))?;
            ok(Some(&mut |x| {
                x.leaf("RoleName", &role.name);
                x.leaf("PolicyName", &name);
                x.leaf("PolicyDocument", &url_encode(&doc));
            }))
        }
        "DeleteRolePolicy" => {
            let (role, policy) = role_and_policy_names(p)?;
            delete_role_policy(id, caller, role, policy)?;
            ok(None)
        }
        "ListRolePolicies" => {
            let mut c = Checks::new();
            let role_name = check_name(&mut c, "roleName", p.get("RoleName"), 64);
            let (marker, max_items) = paging(&mut c, p);
            c.finish()?;
            let role = existing_role(id, caller, "iam:ListRolePolicies", role_name.unwrap_or_default())?;
            let names: Vec<String> =
                id.with_db(|conn| Ok(store::policies(conn, &role.role_id)?))?.into_iter().map(|(n, _)| n).collect();
            let start = marker.map_or(0, |m| {
                names.iter().position(|n| n.to_ascii_lowercase() >= m.to_ascii_lowercase()).unwrap_or(names.len())
            });
            let page: Vec<&String> = names.iter().skip(start).take(max_items).collect();
            let next = names.get(start + max_items);
            ok(Some(&mut |x| {
                x.elem("PolicyNames", |x| {
                    for name in &page {
                        x.leaf("member", name);
                    }
                });
                x.leaf_bool("IsTruncated", next.is_some());
                x.leaf_opt("Marker", next.map(String::as_str));
            }))
        }
        _ => None,
    })
}

/// `Marker` and `MaxItems` (1..=1000, default 100).
fn paging<'a>(c: &mut Checks, p: &Params<'a>) -> (Option<&'a str>, usize) {
    let marker = p.get("Marker");
    c.length("marker", marker, 1, 320);
    c.chars("marker", marker, r"[\u0020-\u00FF]+", |ch| matches!(ch, '\u{20}'..='\u{FF}'));
    let max_items = c.integer("maxItems", p.get("MaxItems"), 1, 1000).unwrap_or(100);
    (marker, usize::try_from(max_items).unwrap_or(100))
}

fn required_name<'a>(p: &Params<'a>, param: &str, member: &str, max: usize) -> Result<&'a str, IdentityError> {
    let mut c = Checks::new();
    let v = check_name(&mut c, member, p.get(param), max);
    c.finish()?;
    Ok(v.unwrap_or_default())
}

fn role_and_policy_names<'a>(p: &Params<'a>) -> Result<(&'a str, &'a str), IdentityError> {
    let mut c = Checks::new();
    let role = check_name(&mut c, "roleName", p.get("RoleName"), 64);
    let policy = check_name(&mut c, "policyName", p.get("PolicyName"), 128);
    c.finish()?;
    Ok((role.unwrap_or_default(), policy.unwrap_or_default()))
}

fn no_such_role(name: &str) -> IdentityError {
    IdentityError::NoSuchEntity(format!("The role with name {name} cannot be found."))
}

fn no_such_policy(name: &str) -> IdentityError {
    IdentityError::NoSuchEntity(format!("The role policy with name {name} cannot be found."))
}

/// Authorises `action` on the role (its real ARN, or `role/<name>` if it does not exist), then finds it.
fn existing_role(id: &Identity, caller: &Principal, action: &str, name: &str) -> Result<Role, IdentityError> {
    let entry = id.role_by_name(name)?;
    let arn = entry.as_ref().map_or_else(|| id.role_arn("/", name), |e| e.role.arn.clone());
    id.require(caller, action, &arn, &[])?;
    entry.map(|e| e.role.clone()).ok_or_else(|| no_such_role(name))
}

fn check_policy_document(c: &mut Checks, member: &str, doc: &str) {
    c.length(member, Some(doc), 1, MAX_POLICY_DOCUMENT);
    c.chars(member, Some(doc), POLICY_PATTERN, policy_char);
}

fn malformed(e: quarters_iam::PolicyError) -> IdentityError {
    IdentityError::MalformedPolicyDocument(e.to_string())
}

pub(crate) fn create_role(
    id: &Identity,
    caller: &Principal,
    spec: &NewRole<'_>,
    now: u64,
) -> Result<Role, IdentityError> {
    let mut c = Checks::new();
    check_name(&mut c, "roleName", Some(spec.name), 64);
    let path = spec.path.unwrap_or("/");
    check_path(&mut c, "path", Some(path));
    check_policy_document(&mut c, "assumeRolePolicyDocument", spec.trust_policy);
    c.length("description", spec.description, 0, 1000);
    c.chars("description", spec.description, DESCRIPTION_PATTERN, description_char);
    let max_session = spec.max_session_duration.unwrap_or(DEFAULT_SESSION_SECONDS);
    c.integer("maxSessionDuration", Some(&max_session.to_string()), DEFAULT_SESSION_SECONDS, MAX_SESSION_SECONDS);
    validate::check_tags(&mut c, &spec.tags)?;
    c.finish()?;
    PolicyDocument::parse_as(spec.trust_policy, PolicyKind::Trust).map_err(malformed)?;

    let arn = id.role_arn(path, spec.name);
    id.require(caller, "iam:CreateRole", &arn, &[])?;
    if !spec.tags.is_empty() {
        id.require(caller, "iam:TagRole", &arn, &[])?;
    }
    let role = Role {
        name: spec.name.to_owned(),
        path: path.to_owned(),
        role_id: format!("AROA{}", token::random_chars(17)),
        arn,
        trust_policy: spec.trust_policy.to_owned(),
        created: now,
        max_session_duration: max_session,
        description: spec.description.map(str::to_owned),
        tags: spec.tags.clone(),
    };
    id.with_db(|conn| {
        if !store::insert_role(conn, &role)? {
            return Err(IdentityError::EntityAlreadyExists(format!("Role with name {} already exists.", spec.name)));
        }
        id.invalidate(&role);
        Ok(())
    })?;
    Ok(role)
}

pub(crate) fn delete_role(id: &Identity, caller: &Principal, name: &str) -> Result<(), IdentityError> {
    let role = existing_role(id, caller, "iam:DeleteRole", name)?;
    id.with_db(|conn| {
        if !store::policies(conn, &role.role_id)?.is_empty() {
            return Err(IdentityError::DeleteConflict("Cannot delete entity, must delete policies first.".into()));
        }
        store::delete_role(conn, &role.role_id)?;
        id.invalidate(&role);
        Ok(())
    })
}

pub(crate) fn put_role_policy(
    id: &Identity,
    caller: &Principal,
    role_name: &str,
    policy_name: &str,
    document: &str,
) -> Result<(), IdentityError> {
    let mut c = Checks::new();
    check_name(&mut c, "roleName", Some(role_name), 64);
    check_name(&mut c, "policyName", Some(policy_name), 128);
    check_policy_document(&mut c, "policyDocument", document);
    c.finish()?;
    PolicyDocument::parse_as(document, PolicyKind::Identity).map_err(malformed)?;
    let role = existing_role(id, caller, "iam:PutRolePolicy", role_name)?;
    id.with_db(|conn| {
        // The role may have been deleted since it was looked up.
        if store::role_by_id(conn, &role.role_id)?.is_none() {
            return Err(no_such_role(role_name));
        }
        let size = |doc: &str| doc.chars().filter(|ch| !ch.is_whitespace()).count();
        let others: usize = store::policies(conn, &role.role_id)?
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(policy_name))
            .map(|(_, d)| size(d))
            .sum();
        if others + size(document) > ROLE_POLICY_SIZE_LIMIT {
            return Err(IdentityError::LimitExceeded(format!(
                "Maximum policy size of {ROLE_POLICY_SIZE_LIMIT} bytes exceeded for role {}",
                role.name
            )));
        }
        store::put_policy(conn, &role.role_id, policy_name, document)?;
        id.invalidate(&role);
        Ok(())
    })
}

pub(crate) fn delete_role_policy(
    id: &Identity,
    caller: &Principal,
    role_name: &str,
    policy_name: &str,
) -> Result<(), IdentityError> {
    let role = existing_role(id, caller, "iam:DeleteRolePolicy", role_name)?;
    id.with_db(|conn| {
        if !store::delete_policy(conn, &role.role_id, policy_name)? {
            return Err(no_such_policy(policy_name));
        }
        id.invalidate(&role);
        Ok(())
    })
}

/// `<Role>...</Role>`.
fn write_role(x: &mut Xml, role: &Role, with_tags: bool) {
    x.elem("Role", |x| write_role_fields(x, role, with_tags));
}

/// The members of a `Role` structure, in the model's order. `ListRoles` leaves out tags, as IAM does.
fn write_role_fields(x: &mut Xml, role: &Role, with_tags: bool) {
    x.leaf("Path", &role.path);
    x.leaf("RoleName", &role.name);
    x.leaf("RoleId", &role.role_id);
    x.leaf("Arn", &role.arn);
    x.leaf("CreateDate", &iso8601(role.created));
    x.leaf("AssumeRolePolicyDocument", &url_encode(&role.trust_policy));
    x.leaf_opt("Description", role.description.as_deref());
    x.leaf_num("MaxSessionDuration", role.max_session_duration);
    if with_tags && !role.tags.is_empty() {
        x.elem("Tags", |x| {
            for (k, v) in &role.tags {
                x.elem("member", |x| {
                    x.leaf("Key", k);
                    x.leaf("Value", v);
                });
            }
        });
    }
}

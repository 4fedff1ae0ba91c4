//! Evaluation: identity policies, session intersection, trust policies.
//!
//! The hot path allocates nothing: patterns and condition values were compiled at parse time, context keys
//! were lower-cased when the policy was parsed, and policy variables resolve into a stack buffer.

use crate::context::Context;
use crate::document::{Effect, PolicyDocument, Statement};
use crate::principal::Caller;

/// One request to authorise.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The action, e.g. `s3:GetObject` (matched case-insensitively).
    pub action: &'a str,
    /// The resource ARN, e.g. `arn:aws:s3:::bucket/key` (matched case-sensitively).
    pub resource: &'a str,
    /// The condition keys of the request and of the caller.
    pub context: &'a Context,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// An `Allow` applied and no `Deny` did.
    Allow,
    /// A `Deny` applied; nothing can override it.
    ExplicitDeny,
    /// No statement allowed the request.
    ImplicitDeny,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }
}

/// What a statement is checked against.
#[derive(Clone, Copy)]
struct Target<'a> {
    /// Lower-cased when it is ASCII (then `action_fold` is false), as the compiled action patterns are.
    action: &'a str,
    action_fold: bool,
    /// `None` for trust policies: the resource is the role itself.
    resource: Option<&'a str>,
    caller: Caller<'a>,
    /// Trust policies grant nothing through a statement without a `Principal`.
    principal_required: bool,
    ctx: &'a Context,
}

impl Statement {
    /// Whether the statement applies to the target. Elements are checked cheapest first.
    ///
    /// When an element the target needs is absent (no `Resource` in an identity evaluation, no `Principal`
    /// in a trust evaluation) the statement fails closed: a `Deny` applies, an `Allow` does not.
    fn applies(&self, t: &Target<'_>) -> bool {
        let deny = self.effect == Effect::Deny;
        if !self.action.applies(t.action, t.ctx, t.action_fold) {
            return false;
        }
        let resource_ok = match (t.resource, &self.resource) {
            (None, _) => true,
            (Some(resource), Some(patterns)) => patterns.applies(resource, t.ctx, false),
            (Some(_), None) => deny,
        };
        if !resource_ok {
            return false;
        }
        let principal_ok = match &self.principal {
            Some((negated, principals)) => principals.contains(t.caller) != *negated,
            None => !t.principal_required || deny,
        };
        principal_ok && self.conditions.iter().all(|c| c.holds(t.ctx))
    }
}

/// Runs the statements of `policies`: explicit deny first, then any allow, else implicit deny.
fn decide<'p>(policies: impl IntoIterator<Item = &'p PolicyDocument>, target: &Target<'_>) -> Decision {
    let mut allowed = false;
    for policy in policies {
        for statement in &policy.statements {
            // Once something allows, only a Deny can change the outcome.
            if allowed && statement.effect == Effect::Allow {
                continue;
            }
            if statement.applies(target) {
                match statement.effect {
                    Effect::Deny => return Decision::ExplicitDeny,
                    Effect::Allow => allowed = true,
                }
            }
        }
    }
    if allowed { Decision::Allow } else { Decision::ImplicitDeny }
}

/// [`crate::keys::PRINCIPAL_ARN`] and [`crate::keys::PRINCIPAL_SERVICE_NAME`], lower-cased: no allocation.
const PRINCIPAL_ARN_LOWER: &str = "aws:principalarn";
const PRINCIPAL_SERVICE_NAME_LOWER: &str = "aws:principalservicename";

/// The caller for `Principal` matching in identity and resource policies: `aws:PrincipalArn`, else
/// `aws:PrincipalServiceName`, else anonymous.
fn caller_from(ctx: &Context) -> Caller<'_> {
    if let Some(arn) = ctx.single_lower(PRINCIPAL_ARN_LOWER) {
        Caller::Arn(arn)
    } else if let Some(service) = ctx.single_lower(PRINCIPAL_SERVICE_NAME_LOWER) {
        Caller::Service(service)
    } else {
        Caller::Anonymous
    }
}

/// Identity-based evaluation across several policies (a role's inline and attached policies): an explicit
/// `Deny` in any of them wins, then any `Allow`, else implicit deny.
///
/// A statement with a `Principal`/`NotPrincipal` (as in a bucket policy) is matched against the context's
/// `aws:PrincipalArn` (or `aws:PrincipalServiceName`).
pub fn evaluate(policies: &[&PolicyDocument], req: &Request<'_>) -> Decision {
    let caller = if policies.iter().any(|p| p.has_principals) { caller_from(req.context) } else { Caller::Anonymous };
    with_lower_action(req.action, |action, action_fold| {
        let target = Target {
            action,
            action_fold,
            resource: Some(req.resource),
            caller,
            principal_required: false,
            ctx: req.context,
        };
        decide(policies.iter().copied(), &target)
    })
}

/// Request actions up to this long are lower-cased on the stack.
const ACTION_BUF: usize = 128;

/// Runs `f` with the action lower-cased (and `false`: no case folding needed), or, for a long or non-ASCII
/// action, with the action as given (and `true`: compare case-insensitively).
fn with_lower_action<R>(action: &str, f: impl FnOnce(&str, bool) -> R) -> R {
    let mut buf = [0u8; ACTION_BUF];
    if action.is_ascii()
        && let Some(lower) = buf.get_mut(..action.len())
    {
        lower.copy_from_slice(action.as_bytes());
        lower.make_ascii_lowercase();
        if let Ok(lower) = std::str::from_utf8(lower) {
            return f(lower, false);
        }
    }
    f(action, true)
}

/// A role session: the role's policies and, when present, the session policy must both allow (their
/// intersection); an explicit `Deny` in either wins. A session policy can only narrow, never widen.
pub fn evaluate_session(role: &[&PolicyDocument], session: Option<&PolicyDocument>, req: &Request<'_>) -> Decision {
    let by_role = evaluate(role, req);
    let Some(session) = session else { return by_role };
    let by_session = evaluate(&[session], req);
    match (by_role, by_session) {
        (Decision::ExplicitDeny, _) | (_, Decision::ExplicitDeny) => Decision::ExplicitDeny,
        (Decision::Allow, Decision::Allow) => Decision::Allow,
        _ => Decision::ImplicitDeny,
    }
}

/// A trust-policy check: may `principal_arn` perform `action` (`sts:AssumeRole`, `sts:TagSession`) on the
/// role? `principal_arn` is an IAM ARN (or a 12-digit account id), or a service principal such as
/// `lambda.amazonaws.com`. `ctx` holds the request's condition keys (`aws:RequestTag/...`,
/// `sts:ExternalId`, ...). An explicit `Deny` wins; a statement without a `Principal` grants nothing; any
/// `Resource` in the statement is ignored (the resource is the role).
pub fn trusts(trust: &PolicyDocument, principal_arn: &str, action: &str, ctx: &Context) -> bool {
    with_lower_action(action, |action, action_fold| {
        let target = Target {
            action,
            action_fold,
            resource: None,
            caller: Caller::classify(principal_arn),
            principal_required: true,
            ctx,
        };
        decide([trust], &target) == Decision::Allow
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::keys;

    #[test]
    fn lower_cased_key_constants_agree() {
        assert_eq!(PRINCIPAL_ARN_LOWER, keys::PRINCIPAL_ARN.to_lowercase());
        assert_eq!(PRINCIPAL_SERVICE_NAME_LOWER, keys::PRINCIPAL_SERVICE_NAME.to_lowercase());
    }

    #[test]
    fn actions_are_lowered_on_the_stack_when_ascii_and_short() {
        assert_eq!(with_lower_action("S3:GetObject", |a, fold| (a.to_owned(), fold)), ("s3:getobject".into(), false));
        let long = format!("s3:{}", "X".repeat(ACTION_BUF));
        assert_eq!(with_lower_action(&long, |a, fold| (a.to_owned(), fold)), (long.clone(), true));
        assert_eq!(with_lower_action("s3:Ünïcode", |a, fold| (a.to_owned(), fold)), ("s3:Ünïcode".into(), true));
    }
}

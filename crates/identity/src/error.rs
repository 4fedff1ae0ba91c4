//! Errors, with the AWS error code and HTTP status each one is sent as.

/// What went wrong. [`IdentityError::aws_code`] and [`IdentityError::http_status`] give the wire form;
/// the `Display` text is the AWS-style message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// An unknown access key, a malformed or forged session token, or a token for another key.
    #[error("The security token included in the request is invalid.")]
    InvalidClientTokenId,
    /// A genuine session token past its expiry.
    #[error("The security token included in the request is expired")]
    ExpiredToken,
    /// A parameter failed a constraint; the message lists each failure, as AWS does.
    #[error("{0}")]
    Validation(String),
    /// The request body or its parameters could not be read.
    #[error("{0}")]
    MalformedQueryString(String),
    /// No `Action` parameter.
    #[error("Missing Action")]
    MissingAction,
    /// An action this service does not implement, or a wrong `Version`.
    #[error("Could not find operation {action} for version {version}")]
    InvalidAction {
        /// The action as given.
        action: String,
        /// The version as given.
        version: String,
    },
    /// A policy document that does not parse or breaks the rules of its kind.
    #[error("{0}")]
    MalformedPolicyDocument(String),
    /// The role (or role policy) does not exist.
    #[error("{0}")]
    NoSuchEntity(String),
    /// A role of that name exists already (names are case-insensitive).
    #[error("{0}")]
    EntityAlreadyExists(String),
    /// The role still has inline policies.
    #[error("{0}")]
    DeleteConflict(String),
    /// A size limit (aggregate inline policy size of a role).
    #[error("{0}")]
    LimitExceeded(String),
    /// A parameter Quarters does not support (permissions boundaries, managed session policies, MFA).
    #[error("{0}")]
    InvalidInput(String),
    /// The session policy and tags do not fit in a session token.
    #[error("{0}")]
    PackedPolicyTooLarge(String),
    /// The caller may not do this.
    #[error("{0}")]
    AccessDenied(String),
    /// The state store failed.
    #[error("identity store: {0}")]
    Storage(#[from] rusqlite::Error),
}

impl IdentityError {
    /// The AWS error code (`<Code>`).
    pub fn aws_code(&self) -> &'static str {
        match self {
            IdentityError::InvalidClientTokenId => "InvalidClientTokenId",
            IdentityError::ExpiredToken => "ExpiredToken",
            IdentityError::Validation(_) => "ValidationError",
            IdentityError::MalformedQueryString(_) => "MalformedQueryString",
            IdentityError::MissingAction => "MissingAction",
            IdentityError::InvalidAction { .. } => "InvalidAction",
            IdentityError::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            IdentityError::NoSuchEntity(_) => "NoSuchEntity",
            IdentityError::EntityAlreadyExists(_) => "EntityAlreadyExists",
            IdentityError::DeleteConflict(_) => "DeleteConflict",
            IdentityError::LimitExceeded(_) => "LimitExceeded",
            IdentityError::InvalidInput(_) => "InvalidInput",
            IdentityError::PackedPolicyTooLarge(_) => "PackedPolicyTooLarge",
            IdentityError::AccessDenied(_) => "AccessDenied",
            IdentityError::Storage(_) => "ServiceFailure",
        }
    }

    /// The HTTP status the error is sent with.
    pub fn http_status(&self) -> u16 {
        match self {
            IdentityError::InvalidClientTokenId | IdentityError::AccessDenied(_) => 403,
            IdentityError::NoSuchEntity(_) => 404,
            IdentityError::EntityAlreadyExists(_)
            | IdentityError::DeleteConflict(_)
            | IdentityError::LimitExceeded(_) => 409,
            IdentityError::Storage(_) => 500,
            _ => 400,
        }
    }

    /// The message sent to the client. Storage failures are not described to callers.
    pub fn client_message(&self) -> String {
        match self {
            IdentityError::Storage(_) => "An internal error occurred.".to_owned(),
            other => other.to_string(),
        }
    }

    /// Whether the client is at fault (`<Type>Sender</Type>`) rather than the server (`Receiver`).
    pub fn is_sender_fault(&self) -> bool {
        self.http_status() < 500
    }
}

/// Collects constraint failures into AWS's `N validation errors detected: ...` message.
#[derive(Debug, Default)]
pub(crate) struct Checks {
    errors: Vec<String>,
}

impl Checks {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records a failure of `member` (lowerCamel, as AWS names it) holding `value`.
    pub(crate) fn fail(&mut self, member: &str, value: Option<&str>, constraint: &str) {
        let shown = match value {
            None => "null".to_owned(),
            Some(v) if v.chars().count() > 128 => format!("'{}...'", v.chars().take(128).collect::<String>()),
            Some(v) => format!("'{v}'"),
        };
        self.errors.push(format!("Value {shown} at '{member}' failed to satisfy constraint: {constraint}"));
    }

    /// Fails when a required value is missing.
    pub(crate) fn required<'v>(&mut self, member: &str, value: Option<&'v str>) -> Option<&'v str> {
        if value.is_none() {
            self.fail(member, None, "Member must not be null");
        }
        value
    }

    /// Length (in characters) within `min..=max`.
    pub(crate) fn length(&mut self, member: &str, value: Option<&str>, min: usize, max: usize) {
        let Some(v) = value else { return };
        let n = v.chars().count();
        if n < min {
            self.fail(member, value, &format!("Member must have length greater than or equal to {min}"));
        } else if n > max {
            self.fail(member, value, &format!("Member must have length less than or equal to {max}"));
        }
    }

    /// Every character satisfies `ok`; `pattern` is the regular expression AWS documents.
    pub(crate) fn chars(&mut self, member: &str, value: Option<&str>, pattern: &str, ok: impl Fn(char) -> bool) {
        if let Some(v) = value
            && !v.chars().all(ok)
        {
            self.fail(member, value, &format!("Member must satisfy regular expression pattern: {pattern}"));
        }
    }

    /// An optional integer within `min..=max`.
    pub(crate) fn integer(&mut self, member: &str, value: Option<&str>, min: u64, max: u64) -> Option<u64> {
        let v = value?;
        match v.parse::<u64>() {
            Ok(n) if n < min => {
                self.fail(member, value, &format!("Member must have value greater than or equal to {min}"));
                None
            }
            Ok(n) if n > max => {
                self.fail(member, value, &format!("Member must have value less than or equal to {max}"));
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                self.fail(member, value, "Member must be an integer");
                None
            }
        }
    }

    pub(crate) fn finish(self) -> Result<(), IdentityError> {
        match self.errors.len() {
            0 => Ok(()),
            1 => Err(IdentityError::Validation(format!("1 validation error detected: {}", self.errors[0]))),
            n => Err(IdentityError::Validation(format!("{n} validation errors detected: {}", self.errors.join("; ")))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_collect_aws_style_messages() {
        let mut c = Checks::new();
        c.required("roleName", None);
        c.length("roleSessionName", Some("x"), 2, 64);
        let msg = c.finish().expect_err("two failures").to_string();
        assert_eq!(
            msg,
            "2 validation errors detected: Value null at 'roleName' failed to satisfy constraint: Member must not be \
             null; Value 'x' at 'roleSessionName' failed to satisfy constraint: Member must have length greater than \
             or equal to 2"
        );
        let mut c = Checks::new();
        assert_eq!(c.integer("durationSeconds", Some("899"), 900, 43200), None);
        assert_eq!(c.integer("durationSeconds", Some("900"), 900, 43200), Some(900));
        assert!(c.finish().expect_err("one failure").to_string().starts_with("1 validation error detected"));
        assert!(Checks::new().finish().is_ok());
    }

    #[test]
    fn codes_and_statuses() {
        assert_eq!(IdentityError::AccessDenied(String::new()).http_status(), 403);
        assert_eq!(IdentityError::NoSuchEntity(String::new()).http_status(), 404);
        assert_eq!(IdentityError::DeleteConflict(String::new()).http_status(), 409);
        assert_eq!(IdentityError::ExpiredToken.aws_code(), "ExpiredToken");
        assert_eq!(IdentityError::ExpiredToken.http_status(), 400);
        assert_eq!(IdentityError::Validation(String::new()).aws_code(), "ValidationError");
    }
}

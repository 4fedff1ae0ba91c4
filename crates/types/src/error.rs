use std::fmt;

/// How a validation failure is reported on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationKind {
    /// A constraint of the API model (length, pattern, enum): `ValidationException`.
    Model,
    /// A service rule: `InvalidParameterValueException`.
    InvalidParameter,
}

/// A value that failed a rule. The message is the full, user-facing text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    pub kind: ValidationKind,
    pub message: String,
}

impl ValidationError {
    pub fn model(message: impl Into<String>) -> Self {
        Self { kind: ValidationKind::Model, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: ValidationKind::InvalidParameter, message: message.into() }
    }

    /// AWS's wording for a failed model constraint on one member.
    pub fn constraint(value: &str, member: &str, constraint: &str) -> Self {
        Self::model(format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ))
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

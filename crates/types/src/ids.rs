use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A tenant id as sent in `X-Amz-Tenant-Id`: 1 to 256 characters of `[a-zA-Z0-9._:/=+\-@ ]`.
///
/// It is untrusted input: it may contain `/`, spaces, `..` and `:`. It is never used in a path, a
/// cgroup name or a log stream name; only in headers, log records and in-memory keys.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    pub const MAX_LEN: usize = 256;
    pub const PATTERN: &'static str = r"[a-zA-Z0-9\._:\/=+\-@ ]+";

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let shown = shorten(value);
        if value.is_empty() {
            return Err(ValidationError::constraint(
                &shown,
                "tenantId",
                "Member must have length greater than or equal to 1",
            ));
        }
        if value.chars().count() > Self::MAX_LEN {
            return Err(ValidationError::constraint(
                &shown,
                "tenantId",
                "Member must have length less than or equal to 256",
            ));
        }
        let ok = value.chars().all(|c| c.is_ascii_alphanumeric() || "._:/=+-@ ".contains(c));
        if !ok {
            return Err(ValidationError::constraint(
                &shown,
                "tenantId",
                &format!("Member must satisfy regular expression pattern: {}", Self::PATTERN),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TenantId> for String {
    fn from(value: TenantId) -> Self {
        value.0
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Echo a rejected value in an error message without echoing kilobytes of it.
fn shorten(value: &str) -> String {
    if value.chars().count() > 300 { value.chars().take(300).collect::<String>() + "..." } else { value.to_owned() }
}

/// A bare function name: 1 to 64 characters of `[a-zA-Z0-9-_]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

impl FunctionName {
    pub const PATTERN: &'static str = r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?";

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.is_empty() {
            return Err(ValidationError::constraint(
                value,
                "functionName",
                "Member must have length greater than or equal to 1",
            ));
        }
        if value.len() > 64 {
            return Err(ValidationError::constraint(
                &shorten(value),
                "functionName",
                "Member must have length less than or equal to 64",
            ));
        }
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ValidationError::constraint(
                &shorten(value),
                "functionName",
                &format!("Member must satisfy regular expression pattern: {}", Self::PATTERN),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FunctionName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<FunctionName> for String {
    fn from(value: FunctionName) -> Self {
        value.0
    }
}

impl fmt::Debug for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A version (`$LATEST`, `1`, `2`, ...) or an alias name.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Qualifier {
    Latest,
    Version(u64),
    Alias(String),
}

impl Qualifier {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value == "$LATEST" {
            return Ok(Self::Latest);
        }
        if value.is_empty() || value.len() > 128 {
            return Err(ValidationError::constraint(
                &shorten(value),
                "qualifier",
                "Member must have length less than or equal to 128",
            ));
        }
        if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ValidationError::constraint(
                &shorten(value),
                "qualifier",
                r"Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
            ));
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            return value
                .parse()
                .map(Self::Version)
                .map_err(|_| ValidationError::invalid(format!("Invalid version: {value}")));
        }
        Ok(Self::Alias(value.to_owned()))
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("$LATEST"),
            Self::Version(n) => write!(f, "{n}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// Alias names: 1 to 128 of `[a-zA-Z0-9-_]`, not all digits.
pub fn validate_alias_name(value: &str) -> Result<(), ValidationError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !value.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::constraint(
            &shorten(value),
            "name",
            r"Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)",
        ))
    }
}

/// An execution environment's id: 128 random bits, printed as 32 hex digits. It names the
/// environment's log stream, run directory and cgroup; tenant ids never do.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvId(u128);

impl EnvId {
    pub fn from_random(bits: u128) -> Self {
        Self(bits)
    }

    /// Parse the 32-hex-digit form (as found in a run directory or cgroup name).
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Display for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for EnvId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_follow_the_model() {
        for ok in ["BlueTenant", "a", "a/b c:d=e+f-g@h.i_j", "../..", &"x".repeat(256)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(257);
        let cases = [
            ("", "greater than or equal to 1"),
            (&long, "less than or equal to 256"),
            ("a#b", "pattern"),
            ("é", "pattern"),
            ("a\nb", "pattern"),
        ];
        for (bad, why) in cases {
            let err = TenantId::parse(bad).expect_err(bad);
            assert!(err.message.contains(why), "{}", err.message);
            assert!(err.message.contains("'tenantId'"));
        }
    }

    #[test]
    fn function_names() {
        assert!(FunctionName::parse("my-fn_1").is_ok());
        assert!(FunctionName::parse(&"a".repeat(64)).is_ok());
        let err = FunctionName::parse(&"a".repeat(65)).expect_err("too long");
        assert!(err.message.ends_with("Member must have length less than or equal to 64"));
        assert!(FunctionName::parse("a.b").is_err());
        assert!(FunctionName::parse("a/b").is_err());
    }

    #[test]
    fn qualifiers_and_aliases() {
        assert_eq!(Qualifier::parse("$LATEST"), Ok(Qualifier::Latest));
        assert_eq!(Qualifier::parse("12"), Ok(Qualifier::Version(12)));
        assert_eq!(Qualifier::parse("prod"), Ok(Qualifier::Alias("prod".into())));
        assert!(Qualifier::parse("a b").is_err());
        assert!(validate_alias_name("live").is_ok());
        assert!(validate_alias_name("123").is_err());
    }

    #[test]
    fn env_ids_round_trip() {
        let id = EnvId::from_random(0xabc);
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(EnvId::parse_hex(&id.to_string()), Some(id));
        assert_eq!(EnvId::parse_hex("../../etc"), None);
    }
}

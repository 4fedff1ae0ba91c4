use crate::error::ValidationError;
use crate::ids::{FunctionName, Qualifier};

/// The region and account Quarters presents itself as, and the ARNs built from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arns {
    pub region: String,
    pub account: String,
}

impl Default for Arns {
    fn default() -> Self {
        Self { region: "us-east-1".into(), account: "000000000000".into() }
    }
}

impl Arns {
    pub fn function(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:function:{}", self.region, self.account, name)
    }

    pub fn qualified(&self, name: &str, qualifier: &str) -> String {
        format!("{}:{}", self.function(name), qualifier)
    }

    pub fn runtime_version(&self, runtime: &str) -> String {
        format!("arn:aws:lambda:{}::runtime:{}", self.region, runtime)
    }
}

/// A function named in a request path: a name, a full ARN or a partial ARN, with an optional
/// qualifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: FunctionName,
    pub qualifier: Option<Qualifier>,
}

impl FunctionRef {
    /// Parse the `{FunctionName}` of a request path. `explicit` is the `Qualifier` query
    /// parameter, which must agree with a qualifier carried in the name.
    pub fn parse(value: &str, explicit: Option<&str>) -> Result<Self, ValidationError> {
        if value.len() > 256 {
            return Err(ValidationError::constraint(
                &value.chars().take(300).collect::<String>(),
                "functionName",
                "Member must have length less than or equal to 256",
            ));
        }
        let parts: Vec<&str> = value.split(':').collect();
        let (name, qual) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] if *name != "function" => (*name, Some(*q)),
            ["function", name] => (*name, None),
            ["function", name, q] => (*name, Some(*q)),
            [acct, "function", name] if is_account(acct) => (*name, None),
            [acct, "function", name, q] if is_account(acct) => (*name, Some(*q)),
            ["arn", _partition, "lambda", _region, acct, "function", name] if is_account(acct) => (*name, None),
            ["arn", _partition, "lambda", _region, acct, "function", name, q] if is_account(acct) => (*name, Some(*q)),
            _ => {
                return Err(ValidationError::constraint(
                    value,
                    "functionName",
                    &format!("Member must satisfy regular expression pattern: {}", FunctionName::PATTERN),
                ));
            }
        };
        let name = FunctionName::parse(name)?;
        let from_name = qual.map(Qualifier::parse).transpose()?;
        let from_param = explicit.filter(|q| !q.is_empty()).map(Qualifier::parse).transpose()?;
        let qualifier = match (from_name, from_param) {
            (Some(a), Some(b)) if a != b => {
                return Err(ValidationError::invalid(
                    "The derived qualifier from the function name does not match the specified qualifier.",
                ));
            }
            (a, b) => a.or(b),
        };
        Ok(Self { name, qualifier })
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_arns_and_partial_arns() {
        let r = FunctionRef::parse("f", None).expect("name");
        assert_eq!((r.name.as_str(), r.qualifier), ("f", None));
        let r = FunctionRef::parse("f:prod", None).expect("name:alias");
        assert_eq!(r.qualifier, Some(Qualifier::Alias("prod".into())));
        let r = FunctionRef::parse("123456789012:function:f:3", None).expect("partial");
        assert_eq!((r.name.as_str(), r.qualifier), ("f", Some(Qualifier::Version(3))));
        let r = FunctionRef::parse("arn:aws:lambda:us-east-1:000000000000:function:f", Some("$LATEST")).expect("arn");
        assert_eq!((r.name.as_str(), r.qualifier), ("f", Some(Qualifier::Latest)));
        assert!(FunctionRef::parse("f:1", Some("2")).is_err());
        assert!(FunctionRef::parse("arn:aws:s3:::bucket", None).is_err());
        assert!(FunctionRef::parse("a/b", None).is_err());
    }
}

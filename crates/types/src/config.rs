use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::limits;

/// The runtimes Quarters runs. Anything else is refused with AWS's error.
///
/// Serialised as AWS's identifier (`provided.al2023`, `python3.12`, `nodejs22.x`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    ProvidedAl2023,
    ProvidedAl2,
    /// `python3.<minor>`.
    Python(u8),
    /// `nodejs<major>.x`.
    Node(u8),
}

/// The language a runtime runs, which decides how its environments start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeFamily {
    /// The function brings its own runtime client as `bootstrap`.
    Provided,
    Python,
    Node,
}

impl Runtime {
    /// Every identifier Quarters accepts, in AWS's order.
    pub const ALL: &'static [Runtime] = &[
        Runtime::ProvidedAl2023,
        Runtime::ProvidedAl2,
        Runtime::Python(9),
        Runtime::Python(10),
        Runtime::Python(11),
        Runtime::Python(12),
        Runtime::Python(13),
        Runtime::Python(14),
        Runtime::Node(18),
        Runtime::Node(20),
        Runtime::Node(22),
        Runtime::Node(24),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProvidedAl2023 => "provided.al2023",
            Self::ProvidedAl2 => "provided.al2",
            Self::Python(9) => "python3.9",
            Self::Python(10) => "python3.10",
            Self::Python(11) => "python3.11",
            Self::Python(12) => "python3.12",
            Self::Python(13) => "python3.13",
            Self::Python(14) => "python3.14",
            Self::Node(18) => "nodejs18.x",
            Self::Node(20) => "nodejs20.x",
            Self::Node(22) => "nodejs22.x",
            Self::Node(24) => "nodejs24.x",
            // Only `parse` makes runtimes, and it makes only the ones above.
            Self::Python(_) => "python3",
            Self::Node(_) => "nodejs",
        }
    }

    pub fn family(self) -> RuntimeFamily {
        match self {
            Self::ProvidedAl2023 | Self::ProvidedAl2 => RuntimeFamily::Provided,
            Self::Python(_) => RuntimeFamily::Python,
            Self::Node(_) => RuntimeFamily::Node,
        }
    }

    /// The language version the identifier names (`3.12`, `22`), for managed runtimes.
    pub fn language_version(self) -> Option<String> {
        match self {
            Self::ProvidedAl2023 | Self::ProvidedAl2 => None,
            Self::Python(minor) => Some(format!("3.{minor}")),
            Self::Node(major) => Some(major.to_string()),
        }
    }

    /// Identifiers AWS Lambda knows but Quarters does not run (yet).
    const KNOWN_ELSEWHERE: &'static [&'static str] = &[
        "java8.al2",
        "java11",
        "java17",
        "java21",
        "java25",
        "dotnet8",
        "dotnet10",
        "ruby3.2",
        "ruby3.3",
        "ruby3.4",
        "provided",
    ];

    /// Identifiers Lambda no longer accepts for new functions or updates.
    const DEPRECATED: &'static [&'static str] = &[
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "nodejs",
        "nodejs4.3",
        "nodejs4.3-edge",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "java8",
        "dotnetcore1.0",
        "dotnetcore2.0",
        "dotnetcore2.1",
        "dotnetcore3.1",
        "dotnet6",
        "dotnet7",
        "go1.x",
        "ruby2.5",
        "ruby2.7",
    ];

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if let Some(r) = Self::ALL.iter().find(|r| r.as_str() == value) {
            return Ok(*r);
        }
        if Self::DEPRECATED.contains(&value) {
            return Err(ValidationError::invalid(format!(
                "The runtime parameter of {value} is no longer supported for creating or updating AWS Lambda functions. We recommend you use a supported runtime while creating or updating functions."
            )));
        }
        if Self::KNOWN_ELSEWHERE.contains(&value) {
            return Err(ValidationError::invalid(format!(
                "The runtime parameter of {value} is not supported by this Quarters server. Supported runtimes: {}.",
                Self::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        let mut all: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
        all.extend(Self::KNOWN_ELSEWHERE);
        all.extend(Self::DEPRECATED);
        Err(ValidationError::constraint(
            value,
            "runtime",
            &format!("Member must satisfy enum value set: [{}]", all.join(", ")),
        ))
    }
}

impl Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Runtime::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LogFormat {
    #[default]
    Text,
    #[serde(rename = "JSON")]
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingConfig {
    pub log_format: LogFormat,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TenantIsolationMode {
    #[serde(rename = "PER_TENANT")]
    PerTenant,
}

/// Everything that defines how one version of a function runs. `$LATEST` is mutable; a
/// published version is a frozen copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub name: String,
    pub runtime: Runtime,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub timeout_s: u32,
    pub memory_mb: u32,
    pub ephemeral_mb: u32,
    pub environment: BTreeMap<String, String>,
    pub architectures: Vec<String>,
    pub logging: LoggingConfig,
    pub tenancy: Option<TenantIsolationMode>,
    pub tracing_mode: String,
    /// Layer versions, in order: unpacked one over the other under `/opt`.
    #[serde(default)]
    pub layers: Vec<LayerRef>,
    /// For `PackageType: Image`: the image and how to run it (then `runtime` and `handler` are
    /// not used).
    #[serde(default)]
    pub image: Option<ImageSettings>,
}

/// A container-image function's image: what was asked for, what it resolved to, and the
/// image's own run settings with the function's `ImageConfig` overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSettings {
    pub uri: String,
    /// `registry/repository@sha256:...`
    pub resolved_uri: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// `ImageConfig` overrides.
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub working_directory: Option<String>,
    /// What the image's own config says.
    pub image_entrypoint: Vec<String>,
    pub image_cmd: Vec<String>,
    pub image_working_dir: Option<String>,
    pub image_env: Vec<(String, String)>,
}

impl ImageSettings {
    /// The command line: the entry point, then the command (each the override if given).
    pub fn command_line(&self) -> Vec<String> {
        let mut out = self.entrypoint.clone().unwrap_or_else(|| self.image_entrypoint.clone());
        out.extend(self.command.clone().unwrap_or_else(|| self.image_cmd.clone()));
        out
    }

    pub fn working_dir(&self) -> String {
        self.working_directory.clone().or_else(|| self.image_working_dir.clone()).unwrap_or_else(|| "/".into())
    }
}

/// A layer version a function uses: its ARN and its content (kept even if the version is deleted,
/// as on Lambda).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub arn: String,
    pub code: CodeInfo,
}

impl FunctionConfig {
    pub fn validate_memory(mb: i64) -> Result<u32, ValidationError> {
        if mb < i64::from(limits::MEMORY_MIN_MB) {
            return Err(ValidationError::constraint(
                &mb.to_string(),
                "memorySize",
                "Member must have value greater than or equal to 128",
            ));
        }
        if mb > i64::from(limits::MEMORY_MAX_MB) {
            return Err(ValidationError::invalid(format!(
                "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal to {}",
                limits::MEMORY_MAX_MB
            )));
        }
        Ok(mb as u32)
    }

    pub fn validate_timeout(s: i64) -> Result<u32, ValidationError> {
        if s < i64::from(limits::TIMEOUT_MIN_S) {
            return Err(ValidationError::constraint(
                &s.to_string(),
                "timeout",
                "Member must have value greater than or equal to 1",
            ));
        }
        if s > i64::from(limits::TIMEOUT_MAX_S) {
            return Err(ValidationError::invalid(format!(
                "'Timeout' value failed to satisfy constraint: Member must have value less than or equal to {}",
                limits::TIMEOUT_MAX_S
            )));
        }
        Ok(s as u32)
    }

    pub fn validate_ephemeral(mb: i64) -> Result<u32, ValidationError> {
        if !(i64::from(limits::EPHEMERAL_MIN_MB)..=i64::from(limits::EPHEMERAL_MAX_MB)).contains(&mb) {
            return Err(ValidationError::constraint(
                &mb.to_string(),
                "ephemeralStorage.size",
                "Member must have value between 512 and 10240",
            ));
        }
        Ok(mb as u32)
    }

    pub fn validate_description(d: &str) -> Result<(), ValidationError> {
        if d.chars().count() > limits::DESCRIPTION_MAX {
            return Err(ValidationError::constraint(
                &d.chars().take(300).collect::<String>(),
                "description",
                "Member must have length less than or equal to 256",
            ));
        }
        Ok(())
    }

    pub fn validate_handler(h: &str) -> Result<(), ValidationError> {
        if h.len() > limits::HANDLER_MAX || h.is_empty() || h.chars().any(char::is_whitespace) {
            return Err(ValidationError::constraint(
                h,
                "handler",
                r"Member must satisfy regular expression pattern: [^\s]+ and have length less than or equal to 128",
            ));
        }
        Ok(())
    }

    pub fn validate_role(role: &str) -> Result<(), ValidationError> {
        // arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+
        let ok = (|| {
            let rest = role.strip_prefix("arn:")?;
            let (partition, rest) = rest.split_once(":iam::")?;
            if !(partition.is_empty() || partition.starts_with("aws")) {
                return None;
            }
            let (acct, rest) = rest.split_once(":role")?;
            let name = rest.strip_prefix('/').unwrap_or(rest);
            let good_acct = acct.len() == 12 && acct.bytes().all(|b| b.is_ascii_digit());
            let good_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@-/".contains(c));
            (good_acct && good_name).then_some(())
        })();
        ok.ok_or_else(|| {
            ValidationError::constraint(
                role,
                "role",
                r"Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+",
            )
        })
    }

    pub fn validate_environment(vars: &BTreeMap<String, String>) -> Result<(), ValidationError> {
        let mut total = 0;
        for (k, v) in vars {
            let mut chars = k.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
            let rest_ok = k.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !first_ok || !rest_ok {
                return Err(ValidationError::constraint(
                    k,
                    "environment.variables",
                    "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]",
                ));
            }
            if RESERVED_ENV.contains(&k.as_str()) {
                return Err(ValidationError::invalid(format!(
                    "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {k}"
                )));
            }
            total += k.len() + v.len();
        }
        if total > limits::ENV_VARS_MAX_BYTES {
            return Err(ValidationError::invalid(
                "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: (environment variables total size)",
            ));
        }
        Ok(())
    }

    pub fn validate_log_group(g: &str) -> Result<(), ValidationError> {
        let ok = !g.is_empty() && g.len() <= 512 && g.chars().all(|c| c.is_ascii_alphanumeric() || "._-/#".contains(c));
        if ok {
            Ok(())
        } else {
            Err(ValidationError::constraint(
                g,
                "loggingConfig.logGroup",
                r"Member must satisfy regular expression pattern: [\.\-_/#A-Za-z0-9]+",
            ))
        }
    }

    pub fn default_log_group(name: &str) -> String {
        format!("/aws/lambda/{name}")
    }
}

/// Variables Lambda sets itself; a function may not override them.
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// A stored code package, content-addressed by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeInfo {
    /// Hex SHA-256 of the zip: the package's storage key.
    pub sha256_hex: String,
    /// Base64 SHA-256 of the zip, as `CodeSha256` on the wire.
    pub sha256_b64: String,
    pub size: u64,
}

/// One version of a function (`$LATEST` or a published number) as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: String,
    pub config: FunctionConfig,
    pub code: CodeInfo,
    pub revision_id: String,
    pub last_modified_ms: u64,
    /// Bumped on every change of code or configuration; environments of an older generation
    /// are never reused.
    pub generation: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes() {
        assert_eq!(Runtime::parse("provided.al2023"), Ok(Runtime::ProvidedAl2023));
        let e = Runtime::parse("cobol85").expect_err("unknown");
        assert!(e.message.contains("enum value set"));
        let e = Runtime::parse("java21").expect_err("elsewhere");
        assert_eq!(e.kind, crate::ValidationKind::InvalidParameter);
        for r in Runtime::ALL {
            assert_eq!(Runtime::parse(r.as_str()), Ok(*r), "{r:?}");
            let json = serde_json::to_string(r).expect("ser");
            assert_eq!(serde_json::from_str::<Runtime>(&json).expect("de"), *r);
        }
        assert_eq!(Runtime::parse("python3.12").map(Runtime::family), Ok(RuntimeFamily::Python));
        assert_eq!(Runtime::parse("nodejs24.x").map(Runtime::language_version), Ok(Some("24".into())));
        let e = Runtime::parse("python3.8").expect_err("deprecated");
        assert!(e.message.contains("no longer supported"), "{}", e.message);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(FunctionConfig::validate_memory(128).is_ok());
        assert!(FunctionConfig::validate_memory(127).is_err());
        assert!(FunctionConfig::validate_memory(10_241).is_err());
        assert!(FunctionConfig::validate_timeout(901).is_err());
        assert!(FunctionConfig::validate_ephemeral(511).is_err());
        assert!(FunctionConfig::validate_role("arn:aws:iam::123456789012:role/lambda-role").is_ok());
        assert!(FunctionConfig::validate_role("nope").is_err());
        let mut env = BTreeMap::new();
        env.insert("GOOD_KEY".to_string(), "v".to_string());
        assert!(FunctionConfig::validate_environment(&env).is_ok());
        env.insert("AWS_REGION".to_string(), "x".to_string());
        assert!(FunctionConfig::validate_environment(&env).is_err());
        let mut big = BTreeMap::new();
        big.insert("BIG".to_string(), "x".repeat(5000));
        assert!(FunctionConfig::validate_environment(&big).expect_err("big").message.contains("4KB"));
    }
}

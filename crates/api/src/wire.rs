//! The Lambda API's JSON shapes, and their conversion to and from the domain types.

use std::collections::BTreeMap;

use base64::Engine;
use quarters_control::{AliasRecord, FunctionEntry, NewFunction};
use quarters_types::time::last_modified;
use quarters_types::{
    Arns, FunctionConfig, FunctionName, ImageSettings, LogFormat, LoggingConfig, Runtime, TenantIsolationMode,
    VersionRecord, limits,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Parse a JSON body into `T`, with an AWS-shaped error naming what was wrong.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_content(format!("Could not parse request body into json: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentIn {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralIn {
    pub size: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingIn {
    pub log_format: Option<String>,
    pub application_log_level: Option<String>,
    pub system_log_level: Option<String>,
    pub log_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TenancyIn {
    pub tenant_isolation_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingIn {
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionIn {
    pub function_name: Option<String>,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: Option<CodeIn>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub publish: Option<bool>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<EphemeralIn>,
    pub architectures: Option<Vec<String>>,
    pub logging_config: Option<LoggingIn>,
    pub tenancy_config: Option<TenancyIn>,
    pub tracing_config: Option<TracingIn>,
    pub package_type: Option<String>,
    pub image_config: Option<ImageConfigIn>,
    pub layers: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfigIn {
    pub entry_point: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub working_directory: Option<String>,
}

impl ImageConfigIn {
    /// Onto an image function's settings (an empty list or string clears an override).
    pub fn apply(self, s: &mut ImageSettings) -> Result<(), ApiError> {
        if let Some(e) = self.entry_point {
            s.entrypoint = (!e.is_empty()).then_some(e);
        }
        if let Some(c) = self.command {
            s.command = (!c.is_empty()).then_some(c);
        }
        if let Some(w) = self.working_directory {
            if !w.is_empty() && !w.starts_with('/') {
                return Err(ApiError::invalid(format!("WorkingDirectory must be an absolute path, and {w} is not.")));
            }
            s.working_directory = (!w.is_empty()).then_some(w);
        }
        Ok(())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateConfigIn {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<EnvironmentIn>,
    pub ephemeral_storage: Option<EphemeralIn>,
    pub logging_config: Option<LoggingIn>,
    pub tracing_config: Option<TracingIn>,
    pub tenancy_config: Option<Value>,
    pub revision_id: Option<String>,
    pub layers: Option<Vec<String>>,
    pub image_config: Option<ImageConfigIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateCodeIn {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishIn {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingIn {
    pub additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasIn {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingIn>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProvisionedIn {
    pub provisioned_concurrent_executions: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConcurrencyIn {
    pub reserved_concurrent_executions: Option<i64>,
}

fn required<T>(v: Option<T>, member: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "ValidationException",
            format!("1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"),
        )
    })
}

pub fn decode_zip(b64: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
        ApiError::invalid("Could not unzip uploaded file. Please check your file, then try to upload again.")
    })
}

fn unsupported(what: &str) -> ApiError {
    ApiError::invalid(format!("{what} is not supported by this Quarters server yet."))
}

fn logging(l: Option<LoggingIn>, name: &str, base: Option<&LoggingConfig>) -> Result<LoggingConfig, ApiError> {
    let mut out = base.cloned().unwrap_or(LoggingConfig {
        log_format: LogFormat::Text,
        application_log_level: None,
        system_log_level: None,
        log_group: FunctionConfig::default_log_group(name),
    });
    let Some(l) = l else { return Ok(out) };
    if let Some(f) = l.log_format {
        out.log_format = match f.as_str() {
            "Text" => LogFormat::Text,
            "JSON" => LogFormat::Json,
            other => {
                return Err(quarters_types::ValidationError::constraint(
                    other,
                    "loggingConfig.logFormat",
                    "Member must satisfy enum value set: [JSON, Text]",
                )
                .into());
            }
        };
    }
    const APP: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    const SYS: &[&str] = &["DEBUG", "INFO", "WARN"];
    if let Some(level) = l.application_log_level {
        if !APP.contains(&level.as_str()) {
            return Err(ApiError::from(quarters_types::ValidationError::constraint(
                &level,
                "loggingConfig.applicationLogLevel",
                "Member must satisfy enum value set: [TRACE, DEBUG, INFO, WARN, ERROR, FATAL]",
            )));
        }
        out.application_log_level = Some(level);
    }
    if let Some(level) = l.system_log_level {
        if !SYS.contains(&level.as_str()) {
            return Err(ApiError::from(quarters_types::ValidationError::constraint(
                &level,
                "loggingConfig.systemLogLevel",
                "Member must satisfy enum value set: [DEBUG, INFO, WARN]",
            )));
        }
        out.system_log_level = Some(level);
    }
    if out.log_format == LogFormat::Text {
        if out.application_log_level.is_some() || out.system_log_level.is_some() {
            return Err(ApiError::invalid(
                "LogLevel is not supported when LogFormat is set to \"Text\". Remove LogLevel from your request or change the LogFormat to \"JSON\" and try again.",
            ));
        }
    } else {
        out.application_log_level.get_or_insert_with(|| "INFO".into());
        out.system_log_level.get_or_insert_with(|| "INFO".into());
    }
    if let Some(g) = l.log_group {
        FunctionConfig::validate_log_group(&g)?;
        out.log_group = g;
    }
    Ok(out)
}

fn tracing_mode(t: Option<TracingIn>) -> Result<Option<String>, ApiError> {
    match t.and_then(|t| t.mode) {
        None => Ok(None),
        Some(m) if m == "Active" || m == "PassThrough" => Ok(Some(m)),
        Some(m) => Err(quarters_types::ValidationError::constraint(
            &m,
            "tracingConfig.mode",
            "Member must satisfy enum value set: [Active, PassThrough]",
        )
        .into()),
    }
}

impl CreateFunctionIn {
    pub fn into_new_function(self) -> Result<NewFunction, ApiError> {
        let name = FunctionName::parse(&required(self.function_name, "functionName")?)?.as_str().to_owned();
        let is_image = self.package_type.as_deref() == Some("Image");
        if self.package_type.as_deref().is_some_and(|p| p != "Zip" && p != "Image") {
            return Err(quarters_types::ValidationError::constraint(
                self.package_type.as_deref().unwrap_or(""),
                "packageType",
                "Member must satisfy enum value set: [Zip, Image]",
            )
            .into());
        }
        let role = required(self.role, "role")?;
        FunctionConfig::validate_role(&role)?;
        let code = required(self.code, "code")?;
        if code.s3_bucket.is_some() {
            return Err(unsupported("Code from S3"));
        }
        let (zip, runtime, handler, image) = if is_image {
            if self.runtime.is_some() || self.handler.is_some() || self.layers.as_ref().is_some_and(|l| !l.is_empty()) {
                return Err(ApiError::invalid(
                    "Please don't provide Handler or Runtime or Layer when the intended function PackageType is Image.",
                ));
            }
            let uri = code.image_uri.filter(|u| !u.is_empty()).ok_or_else(|| {
                ApiError::invalid("Please provide ImageUri when the intended function PackageType is Image.")
            })?;
            if code.zip_file.is_some() {
                return Err(ApiError::invalid(
                    "Please don't provide ZipFile when the intended function PackageType is Image.",
                ));
            }
            let mut settings = ImageSettings { uri, ..Default::default() };
            if let Some(ic) = self.image_config {
                ic.apply(&mut settings)?;
            }
            (Vec::new(), Runtime::ProvidedAl2023, String::new(), Some(settings))
        } else {
            if code.image_uri.is_some() {
                return Err(ApiError::invalid(
                    "Please don't provide ImageUri when the intended function PackageType is Zip.",
                ));
            }
            let zip = decode_zip(
                &code.zip_file.ok_or_else(|| ApiError::invalid("Please provide a source for function code."))?,
            )?;
            let runtime = runtime_here(&required(self.runtime, "runtime")?)?;
            let handler = required(self.handler, "handler")?;
            FunctionConfig::validate_handler(&handler)?;
            (zip, runtime, handler, None)
        };
        let layer_arns = self.layers.unwrap_or_default();
        let description = self.description.unwrap_or_default();
        FunctionConfig::validate_description(&description)?;
        let environment = self.environment.and_then(|e| e.variables).unwrap_or_default();
        FunctionConfig::validate_environment(&environment)?;
        let architectures = self.architectures.unwrap_or_else(|| vec!["x86_64".into()]);
        validate_architectures(&architectures)?;
        let tenancy = match self.tenancy_config {
            None => None,
            Some(t) => Some(parse_tenancy(t)?),
        };
        let config = FunctionConfig {
            runtime,
            handler,
            role,
            description,
            timeout_s: self
                .timeout
                .map(FunctionConfig::validate_timeout)
                .transpose()?
                .unwrap_or(limits::TIMEOUT_DEFAULT_S),
            memory_mb: self
                .memory_size
                .map(FunctionConfig::validate_memory)
                .transpose()?
                .unwrap_or(limits::MEMORY_DEFAULT_MB),
            ephemeral_mb: self
                .ephemeral_storage
                .and_then(|e| e.size)
                .map(FunctionConfig::validate_ephemeral)
                .transpose()?
                .unwrap_or(limits::EPHEMERAL_DEFAULT_MB),
            environment,
            architectures,
            logging: logging(self.logging_config, &name, None)?,
            tenancy,
            tracing_mode: tracing_mode(self.tracing_config)?.unwrap_or_else(|| "PassThrough".into()),
            layers: Vec::new(),
            image,
            name,
        };
        Ok(NewFunction {
            config,
            zip,
            layer_arns,
            publish: self.publish.unwrap_or(false),
            tags: self.tags.unwrap_or_default(),
        })
    }
}

fn parse_tenancy(t: TenancyIn) -> Result<TenantIsolationMode, ApiError> {
    match t.tenant_isolation_mode.as_deref() {
        Some("PER_TENANT") => Ok(TenantIsolationMode::PerTenant),
        Some(other) => Err(quarters_types::ValidationError::constraint(
            other,
            "tenancyConfig.tenantIsolationMode",
            "Member must satisfy enum value set: [PER_TENANT]",
        )
        .into()),
        None => Err(quarters_types::ValidationError::model(
            "1 validation error detected: Value null at 'tenancyConfig.tenantIsolationMode' failed to satisfy constraint: Member must not be null",
        )
        .into()),
    }
}

fn validate_architectures(a: &[String]) -> Result<(), ApiError> {
    if a.len() != 1 {
        return Err(quarters_types::ValidationError::model(
            "1 validation error detected: Value at 'architectures' failed to satisfy constraint: Member must have length less than or equal to 1",
        )
        .into());
    }
    let host = if cfg!(target_arch = "aarch64") { "arm64" } else { "x86_64" };
    match a[0].as_str() {
        x if x == host => Ok(()),
        "x86_64" | "arm64" => {
            Err(ApiError::invalid(format!("Architecture {} is not supported on this host; it runs {host}.", a[0])))
        }
        other => Err(quarters_types::ValidationError::constraint(
            other,
            "architectures",
            "Member must satisfy constraint: [Member must satisfy enum value set: [x86_64, arm64]]",
        )
        .into()),
    }
}

impl UpdateConfigIn {
    /// Apply to a configuration; fails without changing anything if any field is bad.
    pub fn apply(self, c: &mut FunctionConfig) -> Result<(), ApiError> {
        if self.tenancy_config.is_some() {
            return Err(ApiError::invalid(
                "TenancyConfig cannot be changed after a function is created. Create a new function to change its tenant isolation mode.",
            ));
        }
        // `Layers` is resolved by the caller (it needs the control plane).
        let mut n = c.clone();
        match (&mut n.image, self.image_config) {
            (Some(settings), Some(ic)) => ic.apply(settings)?,
            (None, Some(_)) => {
                return Err(ApiError::invalid("ImageConfig is only for functions whose PackageType is Image."));
            }
            (Some(_), None) if self.runtime.is_some() || self.handler.is_some() => {
                return Err(ApiError::invalid(
                    "Please don't provide Handler or Runtime when the function's PackageType is Image.",
                ));
            }
            _ => {}
        }
        if let Some(r) = self.runtime {
            n.runtime = runtime_here(&r)?;
        }
        if let Some(r) = self.role {
            FunctionConfig::validate_role(&r)?;
            n.role = r;
        }
        if let Some(h) = self.handler {
            FunctionConfig::validate_handler(&h)?;
            n.handler = h;
        }
        if let Some(d) = self.description {
            FunctionConfig::validate_description(&d)?;
            n.description = d;
        }
        if let Some(t) = self.timeout {
            n.timeout_s = FunctionConfig::validate_timeout(t)?;
        }
        if let Some(m) = self.memory_size {
            n.memory_mb = FunctionConfig::validate_memory(m)?;
        }
        if let Some(e) = self.environment {
            let vars = e.variables.unwrap_or_default();
            FunctionConfig::validate_environment(&vars)?;
            n.environment = vars;
        }
        if let Some(s) = self.ephemeral_storage.and_then(|e| e.size) {
            n.ephemeral_mb = FunctionConfig::validate_ephemeral(s)?;
        }
        if self.logging_config.is_some() {
            n.logging = logging(self.logging_config, &n.name, Some(&c.logging))?;
        }
        if let Some(m) = tracing_mode(self.tracing_config)? {
            n.tracing_mode = m;
        }
        *c = n;
        Ok(())
    }
}

impl AliasIn {
    pub fn into_record(self, name: Option<&str>) -> Result<AliasRecord, ApiError> {
        let name = match name {
            Some(n) => n.to_owned(),
            None => required(self.name, "name")?,
        };
        Ok(AliasRecord {
            name,
            function_version: required(self.function_version, "functionVersion")?,
            description: self.description.unwrap_or_default(),
            routing: self.routing_config.and_then(|r| r.additional_version_weights).unwrap_or_default(),
            revision_id: uuid::Uuid::new_v4().to_string(),
        })
    }
}

/// How a FunctionConfiguration is being returned, which decides its State fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Created,
    Updated,
    Get,
    List,
}

pub fn function_configuration(arns: &Arns, v: &VersionRecord, view: View) -> Value {
    let c = &v.config;
    let arn = if v.version == "$LATEST" { arns.function(&c.name) } else { arns.qualified(&c.name, &v.version) };
    let mut logging = json!({ "LogFormat": match c.logging.log_format { LogFormat::Text => "Text", LogFormat::Json => "JSON" }, "LogGroup": c.logging.log_group });
    if let Some(l) = &c.logging.application_log_level {
        logging["ApplicationLogLevel"] = l.as_str().into();
    }
    if let Some(l) = &c.logging.system_log_level {
        logging["SystemLogLevel"] = l.as_str().into();
    }
    let mut out = json!({
        "FunctionName": c.name,
        "FunctionArn": arn,
        "Role": c.role,
        "CodeSize": v.code.size,
        "Description": c.description,
        "Timeout": c.timeout_s,
        "MemorySize": c.memory_mb,
        "LastModified": last_modified(v.last_modified_ms),
        "CodeSha256": v.code.sha256_b64,
        "Version": v.version,
        "TracingConfig": { "Mode": c.tracing_mode },
        "RevisionId": v.revision_id,
        "PackageType": if c.image.is_some() { "Image" } else { "Zip" },
        "Architectures": c.architectures,
        "EphemeralStorage": { "Size": c.ephemeral_mb },
        "SnapStart": { "ApplyOn": "None", "OptimizationStatus": "Off" },
        "LoggingConfig": logging,
    });
    if !c.environment.is_empty() {
        out["Environment"] = json!({ "Variables": c.environment });
    }
    if c.tenancy.is_some() {
        out["TenancyConfig"] = json!({ "TenantIsolationMode": "PER_TENANT" });
    }
    match &c.image {
        None => {
            out["Runtime"] = c.runtime.as_str().into();
            out["Handler"] = c.handler.as_str().into();
        }
        Some(i) => {
            let mut ic = json!({});
            if let Some(e) = &i.entrypoint {
                ic["EntryPoint"] = json!(e);
            }
            if let Some(cmd) = &i.command {
                ic["Command"] = json!(cmd);
            }
            if let Some(w) = &i.working_directory {
                ic["WorkingDirectory"] = json!(w);
            }
            if ic.as_object().is_some_and(|o| !o.is_empty()) {
                out["ImageConfigResponse"] = json!({ "ImageConfig": ic });
            }
        }
    }
    if !c.layers.is_empty() {
        out["Layers"] = c.layers.iter().map(|l| json!({ "Arn": l.arn, "CodeSize": l.code.size })).collect();
    }
    if view != View::List {
        out["RuntimeVersionConfig"] = json!({
            "RuntimeVersionArn": arns.runtime_version(&quarters_invoke::runtimes::runtime_version_id(c.runtime))
        });
    }
    match view {
        View::Created => {
            out["State"] = "Pending".into();
            out["StateReason"] = "The function is being created.".into();
            out["StateReasonCode"] = "Creating".into();
        }
        View::Updated => {
            out["State"] = "Active".into();
            out["LastUpdateStatus"] = "InProgress".into();
            out["LastUpdateStatusReason"] = "The function is being created.".into();
            out["LastUpdateStatusReasonCode"] = "Creating".into();
        }
        View::Get => {
            out["State"] = "Active".into();
            out["LastUpdateStatus"] = "Successful".into();
        }
        View::List => {}
    }
    out
}

pub fn alias_configuration(arns: &Arns, function: &str, a: &AliasRecord) -> Value {
    let mut out = json!({
        "AliasArn": arns.qualified(function, &a.name),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.routing.is_empty() {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": a.routing });
    }
    out
}

/// Every version of a function, `$LATEST` first.
pub fn all_versions(e: &FunctionEntry) -> impl Iterator<Item = &VersionRecord> {
    std::iter::once(&e.latest).chain(e.versions.values())
}

/// A runtime identifier AWS knows and this host can run (a managed runtime needs its
/// interpreter). A host interpreter of another version than the identifier names is accepted,
/// with a warning in the server's log.
fn runtime_here(value: &str) -> Result<Runtime, ApiError> {
    let runtime = Runtime::parse(value)?;
    if let Some(why) = quarters_invoke::runtimes::unavailable(runtime) {
        return Err(ApiError::invalid(why));
    }
    if let Some(note) = quarters_invoke::runtimes::version_warning(runtime) {
        tracing::warn!(runtime = runtime.as_str(), "{note}");
    }
    Ok(runtime)
}

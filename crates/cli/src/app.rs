//! `quarters deploy app.toml`: functions, REST APIs (routes, authorizers, tenant mapping,
//! required parameters, stage variables), usage plans, API keys and custom domains declared in
//! one file and applied idempotently through Quarters' HTTP APIs (the Lambda API and the API
//! Gateway management API; never the database).
//!
//! Three phases: [`observe`] reads what exists, matching objects by name; [`plan`] compares it
//! with the file (pure, no I/O) and yields one [`Step`] per object: create, update (with the
//! reasons) or unchanged; [`execute`] carries the steps out in order, resolving the ids of the
//! objects it makes on the way. `--dry-run` prints the plan and stops. Nothing that is not in the
//! file is deleted (an authorizer whose type or JWT settings change is replaced, and a domain's
//! base path mapping that points elsewhere is remapped, because neither can be patched).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::urlencode;

/// The name of the request validator made for routes with `required` parameters.
const VALIDATOR: &str = "quarters-required-parameters";
const ROLE: &str = "arn:aws:iam::000000000000:role/quarters-function";
const METHODS: [&str; 8] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY"];
const TENANT_TARGET: &str = "integration.request.header.X-Amz-Tenant-Id";

/// Whether `path` names an app file rather than code to deploy as one function.
pub fn is_app_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

// ---- the file ----

/// An app file: every table is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppFile {
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionSpec>,
    #[serde(default)]
    pub apis: BTreeMap<String, ApiSpec>,
    #[serde(default)]
    pub plans: BTreeMap<String, PlanSpec>,
    #[serde(default)]
    pub keys: BTreeMap<String, KeySpec>,
    #[serde(default)]
    pub domains: BTreeMap<String, DomainSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    /// A directory, a `.zip`, or one executable (zipped as `bootstrap`), relative to the file.
    pub path: String,
    pub runtime: Option<String>,
    pub handler: Option<String>,
    #[serde(default = "default_memory")]
    pub memory: u32,
    #[serde(default = "default_timeout")]
    pub timeout: u32,
    /// `per-tenant` or `none`.
    #[serde(default = "default_tenancy")]
    pub tenancy: String,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    #[serde(default = "default_stage")]
    pub stage: String,
    /// `HEADER` or `AUTHORIZER`.
    #[serde(default = "default_key_source")]
    pub api_key_source: String,
    /// Stage variables.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub authorizers: BTreeMap<String, AuthorizerSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for OneOrMany {
    fn default() -> Self {
        OneOrMany::Many(Vec::new())
    }
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerSpec {
    /// `TOKEN` or `REQUEST` (a Lambda function), or `JWT` (verified by Quarters).
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<String>,
    pub identity_source: Option<String>,
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: OneOrMany,
    #[serde(default)]
    pub secret: OneOrMany,
    #[serde(default)]
    pub public_key_pem: OneOrMany,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub tenant_claim: Option<String>,
    #[serde(default)]
    pub require: Vec<String>,
    pub leeway: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub path: String,
    #[serde(default = "default_method")]
    pub method: String,
    pub function: String,
    /// `AWS_PROXY` or `AWS`.
    #[serde(default = "default_integration")]
    pub integration: String,
    pub authorizer: Option<String>,
    #[serde(default)]
    pub api_key_required: bool,
    /// Where the tenant id comes from: the source of `integration.request.header.X-Amz-Tenant-Id`.
    pub tenant: Option<String>,
    /// More integration request parameters, target to source.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Method request parameters that must be present (checked by a request validator).
    #[serde(default)]
    pub required: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    #[serde(default)]
    pub apis: Vec<String>,
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    pub quota: Option<QuotaSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    pub limit: u64,
    /// `DAY`, `WEEK` or `MONTH`.
    pub period: String,
    #[serde(default)]
    pub offset: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    pub value: Option<String>,
    #[serde(default)]
    pub plans: Vec<String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    pub api: String,
    #[serde(default)]
    pub base_path: String,
    /// Defaults to the API's stage.
    pub stage: Option<String>,
}

fn default_memory() -> u32 {
    128
}
fn default_timeout() -> u32 {
    3
}
fn default_tenancy() -> String {
    "none".into()
}
fn default_stage() -> String {
    "prod".into()
}
fn default_key_source() -> String {
    "HEADER".into()
}
fn default_ttl() -> u32 {
    300
}
fn default_method() -> String {
    "ANY".into()
}
fn default_integration() -> String {
    "AWS_PROXY".into()
}
fn default_true() -> bool {
    true
}

/// Parse and validate an app file's text; warnings (not errors) are returned alongside.
pub fn parse(text: &str) -> Result<(AppFile, Vec<String>)> {
    let mut app: AppFile = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
    for spec in app.apis.values_mut() {
        for r in &mut spec.routes {
            r.method = r.method.to_ascii_uppercase();
        }
    }
    let warnings = validate(&app)?;
    Ok((app, warnings))
}

/// Read an app file; relative paths in it (function code, JWKS files) are relative to it.
pub fn load(path: &Path) -> Result<(AppFile, Vec<String>)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (mut app, warnings) = parse(&text).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
    let base = base_dir(path);
    for spec in app.apis.values_mut() {
        for az in spec.authorizers.values_mut() {
            if let Some(f) = &az.jwks_file {
                az.jwks_file = Some(base.join(f).to_string_lossy().into_owned());
            }
        }
    }
    Ok((app, warnings))
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn valid_function_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn valid_path_part(p: &str) -> bool {
    match p.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        Some(name) => {
            let name = name.strip_suffix('+').unwrap_or(name);
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        }
        None => !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-._~:@!$&'()*+,;=".contains(c)),
    }
}

/// The parts of a route path (`/` has none).
fn path_parts(path: &str) -> std::result::Result<Vec<&str>, String> {
    let Some(rest) = path.strip_prefix('/') else { return Err("must start with /".into()) };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !valid_path_part(p) {
            return Err(format!(
                "invalid part {p:?} (letters, digits and -._~:@!$&'()*+,;= , or a {{variable}} / {{proxy+}})"
            ));
        }
        if p.ends_with("+}") && i + 1 != parts.len() {
            return Err("a greedy variable such as {proxy+} must be the last part".into());
        }
    }
    Ok(parts)
}

/// Every resource path a route path needs, shortest first (`/a`, `/a/{b}`...), without `/`.
fn resource_paths(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for p in path.trim_start_matches('/').split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(p);
        out.push(cur.clone());
    }
    out
}

fn parent_path(path: &str) -> String {
    match path.rsplit_once('/') {
        Some(("", _)) | None => "/".into(),
        Some((parent, _)) => parent.into(),
    }
}

fn check_source(expr: &str) -> std::result::Result<(), String> {
    quarters_gateway::proxy::Source::parse(expr).map(|_| ()).map_err(|_| {
        format!(
            "{expr:?} is not a mapping expression Quarters supports (method.request.header|querystring|path|body.X, \
             context.authorizer.X, stageVariables.X, context.domainPrefix, 'literal'...)"
        )
    })
}

fn method_param_target(p: &str) -> bool {
    ["method.request.header.", "method.request.querystring.", "method.request.path."]
        .iter()
        .any(|pre| p.strip_prefix(pre).is_some_and(|n| !n.is_empty()))
}

/// Check what serde cannot: names, references between tables, enumerations, ranges.
pub fn validate(app: &AppFile) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (name, f) in &app.functions {
        let at = format!("functions.{name}");
        if !valid_function_name(name) {
            bail!("{at}: a function name is 1 to 64 letters, digits, - and _");
        }
        if f.path.is_empty() {
            bail!("{at}.path: must name a directory, a .zip or an executable");
        }
        if !matches!(f.tenancy.as_str(), "per-tenant" | "none") {
            bail!("{at}.tenancy: must be \"per-tenant\" or \"none\", not {:?}", f.tenancy);
        }
        if !(128..=10240).contains(&f.memory) {
            bail!("{at}.memory: must be between 128 and 10240 (MB), not {}", f.memory);
        }
        if !(1..=900).contains(&f.timeout) {
            bail!("{at}.timeout: must be between 1 and 900 (seconds), not {}", f.timeout);
        }
        if let Some(r) = &f.runtime
            && quarters_types::Runtime::parse(r).is_err()
        {
            bail!("{at}.runtime: unknown runtime {r:?} (provided.al2023, python3.12, nodejs22.x...)");
        }
    }
    let function_known = |f: &str| app.functions.contains_key(f) || valid_function_name(f);
    for (api, spec) in &app.apis {
        let at = format!("apis.{api}");
        if spec.stage.is_empty()
            || spec.stage.len() > 128
            || !spec.stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("{at}.stage: a stage name is letters, digits, - and _, not {:?}", spec.stage);
        }
        if !matches!(spec.api_key_source.as_str(), "HEADER" | "AUTHORIZER") {
            bail!("{at}.api_key_source: must be \"HEADER\" or \"AUTHORIZER\", not {:?}", spec.api_key_source);
        }
        for k in spec.variables.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("{at}.variables.{k}: a stage variable name is letters, digits and _");
            }
        }
        for (name, az) in &spec.authorizers {
            let at = format!("{at}.authorizers.{name}");
            if az.ttl > 3600 {
                bail!("{at}.ttl: must be between 0 and 3600 seconds, not {}", az.ttl);
            }
            if let Some(src) = &az.identity_source {
                for s in src.split(',').map(str::trim) {
                    check_source(s).map_err(|e| anyhow!("{at}.identity_source: {e}"))?;
                }
            }
            let jwt_fields = az.issuer.is_some()
                || !az.audience.to_vec().is_empty()
                || !az.secret.to_vec().is_empty()
                || !az.public_key_pem.to_vec().is_empty()
                || az.jwks_file.is_some()
                || az.jwks_url.is_some()
                || az.tenant_claim.is_some()
                || !az.require.is_empty()
                || az.leeway.is_some();
            match az.kind.as_str() {
                "TOKEN" | "REQUEST" => {
                    let Some(f) = &az.function else {
                        bail!("{at}.function: a {} authorizer needs the function that decides", az.kind);
                    };
                    if !function_known(f) {
                        bail!("{at}.function: {f:?} is not a function name");
                    }
                    if jwt_fields {
                        bail!(
                            "{at}: issuer, audience, secret, public_key_pem, jwks_file, jwks_url, tenant_claim, require and leeway are for JWT authorizers"
                        );
                    }
                    if az.kind == "REQUEST" && az.ttl > 0 && az.identity_source.is_none() {
                        bail!(
                            "{at}.identity_source: a REQUEST authorizer whose answers are cached (ttl > 0) needs an identity source, the cache key"
                        );
                    }
                }
                "JWT" => {
                    if az.function.is_some() {
                        bail!("{at}.function: a JWT authorizer is verified by Quarters itself and takes no function");
                    }
                    if az.secret.to_vec().is_empty()
                        && az.public_key_pem.to_vec().is_empty()
                        && az.jwks_file.is_none()
                        && az.jwks_url.is_none()
                    {
                        bail!("{at}: a JWT authorizer needs secret, public_key_pem, jwks_file or jwks_url");
                    }
                }
                other => bail!("{at}.type: must be \"TOKEN\", \"REQUEST\" or \"JWT\", not {other:?}"),
            }
        }
        if spec.routes.is_empty() {
            bail!("{at}.routes: an API needs at least one route ([[{at}.routes]] with path, method, function)");
        }
        let mut seen = BTreeSet::new();
        // Variable path parts under one parent must have one name: /a/{id} and /a/{name} conflict.
        let mut vars: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for (i, r) in spec.routes.iter().enumerate() {
            let at = format!("{at}.routes[{i}]");
            let parts = path_parts(&r.path).map_err(|e| anyhow!("{at}.path: {:?}: {e}", r.path))?;
            let mut parent = String::from("/");
            for p in &parts {
                if p.starts_with('{') {
                    if let Some((other, j)) = vars.get(&parent)
                        && other != p
                    {
                        bail!(
                            "{at}.path: {p} conflicts with {other} of routes[{j}]: one variable name per position under {parent}"
                        );
                    }
                    vars.insert(parent.clone(), ((*p).to_string(), i));
                }
                parent = if parent == "/" { format!("/{p}") } else { format!("{parent}/{p}") };
            }
            if !METHODS.contains(&r.method.as_str()) {
                bail!("{at}.method: must be one of {}, not {:?}", METHODS.join(", "), r.method);
            }
            if !seen.insert((r.path.clone(), r.method.clone())) {
                bail!("{at}: {} {} is declared twice", r.method, r.path);
            }
            if !function_known(&r.function) {
                bail!("{at}.function: {:?} is not a function name", r.function);
            }
            if !matches!(r.integration.as_str(), "AWS_PROXY" | "AWS") {
                bail!("{at}.integration: must be \"AWS_PROXY\" or \"AWS\", not {:?}", r.integration);
            }
            if let Some(a) = &r.authorizer
                && !spec.authorizers.contains_key(a)
            {
                bail!("{at}.authorizer: no authorizer {a:?} in apis.{api}.authorizers");
            }
            if let Some(t) = &r.tenant {
                check_source(t).map_err(|e| anyhow!("{at}.tenant: {e}"))?;
            }
            for (target, src) in &r.parameters {
                let ok =
                    ["integration.request.header.", "integration.request.querystring.", "integration.request.path."]
                        .iter()
                        .any(|p| target.strip_prefix(p).is_some_and(|n| !n.is_empty()));
                if !ok {
                    bail!(
                        "{at}.parameters: {target:?} is not a target (integration.request.header|querystring|path.NAME)"
                    );
                }
                if r.tenant.is_some() && target.eq_ignore_ascii_case(TENANT_TARGET) {
                    bail!("{at}.parameters: {target} is what `tenant` sets; use one or the other");
                }
                check_source(src).map_err(|e| anyhow!("{at}.parameters.{target}: {e}"))?;
            }
            for p in &r.required {
                if !method_param_target(p) {
                    bail!(
                        "{at}.required: {p:?} is not a method request parameter (method.request.header|querystring|path.NAME)"
                    );
                }
            }
            if r.api_key_required && !app.plans.values().any(|p| p.apis.contains(api)) {
                warnings.push(format!(
                    "warning: {at} requires an API key, but no plan in this file covers api {api}: calls will get 403 unless a plan made elsewhere does"
                ));
            }
            if let Some(f) = app.functions.get(&r.function) {
                match (f.tenancy.as_str(), &r.tenant) {
                    ("per-tenant", None) => warnings.push(format!(
                        "warning: {at} calls {} (per-tenant) without a `tenant`: every call will be refused for lack of a tenant id",
                        r.function
                    )),
                    ("none", Some(_)) => warnings.push(format!(
                        "warning: {at} sets a `tenant` but {} has no tenant isolation (tenancy = \"none\"): Lambda refuses tenant ids for such functions",
                        r.function
                    )),
                    _ => {}
                }
            }
        }
    }
    for (name, p) in &app.plans {
        let at = format!("plans.{name}");
        for a in &p.apis {
            if !app.apis.contains_key(a) {
                bail!("{at}.apis: no api {a:?} in this file");
            }
        }
        if p.rate.is_some_and(|r| r < 0.0 || !r.is_finite()) {
            bail!("{at}.rate: must be a number of requests per second >= 0");
        }
        if let Some(q) = &p.quota
            && !matches!(q.period.as_str(), "DAY" | "WEEK" | "MONTH")
        {
            bail!("{at}.quota.period: must be \"DAY\", \"WEEK\" or \"MONTH\", not {:?}", q.period);
        }
    }
    for (name, k) in &app.keys {
        let at = format!("keys.{name}");
        if let Some(v) = &k.value
            && !(20..=128).contains(&v.len())
        {
            bail!("{at}.value: an API key's value is 20 to 128 characters (this one has {})", v.len());
        }
        for p in &k.plans {
            if !app.plans.contains_key(p) {
                bail!("{at}.plans: no plan {p:?} in this file");
            }
        }
    }
    for (name, d) in &app.domains {
        let at = format!("domains.{name:?}");
        let bare = name.strip_prefix("*.").unwrap_or(name);
        let ok = !bare.is_empty()
            && bare.len() <= 253
            && bare
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        if !ok {
            bail!("{at}: not a domain name (or *.wildcard)");
        }
        if !app.apis.contains_key(&d.api) {
            bail!("{at}.api: no api {:?} in this file", d.api);
        }
        if !d.base_path.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c)) {
            bail!("{at}.base_path: letters, digits and -._~/ only");
        }
    }
    Ok(warnings)
}

/// Every function the file refers to, with where: its own, routes' and authorizers'.
fn referenced_functions(app: &AppFile) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (api, spec) in &app.apis {
        for (name, az) in &spec.authorizers {
            if let Some(f) = &az.function {
                out.push((format!("apis.{api}.authorizers.{name}.function"), f.clone()));
            }
        }
        for (i, r) in spec.routes.iter().enumerate() {
            out.push((format!("apis.{api}.routes[{i}].function"), r.function.clone()));
        }
    }
    out
}

// ---- packaging ----

/// A function's code as it would be uploaded, and its runtime and handler.
#[derive(Debug, Clone)]
pub struct Package {
    pub zip: Vec<u8>,
    /// Base64 SHA-256 of `zip`, as Lambda's `CodeSha256`.
    pub sha256: String,
    pub runtime: String,
    pub handler: String,
}

impl Package {
    pub fn new(zip: Vec<u8>, runtime: &str, handler: &str) -> Package {
        let sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&zip));
        Package { zip, sha256, runtime: runtime.into(), handler: handler.into() }
    }
}

/// Package a function as `quarters deploy DIR` does, but reproducibly (fixed timestamps, sorted
/// entries, no `__pycache__`), so that the same code always has the same `CodeSha256`.
pub fn package(base: &Path, name: &str, spec: &FunctionSpec) -> Result<Package> {
    let path = base.join(&spec.path);
    if !path.exists() {
        bail!("functions.{name}.path: {} does not exist", path.display());
    }
    let (runtime, handler) = crate::client::detect_runtime(&path, spec.runtime.clone(), spec.handler.clone())?;
    let zip = if path.is_file() && path.extension().is_some_and(|e| e == "zip") {
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
    } else {
        reproducible_zip(&path)?
    };
    Ok(Package::new(zip, &runtime, &handler))
}

fn reproducible_zip(path: &Path) -> Result<Vec<u8>> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    if path.is_file() {
        add_file(&mut w, path, "bootstrap")?;
    } else {
        let mut files = Vec::new();
        collect(path, path, &mut files)?;
        files.sort();
        for (rel, p) in files {
            add_file(&mut w, &p, &rel)?;
        }
    }
    Ok(w.finish()?.into_inner())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "__pycache__") {
                continue;
            }
            collect(root, &p, out)?;
        } else {
            out.push((p.strip_prefix(root)?.to_string_lossy().into_owned(), p));
        }
    }
    Ok(())
}

fn add_file(w: &mut zip::ZipWriter<Cursor<Vec<u8>>>, path: &Path, name: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    let opts = zip::write::SimpleFileOptions::default()
        .unix_permissions(mode & 0o777)
        .last_modified_time(zip::DateTime::default());
    w.start_file(name, opts)?;
    w.write_all(&std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)?;
    Ok(())
}

// ---- what exists ----

/// What the server has of the objects the file names (absent: not there).
#[derive(Debug, Default, Clone)]
pub struct Current {
    /// GetFunction's `Configuration`, by function name.
    pub functions: BTreeMap<String, Value>,
    /// By REST API name.
    pub apis: BTreeMap<String, CurrentApi>,
    /// By usage plan name.
    pub plans: BTreeMap<String, CurrentPlan>,
    /// By API key name (with its value).
    pub keys: BTreeMap<String, Value>,
    /// By domain name, lower case.
    pub domains: BTreeMap<String, CurrentDomain>,
}

#[derive(Debug, Default, Clone)]
pub struct CurrentApi {
    pub doc: Value,
    /// With their `resourceMethods` (and each method's `methodIntegration`).
    pub resources: Vec<Value>,
    pub authorizers: Vec<Value>,
    pub validators: Vec<Value>,
    /// The file's stage, and the deployment it points at.
    pub stage: Option<Value>,
    pub deployment: Option<Value>,
}

impl CurrentApi {
    fn id(&self) -> &str {
        self.doc["id"].as_str().unwrap_or_default()
    }
    fn method(&self, path: &str, verb: &str) -> Option<&Value> {
        self.resources.iter().find(|r| r["path"] == path)?.get("resourceMethods")?.get(verb)
    }
    fn authorizer(&self, name: &str) -> Option<&Value> {
        self.authorizers.iter().find(|a| a["name"] == name)
    }
    fn validator(&self, name: &str) -> Option<&Value> {
        self.validators.iter().find(|v| v["name"] == name)
    }
}

#[derive(Debug, Default, Clone)]
pub struct CurrentPlan {
    pub doc: Value,
    /// The ids of its keys.
    pub keys: Vec<String>,
}

#[derive(Debug, Default, Clone)]
pub struct CurrentDomain {
    pub mappings: Vec<Value>,
}

/// The ids of objects by their names in the file: those that exist, those made so far and, when
/// planning, placeholders for those still to be made.
#[derive(Debug, Default, Clone)]
struct Ids {
    functions: BTreeMap<String, String>,
    apis: BTreeMap<String, String>,
    resources: BTreeMap<(String, String), String>,
    authorizers: BTreeMap<(String, String), String>,
    validators: BTreeMap<String, String>,
    plans: BTreeMap<String, String>,
    keys: BTreeMap<String, String>,
}

const NEW: &str = "(new)";

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn id_of(v: &Value) -> String {
    s(v, "id").unwrap_or_default().to_string()
}

impl Ids {
    fn from_current(cur: &Current) -> Ids {
        let mut ids = Ids::default();
        for (name, cfg) in &cur.functions {
            if let Some(arn) = s(cfg, "FunctionArn") {
                ids.functions.insert(name.clone(), arn.to_string());
            }
        }
        for (name, api) in &cur.apis {
            ids.apis.insert(name.clone(), api.id().to_string());
            for r in &api.resources {
                if let Some(p) = s(r, "path") {
                    ids.resources.insert((name.clone(), p.to_string()), id_of(r));
                }
            }
            for a in &api.authorizers {
                if let Some(n) = s(a, "name") {
                    ids.authorizers.entry((name.clone(), n.to_string())).or_insert_with(|| id_of(a));
                }
            }
            if let Some(v) = api.validator(VALIDATOR) {
                ids.validators.insert(name.clone(), id_of(v));
            }
        }
        for (name, p) in &cur.plans {
            ids.plans.insert(name.clone(), id_of(&p.doc));
        }
        for (name, k) in &cur.keys {
            ids.keys.insert(name.clone(), id_of(k));
        }
        ids
    }

    fn function_arn(&self, name: &str) -> String {
        self.functions
            .get(name)
            .cloned()
            .unwrap_or_else(|| format!("arn:aws:lambda:us-east-1:000000000000:function:{name}"))
    }
    fn api(&self, name: &str) -> String {
        self.apis.get(name).cloned().unwrap_or_else(|| NEW.into())
    }
    fn resource(&self, api: &str, path: &str) -> Option<String> {
        self.resources.get(&(api.to_string(), path.to_string())).cloned()
    }
    fn authorizer(&self, api: &str, name: &str) -> String {
        self.authorizers.get(&(api.to_string(), name.to_string())).cloned().unwrap_or_else(|| NEW.into())
    }
    fn validator(&self, api: &str) -> String {
        self.validators.get(api).cloned().unwrap_or_else(|| NEW.into())
    }
}

// ---- desired documents and comparisons (pure) ----

/// The Lambda integration (and authorizer) URI of a function ARN.
fn lambda_uri(arn: &str) -> String {
    let region = arn.split(':').nth(3).filter(|r| !r.is_empty()).unwrap_or("us-east-1");
    format!("arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/{arn}/invocations")
}

/// The function name in an integration or authorizer URI (or a bare ARN or name).
fn uri_function(uri: &str) -> Option<String> {
    let f = match uri.split(":lambda:path/2015-03-31/functions/").nth(1) {
        Some(rest) => rest.strip_suffix("/invocations")?,
        None => uri,
    };
    match f.strip_prefix("arn:") {
        Some(rest) => rest.split(':').nth(5).map(String::from),
        None => (!f.is_empty()).then(|| f.to_string()),
    }
}

fn function_changes(name: &str, spec: &FunctionSpec, pkg: &Package, cfg: &Value) -> Result<Vec<String>> {
    let per_tenant = cfg["TenancyConfig"]["TenantIsolationMode"] == "PER_TENANT";
    if per_tenant != (spec.tenancy == "per-tenant") {
        bail!(
            "functions.{name}.tenancy: {name} exists with tenancy \"{}\", and a function's tenancy cannot change; \
             delete the function first (aws lambda delete-function --function-name {name}) or give it another name",
            if per_tenant { "per-tenant" } else { "none" }
        );
    }
    let mut reasons = Vec::new();
    if s(cfg, "CodeSha256") != Some(pkg.sha256.as_str()) {
        reasons.push("code".to_string());
    }
    let cur_runtime = s(cfg, "Runtime").unwrap_or("");
    if cur_runtime != pkg.runtime {
        reasons.push(format!("runtime {cur_runtime} -> {}", pkg.runtime));
    }
    let cur_handler = s(cfg, "Handler").unwrap_or("");
    if cur_handler != pkg.handler {
        reasons.push(format!("handler {cur_handler} -> {}", pkg.handler));
    }
    let mem = cfg["MemorySize"].as_u64().unwrap_or(0);
    if mem != u64::from(spec.memory) {
        reasons.push(format!("memory {mem} -> {}", spec.memory));
    }
    let timeout = cfg["Timeout"].as_u64().unwrap_or(0);
    if timeout != u64::from(spec.timeout) {
        reasons.push(format!("timeout {timeout} -> {}", spec.timeout));
    }
    let env: BTreeMap<String, String> = cfg["Environment"]["Variables"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    if env != spec.environment {
        reasons.push("environment".into());
    }
    Ok(reasons)
}

fn create_function_body(name: &str, spec: &FunctionSpec, pkg: &Package) -> Value {
    let mut body = json!({
        "FunctionName": name,
        "Runtime": pkg.runtime,
        "Handler": pkg.handler,
        "Role": ROLE,
        "Code": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(&pkg.zip) },
        "MemorySize": spec.memory,
        "Timeout": spec.timeout,
        "Environment": { "Variables": spec.environment },
    });
    if spec.tenancy == "per-tenant" {
        body["TenancyConfig"] = json!({ "TenantIsolationMode": "PER_TENANT" });
    }
    body
}

fn jwt_settings(az: &AuthorizerSpec) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(i) = &az.issuer {
        out.push(format!("issuer={i}"));
    }
    out.extend(az.audience.to_vec().into_iter().map(|a| format!("audience={a}")));
    out.extend(az.secret.to_vec().into_iter().map(|a| format!("secret={a}")));
    out.extend(az.public_key_pem.to_vec().into_iter().map(|a| format!("publicKeyPem={a}")));
    if let Some(f) = &az.jwks_file {
        out.push(format!("jwksFile={f}"));
    }
    if let Some(u) = &az.jwks_url {
        out.push(format!("jwksUrl={u}"));
    }
    out.extend(az.require.iter().map(|r| format!("require={r}")));
    if let Some(t) = &az.tenant_claim {
        out.push(format!("tenantClaim={t}"));
    }
    if let Some(l) = az.leeway {
        out.push(format!("leewaySeconds={l}"));
    }
    out
}

fn authorizer_body(name: &str, az: &AuthorizerSpec, ids: &Ids) -> Value {
    let mut b = json!({"name": name, "type": az.kind, "authorizerResultTtlInSeconds": az.ttl});
    match az.kind.as_str() {
        "JWT" => {
            b["providerARNs"] = json!(jwt_settings(az));
            b["identitySource"] =
                json!(az.identity_source.clone().unwrap_or_else(|| "method.request.header.Authorization".into()));
        }
        _ => {
            b["authorizerUri"] = json!(lambda_uri(&ids.function_arn(az.function.as_deref().unwrap_or_default())));
            let source = az
                .identity_source
                .clone()
                .or_else(|| (az.kind == "TOKEN").then(|| "method.request.header.Authorization".to_string()));
            if let Some(src) = source {
                b["identitySource"] = json!(src);
            }
        }
    }
    b
}

#[derive(Debug, Clone, PartialEq)]
enum AuthDiff {
    Same,
    /// UpdateAuthorizer with these patch operations.
    Patch(Vec<String>, Vec<Value>),
    /// A change UpdateAuthorizer cannot make (the type): a new authorizer takes the name, the
    /// routes move to it, and the old one is deleted.
    Replace(Vec<String>),
}

fn authorizer_diff(desired: &Value, current: &Value) -> AuthDiff {
    if s(desired, "type") != s(current, "type") {
        return AuthDiff::Replace(vec![format!(
            "type {} -> {}",
            s(current, "type").unwrap_or("?"),
            s(desired, "type").unwrap_or("?")
        )]);
    }
    let mut reasons = Vec::new();
    let mut ops = Vec::new();
    // JWT settings: `providerARNs` entries are added and removed one by one (their order does
    // not matter).
    let list = |v: &Value| -> BTreeSet<String> {
        v["providerARNs"].as_array().into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
    };
    let (dl, cl) = (list(desired), list(current));
    if dl != cl {
        reasons.push("JWT settings".into());
        for gone in cl.difference(&dl) {
            ops.push(json!({"op": "remove", "path": "/providerARNs", "value": gone}));
        }
        for new in dl.difference(&cl) {
            ops.push(json!({"op": "add", "path": "/providerARNs", "value": new}));
        }
    }
    let (df, cf) =
        (s(desired, "authorizerUri").and_then(uri_function), s(current, "authorizerUri").and_then(uri_function));
    if df != cf {
        reasons.push(format!("function {} -> {}", cf.unwrap_or_default(), df.unwrap_or_default()));
        ops.push(json!({"op": "replace", "path": "/authorizerUri", "value": s(desired, "authorizerUri")}));
    }
    match (s(desired, "identitySource"), s(current, "identitySource")) {
        (d, c) if d == c => {}
        (Some(d), _) => {
            reasons.push("identity source".into());
            ops.push(json!({"op": "replace", "path": "/identitySource", "value": d}));
        }
        (None, Some(_)) => {
            reasons.push("identity source".into());
            ops.push(json!({"op": "remove", "path": "/identitySource"}));
        }
        _ => {}
    }
    let (dt, ct) = (desired["authorizerResultTtlInSeconds"].as_i64(), current["authorizerResultTtlInSeconds"].as_i64());
    if dt != ct {
        reasons.push(format!("ttl {} -> {}", ct.unwrap_or(300), dt.unwrap_or(300)));
        ops.push(
            json!({"op": "replace", "path": "/authorizerResultTtlInSeconds", "value": dt.unwrap_or(300).to_string()}),
        );
    }
    if reasons.is_empty() { AuthDiff::Same } else { AuthDiff::Patch(reasons, ops) }
}

/// The method request parameters a route declares: those it requires (true) and those its
/// mappings read (false).
fn method_parameters(route: &RouteSpec) -> BTreeMap<String, bool> {
    let mut p = BTreeMap::new();
    for expr in route.tenant.iter().chain(route.parameters.values()) {
        let declared = expr.replacen("method.request.multivalueheader.", "method.request.header.", 1).replacen(
            "method.request.multivaluequerystring.",
            "method.request.querystring.",
            1,
        );
        if method_param_target(&declared) {
            p.insert(declared, false);
        }
    }
    for r in &route.required {
        p.insert(r.clone(), true);
    }
    p
}

fn desired_method(api: &str, route: &RouteSpec, ids: &Ids) -> Value {
    let mut m = Map::new();
    match &route.authorizer {
        Some(a) => {
            m.insert("authorizationType".into(), json!("CUSTOM"));
            m.insert("authorizerId".into(), json!(ids.authorizer(api, a)));
        }
        None => {
            m.insert("authorizationType".into(), json!("NONE"));
        }
    }
    m.insert("apiKeyRequired".into(), json!(route.api_key_required));
    let params = method_parameters(route);
    if !params.is_empty() {
        m.insert("requestParameters".into(), json!(params));
    }
    if !route.required.is_empty() {
        m.insert("requestValidatorId".into(), json!(ids.validator(api)));
    }
    Value::Object(m)
}

fn desired_integration(route: &RouteSpec, ids: &Ids) -> Value {
    let mut params = BTreeMap::new();
    if let Some(t) = &route.tenant {
        params.insert(TENANT_TARGET.to_string(), t.clone());
    }
    params.extend(route.parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut i = json!({
        "type": route.integration,
        "httpMethod": "POST",
        "uri": lambda_uri(&ids.function_arn(&route.function)),
    });
    if !params.is_empty() {
        i["requestParameters"] = json!(params);
    }
    i
}

fn object(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// What differs between a route's desired method and the current one, and the UpdateMethod
/// patch operations that fix it.
fn method_diff(desired: &Value, current: &Value) -> (Vec<String>, Vec<Value>) {
    let mut reasons = Vec::new();
    let mut ops = Vec::new();
    let mut optional = |field: &str, why: &str, reasons: &mut Vec<String>| match (s(desired, field), s(current, field))
    {
        (d, c) if d == c => {}
        (Some(d), _) => {
            reasons.push(why.to_string());
            ops.push(json!({"op": "replace", "path": format!("/{field}"), "value": d}));
        }
        (None, _) => {
            reasons.push(why.to_string());
            ops.push(json!({"op": "remove", "path": format!("/{field}")}));
        }
    };
    optional("authorizationType", "authorizer", &mut reasons);
    optional("authorizerId", "authorizer", &mut reasons);
    optional("requestValidatorId", "validator", &mut reasons);
    let dk = desired["apiKeyRequired"].as_bool().unwrap_or(false);
    if dk != current["apiKeyRequired"].as_bool().unwrap_or(false) {
        reasons.push(if dk { "api key required" } else { "api key not required" }.into());
        ops.push(json!({"op": "replace", "path": "/apiKeyRequired", "value": dk.to_string()}));
    }
    let (dp, cp) = (object(desired.get("requestParameters")), object(current.get("requestParameters")));
    let mut params_changed = false;
    for (k, v) in &dp {
        if cp.get(k) != Some(v) {
            params_changed = true;
            let val = v.as_bool().unwrap_or(false).to_string();
            ops.push(json!({"op": if cp.contains_key(k) { "replace" } else { "add" }, "path": format!("/requestParameters/{k}"), "value": val}));
        }
    }
    for k in cp.keys().filter(|k| !dp.contains_key(*k)) {
        params_changed = true;
        ops.push(json!({"op": "remove", "path": format!("/requestParameters/{k}")}));
    }
    if params_changed {
        reasons.push("method parameters".into());
    }
    reasons.dedup();
    (reasons, ops)
}

/// What differs between a route's desired integration and the current one (PutIntegration
/// replaces it whole).
fn integration_diff(desired: &Value, current: Option<&Value>) -> Vec<String> {
    let Some(c) = current else { return vec!["integration".into()] };
    let mut reasons = Vec::new();
    if s(desired, "type") != s(c, "type") {
        reasons.push(format!("integration {} -> {}", s(c, "type").unwrap_or("none"), s(desired, "type").unwrap_or("")));
    }
    let (df, cf) = (s(desired, "uri").and_then(uri_function), s(c, "uri").and_then(uri_function));
    if df != cf {
        reasons.push(format!("function {} -> {}", cf.unwrap_or_default(), df.unwrap_or_default()));
    }
    if object(desired.get("requestParameters")) != object(c.get("requestParameters")) {
        reasons.push("integration parameters".into());
    }
    reasons
}

fn plan_body(name: &str, spec: &PlanSpec, app: &AppFile, ids: &Ids) -> Value {
    let stages: Vec<Value> = spec
        .apis
        .iter()
        .map(|a| json!({"apiId": ids.api(a), "stage": app.apis.get(a).map_or("prod", |x| x.stage.as_str())}))
        .collect();
    let mut b = json!({"name": name, "apiStages": stages});
    if spec.rate.is_some() || spec.burst.is_some() {
        let mut t = Map::new();
        if let Some(r) = spec.rate {
            t.insert("rateLimit".into(), json!(r));
        }
        if let Some(bu) = spec.burst {
            t.insert("burstLimit".into(), json!(bu));
        }
        b["throttle"] = Value::Object(t);
    }
    if let Some(q) = &spec.quota {
        b["quota"] = json!({"limit": q.limit, "period": q.period, "offset": q.offset});
    }
    b
}

/// What differs between a usage plan and the file's, and the UpdateUsagePlan patch operations.
fn plan_diff(desired: &Value, current: &Value) -> (Vec<String>, Vec<Value>) {
    let mut reasons = Vec::new();
    let mut ops = Vec::new();
    let stages = |v: &Value| -> BTreeSet<String> {
        v["apiStages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|st| format!("{}:{}", s(st, "apiId").unwrap_or(""), s(st, "stage").unwrap_or("")))
            .collect()
    };
    let (ds, cs) = (stages(desired), stages(current));
    if ds != cs {
        reasons.push("stages".to_string());
        for add in ds.difference(&cs) {
            ops.push(json!({"op": "add", "path": "/apiStages", "value": add}));
        }
        for rm in cs.difference(&ds) {
            ops.push(json!({"op": "remove", "path": "/apiStages", "value": rm}));
        }
    }
    let (dt, ct) = (desired.get("throttle"), current.get("throttle"));
    let mut throttle_changed = false;
    match (dt, ct) {
        (None, Some(_)) => {
            throttle_changed = true;
            ops.push(json!({"op": "remove", "path": "/throttle"}));
        }
        (Some(d), c) => {
            let cur_rate = c.and_then(|c| c["rateLimit"].as_f64());
            match (d["rateLimit"].as_f64(), cur_rate) {
                (Some(r), Some(cr)) if (r - cr).abs() < 1e-9 => {}
                (Some(r), _) => {
                    throttle_changed = true;
                    ops.push(json!({"op": "replace", "path": "/throttle/rateLimit", "value": r.to_string()}));
                }
                (None, Some(_)) => {
                    throttle_changed = true;
                    ops.push(json!({"op": "remove", "path": "/throttle/rateLimit"}));
                }
                (None, None) => {}
            }
            let cur_burst = c.and_then(|c| c["burstLimit"].as_i64());
            match (d["burstLimit"].as_i64(), cur_burst) {
                (Some(b), Some(cb)) if b == cb => {}
                (Some(b), _) => {
                    throttle_changed = true;
                    ops.push(json!({"op": "replace", "path": "/throttle/burstLimit", "value": b.to_string()}));
                }
                (None, Some(_)) => {
                    throttle_changed = true;
                    ops.push(json!({"op": "remove", "path": "/throttle/burstLimit"}));
                }
                (None, None) => {}
            }
        }
        (None, None) => {}
    }
    if throttle_changed {
        reasons.push("throttle".into());
    }
    match (desired.get("quota"), current.get("quota")) {
        (None, Some(_)) => {
            reasons.push("quota".into());
            ops.push(json!({"op": "remove", "path": "/quota"}));
        }
        (Some(d), c) => {
            let mut changed = false;
            let limit = d["limit"].as_i64().unwrap_or(0);
            if c.and_then(|c| c["limit"].as_i64()) != Some(limit) {
                changed = true;
                ops.push(json!({"op": "replace", "path": "/quota/limit", "value": limit.to_string()}));
            }
            let period = s(d, "period").unwrap_or("DAY");
            if c.and_then(|c| s(c, "period")) != Some(period) {
                changed = true;
                ops.push(json!({"op": "replace", "path": "/quota/period", "value": period}));
            }
            let offset = d["offset"].as_i64().unwrap_or(0);
            if c.map(|c| c["offset"].as_i64().unwrap_or(0)) != Some(offset) {
                changed = true;
                ops.push(json!({"op": "replace", "path": "/quota/offset", "value": offset.to_string()}));
            }
            if changed {
                reasons.push("quota".into());
            }
        }
        (None, None) => {}
    }
    (reasons, ops)
}

/// The plans (of the file) a key should join and leave: a key leaves only plans of the file
/// that it does not list.
fn key_membership(app: &AppFile, cur: &Current, ids: &Ids, key: &str) -> (Vec<String>, Vec<String>) {
    let spec = app.keys.get(key);
    let kid = ids.keys.get(key);
    let mut join = Vec::new();
    let mut leave = Vec::new();
    for plan in app.plans.keys() {
        let wanted = spec.is_some_and(|k| k.plans.contains(plan));
        let member = kid.is_some_and(|kid| {
            ids.plans
                .get(plan)
                .is_some_and(|pid| cur.plans.get(plan).is_some_and(|p| id_of(&p.doc) == *pid && p.keys.contains(kid)))
        });
        if wanted && !member {
            join.push(plan.clone());
        } else if !wanted && member {
            leave.push(plan.clone());
        }
    }
    (join, leave)
}

fn base_path_key(base: &str) -> String {
    let b = base.trim_matches('/');
    if b.is_empty() { "(none)".into() } else { b.to_string() }
}

fn domain_stage<'a>(app: &'a AppFile, d: &'a DomainSpec) -> &'a str {
    d.stage.as_deref().unwrap_or_else(|| app.apis.get(&d.api).map_or("prod", |a| a.stage.as_str()))
}

/// A digest of what a deployment of the API captures, kept in the deployment's description:
/// a stage whose deployment has another one is redeployed (say, after an interrupted apply).
fn fingerprint(spec: &ApiSpec) -> String {
    let doc = json!({
        "apiKeySource": spec.api_key_source,
        "authorizers": spec.authorizers,
        "routes": spec.routes,
    });
    let digest = Sha256::digest(doc.to_string().as_bytes());
    format!("quarters app {}", &hex::encode(digest)[..16])
}

// ---- the plan ----

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create,
    Update(Vec<String>),
    Unchanged,
}

/// What a step is about; [`execute`] works out the requests again from the file, what exists
/// and the ids made so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Function(String),
    Api(String),
    Validator(String),
    Authorizer { api: String, name: String },
    Resource { api: String, path: String },
    Route { api: String, index: usize },
    Stage(String),
    Plan(String),
    Key(String),
    Domain(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `function counter`, `route GET /hello of api demo`...
    pub what: String,
    pub change: Change,
    pub action: Action,
}

impl Step {
    fn new(what: impl Into<String>, change: Change, action: Action) -> Step {
        Step { what: what.into(), change, action }
    }

    pub fn line(&self) -> String {
        match &self.change {
            Change::Create => format!("+ create {}", self.what),
            Change::Update(r) => format!("~ update {} ({})", self.what, r.join(", ")),
            Change::Unchanged => format!("= unchanged {}", self.what),
        }
    }
}

fn change_of(reasons: Vec<String>) -> Change {
    if reasons.is_empty() { Change::Unchanged } else { Change::Update(reasons) }
}

/// Compare the file with what exists: one step per object, in the order they are applied.
pub fn plan(app: &AppFile, pkgs: &BTreeMap<String, Package>, cur: &Current) -> Result<Vec<Step>> {
    let mut ids = Ids::from_current(cur);
    let mut steps = Vec::new();
    for (name, spec) in &app.functions {
        let pkg = pkgs.get(name).ok_or_else(|| anyhow!("functions.{name}: not packaged"))?;
        let action = Action::Function(name.clone());
        let what = format!("function {name}");
        match cur.functions.get(name) {
            None => {
                steps.push(Step::new(what, Change::Create, action));
                ids.functions.insert(name.clone(), ids.function_arn(name));
            }
            Some(cfg) => steps.push(Step::new(what, change_of(function_changes(name, spec, pkg, cfg)?), action)),
        }
    }
    for (field, f) in referenced_functions(app) {
        if !app.functions.contains_key(&f) && !cur.functions.contains_key(&f) {
            bail!("{field}: no function {f:?} in the file or on the server");
        }
    }
    for (api, spec) in &app.apis {
        let capi = cur.apis.get(api);
        let first = steps.len();
        let what = format!("api {api}");
        match capi {
            None => {
                steps.push(Step::new(what, Change::Create, Action::Api(api.clone())));
                ids.apis.insert(api.clone(), NEW.into());
                ids.resources.insert((api.clone(), "/".into()), NEW.into());
            }
            Some(c) => {
                let src = s(&c.doc, "apiKeySource").unwrap_or("HEADER");
                let reasons = if src == spec.api_key_source {
                    Vec::new()
                } else {
                    vec![format!("api key source {src} -> {}", spec.api_key_source)]
                };
                steps.push(Step::new(what, change_of(reasons), Action::Api(api.clone())));
            }
        }
        if spec.routes.iter().any(|r| !r.required.is_empty()) && !ids.validators.contains_key(api) {
            steps.push(Step::new(
                format!("request validator {VALIDATOR} of api {api}"),
                Change::Create,
                Action::Validator(api.clone()),
            ));
            ids.validators.insert(api.clone(), NEW.into());
        }
        for (name, az) in &spec.authorizers {
            let what = format!("authorizer {name} of api {api}");
            let action = Action::Authorizer { api: api.clone(), name: name.clone() };
            let key = (api.clone(), name.clone());
            match capi.and_then(|c| c.authorizer(name)) {
                None => {
                    steps.push(Step::new(what, Change::Create, action));
                    ids.authorizers.insert(key, NEW.into());
                }
                Some(c) => match authorizer_diff(&authorizer_body(name, az, &ids), c) {
                    AuthDiff::Same => steps.push(Step::new(what, Change::Unchanged, action)),
                    AuthDiff::Patch(r, _) => steps.push(Step::new(what, Change::Update(r), action)),
                    AuthDiff::Replace(mut r) => {
                        r.push("replaced: the type cannot be patched".into());
                        steps.push(Step::new(what, Change::Update(r), action));
                        ids.authorizers.insert(key, NEW.into());
                    }
                },
            }
        }
        let mut paths: Vec<String> = spec.routes.iter().flat_map(|r| resource_paths(&r.path)).collect();
        paths.sort_by_key(|p| (p.matches('/').count(), p.clone()));
        paths.dedup();
        for p in paths {
            if ids.resource(api, &p).is_none() {
                steps.push(Step::new(
                    format!("resource {p} of api {api}"),
                    Change::Create,
                    Action::Resource { api: api.clone(), path: p.clone() },
                ));
                ids.resources.insert((api.clone(), p), NEW.into());
            }
        }
        for (index, r) in spec.routes.iter().enumerate() {
            let what = format!("route {} {} of api {api}", r.method, r.path);
            let action = Action::Route { api: api.clone(), index };
            match capi.and_then(|c| c.method(&r.path, &r.method)) {
                None => steps.push(Step::new(what, Change::Create, action)),
                Some(m) => {
                    let (mut reasons, _) = method_diff(&desired_method(api, r, &ids), m);
                    reasons.extend(integration_diff(&desired_integration(r, &ids), m.get("methodIntegration")));
                    steps.push(Step::new(what, change_of(reasons), action));
                }
            }
        }
        let api_changed = steps[first..].iter().any(|s| s.change != Change::Unchanged);
        let what = format!("stage {} of api {api}", spec.stage);
        let action = Action::Stage(api.clone());
        match capi.and_then(|c| c.stage.as_ref()) {
            None => steps.push(Step::new(what, Change::Create, action)),
            Some(st) => {
                let mut reasons = Vec::new();
                let deployed = capi.and_then(|c| c.deployment.as_ref()).and_then(|d| s(d, "description"));
                if api_changed {
                    reasons.push("new deployment".to_string());
                } else if deployed != Some(fingerprint(spec).as_str()) {
                    reasons.push("new deployment: the deployed one is not this file's".to_string());
                }
                let vars: BTreeMap<String, String> = object(st.get("variables"))
                    .into_iter()
                    .map(|(k, v)| (k, v.as_str().unwrap_or_default().to_string()))
                    .collect();
                if vars != spec.variables {
                    reasons.push("variables".into());
                }
                steps.push(Step::new(what, change_of(reasons), action));
            }
        }
    }
    for (name, spec) in &app.plans {
        let what = format!("plan {name}");
        let action = Action::Plan(name.clone());
        match cur.plans.get(name) {
            None => {
                steps.push(Step::new(what, Change::Create, action));
                ids.plans.insert(name.clone(), NEW.into());
            }
            Some(p) => {
                let (reasons, _) = plan_diff(&plan_body(name, spec, app, &ids), &p.doc);
                steps.push(Step::new(what, change_of(reasons), action));
            }
        }
    }
    for (name, spec) in &app.keys {
        let what = format!("key {name}");
        let action = Action::Key(name.clone());
        match cur.keys.get(name) {
            None => {
                steps.push(Step::new(what, Change::Create, action));
                ids.keys.insert(name.clone(), NEW.into());
            }
            Some(k) => {
                if let Some(v) = &spec.value
                    && s(k, "value") != Some(v.as_str())
                {
                    bail!(
                        "keys.{name}.value: key {name} exists with another value, and an API key's value cannot change; \
                         delete it first (aws apigateway delete-api-key --api-key {}) or give it another name",
                        id_of(k)
                    );
                }
                let mut reasons = Vec::new();
                if k["enabled"].as_bool().unwrap_or(false) != spec.enabled {
                    reasons.push(if spec.enabled { "enabled" } else { "disabled" }.to_string());
                }
                let (join, leave) = key_membership(app, cur, &ids, name);
                reasons.extend(join.iter().map(|p| format!("joins plan {p}")));
                reasons.extend(leave.iter().map(|p| format!("leaves plan {p}")));
                steps.push(Step::new(what, change_of(reasons), action));
            }
        }
    }
    for (name, d) in &app.domains {
        let lname = name.to_ascii_lowercase();
        let what = format!("domain {lname}");
        let action = Action::Domain(name.clone());
        let change = match cur.domains.get(&lname) {
            None => Change::Create,
            Some(cd) => {
                let base = base_path_key(&d.base_path);
                let (api_id, stage) = (ids.api(&d.api), domain_stage(app, d));
                let mapped = cd.mappings.iter().find(|m| s(m, "basePath") == Some(base.as_str()));
                let target = format!("{}/{} -> api {} stage {stage}", name, d.base_path.trim_matches('/'), d.api);
                match mapped {
                    None => Change::Update(vec![format!("map {target}")]),
                    Some(m) if s(m, "restApiId") != Some(api_id.as_str()) || s(m, "stage") != Some(stage) => {
                        Change::Update(vec![format!("remap {target}")])
                    }
                    Some(_) => Change::Unchanged,
                }
            }
        };
        steps.push(Step::new(what, change, action));
    }
    Ok(steps)
}

/// Created, updated and unchanged steps.
pub fn counts(steps: &[Step]) -> (usize, usize, usize) {
    let c = steps.iter().filter(|s| s.change == Change::Create).count();
    let u = steps.iter().filter(|s| matches!(s.change, Change::Update(_))).count();
    (c, u, steps.len() - c - u)
}

// ---- talking to the server ----

/// An error answer of the server, with its AWS error type.
#[derive(Debug)]
pub struct ServerError {
    pub status: u16,
    pub kind: String,
    pub message: String,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (HTTP {})", self.kind, self.message, self.status)
    }
}

impl std::error::Error for ServerError {}

/// Requests to the Quarters endpoint of a [`Client`], keeping the AWS error type of failures.
struct Http<'c> {
    endpoint: String,
    http: reqwest::Client,
    client: &'c Client,
}

impl<'c> Http<'c> {
    fn new(client: &'c Client) -> Http<'c> {
        Http { endpoint: client.endpoint.clone(), http: reqwest::Client::new(), client }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Result<Value, ServerError>> {
        let mut req = self.http.request(method, format!("{}{}", self.endpoint, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.client.send(req, "lambda").await?;
        let status = resp.status().as_u16();
        let kind = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(':').next().unwrap_or(v).to_string());
        let text = resp.text().await?;
        let v: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status < 400 {
            return Ok(Ok(v));
        }
        let message = ["message", "Message"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str))
            .map(String::from)
            .or_else(|| v.as_str().map(String::from))
            .unwrap_or_default();
        let kind = kind.or_else(|| s(&v, "__type").map(String::from)).unwrap_or_else(|| format!("HTTP{status}"));
        Ok(Err(ServerError { status, kind, message }))
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value> {
        Ok(self.send(method, path, body).await??)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, ops: &[Value]) -> Result<Value> {
        self.call(reqwest::Method::PATCH, path, Some(&json!({ "patchOperations": ops }))).await
    }

    /// GET, with 404 as `None`.
    async fn find(&self, path: &str) -> Result<Option<Value>> {
        match self.send(reqwest::Method::GET, path, None).await? {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The `item` list of a collection.
    async fn items(&self, path: &str) -> Result<Vec<Value>> {
        Ok(self.get(path).await?["item"].as_array().cloned().unwrap_or_default())
    }
}

/// The one object of a list with this name (none, or an error if several have it).
fn by_name<'a>(list: &'a [Value], name: &str, field: &str, what: &str) -> Result<Option<&'a Value>> {
    let found: Vec<&Value> = list.iter().filter(|v| v["name"] == name).collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => bail!(
            "{field}: {} {what}s are named {name:?} ({}); names identify objects in an app file, so rename or delete all but one",
            many.len(),
            many.iter().map(|v| id_of(v)).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Read what exists of everything the file names.
pub async fn observe(client: &Client, app: &AppFile) -> Result<Current> {
    let h = Http::new(client);
    let mut cur = Current::default();
    let mut names: BTreeSet<String> = app.functions.keys().cloned().collect();
    names.extend(referenced_functions(app).into_iter().map(|(_, f)| f));
    for name in names {
        if let Some(v) = h.find(&format!("/2015-03-31/functions/{}", urlencode(&name))).await? {
            cur.functions.insert(name, v["Configuration"].clone());
        }
    }
    if !app.apis.is_empty() {
        let all = h.items("/restapis?limit=500").await?;
        for (name, spec) in &app.apis {
            let Some(doc) = by_name(&all, name, &format!("apis.{name}"), "REST API")? else { continue };
            let id = id_of(doc);
            let resources = h.items(&format!("/restapis/{id}/resources?embed=methods&limit=500")).await?;
            let authorizers = h.items(&format!("/restapis/{id}/authorizers?limit=500")).await?;
            let validators = h.items(&format!("/restapis/{id}/requestvalidators?limit=500")).await?;
            let stage = h.find(&format!("/restapis/{id}/stages/{}", urlencode(&spec.stage))).await?;
            let deployment = match stage.as_ref().and_then(|st| s(st, "deploymentId")) {
                Some(d) => h.find(&format!("/restapis/{id}/deployments/{}", urlencode(d))).await?,
                None => None,
            };
            cur.apis.insert(
                name.clone(),
                CurrentApi { doc: doc.clone(), resources, authorizers, validators, stage, deployment },
            );
        }
    }
    if !app.plans.is_empty() {
        let all = h.items("/usageplans?limit=500").await?;
        for name in app.plans.keys() {
            let Some(doc) = by_name(&all, name, &format!("plans.{name}"), "usage plan")? else { continue };
            let keys = h
                .items(&format!("/usageplans/{}/keys?limit=500", urlencode(&id_of(doc))))
                .await?
                .iter()
                .map(id_of)
                .collect();
            cur.plans.insert(name.clone(), CurrentPlan { doc: doc.clone(), keys });
        }
    }
    if !app.keys.is_empty() {
        let all = h.items("/apikeys?includeValues=true&limit=500").await?;
        for name in app.keys.keys() {
            if let Some(doc) = by_name(&all, name, &format!("keys.{name}"), "API key")? {
                cur.keys.insert(name.clone(), doc.clone());
            }
        }
    }
    for name in app.domains.keys() {
        let lname = name.to_ascii_lowercase();
        if h.find(&format!("/domainnames/{}", urlencode(&lname))).await?.is_some() {
            let mappings = h.items(&format!("/domainnames/{}/basepathmappings?limit=500", urlencode(&lname))).await?;
            cur.domains.insert(lname, CurrentDomain { mappings });
        }
    }
    Ok(cur)
}

// ---- applying ----

/// Wait until a function is Active and not being updated (immediate on Quarters; AWS takes a
/// moment).
async fn wait_function(h: &Http<'_>, name: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = h.get(&format!("/2015-03-31/functions/{}", urlencode(name))).await?;
        let cfg = &v["Configuration"];
        let state = s(cfg, "State").unwrap_or("Active");
        let update = s(cfg, "LastUpdateStatus").unwrap_or("Successful");
        if state == "Failed" || update == "Failed" {
            bail!(
                "function {name} failed: {}",
                s(cfg, "StateReason").or(s(cfg, "LastUpdateStatusReason")).unwrap_or("?")
            );
        }
        if state == "Active" && update != "InProgress" {
            return Ok(cfg.clone());
        }
        if Instant::now() > deadline {
            bail!("function {name} is still {state}/{update} after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

struct Executor<'a> {
    h: Http<'a>,
    app: &'a AppFile,
    pkgs: &'a BTreeMap<String, Package>,
    cur: &'a Current,
    ids: Ids,
    /// Replaced authorizers (api, id), deleted once the routes have moved to their successors.
    retired: Vec<(String, String)>,
}

impl Executor<'_> {
    fn api_id(&self, api: &str) -> Result<String> {
        self.ids.apis.get(api).cloned().ok_or_else(|| anyhow!("api {api} has no id yet"))
    }

    fn api_spec(&self, api: &str) -> Result<&ApiSpec> {
        self.app.apis.get(api).ok_or_else(|| anyhow!("no api {api} in the file"))
    }

    async fn run(&mut self, step: &Step) -> Result<()> {
        match &step.action {
            Action::Function(name) => self.function(name).await,
            Action::Api(api) => self.api(api).await,
            Action::Validator(api) => {
                let id = self.api_id(api)?;
                let body = json!({"name": VALIDATOR, "validateRequestParameters": true, "validateRequestBody": false});
                let v = self.h.post(&format!("/restapis/{id}/requestvalidators"), &body).await?;
                self.ids.validators.insert(api.clone(), id_of(&v));
                Ok(())
            }
            Action::Authorizer { api, name } => self.authorizer(api, name).await,
            Action::Resource { api, path } => {
                let id = self.api_id(api)?;
                let parent = self
                    .ids
                    .resource(api, &parent_path(path))
                    .ok_or_else(|| anyhow!("the parent of {path} does not exist"))?;
                let part = path.rsplit('/').next().unwrap_or_default();
                let v = self.h.post(&format!("/restapis/{id}/resources/{parent}"), &json!({"pathPart": part})).await?;
                self.ids.resources.insert((api.clone(), path.clone()), id_of(&v));
                Ok(())
            }
            Action::Route { api, index } => self.route(api, *index).await,
            Action::Stage(api) => {
                let id = self.api_id(api)?;
                self.delete_retired(api, &id).await?;
                let spec = self.api_spec(api)?;
                let body =
                    json!({"stageName": spec.stage, "variables": spec.variables, "description": fingerprint(spec)});
                self.h.post(&format!("/restapis/{id}/deployments"), &body).await?;
                Ok(())
            }
            Action::Plan(name) => self.plan(name).await,
            Action::Key(name) => self.key(name).await,
            Action::Domain(name) => self.domain(name).await,
        }
    }

    async fn function(&mut self, name: &str) -> Result<()> {
        let spec = self.app.functions.get(name).ok_or_else(|| anyhow!("no function {name}"))?;
        let pkg = self.pkgs.get(name).ok_or_else(|| anyhow!("function {name} is not packaged"))?;
        let path = format!("/2015-03-31/functions/{}", urlencode(name));
        match self.cur.functions.get(name) {
            None => {
                self.h.post("/2015-03-31/functions", &create_function_body(name, spec, pkg)).await?;
            }
            Some(cfg) => {
                let reasons = function_changes(name, spec, pkg, cfg)?;
                if reasons.iter().any(|r| r == "code") {
                    let zip = base64::engine::general_purpose::STANDARD.encode(&pkg.zip);
                    self.h.call(reqwest::Method::PUT, &format!("{path}/code"), Some(&json!({"ZipFile": zip}))).await?;
                    wait_function(&self.h, name).await?;
                }
                if reasons.iter().any(|r| r != "code") {
                    let body = json!({
                        "Runtime": pkg.runtime,
                        "Handler": pkg.handler,
                        "MemorySize": spec.memory,
                        "Timeout": spec.timeout,
                        "Environment": { "Variables": spec.environment },
                    });
                    self.h.call(reqwest::Method::PUT, &format!("{path}/configuration"), Some(&body)).await?;
                }
            }
        }
        let cfg = wait_function(&self.h, name).await?;
        if let Some(arn) = s(&cfg, "FunctionArn") {
            self.ids.functions.insert(name.to_string(), arn.to_string());
        }
        Ok(())
    }

    async fn api(&mut self, api: &str) -> Result<()> {
        let spec = self.api_spec(api)?;
        match self.cur.apis.get(api) {
            None => {
                let v = self.h.post("/restapis", &json!({"name": api, "apiKeySource": spec.api_key_source})).await?;
                let id = id_of(&v);
                let root = match s(&v, "rootResourceId") {
                    Some(r) => r.to_string(),
                    None => {
                        let res = self.h.items(&format!("/restapis/{id}/resources")).await?;
                        res.iter().find(|r| r["path"] == "/").map(id_of).unwrap_or_default()
                    }
                };
                self.ids.apis.insert(api.to_string(), id);
                self.ids.resources.insert((api.to_string(), "/".into()), root);
            }
            Some(c) => {
                let ops = [json!({"op": "replace", "path": "/apiKeySource", "value": spec.api_key_source})];
                self.h.patch(&format!("/restapis/{}", c.id()), &ops).await?;
            }
        }
        Ok(())
    }

    async fn authorizer(&mut self, api: &str, name: &str) -> Result<()> {
        let id = self.api_id(api)?;
        let spec = self.api_spec(api)?;
        let az = spec.authorizers.get(name).ok_or_else(|| anyhow!("no authorizer {name}"))?;
        let body = authorizer_body(name, az, &self.ids);
        let current = self.cur.apis.get(api).and_then(|c| c.authorizer(name));
        let create = match current {
            None => true,
            Some(c) => match authorizer_diff(&body, c) {
                AuthDiff::Same => false,
                AuthDiff::Patch(_, ops) => {
                    self.h.patch(&format!("/restapis/{id}/authorizers/{}", id_of(c)), &ops).await?;
                    false
                }
                AuthDiff::Replace(_) => {
                    // Out of the way under another name: the routes still use it until they move.
                    let old = id_of(c);
                    let ops = [json!({"op": "replace", "path": "/name", "value": format!("{name}-replaced-{old}")})];
                    self.h.patch(&format!("/restapis/{id}/authorizers/{old}"), &ops).await?;
                    self.retired.push((api.to_string(), old));
                    true
                }
            },
        };
        if create {
            let v = self.h.post(&format!("/restapis/{id}/authorizers"), &body).await?;
            self.ids.authorizers.insert((api.to_string(), name.to_string()), id_of(&v));
        }
        Ok(())
    }

    /// Delete the authorizers replaced in this API, now that the file's routes have left them; one
    /// that a method outside the file still uses is kept (and said so).
    async fn delete_retired(&mut self, api: &str, id: &str) -> Result<()> {
        let (mine, others): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.retired).into_iter().partition(|(a, _)| a == api);
        self.retired = others;
        for (_, old) in mine {
            match self.h.send(reqwest::Method::DELETE, &format!("/restapis/{id}/authorizers/{old}"), None).await? {
                Ok(_) => {}
                Err(e) if e.status == 409 => {
                    eprintln!("note: the replaced authorizer {old} of api {api} is kept: {}", e.message)
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn route(&mut self, api: &str, index: usize) -> Result<()> {
        let id = self.api_id(api)?;
        let route = self.api_spec(api)?.routes.get(index).ok_or_else(|| anyhow!("no route {index}"))?;
        let rid = self.ids.resource(api, &route.path).ok_or_else(|| anyhow!("no resource {}", route.path))?;
        let path = format!("/restapis/{id}/resources/{rid}/methods/{}", route.method);
        let dm = desired_method(api, route, &self.ids);
        let di = desired_integration(route, &self.ids);
        let current = self.cur.apis.get(api).and_then(|c| c.method(&route.path, &route.method));
        let put_integration = match current {
            None => {
                self.h.call(reqwest::Method::PUT, &path, Some(&dm)).await?;
                true
            }
            Some(m) => {
                let (_, ops) = method_diff(&dm, m);
                if !ops.is_empty() {
                    self.h.patch(&path, &ops).await?;
                }
                !integration_diff(&di, m.get("methodIntegration")).is_empty()
            }
        };
        if put_integration {
            self.h.call(reqwest::Method::PUT, &format!("{path}/integration"), Some(&di)).await?;
        }
        Ok(())
    }

    async fn plan(&mut self, name: &str) -> Result<()> {
        let spec = self.app.plans.get(name).ok_or_else(|| anyhow!("no plan {name}"))?;
        let body = plan_body(name, spec, self.app, &self.ids);
        match self.cur.plans.get(name) {
            None => {
                let v = self.h.post("/usageplans", &body).await?;
                self.ids.plans.insert(name.to_string(), id_of(&v));
            }
            Some(p) => {
                let (_, ops) = plan_diff(&body, &p.doc);
                if !ops.is_empty() {
                    self.h.patch(&format!("/usageplans/{}", id_of(&p.doc)), &ops).await?;
                }
            }
        }
        Ok(())
    }

    async fn key(&mut self, name: &str) -> Result<()> {
        let spec = self.app.keys.get(name).ok_or_else(|| anyhow!("no key {name}"))?;
        match self.cur.keys.get(name) {
            None => {
                let mut body = json!({"name": name, "enabled": spec.enabled});
                if let Some(v) = &spec.value {
                    body["value"] = json!(v);
                }
                let v = self.h.post("/apikeys", &body).await?;
                self.ids.keys.insert(name.to_string(), id_of(&v));
            }
            Some(k) => {
                if k["enabled"].as_bool().unwrap_or(false) != spec.enabled {
                    let ops = [json!({"op": "replace", "path": "/enabled", "value": spec.enabled.to_string()})];
                    self.h.patch(&format!("/apikeys/{}", id_of(k)), &ops).await?;
                }
            }
        }
        let kid = self.ids.keys.get(name).cloned().unwrap_or_default();
        let (join, leave) = key_membership(self.app, self.cur, &self.ids, name);
        // Leave first: a key may be in one plan per API stage.
        for plan in leave {
            let pid = self.ids.plans.get(&plan).cloned().unwrap_or_default();
            self.h.call(reqwest::Method::DELETE, &format!("/usageplans/{pid}/keys/{kid}"), None).await?;
        }
        for plan in join {
            let pid = self.ids.plans.get(&plan).cloned().unwrap_or_default();
            self.h.post(&format!("/usageplans/{pid}/keys"), &json!({"keyId": kid, "keyType": "API_KEY"})).await?;
        }
        Ok(())
    }

    async fn domain(&mut self, name: &str) -> Result<()> {
        let d = self.app.domains.get(name).ok_or_else(|| anyhow!("no domain {name}"))?;
        let lname = name.to_ascii_lowercase();
        let enc = urlencode(&lname);
        let base = base_path_key(&d.base_path);
        let api_id = self.api_id(&d.api)?;
        let stage = domain_stage(self.app, d);
        match self.cur.domains.get(&lname) {
            None => {
                self.h.post("/domainnames", &json!({"domainName": lname})).await?;
            }
            Some(cd) => {
                if let Some(m) = cd.mappings.iter().find(|m| s(m, "basePath") == Some(base.as_str())) {
                    if s(m, "restApiId") == Some(api_id.as_str()) && s(m, "stage") == Some(stage) {
                        return Ok(());
                    }
                    let path = format!("/domainnames/{enc}/basepathmappings/{}", urlencode(&base));
                    self.h.call(reqwest::Method::DELETE, &path, None).await?;
                }
            }
        }
        let body = json!({"restApiId": api_id, "stage": stage, "basePath": d.base_path.trim_matches('/')});
        self.h.post(&format!("/domainnames/{enc}/basepathmappings"), &body).await?;
        Ok(())
    }
}

/// Carry out the steps in order, printing each as it starts.
pub async fn execute(
    client: &Client,
    app: &AppFile,
    pkgs: &BTreeMap<String, Package>,
    cur: &Current,
    steps: &[Step],
) -> Result<()> {
    let mut ex = Executor { h: Http::new(client), app, pkgs, cur, ids: Ids::from_current(cur), retired: Vec::new() };
    for step in steps {
        println!("{}", step.line());
        if step.change == Change::Unchanged {
            continue;
        }
        let verb = if step.change == Change::Create { "create" } else { "update" };
        ex.run(step).await.with_context(|| format!("cannot {verb} {}", step.what))?;
    }
    Ok(())
}

/// `quarters deploy app.toml [--dry-run]`.
pub async fn deploy(client: &Client, path: &Path, dry_run: bool) -> Result<()> {
    let (app, warnings) = load(path)?;
    for w in &warnings {
        eprintln!("{w}");
    }
    if dry_run {
        println!("dry run of {} against {} (nothing is changed):", path.display(), client.endpoint);
    } else {
        println!("applying {} to {}", path.display(), client.endpoint);
    }
    let base = base_dir(path);
    let mut pkgs = BTreeMap::new();
    for (name, spec) in &app.functions {
        pkgs.insert(name.clone(), package(&base, name, spec)?);
    }
    let cur = observe(client, &app).await?;
    let steps = plan(&app, &pkgs, &cur)?;
    let (c, u, k) = counts(&steps);
    if dry_run {
        for s in &steps {
            println!("{}", s.line());
        }
        println!("{c} to create, {u} to update, {k} unchanged");
        return Ok(());
    }
    execute(client, &app, &pkgs, &cur, &steps).await?;
    if c + u == 0 {
        println!("0 created, 0 updated, {k} unchanged: nothing to change");
    } else {
        println!("{c} created, {u} updated, {k} unchanged");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[functions.hello]
path = "functions/hello"
runtime = "python3.12"
tenancy = "per-tenant"
memory = 256
timeout = 10
environment = { GREETING = "hi" }

[functions.auth]
path = "functions/auth"
runtime = "python3.12"

[apis.demo]
stage = "prod"
variables = { color = "blue" }

[apis.demo.authorizers.tokens]
type = "TOKEN"
function = "auth"
ttl = 60

[apis.demo.authorizers.jwt]
type = "JWT"
issuer = "https://issuer.example"
audience = ["a", "b"]
secret = "s3cret"
tenant_claim = "tenantId"
require = ["sub"]

[[apis.demo.routes]]
path = "/hello"
method = "get"
function = "hello"
authorizer = "tokens"
api_key_required = true
tenant = "context.authorizer.tenantId"

[[apis.demo.routes]]
path = "/items/{id}"
function = "hello"
tenant = "method.request.header.x-tenant-id"
required = ["method.request.header.x-tenant-id"]
parameters = { "integration.request.querystring.id" = "method.request.path.id" }

[plans.gold]
apis = ["demo"]
rate = 30.0
burst = 30
quota = { limit = 1000, period = "MONTH" }

[keys.blue]
value = "blue-key-0123456789abcdef"
plans = ["gold"]

[domains."*.API.example.test"]
api = "demo"
"#;

    fn example() -> AppFile {
        parse(EXAMPLE).expect("the example parses").0
    }

    fn pkgs(app: &AppFile, code: &[u8]) -> BTreeMap<String, Package> {
        app.functions
            .iter()
            .map(|(n, f)| {
                let zip = [n.as_bytes(), code].concat();
                (
                    n.clone(),
                    Package::new(zip, f.runtime.as_deref().unwrap_or("python3.12"), "lambda_function.lambda_handler"),
                )
            })
            .collect()
    }

    /// What the server would hold after applying `app`: the documents it stores, with the extra
    /// fields it adds.
    fn applied(app: &AppFile, pkgs: &BTreeMap<String, Package>) -> Current {
        let mut cur = Current::default();
        let mut ids = Ids::default();
        let mut n = 0;
        let mut next = |kind: &str| {
            n += 1;
            format!("{kind}{n:04}")
        };
        for (name, f) in &app.functions {
            let pkg = &pkgs[name];
            let arn = format!("arn:aws:lambda:us-east-1:000000000000:function:{name}");
            let mut cfg = json!({
                "FunctionName": name, "FunctionArn": arn, "Runtime": pkg.runtime, "Handler": pkg.handler,
                "MemorySize": f.memory, "Timeout": f.timeout, "CodeSha256": pkg.sha256, "State": "Active",
                "Role": ROLE, "PackageType": "Zip",
            });
            if !f.environment.is_empty() {
                cfg["Environment"] = json!({"Variables": f.environment});
            }
            if f.tenancy == "per-tenant" {
                cfg["TenancyConfig"] = json!({"TenantIsolationMode": "PER_TENANT"});
            }
            ids.functions.insert(name.clone(), arn);
            cur.functions.insert(name.clone(), cfg);
        }
        for (api, spec) in &app.apis {
            let id = next("api");
            ids.apis.insert(api.clone(), id.clone());
            let mut capi = CurrentApi {
                doc: json!({"id": id, "name": api, "apiKeySource": spec.api_key_source, "rootResourceId": "root"}),
                ..Default::default()
            };
            if spec.routes.iter().any(|r| !r.required.is_empty()) {
                let vid = next("val");
                ids.validators.insert(api.clone(), vid.clone());
                capi.validators.push(json!({"id": vid, "name": VALIDATOR, "validateRequestParameters": true}));
            }
            for (name, az) in &spec.authorizers {
                let aid = next("az");
                ids.authorizers.insert((api.clone(), name.clone()), aid.clone());
                let mut doc = authorizer_body(name, az, &ids);
                doc["id"] = json!(aid);
                doc["authType"] = json!("custom");
                capi.authorizers.push(doc);
            }
            let mut resources: BTreeMap<String, Value> = BTreeMap::new();
            resources.insert("/".into(), json!({"id": "root", "path": "/"}));
            for r in &spec.routes {
                for p in resource_paths(&r.path) {
                    let rid = next("res");
                    resources.entry(p.clone()).or_insert_with(|| json!({"id": rid, "path": p}));
                }
            }
            for r in &spec.routes {
                let res = resources.get_mut(&r.path).expect("resource");
                let mut m = desired_method(api, r, &ids);
                let mut i = desired_integration(r, &ids);
                i["timeoutInMillis"] = json!(29000);
                i["passthroughBehavior"] = json!("WHEN_NO_MATCH");
                m["httpMethod"] = json!(r.method);
                m["methodIntegration"] = i;
                res.as_object_mut().expect("object").entry("resourceMethods").or_insert_with(|| json!({}))[&r.method] =
                    m;
            }
            capi.resources = resources.into_values().collect();
            capi.stage = Some(json!({"stageName": spec.stage, "deploymentId": "dep1", "variables": spec.variables}));
            capi.deployment = Some(json!({"id": "dep1", "description": fingerprint(spec)}));
            cur.apis.insert(api.clone(), capi);
        }
        for (name, p) in &app.plans {
            let pid = next("plan");
            ids.plans.insert(name.clone(), pid.clone());
            let mut doc = plan_body(name, p, app, &ids);
            doc["id"] = json!(pid);
            cur.plans.insert(name.clone(), CurrentPlan { doc, keys: Vec::new() });
        }
        for (name, k) in &app.keys {
            let kid = next("key");
            let value = k.value.clone().unwrap_or_else(|| "generated-0123456789abcdef".into());
            cur.keys.insert(name.clone(), json!({"id": kid, "name": name, "value": value, "enabled": k.enabled}));
            for p in &k.plans {
                cur.plans.get_mut(p).expect("plan").keys.push(kid.clone());
            }
        }
        for (name, d) in &app.domains {
            let m = json!({"basePath": base_path_key(&d.base_path), "restApiId": ids.api(&d.api), "stage": domain_stage(app, d)});
            cur.domains.insert(name.to_ascii_lowercase(), CurrentDomain { mappings: vec![m] });
        }
        cur
    }

    fn lines(steps: &[Step]) -> Vec<String> {
        steps.iter().map(Step::line).collect()
    }

    #[test]
    fn the_example_parses_with_defaults() {
        let app = example();
        let hello = &app.functions["hello"];
        assert_eq!((hello.memory, hello.timeout, hello.tenancy.as_str()), (256, 10, "per-tenant"));
        let auth = &app.functions["auth"];
        assert_eq!((auth.memory, auth.timeout, auth.tenancy.as_str()), (128, 3, "none"));
        let demo = &app.apis["demo"];
        assert_eq!(demo.api_key_source, "HEADER");
        assert_eq!(demo.routes[0].method, "GET", "methods are upper-cased");
        assert_eq!(demo.routes[1].method, "ANY", "the default method");
        assert_eq!(demo.routes[1].integration, "AWS_PROXY");
        assert_eq!(demo.authorizers["tokens"].ttl, 60);
        assert!(app.keys["blue"].enabled);
        assert_eq!(
            jwt_settings(&demo.authorizers["jwt"]),
            [
                "issuer=https://issuer.example",
                "audience=a",
                "audience=b",
                "secret=s3cret",
                "require=sub",
                "tenantClaim=tenantId"
            ]
        );
        let p = method_parameters(&demo.routes[1]);
        assert_eq!(p.get("method.request.header.x-tenant-id"), Some(&true));
        assert_eq!(p.get("method.request.path.id"), Some(&false));
    }

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).expect_err("invalid"))
    }

    #[test]
    fn invalid_files_name_the_field() {
        let e = err("[functions.f]\npath = \"x\"\nmemroy = 128\n");
        assert!(e.contains("memroy") && e.contains("line 3"), "{e}");
        let e = err("[functions.f]\npath = \"x\"\ntenancy = \"tenant\"\n");
        assert!(e.contains("functions.f.tenancy"), "{e}");
        let e = err("[functions.f]\npath = \"x\"\nmemory = \"big\"\n");
        assert!(e.contains("memory") && e.contains("line 3"), "{e}");
        let route = |extra: &str| {
            format!(
                "[functions.f]\npath = \"x\"\n[apis.a]\n[[apis.a.routes]]\npath = \"/x\"\nfunction = \"f\"\n{extra}"
            )
        };
        let e = err(&route("authorizer = \"nope\"\n"));
        assert!(e.contains("apis.a.routes[0].authorizer"), "{e}");
        let e = err(&route("method = \"FETCH\"\n"));
        assert!(e.contains("apis.a.routes[0].method"), "{e}");
        let e = err(&route("tenant = \"header.x\"\n"));
        assert!(e.contains("apis.a.routes[0].tenant"), "{e}");
        let e = err(&route("required = [\"header.x\"]\n"));
        assert!(e.contains("apis.a.routes[0].required"), "{e}");
        let e = err(&route(
            "parameters = { \"integration.request.header.X-Amz-Tenant-Id\" = \"'a'\" }\ntenant = \"'b'\"\n",
        ));
        assert!(e.contains("apis.a.routes[0].parameters"), "{e}");
        let e = err(&route("[[apis.a.routes]]\npath = \"/x\"\nfunction = \"f\"\n"));
        assert!(e.contains("apis.a.routes[1]") && e.contains("twice"), "{e}");
        let e = err(&format!(
            "{}[[apis.a.routes]]\npath = \"/{{name}}/y\"\nfunction = \"f\"\n",
            route("").replace("/x", "/{id}")
        ));
        assert!(e.contains("apis.a.routes[1].path") && e.contains("{id}"), "{e}");
        let e = err(&route("").replace("/x", "/{proxy+}/y"));
        assert!(e.contains("apis.a.routes[0].path") && e.contains("last"), "{e}");
        let e = err("[apis.a]\n");
        assert!(e.contains("apis.a.routes"), "{e}");
        let e = err(&format!("{}[plans.p]\napis = [\"b\"]\n", route("")));
        assert!(e.contains("plans.p.apis"), "{e}");
        let e = err(&format!("{}[plans.p]\n[keys.k]\nvalue = \"short\"\n", route("")));
        assert!(e.contains("keys.k.value"), "{e}");
        let e = err(&format!("{}[keys.k]\nplans = [\"q\"]\n", route("")));
        assert!(e.contains("keys.k.plans"), "{e}");
        let e = err(&format!("{}[domains.\"x..y\"]\napi = \"a\"\n", route("")));
        assert!(e.contains("domains"), "{e}");
        let e = err("[apis.a.authorizers.z]\ntype = \"TOKEN\"\n[[apis.a.routes]]\npath = \"/\"\nfunction = \"f\"\n");
        assert!(e.contains("apis.a.authorizers.z.function"), "{e}");
        let e = err(
            "[apis.a.authorizers.z]\ntype = \"JWT\"\nissuer = \"i\"\n[[apis.a.routes]]\npath = \"/\"\nfunction = \"f\"\n",
        );
        assert!(e.contains("apis.a.authorizers.z") && e.contains("secret"), "{e}");
        let e = err("[apis.a.authorizers.z]\ntype = \"COGNITO\"\n[[apis.a.routes]]\npath = \"/\"\nfunction = \"f\"\n");
        assert!(e.contains("apis.a.authorizers.z.type"), "{e}");
    }

    #[test]
    fn warnings_for_tenancy_mismatches() {
        let (_, w) = parse(
            "[functions.f]\npath = \"x\"\ntenancy = \"per-tenant\"\n[apis.a]\n[[apis.a.routes]]\npath = \"/x\"\nfunction = \"f\"\n",
        )
        .expect("valid");
        assert!(w.iter().any(|w| w.contains("without a `tenant`")), "{w:?}");
    }

    #[test]
    fn everything_is_created_against_an_empty_server() {
        let app = example();
        let p = pkgs(&app, b"v1");
        let steps = plan(&app, &p, &Current::default()).expect("plan");
        assert_eq!(
            lines(&steps),
            [
                "+ create function auth",
                "+ create function hello",
                "+ create api demo",
                "+ create request validator quarters-required-parameters of api demo",
                "+ create authorizer jwt of api demo",
                "+ create authorizer tokens of api demo",
                "+ create resource /hello of api demo",
                "+ create resource /items of api demo",
                "+ create resource /items/{id} of api demo",
                "+ create route GET /hello of api demo",
                "+ create route ANY /items/{id} of api demo",
                "+ create stage prod of api demo",
                "+ create plan gold",
                "+ create key blue",
                "+ create domain *.api.example.test",
            ]
        );
        assert_eq!(counts(&steps), (15, 0, 0));
    }

    #[test]
    fn a_second_apply_changes_nothing() {
        let app = example();
        let p = pkgs(&app, b"v1");
        let cur = applied(&app, &p);
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert!(changed.is_empty(), "{changed:?}");
        assert!(lines(&steps).contains(&"= unchanged route GET /hello of api demo".to_string()));
        assert_eq!(counts(&steps), (0, 0, 11));
    }

    #[test]
    fn new_code_is_exactly_one_update() {
        let app = example();
        let cur = applied(&app, &pkgs(&app, b"v1"));
        let mut p = pkgs(&app, b"v1");
        p.insert("hello".into(), Package::new(b"hello v2".to_vec(), "python3.12", "lambda_function.lambda_handler"));
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert_eq!(changed, ["~ update function hello (code)"]);
    }

    #[test]
    fn config_changes_are_listed() {
        let app = example();
        let p = pkgs(&app, b"v1");
        let mut cur = applied(&app, &p);
        let cfg = cur.functions.get_mut("hello").expect("hello");
        cfg["MemorySize"] = json!(128);
        cfg["Environment"] = json!({"Variables": {"GREETING": "hello"}});
        let steps = plan(&app, &p, &cur).expect("plan");
        assert_eq!(steps[1].line(), "~ update function hello (memory 128 -> 256, environment)");
        cur.functions.get_mut("hello").expect("hello").as_object_mut().expect("object").remove("TenancyConfig");
        let e = plan(&app, &p, &cur).expect_err("tenancy cannot change").to_string();
        assert!(e.contains("functions.hello.tenancy"), "{e}");
    }

    #[test]
    fn route_and_api_changes_redeploy_the_stage() {
        let mut app = example();
        let p = pkgs(&app, b"v1");
        let cur = applied(&app, &p);
        let demo = app.apis.get_mut("demo").expect("demo");
        demo.routes[0].authorizer = None;
        demo.routes[0].api_key_required = false;
        demo.routes[1].function = "auth".into();
        demo.variables.insert("size".into(), "xl".into());
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert_eq!(
            changed,
            [
                "~ update route GET /hello of api demo (authorizer, api key not required)",
                "~ update route ANY /items/{id} of api demo (function hello -> auth)",
                "~ update stage prod of api demo (new deployment, variables)",
            ]
        );
        let ids = Ids::from_current(&cur);
        let m = cur.apis["demo"].method("/hello", "GET").expect("method");
        let (_, ops) = method_diff(&desired_method("demo", &app.apis["demo"].routes[0], &ids), m);
        assert_eq!(
            ops,
            [
                json!({"op": "replace", "path": "/authorizationType", "value": "NONE"}),
                json!({"op": "remove", "path": "/authorizerId"}),
                json!({"op": "replace", "path": "/apiKeyRequired", "value": "false"}),
            ]
        );
    }

    #[test]
    fn an_interrupted_apply_is_redeployed() {
        let app = example();
        let p = pkgs(&app, b"v1");
        let mut cur = applied(&app, &p);
        cur.apis.get_mut("demo").expect("demo").deployment = Some(json!({"id": "dep0", "description": "by hand"}));
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert_eq!(changed, ["~ update stage prod of api demo (new deployment: the deployed one is not this file's)"]);
    }

    #[test]
    fn authorizers_are_patched_or_replaced() {
        let mut app = example();
        let p = pkgs(&app, b"v1");
        let cur = applied(&app, &p);
        let demo = app.apis.get_mut("demo").expect("demo");
        demo.authorizers.get_mut("tokens").expect("tokens").ttl = 0;
        demo.authorizers.get_mut("jwt").expect("jwt").issuer = Some("https://other.example".into());
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert_eq!(
            changed,
            [
                "~ update authorizer jwt of api demo (JWT settings)",
                "~ update authorizer tokens of api demo (ttl 60 -> 0)",
                "~ update stage prod of api demo (new deployment)",
            ]
        );
        let ids = Ids::from_current(&cur);
        let jwt = cur.apis["demo"].authorizer("jwt").expect("jwt");
        let body = authorizer_body("jwt", &app.apis["demo"].authorizers["jwt"], &ids);
        let AuthDiff::Patch(_, ops) = authorizer_diff(&body, jwt) else { panic!("JWT settings are patched") };
        assert_eq!(
            ops,
            [
                json!({"op": "remove", "path": "/providerARNs", "value": "issuer=https://issuer.example"}),
                json!({"op": "add", "path": "/providerARNs", "value": "issuer=https://other.example"}),
            ]
        );
        let az = cur.apis["demo"].authorizer("tokens").expect("tokens");
        assert_eq!(
            authorizer_diff(&authorizer_body("tokens", &app.apis["demo"].authorizers["tokens"], &ids), az),
            AuthDiff::Patch(
                vec!["ttl 60 -> 0".into()],
                vec![json!({"op": "replace", "path": "/authorizerResultTtlInSeconds", "value": "0"})]
            )
        );
    }

    #[test]
    fn a_replaced_authorizer_updates_its_routes() {
        let mut app = example();
        let p = pkgs(&app, b"v1");
        let cur = applied(&app, &p);
        let demo = app.apis.get_mut("demo").expect("demo");
        let tokens = demo.authorizers.get_mut("tokens").expect("tokens");
        tokens.kind = "REQUEST".into();
        tokens.identity_source = Some("method.request.header.Authorization".into());
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert_eq!(
            changed,
            [
                "~ update authorizer tokens of api demo (type TOKEN -> REQUEST, replaced: the type cannot be patched)",
                "~ update route GET /hello of api demo (authorizer)",
                "~ update stage prod of api demo (new deployment)",
            ]
        );
    }

    #[test]
    fn plan_key_and_domain_changes() {
        let mut app = example();
        let p = pkgs(&app, b"v1");
        let cur = applied(&app, &p);
        let gold = app.plans.get_mut("gold").expect("gold");
        gold.rate = Some(10.5);
        gold.burst = None;
        gold.quota = None;
        app.plans.insert("silver".into(), PlanSpec { apis: vec!["demo".into()], rate: None, burst: None, quota: None });
        app.keys.get_mut("blue").expect("blue").plans = vec!["silver".into()];
        app.domains.values_mut().for_each(|d| d.base_path = "v1".into());
        let steps = plan(&app, &p, &cur).expect("plan");
        let changed: Vec<String> = steps.iter().filter(|s| s.change != Change::Unchanged).map(Step::line).collect();
        assert_eq!(
            changed,
            [
                "~ update plan gold (throttle, quota)",
                "+ create plan silver",
                "~ update key blue (joins plan silver, leaves plan gold)",
                "~ update domain *.api.example.test (map *.API.example.test/v1 -> api demo stage prod)",
            ]
        );
        let ids = Ids::from_current(&cur);
        let (_, ops) = plan_diff(&plan_body("gold", &app.plans["gold"], &app, &ids), &cur.plans["gold"].doc);
        assert_eq!(
            ops,
            [
                json!({"op": "replace", "path": "/throttle/rateLimit", "value": "10.5"}),
                json!({"op": "remove", "path": "/throttle/burstLimit"}),
                json!({"op": "remove", "path": "/quota"}),
            ]
        );
        let mut other = cur.plans["gold"].doc.clone();
        other["apiStages"] = json!([{"apiId": "zzz", "stage": "prod"}]);
        let (reasons, ops) = plan_diff(&plan_body("gold", &example().plans["gold"], &app, &ids), &other);
        assert_eq!(reasons, ["stages"]);
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[1], json!({"op": "remove", "path": "/apiStages", "value": "zzz:prod"}));
    }

    #[test]
    fn a_key_value_cannot_change() {
        let mut app = example();
        let p = pkgs(&app, b"v1");
        let cur = applied(&app, &p);
        app.keys.get_mut("blue").expect("blue").value = Some("another-value-0123456789".into());
        let e = plan(&app, &p, &cur).expect_err("value").to_string();
        assert!(e.contains("keys.blue.value"), "{e}");
    }

    #[test]
    fn routes_may_call_functions_on_the_server_only() {
        let text = "[apis.a]\n[[apis.a.routes]]\npath = \"/x\"\nfunction = \"elsewhere\"\n";
        let (app, _) = parse(text).expect("valid");
        let e = plan(&app, &BTreeMap::new(), &Current::default()).expect_err("missing").to_string();
        assert!(e.contains("apis.a.routes[0].function") && e.contains("elsewhere"), "{e}");
        let mut cur = Current::default();
        cur.functions.insert(
            "elsewhere".into(),
            json!({"FunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:elsewhere"}),
        );
        let steps = plan(&app, &BTreeMap::new(), &cur).expect("plan");
        assert_eq!(steps[0].line(), "+ create api a");
        let ids = Ids::from_current(&cur);
        let i = desired_integration(&app.apis["a"].routes[0], &ids);
        assert_eq!(
            i["uri"],
            "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:elsewhere/invocations"
        );
        assert_eq!(uri_function(i["uri"].as_str().expect("uri")).as_deref(), Some("elsewhere"));
    }

    #[test]
    fn packages_are_reproducible() {
        let dir = std::env::temp_dir().join(format!("quarters-app-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("f/pkg/__pycache__")).expect("mkdir");
        std::fs::write(dir.join("f/lambda_function.py"), "def lambda_handler(e, c):\n    return 1\n").expect("write");
        std::fs::write(dir.join("f/pkg/mod.py"), "X = 1\n").expect("write");
        let spec = FunctionSpec {
            path: "f".into(),
            runtime: Some("python3.12".into()),
            handler: None,
            memory: 128,
            timeout: 3,
            tenancy: "none".into(),
            environment: BTreeMap::new(),
        };
        let a = package(&dir, "f", &spec).expect("package");
        assert_eq!(a.handler, "lambda_function.lambda_handler");
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(dir.join("f/pkg/mod.py"), "X = 1\n").expect("touch");
        std::fs::write(dir.join("f/pkg/__pycache__/mod.cpython-311.pyc"), "junk").expect("pyc");
        let b = package(&dir, "f", &spec).expect("package");
        assert_eq!(a.sha256, b.sha256, "timestamps and __pycache__ do not change the package");
        std::fs::write(dir.join("f/pkg/mod.py"), "X = 2\n").expect("write");
        let c = package(&dir, "f", &spec).expect("package");
        assert_ne!(a.sha256, c.sha256);
        let e = package(&dir, "g", &FunctionSpec { path: "missing".into(), ..spec }).expect_err("missing");
        assert!(e.to_string().contains("functions.g.path"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn uris_and_paths() {
        assert_eq!(uri_function("counter").as_deref(), Some("counter"));
        assert_eq!(uri_function("arn:aws:lambda:us-east-1:000000000000:function:c:live").as_deref(), Some("c"));
        assert_eq!(resource_paths("/a/{b}/c"), ["/a", "/a/{b}", "/a/{b}/c"]);
        assert!(resource_paths("/").is_empty());
        assert_eq!(parent_path("/a"), "/");
        assert_eq!(parent_path("/a/{b}"), "/a");
        assert_eq!(base_path_key(""), "(none)");
        assert_eq!(base_path_key("/v1/"), "v1");
    }
}

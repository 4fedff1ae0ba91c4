//! The control plane: functions, versions, aliases and settings, persisted in SQLite and
//! served from memory.
//!
//! Every change is computed on a copy of the function's entry, written to the store, and only
//! then swapped into the in-memory registry, so a failed write changes nothing and the invoke
//! path never waits on the database.

mod code;
mod layers;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use code::CodeStore;
use layers::LayerRegistry;
pub use layers::{LayerVersion, MAX_LAYERS, NewLayer, layer_name};
use quarters_types::time::now_ms;
use quarters_types::{Arns, CodeInfo, FunctionConfig, ImageSettings, Qualifier, ValidationError, VersionRecord};
use serde::{Deserialize, Serialize};
use store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(ValidationError),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ControlError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::Invalid(ValidationError::invalid(msg))
    }

    pub(crate) fn io(e: std::io::Error) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<ValidationError> for ControlError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(e)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// Extra versions and the share of invocations each gets.
    pub routing: BTreeMap<String, f64>,
    pub revision_id: String,
}

/// One function: `$LATEST`, its published versions, aliases and settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionEntry {
    /// Unique per incarnation: a function deleted and created again gets a new uid.
    pub uid: String,
    pub latest: VersionRecord,
    pub versions: BTreeMap<u64, VersionRecord>,
    pub aliases: BTreeMap<String, AliasRecord>,
    pub reserved_concurrency: Option<u32>,
    /// Beyond Lambda: the most invocations one tenant may have in flight.
    #[serde(default)]
    pub tenant_concurrency: Option<u32>,
    /// Tenant-ready pool sizes by qualifier (PutProvisionedConcurrencyConfig), with the time
    /// each was set.
    #[serde(default)]
    pub provisioned: BTreeMap<String, (u32, u64)>,
    /// Asynchronous-invocation settings by qualifier (PutFunctionEventInvokeConfig).
    #[serde(default)]
    pub event_invoke: BTreeMap<String, EventInvokeSettings>,
    pub next_version: u64,
    pub tags: BTreeMap<String, String>,
}

/// How asynchronous invocations of one qualifier are retried and where their results go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInvokeSettings {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_s: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: u64,
}

/// What CreateFunction asks for, already parsed from the wire.
#[derive(Debug, Clone)]
pub struct NewFunction {
    pub config: FunctionConfig,
    pub zip: Vec<u8>,
    /// Layer version ARNs, resolved into `config.layers` at creation.
    pub layer_arns: Vec<String>,
    pub publish: bool,
    pub tags: BTreeMap<String, String>,
}

/// A resolved invocation target.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub entry: Arc<FunctionEntry>,
    pub version: VersionRecord,
    pub task_dir: PathBuf,
    /// The merged layers, mounted at `/opt` (none without layers).
    pub opt_dir: Option<PathBuf>,
    /// A container image's unpacked root (image functions only).
    pub image_root: Option<PathBuf>,
}

pub struct ControlPlane {
    store: Mutex<Store>,
    code: CodeStore,
    /// Where container images are unpacked (`<data dir>/images`).
    images_dir: PathBuf,
    registry: RwLock<HashMap<String, Arc<FunctionEntry>>>,
    layers: RwLock<LayerRegistry>,
    /// Serialises changes, so each is a read-modify-write of one consistent state.
    writer: Mutex<()>,
    pub arns: Arns,
    pub account_concurrency: u32,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ControlPlane {
    /// Open (or create) the state under `data_dir` and load every function.
    pub fn open(data_dir: &Path, arns: Arns, account_concurrency: u32) -> Result<Self, ControlError> {
        std::fs::create_dir_all(data_dir).map_err(ControlError::io)?;
        let store = Store::open(&data_dir.join("state.db"))?;
        let code = CodeStore::open(data_dir.join("code")).map_err(ControlError::io)?;
        let mut registry = HashMap::new();
        for entry in store.load_all()? {
            // The merged /opt trees are derived data: remake any that went missing.
            for v in std::iter::once(&entry.latest).chain(entry.versions.values()) {
                if !v.config.layers.is_empty() {
                    let codes: Vec<CodeInfo> = v.config.layers.iter().map(|l| l.code.clone()).collect();
                    if let Err(e) = code.opt_dir(&codes) {
                        tracing::error!(function = %entry.latest.config.name, error = %e, "cannot rebuild /opt");
                    }
                }
            }
            registry.insert(entry.latest.config.name.clone(), Arc::new(entry));
        }
        let layers = LayerRegistry::load(store.load_layers()?);
        Ok(Self {
            store: Mutex::new(store),
            code,
            images_dir: data_dir.join("images"),
            registry: RwLock::new(registry),
            layers: RwLock::new(layers),
            writer: Mutex::new(()),
            arns,
            account_concurrency,
        })
    }

    pub fn code_store(&self) -> &CodeStore {
        &self.code
    }

    pub fn get(&self, name: &str) -> Result<Arc<FunctionEntry>, ControlError> {
        self.registry
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(name, None))
    }

    pub fn list(&self) -> Vec<Arc<FunctionEntry>> {
        let mut v: Vec<_> = self.registry.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        v.sort_by(|a, b| a.latest.config.name.cmp(&b.latest.config.name));
        v
    }

    pub fn not_found(&self, name: &str, qualifier: Option<&str>) -> ControlError {
        let arn = match qualifier {
            Some(q) => self.arns.qualified(name, q),
            None => self.arns.function(name),
        };
        ControlError::NotFound(format!("Function not found: {arn}"))
    }

    /// Persist and publish a new state of one function (or its removal).
    fn commit(&self, name: &str, entry: Option<FunctionEntry>) -> Result<Option<Arc<FunctionEntry>>, ControlError> {
        let mut store = lock(&self.store);
        match &entry {
            Some(e) => store.save(name, e)?,
            None => store.delete(name)?,
        }
        let mut reg = self.registry.write().unwrap_or_else(|e| e.into_inner());
        Ok(match entry {
            Some(e) => {
                let e = Arc::new(e);
                reg.insert(name.to_owned(), e.clone());
                Some(e)
            }
            None => {
                reg.remove(name);
                None
            }
        })
    }

    fn new_version(&self, version: String, config: FunctionConfig, code: CodeInfo, generation: u64) -> VersionRecord {
        VersionRecord {
            version,
            config,
            code,
            revision_id: uuid::Uuid::new_v4().to_string(),
            last_modified_ms: now_ms(),
            generation,
        }
    }

    pub fn create(&self, mut new: NewFunction) -> Result<Arc<FunctionEntry>, ControlError> {
        new.config.layers = self.resolve_layers(&new.layer_arns)?;
        let _w = lock(&self.writer);
        let name = new.config.name.clone();
        if self.get(&name).is_ok() {
            return Err(ControlError::Conflict(format!("Function already exist: {name}")));
        }
        let code = match &new.config.image {
            Some(image) => image_code(image),
            None => self.code.put(&new.zip)?,
        };
        let latest = self.new_version("$LATEST".into(), new.config, code, 1);
        let mut entry = FunctionEntry {
            uid: uuid::Uuid::new_v4().simple().to_string(),
            latest,
            versions: BTreeMap::new(),
            aliases: BTreeMap::new(),
            reserved_concurrency: None,
            tenant_concurrency: None,
            provisioned: BTreeMap::new(),
            event_invoke: BTreeMap::new(),
            next_version: 1,
            tags: new.tags,
        };
        if new.publish {
            publish_into(&mut entry, None);
        }
        let e = self.commit(&name, Some(entry))?;
        e.ok_or_else(|| ControlError::Internal("commit lost the entry".into()))
    }

    /// Apply a change to one function under the writer lock.
    fn modify<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut FunctionEntry) -> Result<T, ControlError>,
    ) -> Result<(Arc<FunctionEntry>, T), ControlError> {
        let _w = lock(&self.writer);
        let mut entry = (*self.get(name)?).clone();
        let out = f(&mut entry)?;
        let e =
            self.commit(name, Some(entry))?.ok_or_else(|| ControlError::Internal("commit lost the entry".into()))?;
        Ok((e, out))
    }

    pub fn update_code(
        &self,
        name: &str,
        zip: &[u8],
        publish: bool,
        revision_id: Option<&str>,
    ) -> Result<Arc<FunctionEntry>, ControlError> {
        let code = self.code.put(zip)?;
        self.modify(name, |e| {
            check_revision(&e.latest.revision_id, revision_id)?;
            if e.latest.config.image.is_some() {
                return Err(ControlError::invalid(
                    "Please provide ImageUri when updating a function with packageType Image.",
                ));
            }
            let generation = e.latest.generation + 1;
            e.latest = self.new_version("$LATEST".into(), e.latest.config.clone(), code, generation);
            if publish {
                publish_into(e, None);
            }
            Ok(())
        })
        .map(|(e, ())| e)
    }

    /// UpdateFunctionCode of an image function: the newly pulled image.
    pub fn update_image(
        &self,
        name: &str,
        image: ImageSettings,
        publish: bool,
        revision_id: Option<&str>,
    ) -> Result<Arc<FunctionEntry>, ControlError> {
        self.modify(name, |e| {
            check_revision(&e.latest.revision_id, revision_id)?;
            if e.latest.config.image.is_none() {
                return Err(ControlError::invalid(
                    "Please provide ZipFile or S3Bucket and S3Key when the function's PackageType is Zip.",
                ));
            }
            let generation = e.latest.generation + 1;
            let code = image_code(&image);
            let mut config = e.latest.config.clone();
            config.image = Some(image);
            e.latest = self.new_version("$LATEST".into(), config, code, generation);
            if publish {
                publish_into(e, None);
            }
            Ok(())
        })
        .map(|(e, ())| e)
    }

    pub fn update_config(
        &self,
        name: &str,
        revision_id: Option<&str>,
        apply: impl FnOnce(&mut FunctionConfig) -> Result<(), ControlError>,
    ) -> Result<Arc<FunctionEntry>, ControlError> {
        self.modify(name, |e| {
            check_revision(&e.latest.revision_id, revision_id)?;
            let mut config = e.latest.config.clone();
            apply(&mut config)?;
            let generation = e.latest.generation + 1;
            e.latest = self.new_version("$LATEST".into(), config, e.latest.code.clone(), generation);
            Ok(())
        })
        .map(|(e, ())| e)
    }

    pub fn publish_version(
        &self,
        name: &str,
        description: Option<String>,
        code_sha: Option<&str>,
        revision_id: Option<&str>,
    ) -> Result<VersionRecord, ControlError> {
        let (_, v) = self.modify(name, |e| {
            check_revision(&e.latest.revision_id, revision_id)?;
            if let Some(sha) = code_sha.filter(|s| !s.is_empty())
                && sha != e.latest.code.sha256_b64
            {
                return Err(ControlError::invalid(format!(
                    "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the CodeSHA256 in $LATEST.",
                    e.latest.code.sha256_b64
                )));
            }
            Ok(publish_into(e, description))
        })?;
        Ok(v)
    }

    /// Delete a function, or one published version of it. Returns the function's uid.
    pub fn delete(&self, name: &str, qualifier: Option<&Qualifier>) -> Result<String, ControlError> {
        let _w = lock(&self.writer);
        let entry = self.get(name)?;
        match qualifier {
            None | Some(Qualifier::Latest) => {
                self.commit(name, None)?;
            }
            Some(Qualifier::Version(n)) => {
                if !entry.versions.contains_key(n) {
                    return Err(self.not_found(name, Some(&n.to_string())));
                }
                if let Some(a) = entry
                    .aliases
                    .values()
                    .find(|a| a.function_version == n.to_string() || a.routing.contains_key(&n.to_string()))
                {
                    return Err(ControlError::Conflict(format!(
                        "Unable to delete version because the following aliases reference it: [{}]",
                        a.name
                    )));
                }
                let mut e = (*entry).clone();
                e.versions.remove(n);
                self.commit(name, Some(e))?;
            }
            Some(Qualifier::Alias(_)) => {
                return Err(ControlError::invalid(
                    "Deletion of aliases is not supported by DeleteFunction; use DeleteAlias.",
                ));
            }
        }
        Ok(entry.uid.clone())
    }

    pub fn put_alias(
        &self,
        name: &str,
        alias: AliasRecord,
        create: bool,
        revision_id: Option<&str>,
    ) -> Result<AliasRecord, ControlError> {
        quarters_types::validate_alias_name(&alias.name)?;
        let arns = self.arns.clone();
        let (_, a) = self.modify(name, |e| {
            let exists = e.aliases.get(&alias.name);
            match (create, exists) {
                (true, Some(_)) => {
                    return Err(ControlError::Conflict(format!(
                        "Alias already exists: {}",
                        arns.qualified(name, &alias.name)
                    )));
                }
                (false, None) => {
                    return Err(ControlError::NotFound(format!(
                        "Alias not found: {}",
                        arns.qualified(name, &alias.name)
                    )));
                }
                (false, Some(old)) => check_revision(&old.revision_id, revision_id)?,
                (true, None) => {}
            }
            for v in std::iter::once(&alias.function_version).chain(alias.routing.keys()) {
                let ok = v == "$LATEST" || v.parse::<u64>().ok().is_some_and(|n| e.versions.contains_key(&n));
                if !ok {
                    return Err(ControlError::NotFound(format!("Function not found: {}", arns.qualified(name, v))));
                }
            }
            for w in alias.routing.values() {
                if !(0.0..=1.0).contains(w) {
                    return Err(ControlError::invalid("AdditionalVersionWeights values must be between 0.0 and 1.0"));
                }
            }
            e.aliases.insert(alias.name.clone(), alias.clone());
            Ok(alias)
        })?;
        Ok(a)
    }

    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<(), ControlError> {
        self.modify(name, |e| {
            e.aliases.remove(alias);
            Ok(())
        })
        .map(|_| ())
    }

    pub fn set_concurrency(&self, name: &str, reserved: Option<u32>) -> Result<(), ControlError> {
        let limit = self.account_concurrency;
        self.modify(name, |e| {
            if let Some(n) = reserved {
                let others: u32 = self
                    .list()
                    .iter()
                    .filter(|o| o.uid != e.uid)
                    .filter_map(|o| o.reserved_concurrency)
                    .sum();
                let floor = quarters_types::limits::UNRESERVED_MIN.min(limit);
                if others + n > limit.saturating_sub(floor) {
                    return Err(ControlError::invalid(format!(
                        "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{floor}]."
                    )));
                }
            }
            e.reserved_concurrency = reserved;
            Ok(())
        })
        .map(|_| ())
    }

    pub fn set_provisioned(&self, name: &str, qualifier: &str, size: Option<u32>) -> Result<(), ControlError> {
        self.modify(name, |e| {
            match size {
                Some(n) => {
                    e.provisioned.insert(qualifier.to_owned(), (n, now_ms()));
                }
                None => {
                    e.provisioned.remove(qualifier);
                }
            }
            Ok(())
        })
        .map(|_| ())
    }

    pub fn set_event_invoke(
        &self,
        name: &str,
        qualifier: &str,
        settings: Option<EventInvokeSettings>,
    ) -> Result<(), ControlError> {
        self.modify(name, |e| {
            match settings {
                Some(s) => {
                    e.event_invoke.insert(qualifier.to_owned(), s);
                }
                None => {
                    e.event_invoke.remove(qualifier);
                }
            }
            Ok(())
        })
        .map(|_| ())
    }

    pub fn set_tenant_concurrency(&self, name: &str, limit: Option<u32>) -> Result<(), ControlError> {
        self.modify(name, |e| {
            e.tenant_concurrency = limit;
            Ok(())
        })
        .map(|_| ())
    }

    /// Find what a (name, qualifier) invokes. An alias with routing weights picks a version.
    pub fn resolve(&self, name: &str, qualifier: Option<&Qualifier>) -> Result<Resolved, ControlError> {
        let entry = self.get(name)?;
        let version = match qualifier {
            None | Some(Qualifier::Latest) => entry.latest.clone(),
            Some(Qualifier::Version(n)) => {
                entry.versions.get(n).cloned().ok_or_else(|| self.not_found(name, Some(&n.to_string())))?
            }
            Some(Qualifier::Alias(a)) => {
                let alias = entry.aliases.get(a).ok_or_else(|| self.not_found(name, Some(a)))?;
                let mut chosen = alias.function_version.clone();
                let roll: f64 = random_unit();
                let mut acc = 0.0;
                for (v, w) in &alias.routing {
                    acc += w;
                    if roll < acc {
                        chosen = v.clone();
                        break;
                    }
                }
                match chosen.parse::<u64>() {
                    Ok(n) => entry.versions.get(&n).cloned().ok_or_else(|| self.not_found(name, Some(&chosen)))?,
                    Err(_) => entry.latest.clone(),
                }
            }
        };
        let task_dir = self.code.task_dir(&version.code);
        let opt_dir = (!version.config.layers.is_empty())
            .then(|| self.code.opt_path(&version.config.layers.iter().map(|l| l.code.clone()).collect::<Vec<_>>()));
        let image_root =
            version.config.image.as_ref().map(|i| quarters_image::ImageStore::rootfs_path(&self.images_dir, &i.digest));
        Ok(Resolved { entry, version, task_dir, opt_dir, image_root })
    }

    /// Total stored code size, for GetAccountSettings.
    pub fn total_code_size(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.list()
            .iter()
            .flat_map(|e| std::iter::once(&e.latest).chain(e.versions.values()))
            .filter(|v| seen.insert(v.code.sha256_hex.clone()))
            .map(|v| v.code.size)
            .sum()
    }
}

fn random_unit() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() >> 75;
    bits as f64 / (1u64 << 53) as f64
}

fn check_revision(current: &str, asked: Option<&str>) -> Result<(), ControlError> {
    match asked {
        Some(r) if !r.is_empty() && r != current => Err(ControlError::PreconditionFailed(
            "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into(),
        )),
        _ => Ok(()),
    }
}

/// Publish `$LATEST` as a new version, unless the newest version already has its code and
/// configuration (as Lambda does).
fn publish_into(e: &mut FunctionEntry, description: Option<String>) -> VersionRecord {
    if let Some((_, last)) = e.versions.iter().next_back()
        && last.code == e.latest.code
        && last.config == e.latest.config
        && description.is_none()
    {
        return last.clone();
    }
    let n = e.next_version;
    e.next_version += 1;
    let mut config = e.latest.config.clone();
    if let Some(d) = description {
        config.description = d;
    }
    let v = VersionRecord {
        version: n.to_string(),
        config,
        code: e.latest.code.clone(),
        revision_id: uuid::Uuid::new_v4().to_string(),
        last_modified_ms: now_ms(),
        generation: 1,
    };
    e.versions.insert(n, v.clone());
    v
}

/// An image function's code: the image's manifest digest (as AWS reports it, in hex), no size.
fn image_code(image: &ImageSettings) -> CodeInfo {
    let hex = image.digest.trim_start_matches("sha256:").to_string();
    CodeInfo { sha256_b64: hex.clone(), sha256_hex: hex, size: 0 }
}

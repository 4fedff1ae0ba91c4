//! Layers: versioned zips a function mounts, in order, under `/opt`.
//!
//! A layer version's content lives in the code store like a function's. A function's
//! configuration keeps the ARN and the content of each layer it uses, so deleting a layer
//! version (which only stops new use, as on Lambda) never breaks a function; version numbers are
//! never reused.

use std::collections::BTreeMap;

use quarters_types::time::now_ms;
use quarters_types::{CodeInfo, LayerRef, Runtime, ValidationError};
use serde::{Deserialize, Serialize};

use crate::{ControlError, ControlPlane, lock};

/// The most layers a function may use.
pub const MAX_LAYERS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerVersion {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
    pub code: CodeInfo,
    pub created_ms: u64,
}

/// What PublishLayerVersion asks for.
#[derive(Debug, Clone, Default)]
pub struct NewLayer {
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct LayerRegistry {
    /// Live versions by layer name, then number.
    live: BTreeMap<String, BTreeMap<u64, LayerVersion>>,
    /// The highest number ever given per name (deleted ones included).
    highest: BTreeMap<String, u64>,
}

impl LayerRegistry {
    pub(crate) fn load(all: Vec<(LayerVersion, bool)>) -> Self {
        let mut r = Self::default();
        for (l, deleted) in all {
            let h = r.highest.entry(l.name.clone()).or_default();
            *h = (*h).max(l.version);
            if !deleted {
                r.live.entry(l.name.clone()).or_default().insert(l.version, l);
            }
        }
        r
    }
}

/// A layer name, or a layer ARN, as AWS's LayerName member allows (the name part is returned).
pub fn layer_name(value: &str) -> Result<String, ValidationError> {
    let name = match value.strip_prefix("arn:") {
        Some(_) => {
            let parts: Vec<&str> = value.split(':').collect();
            match parts.as_slice() {
                ["arn", _, "lambda", _, account, "layer", name]
                    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    *name
                }
                _ => "",
            }
        }
        None => value,
    };
    let ok = !name.is_empty()
        && value.len() <= 140
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(ValidationError::constraint(
            value,
            "layerName",
            "Member must satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+",
        ));
    }
    Ok(name.to_string())
}

/// `arn:...:layer:<name>:<version>` into its name and version.
fn parse_version_arn(arn: &str) -> Option<(String, u64)> {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "layer", name, version] => {
            let v = version.parse().ok()?;
            layer_name(name).ok().map(|n| (n, v))
        }
        _ => None,
    }
}

fn validate_runtimes(runtimes: &[String]) -> Result<(), ValidationError> {
    if runtimes.len() > 15 {
        return Err(ValidationError::constraint(
            &format!("[{}]", runtimes.join(", ")),
            "compatibleRuntimes",
            "Member must have length less than or equal to 15",
        ));
    }
    for r in runtimes {
        Runtime::parse(r).map_err(|_| {
            ValidationError::constraint(
                r,
                "compatibleRuntimes",
                "Member must satisfy constraint: [Member must satisfy enum value set: [python3.9, python3.10, python3.11, python3.12, python3.13, python3.14, nodejs18.x, nodejs20.x, nodejs22.x, nodejs24.x, provided.al2, provided.al2023]]",
            )
        })?;
    }
    Ok(())
}

impl ControlPlane {
    pub fn layer_arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:layer:{name}", self.arns.region, self.arns.account)
    }

    pub fn layer_version_arn(&self, name: &str, version: u64) -> String {
        format!("{}:{version}", self.layer_arn(name))
    }

    fn layer_not_found(&self) -> ControlError {
        ControlError::NotFound("The resource you requested does not exist.".into())
    }

    /// PublishLayerVersion: store the content and give it the next number.
    pub fn publish_layer(&self, name: &str, zip: &[u8], meta: NewLayer) -> Result<LayerVersion, ControlError> {
        let name = layer_name(name)?;
        validate_runtimes(&meta.compatible_runtimes)?;
        let code = self.code.put(zip)?;
        let _w = lock(&self.writer);
        let mut reg = self.layers.write().unwrap_or_else(|e| e.into_inner());
        let version = reg.highest.get(&name).copied().unwrap_or(0) + 1;
        let layer = LayerVersion {
            name: name.clone(),
            version,
            description: meta.description,
            compatible_runtimes: meta.compatible_runtimes,
            compatible_architectures: meta.compatible_architectures,
            license_info: meta.license_info,
            code,
            created_ms: now_ms(),
        };
        lock(&self.store).save_layer(&layer)?;
        reg.highest.insert(name.clone(), version);
        reg.live.entry(name).or_default().insert(version, layer.clone());
        Ok(layer)
    }

    pub fn get_layer(&self, name: &str, version: u64) -> Result<LayerVersion, ControlError> {
        let name = layer_name(name)?;
        let reg = self.layers.read().unwrap_or_else(|e| e.into_inner());
        reg.live.get(&name).and_then(|v| v.get(&version)).cloned().ok_or_else(|| self.layer_not_found())
    }

    /// A layer's live versions, newest first.
    pub fn list_layer_versions(&self, name: &str) -> Result<Vec<LayerVersion>, ControlError> {
        let name = layer_name(name)?;
        let reg = self.layers.read().unwrap_or_else(|e| e.into_inner());
        Ok(reg.live.get(&name).map(|v| v.values().rev().cloned().collect()).unwrap_or_default())
    }

    /// Every layer's newest live version, by name.
    pub fn list_layers(&self) -> Vec<LayerVersion> {
        let reg = self.layers.read().unwrap_or_else(|e| e.into_inner());
        reg.live.values().filter_map(|v| v.values().next_back().cloned()).collect()
    }

    /// DeleteLayerVersion: idempotent, as on Lambda; functions that use it keep working.
    pub fn delete_layer(&self, name: &str, version: u64) -> Result<(), ControlError> {
        let name = layer_name(name)?;
        let _w = lock(&self.writer);
        let mut reg = self.layers.write().unwrap_or_else(|e| e.into_inner());
        if reg.live.get(&name).is_some_and(|v| v.contains_key(&version)) {
            lock(&self.store).mark_layer_deleted(&name, version)?;
            if let Some(v) = reg.live.get_mut(&name) {
                v.remove(&version);
                if v.is_empty() {
                    reg.live.remove(&name);
                }
            }
        }
        Ok(())
    }

    /// The layers a function asks for, as references with their content; their merged `/opt`
    /// tree is made now, so the invoke path only binds it.
    pub fn resolve_layers(&self, arns: &[String]) -> Result<Vec<LayerRef>, ControlError> {
        if arns.len() > MAX_LAYERS {
            return Err(ControlError::invalid(format!(
                "Cannot reference more than {MAX_LAYERS} layers. Found {} layers.",
                arns.len()
            )));
        }
        let mut out = Vec::with_capacity(arns.len());
        for arn in arns {
            let Some((name, version)) = parse_version_arn(arn) else {
                return Err(ValidationError::constraint(
                    arn,
                    "layers",
                    "Member must satisfy constraint: [Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+]",
                )
                .into());
            };
            if out.iter().any(|l: &LayerRef| l.arn.rsplit_once(':').map(|x| x.0) == arn.rsplit_once(':').map(|x| x.0)) {
                return Err(ControlError::invalid(format!(
                    "Two different versions of the same layer are not allowed to be referenced in the same function. {arn} references the same layer as another element of the list."
                )));
            }
            let layer = self
                .get_layer(&name, version)
                .map_err(|_| ControlError::invalid(format!("Layer version {arn} does not exist.")))?;
            out.push(LayerRef { arn: self.layer_version_arn(&layer.name, layer.version), code: layer.code });
        }
        if !out.is_empty() {
            self.code.opt_dir(&out.iter().map(|l| l.code.clone()).collect::<Vec<_>>())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_arns() {
        assert_eq!(layer_name("my-layer_1").as_deref(), Ok("my-layer_1"));
        assert_eq!(layer_name("arn:aws:lambda:us-east-1:000000000000:layer:deps").as_deref(), Ok("deps"));
        assert!(layer_name("bad name").is_err());
        assert!(layer_name("../x").is_err());
        assert!(layer_name("").is_err());
        assert_eq!(
            parse_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps:3"),
            Some(("deps".to_string(), 3))
        );
        assert_eq!(parse_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:deps"), None);
        assert_eq!(parse_version_arn("arn:aws:lambda:us-east-1:000000000000:layer:a/b:1"), None);
    }

    #[test]
    fn numbers_are_never_reused() {
        let r = LayerRegistry::load(Vec::new());
        assert!(r.live.is_empty());
        let code = CodeInfo { sha256_hex: "00".into(), sha256_b64: "AA==".into(), size: 1 };
        let v = |n: u64| LayerVersion {
            name: "l".into(),
            version: n,
            description: String::new(),
            compatible_runtimes: Vec::new(),
            compatible_architectures: Vec::new(),
            license_info: None,
            code: code.clone(),
            created_ms: 0,
        };
        let r = LayerRegistry::load(vec![(v(1), false), (v(2), true)]);
        assert_eq!(r.highest.get("l"), Some(&2));
        assert_eq!(r.live.get("l").map(|m| m.len()), Some(1));
    }
}

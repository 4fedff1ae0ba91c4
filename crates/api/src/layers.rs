//! Lambda's layer API (`/2018-10-31/layers`): publish, get, list and delete layer versions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use quarters_control::{LayerVersion, NewLayer};
use quarters_types::limits;
use quarters_types::time::last_modified;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::lambda::{page_body, paginate, parse_max_items};
use crate::wire::{self, CodeIn};
use crate::{App, blocking};

type Q = Query<HashMap<String, String>>;
type ApiResult = Result<Response, ApiError>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishIn {
    content: Option<CodeIn>,
    description: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
}

fn version_number(v: &str) -> Result<u64, ApiError> {
    v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
        quarters_types::ValidationError::constraint(
            v,
            "versionNumber",
            "Member must have value greater than or equal to 1",
        )
        .into()
    })
}

/// A layer version as GetLayerVersion and PublishLayerVersion return it (`full`), or as a list
/// item.
fn layer_json(app: &App, l: &LayerVersion, full: bool) -> Value {
    let mut out = json!({
        "LayerVersionArn": app.control.layer_version_arn(&l.name, l.version),
        "Version": l.version,
        "Description": l.description,
        "CreatedDate": last_modified(l.created_ms),
        "CompatibleRuntimes": l.compatible_runtimes,
        "CompatibleArchitectures": l.compatible_architectures,
    });
    if let Some(lic) = &l.license_info {
        out["LicenseInfo"] = lic.as_str().into();
    }
    if full {
        out["LayerArn"] = app.control.layer_arn(&l.name).into();
        out["Content"] = json!({
            "Location": format!("{}/quarters/v1/code/{}", app.base_url, l.code.sha256_hex),
            "CodeSha256": l.code.sha256_b64,
            "CodeSize": l.code.size,
        });
    }
    out
}

pub async fn publish(State(app): State<Arc<App>>, Path(name): Path<String>, body: Bytes) -> ApiResult {
    if body.len() > limits::CREATE_REQUEST_MAX_BYTES {
        return Err(ApiError::too_large(format!(
            "Request must be smaller than {} bytes for the PublishLayerVersion operation",
            limits::CREATE_REQUEST_MAX_BYTES
        )));
    }
    let input: PublishIn = wire::parse(&body)?;
    let content = input.content.ok_or_else(|| {
        ApiError::from(quarters_types::ValidationError::constraint("null", "content", "Member must not be null"))
    })?;
    if content.s3_bucket.is_some() || content.image_uri.is_some() {
        return Err(ApiError::invalid("Layer content from S3 is not supported by this Quarters server yet."));
    }
    let zip = wire::decode_zip(
        &content.zip_file.ok_or_else(|| ApiError::invalid("Please provide a source for layer content."))?,
    )?;
    let description = input.description.unwrap_or_default();
    quarters_types::FunctionConfig::validate_description(&description)?;
    let meta = NewLayer {
        description,
        compatible_runtimes: input.compatible_runtimes.unwrap_or_default(),
        compatible_architectures: input.compatible_architectures.unwrap_or_default(),
        license_info: input.license_info,
    };
    let a = app.clone();
    let layer = blocking(move || a.control.publish_layer(&name, &zip, meta)).await?;
    tracing::info!(layer = %layer.name, version = layer.version, "layer version published");
    Ok((StatusCode::CREATED, Json(layer_json(&app, &layer, true))).into_response())
}

pub async fn get(State(app): State<Arc<App>>, Path((name, version)): Path<(String, String)>) -> ApiResult {
    let layer = app.control.get_layer(&name, version_number(&version)?)?;
    Ok(Json(layer_json(&app, &layer, true)).into_response())
}

pub async fn delete(State(app): State<Arc<App>>, Path((name, version)): Path<(String, String)>) -> ApiResult {
    let n = version_number(&version)?;
    let a = app.clone();
    blocking(move || a.control.delete_layer(&name, n)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn matches(l: &LayerVersion, q: &Q) -> bool {
    let rt = q.get("CompatibleRuntime").is_none_or(|r| l.compatible_runtimes.contains(r));
    let arch = q.get("CompatibleArchitecture").is_none_or(|a| l.compatible_architectures.contains(a));
    rt && arch
}

pub async fn list_versions(State(app): State<Arc<App>>, Path(name): Path<String>, q: Q) -> ApiResult {
    let max = parse_max_items(&q)?.min(50);
    let items = app
        .control
        .list_layer_versions(&name)?
        .iter()
        .filter(|l| matches(l, &q))
        // Newest first, as Lambda lists them.
        .map(|l| (format!("{:020}", u64::MAX - l.version), layer_json(&app, l, false)))
        .collect();
    let (page, next) = paginate(items, q.get("Marker"), max);
    Ok(Json(page_body("LayerVersions", page, next)).into_response())
}

/// ListLayers, or GetLayerVersionByArn (`?find=LayerVersion&Arn=...`).
pub async fn list(State(app): State<Arc<App>>, q: Q) -> ApiResult {
    if q.get("find").map(String::as_str) == Some("LayerVersion") {
        let arn = q.get("Arn").cloned().unwrap_or_default();
        let Some((layer, version)) = arn.rsplit_once(':') else {
            return Err(ApiError::from(quarters_types::ValidationError::constraint(
                &arn,
                "arn",
                "Member must satisfy regular expression pattern: arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+",
            )));
        };
        let l = app.control.get_layer(layer, version_number(version)?)?;
        return Ok(Json(layer_json(&app, &l, true)).into_response());
    }
    let max = parse_max_items(&q)?.min(50);
    let items = app
        .control
        .list_layers()
        .iter()
        .filter(|l| matches(l, &q))
        .map(|l| {
            (
                l.name.clone(),
                json!({
                    "LayerName": l.name,
                    "LayerArn": app.control.layer_arn(&l.name),
                    "LatestMatchingVersion": layer_json(&app, l, false),
                }),
            )
        })
        .collect();
    let (page, next) = paginate(items, q.get("Marker"), max);
    Ok(Json(page_body("Layers", page, next)).into_response())
}

//! Container images for functions (`PackageType: Image`).
//!
//! Pulls an image from an OCI registry over the distribution API (anonymous, basic, or bearer
//! tokens from the registry's realm), keeps every blob by digest (verified), and unpacks the
//! layers in order into one read-only root per manifest digest, honouring whiteouts and refusing
//! any entry that would land outside the root or write through a link.

mod unpack;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use unpack::unpack_layer;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The URI is not an image reference.
    #[error("{0}")]
    BadReference(String),
    /// The registry said no, or had no such image.
    #[error("{0}")]
    Registry(String),
    /// The image is not something Quarters can run.
    #[error("{0}")]
    Unsupported(String),
    /// A layer is malformed or unsafe.
    #[error("{0}")]
    BadLayer(String),
    #[error("image store: {0}")]
    Io(#[from] std::io::Error),
}

/// `registry/repository[:tag|@digest]`, as an `ImageUri` names an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// A tag, or a `sha256:` digest.
    pub reference: String,
}

impl ImageRef {
    pub fn parse(uri: &str) -> Result<Self, ImageError> {
        let bad = || {
            ImageError::BadReference(format!(
                "Source image {uri} is not valid. Provide a valid source image: <registry>/<repository>[:tag|@digest]."
            ))
        };
        let (registry, rest) = uri.split_once('/').ok_or_else(bad)?;
        if registry.is_empty() || !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad());
        }
        let (repository, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            (repo.to_string(), digest.to_string())
        } else {
            match rest.rsplit_once(':') {
                Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
                _ => (rest.to_string(), "latest".to_string()),
            }
        };
        let repo_ok = !repository.is_empty()
            && repository.split('/').all(|part| {
                let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                alnum(part.as_bytes().first())
                    && alnum(part.as_bytes().last())
                    && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            });
        let ref_ok = !reference.is_empty()
            && reference.len() <= 128
            && reference.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
        if !repo_ok || !ref_ok {
            return Err(bad());
        }
        Ok(Self { registry: registry.to_string(), repository, reference })
    }

    /// Plain HTTP only for registries on this machine; HTTPS everywhere else.
    fn scheme(&self) -> &'static str {
        let host = self.registry.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.registry);
        if matches!(host, "localhost" | "127.0.0.1" | "[::1]") { "http" } else { "https" }
    }

    fn url(&self, what: &str) -> String {
        format!("{}://{}/v2/{}/{what}", self.scheme(), self.registry, self.repository)
    }
}

/// What the image says to run, from its config blob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<(String, String)>,
}

/// An image, pulled and unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The manifest's digest, `sha256:<hex>`.
    pub digest: String,
    /// `registry/repository@digest`.
    pub resolved_uri: String,
    pub config: ImageConfig,
    pub rootfs: PathBuf,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigBlob {
    #[serde(default)]
    config: ConfigInner,
    #[serde(default)]
    architecture: String,
}

#[derive(Deserialize, Default)]
struct ConfigInner {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") { "arm64" } else { "amd64" }
}

fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(ImageError::Unsupported(format!("unsupported digest {digest}: only sha256 is"))),
    }
}

/// The image store: blobs by digest, unpacked roots by manifest digest.
pub struct ImageStore {
    dir: PathBuf,
    client: reqwest::Client,
    /// Basic credentials per registry host (`host[:port]` → user, password).
    auth: HashMap<String, (String, String)>,
}

impl ImageStore {
    pub fn open(dir: PathBuf, auth: HashMap<String, (String, String)>) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs"))?;
        std::fs::create_dir_all(dir.join("rootfs"))?;
        std::fs::create_dir_all(dir.join("config"))?;
        for sub in ["blobs", "rootfs"] {
            for e in std::fs::read_dir(dir.join(sub))?.flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(e.path());
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self { dir, client, auth })
    }

    /// Where the root of the image with this manifest digest is unpacked.
    pub fn rootfs_path(images_dir: &Path, digest: &str) -> PathBuf {
        images_dir.join("rootfs").join(digest.trim_start_matches("sha256:"))
    }

    /// The stored config of an image pulled before, if its root is still there.
    pub fn load(&self, digest: &str) -> Option<ImageConfig> {
        let hex = digest_hex(digest).ok()?;
        if !Self::rootfs_path(&self.dir, digest).is_dir() {
            return None;
        }
        let text = std::fs::read(self.dir.join("config").join(format!("{hex}.json"))).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Pull `uri` (unless its digest is already unpacked) and return it.
    pub async fn pull(&self, uri: &str) -> Result<PulledImage, ImageError> {
        let r = ImageRef::parse(uri)?;
        let mut session = Session { store: self, image: &r, token: None };
        let (first, first_digest) = session.manifest(&r.reference).await?;
        let is_index = first.media_type.contains("index")
            || first.media_type.contains("manifest.list")
            || !first.manifests.is_empty();
        let (manifest, digest) = if is_index {
            let chosen = first
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == host_arch()))
                .ok_or_else(|| {
                    ImageError::Unsupported(format!("the image {uri} has no linux/{} variant", host_arch()))
                })?;
            let digest = chosen.digest.clone();
            (session.manifest(&digest).await?.0, digest)
        } else {
            (first, first_digest)
        };
        let resolved_uri = format!("{}/{}@{digest}", r.registry, r.repository);
        if let Some(config) = self.load(&digest) {
            return Ok(PulledImage { rootfs: Self::rootfs_path(&self.dir, &digest), digest, resolved_uri, config });
        }
        let config_desc = manifest
            .config
            .as_ref()
            .ok_or_else(|| ImageError::Unsupported(format!("the manifest of {uri} has no config")))?;
        let config_path = session.blob(&config_desc.digest).await?;
        let blob: ConfigBlob = serde_json::from_slice(&std::fs::read(&config_path)?)
            .map_err(|e| ImageError::Unsupported(format!("the image config of {uri} is not valid JSON: {e}")))?;
        if !blob.architecture.is_empty() && blob.architecture != host_arch() {
            return Err(ImageError::Unsupported(format!(
                "the image {uri} is for {}, and this host runs {}",
                blob.architecture,
                host_arch()
            )));
        }
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for l in &manifest.layers {
            layers.push((session.blob(&l.digest).await?, l.media_type.clone()));
        }
        let config = ImageConfig {
            entrypoint: blob.config.entrypoint.unwrap_or_default(),
            cmd: blob.config.cmd.unwrap_or_default(),
            working_dir: blob.config.working_dir.filter(|w| !w.is_empty()),
            env: blob
                .config
                .env
                .unwrap_or_default()
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect(),
        };
        let dir = self.dir.clone();
        let d = digest.clone();
        let cfg = config.clone();
        tokio::task::spawn_blocking(move || unpack_image(&dir, &d, &layers, &cfg))
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e)))??;
        tracing::info!(image = %uri, %digest, "image pulled");
        Ok(PulledImage { rootfs: Self::rootfs_path(&self.dir, &digest), digest, resolved_uri, config })
    }
}

/// Unpack the layers in order into a new root, then move it into place with its config.
fn unpack_image(
    dir: &Path,
    digest: &str,
    layers: &[(PathBuf, String)],
    config: &ImageConfig,
) -> Result<(), ImageError> {
    let hex = digest_hex(digest)?;
    let dest = ImageStore::rootfs_path(dir, digest);
    let tmp = dir.join("rootfs").join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    let result = (|| {
        std::fs::create_dir_all(&tmp)?;
        for (path, media_type) in layers {
            let file = std::fs::File::open(path)?;
            if media_type.contains("zstd") {
                return Err(ImageError::Unsupported("zstd-compressed layers are not supported yet".into()));
            }
            let mut head = [0u8; 2];
            let gz = {
                use std::io::Read;
                let mut f = std::fs::File::open(path)?;
                f.read(&mut head)? == 2 && head == [0x1f, 0x8b]
            };
            if gz {
                unpack_layer(flate2::read::GzDecoder::new(file), &tmp)?;
            } else {
                unpack_layer(file, &tmp)?;
            }
        }
        let json = serde_json::to_vec(config).map_err(|e| ImageError::Io(std::io::Error::other(e)))?;
        std::fs::write(dir.join("config").join(format!("{hex}.json")), json)?;
        match std::fs::rename(&tmp, &dest) {
            Err(_) if dest.is_dir() => Ok(()),
            other => other.map_err(ImageError::from),
        }
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// One pull: the image, and a bearer token once the registry gave one.
struct Session<'a> {
    store: &'a ImageStore,
    image: &'a ImageRef,
    token: Option<String>,
}

impl Session<'_> {
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<reqwest::Response, ImageError> {
        for attempt in 0..2 {
            let mut req = self.store.client.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(t) = &self.token {
                req = req.header("Authorization", t.as_str());
            }
            let resp = req
                .send()
                .await
                .map_err(|e| ImageError::Registry(format!("cannot reach the registry {}: {e}", self.image.registry)))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge =
                    resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                self.token = Some(self.authenticate(&challenge).await?);
                continue;
            }
            if !resp.status().is_success() {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let denied = matches!(status.as_u16(), 401 | 403);
                return Err(ImageError::Registry(if denied {
                    format!(
                        "the registry {} refused access to {}: {status}",
                        self.image.registry, self.image.repository
                    )
                } else {
                    format!(
                        "the registry answered {status} for {}: {}",
                        url,
                        body.chars().take(200).collect::<String>()
                    )
                }));
            }
            return Ok(resp);
        }
        Err(ImageError::Registry(format!("the registry {} refused the credentials", self.image.registry)))
    }

    /// Answer a `WWW-Authenticate` challenge: basic credentials as they are, or a bearer token
    /// from the realm (with the basic credentials if there are any, else anonymously).
    async fn authenticate(&self, challenge: &str) -> Result<String, ImageError> {
        let creds = self.store.auth.get(&self.image.registry);
        let basic = creds
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| {
                ImageError::Registry(format!(
                    "the registry {} needs credentials (quarters serve --registry-auth {}=USER:PASSWORD)",
                    self.image.registry, self.image.registry
                ))
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ImageError::Registry(format!("unsupported registry authentication: {challenge}")));
        }
        let mut fields = HashMap::new();
        for part in split_params(params) {
            if let Some((k, v)) = part.split_once('=') {
                fields.insert(k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string());
            }
        }
        let realm = fields
            .get("realm")
            .ok_or_else(|| ImageError::Registry(format!("a bearer challenge without a realm: {challenge}")))?;
        let scope =
            fields.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", self.image.repository));
        let mut req = self.store.client.get(realm).query(&[("scope", scope.as_str())]);
        if let Some(service) = fields.get("service") {
            req = req.query(&[("service", service.as_str())]);
        }
        if let Some(b) = &basic {
            req = req.header("Authorization", b.as_str());
        }
        let resp = req.send().await.map_err(|e| ImageError::Registry(format!("cannot reach {realm}: {e}")))?;
        if !resp.status().is_success() {
            return Err(ImageError::Registry(format!("the registry's token service refused: {}", resp.status())));
        }
        let v: serde_json::Value =
            resp.json().await.map_err(|e| ImageError::Registry(format!("a bad token answer: {e}")))?;
        let token = v["token"].as_str().or_else(|| v["access_token"].as_str()).unwrap_or("");
        if token.is_empty() {
            return Err(ImageError::Registry("the registry's token service gave no token".into()));
        }
        Ok(format!("Bearer {token}"))
    }

    async fn manifest(&mut self, reference: &str) -> Result<(Manifest, String), ImageError> {
        let url = self.image.url(&format!("manifests/{reference}"));
        let resp = self.get(&url, Some(ACCEPT)).await?;
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let body = resp.bytes().await.map_err(|e| ImageError::Registry(e.to_string()))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        if reference.starts_with("sha256:") && reference != digest {
            return Err(ImageError::Registry(format!("the manifest {reference} does not match its digest")));
        }
        let mut m: Manifest = serde_json::from_slice(&body)
            .map_err(|e| ImageError::Unsupported(format!("not an image manifest: {e}")))?;
        if m.media_type.is_empty() {
            m.media_type = content_type;
        }
        Ok((m, digest))
    }

    /// A blob by digest: from the cache, or fetched, verified and cached.
    async fn blob(&mut self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = digest_hex(digest)?.to_string();
        let path = self.store.dir.join("blobs").join(&hex);
        if path.is_file() {
            return Ok(path);
        }
        let url = self.image.url(&format!("blobs/{digest}"));
        let mut resp = self.get(&url, None).await?;
        let tmp = self.store.dir.join("blobs").join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let mut hasher = Sha256::new();
        let mut file = tokio::fs::File::create(&tmp).await?;
        let result = async {
            use tokio::io::AsyncWriteExt;
            while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Registry(e.to_string()))? {
                hasher.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            if hex::encode(hasher.finalize()) != hex {
                return Err(ImageError::Registry(format!("the blob {digest} does not match its digest")));
            }
            tokio::fs::rename(&tmp, &path).await?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result.map(|()| path)
    }
}

/// `a="x,y",b=z` split at the commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = ImageRef::parse("127.0.0.1:5000/fns/hello:v1").expect("ref");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "fns/hello", "v1")
        );
        assert_eq!(r.scheme(), "http");
        let r = ImageRef::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/app").expect("ref");
        assert_eq!(r.reference, "latest");
        assert_eq!(r.scheme(), "https");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("localhost:5000/app@{d}")).expect("digest");
        assert_eq!(r.reference, d);
        for bad in ["", "app", "app:latest", "registry.io/", "registry.io/UPPER", "registry.io/a b", "registry.io/../x"]
        {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenge_params() {
        let p = split_params(r#"realm="https://auth.io/token",service="registry",scope="repository:a:pull,push""#);
        assert_eq!(p.len(), 3);
        assert_eq!(p[2], r#"scope="repository:a:pull,push""#);
    }
}

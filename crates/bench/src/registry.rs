//! A read-only OCI registry in memory, on loopback, so that the runtime cold starts can have a
//! container-image row without Docker or a registry installed: it serves one image (the probe,
//! its shared libraries and an `Entrypoint`) over the distribution API's pull side
//! (`/v2/`, manifests, blobs), which is all `quarters` uses to pull.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The repository and tag the image is served as.
const REPO: &str = "bench/probe";
const TAG: &str = "latest";

#[derive(Default)]
struct Content {
    /// By digest: the manifest (under its tag too), the config and the layer.
    blobs: HashMap<String, (Bytes, &'static str)>,
    tags: HashMap<String, String>,
}

/// The registry, serving until dropped.
pub struct Registry {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Registry {
    /// Serve an image whose only layer holds `probe` as `/var/task/bootstrap` with the shared
    /// libraries it needs, and whose entrypoint runs it.
    pub async fn serve_probe(probe: &Path) -> Result<Self> {
        let layer = probe_layer(probe)?;
        let layer_digest = digest(&layer);
        let config = Bytes::from(
            json!({
                "architecture": "amd64",
                "os": "linux",
                "config": { "Entrypoint": ["/var/task/bootstrap"], "WorkingDir": "/var/task" },
                "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
            })
            .to_string(),
        );
        let config_digest = digest(&config);
        let manifest = Bytes::from(
            json!({
                "schemaVersion": 2,
                "mediaType": MANIFEST_TYPE,
                "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
                "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len() }],
            })
            .to_string(),
        );
        let manifest_digest = digest(&manifest);
        let mut content = Content::default();
        content.blobs.insert(layer_digest, (Bytes::from(layer), "application/octet-stream"));
        content.blobs.insert(config_digest, (config, "application/octet-stream"));
        content.blobs.insert(manifest_digest.clone(), (manifest, MANIFEST_TYPE));
        content.tags.insert(TAG.to_owned(), manifest_digest);
        let content = Arc::new(content);

        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the bench registry")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let content = content.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(content.clone(), req));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Ok(Self { addr, task })
    }

    /// The image's `ImageUri`.
    pub fn image_uri(&self) -> String {
        format!("{}/{REPO}:{TAG}", self.addr)
    }
}

async fn serve(content: Arc<Content>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let found = if path == "/v2/" {
        Some((Bytes::from_static(b"{}"), "application/json", None))
    } else if let Some(rest) = path.strip_prefix(&format!("/v2/{REPO}/")) {
        let (kind, reference) = rest.split_once('/').unwrap_or((rest, ""));
        let digest = match kind {
            "manifests" => content.tags.get(reference).cloned().or_else(|| Some(reference.to_owned())),
            "blobs" => Some(reference.to_owned()),
            _ => None,
        };
        digest.and_then(|d| content.blobs.get(&d).map(|(b, t)| (b.clone(), *t, Some(d))))
    } else {
        None
    };
    let mut resp = match found {
        Some((body, content_type, digest)) => {
            let len = body.len();
            let body = if req.method() == hyper::Method::HEAD { Bytes::new() } else { body };
            let mut r = Response::new(Full::new(body));
            let h = r.headers_mut();
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
            h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            if let Some(d) = digest.and_then(|d| http::HeaderValue::from_str(&d).ok()) {
                h.insert("docker-content-digest", d);
            }
            r
        }
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(br#"{"errors":[{"code":"NOT_FOUND"}]}"#)));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    };
    resp.headers_mut().insert("docker-distribution-api-version", http::HeaderValue::from_static("registry/2.0"));
    Ok(resp)
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// An uncompressed tar: the probe as `var/task/bootstrap`, and every shared object `ldd` lists
/// for it at its own path (the image's root replaces the host's `/usr`).
fn probe_layer(probe: &Path) -> Result<Vec<u8>> {
    let mut files: Vec<(String, PathBuf, u32)> = vec![("var/task/bootstrap".into(), probe.to_path_buf(), 0o755)];
    for lib in shared_libraries(probe)? {
        let inside = lib.to_string_lossy().trim_start_matches('/').to_owned();
        files.push((inside, lib, 0o755));
    }
    let mut tar = tar::Builder::new(Vec::new());
    for (inside, host, mode) in files {
        let data = std::fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, &inside, data.as_slice())?;
    }
    Ok(tar.into_inner()?)
}

/// The absolute paths `ldd` prints for `binary` (its libraries and its loader).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd").arg(binary).output().context("running ldd")?;
    if !out.status.success() {
        bail!("ldd {} failed: {}", binary.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(parse_ldd(&String::from_utf8_lossy(&out.stdout)))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.trim().split(' ').next()?,
                None => l.split(' ').next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x7f)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        let got = parse_ldd(text);
        assert_eq!(
            got,
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .map(PathBuf::from)
        );
    }
}

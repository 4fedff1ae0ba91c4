//! Quarters' S3-compatible object store.
//!
//! The HTTP layer (routing, XML, SigV4 header/presigned/streaming verification, SigV2) is
//! [`s3s`] 0.14.1; everything behind the [`s3s::S3`] trait is ours:
//!
//! * **Storage** (`store.rs`): object bytes live in *blobs*, files named by a random id under
//!   `<root>/blobs/<2 hex>/<32 hex>` (never derived from a bucket or key). Metadata (bucket,
//!   key, blob id, size, ETag, content type, user metadata, last-modified, parts) lives in
//!   `<root>/s3.db` (SQLite, WAL, `synchronous=FULL`).
//! * **Atomicity**: a write goes to `<id>.tmp` in the blob's directory, is fsynced, renamed to
//!   `<id>` and the directory fsynced; only then does one SQLite transaction point the key at
//!   the new blob. That commit is the only moment the object changes, so a crash leaves either
//!   the old object or the new one, never a torn one. The replaced blob is unlinked after the
//!   commit; orphans of a crash (`*.tmp`, renamed-but-uncommitted or committed-but-not-unlinked
//!   blobs) are removed when the store is next opened.
//! * **Auth**: [`Secrets`] feeds s3s's signature verification; [`Authorizer`] is called for
//!   every request (anonymous ones too) with the IAM action and resource ARN.
//!
//! One process owns a root at a time (an advisory lock on `<root>/lock`).

mod access;
mod backend;
mod bench;
mod names;
mod service;
mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use s3s;

pub use crate::service::S3Service;

pub use crate::access::iam_action;
pub use crate::bench::{RoundtripReport, bench_roundtrip, serve_http1};
pub use crate::names::valid_bucket_name;

/// Looks up the secret of an access key (admin keys, STS-issued temporary keys).
/// `None` → `InvalidAccessKeyId`.
pub trait Secrets: Send + Sync + 'static {
    fn secret(&self, access_key: &str) -> Option<String>;
}

impl Secrets for HashMap<String, String> {
    fn secret(&self, access_key: &str) -> Option<String> {
        self.get(access_key).cloned()
    }
}

/// Decides whether a caller may do an S3 action on a resource. Called for EVERY request
/// (including when the caller is anonymous: `access_key` `None`).
pub trait Authorizer: Send + Sync + 'static {
    fn check(&self, req: &AccessRequest<'_>) -> Result<(), AccessDenied>;

    /// The identity that owns the buckets this caller creates (recorded at CreateBucket), and
    /// whose buckets ListBuckets shows it. Creating a bucket that exists answers
    /// `BucketAlreadyOwnedByYou` when the owners are equal, `BucketAlreadyExists` otherwise.
    ///
    /// The default is the access key; a platform with temporary keys should return the stable
    /// identity behind them (the tenant or account).
    fn owner(&self, access_key: Option<&str>, session_token: Option<&str>) -> Option<String> {
        let _ = session_token;
        access_key.map(str::to_owned)
    }
}

/// One authorisation question: may `access_key` do `action` on `resource`?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// The verified access key (the signature was checked against [`Secrets`]); `None` for
    /// an anonymous (unsigned) request.
    pub access_key: Option<&'a str>,
    /// Header `x-amz-security-token` or query `X-Amz-Security-Token`, passed through
    /// unvalidated (s3s does not check it). Only present for signed requests, and only when
    /// the token is covered by the signature (listed in SignedHeaders, or in a presigned URL's
    /// signed query); an unsigned token is rejected before the authorizer is asked.
    pub session_token: Option<&'a str>,
    /// The IAM action: `s3:GetObject`, `s3:PutObject`, `s3:ListBucket`, `s3:DeleteObject`,
    /// `s3:CreateBucket`, … (see [`iam_action`]).
    pub action: &'a str,
    /// `arn:aws:s3:::bucket`, `arn:aws:s3:::bucket/key`, or `arn:aws:s3:::*` for ListBuckets.
    pub resource: String,
    /// The `s3:prefix` condition key of ListObjects/ListObjectsV2 (`None` when absent).
    pub prefix: Option<&'a str>,
}

/// A refusal. The message, when given, is returned to the client in the `AccessDenied` error
/// (default "Access Denied").
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("Access Denied{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct AccessDenied {
    pub message: Option<String>,
}

impl AccessDenied {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: Some(message.into()) }
    }
}

/// Allows every request, including anonymous ones. For tests and benchmarks only.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn check(&self, _req: &AccessRequest<'_>) -> Result<(), AccessDenied> {
        Ok(())
    }
}

/// Allows every signed request and denies anonymous ones.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAuthenticated;

impl Authorizer for AllowAuthenticated {
    fn check(&self, req: &AccessRequest<'_>) -> Result<(), AccessDenied> {
        match req.access_key {
            Some(_) => Ok(()),
            None => Err(AccessDenied::default()),
        }
    }
}

/// Limits and addressing.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest object (PutObject, CopyObject source, completed multipart upload).
    /// Larger → `EntityTooLarge`. Default 5 GiB.
    pub max_object_size: u64,
    /// Largest part of a multipart upload. Default 5 GiB.
    pub max_part_size: u64,
    /// Smallest part other than the last at CompleteMultipartUpload (`EntityTooSmall`).
    /// Default 5 MiB, as AWS.
    pub min_part_size: u64,
    /// Largest completed multipart object. Default 5 TiB.
    pub max_multipart_object_size: u64,
    /// PutObject bodies up to this size are stored inside their metadata row in `s3.db`
    /// instead of in a blob file: the commit is then one fsync (the WAL's) instead of three
    /// (file, directory, WAL). Equally atomic and durable. 0 disables. Default 64 KiB; at most
    /// 1 MiB takes effect (larger bodies are written out as they arrive).
    pub inline_max: u64,
    /// Base domain(s) for virtual-hosted-style requests (`bucket.<domain>`). Empty: path-style
    /// only (requests to an IP address are always path-style).
    pub virtual_host_domains: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_object_size: 5 << 30,
            max_part_size: 5 << 30,
            min_part_size: 5 << 20,
            max_multipart_object_size: 5 << 40,
            inline_max: 64 << 10,
            virtual_host_domains: Vec::new(),
        }
    }
}

/// Errors of the store: opening it, and the outcome of its operations (which the service maps
/// to S3 error codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3StoreError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
    #[error("the store at {0} is in use by another process")]
    Locked(PathBuf),
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("the specified bucket does not exist")]
    NoSuchBucket,
    #[error("the specified key does not exist")]
    NoSuchKey,
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    #[error("the bucket already exists and is owned by you")]
    BucketAlreadyOwnedByYou,
    #[error("the bucket name is not available")]
    BucketAlreadyExists,
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    #[error("the bucket name is not valid")]
    InvalidBucketName,
    #[error("a precondition does not hold")]
    PreconditionFailed,
    #[error("not modified")]
    NotModified,
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("the list of parts was not in ascending order")]
    InvalidPartOrder,
    #[error("a part other than the last is smaller than the minimum part size")]
    EntityTooSmall,
    #[error("the object exceeds the maximum allowed size")]
    EntityTooLarge,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// The S3 service on `root` (created if missing), verifying signatures with `secrets` and
/// asking `authz` about every request. Default [`Options`].
///
/// # Errors
/// The root cannot be created or locked, or the metadata database cannot be opened.
pub fn service(
    root: PathBuf,
    secrets: Arc<dyn Secrets>,
    authz: Arc<dyn Authorizer>,
) -> Result<S3Service, S3StoreError> {
    service_with_options(root, secrets, authz, Options::default())
}

/// [`service`] with explicit [`Options`].
///
/// # Errors
/// As [`service`], and `InvalidOption` for an unusable virtual-host domain.
pub fn service_with_options(
    root: PathBuf,
    secrets: Arc<dyn Secrets>,
    authz: Arc<dyn Authorizer>,
    options: Options,
) -> Result<S3Service, S3StoreError> {
    if options.min_part_size > options.max_part_size || options.inline_max > options.max_object_size {
        return Err(S3StoreError::InvalidOption("part or inline size limits are inconsistent".into()));
    }
    let domains = options.virtual_host_domains.clone();
    let store = Arc::new(store::Store::open(&root, options)?);
    let mut builder = s3s::service::S3ServiceBuilder::new(backend::Backend::new(store));
    builder.set_auth(access::Auth::new(secrets));
    builder.set_access(access::Access::new(authz));
    match domains.len() {
        0 => {}
        1 => {
            let host =
                s3s::host::SingleDomain::new(&domains[0]).map_err(|e| S3StoreError::InvalidOption(e.to_string()))?;
            builder.set_host(host);
        }
        _ => {
            let host = s3s::host::MultiDomain::new(&domains).map_err(|e| S3StoreError::InvalidOption(e.to_string()))?;
            builder.set_host(host);
        }
    }
    Ok(S3Service::new(builder.build()))
}

//! s3s's auth hooks, backed by [`Secrets`] and [`Authorizer`].
//!
//! s3s verifies the signature (SigV4 header, presigned, streaming; SigV2) with the secret
//! [`Secrets`] gives, then calls [`S3Access::check`] for every request, signed or not, before
//! the body is read. That is where the [`Authorizer`] is asked. Three operations are asked
//! after their input is parsed instead (or as well), in the per-operation hooks:
//! * `CopyObject` / `UploadPartCopy`: `s3:PutObject` on the destination in `check`, then
//!   `s3:GetObject` on the source;
//! * `DeleteObjects`: `s3:DeleteObject` for each key (denied keys come back as per-key
//!   `AccessDenied` errors, as S3 does);
//! * `PostObject` (browser form upload): `s3:PutObject` on the key named in the form.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderMap, Uri};
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, DeleteObjectsInput, PostObjectInput, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result, s3_error};

use crate::{AccessDenied, AccessRequest, Authorizer, Secrets};

pub(crate) struct Auth(Arc<dyn Secrets>);

impl Auth {
    pub fn new(secrets: Arc<dyn Secrets>) -> Self {
        Self(secrets)
    }
}

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0.secret(access_key).map(SecretKey::from).ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}

/// Who is calling; put into the request's extensions by `check`.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub access_key: Option<String>,
    pub session_token: Option<String>,
    pub owner: Option<String>,
}

/// Keys of a DeleteObjects request the caller may not delete.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeniedKeys(pub HashSet<String>);

pub(crate) struct Access(Arc<dyn Authorizer>);

impl Access {
    pub fn new(authz: Arc<dyn Authorizer>) -> Self {
        Self(authz)
    }

    fn ask(&self, caller: &Caller, action: &str, resource: String, prefix: Option<&str>) -> S3Result<()> {
        let req = AccessRequest {
            access_key: caller.access_key.as_deref(),
            session_token: caller.session_token.as_deref(),
            action,
            resource,
            prefix,
        };
        self.0.check(&req).map_err(|d| {
            tracing::debug!(access_key = ?req.access_key, action, resource = %req.resource, "s3: access denied");
            denied(d)
        })
    }

    fn check_copy_source(&self, caller: Option<&Caller>, source: &CopySource) -> S3Result<()> {
        let caller = caller.ok_or_else(missing_caller)?;
        match source {
            CopySource::Bucket { bucket, key, version_id } => {
                let action = if version_id.is_some() { "s3:GetObjectVersion" } else { "s3:GetObject" };
                self.ask(caller, action, object_arn(bucket, key), None)
            }
            _ => Err(s3_error!(NotImplemented, "copy sources other than bucket/key are not supported")),
        }
    }
}

fn denied(d: AccessDenied) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, d.message.unwrap_or_else(|| "Access Denied".to_owned()))
}

fn missing_caller() -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, "Access Denied")
}

pub(crate) fn bucket_arn(bucket: &str) -> String {
    format!("arn:aws:s3:::{bucket}")
}

pub(crate) fn object_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// The IAM action an S3 operation (s3s's name, the Smithy operation name) needs on its
/// resource, as the S3 documentation's "actions, resources and condition keys" table names it.
/// Operations not listed map to `s3:<Operation>`.
#[must_use]
pub fn iam_action(op: &str) -> Cow<'static, str> {
    let a = match op {
        "GetObject" | "HeadObject" | "SelectObjectContent" => "s3:GetObject",
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject",
        "DeleteObject" | "DeleteObjects" => "s3:DeleteObject",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "ListParts" => "s3:ListMultipartUploadParts",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket",
        "ListObjectVersions" => "s3:ListBucketVersions",
        "ListBuckets" | "ListDirectoryBuckets" => "s3:ListAllMyBuckets",
        "CreateBucket" => "s3:CreateBucket",
        "DeleteBucket" => "s3:DeleteBucket",
        "GetBucketLocation" => "s3:GetBucketLocation",
        "GetObjectAttributes" => "s3:GetObjectAttributes",
        "GetBucketCors" => "s3:GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "s3:PutBucketCORS",
        "GetBucketEncryption" => "s3:GetEncryptionConfiguration",
        "PutBucketEncryption" | "DeleteBucketEncryption" => "s3:PutEncryptionConfiguration",
        "GetBucketLifecycleConfiguration" => "s3:GetLifecycleConfiguration",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "s3:PutLifecycleConfiguration",
        "GetBucketReplication" => "s3:GetReplicationConfiguration",
        "PutBucketReplication" | "DeleteBucketReplication" => "s3:PutReplicationConfiguration",
        "GetBucketNotificationConfiguration" => "s3:GetBucketNotification",
        "PutBucketNotificationConfiguration" => "s3:PutBucketNotification",
        "GetObjectLockConfiguration" => "s3:GetBucketObjectLockConfiguration",
        "PutObjectLockConfiguration" => "s3:PutBucketObjectLockConfiguration",
        "GetPublicAccessBlock" => "s3:GetBucketPublicAccessBlock",
        "PutPublicAccessBlock" | "DeletePublicAccessBlock" => "s3:PutBucketPublicAccessBlock",
        "DeleteBucketTagging" => "s3:PutBucketTagging",
        "DeleteBucketOwnershipControls" => "s3:PutBucketOwnershipControls",
        "DeleteBucketPolicy" => "s3:DeleteBucketPolicy",
        "GetBucketAccelerateConfiguration" => "s3:GetAccelerateConfiguration",
        "PutBucketAccelerateConfiguration" => "s3:PutAccelerateConfiguration",
        "GetBucketAnalyticsConfiguration" | "ListBucketAnalyticsConfigurations" => "s3:GetAnalyticsConfiguration",
        "PutBucketAnalyticsConfiguration" | "DeleteBucketAnalyticsConfiguration" => "s3:PutAnalyticsConfiguration",
        "GetBucketInventoryConfiguration" | "ListBucketInventoryConfigurations" => "s3:GetInventoryConfiguration",
        "PutBucketInventoryConfiguration" | "DeleteBucketInventoryConfiguration" => "s3:PutInventoryConfiguration",
        "GetBucketMetricsConfiguration" | "ListBucketMetricsConfigurations" => "s3:GetMetricsConfiguration",
        "PutBucketMetricsConfiguration" | "DeleteBucketMetricsConfiguration" => "s3:PutMetricsConfiguration",
        "GetBucketIntelligentTieringConfiguration" | "ListBucketIntelligentTieringConfigurations" => {
            "s3:GetIntelligentTieringConfiguration"
        }
        "PutBucketIntelligentTieringConfiguration" | "DeleteBucketIntelligentTieringConfiguration" => {
            "s3:PutIntelligentTieringConfiguration"
        }
        "CreateSession" => "s3express:CreateSession",
        "WriteGetObjectResponse" => "s3-object-lambda:WriteGetObjectResponse",
        other => return Cow::Owned(format!("s3:{other}")),
    };
    Cow::Borrowed(a)
}

/// The first value of query parameter `name` (decoded).
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn has_query_param(uri: &Uri, name: &str) -> bool {
    uri.query().is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == name))
}

const TOKEN_HEADER: &str = "x-amz-security-token";

/// Whether the request's signature covers the `x-amz-security-token` header.
fn token_header_signed(uri: &Uri, headers: &HeaderMap) -> bool {
    let listed = |list: &str| list.split(';').any(|h| h.trim().eq_ignore_ascii_case(TOKEN_HEADER));
    if let Some(auth) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if auth.starts_with("AWS4-") {
            return auth
                .split(',')
                .filter_map(|part| part.trim().split_once('='))
                .filter(|(k, _)| k.trim().ends_with("SignedHeaders"))
                .any(|(_, v)| listed(v));
        }
        // SigV2 signs every x-amz-* header.
        return auth.starts_with("AWS ");
    }
    if let Some(list) = query_param(uri, "X-Amz-SignedHeaders") {
        return listed(&list);
    }
    // SigV2 presigned URLs sign the x-amz-* headers too.
    has_query_param(uri, "Signature") && has_query_param(uri, "AWSAccessKeyId")
}

/// The session token of a signed request, if the signature covers it.
fn session_token(uri: &Uri, headers: &HeaderMap, signed: bool) -> S3Result<Option<String>> {
    let mut header_values = headers.get_all(TOKEN_HEADER).iter();
    let header = header_values.next();
    if header_values.next().is_some() {
        return Err(s3_error!(InvalidRequest, "more than one x-amz-security-token header"));
    }
    let query = query_param(uri, "X-Amz-Security-Token");
    if !signed {
        // A token without a signature proves nothing; the request is anonymous.
        return Ok(None);
    }
    match (header, query) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => {
            Err(s3_error!(InvalidRequest, "x-amz-security-token given both as a header and in the query"))
        }
        (None, Some(q)) => {
            // In a SigV4 presigned URL every query parameter but the signature is signed.
            if has_query_param(uri, "X-Amz-Signature") {
                Ok(Some(q))
            } else {
                Err(s3_error!(AccessDenied, "X-Amz-Security-Token must be signed"))
            }
        }
        (Some(h), None) => {
            if !token_header_signed(uri, headers) {
                return Err(s3_error!(AccessDenied, "x-amz-security-token must be a signed header"));
            }
            let v = h.to_str().map_err(|_| s3_error!(InvalidRequest, "invalid x-amz-security-token"))?;
            Ok(Some(v.to_owned()))
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let access_key = cx.credentials().map(|c| c.access_key.clone());
        let session_token = session_token(cx.uri(), cx.headers(), access_key.is_some())?;
        let owner = self.0.owner(access_key.as_deref(), session_token.as_deref());
        let caller = Caller { access_key, session_token, owner };
        let op = cx.s3_op().name();
        // These are decided in the per-operation hooks below, on the parsed input.
        if !matches!(op, "DeleteObjects" | "PostObject") {
            let resource = match cx.s3_path() {
                S3Path::Root => "arn:aws:s3:::*".to_owned(),
                S3Path::Bucket { bucket } => bucket_arn(bucket),
                S3Path::Object { bucket, key } => object_arn(bucket, key),
            };
            let prefix = match op {
                "ListObjects" | "ListObjectsV2" | "ListObjectVersions" | "ListMultipartUploads" => {
                    query_param(cx.uri(), "prefix")
                }
                _ => None,
            };
            self.ask(&caller, &iam_action(op), resource, prefix.as_deref())?;
        }
        cx.extensions_mut().insert(caller);
        Ok(())
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        self.check_copy_source(req.extensions.get::<Caller>(), &req.input.copy_source)
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        self.check_copy_source(req.extensions.get::<Caller>(), &req.input.copy_source)
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let caller = req.extensions.get::<Caller>().ok_or_else(missing_caller)?;
        let mut denied = DeniedKeys::default();
        for obj in &req.input.delete.objects {
            let action = if obj.version_id.is_some() { "s3:DeleteObjectVersion" } else { "s3:DeleteObject" };
            if self.ask(caller, action, object_arn(&req.input.bucket, &obj.key), None).is_err() {
                denied.0.insert(obj.key.clone());
            }
        }
        req.extensions.insert(denied);
        Ok(())
    }

    async fn post_object(&self, req: &mut S3Request<PostObjectInput>) -> S3Result<()> {
        let caller = req.extensions.get::<Caller>().ok_or_else(missing_caller)?;
        self.ask(caller, "s3:PutObject", object_arn(&req.input.bucket, &req.input.key), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().expect("uri")
    }

    #[test]
    fn actions() {
        assert_eq!(iam_action("ListObjectsV2"), "s3:ListBucket");
        assert_eq!(iam_action("HeadObject"), "s3:GetObject");
        assert_eq!(iam_action("UploadPart"), "s3:PutObject");
        assert_eq!(iam_action("ListBuckets"), "s3:ListAllMyBuckets");
        assert_eq!(iam_action("GetBucketTagging"), "s3:GetBucketTagging");
    }

    #[test]
    fn tokens_must_be_signed() {
        let mut h = HeaderMap::new();
        h.insert(TOKEN_HEADER, "tok".parse().expect("value"));
        // Anonymous: ignored.
        assert_eq!(session_token(&uri("/b/k"), &h, false).expect("anon"), None);
        // Header auth that does not sign it: refused.
        h.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
                .parse()
                .expect("value"),
        );
        assert!(session_token(&uri("/b/k"), &h, true).is_err());
        h.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=00"
                .parse()
                .expect("value"),
        );
        assert_eq!(session_token(&uri("/b/k"), &h, true).expect("signed"), Some("tok".into()));
        // Presigned: the query token is signed.
        let q = uri("/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Security-Token=a%2Bb&X-Amz-Signature=00");
        assert_eq!(session_token(&q, &HeaderMap::new(), true).expect("presigned"), Some("a+b".into()));
        // Both: refused.
        assert!(session_token(&q, &h, true).is_err());
        // A query token without a SigV4 presigned signature: refused.
        assert!(session_token(&uri("/b/k?X-Amz-Security-Token=t"), &HeaderMap::new(), true).is_err());
    }
}

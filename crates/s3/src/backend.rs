//! The [`s3s::S3`] implementation over [`Store`].

use std::collections::BTreeMap;
use std::io::SeekFrom;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use s3s::dto::*;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, StdError, s3_error};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio_util::io::ReaderStream;

use crate::S3StoreError;
use crate::access::{Caller, DeniedKeys};
use crate::names::{key_successor, url_encode};
use crate::store::{
    Attrs, BlobSink, Cond, Content, Data, ListEntry, ListPage, ListQuery, ObjectRecord, ReadConds, Store, WriteConds,
};

/// Objects up to this size are read in one go; larger ones are streamed.
const SMALL_OBJECT: u64 = 256 << 10;
/// Bytes buffered from a request body before they are written out.
const WRITE_BATCH: usize = 1 << 20;
/// Read size when streaming an object out.
const READ_CHUNK: usize = 256 << 10;
/// S3's limit on user metadata (`x-amz-meta-*` names and values).
const MAX_USER_METADATA: usize = 2 << 10;
const MAX_KEYS: i32 = 1000;
const MAX_DELETE_KEYS: usize = 1000;
const MAX_PART_NUMBER: i32 = 10_000;

pub(crate) struct Backend {
    store: Arc<Store>,
}

impl Backend {
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

pub(crate) fn store_error(e: S3StoreError) -> S3Error {
    use S3ErrorCode as C;
    match e {
        S3StoreError::NoSuchBucket => S3Error::new(C::NoSuchBucket),
        S3StoreError::NoSuchKey => S3Error::new(C::NoSuchKey),
        S3StoreError::NoSuchUpload => S3Error::new(C::NoSuchUpload),
        S3StoreError::BucketAlreadyOwnedByYou => S3Error::new(C::BucketAlreadyOwnedByYou),
        S3StoreError::BucketAlreadyExists => S3Error::new(C::BucketAlreadyExists),
        S3StoreError::BucketNotEmpty => S3Error::new(C::BucketNotEmpty),
        S3StoreError::InvalidBucketName => S3Error::new(C::InvalidBucketName),
        S3StoreError::PreconditionFailed => S3Error::new(C::PreconditionFailed),
        S3StoreError::NotModified => S3Error::new(C::NotModified),
        S3StoreError::InvalidPart(m) => S3Error::with_message(C::InvalidPart, m),
        S3StoreError::InvalidPartOrder => S3Error::new(C::InvalidPartOrder),
        S3StoreError::EntityTooSmall => S3Error::new(C::EntityTooSmall),
        S3StoreError::EntityTooLarge => S3Error::new(C::EntityTooLarge),
        S3StoreError::InvalidRequest(m) => S3Error::with_message(C::InvalidRequest, m),
        e @ (S3StoreError::Io(_)
        | S3StoreError::Db(_)
        | S3StoreError::Corrupt(_)
        | S3StoreError::Locked(_)
        | S3StoreError::InvalidOption(_)) => {
            tracing::error!(error = %e, "s3 store error");
            S3Error::internal_error(e)
        }
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T, F>(f: F) -> S3Result<T>
where
    F: FnOnce() -> Result<T, S3StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(store_error),
        Err(e) => Err(S3Error::internal_error(e)),
    }
}

fn ts(ms: i64) -> Timestamp {
    let odt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(odt)
}

fn ts_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn ts_ms(t: &Timestamp) -> i64 {
    let n = time::OffsetDateTime::from(t.clone()).unix_timestamp_nanos() / 1_000_000;
    i64::try_from(n).unwrap_or(0)
}

fn cond(c: &ETagCondition) -> Cond {
    match c {
        ETagCondition::Any => Cond::Any,
        ETagCondition::ETag(e) => Cond::ETag(e.value().to_owned()),
    }
}

fn etag(e: &str) -> ETag {
    ETag::Strong(e.to_owned())
}

fn no_versions(version_id: Option<&str>) -> S3Result<()> {
    match version_id {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(NoSuchVersion)),
    }
}

/// Stored content encoding, without the transfer-only `aws-chunked`.
fn content_encoding(v: Option<String>) -> Option<String> {
    let v = v?;
    let kept: Vec<&str> =
        v.split(',').map(str::trim).filter(|e| !e.is_empty() && !e.eq_ignore_ascii_case("aws-chunked")).collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

#[allow(clippy::too_many_arguments)]
fn make_attrs(
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<&Timestamp>,
    metadata: Option<Metadata>,
) -> S3Result<Attrs> {
    let user: BTreeMap<String, String> = metadata.unwrap_or_default().into_iter().collect();
    let size: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(s3_error!(MetadataTooLarge, "Your metadata headers exceed the maximum allowed metadata size"));
    }
    Ok(Attrs {
        content_type,
        cache_control,
        content_disposition,
        content_encoding: content_encoding(encoding),
        content_language,
        expires_ms: expires.map(ts_ms),
        user,
        parts: Vec::new(),
    })
}

fn body_error(e: StdError) -> S3Error {
    match e.downcast::<S3Error>() {
        Ok(e) => *e,
        Err(e) => S3Error::with_source(S3ErrorCode::IncompleteBody, e),
    }
}

/// Takes in a request body of at most `limit` bytes: kept in memory if it is at most
/// `inline_max` bytes, else written to a new durable blob (not yet referenced).
async fn stage(store: &Arc<Store>, body: Option<StreamingBlob>, limit: u64, inline_max: u64) -> S3Result<Content> {
    let mut sink: Option<BlobSink> = None;
    let mut pending: Vec<Bytes> = Vec::new();
    let mut pending_len = 0usize;
    let mut total = 0u64;
    if let Some(mut body) = body {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(body_error)?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed object size."));
            }
            pending_len += chunk.len();
            pending.push(chunk);
            if pending_len >= WRITE_BATCH {
                let batch = std::mem::take(&mut pending);
                pending_len = 0;
                let (st, s) = (store.clone(), sink.take());
                sink = Some(
                    blocking(move || {
                        let mut s = match s {
                            Some(s) => s,
                            None => st.blob_sink(true)?,
                        };
                        for c in &batch {
                            s.write(c)?;
                        }
                        Ok(s)
                    })
                    .await?,
                );
            }
        }
    }
    if sink.is_none() && total <= inline_max {
        let mut data = Vec::with_capacity(pending_len);
        for c in &pending {
            data.extend_from_slice(c);
        }
        return Ok(Content::inline(data));
    }
    let st = store.clone();
    blocking(move || {
        let mut s = match sink {
            Some(s) => s,
            None => st.blob_sink(true)?,
        };
        for c in &pending {
            s.write(c)?;
        }
        Ok(Content::Blob(s.commit()?))
    })
    .await
}

fn check_content_md5(given: Option<&str>, content: &Content) -> S3Result<()> {
    let Some(given) = given else { return Ok(()) };
    let want = B64.decode(given.trim()).map_err(|_| s3_error!(InvalidDigest))?;
    if want.len() != 16 {
        return Err(s3_error!(InvalidDigest));
    }
    match content.md5() {
        Some(md5) if md5[..] == want[..] => Ok(()),
        _ => Err(s3_error!(BadDigest, "The Content-MD5 you specified did not match what we received.")),
    }
}

fn check_size(content_length: Option<i64>, limit: u64) -> S3Result<()> {
    if content_length.is_some_and(|n| u64::try_from(n).is_ok_and(|n| n > limit)) {
        return Err(s3_error!(EntityTooLarge, "Your proposed upload exceeds the maximum allowed object size."));
    }
    Ok(())
}

/// The byte range a GET/HEAD returns: `None` for the whole object (200), else
/// `[start, end)` (206). `parts` are the part sizes of a multipart object.
pub(crate) fn resolve_range(
    size: u64,
    range: Option<&Range>,
    part_number: Option<i32>,
    parts: &[u64],
) -> S3Result<Option<(u64, u64)>> {
    match (range, part_number) {
        (Some(_), Some(_)) => {
            Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter"))
        }
        (Some(r), None) => {
            let r = r.check(size).map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            Ok(Some((r.start, r.end)))
        }
        (None, Some(n)) => {
            let invalid = || {
                let mut e = S3Error::with_message(
                    S3ErrorCode::Custom("InvalidPartNumber".into()),
                    "The requested partnumber is not satisfiable",
                );
                e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
                e
            };
            let n = usize::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(invalid)?;
            if parts.is_empty() {
                return if n == 1 { Ok(if size == 0 { None } else { Some((0, size)) }) } else { Err(invalid()) };
            }
            let len = *parts.get(n - 1).ok_or_else(invalid)?;
            let start: u64 = parts[..n - 1].iter().sum();
            if len == 0 {
                return Err(invalid());
            }
            Ok(Some((start, start + len)))
        }
        (None, None) => Ok(None),
    }
}

fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", end - 1)
}

fn read_conds(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> ReadConds {
    ReadConds {
        if_match: if_match.map(cond),
        if_none_match: if_none_match.map(cond),
        if_modified_since: if_modified_since.map(ts_secs),
        if_unmodified_since: if_unmodified_since.map(ts_secs),
    }
}

fn not_modified(rec: &ObjectRecord, e: S3StoreError) -> S3Error {
    let mut err = store_error(e);
    if *err.code() == S3ErrorCode::NotModified
        && let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", rec.etag))
    {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ETAG, v);
        err.set_headers(h);
    }
    err
}

/// An object's blob, streamed.
struct FileStream {
    inner: ReaderStream<tokio::io::Take<tokio::fs::File>>,
    remaining: u64,
}

impl Stream for FileStream {
    type Item = Result<Bytes, StdError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(b))) => {
                self.remaining = self.remaining.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(b)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) if self.remaining > 0 => {
                self.remaining = 0;
                Poll::Ready(Some(Err(Box::new(std::io::Error::other("object blob is shorter than its size")))))
            }
            Poll::Ready(None) => Poll::Ready(None),
        }
    }
}

impl ByteStream for FileStream {
    fn remaining_length(&self) -> RemainingLength {
        usize::try_from(self.remaining).map_or_else(|_| RemainingLength::unknown(), RemainingLength::new_exact)
    }
}

fn caller<T>(req: &S3Request<T>) -> Option<&Caller> {
    req.extensions.get::<Caller>()
}

fn owner<T>(req: &S3Request<T>) -> Option<String> {
    caller(req).and_then(|c| c.owner.clone())
}

fn decode_token(t: &str) -> S3Result<Vec<u8>> {
    B64URL.decode(t).map_err(|_| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

struct Listing {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    count: i32,
    last: Option<String>,
}

fn render(page: ListPage, url: bool) -> Listing {
    let enc = |s: String| if url { url_encode(&s) } else { s };
    let count = i32::try_from(page.entries.len()).unwrap_or(i32::MAX);
    let last = page.entries.last().map(|e| e.name().to_owned());
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for e in page.entries {
        match e {
            ListEntry::Object { key, size, etag: e, last_modified_ms } => contents.push(Object {
                key: Some(enc(key)),
                size: Some(i64::try_from(size).unwrap_or(i64::MAX)),
                e_tag: Some(etag(&e)),
                last_modified: Some(ts(last_modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Object::default()
            }),
            ListEntry::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(enc(p)) }),
        }
    }
    Listing { contents, prefixes, count, last: last.map(enc) }
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    let v = v.unwrap_or(MAX_KEYS);
    if v < 0 {
        return Err(s3_error!(InvalidArgument, "max-keys must be non-negative"));
    }
    Ok(usize::try_from(v.min(MAX_KEYS)).unwrap_or(0))
}

fn is_url(e: Option<&EncodingType>) -> bool {
    e.is_some_and(|e| e.as_str().eq_ignore_ascii_case(EncodingType::URL))
}

impl Backend {
    async fn bucket_exists(&self, bucket: String) -> S3Result<()> {
        let store = self.store.clone();
        blocking(move || store.head_bucket(&bucket).map(drop)).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        from: Vec<u8>,
        max_keys: usize,
    ) -> S3Result<ListPage> {
        let store = self.store.clone();
        let (bucket, prefix, delimiter) = (bucket.to_owned(), prefix.to_owned(), delimiter.map(str::to_owned));
        blocking(move || {
            store.list_objects(&bucket, &ListQuery { prefix: &prefix, delimiter: delimiter.as_deref(), from, max_keys })
        })
        .await
    }
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let owner = owner(&req);
        let bucket = req.input.bucket;
        let store = self.store.clone();
        let name = bucket.clone();
        blocking(move || store.create_bucket(&name, owner.as_deref())).await?;
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{bucket}")) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.bucket_exists(req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.bucket_exists(req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let store = self.store.clone();
        blocking(move || store.delete_bucket(&req.input.bucket)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let owner = owner(&req);
        let prefix = req.input.prefix.clone();
        let store = self.store.clone();
        let who = owner.clone();
        let buckets = blocking(move || store.list_buckets(who.as_deref())).await?;
        let buckets = buckets
            .into_iter()
            .filter(|b| prefix.as_deref().is_none_or(|p| b.name.starts_with(p)))
            .map(|b| Bucket { name: Some(b.name), creation_date: Some(ts(b.created_ms)), ..Bucket::default() })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner { display_name: owner.clone(), id: owner }),
            prefix,
            ..ListBucketsOutput::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        let limit = self.store.opts.max_object_size;
        check_size(input.content_length, limit)?;
        let attrs = make_attrs(
            input.content_type,
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires.as_ref(),
            input.metadata,
        )?;
        // Refuse before reading the body.
        self.bucket_exists(input.bucket.clone()).await?;
        let content = stage(&self.store, input.body, limit, self.store.opts.inline_max).await?;
        check_content_md5(input.content_md5.as_deref(), &content)?;
        let md5 = content.md5().ok_or_else(|| s3_error!(InternalError))?;
        let conds = WriteConds {
            if_match: input.if_match.as_ref().map(cond),
            if_none_match: input.if_none_match.as_ref().map(cond),
        };
        let store = self.store.clone();
        let (bucket, key) = (input.bucket, input.key);
        let rec = blocking(move || store.put_object(&bucket, &key, content, hex::encode(md5), attrs, &conds)).await?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&rec.etag)),
            size: i64::try_from(rec.size).ok(),
            ..PutObjectOutput::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        let conds = read_conds(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        );
        let store = self.store.clone();
        let (bucket, key) = (input.bucket, input.key);
        let (rec, file, small) = blocking(move || {
            let (rec, data) = store.open_object(&bucket, &key)?;
            let buf = match data {
                Data::File(f) if rec.size > SMALL_OBJECT => return Ok((rec, Some(f), None)),
                Data::File(mut f) => {
                    let mut buf = Vec::with_capacity(usize::try_from(rec.size).unwrap_or(0));
                    std::io::Read::read_to_end(&mut f, &mut buf)?;
                    buf
                }
                Data::Inline(buf) => buf,
            };
            if buf.len() as u64 != rec.size {
                return Err(S3StoreError::Corrupt("object bytes do not match its size".into()));
            }
            Ok((rec, None, Some(Bytes::from(buf))))
        })
        .await?;
        conds.check(&rec).map_err(|e| not_modified(&rec, e))?;
        let range = resolve_range(rec.size, input.range.as_ref(), input.part_number, &rec.attrs.parts)?;
        let (start, end) = range.unwrap_or((0, rec.size));
        let len = end - start;
        let body = match (small, file) {
            (Some(bytes), _) => {
                let (s, e) = (usize::try_from(start).unwrap_or(0), usize::try_from(end).unwrap_or(0));
                StreamingBlob::from(s3s::Body::from(bytes.slice(s..e)))
            }
            (None, Some(f)) => {
                let mut f = tokio::fs::File::from_std(f);
                if start > 0 {
                    f.seek(SeekFrom::Start(start)).await.map_err(S3Error::internal_error)?;
                }
                StreamingBlob::new(FileStream {
                    inner: ReaderStream::with_capacity(f.take(len), READ_CHUNK),
                    remaining: len,
                })
            }
            (None, None) => return Err(s3_error!(InternalError)),
        };
        let a = rec.attrs;
        let parts_count =
            if input.part_number.is_some() && !a.parts.is_empty() { i32::try_from(a.parts.len()).ok() } else { None };
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            accept_ranges: Some("bytes".to_owned()),
            content_length: i64::try_from(len).ok(),
            content_range: range.map(|(s, e)| content_range(s, e, rec.size)),
            e_tag: Some(etag(&rec.etag)),
            last_modified: Some(ts(rec.last_modified_ms)),
            content_type: a.content_type,
            cache_control: a.cache_control,
            content_disposition: a.content_disposition,
            content_encoding: a.content_encoding,
            content_language: a.content_language,
            expires: a.expires_ms.map(ts),
            metadata: (!a.user.is_empty()).then(|| a.user.into_iter().collect()),
            parts_count,
            ..GetObjectOutput::default()
        }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        let store = self.store.clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let rec = blocking(move || store.get_object(&bucket, &key)).await?;
        read_conds(
            input.if_match.as_ref(),
            input.if_none_match.as_ref(),
            input.if_modified_since.as_ref(),
            input.if_unmodified_since.as_ref(),
        )
        .check(&rec)
        .map_err(|e| not_modified(&rec, e))?;
        let range = resolve_range(rec.size, input.range.as_ref(), input.part_number, &rec.attrs.parts)?;
        let (start, end) = range.unwrap_or((0, rec.size));
        let a = rec.attrs;
        let parts_count =
            if input.part_number.is_some() && !a.parts.is_empty() { i32::try_from(a.parts.len()).ok() } else { None };
        Ok(S3Response::new(HeadObjectOutput {
            accept_ranges: Some("bytes".to_owned()),
            content_length: i64::try_from(end - start).ok(),
            content_range: range.map(|(s, e)| content_range(s, e, rec.size)),
            e_tag: Some(etag(&rec.etag)),
            last_modified: Some(ts(rec.last_modified_ms)),
            content_type: a.content_type,
            cache_control: a.cache_control,
            content_disposition: a.content_disposition,
            content_encoding: a.content_encoding,
            content_language: a.content_language,
            expires: a.expires_ms.map(ts),
            metadata: (!a.user.is_empty()).then(|| a.user.into_iter().collect()),
            parts_count,
            ..HeadObjectOutput::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        no_versions(input.version_id.as_deref())?;
        let store = self.store.clone();
        if let Some(c) = input.if_match.as_ref() {
            let (s, bucket, key) = (store.clone(), input.bucket.clone(), input.key.clone());
            let rec = blocking(move || s.get_object(&bucket, &key)).await?;
            if !matches!(cond(c), Cond::Any) && !matches!(cond(c), Cond::ETag(ref e) if *e == rec.etag) {
                return Err(s3_error!(PreconditionFailed));
            }
        }
        blocking(move || store.delete_object(&input.bucket, &input.key)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        // The access hook records the keys the caller may not delete; without its record,
        // nothing is deleted.
        let denied = req.extensions.get::<DeniedKeys>().cloned();
        let input = req.input;
        let objects = input.delete.objects;
        if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
            return Err(s3_error!(MalformedXML, "a Delete request names 1 to 1000 objects"));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut allowed = Vec::new();
        let mut errors = Vec::new();
        for o in objects {
            let refused = denied.as_ref().is_none_or(|d| d.0.contains(&o.key));
            if refused {
                errors.push(Error {
                    code: Some("AccessDenied".to_owned()),
                    key: Some(o.key),
                    message: Some("Access Denied".to_owned()),
                    version_id: o.version_id,
                });
            } else if o.version_id.as_deref().is_some_and(|v| v != "null") {
                errors.push(Error {
                    code: Some("NoSuchVersion".to_owned()),
                    key: Some(o.key),
                    message: Some("The specified version does not exist.".to_owned()),
                    version_id: o.version_id,
                });
            } else {
                allowed.push(o.key);
            }
        }
        if !allowed.is_empty() {
            let store = self.store.clone();
            let bucket = input.bucket;
            let keys = allowed.clone();
            blocking(move || {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                store.delete_objects(&bucket, &refs)
            })
            .await?;
        }
        let deleted = if quiet {
            Vec::new()
        } else {
            allowed.into_iter().map(|k| DeletedObject { key: Some(k), ..DeletedObject::default() }).collect()
        };
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: (!errors.is_empty()).then_some(errors),
            ..DeleteObjectsOutput::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, version_id } = &input.copy_source else {
            return Err(s3_error!(NotImplemented, "copy sources other than bucket/key are not supported"));
        };
        no_versions(version_id.as_deref())?;
        let replace = input.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if !replace && **src_bucket == *input.bucket && **src_key == *input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let attrs = if replace {
            Some(make_attrs(
                input.content_type,
                input.cache_control,
                input.content_disposition,
                input.content_encoding,
                input.content_language,
                input.expires.as_ref(),
                input.metadata,
            )?)
        } else {
            None
        };
        let src_conds = read_conds(
            input.copy_source_if_match.as_ref(),
            input.copy_source_if_none_match.as_ref(),
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        let store = self.store.clone();
        let (sb, sk) = (src_bucket.to_string(), src_key.to_string());
        let (db, dk) = (input.bucket, input.key);
        let rec =
            blocking(move || store.copy_object(&sb, &sk, &src_conds, &db, &dk, attrs, &WriteConds::default())).await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&rec.etag)),
                last_modified: Some(ts(rec.last_modified_ms)),
                ..CopyObjectResult::default()
            }),
            ..CopyObjectOutput::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let mut from = Vec::new();
        if let Some(sa) = &input.start_after {
            from = key_successor(sa.as_bytes());
        }
        if let Some(t) = &input.continuation_token {
            from = from.max(decode_token(t)?);
        }
        let page = self.list(&input.bucket, &prefix, input.delimiter.as_deref(), from, max).await?;
        let next = page.next.as_deref().map(|n| B64URL.encode(n));
        let url = is_url(input.encoding_type.as_ref());
        let enc = |s: Option<String>| if url { s.map(|s| url_encode(&s)) } else { s };
        let l = render(page, url);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(Some(prefix)).unwrap_or_default()),
            delimiter: enc(input.delimiter),
            start_after: enc(input.start_after),
            max_keys: i32::try_from(max).ok(),
            key_count: Some(l.count),
            is_truncated: Some(next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: next,
            contents: Some(l.contents),
            common_prefixes: (!l.prefixes.is_empty()).then_some(l.prefixes),
            encoding_type: input.encoding_type,
            ..ListObjectsV2Output::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let from = input.marker.as_deref().map(|m| key_successor(m.as_bytes())).unwrap_or_default();
        let page = self.list(&input.bucket, &prefix, input.delimiter.as_deref(), from, max).await?;
        let truncated = page.next.is_some();
        let url = is_url(input.encoding_type.as_ref());
        let enc = |s: Option<String>| if url { s.map(|s| url_encode(&s)) } else { s };
        let l = render(page, url);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(Some(prefix)).unwrap_or_default()),
            delimiter: enc(input.delimiter),
            marker: Some(enc(input.marker).unwrap_or_default()),
            max_keys: i32::try_from(max).ok(),
            is_truncated: Some(truncated),
            next_marker: if truncated { l.last } else { None },
            contents: Some(l.contents),
            common_prefixes: (!l.prefixes.is_empty()).then_some(l.prefixes),
            encoding_type: input.encoding_type,
            ..ListObjectsOutput::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        let attrs = make_attrs(
            input.content_type,
            input.cache_control,
            input.content_disposition,
            input.content_encoding,
            input.content_language,
            input.expires.as_ref(),
            input.metadata,
        )?;
        let store = self.store.clone();
        let (bucket, key) = (input.bucket.clone(), input.key.clone());
        let upload_id = blocking(move || store.create_upload(&bucket, &key, &attrs)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..CreateMultipartUploadOutput::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=MAX_PART_NUMBER).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"));
        }
        let part_number = u32::try_from(input.part_number).map_err(|_| s3_error!(InvalidArgument))?;
        let limit = self.store.opts.max_part_size;
        check_size(input.content_length, limit)?;
        // Refuse an unknown upload before reading the body.
        let store = self.store.clone();
        let (id, bucket, key) = (input.upload_id.clone(), input.bucket.clone(), input.key.clone());
        blocking(move || store.list_parts(&id, &bucket, &key, 0, 0)).await?;
        let content = stage(&self.store, input.body, limit, 0).await?;
        check_content_md5(input.content_md5.as_deref(), &content)?;
        let Content::Blob(blob) = content else { return Err(s3_error!(InternalError)) };
        let store = self.store.clone();
        let (id, bucket, key) = (input.upload_id, input.bucket, input.key);
        let e = blocking(move || store.put_part(&id, &bucket, &key, part_number, blob)).await?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(etag(&e)), ..UploadPartOutput::default() }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let parts = input.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        let mut chosen = Vec::with_capacity(parts.len());
        for p in parts {
            let n = p
                .part_number
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| s3_error!(InvalidPart, "missing part number"))?;
            let e = p.e_tag.ok_or_else(|| s3_error!(InvalidPart, "missing ETag"))?;
            chosen.push((n, e.value().to_owned()));
        }
        let conds = WriteConds {
            if_match: input.if_match.as_ref().map(cond),
            if_none_match: input.if_none_match.as_ref().map(cond),
        };
        let store = self.store.clone();
        let (id, bucket, key) = (input.upload_id, input.bucket.clone(), input.key.clone());
        let rec = blocking(move || store.complete_upload(&id, &bucket, &key, &chosen, &conds)).await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            location: Some(format!("/{}/{}", input.bucket, url_encode(&input.key))),
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(etag(&rec.etag)),
            ..CompleteMultipartUploadOutput::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let store = self.store.clone();
        blocking(move || store.abort_upload(&input.upload_id, &input.bucket, &input.key)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max = usize::try_from(input.max_parts.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        let after = input.part_number_marker.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        let store = self.store.clone();
        let (id, bucket, key) = (input.upload_id.clone(), input.bucket.clone(), input.key.clone());
        let mut parts = blocking(move || store.list_parts(&id, &bucket, &key, after, max + 1)).await?;
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().and_then(|p| i32::try_from(p.part_number).ok());
        let parts = parts
            .into_iter()
            .map(|p| Part {
                e_tag: Some(etag(&p.etag)),
                last_modified: Some(ts(p.last_modified_ms)),
                part_number: i32::try_from(p.part_number).ok(),
                size: i64::try_from(p.size).ok(),
                ..Part::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: i32::try_from(max).ok(),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            is_truncated: Some(truncated),
            parts: Some(parts),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..ListPartsOutput::default()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        Range::parse(s).expect("range")
    }

    #[test]
    fn range_math() {
        assert_eq!(resolve_range(10, None, None, &[]).expect("whole"), None);
        assert_eq!(resolve_range(10, Some(&r("bytes=2-5")), None, &[]).expect("mid"), Some((2, 6)));
        assert_eq!(resolve_range(10, Some(&r("bytes=5-")), None, &[]).expect("from"), Some((5, 10)));
        assert_eq!(resolve_range(10, Some(&r("bytes=-3")), None, &[]).expect("suffix"), Some((7, 10)));
        assert_eq!(resolve_range(10, Some(&r("bytes=-30")), None, &[]).expect("long suffix"), Some((0, 10)));
        assert_eq!(resolve_range(10, Some(&r("bytes=8-100")), None, &[]).expect("clamped"), Some((8, 10)));
        assert_eq!(resolve_range(10, Some(&r("bytes=9-9")), None, &[]).expect("last"), Some((9, 10)));
        for bad in ["bytes=10-", "bytes=10-20", "bytes=-0"] {
            let e = resolve_range(10, Some(&r(bad)), None, &[]).expect_err(bad);
            assert_eq!(*e.code(), S3ErrorCode::InvalidRange, "{bad}");
        }
        assert_eq!(
            *resolve_range(0, Some(&r("bytes=0-0")), None, &[]).expect_err("empty").code(),
            S3ErrorCode::InvalidRange
        );
        assert_eq!(content_range(2, 6, 10), "bytes 2-5/10");
        // partNumber on a multipart object.
        assert_eq!(resolve_range(12, None, Some(1), &[5, 5, 2]).expect("p1"), Some((0, 5)));
        assert_eq!(resolve_range(12, None, Some(3), &[5, 5, 2]).expect("p3"), Some((10, 12)));
        assert!(resolve_range(12, None, Some(4), &[5, 5, 2]).is_err());
        assert!(resolve_range(12, None, Some(0), &[5, 5, 2]).is_err());
        assert_eq!(resolve_range(12, None, Some(1), &[]).expect("single"), Some((0, 12)));
        assert!(resolve_range(12, None, Some(2), &[]).is_err());
        assert!(resolve_range(12, Some(&r("bytes=0-1")), Some(1), &[]).is_err());
    }

    #[test]
    fn encodings() {
        assert_eq!(content_encoding(Some("aws-chunked".into())), None);
        assert_eq!(content_encoding(Some("gzip, aws-chunked".into())), Some("gzip".into()));
        assert_eq!(content_encoding(Some("gzip".into())), Some("gzip".into()));
    }
}

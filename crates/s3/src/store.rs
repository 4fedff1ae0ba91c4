//! The on-disk store: blobs (object bytes) under `<root>/blobs`, metadata in `<root>/s3.db`.
//!
//! All functions here are blocking; the service calls them from `spawn_blocking` (single-row
//! lookups excepted: they only touch SQLite's page cache).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::names::{key_successor, prefix_successor, valid_bucket_name};
use crate::{Options, S3StoreError};

type Result<T, E = S3StoreError> = std::result::Result<T, E>;

const READERS: usize = 4;
/// Times a reader retries when the blob it looked up was replaced before it could open it.
const OPEN_RETRIES: usize = 16;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    owner TEXT,
    created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    -- The blob file holding the bytes, or NULL when they are inline in `data`.
    blob TEXT,
    data BLOB,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    attrs TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key BLOB NOT NULL,
    attrs TEXT NOT NULL,
    initiated_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_by_bucket ON uploads (bucket, key);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    last_modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;
";

/// Everything about an object besides its bytes, size and ETag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Attrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// `x-amz-meta-*`, without the prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Sizes of the parts of a multipart object (empty for a single-part object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectRecord {
    pub key: String,
    /// The blob file; `None` when the bytes are inline in the database.
    pub blob: Option<String>,
    pub size: u64,
    /// Hex MD5, or `<hex>-<parts>` for a multipart object; unquoted.
    pub etag: String,
    pub last_modified_ms: i64,
    pub attrs: Attrs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BucketRecord {
    pub name: String,
    pub owner: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartRecord {
    pub part_number: u32,
    pub blob: String,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
}

/// An ETag precondition (`If-Match` / `If-None-Match`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cond {
    Any,
    ETag(String),
}

impl Cond {
    fn matches(&self, etag: &str) -> bool {
        match self {
            Cond::Any => true,
            Cond::ETag(e) => e == etag,
        }
    }
}

/// Preconditions on reading an object (GET/HEAD, copy source), times in seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadConds {
    pub if_match: Option<Cond>,
    pub if_none_match: Option<Cond>,
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

impl ReadConds {
    /// RFC 9110 §13.2.2 order, as S3: If-Match (else If-Unmodified-Since) → 412;
    /// If-None-Match (else If-Modified-Since) → 304.
    pub fn check(&self, rec: &ObjectRecord) -> Result<()> {
        let modified_s = rec.last_modified_ms.div_euclid(1000);
        match &self.if_match {
            Some(c) if !c.matches(&rec.etag) => return Err(S3StoreError::PreconditionFailed),
            Some(_) => {}
            None => {
                if self.if_unmodified_since.is_some_and(|t| modified_s > t) {
                    return Err(S3StoreError::PreconditionFailed);
                }
            }
        }
        match &self.if_none_match {
            Some(c) if c.matches(&rec.etag) => return Err(S3StoreError::NotModified),
            Some(_) => {}
            None => {
                if self.if_modified_since.is_some_and(|t| modified_s <= t) {
                    return Err(S3StoreError::NotModified);
                }
            }
        }
        Ok(())
    }
}

/// Preconditions on writing an object (conditional PUT / CompleteMultipartUpload).
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteConds {
    pub if_match: Option<Cond>,
    pub if_none_match: Option<Cond>,
}

impl WriteConds {
    fn check(&self, existing_etag: Option<&str>) -> Result<()> {
        if let Some(c) = &self.if_none_match
            && existing_etag.is_some_and(|e| c.matches(e))
        {
            return Err(S3StoreError::PreconditionFailed);
        }
        if let Some(c) = &self.if_match {
            match existing_etag {
                None => return Err(S3StoreError::NoSuchKey),
                Some(e) if !c.matches(e) => return Err(S3StoreError::PreconditionFailed),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// A blob that is durable on disk under its final name but not yet referenced by the
/// database. Dropping it without [`StagedBlob::disarm`] deletes it.
#[derive(Debug)]
pub(crate) struct StagedBlob {
    pub id: String,
    pub path: PathBuf,
    pub size: u64,
    pub md5: Option<[u8; 16]>,
    armed: bool,
}

impl StagedBlob {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The bytes of an object about to be committed: a staged blob file, or (small objects) bytes
/// to be stored inline in the database row, which makes the commit a single fsync.
#[derive(Debug)]
pub(crate) enum Content {
    Inline { data: Vec<u8>, md5: [u8; 16] },
    Blob(StagedBlob),
}

impl Content {
    pub fn inline(data: Vec<u8>) -> Self {
        let md5 = Md5::digest(&data).into();
        Content::Inline { data, md5 }
    }

    pub fn size(&self) -> u64 {
        match self {
            Content::Inline { data, .. } => data.len() as u64,
            Content::Blob(b) => b.size,
        }
    }

    pub fn md5(&self) -> Option<[u8; 16]> {
        match self {
            Content::Inline { md5, .. } => Some(*md5),
            Content::Blob(b) => b.md5,
        }
    }

    fn columns(&self) -> (Option<&str>, Option<&[u8]>) {
        match self {
            Content::Inline { data, .. } => (None, Some(data)),
            Content::Blob(b) => (Some(&b.id), None),
        }
    }

    fn disarm(&mut self) {
        if let Content::Blob(b) = self {
            b.disarm();
        }
    }

    fn blob_id(&self) -> Option<String> {
        match self {
            Content::Inline { .. } => None,
            Content::Blob(b) => Some(b.id.clone()),
        }
    }
}

/// An object's bytes, ready to read.
pub(crate) enum Data {
    Inline(Vec<u8>),
    File(File),
}

/// A blob being written: `<dir>/<id>.tmp`, removed on drop unless committed.
pub(crate) struct BlobSink {
    id: String,
    dir: PathBuf,
    tmp: PathBuf,
    file: File,
    size: u64,
    md5: Option<Md5>,
    done: bool,
}

impl BlobSink {
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if let Some(h) = &mut self.md5 {
            h.update(data);
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    /// Appends the whole of `src` (kernel-side copy where possible; no hashing).
    fn append_file(&mut self, src: &mut File) -> io::Result<u64> {
        let n = io::copy(src, &mut self.file)?;
        self.size += n;
        Ok(n)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// fsync, rename to the final name, fsync the directory.
    pub fn commit(mut self) -> io::Result<StagedBlob> {
        self.file.sync_all()?;
        let path = self.dir.join(&self.id);
        fs::rename(&self.tmp, &path)?;
        self.done = true;
        let staged = StagedBlob {
            id: std::mem::take(&mut self.id),
            path,
            size: self.size,
            md5: self.md5.take().map(|h| h.finalize().into()),
            armed: true,
        };
        sync_dir(&self.dir)?;
        Ok(staged)
    }
}

impl Drop for BlobSink {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `md5(concat(md5 of each part)) - N`, as S3 computes a multipart ETag.
pub(crate) fn multipart_etag<'a>(part_etags: impl IntoIterator<Item = &'a str>) -> Result<String> {
    let mut h = Md5::new();
    let mut n = 0usize;
    for e in part_etags {
        let raw = hex::decode(e).map_err(|_| S3StoreError::Corrupt(format!("part etag {e:?}")))?;
        h.update(&raw);
        n += 1;
    }
    Ok(format!("{}-{n}", hex::encode(h.finalize())))
}

/// One page of a listing.
#[derive(Debug, Default)]
pub(crate) struct ListPage {
    pub entries: Vec<ListEntry>,
    /// Inclusive lower bound to continue from, when truncated.
    pub next: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListEntry {
    Object { key: String, size: u64, etag: String, last_modified_ms: i64 },
    Prefix(String),
}

impl ListEntry {
    pub fn name(&self) -> &str {
        match self {
            ListEntry::Object { key, .. } => key,
            ListEntry::Prefix(p) => p,
        }
    }
}

pub(crate) struct ListQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Inclusive lower bound (from start-after / marker / continuation token).
    pub from: Vec<u8>,
    pub max_keys: usize,
}

pub(crate) struct Store {
    blobs: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    pub opts: Options,
    _lock: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    c.execute_batch("PRAGMA synchronous=FULL;")?;
    Ok(c)
}

fn corrupt(what: &str) -> S3StoreError {
    S3StoreError::Corrupt(what.to_owned())
}

fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| S3StoreError::EntityTooLarge)
}

fn parse_attrs(s: &str) -> Result<Attrs> {
    serde_json::from_str(s).map_err(|e| S3StoreError::Corrupt(format!("attrs: {e}")))
}

fn attrs_json(a: &Attrs) -> Result<String> {
    serde_json::to_string(a).map_err(|e| S3StoreError::Corrupt(format!("attrs: {e}")))
}

fn key_string(raw: Vec<u8>) -> Result<String> {
    String::from_utf8(raw).map_err(|_| corrupt("key is not UTF-8"))
}

fn bucket_exists(conn: &Connection, bucket: &str) -> Result<bool> {
    Ok(conn.query_row("SELECT 1 FROM buckets WHERE name = ?1", [bucket], |_| Ok(())).optional()?.is_some())
}

fn ensure_bucket(conn: &Connection, bucket: &str) -> Result<()> {
    if bucket_exists(conn, bucket)? { Ok(()) } else { Err(S3StoreError::NoSuchBucket) }
}

/// An object's record, and its inline bytes if `with_data` (and it has some).
fn read_object(
    conn: &Connection,
    bucket: &str,
    key: &str,
    with_data: bool,
) -> Result<Option<(ObjectRecord, Option<Vec<u8>>)>> {
    let sql = if with_data {
        "SELECT blob, size, etag, attrs, last_modified_ms, data FROM objects WHERE bucket = ?1 AND key = ?2"
    } else {
        "SELECT blob, size, etag, attrs, last_modified_ms, NULL FROM objects WHERE bucket = ?1 AND key = ?2"
    };
    let row = conn
        .prepare_cached(sql)?
        .query_row(params![bucket, key.as_bytes()], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<Vec<u8>>>(5)?,
            ))
        })
        .optional()?;
    let Some((blob, size, etag, attrs, last_modified_ms, data)) = row else { return Ok(None) };
    let rec = ObjectRecord {
        key: key.to_owned(),
        blob,
        size: to_u64(size, "size")?,
        etag,
        last_modified_ms,
        attrs: parse_attrs(&attrs)?,
    };
    Ok(Some((rec, data)))
}

const UPSERT_OBJECT: &str = "INSERT INTO objects (bucket, key, blob, data, size, etag, attrs, last_modified_ms)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
     ON CONFLICT (bucket, key) DO UPDATE SET blob = excluded.blob, data = excluded.data, size = excluded.size,
       etag = excluded.etag, attrs = excluded.attrs, last_modified_ms = excluded.last_modified_ms";

/// The blob and ETag of an existing object.
fn current_object(conn: &Connection, bucket: &str, key: &str) -> Result<Option<(Option<String>, String)>> {
    Ok(conn
        .prepare_cached("SELECT blob, etag FROM objects WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![bucket, key.as_bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// The upload's attributes, if `upload_id` names an upload of `bucket`/`key`.
fn read_upload(conn: &Connection, upload_id: &str, bucket: &str, key: &str) -> Result<Attrs> {
    let row = conn
        .query_row(
            "SELECT attrs FROM uploads WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3",
            params![upload_id, bucket, key.as_bytes()],
            |r| r.get::<_, String>(0),
        )
        .optional()?;
    match row {
        Some(a) => parse_attrs(&a),
        None => {
            ensure_bucket(conn, bucket)?;
            Err(S3StoreError::NoSuchUpload)
        }
    }
}

fn read_parts(conn: &Connection, upload_id: &str, after: u32, limit: usize) -> Result<Vec<PartRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT part_number, blob, size, etag, last_modified_ms FROM parts
         WHERE upload_id = ?1 AND part_number > ?2 ORDER BY part_number LIMIT ?3",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![upload_id, after, limit], |r| {
        Ok((
            r.get::<_, u32>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, i64>(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (part_number, blob, size, etag, last_modified_ms) = row?;
        out.push(PartRecord { part_number, blob, size: to_u64(size, "part size")?, etag, last_modified_ms });
    }
    Ok(out)
}

impl Store {
    /// Opens (creating if needed) the store at `root`, takes its lock, and removes the orphan
    /// blobs a crash may have left.
    pub fn open(root: &Path, opts: Options) -> Result<Self> {
        fs::create_dir_all(root)?;
        let lock_file = OpenOptions::new().create(true).truncate(false).write(true).open(root.join("lock"))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(S3StoreError::Locked(root.to_owned())),
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        let blobs = root.join("blobs");
        for i in 0..=255u8 {
            fs::create_dir_all(blobs.join(format!("{i:02x}")))?;
        }
        let db = root.join("s3.db");
        let writer = open_conn(&db)?;
        writer.execute_batch(SCHEMA)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(Mutex::new(open_conn(&db)?));
        }
        let store = Store {
            blobs,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            opts,
            _lock: lock_file,
        };
        let removed = store.collect_garbage()?;
        if removed > 0 {
            tracing::info!(removed, "s3 store: removed orphan blobs left by an interrupted write");
        }
        Ok(store)
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(g) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return g;
            }
        }
        lock(&self.readers[start % self.readers.len()])
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    pub fn blob_path(&self, id: &str) -> PathBuf {
        let fan = id.get(..2).unwrap_or("00");
        self.blobs.join(fan).join(id)
    }

    fn remove_blob(&self, id: &str) {
        if let Err(e) = fs::remove_file(self.blob_path(id))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(blob = id, error = %e, "s3 store: could not remove a replaced blob");
        }
    }

    /// Deletes every file under `blobs/` that no object or part references.
    pub fn collect_garbage(&self) -> Result<usize> {
        let referenced: HashSet<String> = {
            let conn = self.writer();
            let mut stmt =
                conn.prepare("SELECT blob FROM objects WHERE blob IS NOT NULL UNION ALL SELECT blob FROM parts")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut removed = 0;
        for dir in fs::read_dir(&self.blobs)? {
            let dir = dir?;
            if !dir.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(dir.path())? {
                let f = f?;
                let name = f.file_name();
                if name.to_str().is_some_and(|n| referenced.contains(n)) {
                    continue;
                }
                fs::remove_file(f.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A new blob being written (`hash`: compute its MD5).
    pub fn blob_sink(&self, hash: bool) -> io::Result<BlobSink> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.blob_path(&id).parent().map(Path::to_path_buf).unwrap_or_else(|| self.blobs.clone());
        let tmp = dir.join(format!("{id}.tmp"));
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(BlobSink { id, dir, tmp, file, size: 0, md5: hash.then(Md5::new), done: false })
    }

    // ---- buckets ----

    pub fn create_bucket(&self, name: &str, owner: Option<&str>) -> Result<()> {
        if !valid_bucket_name(name) {
            return Err(S3StoreError::InvalidBucketName);
        }
        let conn = self.writer();
        let existing: Option<Option<String>> =
            conn.query_row("SELECT owner FROM buckets WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        if let Some(existing_owner) = existing {
            return Err(if existing_owner.as_deref() == owner {
                S3StoreError::BucketAlreadyOwnedByYou
            } else {
                S3StoreError::BucketAlreadyExists
            });
        }
        conn.execute(
            "INSERT INTO buckets (name, owner, created_ms) VALUES (?1, ?2, ?3)",
            params![name, owner, now_ms()],
        )?;
        Ok(())
    }

    pub fn head_bucket(&self, name: &str) -> Result<BucketRecord> {
        let conn = self.reader();
        conn.query_row("SELECT owner, created_ms FROM buckets WHERE name = ?1", [name], |r| {
            Ok(BucketRecord { name: name.to_owned(), owner: r.get(0)?, created_ms: r.get(1)? })
        })
        .optional()?
        .ok_or(S3StoreError::NoSuchBucket)
    }

    /// Buckets whose owner is `owner` (`None`: buckets without an owner), by name.
    pub fn list_buckets(&self, owner: Option<&str>) -> Result<Vec<BucketRecord>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT name, owner, created_ms FROM buckets WHERE owner IS ?1 ORDER BY name")?;
        let rows =
            stmt.query_map([owner], |r| Ok(BucketRecord { name: r.get(0)?, owner: r.get(1)?, created_ms: r.get(2)? }))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Deletes an empty bucket, aborting its in-progress multipart uploads.
    pub fn delete_bucket(&self, name: &str) -> Result<()> {
        let part_blobs = {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_bucket(&tx, name)?;
            let nonempty =
                tx.query_row("SELECT 1 FROM objects WHERE bucket = ?1 LIMIT 1", [name], |_| Ok(())).optional()?;
            if nonempty.is_some() {
                return Err(S3StoreError::BucketNotEmpty);
            }
            let blobs: Vec<String> = {
                let mut stmt = tx.prepare(
                    "SELECT p.blob FROM parts p JOIN uploads u ON u.upload_id = p.upload_id WHERE u.bucket = ?1",
                )?;
                let rows = stmt.query_map([name], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "DELETE FROM parts WHERE upload_id IN (SELECT upload_id FROM uploads WHERE bucket = ?1)",
                [name],
            )?;
            tx.execute("DELETE FROM uploads WHERE bucket = ?1", [name])?;
            tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
            tx.commit()?;
            blobs
        };
        for b in part_blobs {
            self.remove_blob(&b);
        }
        Ok(())
    }

    // ---- objects ----

    fn lookup(&self, bucket: &str, key: &str, with_data: bool) -> Result<(ObjectRecord, Option<Vec<u8>>)> {
        let conn = self.reader();
        match read_object(&conn, bucket, key, with_data)? {
            Some(r) => Ok(r),
            None => {
                ensure_bucket(&conn, bucket)?;
                Err(S3StoreError::NoSuchKey)
            }
        }
    }

    /// An object's record (not its bytes).
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<ObjectRecord> {
        self.lookup(bucket, key, false).map(|(rec, _)| rec)
    }

    /// Looks an object up and opens its blob (or takes its inline bytes). A concurrent
    /// overwrite may unlink the blob between the two; then the lookup is repeated (an open file
    /// stays readable).
    pub fn open_object(&self, bucket: &str, key: &str) -> Result<(ObjectRecord, Data)> {
        for _ in 0..OPEN_RETRIES {
            let (rec, data) = self.lookup(bucket, key, true)?;
            let Some(blob) = &rec.blob else {
                let data = data.ok_or_else(|| corrupt("object has neither blob nor data"))?;
                return Ok((rec, Data::Inline(data)));
            };
            match File::open(self.blob_path(blob)) {
                Ok(f) => return Ok((rec, Data::File(f))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other("object is being overwritten too often to be read").into())
    }

    /// Points `bucket`/`key` at `content` (the commit point of a write), then unlinks the blob
    /// it replaces.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        mut content: Content,
        etag: String,
        attrs: Attrs,
        conds: &WriteConds,
    ) -> Result<ObjectRecord> {
        let now = now_ms();
        let old = {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_bucket(&tx, bucket)?;
            let old = current_object(&tx, bucket, key)?;
            conds.check(old.as_ref().map(|o| o.1.as_str()))?;
            let (blob, data) = content.columns();
            tx.prepare_cached(UPSERT_OBJECT)?.execute(params![
                bucket,
                key.as_bytes(),
                blob,
                data,
                to_i64(content.size())?,
                etag,
                attrs_json(&attrs)?,
                now
            ])?;
            tx.commit()?;
            content.disarm();
            old
        };
        if let Some((Some(old_blob), _)) = old {
            self.remove_blob(&old_blob);
        }
        Ok(ObjectRecord {
            key: key.to_owned(),
            blob: content.blob_id(),
            size: content.size(),
            etag,
            last_modified_ms: now,
            attrs,
        })
    }

    /// Deletes an object (no error if it does not exist).
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<()> {
        self.delete_objects(bucket, &[key])
    }

    /// Deletes objects in one transaction (missing keys are not errors).
    pub fn delete_objects(&self, bucket: &str, keys: &[&str]) -> Result<()> {
        let blobs = {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            ensure_bucket(&tx, bucket)?;
            let mut blobs = Vec::new();
            {
                let mut stmt =
                    tx.prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob")?;
                for key in keys {
                    let deleted = stmt
                        .query_row(params![bucket, key.as_bytes()], |r| r.get::<_, Option<String>>(0))
                        .optional()?;
                    if let Some(Some(b)) = deleted {
                        blobs.push(b);
                    }
                }
            }
            tx.commit()?;
            blobs
        };
        for b in blobs {
            self.remove_blob(&b);
        }
        Ok(())
    }

    /// Copies an object's bytes into a new blob and commits it under the destination key.
    /// `attrs`: `None` keeps the source's (metadata directive COPY).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_object(
        &self,
        src_bucket: &str,
        src_key: &str,
        src_conds: &ReadConds,
        dst_bucket: &str,
        dst_key: &str,
        attrs: Option<Attrs>,
        dst_conds: &WriteConds,
    ) -> Result<ObjectRecord> {
        {
            let conn = self.reader();
            ensure_bucket(&conn, dst_bucket)?;
        }
        let (src, data) = self.open_object(src_bucket, src_key)?;
        src_conds.check(&src).map_err(|e| match e {
            S3StoreError::NotModified => S3StoreError::PreconditionFailed,
            e => e,
        })?;
        if src.size > self.opts.max_object_size {
            return Err(S3StoreError::InvalidRequest(format!(
                "The specified copy source is larger than the maximum allowable size for a copy source: {}",
                self.opts.max_object_size
            )));
        }
        let mut file = match data {
            Data::Inline(bytes) => {
                let etag = src.etag.clone();
                let attrs = attrs.unwrap_or_else(|| src.attrs.clone());
                return self.put_object(dst_bucket, dst_key, Content::inline(bytes), etag, attrs, dst_conds);
            }
            Data::File(f) => f,
        };
        // A multipart source gets the plain MD5 ETag of a single-part object, as S3 does.
        let multipart = src.etag.contains('-');
        let mut sink = self.blob_sink(multipart)?;
        if multipart {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sink.write(&buf[..n])?;
            }
        } else {
            sink.append_file(&mut file)?;
        }
        if sink.size() != src.size {
            return Err(io::Error::other("copy source changed size while being read").into());
        }
        let staged = sink.commit()?;
        let etag = match staged.md5 {
            Some(md5) => hex::encode(md5),
            None => src.etag.clone(),
        };
        let mut attrs = attrs.unwrap_or_else(|| src.attrs.clone());
        attrs.parts.clear();
        self.put_object(dst_bucket, dst_key, Content::Blob(staged), etag, attrs, dst_conds)
    }

    /// One page of `bucket`'s keys in UTF-8 byte order, rolling keys up to common prefixes at
    /// `delimiter`.
    pub fn list_objects(&self, bucket: &str, q: &ListQuery<'_>) -> Result<ListPage> {
        let mut conn = self.reader();
        let tx = conn.transaction()?;
        ensure_bucket(&tx, bucket)?;
        let prefix = q.prefix.as_bytes();
        let upper = prefix_successor(prefix);
        let mut lower = if q.from.as_slice() > prefix { q.from.clone() } else { prefix.to_vec() };
        let mut page = ListPage::default();
        let delimiter = q.delimiter.filter(|d| !d.is_empty()).map(str::as_bytes);
        let mut stmt_bounded = tx.prepare_cached(
            "SELECT key, size, etag, last_modified_ms FROM objects
             WHERE bucket = ?1 AND key >= ?2 AND key < ?3 ORDER BY key LIMIT ?4",
        )?;
        let mut stmt_open = tx.prepare_cached(
            "SELECT key, size, etag, last_modified_ms FROM objects
             WHERE bucket = ?1 AND key >= ?2 ORDER BY key LIMIT ?3",
        )?;
        'outer: loop {
            // One more than we can take tells whether the listing is truncated.
            let want = q.max_keys - page.entries.len() + 1;
            let want_i = i64::try_from(want).unwrap_or(i64::MAX);
            let map = |r: &rusqlite::Row<'_>| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            };
            let rows: Vec<_> = match &upper {
                Some(u) => {
                    stmt_bounded.query_map(params![bucket, lower, u, want_i], map)?.collect::<rusqlite::Result<_>>()?
                }
                None => stmt_open.query_map(params![bucket, lower, want_i], map)?.collect::<rusqlite::Result<_>>()?,
            };
            let exhausted = rows.len() < want;
            for (key, size, etag, last_modified_ms) in rows {
                if page.entries.len() == q.max_keys {
                    page.next = Some(key);
                    break 'outer;
                }
                if let Some(d) = delimiter
                    && let Some(i) = find(&key[prefix.len()..], d)
                {
                    let cp = &key[..prefix.len() + i + d.len()];
                    lower = prefix_successor(cp).ok_or_else(|| corrupt("common prefix without successor"))?;
                    page.entries.push(ListEntry::Prefix(key_string(cp.to_vec())?));
                    continue 'outer;
                }
                lower = key_successor(&key);
                page.entries.push(ListEntry::Object {
                    key: key_string(key)?,
                    size: to_u64(size, "size")?,
                    etag,
                    last_modified_ms,
                });
            }
            if exhausted {
                break;
            }
        }
        Ok(page)
    }

    // ---- multipart uploads ----

    pub fn create_upload(&self, bucket: &str, key: &str, attrs: &Attrs) -> Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let conn = self.writer();
        ensure_bucket(&conn, bucket)?;
        conn.execute(
            "INSERT INTO uploads (upload_id, bucket, key, attrs, initiated_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, bucket, key.as_bytes(), attrs_json(attrs)?, now_ms()],
        )?;
        Ok(id)
    }

    /// Records a part (replacing an earlier upload of the same number).
    pub fn put_part(
        &self,
        upload_id: &str,
        bucket: &str,
        key: &str,
        part_number: u32,
        mut blob: StagedBlob,
    ) -> Result<String> {
        let md5 = blob.md5.ok_or_else(|| corrupt("part without md5"))?;
        let etag = hex::encode(md5);
        let old = {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            read_upload(&tx, upload_id, bucket, key)?;
            let old: Option<String> = tx
                .query_row(
                    "SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2",
                    params![upload_id, part_number],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute(
                "INSERT OR REPLACE INTO parts (upload_id, part_number, blob, size, etag, last_modified_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![upload_id, part_number, blob.id, to_i64(blob.size)?, etag, now_ms()],
            )?;
            tx.commit()?;
            blob.disarm();
            old
        };
        if let Some(b) = old {
            self.remove_blob(&b);
        }
        Ok(etag)
    }

    /// Parts after `after`, at most `limit`, with the upload's attributes.
    pub fn list_parts(
        &self,
        upload_id: &str,
        bucket: &str,
        key: &str,
        after: u32,
        limit: usize,
    ) -> Result<Vec<PartRecord>> {
        let mut conn = self.reader();
        let tx = conn.transaction()?;
        read_upload(&tx, upload_id, bucket, key)?;
        read_parts(&tx, upload_id, after, limit)
    }

    /// Concatenates the chosen parts (`(number, etag)`, ascending) into the object.
    pub fn complete_upload(
        &self,
        upload_id: &str,
        bucket: &str,
        key: &str,
        chosen: &[(u32, String)],
        conds: &WriteConds,
    ) -> Result<ObjectRecord> {
        if chosen.is_empty() {
            return Err(S3StoreError::InvalidRequest("You must specify at least one part".into()));
        }
        if chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(S3StoreError::InvalidPartOrder);
        }
        let (mut attrs, parts) = {
            let mut conn = self.reader();
            let tx = conn.transaction()?;
            let attrs = read_upload(&tx, upload_id, bucket, key)?;
            (attrs, read_parts(&tx, upload_id, 0, usize::MAX)?)
        };
        let mut selected = Vec::with_capacity(chosen.len());
        for (i, (n, etag)) in chosen.iter().enumerate() {
            let p = parts.iter().find(|p| p.part_number == *n && p.etag == *etag).ok_or_else(|| {
                S3StoreError::InvalidPart(format!("part {n} was not uploaded or its ETag does not match"))
            })?;
            if i + 1 < chosen.len() && p.size < self.opts.min_part_size {
                return Err(S3StoreError::EntityTooSmall);
            }
            selected.push(p);
        }
        let total: u64 = selected.iter().map(|p| p.size).sum();
        if total > self.opts.max_multipart_object_size {
            return Err(S3StoreError::EntityTooLarge);
        }
        let mut sink = self.blob_sink(false)?;
        for p in &selected {
            let mut f = File::open(self.blob_path(&p.blob)).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => S3StoreError::InvalidPart(format!("part {} was replaced", p.part_number)),
                _ => e.into(),
            })?;
            if sink.append_file(&mut f)? == 0 && p.size != 0 {
                return Err(io::Error::other("part is empty on disk").into());
            }
        }
        if sink.size() != total {
            return Err(S3StoreError::InvalidPart("a part changed while the upload was being completed".into()));
        }
        let mut content = Content::Blob(sink.commit()?);
        let etag = multipart_etag(selected.iter().map(|p| p.etag.as_str()))?;
        attrs.parts = selected.iter().map(|p| p.size).collect();
        let now = now_ms();
        let garbage = {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The upload may have been completed or aborted meanwhile.
            read_upload(&tx, upload_id, bucket, key)?;
            let mut garbage: Vec<String> = {
                let mut stmt = tx.prepare("DELETE FROM parts WHERE upload_id = ?1 RETURNING blob")?;
                let rows = stmt.query_map([upload_id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
            let old = current_object(&tx, bucket, key)?;
            conds.check(old.as_ref().map(|o| o.1.as_str()))?;
            let (blob, data) = content.columns();
            tx.prepare_cached(UPSERT_OBJECT)?.execute(params![
                bucket,
                key.as_bytes(),
                blob,
                data,
                to_i64(content.size())?,
                etag,
                attrs_json(&attrs)?,
                now
            ])?;
            tx.commit()?;
            content.disarm();
            garbage.extend(old.and_then(|o| o.0));
            garbage
        };
        for b in garbage {
            self.remove_blob(&b);
        }
        Ok(ObjectRecord {
            key: key.to_owned(),
            blob: content.blob_id(),
            size: content.size(),
            etag,
            last_modified_ms: now,
            attrs,
        })
    }

    pub fn abort_upload(&self, upload_id: &str, bucket: &str, key: &str) -> Result<()> {
        let blobs = {
            let mut conn = self.writer();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            read_upload(&tx, upload_id, bucket, key)?;
            let blobs: Vec<String> = {
                let mut stmt = tx.prepare("DELETE FROM parts WHERE upload_id = ?1 RETURNING blob")?;
                let rows = stmt.query_map([upload_id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
            tx.commit()?;
            blobs
        };
        for b in blobs {
            self.remove_blob(&b);
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Store {
        Store::open(dir, Options { min_part_size: 4, ..Options::default() }).expect("open store")
    }

    fn stage(store: &Store, data: &[u8]) -> StagedBlob {
        let mut s = store.blob_sink(true).expect("sink");
        s.write(data).expect("write");
        s.commit().expect("commit")
    }

    fn put(store: &Store, bucket: &str, key: &str, data: &[u8]) -> ObjectRecord {
        let b = stage(store, data);
        let etag = hex::encode(b.md5.expect("md5"));
        store.put_object(bucket, key, Content::Blob(b), etag, Attrs::default(), &WriteConds::default()).expect("put")
    }

    fn put_inline(store: &Store, bucket: &str, key: &str, data: &[u8]) -> ObjectRecord {
        let c = Content::inline(data.to_vec());
        let etag = hex::encode(c.md5().expect("md5"));
        store.put_object(bucket, key, c, etag, Attrs::default(), &WriteConds::default()).expect("put")
    }

    fn read(store: &Store, bucket: &str, key: &str) -> Vec<u8> {
        match store.open_object(bucket, key).expect("open object").1 {
            Data::Inline(v) => v,
            Data::File(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v).expect("read");
                v
            }
        }
    }

    fn path_of(store: &Store, rec: &ObjectRecord) -> PathBuf {
        store.blob_path(rec.blob.as_deref().expect("a blob object"))
    }

    fn blob_files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in fs::read_dir(dir.join("blobs")).expect("blobs") {
            for f in fs::read_dir(d.expect("dir").path()).expect("fan") {
                out.push(f.expect("entry").path());
            }
        }
        out
    }

    #[test]
    fn crashed_write_leaves_the_old_object() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path());
            store.create_bucket("bkt", None).expect("bucket");
            put(&store, "bkt", "k", b"old contents");

            // Crash 1: mid-write of the temp file (the process dies: no Drop runs).
            let mut sink = store.blob_sink(true).expect("sink");
            sink.write(b"new contents, half").expect("write");
            std::mem::forget(sink);

            // Crash 2: the new blob is durable under its final name but the metadata commit
            // never happened.
            let staged = stage(&store, b"new contents, whole");
            std::mem::forget(staged);

            assert_eq!(read(&store, "bkt", "k"), b"old contents");
            assert_eq!(blob_files(dir.path()).len(), 3);
        }
        // Restart: the old object is intact and the orphans are gone.
        let store = open(dir.path());
        assert_eq!(read(&store, "bkt", "k"), b"old contents");
        let rec = store.get_object("bkt", "k").expect("rec");
        assert_eq!(rec.etag, hex::encode(Md5::digest(b"old contents")));
        assert_eq!(blob_files(dir.path()), vec![path_of(&store, &rec)]);
    }

    #[test]
    fn failed_commit_removes_the_new_blob_and_overwrite_removes_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("bkt", None).expect("bucket");
        let first = put(&store, "bkt", "k", b"one");
        // A conditional write that fails leaves nothing behind.
        let b = stage(&store, b"two");
        let conds = WriteConds { if_none_match: Some(Cond::Any), ..WriteConds::default() };
        let err =
            store.put_object("bkt", "k", Content::Blob(b), "x".into(), Attrs::default(), &conds).expect_err("412");
        assert!(matches!(err, S3StoreError::PreconditionFailed));
        assert_eq!(blob_files(dir.path()).len(), 1);
        // An overwrite unlinks the replaced blob.
        let second = put(&store, "bkt", "k", b"three");
        assert!(!path_of(&store, &first).exists());
        assert_eq!(blob_files(dir.path()), vec![path_of(&store, &second)]);
        assert_eq!(read(&store, "bkt", "k"), b"three");
        // Inline replacing a blob removes the blob, and the other way round.
        put_inline(&store, "bkt", "k", b"four");
        assert!(blob_files(dir.path()).is_empty());
        assert_eq!(read(&store, "bkt", "k"), b"four");
        let rec = store.get_object("bkt", "k").expect("rec");
        assert_eq!((rec.blob, rec.size, rec.etag), (None, 4, hex::encode(Md5::digest(b"four"))));
        let fifth = put(&store, "bkt", "k", b"five");
        assert_eq!(blob_files(dir.path()), vec![path_of(&store, &fifth)]);
        // Copies of inline objects stay inline; copies of blobs get their own blob.
        put_inline(&store, "bkt", "small", b"tiny");
        let copy = |src: &str, dst: &str| {
            store
                .copy_object("bkt", src, &ReadConds::default(), "bkt", dst, None, &WriteConds::default())
                .expect("copy")
        };
        assert_eq!(copy("small", "small2").blob, None);
        let c = copy("k", "k2");
        assert_ne!(c.blob, fifth.blob);
        assert_eq!(read(&store, "bkt", "k2"), b"five");
        assert_eq!(read(&store, "bkt", "small2"), b"tiny");
        store.delete_objects("bkt", &["k", "k2", "small", "small2"]).expect("delete");
        assert!(blob_files(dir.path()).is_empty());
    }

    #[test]
    fn open_file_survives_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("bkt", None).expect("bucket");
        put(&store, "bkt", "k", b"first");
        let Data::File(mut f) = store.open_object("bkt", "k").expect("open").1 else { panic!("a blob object") };
        put(&store, "bkt", "k", b"second");
        let mut v = Vec::new();
        f.read_to_end(&mut v).expect("read");
        assert_eq!(v, b"first");
    }

    #[test]
    fn untrusted_keys_never_reach_the_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("bkt", None).expect("bucket");
        let long = "k".repeat(1024);
        let keys = [
            "../../../../etc/passwd",
            "/absolute",
            "a/../b",
            "..",
            ".",
            "\u{1F600} ünïcødé/日本語",
            "nul\0byte",
            "back\\slash",
            long.as_str(),
        ];
        for (i, k) in keys.iter().enumerate() {
            if i % 2 == 0 {
                put(&store, "bkt", k, format!("v{i}").as_bytes());
            } else {
                put_inline(&store, "bkt", k, format!("v{i}").as_bytes());
            }
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(read(&store, "bkt", k), format!("v{i}").as_bytes(), "{k:?}");
        }
        // Nothing escaped the store, and every blob name is our own 32-hex id.
        assert!(!dir.path().parent().expect("parent").join("etc").exists());
        for f in blob_files(dir.path()) {
            let name = f.file_name().and_then(|n| n.to_str()).expect("name").to_owned();
            assert!(name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
        }
        let page = store
            .list_objects("bkt", &ListQuery { prefix: "", delimiter: None, from: Vec::new(), max_keys: 1000 })
            .expect("list");
        let mut want: Vec<&str> = keys.to_vec();
        want.sort_unstable();
        let got: Vec<&str> = page.entries.iter().map(ListEntry::name).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn multipart_etag_is_md5_of_md5s() {
        let a = hex::encode(Md5::digest(b"hello "));
        let b = hex::encode(Md5::digest(b"world"));
        let mut cat = Md5::digest(b"hello ").to_vec();
        cat.extend_from_slice(&Md5::digest(b"world"));
        let want = format!("{}-2", hex::encode(Md5::digest(&cat)));
        assert_eq!(multipart_etag([a.as_str(), b.as_str()]).expect("etag"), want);
        // Known S3 value: one part of "" has ETag md5(md5("")) + "-1".
        assert_eq!(
            multipart_etag(["d41d8cd98f00b204e9800998ecf8427e"]).expect("etag"),
            "59adb24ef3cdbe0297f05b395827453f-1"
        );
    }

    #[test]
    fn multipart_upload_roundtrip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("bkt", None).expect("bucket");
        let id = store.create_upload("bkt", "big", &Attrs::default()).expect("upload");
        let e1 = store.put_part(&id, "bkt", "big", 1, stage(&store, b"hello ")).expect("p1");
        let e2 = store.put_part(&id, "bkt", "big", 2, stage(&store, b"world")).expect("p2");
        // Re-uploading a part replaces it (and its blob).
        let e2b = store.put_part(&id, "bkt", "big", 2, stage(&store, b"world!")).expect("p2b");
        assert_ne!(e2, e2b);
        assert!(matches!(
            store.complete_upload(&id, "bkt", "big", &[(1, e1.clone()), (2, e2.clone())], &WriteConds::default()),
            Err(S3StoreError::InvalidPart(_))
        ));
        assert!(matches!(
            store.complete_upload(&id, "bkt", "big", &[(2, e2b.clone()), (1, e1.clone())], &WriteConds::default()),
            Err(S3StoreError::InvalidPartOrder)
        ));
        let rec = store
            .complete_upload(&id, "bkt", "big", &[(1, e1.clone()), (2, e2b.clone())], &WriteConds::default())
            .expect("complete");
        assert_eq!(rec.etag, multipart_etag([e1.as_str(), e2b.as_str()]).expect("etag"));
        assert_eq!(rec.attrs.parts, vec![6, 6]);
        assert_eq!(read(&store, "bkt", "big"), b"hello world!");
        assert!(matches!(store.list_parts(&id, "bkt", "big", 0, 10), Err(S3StoreError::NoSuchUpload)));
        // Only the object's blob is left.
        assert_eq!(blob_files(dir.path()), vec![path_of(&store, &rec)]);
    }

    #[test]
    fn small_parts_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("bkt", None).expect("bucket");
        let id = store.create_upload("bkt", "k", &Attrs::default()).expect("upload");
        let e1 = store.put_part(&id, "bkt", "k", 1, stage(&store, b"abc")).expect("p1");
        let e2 = store.put_part(&id, "bkt", "k", 2, stage(&store, b"d")).expect("p2");
        assert!(matches!(
            store.complete_upload(&id, "bkt", "k", &[(1, e1), (2, e2)], &WriteConds::default()),
            Err(S3StoreError::EntityTooSmall)
        ));
        store.abort_upload(&id, "bkt", "k").expect("abort");
        assert!(blob_files(dir.path()).is_empty());
        assert!(matches!(store.abort_upload(&id, "bkt", "k"), Err(S3StoreError::NoSuchUpload)));
    }

    #[test]
    fn listing_with_delimiter_and_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("bkt", None).expect("bucket");
        for k in ["a/1", "a/2", "b", "c/x/1", "c/y", "d", "e/"] {
            put(&store, "bkt", k, b"x");
        }
        let list = |prefix: &str, delimiter: Option<&str>, from: Vec<u8>, max_keys: usize| {
            store.list_objects("bkt", &ListQuery { prefix, delimiter, from, max_keys }).expect("list")
        };
        let names = |p: &ListPage| p.entries.iter().map(|e| e.name().to_owned()).collect::<Vec<_>>();
        let all = list("", Some("/"), Vec::new(), 1000);
        assert_eq!(names(&all), ["a/", "b", "c/", "d", "e/"]);
        assert!(all.next.is_none());
        assert!(matches!(all.entries[0], ListEntry::Prefix(_)));
        let c = list("c/", Some("/"), Vec::new(), 1000);
        assert_eq!(names(&c), ["c/x/", "c/y"]);
        // Paging by 2 visits every entry once.
        let mut from = Vec::new();
        let mut seen = Vec::new();
        loop {
            let p = list("", Some("/"), from, 2);
            seen.extend(names(&p));
            match p.next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(seen, ["a/", "b", "c/", "d", "e/"]);
        // Exactly max_keys entries: not truncated.
        assert!(list("a/", None, Vec::new(), 2).next.is_none());
        assert_eq!(names(&list("", None, key_successor(b"b"), 2)), ["c/x/1", "c/y"]);
        assert!(list("", None, Vec::new(), 0).next.is_some());
        assert!(matches!(
            store.list_objects("nope", &ListQuery { prefix: "", delimiter: None, from: Vec::new(), max_keys: 1 }),
            Err(S3StoreError::NoSuchBucket)
        ));
    }

    #[test]
    fn buckets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.create_bucket("one", Some("alice")).expect("one");
        assert!(matches!(store.create_bucket("one", Some("alice")), Err(S3StoreError::BucketAlreadyOwnedByYou)));
        assert!(matches!(store.create_bucket("one", Some("bob")), Err(S3StoreError::BucketAlreadyExists)));
        assert!(matches!(store.create_bucket("Bad", None), Err(S3StoreError::InvalidBucketName)));
        store.create_bucket("two", Some("bob")).expect("two");
        assert_eq!(store.list_buckets(Some("alice")).expect("list").len(), 1);
        put(&store, "one", "k", b"v");
        let id = store.create_upload("one", "u", &Attrs::default()).expect("upload");
        store.put_part(&id, "one", "u", 1, stage(&store, b"p")).expect("part");
        assert!(matches!(store.delete_bucket("one"), Err(S3StoreError::BucketNotEmpty)));
        store.delete_object("one", "k").expect("delete");
        store.delete_bucket("one").expect("delete bucket");
        assert!(blob_files(dir.path()).is_empty());
        assert!(matches!(store.head_bucket("one"), Err(S3StoreError::NoSuchBucket)));
        assert!(matches!(store.delete_bucket("one"), Err(S3StoreError::NoSuchBucket)));
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _store = open(dir.path());
        assert!(matches!(Store::open(dir.path(), Options::default()), Err(S3StoreError::Locked(_))));
    }

    #[test]
    fn read_conditions() {
        let rec = ObjectRecord {
            key: "k".into(),
            blob: Some("b".into()),
            size: 1,
            etag: "abc".into(),
            last_modified_ms: 10_500,
            attrs: Attrs::default(),
        };
        let c = |f: fn(&mut ReadConds)| {
            let mut rc = ReadConds::default();
            f(&mut rc);
            rc.check(&rec)
        };
        assert!(c(|_| {}).is_ok());
        assert!(c(|r| r.if_match = Some(Cond::ETag("abc".into()))).is_ok());
        assert!(matches!(c(|r| r.if_match = Some(Cond::ETag("x".into()))), Err(S3StoreError::PreconditionFailed)));
        assert!(matches!(c(|r| r.if_none_match = Some(Cond::ETag("abc".into()))), Err(S3StoreError::NotModified)));
        assert!(matches!(c(|r| r.if_none_match = Some(Cond::Any)), Err(S3StoreError::NotModified)));
        assert!(matches!(c(|r| r.if_modified_since = Some(10)), Err(S3StoreError::NotModified)));
        assert!(c(|r| r.if_modified_since = Some(9)).is_ok());
        assert!(matches!(c(|r| r.if_unmodified_since = Some(9)), Err(S3StoreError::PreconditionFailed)));
        // If-Match wins over If-Unmodified-Since.
        assert!(
            c(|r| {
                r.if_match = Some(Cond::Any);
                r.if_unmodified_since = Some(0);
            })
            .is_ok()
        );
    }
}

//! Telemetry: the log store of function and platform log records, and the platform's own
//! `tracing` set-up.
//!
//! Writing a log record never blocks an invocation: records go into a bounded queue drained by
//! one writer thread in batches; when the queue is full the record is dropped and counted.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quarters_types::TenantId;
use rusqlite::{Connection, params};
use tokio::sync::mpsc;

/// One log line, with everything needed to find it again by tenant.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub ts_ms: u64,
    pub log_group: Arc<str>,
    pub log_stream: Arc<str>,
    pub function: Arc<str>,
    pub version: Arc<str>,
    pub tenant: Option<TenantId>,
    pub request_id: Option<Arc<str>>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("log store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("log store: {0}")]
    Io(#[from] std::io::Error),
}

const QUEUE: usize = 65_536;
const BATCH: usize = 4_096;
/// How long the writer gathers records before writing them in one transaction.
const FLUSH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The log store: SQLite in its own file, apart from the control plane's state.
pub struct LogStore {
    tx: mpsc::Sender<LogRecord>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
    path: std::path::PathBuf,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<Self, TelemetryError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS logs (
               id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, log_group TEXT NOT NULL,
               log_stream TEXT NOT NULL, function TEXT NOT NULL, version TEXT NOT NULL,
               tenant TEXT, request_id TEXT, message TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS logs_stream ON logs (log_group, log_stream, ts);
             CREATE INDEX IF NOT EXISTS logs_tenant ON logs (log_group, tenant, ts);",
        )?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        std::thread::Builder::new().name("log-writer".into()).spawn(move || writer(conn, rx, &w))?;
        Ok(Self { tx, dropped: AtomicU64::new(0), written, path: path.to_owned() })
    }

    /// Queue a record; never blocks. Returns false (and counts it) if the queue was full.
    pub fn append(&self, record: LogRecord) -> bool {
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Records of one log group, optionally of one tenant, oldest first. Blocking.
    pub fn read(
        &self,
        log_group: &str,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, TelemetryError> {
        let conn = Connection::open(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT ts, log_stream, tenant, request_id, message FROM logs
             WHERE log_group = ?1 AND (?2 IS NULL OR tenant = ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![log_group, tenant, limit as i64], |r| {
            Ok(StoredRecord {
                ts_ms: r.get::<_, i64>(0)? as u64,
                log_stream: r.get(1)?,
                tenant: r.get(2)?,
                request_id: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        let mut out: Vec<StoredRecord> = rows.collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }
}

/// A record as read back from the store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredRecord {
    pub ts_ms: u64,
    pub log_stream: String,
    pub tenant: Option<String>,
    pub request_id: Option<String>,
    pub message: String,
}

fn writer(mut conn: Connection, mut rx: mpsc::Receiver<LogRecord>, written: &AtomicU64) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        // Gather what arrives over a short window: one transaction (and one wake-up) per
        // window instead of per record keeps the writer's cost low under load.
        let window = std::time::Instant::now() + FLUSH_WINDOW;
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(mpsc::error::TryRecvError::Empty) => {
                    let now = std::time::Instant::now();
                    if now >= window {
                        break;
                    }
                    std::thread::sleep((window - now).min(std::time::Duration::from_millis(2)));
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        }
        if let Err(e) = insert(&mut conn, &batch) {
            tracing::error!(error = %e, lost = batch.len(), "log store write failed");
        } else {
            written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        batch.clear();
    }
}

fn insert(conn: &mut Connection, batch: &[LogRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO logs (ts, log_group, log_stream, function, version, tenant, request_id, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?;
        for r in batch {
            stmt.execute(params![
                r.ts_ms as i64,
                &*r.log_group,
                &*r.log_stream,
                &*r.function,
                &*r.version,
                r.tenant.as_ref().map(|t| t.as_str()),
                r.request_id.as_deref(),
                r.message,
            ])?;
        }
    }
    tx.commit()
}

/// Set up the platform's own logs (`QUARTERS_LOG` or `RUST_LOG` filter, else `default`).
pub fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("QUARTERS_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_stored_and_read_back_by_tenant() {
        let dir = std::env::temp_dir().join(format!("qlogs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("logs.db");
        let _ = std::fs::remove_file(&path);
        let store = LogStore::open(&path).expect("open");
        for (i, tenant) in ["blue", "green", "blue"].iter().enumerate() {
            let ok = store.append(LogRecord {
                ts_ms: i as u64,
                log_group: "/aws/lambda/f".into(),
                log_stream: "s".into(),
                function: "f".into(),
                version: "$LATEST".into(),
                tenant: Some(TenantId::parse(tenant).expect("tenant")),
                request_id: None,
                message: format!("line {i}"),
            });
            assert!(ok);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while store.written() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let blue = store.read("/aws/lambda/f", Some("blue"), 10).expect("read");
        assert_eq!(blue.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["line 0", "line 2"]);
        assert_eq!(store.read("/aws/lambda/f", None, 10).expect("read").len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

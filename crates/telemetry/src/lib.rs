//! Telemetry: the log store of function and platform log records, and the platform's own
//! `tracing` set-up.
//!
//! Writing a log record never blocks an invocation: records go into a bounded queue drained by
//! one writer thread in batches; when the queue is full the record is dropped and counted.

mod cursor;
pub mod emf;
pub mod filter;
pub mod insights;
pub mod metrics;
pub mod usage;

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
/// Records a live tail may fall behind by before it loses some.
const LIVE_BUFFER: usize = 8_192;
const BATCH: usize = 4_096;
/// How long the writer gathers records before writing them in one transaction.
const FLUSH_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The log store: SQLite in its own file, apart from the control plane's state.
pub struct LogStore {
    tx: mpsc::Sender<LogRecord>,
    /// Live tail: every record, to whoever listens (a slow listener loses records, not speed).
    live: tokio::sync::broadcast::Sender<Arc<LogRecord>>,
    /// Metrics that functions log in Embedded Metric Format.
    emf: emf::EmfMetrics,
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
             CREATE INDEX IF NOT EXISTS logs_tenant ON logs (log_group, tenant, ts);
             CREATE INDEX IF NOT EXISTS logs_group_id ON logs (log_group, id);
             CREATE TABLE IF NOT EXISTS usage (
               hour INTEGER NOT NULL, function TEXT NOT NULL, tenant TEXT NOT NULL,
               invocations INTEGER NOT NULL, errors INTEGER NOT NULL, gb_seconds REAL NOT NULL,
               bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, PRIMARY KEY (hour, function, tenant));
             CREATE INDEX IF NOT EXISTS usage_tenant ON usage (tenant, hour);
             CREATE TABLE IF NOT EXISTS log_groups (
               name TEXT PRIMARY KEY, created INTEGER NOT NULL, retention_days INTEGER);",
        )?;
        // Added after the first release of logs.db: the record's level, and a group's size limit.
        add_column(&conn, "logs", "level", "TEXT")?;
        add_column(&conn, "log_groups", "max_bytes", "INTEGER")?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        std::thread::Builder::new().name("log-writer".into()).spawn(move || writer(conn, rx, &w))?;
        let (live, _) = tokio::sync::broadcast::channel(LIVE_BUFFER);
        Ok(Self { tx, live, emf: Default::default(), dropped: AtomicU64::new(0), written, path: path.to_owned() })
    }

    /// Queue a record; never blocks. Returns false (and counts it) if the queue was full.
    pub fn append(&self, record: LogRecord) -> bool {
        self.emf.observe(&record.message, &record.function, record.tenant.as_ref().map(|t| t.as_str()));
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(Arc::new(record.clone()));
        }
        match self.tx.try_send(record) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The metrics functions logged in Embedded Metric Format.
    pub fn emf(&self) -> &emf::EmfMetrics {
        &self.emf
    }

    /// Every record appended from now on (for live tails).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<LogRecord>> {
        self.live.subscribe()
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The newest `limit` records of one log group, optionally of one tenant and one level
    /// (`ERROR`, `PLATFORM`, ...), oldest first. Blocking.
    pub fn read(
        &self,
        log_group: &str,
        tenant: Option<&str>,
        level: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, TelemetryError> {
        let conn = Connection::open(&self.path)?;
        let mut stmt = conn.prepare(
            "SELECT ts, log_stream, tenant, request_id, message, level FROM logs
             WHERE log_group = ?1 AND (?2 IS NULL OR tenant = ?2) AND (?4 IS NULL OR level = ?4)
             ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![log_group, tenant, limit as i64, level], |r| {
            Ok(StoredRecord {
                ts_ms: r.get::<_, i64>(0)? as u64,
                log_stream: r.get(1)?,
                tenant: r.get(2)?,
                request_id: r.get(3)?,
                message: r.get(4)?,
                level: r.get(5)?,
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
    pub level: Option<String>,
    pub message: String,
}

/// A log group as DescribeLogGroups shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub name: String,
    pub created_ms: u64,
    pub stored_bytes: u64,
    pub retention_days: Option<u32>,
    pub max_bytes: Option<u64>,
}

/// A log stream as DescribeLogStreams shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub name: String,
    pub first_ms: u64,
    pub last_ms: u64,
    pub stored_bytes: u64,
}

/// One stored event, with the row id that paging tokens are made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub ts_ms: u64,
    pub log_stream: String,
    pub message: String,
}

/// Which events of a group a query wants.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub streams: Vec<String>,
    pub stream_prefix: Option<String>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
}

/// A page of one stream's events: after or before a row id, oldest or newest first.
#[derive(Debug, Clone, Copy)]
pub struct StreamPage {
    pub after: Option<i64>,
    pub before: Option<i64>,
    /// From the oldest (else the newest, still returned oldest first).
    pub forward: bool,
    pub limit: usize,
}

/// Rows a FilterLogEvents call scans at most before it hands back a token.
const FILTER_SCAN: usize = 200_000;

fn like_prefix(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 1);
    for c in p.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl LogStore {
    pub(crate) fn reader(&self) -> Result<Connection, TelemetryError> {
        let conn = Connection::open_with_flags(&self.path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Make a log group known (a function's, at creation), so it is listed before it has logs.
    pub fn ensure_group(&self, name: &str, created_ms: u64) -> Result<(), TelemetryError> {
        self.reader()?.execute(
            "INSERT OR IGNORE INTO log_groups (name, created) VALUES (?1, ?2)",
            params![name, created_ms as i64],
        )?;
        Ok(())
    }

    /// Log groups, by name, optionally by name prefix.
    pub fn groups(&self, prefix: Option<&str>) -> Result<Vec<GroupInfo>, TelemetryError> {
        let conn = self.reader()?;
        let pattern = like_prefix(prefix.unwrap_or(""));
        let mut stmt = conn.prepare(
            "SELECT g.name, g.created, g.retention_days,
                    (SELECT COALESCE(SUM(length(message)), 0) FROM logs WHERE log_group = g.name), g.max_bytes
             FROM (SELECT name, created, retention_days, max_bytes FROM log_groups
                   UNION SELECT DISTINCT log_group, 0, NULL, NULL FROM logs WHERE log_group NOT IN (SELECT name FROM log_groups)) g
             WHERE g.name LIKE ?1 ESCAPE '\\' ORDER BY g.name",
        )?;
        let rows = stmt.query_map(params![pattern], |r| {
            Ok(GroupInfo {
                name: r.get(0)?,
                created_ms: r.get::<_, i64>(1)? as u64,
                retention_days: r.get::<_, Option<i64>>(2)?.map(|d| d as u32),
                stored_bytes: r.get::<_, i64>(3)? as u64,
                max_bytes: r.get::<_, Option<i64>>(4)?.map(|b| b as u64),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keep a group's events for `days` only (`None`: forever).
    pub fn set_retention(&self, group: &str, days: Option<u32>) -> Result<(), TelemetryError> {
        self.reader()?.execute(
            "INSERT INTO log_groups (name, created, retention_days) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET retention_days = excluded.retention_days",
            params![group, quarters_types::time::now_ms() as i64, days.map(i64::from)],
        )?;
        Ok(())
    }

    /// Delete events older than their group's retention. Returns how many went.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<usize, TelemetryError> {
        let conn = self.reader()?;
        let mut n = conn.execute(
            "DELETE FROM logs WHERE id IN (
               SELECT l.id FROM logs l JOIN log_groups g ON g.name = l.log_group
               WHERE g.retention_days IS NOT NULL AND l.ts < ?1 - g.retention_days * 86400000)",
            params![now_ms as i64],
        )?;
        // By size: the oldest events go until the group fits.
        let limited: Vec<(String, i64)> = {
            let mut stmt = conn.prepare("SELECT name, max_bytes FROM log_groups WHERE max_bytes IS NOT NULL")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
        };
        for (group, max) in limited {
            loop {
                let size: i64 = conn.query_row(
                    "SELECT COALESCE(SUM(length(message)), 0) FROM logs WHERE log_group = ?1",
                    params![group],
                    |r| r.get(0),
                )?;
                if size <= max {
                    break;
                }
                // Delete about the excess, by average record size, at least one record.
                let count: i64 =
                    conn.query_row("SELECT COUNT(*) FROM logs WHERE log_group = ?1", params![group], |r| r.get(0))?;
                let avg = (size / count.max(1)).max(1);
                let k = ((size - max) / avg).max(1);
                n += conn.execute(
                    "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE log_group = ?1 ORDER BY id LIMIT ?2)",
                    params![group, k],
                )?;
            }
        }
        Ok(n)
    }

    /// Keep a group to about `max_bytes` of messages (`None`: no limit); the oldest go first.
    pub fn set_size_limit(&self, group: &str, max_bytes: Option<u64>) -> Result<(), TelemetryError> {
        self.reader()?.execute(
            "INSERT INTO log_groups (name, created, max_bytes) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET max_bytes = excluded.max_bytes",
            params![group, quarters_types::time::now_ms() as i64, max_bytes.map(|b| b as i64)],
        )?;
        Ok(())
    }

    /// The streams of a group (with at least one stored event).
    pub fn streams(&self, group: &str, prefix: Option<&str>) -> Result<Vec<StreamInfo>, TelemetryError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT log_stream, MIN(ts), MAX(ts), SUM(length(message)) FROM logs
             WHERE log_group = ?1 AND log_stream LIKE ?2 ESCAPE '\\' GROUP BY log_stream ORDER BY log_stream",
        )?;
        let rows = stmt.query_map(params![group, like_prefix(prefix.unwrap_or(""))], |r| {
            Ok(StreamInfo {
                name: r.get(0)?,
                first_ms: r.get::<_, i64>(1)? as u64,
                last_ms: r.get::<_, i64>(2)? as u64,
                stored_bytes: r.get::<_, i64>(3)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events of one stream in order, after or before a row id; `forward` from the oldest.
    pub fn stream_events(
        &self,
        group: &str,
        stream: &str,
        q: &EventQuery,
        page: StreamPage,
    ) -> Result<Vec<Event>, TelemetryError> {
        let StreamPage { after, before, forward, limit } = page;
        let conn = self.reader()?;
        let order = if forward { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT id, ts, log_stream, message FROM logs
             WHERE log_group = ?1 AND log_stream = ?2 AND ts >= ?3 AND ts <= ?4 AND id > ?5 AND id < ?6
             ORDER BY id {order} LIMIT ?7"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![
                group,
                stream,
                q.start_ms.unwrap_or(0) as i64,
                q.end_ms.map(|e| e as i64).unwrap_or(i64::MAX),
                after.unwrap_or(0),
                before.unwrap_or(i64::MAX),
                limit as i64
            ],
            event_of,
        )?;
        let mut out: Vec<Event> = rows.collect::<Result<_, _>>()?;
        if !forward {
            out.reverse();
        }
        Ok(out)
    }

    /// Events of a group that match `pattern`, oldest first, after row id `after`. Returns the
    /// events and, when there may be more, the id to go on after.
    pub fn filter(
        &self,
        group: &str,
        q: &EventQuery,
        pattern: &filter::FilterPattern,
        after: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<i64>), TelemetryError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT id, ts, log_stream, message FROM logs
             WHERE log_group = ?1 AND ts >= ?2 AND ts <= ?3 AND id > ?4 AND log_stream LIKE ?5 ESCAPE '\\'
             ORDER BY id ASC LIMIT ?6",
        )?;
        let rows = stmt.query_map(
            params![
                group,
                q.start_ms.unwrap_or(0) as i64,
                q.end_ms.map(|e| e as i64).unwrap_or(i64::MAX),
                after.unwrap_or(0),
                like_prefix(q.stream_prefix.as_deref().unwrap_or("")),
                FILTER_SCAN as i64
            ],
            event_of,
        )?;
        let mut out = Vec::new();
        let mut last = None;
        let mut scanned = 0;
        for row in rows {
            let e = row?;
            scanned += 1;
            last = Some(e.id);
            if !q.streams.is_empty() && !q.streams.contains(&e.log_stream) {
                continue;
            }
            if pattern.matches(&e.message) {
                out.push(e);
                if out.len() >= limit {
                    return Ok((out, last));
                }
            }
        }
        Ok((out, if scanned >= FILTER_SCAN { last } else { None }))
    }
}

/// `@timestamp` as Logs Insights shows it: `2024-01-01 12:00:00.000`.
pub(crate) fn fmt_insights_time(ms: u64) -> String {
    quarters_types::time::rfc3339_ms(ms).replacen('T', " ", 1).trim_end_matches('Z').to_string()
}

/// The `p`th percentile (nearest rank) of an ascending slice.
pub(crate) fn percentile_of(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

impl LogStore {
    /// Events of some groups in a time range, oldest first, at most `max`; only those of
    /// `tenants` (by the tenant index) when given. For Logs Insights queries.
    pub fn query_events(
        &self,
        groups: &[String],
        start_ms: u64,
        end_ms: u64,
        tenants: Option<&[String]>,
        max: usize,
    ) -> Result<Vec<(String, Event)>, TelemetryError> {
        let conn = self.reader()?;
        let mut out = Vec::new();
        for g in groups {
            let mut push = |rows: &mut dyn Iterator<Item = rusqlite::Result<Event>>| -> Result<(), TelemetryError> {
                for e in rows {
                    out.push((g.clone(), e?));
                }
                Ok(())
            };
            match tenants {
                Some(ts) => {
                    let mut stmt = conn.prepare(
                        "SELECT id, ts, log_stream, message FROM logs
                         WHERE log_group = ?1 AND tenant = ?2 AND ts >= ?3 AND ts <= ?4 ORDER BY ts, id LIMIT ?5",
                    )?;
                    let mut seen = std::collections::HashSet::new();
                    for t in ts.iter().filter(|t| seen.insert(t.as_str())) {
                        let mut rows =
                            stmt.query_map(params![g, t, start_ms as i64, end_ms as i64, max as i64], event_of)?;
                        push(&mut rows)?;
                    }
                }
                None => {
                    let mut stmt = conn.prepare(
                        "SELECT id, ts, log_stream, message FROM logs
                         WHERE log_group = ?1 AND ts >= ?2 AND ts <= ?3 ORDER BY id LIMIT ?4",
                    )?;
                    let mut rows = stmt.query_map(params![g, start_ms as i64, end_ms as i64, max as i64], event_of)?;
                    push(&mut rows)?;
                }
            }
        }
        out.sort_by_key(|(_, e)| (e.ts_ms, e.id));
        out.truncate(max);
        Ok(out)
    }
}

fn event_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event { id: r.get(0)?, ts_ms: r.get::<_, i64>(1)? as u64, log_stream: r.get(2)?, message: r.get(3)? })
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

fn add_column(conn: &Connection, table: &str, column: &str, kind: &str) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let has = stmt.query_map([], |r| r.get::<_, String>(1))?.filter_map(Result::ok).any(|c| c == column);
    if !has {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))?;
    }
    Ok(())
}

/// A record's level: a JSON record's `level`, a Python (`[INFO]\t...`) or Node
/// (`<time>\t<id>\tINFO\t...`) text line's, `PLATFORM` for the platform's own lines.
pub fn level_of(message: &str) -> Option<&'static str> {
    const LEVELS: [&str; 8] = ["TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"];
    let known = |l: &str| LEVELS.iter().find(|x| x.eq_ignore_ascii_case(l)).copied();
    let m = message.trim_start();
    if m.starts_with('{') {
        if m.contains("\"type\":\"platform.") {
            return Some("PLATFORM");
        }
        if let Some(at) = m.find("\"level\":\"") {
            let rest = &m[at + 9..];
            return rest.split('"').next().and_then(known);
        }
        return None;
    }
    for p in ["START RequestId:", "END RequestId:", "REPORT RequestId:", "INIT_START ", "INIT_REPORT "] {
        if m.starts_with(p) {
            return Some("PLATFORM");
        }
    }
    if let Some(rest) = m.strip_prefix('[') {
        return rest.split(']').next().and_then(known);
    }
    m.split('\t').nth(2).and_then(known)
}

fn insert(conn: &mut Connection, batch: &[LogRecord]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO logs (ts, log_group, log_stream, function, version, tenant, request_id, message, level)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
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
                level_of(&r.message),
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
        let blue = store.read("/aws/lambda/f", Some("blue"), None, 10).expect("read");
        assert_eq!(blue.iter().map(|r| r.message.as_str()).collect::<Vec<_>>(), ["line 0", "line 2"]);
        assert_eq!(store.read("/aws/lambda/f", None, None, 10).expect("read").len(), 3);
        // Queries: groups, streams, filter by a term, retention by age.
        assert_eq!(store.groups(Some("/aws/lambda/")).expect("groups")[0].name, "/aws/lambda/f");
        assert_eq!(store.streams("/aws/lambda/f", None).expect("streams")[0].last_ms, 2);
        let p = filter::FilterPattern::parse("\"line 1\"").expect("pattern");
        let (hits, next) = store.filter("/aws/lambda/f", &EventQuery::default(), &p, None, 10).expect("filter");
        assert_eq!((hits.len(), next), (1, None));
        assert_eq!(level_of("[INFO]\t2024-01-01T00:00:00.000Z\tid\thello"), Some("INFO"));
        assert_eq!(level_of("2024-01-01T00:00:00.000Z\tid\tERROR\tboom"), Some("ERROR"));
        assert_eq!(level_of(r#"{"level":"WARN","message":"x"}"#), Some("WARN"));
        assert_eq!(level_of("REPORT RequestId: x"), Some("PLATFORM"));
        assert_eq!(level_of("print output"), None);
        // By size: keep about 12 bytes (two of the three 6-byte lines).
        store.set_size_limit("/aws/lambda/f", Some(12)).expect("size");
        assert_eq!(store.enforce_retention(0).expect("enforce by size"), 1);
        assert_eq!(store.read("/aws/lambda/f", None, None, 10).expect("read").len(), 2);
        store.set_retention("/aws/lambda/f", Some(1)).expect("retention");
        // Timestamps 0..2 ms after the epoch are far older than a day.
        assert_eq!(store.enforce_retention(quarters_types::time::now_ms()).expect("enforce"), 2);
        assert!(store.read("/aws/lambda/f", None, None, 10).expect("read").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

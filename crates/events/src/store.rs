//! The SQLite store (`events.db`), owned by one thread that commits waiting writes together.
//!
//! The thread also owns the leases: which stored events are running now. Leases live in memory
//! only, so after a restart every stored event is free to run again.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::{EventsError, FunctionQueueStats, QueueStats, QueuedEvent, Result};

const SCHEMA_VERSION: i64 = 1;
/// Writes committed in one transaction, at most.
const MAX_BATCH: usize = 512;

/// A stored event and the queue's bookkeeping about it.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub id: i64,
    pub event: QueuedEvent,
    /// Function errors so far (each uses up one of `MaximumRetryAttempts` once retried).
    pub function_errors: u32,
    /// Throttles and platform errors in a row, for the backoff.
    pub system_failures: u32,
    /// 0 for an event from the API; one more than its source for a destination record.
    pub depth: u32,
    /// The function's last answer to an attempt that failed: (executed version, body).
    pub last_response: Option<(String, Bytes)>,
}

/// How the dispatcher closes an attempt.
#[derive(Debug)]
pub(crate) enum Finish {
    /// Keep the event and try again at `next_attempt_ms`.
    Retry {
        attempts: u32,
        function_errors: u32,
        system_failures: u32,
        next_attempt_ms: u64,
        last_response: Option<(String, Bytes)>,
    },
    /// Delete the event, storing `destination` (a destination record) in the same transaction.
    Complete { destination: Option<(QueuedEvent, u32)>, tally: Tally },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tally {
    Succeeded,
    DeadLettered,
    Dropped,
}

pub(crate) struct Claimed {
    pub events: Vec<Stored>,
    /// When the next stored event that is neither running nor due now becomes due.
    pub next_due_ms: Option<u64>,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Op {
    Insert { events: Vec<(QueuedEvent, u32)>, reply: Reply<()> },
    Finish { id: i64, finish: Finish, reply: Reply<()> },
    Release { id: i64 },
    Claim { now: u64, max: usize, reply: Reply<Claimed> },
    Stats { now: u64, reply: Reply<QueueStats> },
    FunctionStats { now: u64, reply: Reply<Vec<FunctionQueueStats>> },
}

/// The handle to the store's thread.
pub(crate) struct Db {
    tx: mpsc::Sender<Op>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 0 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE events (
                     id INTEGER PRIMARY KEY AUTOINCREMENT,
                     request_id TEXT NOT NULL,
                     function TEXT NOT NULL,
                     qualifier TEXT,
                     tenant TEXT,
                     payload BLOB NOT NULL,
                     client_context TEXT,
                     enqueued_ms INTEGER NOT NULL,
                     attempts INTEGER NOT NULL DEFAULT 0,
                     function_errors INTEGER NOT NULL DEFAULT 0,
                     system_failures INTEGER NOT NULL DEFAULT 0,
                     depth INTEGER NOT NULL DEFAULT 0,
                     next_attempt_ms INTEGER NOT NULL,
                     last_version TEXT,
                     last_response BLOB
                 );
                 CREATE INDEX events_due ON events (next_attempt_ms, id);
                 CREATE INDEX events_age ON events (enqueued_ms);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        } else if version > SCHEMA_VERSION {
            return Err(EventsError::Schema { found: version, supported: SCHEMA_VERSION });
        }
        let count: i64 = conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
        let (tx, rx) = mpsc::channel();
        let mut actor = Actor { conn, count: count.max(0) as u64, leased: HashMap::new(), tallies: BTreeMap::new() };
        std::thread::Builder::new().name("quarters-events-db".into()).spawn(move || actor.run(rx))?;
        Ok(Db { tx })
    }

    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(op(reply)).map_err(|_| EventsError::Closed)?;
        rx.await.map_err(|_| EventsError::Closed)?
    }

    /// Stores events with their destination depth; returns once they are committed.
    pub async fn insert(&self, events: Vec<(QueuedEvent, u32)>) -> Result<()> {
        self.call(|reply| Op::Insert { events, reply }).await
    }

    /// Up to `max` due events that are not running, now leased to the caller.
    pub async fn claim(&self, now: u64, max: usize) -> Result<Claimed> {
        self.call(|reply| Op::Claim { now, max, reply }).await
    }

    /// Records the end of an attempt and releases the lease. The request is handed to the
    /// store's thread before this returns (the lease is released even if the reply is never
    /// awaited); the receiver reports the commit.
    pub fn finish(&self, id: i64, finish: Finish) -> oneshot::Receiver<Result<()>> {
        let (reply, rx) = oneshot::channel();
        // A closed store drops `reply`: the receiver then reports an error.
        let _ = self.tx.send(Op::Finish { id, finish, reply });
        rx
    }

    /// Releases a lease without recording anything: the event runs again as it was.
    pub fn release(&self, id: i64) {
        let _ = self.tx.send(Op::Release { id });
    }

    pub async fn stats(&self, now: u64) -> Result<QueueStats> {
        self.call(|reply| Op::Stats { now, reply }).await
    }

    pub async fn function_stats(&self, now: u64) -> Result<Vec<FunctionQueueStats>> {
        self.call(|reply| Op::FunctionStats { now, reply }).await
    }
}

#[derive(Default, Clone, Copy)]
struct Tallies {
    succeeded: u64,
    retried: u64,
    dropped: u64,
    dead_lettered: u64,
}

impl Tallies {
    fn fill(&self, s: &mut QueueStats) {
        s.succeeded = self.succeeded;
        s.retried = self.retried;
        s.dropped = self.dropped;
        s.dead_lettered = self.dead_lettered;
    }
}

struct Actor {
    conn: Connection,
    /// Stored events.
    count: u64,
    /// Running events: id → function.
    leased: HashMap<i64, String>,
    /// Outcomes since open, per function.
    tallies: BTreeMap<String, Tallies>,
}

/// What a committed write changes in memory.
enum Effect {
    Inserted(u64),
    Retried,
    Completed { tally: Tally, inserted: bool },
}

impl Actor {
    fn run(&mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(first) = rx.recv() {
            let mut writes = Vec::new();
            let mut reads = Vec::new();
            let mut next = Some(first);
            while let Some(op) = next {
                match op {
                    Op::Insert { .. } | Op::Finish { .. } => writes.push(op),
                    Op::Release { id } => {
                        self.leased.remove(&id);
                    }
                    other => reads.push(other),
                }
                next = if writes.len() < MAX_BATCH { rx.try_recv().ok() } else { None };
            }
            if !writes.is_empty() {
                self.write(writes);
            }
            // Reads run after the batch's commit, so they never see uncommitted rows.
            for op in reads {
                match op {
                    Op::Claim { now, max, reply } => {
                        let _ = reply.send(self.claim(now, max));
                    }
                    Op::Stats { now, reply } => {
                        let _ = reply.send(self.stats(now));
                    }
                    Op::FunctionStats { now, reply } => {
                        let _ = reply.send(self.function_stats(now));
                    }
                    Op::Insert { .. } | Op::Finish { .. } | Op::Release { .. } => {}
                }
            }
        }
    }

    fn write(&mut self, ops: Vec<Op>) {
        let (done, committed) = execute(&mut self.conn, ops);
        match committed {
            Ok(()) => {
                for (op, r) in done {
                    match r {
                        Ok(effect) => self.apply(op, effect),
                        Err(e) => self.fail(op, &EventsError::from(e)),
                    }
                }
            }
            Err(e) => {
                let e = EventsError::from(e);
                for (op, _) in done {
                    self.fail(op, &e);
                }
            }
        }
    }

    fn apply(&mut self, op: Op, effect: Effect) {
        match op {
            Op::Insert { reply, .. } => {
                if let Effect::Inserted(n) = effect {
                    self.count += n;
                }
                let _ = reply.send(Ok(()));
            }
            Op::Finish { id, reply, .. } => {
                let function = self.leased.remove(&id).unwrap_or_default();
                let t = self.tallies.entry(function).or_default();
                match effect {
                    Effect::Retried => t.retried += 1,
                    Effect::Completed { tally, inserted } => {
                        match tally {
                            Tally::Succeeded => t.succeeded += 1,
                            Tally::DeadLettered => t.dead_lettered += 1,
                            Tally::Dropped => t.dropped += 1,
                        }
                        self.count = self.count.saturating_sub(1) + u64::from(inserted);
                    }
                    Effect::Inserted(_) => {}
                }
                let _ = reply.send(Ok(()));
            }
            _ => {}
        }
    }

    fn fail(&mut self, op: Op, e: &EventsError) {
        let msg = e.to_string();
        match op {
            Op::Insert { reply, .. } => {
                let _ = reply.send(Err(EventsError::Store(msg)));
            }
            Op::Finish { id, reply, .. } => {
                // Nothing was recorded: the event stays as it was and runs again.
                tracing::error!(error = %msg, "could not record the outcome of an asynchronous invocation");
                self.leased.remove(&id);
                let _ = reply.send(Err(EventsError::Store(msg)));
            }
            _ => {}
        }
    }

    fn claim(&mut self, now: u64, max: usize) -> Result<Claimed> {
        let mut events = Vec::new();
        if max > 0 {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id FROM events WHERE next_attempt_ms <= ?1 ORDER BY next_attempt_ms, id LIMIT ?2",
            )?;
            let limit = (max + self.leased.len()) as i64;
            let ids = stmt.query_map(params![now as i64, limit], |r| r.get::<_, i64>(0))?;
            let mut free = Vec::new();
            for id in ids {
                let id = id?;
                if !self.leased.contains_key(&id) {
                    free.push(id);
                    if free.len() == max {
                        break;
                    }
                }
            }
            drop(stmt);
            for id in free {
                if let Some(s) = self.load(id)? {
                    self.leased.insert(id, s.event.function.clone());
                    events.push(s);
                }
            }
        }
        let next_due_ms: Option<i64> = self.conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM events WHERE next_attempt_ms > ?1",
            params![now as i64],
            |r| r.get(0),
        )?;
        Ok(Claimed { events, next_due_ms: next_due_ms.map(|t| t.max(0) as u64) })
    }

    fn load(&self, id: i64) -> Result<Option<Stored>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT request_id, function, qualifier, tenant, payload, client_context, enqueued_ms, attempts,
                    function_errors, system_failures, depth, last_version, last_response
             FROM events WHERE id = ?1",
        )?;
        let row = stmt
            .query_row(params![id], |r| {
                let last_version: Option<String> = r.get(11)?;
                let last_body: Option<Vec<u8>> = r.get(12)?;
                Ok(Stored {
                    id,
                    event: QueuedEvent {
                        request_id: r.get(0)?,
                        function: r.get(1)?,
                        qualifier: r.get(2)?,
                        tenant: r.get(3)?,
                        payload: Bytes::from(r.get::<_, Vec<u8>>(4)?),
                        client_context: r.get(5)?,
                        enqueued_ms: r.get::<_, i64>(6)?.max(0) as u64,
                        attempts: r.get::<_, i64>(7)?.max(0) as u32,
                    },
                    function_errors: r.get::<_, i64>(8)?.max(0) as u32,
                    system_failures: r.get::<_, i64>(9)?.max(0) as u32,
                    depth: r.get::<_, i64>(10)?.max(0) as u32,
                    last_response: last_version.zip(last_body.map(Bytes::from)),
                })
            })
            .optional()?;
        Ok(row)
    }

    fn oldest(&self) -> Result<Option<u64>> {
        let t: Option<i64> = self.conn.query_row("SELECT MIN(enqueued_ms) FROM events", [], |r| r.get(0))?;
        Ok(t.map(|t| t.max(0) as u64))
    }

    fn stats(&self, now: u64) -> Result<QueueStats> {
        let in_flight = self.leased.len() as u64;
        let mut s = QueueStats {
            queued: self.count.saturating_sub(in_flight),
            in_flight,
            oldest_age_ms: self.oldest()?.map_or(0, |t| now.saturating_sub(t)),
            ..QueueStats::default()
        };
        let mut all = Tallies::default();
        for t in self.tallies.values() {
            all.succeeded += t.succeeded;
            all.retried += t.retried;
            all.dropped += t.dropped;
            all.dead_lettered += t.dead_lettered;
        }
        all.fill(&mut s);
        Ok(s)
    }

    fn function_stats(&self, now: u64) -> Result<Vec<FunctionQueueStats>> {
        let mut out: BTreeMap<String, QueueStats> = BTreeMap::new();
        let mut stmt =
            self.conn.prepare_cached("SELECT function, COUNT(*), MIN(enqueued_ms) FROM events GROUP BY function")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))?;
        for row in rows {
            let (function, n, oldest) = row?;
            let s = out.entry(function).or_default();
            s.queued = n.max(0) as u64;
            s.oldest_age_ms = now.saturating_sub(oldest.max(0) as u64);
        }
        for function in self.leased.values() {
            let s = out.entry(function.clone()).or_default();
            s.in_flight += 1;
            s.queued = s.queued.saturating_sub(1);
        }
        for (function, t) in &self.tallies {
            t.fill(out.entry(function.clone()).or_default());
        }
        Ok(out.into_iter().map(|(function, stats)| FunctionQueueStats { function, stats }).collect())
    }
}

/// Runs `ops` in one transaction: each op's own result, and the commit's.
fn execute(conn: &mut Connection, ops: Vec<Op>) -> (Vec<(Op, rusqlite::Result<Effect>)>, rusqlite::Result<()>) {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        // The per-op results are not looked at when the transaction fails.
        Err(e) => return (ops.into_iter().map(|op| (op, Ok(Effect::Inserted(0)))).collect(), Err(e)),
    };
    let mut done = Vec::with_capacity(ops.len());
    for op in ops {
        let r = match &op {
            Op::Insert { events, .. } => insert(&tx, events).map(|()| Effect::Inserted(events.len() as u64)),
            Op::Finish { id, finish, .. } => finish_row(&tx, *id, finish),
            _ => continue,
        };
        done.push((op, r));
    }
    (done, tx.commit())
}

fn insert(tx: &rusqlite::Transaction<'_>, events: &[(QueuedEvent, u32)]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO events (request_id, function, qualifier, tenant, payload, client_context, enqueued_ms,
                             attempts, depth, next_attempt_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let now = crate::now_ms() as i64;
    for (e, depth) in events {
        stmt.execute(params![
            e.request_id,
            e.function,
            e.qualifier,
            e.tenant,
            e.payload.as_ref(),
            e.client_context,
            e.enqueued_ms as i64,
            i64::from(e.attempts),
            i64::from(*depth),
            // Due now: in line with retries that are due, in order of arrival.
            now,
        ])?;
    }
    Ok(())
}

fn finish_row(tx: &rusqlite::Transaction<'_>, id: i64, finish: &Finish) -> rusqlite::Result<Effect> {
    match finish {
        Finish::Retry { attempts, function_errors, system_failures, next_attempt_ms, last_response } => {
            let (version, body) = match last_response {
                Some((v, b)) => (Some(v.as_str()), Some(b.as_ref())),
                None => (None, None),
            };
            tx.prepare_cached(
                "UPDATE events SET attempts = ?2, function_errors = ?3, system_failures = ?4, next_attempt_ms = ?5,
                                   last_version = ?6, last_response = ?7
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                i64::from(*attempts),
                i64::from(*function_errors),
                i64::from(*system_failures),
                *next_attempt_ms as i64,
                version,
                body,
            ])?;
            Ok(Effect::Retried)
        }
        Finish::Complete { destination, tally } => {
            if let Some(d) = destination {
                insert(tx, std::slice::from_ref(d))?;
            }
            tx.prepare_cached("DELETE FROM events WHERE id = ?1")?.execute(params![id])?;
            Ok(Effect::Completed { tally: *tally, inserted: destination.is_some() })
        }
    }
}

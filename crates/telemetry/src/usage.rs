//! Usage per tenant, per function, per hour, for billing: invocations, errors, GB-seconds
//! (duration × memory), and bytes in and out. Counted in memory on the invoke path, written to
//! `logs.db` every few seconds (adding to what is there), and read back from there.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::params;

use crate::{LogStore, TelemetryError};

const HOUR_MS: u64 = 3_600_000;

/// One hour of one tenant's use of one function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRow {
    pub hour_ms: u64,
    pub function: String,
    pub tenant: String,
    pub invocations: u64,
    pub errors: u64,
    pub gb_seconds: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One invocation's use.
#[derive(Debug, Clone, Copy)]
pub struct Use {
    pub error: bool,
    pub duration_s: f64,
    pub memory_mb: u32,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

#[derive(Default)]
pub struct UsageMeter {
    pending: Mutex<HashMap<(u64, String, String), UsageRow>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UsageMeter {
    pub fn record(&self, now_ms: u64, function: &str, tenant: Option<&str>, u: Use) {
        let hour = now_ms - now_ms % HOUR_MS;
        let tenant = tenant.unwrap_or("");
        let mut p = lock(&self.pending);
        let key = (hour, function.to_string(), tenant.to_string());
        let row = p.entry(key).or_insert_with(|| UsageRow {
            hour_ms: hour,
            function: function.to_string(),
            tenant: tenant.to_string(),
            ..Default::default()
        });
        row.invocations += 1;
        row.errors += u64::from(u.error);
        row.gb_seconds += u.duration_s * f64::from(u.memory_mb) / 1024.0;
        row.bytes_in += u.bytes_in;
        row.bytes_out += u.bytes_out;
    }

    /// Add what was counted since the last flush to the store. Blocking.
    pub fn flush(&self, store: &LogStore) -> Result<usize, TelemetryError> {
        let rows: Vec<UsageRow> = lock(&self.pending).drain().map(|(_, r)| r).collect();
        if rows.is_empty() {
            return Ok(0);
        }
        let mut conn = store.reader()?;
        let result = (|| -> Result<(), TelemetryError> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO usage (hour, function, tenant, invocations, errors, gb_seconds, bytes_in, bytes_out)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(hour, function, tenant) DO UPDATE SET
                       invocations = invocations + excluded.invocations, errors = errors + excluded.errors,
                       gb_seconds = gb_seconds + excluded.gb_seconds, bytes_in = bytes_in + excluded.bytes_in,
                       bytes_out = bytes_out + excluded.bytes_out",
                )?;
                for r in &rows {
                    stmt.execute(params![
                        r.hour_ms as i64,
                        r.function,
                        r.tenant,
                        r.invocations as i64,
                        r.errors as i64,
                        r.gb_seconds,
                        r.bytes_in as i64,
                        r.bytes_out as i64
                    ])?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            // Nothing is lost: put the rows back for the next flush.
            let mut p = lock(&self.pending);
            for r in rows {
                let key = (r.hour_ms, r.function.clone(), r.tenant.clone());
                let e = p.entry(key).or_default();
                e.hour_ms = r.hour_ms;
                e.function = r.function;
                e.tenant = r.tenant;
                e.invocations += r.invocations;
                e.errors += r.errors;
                e.gb_seconds += r.gb_seconds;
                e.bytes_in += r.bytes_in;
                e.bytes_out += r.bytes_out;
            }
            return Err(e);
        }
        Ok(rows.len())
    }
}

impl LogStore {
    /// Usage rows, by hour, of one tenant (all tenants with `None`), optionally of one function,
    /// in `[from_ms, to_ms)`.
    pub fn usage(
        &self,
        tenant: Option<&str>,
        function: Option<&str>,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageRow>, TelemetryError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT hour, function, tenant, invocations, errors, gb_seconds, bytes_in, bytes_out FROM usage
             WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR function = ?2) AND hour >= ?3 AND hour < ?4
             ORDER BY hour, function, tenant",
        )?;
        let rows = stmt.query_map(
            params![tenant, function, (from_ms - from_ms % HOUR_MS) as i64, to_ms.min(i64::MAX as u64) as i64],
            |r| {
                Ok(UsageRow {
                    hour_ms: r.get::<_, i64>(0)? as u64,
                    function: r.get(1)?,
                    tenant: r.get(2)?,
                    invocations: r.get::<_, i64>(3)? as u64,
                    errors: r.get::<_, i64>(4)? as u64,
                    gb_seconds: r.get(5)?,
                    bytes_in: r.get::<_, i64>(6)? as u64,
                    bytes_out: r.get::<_, i64>(7)? as u64,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_up_by_tenant_and_hour() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = LogStore::open(&dir.path().join("logs.db")).expect("open");
        let m = UsageMeter::default();
        let u = |error, ms: f64| Use { error, duration_s: ms / 1000.0, memory_mb: 1024, bytes_in: 10, bytes_out: 100 };
        m.record(HOUR_MS * 5 + 1, "f", Some("blue"), u(false, 500.0));
        m.record(HOUR_MS * 5 + 2, "f", Some("blue"), u(true, 1500.0));
        m.record(HOUR_MS * 6 + 1, "f", Some("blue"), u(false, 1000.0));
        m.record(HOUR_MS * 5 + 3, "f", Some("green"), u(false, 1000.0));
        assert_eq!(m.flush(&store).expect("flush"), 3);
        m.record(HOUR_MS * 5 + 4, "f", Some("blue"), u(false, 1000.0));
        m.flush(&store).expect("flush again");
        let blue = store.usage(Some("blue"), None, 0, u64::MAX).expect("usage");
        assert_eq!(blue.len(), 2);
        assert_eq!((blue[0].hour_ms, blue[0].invocations, blue[0].errors), (HOUR_MS * 5, 3, 1));
        assert!((blue[0].gb_seconds - 3.0).abs() < 1e-9);
        assert_eq!((blue[0].bytes_in, blue[0].bytes_out), (30, 300));
        assert_eq!(store.usage(Some("green"), Some("f"), 0, u64::MAX).expect("green").len(), 1);
        assert!(store.usage(Some("nobody"), None, 0, u64::MAX).expect("none").is_empty());
    }
}

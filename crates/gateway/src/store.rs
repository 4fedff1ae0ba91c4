//! The gateway's state: every API Gateway object as its AWS JSON document, in SQLite
//! (`gateway.db` under the data dir), plus the usage counters of API keys per day. Writes bump a
//! generation number, so the data plane knows when to recompile what it serves.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::GatewayError;

/// The kinds of object stored, each with its scope (the parent's id, or "" at the top).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    RestApi,
    /// scope: rest api id. Methods and integrations live inside the resource document.
    Resource,
    Authorizer,
    RequestValidator,
    /// scope: rest api id. The document holds a `_snapshot` of the API at deployment.
    Deployment,
    /// scope: rest api id; id: stage name.
    Stage,
    UsagePlan,
    ApiKey,
    /// scope: usage plan id; id: api key id.
    UsagePlanKey,
    /// id: the domain name.
    DomainName,
    /// scope: domain name; id: base path (`(none)` for the empty one).
    BasePathMapping,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::RestApi => "restapi",
            Kind::Resource => "resource",
            Kind::Authorizer => "authorizer",
            Kind::RequestValidator => "validator",
            Kind::Deployment => "deployment",
            Kind::Stage => "stage",
            Kind::UsagePlan => "usageplan",
            Kind::ApiKey => "apikey",
            Kind::UsagePlanKey => "usageplankey",
            Kind::DomainName => "domainname",
            Kind::BasePathMapping => "basepathmapping",
        }
    }
}

pub struct Store {
    conn: Mutex<Connection>,
    generation: AtomicU64,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Store, GatewayError> {
        let conn = Connection::open(data_dir.join("gateway.db"))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS objects (
               kind TEXT NOT NULL, scope TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL,
               PRIMARY KEY (kind, scope, id));
             CREATE TABLE IF NOT EXISTS key_usage (
               plan TEXT NOT NULL, key TEXT NOT NULL, day INTEGER NOT NULL, used INTEGER NOT NULL,
               PRIMARY KEY (plan, key, day));",
        )?;
        Ok(Store { conn: Mutex::new(conn), generation: AtomicU64::new(1) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every write is one statement
        // or a transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bumped by every write; the data plane recompiles when it changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn get(&self, kind: Kind, scope: &str, id: &str) -> Result<Option<Value>, GatewayError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM objects WHERE kind = ?1 AND scope = ?2 AND id = ?3",
                params![kind.as_str(), scope, id],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| GatewayError::Internal(format!("stored document: {e}"))))
            .transpose()
    }

    /// Every object of a kind in a scope, in creation order.
    pub fn list(&self, kind: Kind, scope: &str) -> Result<Vec<Value>, GatewayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT body FROM objects WHERE kind = ?1 AND scope = ?2 ORDER BY seq")?;
        let rows = stmt.query_map(params![kind.as_str(), scope], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(
                serde_json::from_str(&body?).map_err(|e| GatewayError::Internal(format!("stored document: {e}")))?,
            );
        }
        Ok(out)
    }

    /// Every object of a kind, whatever its scope: (scope, document).
    pub fn list_all(&self, kind: Kind) -> Result<Vec<(String, Value)>, GatewayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT scope, body FROM objects WHERE kind = ?1 ORDER BY seq")?;
        let rows = stmt.query_map(params![kind.as_str()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (scope, body) = row?;
            let v = serde_json::from_str(&body).map_err(|e| GatewayError::Internal(format!("stored document: {e}")))?;
            out.push((scope, v));
        }
        Ok(out)
    }

    /// Insert or replace. A replaced object keeps its place in the order.
    pub fn put(&self, kind: Kind, scope: &str, id: &str, doc: &Value) -> Result<(), GatewayError> {
        self.conn().execute(
            "INSERT INTO objects (kind, scope, id, seq, body)
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM objects), ?4)
             ON CONFLICT (kind, scope, id) DO UPDATE SET body = excluded.body",
            params![kind.as_str(), scope, id, doc.to_string()],
        )?;
        self.bump();
        Ok(())
    }

    /// Insert only if absent; false if it exists.
    pub fn insert_new(&self, kind: Kind, scope: &str, id: &str, doc: &Value) -> Result<bool, GatewayError> {
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO objects (kind, scope, id, seq, body)
             VALUES (?1, ?2, ?3, (SELECT COALESCE(MAX(seq), 0) + 1 FROM objects), ?4)",
            params![kind.as_str(), scope, id, doc.to_string()],
        )?;
        self.bump();
        Ok(n == 1)
    }

    /// Delete one object; false if there was none.
    pub fn delete(&self, kind: Kind, scope: &str, id: &str) -> Result<bool, GatewayError> {
        let n = self.conn().execute(
            "DELETE FROM objects WHERE kind = ?1 AND scope = ?2 AND id = ?3",
            params![kind.as_str(), scope, id],
        )?;
        self.bump();
        Ok(n == 1)
    }

    /// Delete every object of some kinds in a scope (a REST API's children).
    pub fn delete_scope(&self, kinds: &[Kind], scope: &str) -> Result<(), GatewayError> {
        let conn = self.conn();
        for k in kinds {
            conn.execute("DELETE FROM objects WHERE kind = ?1 AND scope = ?2", params![k.as_str(), scope])?;
        }
        drop(conn);
        self.bump();
        Ok(())
    }

    /// Add usage counts: (plan, key, day start in epoch ms, requests).
    pub fn add_usage(&self, counts: &[(String, String, u64, u64)]) -> Result<(), GatewayError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO key_usage (plan, key, day, used) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (plan, key, day) DO UPDATE SET used = used + excluded.used",
            )?;
            for (plan, key, day, n) in counts {
                stmt.execute(params![plan, key, *day as i64, *n as i64])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Requests per day of a plan's keys between two day starts (inclusive): (key, day, used).
    pub fn usage(
        &self,
        plan: &str,
        key: Option<&str>,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<(String, u64, u64)>, GatewayError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key, day, used FROM key_usage WHERE plan = ?1 AND (?2 IS NULL OR key = ?2)
             AND day >= ?3 AND day <= ?4 ORDER BY key, day",
        )?;
        let rows = stmt.query_map(params![plan, key, from_day as i64, to_day as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_persist_in_order_and_usage_adds_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path()).expect("open");
            let g0 = s.generation();
            s.put(Kind::RestApi, "", "a1", &json!({"id": "a1", "name": "one"})).expect("put");
            s.put(Kind::RestApi, "", "b2", &json!({"id": "b2", "name": "two"})).expect("put");
            s.put(Kind::RestApi, "", "a1", &json!({"id": "a1", "name": "one again"})).expect("replace");
            assert!(s.generation() > g0);
            assert!(!s.insert_new(Kind::RestApi, "", "b2", &json!({})).expect("insert"));
            s.put(Kind::Resource, "a1", "r1", &json!({"id": "r1"})).expect("put");
            s.add_usage(&[("p".into(), "k".into(), 0, 3), ("p".into(), "k".into(), 0, 2)]).expect("usage");
        }
        let s = Store::open(dir.path()).expect("reopen");
        let names: Vec<_> = s.list(Kind::RestApi, "").expect("list").iter().map(|v| v["name"].clone()).collect();
        assert_eq!(names, vec![json!("one again"), json!("two")]);
        assert_eq!(s.list(Kind::Resource, "a1").expect("list").len(), 1);
        assert_eq!(s.usage("p", Some("k"), 0, 0).expect("usage"), vec![("k".to_string(), 0, 5)]);
        s.delete_scope(&[Kind::Resource], "a1").expect("delete scope");
        assert!(s.list(Kind::Resource, "a1").expect("list").is_empty());
        assert!(s.delete(Kind::RestApi, "", "a1").expect("delete"));
        assert!(s.get(Kind::RestApi, "", "a1").expect("get").is_none());
    }
}

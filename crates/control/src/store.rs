//! The SQLite store of the control plane (`state.db` under the data directory).

use std::path::Path;

use rusqlite::{Connection, params};

use crate::{ControlError, FunctionEntry};

pub(crate) struct Store {
    conn: Connection,
}

const SCHEMA_VERSION: i64 = 1;

impl From<rusqlite::Error> for ControlError {
    fn from(e: rusqlite::Error) -> Self {
        ControlError::Internal(format!("state store: {e}"))
    }
}

impl Store {
    pub fn open(path: &Path) -> Result<Self, ControlError> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;")?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == 0 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE functions (name TEXT PRIMARY KEY, data TEXT NOT NULL);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        } else if version > SCHEMA_VERSION {
            return Err(ControlError::Internal(format!(
                "state.db has schema version {version}, newer than this server understands ({SCHEMA_VERSION})"
            )));
        }
        Ok(Self { conn })
    }

    pub fn load_all(&self) -> Result<Vec<FunctionEntry>, ControlError> {
        let mut stmt = self.conn.prepare("SELECT name, data FROM functions")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, data) = row?;
            match serde_json::from_str(&data) {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::error!(function = %name, error = %e, "skipping unreadable function record")
                }
            }
        }
        Ok(out)
    }

    pub fn save(&mut self, name: &str, entry: &FunctionEntry) -> Result<(), ControlError> {
        let data = serde_json::to_string(entry).map_err(|e| ControlError::Internal(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO functions (name, data) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET data = excluded.data",
            params![name, data],
        )?;
        Ok(())
    }

    pub fn delete(&mut self, name: &str) -> Result<(), ControlError> {
        self.conn.execute("DELETE FROM functions WHERE name = ?1", params![name])?;
        Ok(())
    }
}

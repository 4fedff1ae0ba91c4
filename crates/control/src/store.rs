//! The SQLite store of the control plane (`state.db` under the data directory).

use std::path::Path;

use rusqlite::{Connection, params};

use crate::layers::LayerVersion;
use crate::{ControlError, FunctionEntry};

pub(crate) struct Store {
    conn: Connection,
}

const SCHEMA_VERSION: i64 = 2;

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
        }
        if version < 2 {
            // Version 2: layer versions (a deleted one stays, marked, so numbers are never reused).
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE IF NOT EXISTS layers (
                    name TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
                    deleted INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (name, version));
                 PRAGMA user_version = 2;
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

    /// Every layer version ever published: (record, deleted).
    pub fn load_layers(&self) -> Result<Vec<(LayerVersion, bool)>, ControlError> {
        let mut stmt = self.conn.prepare("SELECT name, version, data, deleted FROM layers")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, version, data, deleted) = row?;
            match serde_json::from_str(&data) {
                Ok(l) => out.push((l, deleted != 0)),
                Err(e) => tracing::error!(layer = %name, version, error = %e, "skipping unreadable layer record"),
            }
        }
        Ok(out)
    }

    pub fn save_layer(&mut self, layer: &LayerVersion) -> Result<(), ControlError> {
        let data = serde_json::to_string(layer).map_err(|e| ControlError::Internal(e.to_string()))?;
        self.conn.execute(
            "INSERT INTO layers (name, version, data) VALUES (?1, ?2, ?3)",
            params![layer.name, layer.version as i64, data],
        )?;
        Ok(())
    }

    pub fn mark_layer_deleted(&mut self, name: &str, version: u64) -> Result<(), ControlError> {
        self.conn
            .execute("UPDATE layers SET deleted = 1 WHERE name = ?1 AND version = ?2", params![name, version as i64])?;
        Ok(())
    }

    pub fn delete(&mut self, name: &str) -> Result<(), ControlError> {
        self.conn.execute("DELETE FROM functions WHERE name = ?1", params![name])?;
        Ok(())
    }
}

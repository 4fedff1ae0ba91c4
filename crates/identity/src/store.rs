//! The SQLite state: roles and their inline policies.
//!
//! Role and policy names are unique case-insensitively (`COLLATE NOCASE`), as in IAM. Policies hang off the
//! role id, so a role deleted and created again under the same name starts empty.

use rusqlite::{Connection, OptionalExtension, params};

use crate::Role;

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS roles (
    name         TEXT NOT NULL COLLATE NOCASE PRIMARY KEY,
    path         TEXT NOT NULL,
    role_id      TEXT NOT NULL UNIQUE,
    arn          TEXT NOT NULL,
    trust_policy TEXT NOT NULL,
    created      INTEGER NOT NULL,
    max_session  INTEGER NOT NULL,
    description  TEXT,
    tags         TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE IF NOT EXISTS role_policies (
    role_id  TEXT NOT NULL REFERENCES roles(role_id),
    name     TEXT NOT NULL COLLATE NOCASE,
    document TEXT NOT NULL,
    PRIMARY KEY (role_id, name)
);
";

pub(crate) fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(conn)
}

const ROLE_COLUMNS: &str = "name, path, role_id, arn, trust_policy, created, max_session, description, tags";

fn role_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Role> {
    let tags: String = row.get(8)?;
    let created: i64 = row.get(5)?;
    let max_session: i64 = row.get(6)?;
    Ok(Role {
        name: row.get(0)?,
        path: row.get(1)?,
        role_id: row.get(2)?,
        arn: row.get(3)?,
        trust_policy: row.get(4)?,
        created: u64::try_from(created).unwrap_or(0),
        max_session_duration: u64::try_from(max_session).unwrap_or(3600),
        description: row.get(7)?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e)))?,
    })
}

pub(crate) fn role_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<Role>> {
    conn.query_row(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = ?1"), [name], role_from_row).optional()
}

pub(crate) fn role_by_id(conn: &Connection, role_id: &str) -> rusqlite::Result<Option<Role>> {
    conn.query_row(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE role_id = ?1"), [role_id], role_from_row).optional()
}

/// Inserts a role; `false` when the name (case-insensitively) is taken.
pub(crate) fn insert_role(conn: &Connection, role: &Role) -> rusqlite::Result<bool> {
    let tags = serde_json::to_string(&role.tags).unwrap_or_else(|_| "[]".to_owned());
    let n = conn.execute(
        "INSERT INTO roles (name, path, role_id, arn, trust_policy, created, max_session, description, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(name) DO NOTHING",
        params![
            role.name,
            role.path,
            role.role_id,
            role.arn,
            role.trust_policy,
            i64::try_from(role.created).unwrap_or(i64::MAX),
            i64::try_from(role.max_session_duration).unwrap_or(i64::MAX),
            role.description,
            tags,
        ],
    )?;
    Ok(n == 1)
}

pub(crate) fn delete_role(conn: &Connection, role_id: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM roles WHERE role_id = ?1", [role_id])?;
    Ok(())
}

/// Roles whose path starts with `prefix`, by name (case-insensitively) from `marker` on, at most `limit`.
pub(crate) fn list_roles(
    conn: &Connection,
    prefix: &str,
    marker: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<Role>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROLE_COLUMNS} FROM roles
         WHERE substr(path, 1, length(?1)) = ?1 AND (?2 IS NULL OR name >= ?2)
         ORDER BY name LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![prefix, marker, i64::try_from(limit).unwrap_or(i64::MAX)], role_from_row)?;
    rows.collect()
}

/// The inline policies of a role: `(name, document)` by name.
pub(crate) fn policies(conn: &Connection, role_id: &str) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT name, document FROM role_policies WHERE role_id = ?1 ORDER BY name")?;
    let rows = stmt.query_map([role_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

pub(crate) fn policy(conn: &Connection, role_id: &str, name: &str) -> rusqlite::Result<Option<(String, String)>> {
    conn.query_row("SELECT name, document FROM role_policies WHERE role_id = ?1 AND name = ?2", [role_id, name], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
    .optional()
}

/// Creates or replaces a policy. A replaced policy keeps the name it was first created with.
pub(crate) fn put_policy(conn: &Connection, role_id: &str, name: &str, document: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO role_policies (role_id, name, document) VALUES (?1, ?2, ?3)
         ON CONFLICT(role_id, name) DO UPDATE SET document = excluded.document",
        [role_id, name, document],
    )?;
    Ok(())
}

/// Deletes a policy; `false` when there was none.
pub(crate) fn delete_policy(conn: &Connection, role_id: &str, name: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute("DELETE FROM role_policies WHERE role_id = ?1 AND name = ?2", [role_id, name])? == 1)
}

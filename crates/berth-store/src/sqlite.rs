//! SQLite: one file in the data folder, WAL journal, numbered migrations.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use berth_core::{AppId, Deployment, DeploymentId, VersionId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use berth_core::acl::Policy;

use crate::acl::{TOKEN_COLUMNS, TokenRow, decode_policy, encode_policies, encode_policy};
use crate::audit::{AUDIT_COLUMNS, AuditRow, encode_params, opt_i64};
use crate::record::{VersionRow, decode_deployment};
use crate::{AclToken, AppVersion, AuditEntry, AuditFilter, AuditRecord, Lease, Store, StoreError};

/// Schema steps, applied in order; each runs once, recorded in `schema_migrations`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE apps (
    id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE app_versions (
    app_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    config_version INTEGER NOT NULL,
    change TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (app_id, version)
);
"#,
    r#"
CREATE TABLE deployments (
    id TEXT PRIMARY KEY NOT NULL,
    app_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX deployments_by_app ON deployments (app_id, created_at_ms);
"#,
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    info TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
"#,
    // IF NOT EXISTS: a store whose earlier steps are replayed (tests that fake an old
    // schema) keeps these tables.
    r#"
CREATE TABLE IF NOT EXISTS acl_policies (
    name TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS acl_tokens (
    accessor_id TEXT PRIMARY KEY NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    policies TEXT NOT NULL,
    create_time_ms INTEGER NOT NULL,
    expiration_time_ms INTEGER
);
CREATE TABLE IF NOT EXISTS acl_bootstrap (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    accessor_id TEXT NOT NULL,
    time_ms INTEGER NOT NULL
);
"#,
    // AUTOINCREMENT: ids are never reused after a prune, so a listing's cursor stays
    // valid.
    r#"
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    accessor_id TEXT,
    token_name TEXT,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    decision TEXT NOT NULL,
    status INTEGER,
    params TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (time_ms);
"#,
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (or creates) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Self::init(conn, path).map_err(|e| match e {
            StoreError::Engine(reason) => StoreError::Open {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?, Path::new(":memory:"))
    }

    fn init(mut conn: Connection, path: &Path) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(5))?;
        // WAL: readers never block the writer; FULL: a change acknowledged to the user
        // survives power loss.
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY NOT NULL,
                applied_at_ms INTEGER NOT NULL
            )",
        )?;
        let current: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )?;
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found: current,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?1, CAST(strftime('%s','now') AS INTEGER) * 1000)",
                params![i as i64 + 1],
            )?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions
        // roll back), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const COLUMNS: &str = "app_id, version, config_version, change, created_at_ms, spec";

fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<AppVersion, StoreError>> {
    Ok(VersionRow {
        app: row.get(0)?,
        version: row.get(1)?,
        config_version: row.get(2)?,
        change: row.get(3)?,
        created_at_ms: row.get(4)?,
        spec: row.get(5)?,
    }
    .decode())
}

fn insert_version(conn: &Connection, v: &AppVersion) -> Result<(), StoreError> {
    let spec = serde_json::to_string(&v.spec).map_err(|e| StoreError::Engine(e.to_string()))?;
    conn.execute(
        &format!("INSERT INTO app_versions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            v.spec.id.as_str(),
            v.version.0 as i64,
            v.config_version.0 as i64,
            v.change.as_str(),
            v.created_at_ms as i64,
            spec
        ],
    )?;
    Ok(())
}

fn current_version(conn: &Connection, id: &AppId) -> Result<Option<VersionId>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT version FROM apps WHERE id = ?1",
            params![id.as_str()],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|v| VersionId(v as u64)))
}

impl Store for SqliteStore {
    fn create_app(&self, v: &AppVersion) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if current_version(&tx, &v.spec.id)?.is_some() {
            return Err(StoreError::AlreadyExists(v.spec.id.clone()));
        }
        // Leftover versions of an earlier app with the same id would mix histories.
        tx.execute(
            "DELETE FROM app_versions WHERE app_id = ?1",
            params![v.spec.id.as_str()],
        )?;
        insert_version(&tx, v)?;
        tx.execute(
            "INSERT INTO apps (id, version) VALUES (?1, ?2)",
            params![v.spec.id.as_str(), v.version.0 as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn update_app(&self, v: &AppVersion, expected: VersionId) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = &v.spec.id;
        match current_version(&tx, id)? {
            None => return Err(StoreError::NotFound(id.clone())),
            Some(current) if current != expected => {
                return Err(StoreError::Conflict {
                    app: id.clone(),
                    expected,
                    current,
                });
            }
            Some(_) => {}
        }
        insert_version(&tx, v)?;
        tx.execute(
            "UPDATE apps SET version = ?2 WHERE id = ?1",
            params![id.as_str(), v.version.0 as i64],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn delete_app(&self, id: &AppId) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute("DELETE FROM apps WHERE id = ?1", params![id.as_str()])?;
        tx.execute(
            "DELETE FROM app_versions WHERE app_id = ?1",
            params![id.as_str()],
        )?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn get_app(&self, id: &AppId) -> Result<Option<AppVersion>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {COLUMNS} FROM app_versions v WHERE v.app_id = ?1 AND v.version = (SELECT a.version FROM apps a WHERE a.id = v.app_id)"
        );
        conn.query_row(&sql, params![id.as_str()], read_row)
            .optional()?
            .transpose()
    }

    fn list_apps(&self) -> Result<Vec<AppVersion>, StoreError> {
        let conn = self.conn();
        let sql = format!(
            "SELECT {COLUMNS} FROM app_versions v WHERE v.version = (SELECT a.version FROM apps a WHERE a.id = v.app_id) ORDER BY v.app_id"
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([], read_row)?;
        rows.map(|r| r?).collect()
    }

    fn list_versions(&self, id: &AppId) -> Result<Vec<AppVersion>, StoreError> {
        let conn = self.conn();
        let sql =
            format!("SELECT {COLUMNS} FROM app_versions WHERE app_id = ?1 ORDER BY version DESC");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map(params![id.as_str()], read_row)?;
        rows.map(|r| r?).collect()
    }

    fn get_version(
        &self,
        id: &AppId,
        version: VersionId,
    ) -> Result<Option<AppVersion>, StoreError> {
        let conn = self.conn();
        let sql = format!("SELECT {COLUMNS} FROM app_versions WHERE app_id = ?1 AND version = ?2");
        conn.query_row(&sql, params![id.as_str(), version.0 as i64], read_row)
            .optional()?
            .transpose()
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now = unix_ms();
        let current: Option<(String, String, i64)> = tx
            .query_row(
                "SELECT holder, info, expires_at_ms FROM leases WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        if let Some((other, other_info, expires_at)) = &current
            && other != holder
            && *expires_at > now
        {
            return Ok(Lease {
                holder: other.clone(),
                info: other_info.clone(),
                expires_in: Duration::from_millis((expires_at - now) as u64),
                mine: false,
            });
        }
        let expires_at = now + ttl.as_millis() as i64;
        tx.execute(
            "INSERT INTO leases (name, holder, info, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET holder = ?2, info = ?3, expires_at_ms = ?4",
            params![name, holder, info, expires_at],
        )?;
        tx.commit()?;
        Ok(Lease {
            holder: holder.to_string(),
            info: info.to_string(),
            expires_in: ttl,
            mine: true,
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    fn put_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        self.put_deployment_row(d)
    }

    fn get_deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        self.conn()
            .query_row(
                "SELECT id, body FROM deployments WHERE id = ?1",
                params![id.as_str()],
                read_deployment,
            )
            .optional()?
            .transpose()
    }

    fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, body FROM deployments ORDER BY created_at_ms DESC, id DESC")?;
        let rows = stmt.query_map([], read_deployment)?;
        rows.map(|r| r?).collect()
    }

    fn prune_deployments(&self, app: &AppId, keep: usize) -> Result<usize, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM deployments WHERE app_id = ?1 AND state NOT IN ('running', 'rolling_back')
               AND id NOT IN (SELECT id FROM deployments WHERE app_id = ?1
                   AND state NOT IN ('running', 'rolling_back')
                   ORDER BY created_at_ms DESC, id DESC LIMIT ?2)",
            params![app.as_str(), keep as i64],
        )?;
        Ok(n)
    }

    fn put_policy(&self, p: &Policy) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO acl_policies (name, body) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET body = excluded.body",
            params![p.name, encode_policy(p)?],
        )?;
        Ok(())
    }

    fn get_policy(&self, name: &str) -> Result<Option<Policy>, StoreError> {
        self.conn()
            .query_row(
                "SELECT name, body FROM acl_policies WHERE name = ?1",
                params![name],
                read_policy,
            )
            .optional()?
            .transpose()
    }

    fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, body FROM acl_policies ORDER BY name")?;
        let rows = stmt.query_map([], read_policy)?;
        rows.map(|r| r?).collect()
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        let n = self
            .conn()
            .execute("DELETE FROM acl_policies WHERE name = ?1", params![name])?;
        Ok(n > 0)
    }

    fn create_token(&self, t: &AclToken) -> Result<(), StoreError> {
        insert_token(&self.conn(), t)
    }

    fn get_token(&self, accessor_id: &str) -> Result<Option<AclToken>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM acl_tokens WHERE accessor_id = ?1"),
                params![accessor_id],
                read_token,
            )
            .optional()?
            .transpose()
    }

    fn get_token_by_hash(&self, secret_hash: &str) -> Result<Option<AclToken>, StoreError> {
        self.conn()
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM acl_tokens WHERE secret_hash = ?1"),
                params![secret_hash],
                read_token,
            )
            .optional()?
            .transpose()
    }

    fn list_tokens(&self) -> Result<Vec<AclToken>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM acl_tokens ORDER BY create_time_ms, accessor_id"
        ))?;
        let rows = stmt.query_map([], read_token)?;
        rows.map(|r| r?).collect()
    }

    fn delete_token(&self, accessor_id: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM acl_tokens WHERE accessor_id = ?1",
            params![accessor_id],
        )?;
        Ok(n > 0)
    }

    fn bootstrap(&self, t: &AclToken, reset: bool) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if reset {
            tx.execute("DELETE FROM acl_bootstrap", [])?;
        }
        let n = tx.execute(
            "INSERT INTO acl_bootstrap (id, accessor_id, time_ms) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO NOTHING",
            params![t.accessor_id, t.create_time_ms as i64],
        )?;
        if n == 0 {
            return Ok(false);
        }
        insert_token(&tx, t)?;
        tx.commit()?;
        Ok(true)
    }

    fn append_audit(&self, r: &AuditRecord) -> Result<u64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO audit_log (time_ms, accessor_id, token_name, client, action, target, decision, status, params)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                opt_i64(Some(r.time_ms)),
                r.accessor_id,
                r.token_name,
                r.client,
                r.action,
                r.target,
                r.decision.as_str(),
                r.status.map(i64::from),
                encode_params(&r.params)?
            ],
        )?;
        // The connection is this store's alone (behind the lock): the id is this insert's.
        Ok(conn.last_insert_rowid() as u64)
    }

    fn set_audit_outcome(&self, id: u64, status: u16) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE audit_log SET status = ?2 WHERE id = ?1",
            params![opt_i64(Some(id)), i64::from(status)],
        )?;
        if n == 0 {
            return Err(StoreError::AuditEntryMissing(id));
        }
        Ok(())
    }

    fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log
             WHERE (?1 IS NULL OR time_ms >= ?1) AND (?2 IS NULL OR time_ms < ?2)
               AND (?3 IS NULL OR accessor_id = ?3)
               AND (?4 IS NULL OR substr(target, 1, length(?4)) = ?4)
               AND (?5 IS NULL OR action = ?5) AND (?6 IS NULL OR id < ?6)
             ORDER BY id DESC LIMIT ?7"
        ))?;
        let rows = stmt.query_map(
            params![
                opt_i64(f.since_ms),
                opt_i64(f.until_ms),
                f.accessor_id,
                f.target_prefix,
                f.action,
                opt_i64(f.before),
                opt_i64(Some(f.limit as u64))
            ],
            read_audit,
        )?;
        rows.map(|r| r?).collect()
    }

    fn prune_audit(&self, older_than_ms: u64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM audit_log WHERE time_ms < ?1",
            params![opt_i64(Some(older_than_ms))],
        )?)
    }
}

fn read_audit(row: &Row<'_>) -> rusqlite::Result<Result<AuditEntry, StoreError>> {
    Ok(AuditRow {
        id: row.get(0)?,
        time_ms: row.get(1)?,
        accessor_id: row.get(2)?,
        token_name: row.get(3)?,
        client: row.get(4)?,
        action: row.get(5)?,
        target: row.get(6)?,
        decision: row.get(7)?,
        status: row.get(8)?,
        params: row.get(9)?,
    }
    .decode())
}

fn insert_token(conn: &Connection, t: &AclToken) -> Result<(), StoreError> {
    let result = conn.execute(
        &format!("INSERT INTO acl_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
        params![
            t.accessor_id,
            t.secret_hash,
            t.name,
            encode_policies(&t.policies)?,
            t.create_time_ms as i64,
            t.expiration_time_ms.map(|v| v as i64)
        ],
    );
    match result {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::TokenExists(t.accessor_id.clone()))
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

fn read_policy(row: &Row<'_>) -> rusqlite::Result<Result<Policy, StoreError>> {
    let name: String = row.get(0)?;
    let body: String = row.get(1)?;
    Ok(decode_policy(&name, &body))
}

fn read_token(row: &Row<'_>) -> rusqlite::Result<Result<AclToken, StoreError>> {
    Ok(TokenRow {
        accessor_id: row.get(0)?,
        secret_hash: row.get(1)?,
        name: row.get(2)?,
        policies: row.get(3)?,
        create_time_ms: row.get(4)?,
        expiration_time_ms: row.get(5)?,
    }
    .decode())
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn read_deployment(row: &Row<'_>) -> rusqlite::Result<Result<Deployment, StoreError>> {
    let id: String = row.get(0)?;
    let body: String = row.get(1)?;
    Ok(decode_deployment(id, &body))
}

impl SqliteStore {
    pub(crate) fn put_deployment_row(&self, d: &Deployment) -> Result<(), StoreError> {
        let body = serde_json::to_string(d).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.conn().execute(
            "INSERT INTO deployments (id, app_id, state, created_at_ms, body) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET app_id = excluded.app_id, state = excluded.state,
                created_at_ms = excluded.created_at_ms, body = excluded.body",
            params![
                d.id.as_str(),
                d.app.as_str(),
                d.state.as_str(),
                d.created_at_ms as i64,
                body
            ],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

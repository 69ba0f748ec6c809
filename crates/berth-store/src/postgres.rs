//! PostgreSQL: for servers that share one database (several servers, one of them leading)
//! or operators who already run PostgreSQL. Same schema and semantics as SQLite; the
//! conformance suite runs against both.
//!
//! One connection, used by one call at a time (the server's store traffic is a few small
//! statements per change); a broken connection is replaced on the next call, so a
//! database restart costs the calls made while it was down, never the server.

use berth_util::pg::{describe_error, describe_target};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use berth_core::{AppId, Deployment, DeploymentId, VersionId};
use postgres::{Client, GenericClient, NoTls, Row};

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
    version BIGINT NOT NULL
);
CREATE TABLE app_versions (
    app_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    config_version BIGINT NOT NULL,
    change TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (app_id, version)
);
"#,
    r#"
CREATE TABLE deployments (
    id TEXT PRIMARY KEY NOT NULL,
    app_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX deployments_by_app ON deployments (app_id, created_at_ms);
"#,
    r#"
CREATE TABLE leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    info TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
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
    create_time_ms BIGINT NOT NULL,
    expiration_time_ms BIGINT
);
CREATE TABLE IF NOT EXISTS acl_bootstrap (
    id BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    accessor_id TEXT NOT NULL,
    time_ms BIGINT NOT NULL
);
"#,
    // An identity column never reuses ids after a prune, so a listing's cursor stays
    // valid.
    r#"
CREATE TABLE IF NOT EXISTS audit_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    accessor_id TEXT,
    token_name TEXT,
    client TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    decision TEXT NOT NULL,
    status BIGINT,
    params TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_by_time ON audit_log (time_ms);
"#,
];

/// Serialises migrations of servers that start at the same moment (an arbitrary constant
/// key for `pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x6265_7274_6800_0001;

pub struct PostgresStore {
    config: postgres::Config,
    /// Where the database is, for messages (never the password).
    target: String,
    conn: Mutex<Option<Client>>,
}

impl PostgresStore {
    /// Connects, and brings the schema up to date. `url` is a `postgres://` URL or
    /// libpq `key=value` settings.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url.parse().map_err(|e| StoreError::OpenPostgres {
            target: "postgres_url".into(),
            reason: format!(
                "not a PostgreSQL URL ({e}); use postgres://USER@HOST:PORT/DB or host=... user=... dbname=..."
            ),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("berth-server");
        let store = PostgresStore {
            target: describe_target(&config),
            config,
            conn: Mutex::new(None),
        };
        let open_err = |e: StoreError| match e {
            StoreError::Engine(reason) => StoreError::OpenPostgres {
                target: store.target.clone(),
                reason,
            },
            other => other,
        };
        let mut guard = store.connection().map_err(open_err)?;
        migrate(guard.as_mut().expect("just connected"), &store.target).map_err(open_err)?;
        drop(guard);
        Ok(store)
    }

    /// The open connection, reconnecting if there is none or it broke.
    fn connection(&self) -> Result<MutexGuard<'_, Option<Client>>, StoreError> {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            let client = self.config.connect(NoTls).map_err(|e| {
                StoreError::Engine(format!(
                    "cannot reach PostgreSQL at {}: {}; check that it runs and accepts this user",
                    self.target,
                    describe_error(&e)
                ))
            })?;
            *guard = Some(client);
        }
        Ok(guard)
    }

    /// Runs `f` on the connection; an error that broke the connection drops it, so the
    /// next call starts afresh.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.connection()?;
        let client = guard.as_mut().expect("connection() leaves a client");
        let result = f(client);
        let broken = client.is_closed();
        if broken {
            *guard = None;
        }
        result.map_err(|e| match e {
            StoreError::Engine(reason) => StoreError::Engine(format!(
                "PostgreSQL at {}: {reason}{}",
                self.target,
                if broken {
                    "; the connection broke and is reopened on the next call"
                } else {
                    ""
                }
            )),
            other => other,
        })
    }
}

fn migrate(client: &mut Client, target: &str) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(engine)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(engine)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY NOT NULL,
            applied_at_ms BIGINT NOT NULL
        )",
    )
    .map_err(engine)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(engine)?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::TooNew {
            path: target.into(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).map_err(engine)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT)",
            &[&(i as i64 + 1)],
        )
        .map_err(engine)?;
    }
    tx.commit().map_err(engine)
}

fn engine(e: postgres::Error) -> StoreError {
    StoreError::Engine(describe_error(&e))
}

const COLUMNS: &str = "app_id, version, config_version, change, created_at_ms, spec";
/// The same, qualified, for the join with `apps`.
const V_COLUMNS: &str = "v.app_id, v.version, v.config_version, v.change, v.created_at_ms, v.spec";

fn read_row(row: &Row) -> Result<AppVersion, StoreError> {
    VersionRow {
        app: row.get(0),
        version: row.get(1),
        config_version: row.get(2),
        change: row.get(3),
        created_at_ms: row.get(4),
        spec: row.get(5),
    }
    .decode()
}

fn insert_version(tx: &mut impl GenericClient, v: &AppVersion) -> Result<(), StoreError> {
    let spec = serde_json::to_string(&v.spec).map_err(|e| StoreError::Engine(e.to_string()))?;
    tx.execute(
        &format!("INSERT INTO app_versions ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &v.spec.id.as_str(),
            &(v.version.0 as i64),
            &(v.config_version.0 as i64),
            &v.change.as_str(),
            &(v.created_at_ms as i64),
            &spec,
        ],
    )
    .map_err(engine)?;
    Ok(())
}

/// The current version, row-locked until the transaction ends, so two servers updating
/// one app serialise and the second sees the first's version.
fn current_version_for_update(
    tx: &mut impl GenericClient,
    id: &AppId,
) -> Result<Option<VersionId>, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT version FROM apps WHERE id = $1 FOR UPDATE",
            &[&id.as_str()],
        )
        .map_err(engine)?
        .map(|r| VersionId(r.get::<_, i64>(0) as u64)))
}

impl Store for PostgresStore {
    fn create_app(&self, v: &AppVersion) -> Result<(), StoreError> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(engine)?;
            let inserted = tx
                .execute(
                    "INSERT INTO apps (id, version) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    &[&v.spec.id.as_str(), &(v.version.0 as i64)],
                )
                .map_err(engine)?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(v.spec.id.clone()));
            }
            // Leftover versions of an earlier app with the same id would mix histories.
            tx.execute(
                "DELETE FROM app_versions WHERE app_id = $1",
                &[&v.spec.id.as_str()],
            )
            .map_err(engine)?;
            insert_version(&mut tx, v)?;
            tx.commit().map_err(engine)
        })
    }

    fn update_app(&self, v: &AppVersion, expected: VersionId) -> Result<(), StoreError> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(engine)?;
            let id = &v.spec.id;
            match current_version_for_update(&mut tx, id)? {
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
            insert_version(&mut tx, v)?;
            tx.execute(
                "UPDATE apps SET version = $2 WHERE id = $1",
                &[&id.as_str(), &(v.version.0 as i64)],
            )
            .map_err(engine)?;
            tx.commit().map_err(engine)
        })
    }

    fn delete_app(&self, id: &AppId) -> Result<bool, StoreError> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(engine)?;
            let n = tx
                .execute("DELETE FROM apps WHERE id = $1", &[&id.as_str()])
                .map_err(engine)?;
            tx.execute(
                "DELETE FROM app_versions WHERE app_id = $1",
                &[&id.as_str()],
            )
            .map_err(engine)?;
            tx.commit().map_err(engine)?;
            Ok(n > 0)
        })
    }

    fn get_app(&self, id: &AppId) -> Result<Option<AppVersion>, StoreError> {
        self.with(|client| {
            let sql = format!(
                "SELECT {V_COLUMNS} FROM app_versions v JOIN apps a ON a.id = v.app_id AND a.version = v.version WHERE v.app_id = $1"
            );
            client
                .query_opt(&sql, &[&id.as_str()])
                .map_err(engine)?
                .as_ref()
                .map(read_row)
                .transpose()
        })
    }

    fn list_apps(&self) -> Result<Vec<AppVersion>, StoreError> {
        self.with(|client| {
            let sql = format!(
                "SELECT {V_COLUMNS} FROM app_versions v JOIN apps a ON a.id = v.app_id AND a.version = v.version ORDER BY v.app_id"
            );
            client
                .query(&sql, &[])
                .map_err(engine)?
                .iter()
                .map(read_row)
                .collect()
        })
    }

    fn list_versions(&self, id: &AppId) -> Result<Vec<AppVersion>, StoreError> {
        self.with(|client| {
            let sql = format!(
                "SELECT {COLUMNS} FROM app_versions WHERE app_id = $1 ORDER BY version DESC"
            );
            client
                .query(&sql, &[&id.as_str()])
                .map_err(engine)?
                .iter()
                .map(read_row)
                .collect()
        })
    }

    fn get_version(
        &self,
        id: &AppId,
        version: VersionId,
    ) -> Result<Option<AppVersion>, StoreError> {
        self.with(|client| {
            let sql =
                format!("SELECT {COLUMNS} FROM app_versions WHERE app_id = $1 AND version = $2");
            client
                .query_opt(&sql, &[&id.as_str(), &(version.0 as i64)])
                .map_err(engine)?
                .as_ref()
                .map(read_row)
                .transpose()
        })
    }

    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        info: &str,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(engine)?;
            // A row to lock, so two candidates serialise on it.
            tx.execute(
                "INSERT INTO leases (name, holder, info, expires_at_ms) VALUES ($1, '', '', 0)
                 ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .map_err(engine)?;
            // The database's clock decides expiry, so servers with skewed clocks agree.
            let row = tx
                .query_one(
                    "SELECT holder, info, expires_at_ms,
                            (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT
                     FROM leases WHERE name = $1 FOR UPDATE",
                    &[&name],
                )
                .map_err(engine)?;
            let (other, other_info, expires_at, now): (String, String, i64, i64) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            if other != holder && expires_at > now {
                tx.commit().map_err(engine)?;
                return Ok(Lease {
                    holder: other,
                    info: other_info,
                    expires_in: Duration::from_millis((expires_at - now) as u64),
                    mine: false,
                });
            }
            tx.execute(
                "UPDATE leases SET holder = $2, info = $3, expires_at_ms = $4 WHERE name = $1",
                &[&name, &holder, &info, &(now + ttl.as_millis() as i64)],
            )
            .map_err(engine)?;
            tx.commit().map_err(engine)?;
            Ok(Lease {
                holder: holder.to_string(),
                info: info.to_string(),
                expires_in: ttl,
                mine: true,
            })
        })
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.with(|client| {
            client
                .execute(
                    "DELETE FROM leases WHERE name = $1 AND holder = $2",
                    &[&name, &holder],
                )
                .map_err(engine)?;
            Ok(())
        })
    }

    fn put_deployment(&self, d: &Deployment) -> Result<(), StoreError> {
        let body = serde_json::to_string(d).map_err(|e| StoreError::Engine(e.to_string()))?;
        self.with(|client| {
            client
                .execute(
                    "INSERT INTO deployments (id, app_id, state, created_at_ms, body) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET app_id = EXCLUDED.app_id, state = EXCLUDED.state,
                        created_at_ms = EXCLUDED.created_at_ms, body = EXCLUDED.body",
                    &[
                        &d.id.as_str(),
                        &d.app.as_str(),
                        &d.state.as_str(),
                        &(d.created_at_ms as i64),
                        &body,
                    ],
                )
                .map_err(engine)?;
            Ok(())
        })
    }

    fn get_deployment(&self, id: &DeploymentId) -> Result<Option<Deployment>, StoreError> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT id, body FROM deployments WHERE id = $1",
                    &[&id.as_str()],
                )
                .map_err(engine)?
                .as_ref()
                .map(read_deployment)
                .transpose()
        })
    }

    fn list_deployments(&self) -> Result<Vec<Deployment>, StoreError> {
        self.with(|client| {
            client
                .query(
                    "SELECT id, body FROM deployments ORDER BY created_at_ms DESC, id DESC",
                    &[],
                )
                .map_err(engine)?
                .iter()
                .map(read_deployment)
                .collect()
        })
    }

    fn prune_deployments(&self, app: &AppId, keep: usize) -> Result<usize, StoreError> {
        self.with(|client| {
            let n = client
                .execute(
                    "DELETE FROM deployments WHERE app_id = $1 AND state NOT IN ('running', 'rolling_back')
                       AND id NOT IN (SELECT id FROM deployments WHERE app_id = $1
                           AND state NOT IN ('running', 'rolling_back')
                           ORDER BY created_at_ms DESC, id DESC LIMIT $2)",
                    &[&app.as_str(), &(keep as i64)],
                )
                .map_err(engine)?;
            Ok(n as usize)
        })
    }

    fn put_policy(&self, p: &Policy) -> Result<(), StoreError> {
        let body = encode_policy(p)?;
        self.with(|client| {
            client
                .execute(
                    "INSERT INTO acl_policies (name, body) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET body = EXCLUDED.body",
                    &[&p.name, &body],
                )
                .map_err(engine)?;
            Ok(())
        })
    }

    fn get_policy(&self, name: &str) -> Result<Option<Policy>, StoreError> {
        self.with(|client| {
            client
                .query_opt(
                    "SELECT name, body FROM acl_policies WHERE name = $1",
                    &[&name],
                )
                .map_err(engine)?
                .as_ref()
                .map(read_policy)
                .transpose()
        })
    }

    fn list_policies(&self) -> Result<Vec<Policy>, StoreError> {
        self.with(|client| {
            client
                .query("SELECT name, body FROM acl_policies ORDER BY name", &[])
                .map_err(engine)?
                .iter()
                .map(read_policy)
                .collect()
        })
    }

    fn delete_policy(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|client| {
            let n = client
                .execute("DELETE FROM acl_policies WHERE name = $1", &[&name])
                .map_err(engine)?;
            Ok(n > 0)
        })
    }

    fn create_token(&self, t: &AclToken) -> Result<(), StoreError> {
        self.with(|client| insert_token(client, t))
    }

    fn get_token(&self, accessor_id: &str) -> Result<Option<AclToken>, StoreError> {
        self.with(|client| {
            client
                .query_opt(
                    &format!("SELECT {TOKEN_COLUMNS} FROM acl_tokens WHERE accessor_id = $1"),
                    &[&accessor_id],
                )
                .map_err(engine)?
                .as_ref()
                .map(read_token)
                .transpose()
        })
    }

    fn get_token_by_hash(&self, secret_hash: &str) -> Result<Option<AclToken>, StoreError> {
        self.with(|client| {
            client
                .query_opt(
                    &format!("SELECT {TOKEN_COLUMNS} FROM acl_tokens WHERE secret_hash = $1"),
                    &[&secret_hash],
                )
                .map_err(engine)?
                .as_ref()
                .map(read_token)
                .transpose()
        })
    }

    fn list_tokens(&self) -> Result<Vec<AclToken>, StoreError> {
        self.with(|client| {
            client
                .query(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM acl_tokens ORDER BY create_time_ms, accessor_id"
                    ),
                    &[],
                )
                .map_err(engine)?
                .iter()
                .map(read_token)
                .collect()
        })
    }

    fn delete_token(&self, accessor_id: &str) -> Result<bool, StoreError> {
        self.with(|client| {
            let n = client
                .execute(
                    "DELETE FROM acl_tokens WHERE accessor_id = $1",
                    &[&accessor_id],
                )
                .map_err(engine)?;
            Ok(n > 0)
        })
    }

    fn bootstrap(&self, t: &AclToken, reset: bool) -> Result<bool, StoreError> {
        self.with(|client| {
            let mut tx = client.transaction().map_err(engine)?;
            // Serialises concurrent bootstraps on one database: the second waits, then
            // sees the first's record.
            tx.execute("LOCK TABLE acl_bootstrap IN EXCLUSIVE MODE", &[])
                .map_err(engine)?;
            if reset {
                tx.execute("DELETE FROM acl_bootstrap", &[])
                    .map_err(engine)?;
            }
            let n = tx
                .execute(
                    "INSERT INTO acl_bootstrap (id, accessor_id, time_ms) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&t.accessor_id, &(t.create_time_ms as i64)],
                )
                .map_err(engine)?;
            if n == 0 {
                return Ok(false);
            }
            insert_token(&mut tx, t)?;
            tx.commit().map_err(engine)?;
            Ok(true)
        })
    }

    fn append_audit(&self, r: &AuditRecord) -> Result<u64, StoreError> {
        let params = encode_params(&r.params)?;
        self.with(|client| {
            let row = client
                .query_one(
                    "INSERT INTO audit_log (time_ms, accessor_id, token_name, client, action, target, decision, status, params)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    &[
                        &opt_i64(Some(r.time_ms)),
                        &r.accessor_id,
                        &r.token_name,
                        &r.client,
                        &r.action,
                        &r.target,
                        &r.decision.as_str(),
                        &r.status.map(i64::from),
                        &params,
                    ],
                )
                .map_err(engine)?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn set_audit_outcome(&self, id: u64, status: u16) -> Result<(), StoreError> {
        self.with(|client| {
            let n = client
                .execute(
                    "UPDATE audit_log SET status = $2 WHERE id = $1",
                    &[&opt_i64(Some(id)), &i64::from(status)],
                )
                .map_err(engine)?;
            if n == 0 {
                return Err(StoreError::AuditEntryMissing(id));
            }
            Ok(())
        })
    }

    fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.with(|client| {
            client
                .query(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_log
                         WHERE ($1::BIGINT IS NULL OR time_ms >= $1) AND ($2::BIGINT IS NULL OR time_ms < $2)
                           AND ($3::TEXT IS NULL OR accessor_id = $3)
                           AND ($4::TEXT IS NULL OR substr(target, 1, length($4)) = $4)
                           AND ($5::TEXT IS NULL OR action = $5) AND ($6::BIGINT IS NULL OR id < $6)
                         ORDER BY id DESC LIMIT $7"
                    ),
                    &[
                        &opt_i64(f.since_ms),
                        &opt_i64(f.until_ms),
                        &f.accessor_id,
                        &f.target_prefix,
                        &f.action,
                        &opt_i64(f.before),
                        &opt_i64(Some(f.limit as u64)),
                    ],
                )
                .map_err(engine)?
                .iter()
                .map(read_audit)
                .collect()
        })
    }

    fn prune_audit(&self, older_than_ms: u64) -> Result<usize, StoreError> {
        self.with(|client| {
            let n = client
                .execute(
                    "DELETE FROM audit_log WHERE time_ms < $1",
                    &[&opt_i64(Some(older_than_ms))],
                )
                .map_err(engine)?;
            Ok(n as usize)
        })
    }
}

fn read_audit(row: &Row) -> Result<AuditEntry, StoreError> {
    AuditRow {
        id: row.get(0),
        time_ms: row.get(1),
        accessor_id: row.get(2),
        token_name: row.get(3),
        client: row.get(4),
        action: row.get(5),
        target: row.get(6),
        decision: row.get(7),
        status: row.get(8),
        params: row.get(9),
    }
    .decode()
}

fn insert_token(client: &mut impl GenericClient, t: &AclToken) -> Result<(), StoreError> {
    let policies = encode_policies(&t.policies)?;
    let result = client.execute(
        &format!("INSERT INTO acl_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
        &[
            &t.accessor_id,
            &t.secret_hash,
            &t.name,
            &policies,
            &(t.create_time_ms as i64),
            &t.expiration_time_ms.map(|v| v as i64),
        ],
    );
    match result {
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION) => {
            Err(StoreError::TokenExists(t.accessor_id.clone()))
        }
        other => other.map(|_| ()).map_err(engine),
    }
}

fn read_policy(row: &Row) -> Result<Policy, StoreError> {
    decode_policy(row.get::<_, &str>(0), row.get::<_, &str>(1))
}

fn read_token(row: &Row) -> Result<AclToken, StoreError> {
    TokenRow {
        accessor_id: row.get(0),
        secret_hash: row.get(1),
        name: row.get(2),
        policies: row.get(3),
        create_time_ms: row.get(4),
        expiration_time_ms: row.get(5),
    }
    .decode()
}

fn read_deployment(row: &Row) -> Result<Deployment, StoreError> {
    decode_deployment(row.get(0), row.get::<_, &str>(1))
}

#[cfg(test)]
mod tests;

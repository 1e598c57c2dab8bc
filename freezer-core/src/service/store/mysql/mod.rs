//! The MariaDB/MySQL store: the database of an OpenStack control plane, shared by several API
//! servers on several nodes (Galera in production).
//!
//! One InnoDB table holds every document (`freezer_documents`, see
//! `migrations/mysql/`); a versioned update is `UPDATE ... WHERE kind AND id AND version`, so
//! two servers racing on one document never lose a write: the second gets
//! [`StoreError::Conflict`]. Correctness never rests on `LOCK TABLES` or `GET_LOCK` (neither
//! spans a Galera cluster): the advisory lock only keeps two servers starting together from
//! running the (idempotent) migrations at the same time.
//!
//! Never: a password in an error, a log line or `Debug` output (the store names its database
//! by a URL without the password); a statement's values in an error.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, DriverError, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

mod url;

use super::{Doc, Kind, Revocation, Scope, Store, StoreError};
use url::{describe, mask_url, own_params};

/// One attempt of a statement on a connection.
type ConnFuture<'c, T> = futures::future::BoxFuture<'c, Result<T, mysql_async::Error>>;

/// The migrations, oldest first: (version, name, statements separated by `;` at a line end).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "documents",
        include_str!("../migrations/mysql/0001_documents.sql"),
    ),
    (
        2,
        "token_revocations",
        include_str!("../migrations/mysql/0002_token_revocations.sql"),
    ),
];

/// The schema version this code writes and understands.
pub const MYSQL_SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// The longest id and project id the table keeps (`VARCHAR(255)`), in characters.
const MAX_ID_CHARS: usize = 255;

/// How long a server starting waits for another one migrating the same database.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(60);

/// MySQL error codes the store acts on.
mod code {
    /// ER_DUP_ENTRY: a unique key already holds the value.
    pub const DUP_ENTRY: u16 = 1062;
    /// ER_LOCK_DEADLOCK: also what Galera answers when a concurrent write on another node won.
    pub const DEADLOCK: u16 = 1213;
    /// ER_LOCK_WAIT_TIMEOUT.
    pub const LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// ER_SERVER_SHUTDOWN: the server is going down.
    pub const SERVER_SHUTDOWN: u16 = 1053;
    /// ER_CONNECTION_KILLED.
    pub const CONNECTION_KILLED: u16 = 1927;
    /// CR_SERVER_GONE_ERROR and CR_SERVER_LOST (client-side codes some paths report).
    pub const SERVER_GONE: u16 = 2006;
    pub const SERVER_LOST: u16 = 2013;
}

/// Documents in a MariaDB or MySQL database, through a pool of connections.
///
/// ```no_run
/// # async fn f() -> Result<(), freezer_core::service::store::StoreError> {
/// use freezer_core::service::store::MySqlStore;
/// let store = MySqlStore::connect("mysql://freezer:secret@db.example:3306/freezer").await?;
/// # Ok(()) }
/// ```
pub struct MySqlStore {
    pool: Pool,
    /// The options the pool connects with, for a fresh connection outside it.
    opts: Opts,
    /// The database, named without its password: `mysql://user@host:port/db`.
    target: String,
}

impl fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlStore")
            .field("database", &self.target)
            .finish_non_exhaustive()
    }
}

impl MySqlStore {
    /// Connects to `url` (`mysql://user:password@host:port/database` or `mariadb://...`),
    /// creates or upgrades the schema, and returns the store. A database whose schema is newer
    /// than this code, or that holds upstream freezer-api's tables, is refused.
    ///
    /// Parameters after `?`: TLS with `require_ssl=true` (then `verify_ca=false`,
    /// `verify_identity=false`, `built_in_roots=false`, and `ssl_ca=PATH` for a CA file of
    /// our own); `socket=PATH` for a Unix socket; `pool_min=N`, `pool_max=N` (default 1 and 32).
    pub async fn connect(url: &str) -> Result<MySqlStore, StoreError> {
        MySqlStore::connect_with_password(url, None).await
    }

    /// [`MySqlStore::connect`], with `password` (when given) replacing the URL's, so a caller
    /// can keep it out of the URL, a process list and logs.
    pub async fn connect_with_password(
        url: &str,
        password: Option<&str>,
    ) -> Result<MySqlStore, StoreError> {
        let (url, ssl_ca) = own_params(url);
        let parsed = Opts::from_url(&url).map_err(|e| {
            StoreError::Backend(format!("{}: not a valid MySQL URL: {e}", mask_url(&url)))
        })?;
        let target = describe(&parsed);
        let Some(db) = parsed.db_name().map(str::to_string) else {
            return Err(StoreError::Backend(format!(
                "{target}: the URL names no database (mysql://user@host:port/DATABASE)"
            )));
        };
        let constraints = if url.contains("pool_min=") || url.contains("pool_max=") {
            parsed.pool_opts().constraints()
        } else {
            PoolConstraints::new(1, 32).unwrap_or_default()
        };
        let builder_ssl = parsed.ssl_opts().cloned();
        let mut builder = OptsBuilder::from_opts(parsed)
            .pool_opts(
                // No reset when a connection goes back to the pool: the store leaves no
                // session state (each write is one autocommitted statement).
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_reset_connection(false),
            )
            .setup(vec![
                "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
                "SET time_zone = '+00:00'",
                "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO'",
            ]);
        if let Some(p) = password {
            builder = builder.pass(Some(p));
        }
        if let Some(ca) = ssl_ca {
            let ssl = builder_ssl.unwrap_or_default();
            builder =
                builder.ssl_opts(ssl.with_root_certs(vec![std::path::PathBuf::from(ca).into()]));
        }
        let opts = Opts::from(builder);
        let pool = Pool::new(opts.clone());
        let store = MySqlStore { pool, opts, target };
        let mut conn = store.pool.get_conn().await.map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to {}: {}",
                store.target,
                detail(&e)
            ))
        })?;
        store.migrate(&mut conn, &db).await?;
        Ok(store)
    }

    /// The database, named without its password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Creates or upgrades the schema under an advisory lock, so two servers starting
    /// together do not race (the migrations are idempotent besides, for a cluster where the
    /// lock is node-local).
    async fn migrate(&self, conn: &mut Conn, db: &str) -> Result<(), StoreError> {
        // Lock names are server-wide and at most 64 characters.
        let mut lock = format!("freezer-schema:{db}");
        while lock.len() > 64 {
            lock.pop();
        }
        let got: Result<Option<Option<i64>>, _> = conn
            .exec_first(
                "SELECT GET_LOCK(?, ?)",
                (&lock, MIGRATION_LOCK_WAIT.as_secs()),
            )
            .await;
        let locked = match got {
            Ok(Some(Some(1))) => true,
            Ok(Some(Some(0))) => {
                return Err(StoreError::Backend(format!(
                    "{}: another server has been upgrading the schema for {} s (the lock {lock} is held)",
                    self.target,
                    MIGRATION_LOCK_WAIT.as_secs()
                )));
            }
            Ok(_) | Err(mysql_async::Error::Server(_)) => {
                tracing::warn!(database = %self.target, "no advisory lock for the schema upgrade; relying on idempotent migrations");
                false
            }
            Err(e) => return Err(self.fail("lock the schema of", &e)),
        };
        let result = self.apply_migrations(conn).await;
        if locked {
            let _ = conn.exec_drop("DO RELEASE_LOCK(?)", (&lock,)).await;
        }
        result
    }

    async fn apply_migrations(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let fail = |e: mysql_async::Error| self.fail("upgrade the schema of", &e);
        let upstream: Option<i64> = conn
            .query_first(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = 'alembic_version'",
            )
            .await
            .map_err(fail)?;
        if upstream.unwrap_or(0) > 0 {
            return Err(StoreError::Backend(format!(
                "{}: the database holds upstream freezer-api's tables (alembic_version); \
                 freezer-rs keeps its own schema and does not migrate upstream's: give it a database of its own",
                self.target
            )));
        }
        conn.query_drop(
            "CREATE TABLE IF NOT EXISTS freezer_schema_migrations (\
               version INT UNSIGNED NOT NULL PRIMARY KEY,\
               name VARCHAR(255) NOT NULL,\
               applied_at DATETIME(6) NOT NULL\
             ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        )
        .await
        .map_err(fail)?;
        let current: Option<u32> = conn
            .query_first("SELECT COALESCE(MAX(version), 0) FROM freezer_schema_migrations")
            .await
            .map_err(fail)?;
        let current = current.unwrap_or(0);
        if current > MYSQL_SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "{}: the database's schema is version {current}, newer than this freezer-rs knows \
                 (version {MYSQL_SCHEMA_VERSION}); a newer freezer-rs upgraded it: run that version",
                self.target
            )));
        }
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            for statement in statements(sql) {
                conn.query_drop(statement).await.map_err(fail)?;
            }
            conn.exec_drop(
                "INSERT IGNORE INTO freezer_schema_migrations (version, name, applied_at) \
                 VALUES (?, ?, UTC_TIMESTAMP(6))",
                (version, name),
            )
            .await
            .map_err(fail)?;
            tracing::info!(database = %self.target, version, name, "applied a schema migration");
        }
        Ok(())
    }

    /// A backend error naming the operation and the database, never a password or a value.
    fn fail(&self, op: &str, e: &mysql_async::Error) -> StoreError {
        StoreError::Backend(format!("{op} {}: {}", self.target, detail(e)))
    }

    /// Runs `run` on a pooled connection. A transient failure (the server restarted, the
    /// connection dropped or went stale in the pool) is tried once more on a fresh
    /// connection; the `bool` says whether it was. A write tried twice may have committed the
    /// first time: its caller checks what is stored (versioned writes never apply twice).
    async fn run<T, F>(&self, op: &str, run: F) -> Result<(T, bool), StoreError>
    where
        F: for<'c> Fn(&'c mut Conn) -> ConnFuture<'c, T>,
    {
        let first = match self.pool.get_conn().await {
            Ok(mut conn) => run(&mut conn).await,
            Err(e) => Err(e),
        };
        match first {
            Ok(v) => Ok((v, false)),
            Err(e) if transient(&e) => {
                tracing::debug!(database = %self.target, op, error = %detail(&e), "trying again on a fresh connection");
                let mut conn = self.pool.get_conn().await.map_err(|e| self.fail(op, &e))?;
                if conn.ping().await.is_err() {
                    // The pool still held broken connections: one of our own, outside it.
                    drop(conn);
                    let mut fresh = Conn::new(self.opts.clone())
                        .await
                        .map_err(|e| self.fail(op, &e))?;
                    let r = run(&mut fresh).await.map_err(|e| self.fail(op, &e));
                    let _ = fresh.disconnect().await;
                    return r.map(|v| (v, true));
                }
                run(&mut conn)
                    .await
                    .map(|v| (v, true))
                    .map_err(|e| self.fail(op, &e))
            }
            Err(e) => Err(self.fail(op, &e)),
        }
    }

    /// A document's project, version and body, whatever the scope.
    async fn row(&self, kind: Kind, id: &str) -> Result<Option<(String, i64, String)>, StoreError> {
        let (k, id2) = (kind.plural(), id.to_string());
        let op = format!("read {} {id} in", kind.plural());
        self.run(&op, move |c| {
            let id = id2.clone();
            Box::pin(async move {
                c.exec_first(
                    "SELECT project_id, version, body FROM freezer_documents WHERE kind = ? AND id = ?",
                    (k, id),
                )
                .await
            })
        })
        .await
        .map(|(r, _)| r)
    }

    /// Whether the stored document is `project`'s at `version` with `body` (a write that was
    /// tried twice finding its own first attempt).
    async fn holds(
        &self,
        kind: Kind,
        id: &str,
        project: &str,
        version: i64,
        body: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        Ok(match self.row(kind, id).await? {
            Some((p, v, b)) => {
                p == project
                    && v == version
                    && serde_json::from_str::<serde_json::Value>(&b).ok().as_ref() == Some(body)
            }
            None => false,
        })
    }

    fn doc(
        &self,
        kind: Kind,
        id: String,
        project_id: String,
        version: i64,
        body: &str,
    ) -> Result<Doc, StoreError> {
        let body = serde_json::from_str(body).map_err(|e| {
            StoreError::Backend(format!(
                "{} {id} in {}: the stored document is not JSON: {e}",
                kind.plural(),
                self.target
            ))
        })?;
        Ok(Doc {
            kind,
            id,
            project_id,
            version,
            body,
        })
    }
}

#[async_trait]
impl Store for MySqlStore {
    async fn get(&self, kind: Kind, scope: &Scope, id: &str) -> Result<Option<Doc>, StoreError> {
        match self.row(kind, id).await? {
            Some((project, version, body)) if scope.contains(&project) => Ok(Some(self.doc(
                kind,
                id.to_string(),
                project,
                version,
                &body,
            )?)),
            _ => Ok(None),
        }
    }

    async fn list(
        &self,
        kind: Kind,
        scope: &Scope,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Doc>, StoreError> {
        let op = format!("list {} in", kind.plural());
        let k = kind.plural();
        let (offset, limit) = (offset as u64, limit.map_or(u64::MAX, |l| l as u64));
        let project = match scope {
            Scope::Project(p) => Some(p.clone()),
            Scope::All => None,
        };
        let (rows, _): (Vec<(String, String, i64, String)>, _) = self
            .run(&op, move |c| {
                let project = project.clone();
                Box::pin(async move {
                    match project {
                        Some(p) => {
                            c.exec(
                                "SELECT id, project_id, version, body FROM freezer_documents \
                                 WHERE kind = ? AND project_id = ? ORDER BY seq LIMIT ? OFFSET ?",
                                (k, p, limit, offset),
                            )
                            .await
                        }
                        None => {
                            c.exec(
                                "SELECT id, project_id, version, body FROM freezer_documents \
                                 WHERE kind = ? ORDER BY seq LIMIT ? OFFSET ?",
                                (k, limit, offset),
                            )
                            .await
                        }
                    }
                })
            })
            .await?;
        rows.into_iter()
            .map(|(id, project, version, body)| self.doc(kind, id, project, version, &body))
            .collect()
    }

    async fn insert(
        &self,
        kind: Kind,
        project_id: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Doc, StoreError> {
        let op = format!("insert {} {id} in", kind.plural());
        check_len(kind, "id", id)?;
        check_len(kind, "project id", project_id)?;
        let text = to_text(kind, id, body)?;
        let (k, id2, project2) = (kind.plural(), id.to_string(), project_id.to_string());
        let result = self
            .run(&op, move |c| {
                let (id, project, text) = (id2.clone(), project2.clone(), text.clone());
                Box::pin(async move {
                    let r = c
                        .exec_drop(
                            "INSERT INTO freezer_documents (kind, id, project_id, version, body, created_at, updated_at) \
                             VALUES (?, ?, ?, 1, ?, UTC_TIMESTAMP(6), UTC_TIMESTAMP(6))",
                            (k, id, project, text),
                        )
                        .await;
                    match r {
                        Ok(()) => Ok(true),
                        Err(mysql_async::Error::Server(e)) if e.code == code::DUP_ENTRY => Ok(false),
                        // Galera: a concurrent insert of the same id on another node won
                        // certification; the caller looks at what is stored.
                        Err(mysql_async::Error::Server(e)) if e.code == code::DEADLOCK => Ok(false),
                        Err(e) => Err(e),
                    }
                })
            })
            .await?;
        let doc = Doc {
            kind,
            id: id.to_string(),
            project_id: project_id.to_string(),
            version: 1,
            body: body.clone(),
        };
        match result {
            (true, _) => Ok(doc),
            // Tried twice: the duplicate may be our own first attempt.
            (false, true) if self.holds(kind, id, project_id, 1, body).await? => Ok(doc),
            (false, _) if self.row(kind, id).await?.is_some() => {
                Err(StoreError::Exists(kind, id.to_string()))
            }
            (false, _) => Err(StoreError::Backend(format!(
                "{op} {}: the insert was refused by a concurrent write; try again",
                self.target
            ))),
        }
    }

    async fn update(
        &self,
        kind: Kind,
        scope: &Scope,
        id: &str,
        expected: i64,
        body: &serde_json::Value,
    ) -> Result<Doc, StoreError> {
        let op = format!("update {} {id} in", kind.plural());
        let not_found = || StoreError::NotFound(kind, id.to_string());
        let project = match scope {
            Scope::Project(p) => p.clone(),
            // An admin's update: the project is read first (it never changes), so the
            // document returned names it.
            Scope::All => self.row(kind, id).await?.ok_or_else(not_found)?.0,
        };
        let text = to_text(kind, id, body)?;
        let (k, id2, project2) = (kind.plural(), id.to_string(), project.clone());
        let (changed, retried) = self
            .run(&op, move |c| {
                let (id, project, text) = (id2.clone(), project2.clone(), text.clone());
                Box::pin(async move {
                    let r = c
                        .exec_drop(
                            "UPDATE freezer_documents SET body = ?, version = version + 1, \
                             updated_at = UTC_TIMESTAMP(6) \
                             WHERE kind = ? AND id = ? AND project_id = ? AND version = ?",
                            (text, k, id, project, expected),
                        )
                        .await;
                    match r {
                        Ok(()) => Ok(c.affected_rows() == 1),
                        // Galera's certification failure: another node's write to the row won.
                        Err(mysql_async::Error::Server(e))
                            if e.code == code::DEADLOCK || e.code == code::LOCK_WAIT_TIMEOUT =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(e),
                    }
                })
            })
            .await?;
        let doc = Doc {
            kind,
            id: id.to_string(),
            project_id: project.clone(),
            version: expected + 1,
            body: body.clone(),
        };
        if changed || (retried && self.holds(kind, id, &project, expected + 1, body).await?) {
            return Ok(doc);
        }
        match self.row(kind, id).await? {
            Some((p, current, _)) if p == project && scope.contains(&p) => {
                Err(StoreError::Conflict(kind, id.to_string(), current))
            }
            _ => Err(not_found()),
        }
    }

    async fn delete(&self, kind: Kind, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let op = format!("delete {} {id} in", kind.plural());
        let (k, id2) = (kind.plural(), id.to_string());
        let project = match scope {
            Scope::Project(p) => Some(p.clone()),
            Scope::All => None,
        };
        let (deleted, _) = self
            .run(&op, move |c| {
                let (id, project) = (id2.clone(), project.clone());
                Box::pin(async move {
                    match project {
                        Some(p) => {
                            c.exec_drop(
                                "DELETE FROM freezer_documents WHERE kind = ? AND id = ? AND project_id = ?",
                                (k, id, p),
                            )
                            .await?
                        }
                        None => {
                            c.exec_drop(
                                "DELETE FROM freezer_documents WHERE kind = ? AND id = ?",
                                (k, id),
                            )
                            .await?
                        }
                    }
                    Ok(c.affected_rows() > 0)
                })
            })
            .await?;
        Ok(deleted)
    }

    async fn revoke_token(&self, audit_id: &str, expires_at: i64) -> Result<(), StoreError> {
        if audit_id.is_empty() || audit_id.len() > 64 || !audit_id.is_ascii() {
            return Err(StoreError::Backend(format!(
                "record a token revocation in {}: an audit id is 1 to 64 ASCII characters",
                self.target
            )));
        }
        let id = audit_id.to_string();
        // Idempotent: a second attempt after a dropped connection writes the same row.
        self.run("record a token revocation in", move |c| {
            let id = id.clone();
            Box::pin(async move {
                c.exec_drop(
                    "INSERT INTO freezer_token_revocations (audit_id, expires_at, revoked_at) \
                     VALUES (?, ?, UNIX_TIMESTAMP()) \
                     ON DUPLICATE KEY UPDATE expires_at = GREATEST(expires_at, VALUES(expires_at)), \
                       revoked_at = VALUES(revoked_at)",
                    (id, expires_at),
                )
                .await
            })
        })
        .await
        .map(drop)
    }

    async fn revocations_since(&self, since: i64, now: i64) -> Result<Vec<Revocation>, StoreError> {
        let (rows, _): (Vec<(String, i64, i64)>, _) = self
            .run("read the token revocations of", move |c| {
                Box::pin(async move {
                    c.exec(
                        "SELECT audit_id, expires_at, revoked_at FROM freezer_token_revocations \
                         WHERE revoked_at >= ? AND expires_at > ? ORDER BY revoked_at",
                        (since, now),
                    )
                    .await
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(audit_id, expires_at, revoked_at)| Revocation {
                audit_id,
                expires_at,
                revoked_at,
            })
            .collect())
    }

    async fn prune_revocations(&self, before: i64) -> Result<u64, StoreError> {
        let (n, _) = self
            .run("prune the token revocations of", move |c| {
                Box::pin(async move {
                    c.exec_drop(
                        "DELETE FROM freezer_token_revocations WHERE expires_at < ?",
                        (before,),
                    )
                    .await?;
                    Ok(c.affected_rows())
                })
            })
            .await?;
        Ok(n)
    }
}

fn to_text(kind: Kind, id: &str, body: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(body).map_err(|e| {
        StoreError::Backend(format!(
            "{} {id}: cannot encode the document: {e}",
            kind.plural()
        ))
    })
}

fn check_len(kind: Kind, what: &str, value: &str) -> Result<(), StoreError> {
    let n = value.chars().count();
    if n > MAX_ID_CHARS {
        return Err(StoreError::Backend(format!(
            "{} {what} of {n} characters: the database keeps at most {MAX_ID_CHARS}",
            kind.plural()
        )));
    }
    Ok(())
}

/// Whether an error means the connection broke (worth one more try on a new one).
fn transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Io(_) => true,
        mysql_async::Error::Driver(d) => matches!(
            d,
            DriverError::ConnectionClosed | DriverError::PacketOutOfOrder
        ),
        mysql_async::Error::Server(s) => matches!(
            s.code,
            code::SERVER_SHUTDOWN | code::CONNECTION_KILLED | code::SERVER_GONE | code::SERVER_LOST
        ),
        mysql_async::Error::Other(_) | mysql_async::Error::Url(_) => false,
    }
}

/// An error's text without a statement's values (the driver's value and row conversion
/// errors carry them).
fn detail(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(s) => {
            format!("server error {} ({}): {}", s.code, s.state, s.message)
        }
        mysql_async::Error::Io(io) => format!("connection: {io}"),
        mysql_async::Error::Driver(DriverError::FromValue { .. } | DriverError::FromRow { .. }) => {
            "a stored value has an unexpected type".to_string()
        }
        mysql_async::Error::Driver(DriverError::Params(_)) => {
            "the statement's parameters do not match it".to_string()
        }
        mysql_async::Error::Driver(d) => d.to_string(),
        mysql_async::Error::Other(o) => o.to_string(),
        mysql_async::Error::Url(u) => u.to_string(),
    }
}

/// The statements of a migration file: split at `;` ending a line, comments dropped.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.trim_end();
        if line.trim_start().starts_with("--") || line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            let s = current.trim().trim_end_matches(';').to_string();
            out.push(s);
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_migrations_into_statements() {
        for (_, name, sql) in MIGRATIONS {
            let s = statements(sql);
            assert!(!s.is_empty(), "{name}");
            assert!(
                s.iter().all(|s| !s.contains("--") && !s.ends_with(';')),
                "{name}"
            );
        }
        assert_eq!(statements("A;\n-- c\nB\nC;\n"), vec!["A", "B\nC"]);
    }

    #[tokio::test]
    async fn an_invalid_url_is_refused_without_its_password() {
        let e = MySqlStore::connect("mysql://u:hunter2@[bad/db")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid MySQL URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = MySqlStore::connect("mariadb://u:hunter2@127.0.0.1:1/")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("names no database"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

//! The SQLite store: the embedded default, one file under the state folder.
//!
//! One table holds every document (`documents`, see `migrations/sqlite/`). rusqlite is
//! synchronous, so every statement runs on tokio's blocking pool, on one of a few connections
//! (WAL: readers never wait for the writer). A versioned update is one
//! `UPDATE ... WHERE kind AND id AND version` in an immediate transaction, so two requests (or
//! two processes on one file) racing on a document never lose a write: the second gets
//! [`StoreError::Conflict`].
//!
//! Never: a blocking call on the async runtime; a statement's values in an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Semaphore;

use super::{Doc, Kind, Revocation, Scope, Store, StoreError};

/// The migrations, oldest first: (version, name, SQL).
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "documents",
        include_str!("migrations/sqlite/0001_documents.sql"),
    ),
    (
        2,
        "token_revocations",
        include_str!("migrations/sqlite/0002_token_revocations.sql"),
    ),
];

/// The schema version this code writes and understands.
pub const SQLITE_SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// How long a statement waits for another connection's (or process's) write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections kept open on a file: enough for reads beside a write, few enough to keep
/// the blocking pool for other work.
const FILE_CONNECTIONS: usize = 4;

/// The time of a write, as stored (UTC, microseconds).
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Documents in a SQLite database file (or in memory, for tests).
///
/// ```no_run
/// # async fn f() -> Result<(), freezer_core::service::store::StoreError> {
/// use freezer_core::service::store::SqliteStore;
/// let store = SqliteStore::open(std::path::Path::new("/var/lib/freezer/api.sqlite")).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// Idle connections.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection that may be in use.
    permits: Arc<Semaphore>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("database", &self.inner.name())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn name(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => ":memory:".to_string(),
        }
    }

    /// A backend error naming the operation and the database.
    fn fail(&self, op: &str, e: &rusqlite::Error) -> StoreError {
        StoreError::Backend(format!("{op} {}: {}", self.name(), detail(e)))
    }

    /// An idle connection, or a new one on a file.
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(c);
        }
        match &self.path {
            Some(p) => connect(p),
            None => Err(StoreError::Backend(
                "the in-memory database was lost with its connection".to_string(),
            )),
        }
    }

    fn give_back(&self, conn: Connection) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }
}

/// Opens one connection to `path` and sets it up (busy timeout, foreign keys, WAL).
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let fail = |e: rusqlite::Error| {
        StoreError::Backend(format!("open {}: {}", path.display(), detail(&e)))
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(fail)?;
    setup(&conn).map_err(fail)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "open {}: the database cannot use write-ahead logging (journal mode {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(fail)?;
    Ok(conn)
}

fn setup(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates, readable by its owner only, with its parent folders) the database
    /// file at `path`, creates or upgrades its schema, and returns the store. A database whose
    /// schema is newer than this code is refused.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> Result<_, StoreError> {
            create_file(&path)?;
            let mut conn = connect(&path)?;
            migrate(&mut conn, &path.display().to_string())?;
            Ok((conn, path))
        })
        .await
        .map_err(|e| StoreError::Backend(format!("open the database: {e}")))??;
        let (conn, path) = conn;
        Ok(SqliteStore::with(Some(path), conn, FILE_CONNECTIONS))
    }

    /// A database in memory, gone when the store is dropped: for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let fail =
            |e: rusqlite::Error| StoreError::Backend(format!("open :memory:: {}", detail(&e)));
        let mut conn = Connection::open_in_memory().map_err(fail)?;
        setup(&conn).map_err(fail)?;
        migrate(&mut conn, ":memory:")?;
        Ok(SqliteStore::with(None, conn, 1))
    }

    fn with(path: Option<PathBuf>, conn: Connection, connections: usize) -> SqliteStore {
        SqliteStore {
            inner: Arc::new(Inner {
                path,
                idle: Mutex::new(vec![conn]),
                permits: Arc::new(Semaphore::new(connections)),
            }),
        }
    }

    /// The database file (`None` in memory).
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Runs `f` on a connection, on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("the database is closed".to_string()))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut conn = inner.take()?;
            let r = f(&inner, &mut conn);
            inner.give_back(conn);
            r
        })
        .await
        .map_err(|e| {
            StoreError::Backend(format!(
                "a database task of {} failed: {e}",
                self.inner.name()
            ))
        })?
    }
}

/// Creates the database file (mode 0600) and its parent folders if missing.
fn create_file(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Backend(format!("{what} {}: {e}", p.display()))
    };
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(parent)
            .map_err(|e| io("create the folder", parent, e))?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(|e| io("create", path, e))?;
    Ok(())
}

/// Creates or upgrades the schema in one immediate transaction (two processes opening one new
/// file take turns), refusing a schema newer than this code.
fn migrate(conn: &mut Connection, name: &str) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| {
        StoreError::Backend(format!("upgrade the schema of {name}: {}", detail(&e)))
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (\
           version INTEGER PRIMARY KEY NOT NULL,\
           name TEXT NOT NULL,\
           applied_at TEXT NOT NULL)",
    )
    .map_err(fail)?;
    let current: u32 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(fail)?;
    if current > SQLITE_SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "{name}: the database's schema is version {current}, newer than this freezer-rs \
             knows (version {SQLITE_SCHEMA_VERSION}); a newer freezer-rs upgraded it: run that version"
        )));
    }
    for &(version, migration, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.execute_batch(sql).map_err(fail)?;
        tx.execute(
            &format!(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, ?2, {NOW})"
            ),
            params![version, migration],
        )
        .map_err(fail)?;
        tracing::info!(database = %name, version, name = migration, "applied a schema migration");
    }
    tx.commit().map_err(fail)
}

/// An error's text (rusqlite's never holds a bound value).
fn detail(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(m)) => format!("{m} ({:?})", f.code),
        e => e.to_string(),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == ErrorCode::ConstraintViolation
            && (f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY))
}

fn parse(
    inner: &Inner,
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
            inner.name()
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

fn to_text(kind: Kind, id: &str, body: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(body).map_err(|e| {
        StoreError::Backend(format!(
            "{} {id}: cannot encode the document: {e}",
            kind.plural()
        ))
    })
}

/// The project a scope limits to (`None`: all), as a statement parameter.
fn scope_project(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Project(p) => Some(p.clone()),
        Scope::All => None,
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, kind: Kind, scope: &Scope, id: &str) -> Result<Option<Doc>, StoreError> {
        let (id, project) = (id.to_string(), scope_project(scope));
        self.run(move |inner, conn| {
            let op = format!("read {} {id} in", kind.plural());
            let row: Option<(String, i64, String)> = conn
                .prepare_cached(
                    "SELECT project_id, version, body FROM documents \
                     WHERE kind = ?1 AND id = ?2 AND (?3 IS NULL OR project_id = ?3)",
                )
                .and_then(|mut s| {
                    s.query_row(params![kind.plural(), id, project], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })
                    .optional()
                })
                .map_err(|e| inner.fail(&op, &e))?;
            row.map(|(p, v, b)| parse(inner, kind, id.clone(), p, v, &b))
                .transpose()
        })
        .await
    }

    async fn list(
        &self,
        kind: Kind,
        scope: &Scope,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Doc>, StoreError> {
        let project = scope_project(scope);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        self.run(move |inner, conn| {
            let op = format!("list {} in", kind.plural());
            let fail = |e: rusqlite::Error| inner.fail(&op, &e);
            let mut s = conn
                .prepare_cached(
                    "SELECT id, project_id, version, body FROM documents \
                     WHERE kind = ?1 AND (?2 IS NULL OR project_id = ?2) \
                     ORDER BY seq LIMIT ?3 OFFSET ?4",
                )
                .map_err(fail)?;
            let rows = s
                .query_map(params![kind.plural(), project, limit, offset], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .map_err(fail)?;
            let mut docs = Vec::new();
            for row in rows {
                let (id, p, v, b) = row.map_err(fail)?;
                docs.push(parse(inner, kind, id, p, v, &b)?);
            }
            Ok(docs)
        })
        .await
    }

    async fn insert(
        &self,
        kind: Kind,
        project_id: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Doc, StoreError> {
        let text = to_text(kind, id, body)?;
        let doc = Doc {
            kind,
            id: id.to_string(),
            project_id: project_id.to_string(),
            version: 1,
            body: body.clone(),
        };
        let (id, project) = (doc.id.clone(), doc.project_id.clone());
        self.run(move |inner, conn| {
            let r = conn
                .prepare_cached(&format!(
                    "INSERT INTO documents (kind, id, project_id, version, body, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, 1, ?4, {NOW}, {NOW})"
                ))
                .and_then(|mut s| s.execute(params![kind.plural(), id, project, text]));
            match r {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(StoreError::Exists(kind, id)),
                Err(e) => Err(inner.fail(&format!("insert {} {id} in", kind.plural()), &e)),
            }
        })
        .await?;
        Ok(doc)
    }

    async fn update(
        &self,
        kind: Kind,
        scope: &Scope,
        id: &str,
        expected: i64,
        body: &serde_json::Value,
    ) -> Result<Doc, StoreError> {
        let text = to_text(kind, id, body)?;
        let (id2, scope2) = (id.to_string(), scope.clone());
        let project = self
            .run(move |inner, conn| {
                let id = id2;
                let op = format!("update {} {id} in", kind.plural());
                let fail = |e: rusqlite::Error| inner.fail(&op, &e);
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(fail)?;
                let row: Option<(String, i64)> = tx
                    .prepare_cached(
                        "SELECT project_id, version FROM documents WHERE kind = ?1 AND id = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![kind.plural(), id], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(fail)?;
                let project = match row {
                    Some((p, _)) if !scope2.contains(&p) => {
                        return Err(StoreError::NotFound(kind, id));
                    }
                    None => return Err(StoreError::NotFound(kind, id)),
                    Some((_, current)) if current != expected => {
                        return Err(StoreError::Conflict(kind, id, current));
                    }
                    Some((p, _)) => p,
                };
                let changed = tx
                    .prepare_cached(&format!(
                        "UPDATE documents SET body = ?1, version = version + 1, updated_at = {NOW} \
                         WHERE kind = ?2 AND id = ?3 AND version = ?4"
                    ))
                    .and_then(|mut s| s.execute(params![text, kind.plural(), id, expected]))
                    .map_err(fail)?;
                if changed != 1 {
                    // Unreachable under the immediate transaction; never a silent success.
                    return Err(StoreError::Conflict(kind, id, expected));
                }
                tx.commit().map_err(fail)?;
                Ok(project)
            })
            .await?;
        Ok(Doc {
            kind,
            id: id.to_string(),
            project_id: project,
            version: expected + 1,
            body: body.clone(),
        })
    }

    async fn delete(&self, kind: Kind, scope: &Scope, id: &str) -> Result<bool, StoreError> {
        let (id, project) = (id.to_string(), scope_project(scope));
        self.run(move |inner, conn| {
            conn.prepare_cached(
                "DELETE FROM documents WHERE kind = ?1 AND id = ?2 AND (?3 IS NULL OR project_id = ?3)",
            )
            .and_then(|mut s| s.execute(params![kind.plural(), id, project]))
            .map(|n| n > 0)
            .map_err(|e| inner.fail(&format!("delete {} {id} in", kind.plural()), &e))
        })
        .await
    }

    async fn revoke_token(&self, audit_id: &str, expires_at: i64) -> Result<(), StoreError> {
        let audit_id = audit_id.to_string();
        self.run(move |inner, conn| {
            conn.prepare_cached(
                "INSERT INTO token_revocations (audit_id, expires_at, revoked_at) \
                 VALUES (?1, ?2, CAST(strftime('%s', 'now') AS INTEGER)) \
                 ON CONFLICT (audit_id) DO UPDATE SET \
                   expires_at = MAX(expires_at, excluded.expires_at), \
                   revoked_at = excluded.revoked_at",
            )
            .and_then(|mut s| s.execute(params![audit_id, expires_at]))
            .map(drop)
            .map_err(|e| inner.fail("record a token revocation in", &e))
        })
        .await
    }

    async fn revocations_since(&self, since: i64, now: i64) -> Result<Vec<Revocation>, StoreError> {
        self.run(move |inner, conn| {
            let fail = |e: rusqlite::Error| inner.fail("read the token revocations of", &e);
            let mut s = conn
                .prepare_cached(
                    "SELECT audit_id, expires_at, revoked_at FROM token_revocations \
                     WHERE revoked_at >= ?1 AND expires_at > ?2 ORDER BY revoked_at",
                )
                .map_err(fail)?;
            let rows = s
                .query_map(params![since, now], |r| {
                    Ok(Revocation {
                        audit_id: r.get(0)?,
                        expires_at: r.get(1)?,
                        revoked_at: r.get(2)?,
                    })
                })
                .map_err(fail)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fail)
        })
        .await
    }

    async fn prune_revocations(&self, before: i64) -> Result<u64, StoreError> {
        self.run(move |inner, conn| {
            conn.prepare_cached("DELETE FROM token_revocations WHERE expires_at < ?1")
                .and_then(|mut s| s.execute(params![before]))
                .map(|n| n as u64)
                .map_err(|e| inner.fail("prune the token revocations of", &e))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_tasks_incrementing_one_document_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = SqliteStore::open(&dir.path().join("a/b/api.sqlite"))
            .await
            .unwrap();
        let memory = SqliteStore::open_in_memory().unwrap();
        for store in [file, memory] {
            let scope = Scope::Project("p".into());
            store
                .insert(Kind::Job, "p", "j", &json!({"n": 0}))
                .await
                .unwrap();
            let tasks: Vec<_> = (0..50)
                .map(|_| {
                    let store = store.clone();
                    let scope = scope.clone();
                    tokio::spawn(async move {
                        let mut conflicts = 0;
                        loop {
                            let doc = store.get(Kind::Job, &scope, "j").await.unwrap().unwrap();
                            let n = doc.body["n"].as_i64().unwrap();
                            match store
                                .update(Kind::Job, &scope, "j", doc.version, &json!({"n": n + 1}))
                                .await
                            {
                                Ok(_) => return conflicts,
                                Err(StoreError::Conflict(..)) => conflicts += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            let doc = store.get(Kind::Job, &scope, "j").await.unwrap().unwrap();
            assert_eq!(doc.body["n"], 50, "{store:?}");
            assert_eq!(doc.version, 51, "{store:?}");
        }
    }

    #[tokio::test]
    async fn creates_the_file_for_its_owner_only_with_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/api.sqlite");
        let store = SqliteStore::open(&path).await.unwrap();
        store
            .insert(Kind::Client, "p", "c", &json!({}))
            .await
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(path.with_extension("sqlite-wal").exists());
        assert_eq!(store.path(), Some(path.as_path()));
        assert!(format!("{store:?}").contains("api.sqlite"));
        drop(store);
        // Reopened: the schema is there, nothing migrates twice.
        let store = SqliteStore::open(&path).await.unwrap();
        let scope = Scope::All;
        assert!(
            store
                .get(Kind::Client, &scope, "c")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn refuses_a_schema_newer_than_this_code() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sqlite");
        drop(SqliteStore::open(&path).await.unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, 'future', 'now')",
            [SQLITE_SCHEMA_VERSION + 7],
        )
        .unwrap();
        drop(conn);
        let e = SqliteStore::open(&path).await.unwrap_err().to_string();
        let newer = format!("version {}", SQLITE_SCHEMA_VERSION + 7);
        let ours = format!("version {SQLITE_SCHEMA_VERSION}");
        assert!(e.contains(&newer) && e.contains(&ours), "{e}");
    }

    #[tokio::test]
    async fn refuses_a_file_that_is_not_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "x".repeat(4096)).unwrap();
        let e = SqliteStore::open(&path).await.unwrap_err().to_string();
        assert!(e.contains("notes.txt"), "{e}");
    }
}

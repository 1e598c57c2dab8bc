//! The document store behind the API: versioned JSON documents by kind, project and id.
//!
//! freezer-api keeps five kinds of document (jobs, actions, sessions, clients, backups); the
//! standalone identity keeps its trusts here too, so API servers sharing a database share
//! them (a new kind needs no schema change: `kind` is a column of the one table). The
//! API's semantics (what a job create fills in, how a session starts) live above the store,
//! once, for every backend; a [`Store`] only keeps documents and refuses lost updates: every
//! write names the version it replaces, and a write over a newer version is a
//! [`StoreError::Conflict`], never a silent overwrite.

use std::sync::Arc;

use async_trait::async_trait;

mod mysql;
mod sqlite;
pub use mysql::{MYSQL_SCHEMA_VERSION, MySqlStore};
pub use sqlite::{SQLITE_SCHEMA_VERSION, SqliteStore};

/// The kinds of document freezer-api keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A job (`job_id`).
    Job,
    /// An action of the action library (`action_id`).
    Action,
    /// A session (`session_id`).
    Session,
    /// A registered client (`client_id`).
    Client,
    /// Backup metadata (`backup_id`).
    Backup,
    /// A trust of the standalone identity (`id`), which centralized schedulers act through.
    /// Not an API document: only the identity service reads and writes these.
    Trust,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Job,
        Kind::Action,
        Kind::Session,
        Kind::Client,
        Kind::Backup,
        Kind::Trust,
    ];

    /// The name used in the database and in URLs (`jobs`, `actions`...).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Action => "actions",
            Kind::Session => "sessions",
            Kind::Client => "clients",
            Kind::Backup => "backups",
            Kind::Trust => "trusts",
        }
    }
}

/// One stored document.
#[derive(Clone, Debug, PartialEq)]
pub struct Doc {
    /// Its kind.
    pub kind: Kind,
    /// Its id, unique within its kind across all projects.
    pub id: String,
    /// The project that owns it.
    pub project_id: String,
    /// The version stored: 1 when created, one more at every update.
    pub version: i64,
    /// The document as the API returns it.
    pub body: serde_json::Value,
}

/// Which documents a read may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One project's.
    Project(String),
    /// Every project's (an admin or service caller).
    All,
}

impl Scope {
    /// Whether a document of `project_id` is in the scope.
    pub fn contains(&self, project_id: &str) -> bool {
        match self {
            Scope::Project(p) => p == project_id,
            Scope::All => true,
        }
    }
}

/// A revoked token of the standalone identity, by its audit id (a token and the tokens
/// rescoped from it share one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The audit id of the revoked tokens.
    pub audit_id: String,
    /// The latest expiry of a token carrying it (seconds since the epoch): the revocation is
    /// needed until then.
    pub expires_at: i64,
    /// When it was written, by the database's clock (seconds since the epoch).
    pub revoked_at: i64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A document of that kind and id exists already (in any project).
    #[error("{kind} {id} already exists", kind = .0.plural(), id = .1)]
    Exists(Kind, String),
    /// The document is not there (or not in the scope).
    #[error("{kind} {id} not found", kind = .0.plural(), id = .1)]
    NotFound(Kind, String),
    /// The document changed since it was read: its version is now `current`.
    #[error("{kind} {id} was changed by another request (now version {current})", kind = .0.plural(), id = .1, current = .2)]
    Conflict(Kind, String, i64),
    /// The database failed; the text never holds a password or a statement's values.
    #[error("database: {0}")]
    Backend(String),
}

/// A versioned JSON document store. Implementations are safe under concurrent requests from
/// several tasks, and (for a server database) from several API processes sharing it.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Reads one document, if it exists in `scope`.
    async fn get(&self, kind: Kind, scope: &Scope, id: &str) -> Result<Option<Doc>, StoreError>;

    /// Lists the documents of `kind` in `scope`, oldest first (by creation), skipping `offset`
    /// and returning at most `limit` (all when `None`).
    async fn list(
        &self,
        kind: Kind,
        scope: &Scope,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Doc>, StoreError>;

    /// Stores a new document at version 1. A document of that kind and id in any project is
    /// [`StoreError::Exists`].
    async fn insert(
        &self,
        kind: Kind,
        project_id: &str,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<Doc, StoreError>;

    /// Replaces a document if its stored version is still `expected`, and returns it at its
    /// new version; [`StoreError::Conflict`] when another write came first,
    /// [`StoreError::NotFound`] when it is not in `scope`.
    async fn update(
        &self,
        kind: Kind,
        scope: &Scope,
        id: &str,
        expected: i64,
        body: &serde_json::Value,
    ) -> Result<Doc, StoreError>;

    /// Deletes a document in `scope`; whether there was one.
    async fn delete(&self, kind: Kind, scope: &Scope, id: &str) -> Result<bool, StoreError>;

    /// Records that the tokens carrying `audit_id` are revoked until `expires_at`, stamped
    /// with the database's clock. Recording it again keeps the later expiry and restamps it.
    async fn revoke_token(&self, audit_id: &str, expires_at: i64) -> Result<(), StoreError>;

    /// The revocations stamped at or after `since` (the database's clock) whose tokens have
    /// not expired at `now`.
    async fn revocations_since(&self, since: i64, now: i64) -> Result<Vec<Revocation>, StoreError>;

    /// Deletes the revocations of tokens expired before `before`; how many.
    async fn prune_revocations(&self, before: i64) -> Result<u64, StoreError>;
}

/// The database URL forms [`open`] accepts, for messages.
pub const DATABASE_URL_FORMS: &str = "sqlite:PATH, sqlite://PATH, sqlite::memory:, \
     mysql://USER:PASSWORD@HOST:PORT/DATABASE or mariadb://USER:PASSWORD@HOST:PORT/DATABASE";

/// Opens the store a database URL names, creating or upgrading its schema:
///
/// * `sqlite:PATH` or `sqlite://PATH` (`sqlite:///var/lib/freezer/api.sqlite` is absolute):
///   a SQLite file, created readable by its owner only; `sqlite::memory:` keeps it in memory.
/// * `mysql://USER:PASSWORD@HOST:PORT/DATABASE` or `mariadb://...`: a MariaDB or MySQL
///   database (see [`MySqlStore::connect`] for TLS and pool parameters).
///
/// An error never holds the URL's password.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let (scheme, rest) = url.split_once(':').unwrap_or(("", url));
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path == ":memory:" {
                return Ok(Arc::new(SqliteStore::open_in_memory()?));
            }
            if path.is_empty() {
                return Err(StoreError::Backend(format!(
                    "the database URL {url:?} names no file (use sqlite:PATH)"
                )));
            }
            Ok(Arc::new(
                SqliteStore::open(std::path::Path::new(path)).await?,
            ))
        }
        "mysql" | "mariadb" => Ok(Arc::new(MySqlStore::connect(url).await?)),
        "" => Err(StoreError::Backend(format!(
            "the database URL has no scheme; use one of: {DATABASE_URL_FORMS}"
        ))),
        other => Err(StoreError::Backend(format!(
            "the database URL scheme {other:?} is unknown; use one of: {DATABASE_URL_FORMS}"
        ))),
    }
}

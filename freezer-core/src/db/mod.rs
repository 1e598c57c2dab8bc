//! Database modes: `mysql` (MariaDB and MySQL), `postgres`, `mongo`.
//!
//! A database backup is a folder of streams ([`crate::source::stream::StreamSource::named`]): each file the stdout
//! of a dump tool (`mariadb-dump`, `mariadb-backup`, `pg_dump`, ...), cut, deduplicated and
//! encrypted as any file, and a backup fails, leaving no snapshot, when one tool fails. The
//! tools run without a shell, with the caller's restricted environment
//! ([`crate::job::RunContext::exec_env`]); a password never appears in their arguments or
//! environment: it is written to a client option file in a private folder ([`SecretDir`])
//! that lives as long as the backup or restore.
//!
//! A restore goes back into a server (or, for a physical copy, into an empty data folder):
//! each stream is fed to the matching client tool ([`crate::engine::restore_stream_entry`]).
//! A snapshot of a database can also be restored as files into a folder, or one stream to
//! stdout, as any snapshot.
//!
//! Each mode has its own module: the connection options (upstream's INI `mysql_conf`
//! `[default]` section, [`DbConf`]), the streams a backup runs, and the steps of a restore.

pub mod mongo;
pub mod mysql;
pub mod postgres;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::RestoreResult;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::job::RunContext;
use crate::job::{FreezerAction, SourceMode};
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::source::Source;

/// The options of the database modes, by their job-document names (upstream's `mysql_conf`;
/// the others are this release's).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DbOptions {
    /// Mode `mysql`: an INI file whose `[default]` (or `[client]`) section names the server
    /// (`host`, `port`, `user`, `password`, `socket`); see [`DbConf`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_conf: Option<String>,
    /// Mode `mysql`: `logical` (default: `mariadb-dump`/`mysqldump`) or `physical`
    /// (`mariadb-backup`/`xtrabackup`, streamed as xbstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql_method: Option<String>,
    /// Mode `postgres`: an INI file as `mysql_conf` (`host`, `port`, `user`, `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_conf: Option<String>,
    /// Mode `postgres`: `logical` (default: `pg_dump -Fc` per database and the globals) or
    /// `physical` (`pg_basebackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_method: Option<String>,
    /// Mode `mongo`: an INI file as `mysql_conf` (`host`, default `localhost`; `port`,
    /// default 27017; `user`, `password`; `auth_source`, `tls`, `tls_ca_file`, `timeout`).
    /// Without it, `localhost:27017` without credentials (upstream: this host's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mongo_conf: Option<String>,
    /// `restore` of a physical database backup: the empty data folder it is unpacked,
    /// prepared and placed into (the server stopped); files get the folder's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_datadir: Option<String>,
}

/// Checks a backup's options for a database mode, before anything runs.
pub fn validate_backup(mode: SourceMode, action: &FreezerAction) -> Result<()> {
    match mode {
        SourceMode::Mysql => mysql::validate_backup(action),
        SourceMode::Postgres => postgres::validate_backup(action),
        SourceMode::Mongo => mongo::validate_backup(action),
        _ => Ok(()),
    }
}

/// Checks a restore's options for a database mode, before anything runs.
pub fn validate_restore(mode: SourceMode, action: &FreezerAction) -> Result<()> {
    match mode {
        SourceMode::Mysql => mysql::validate_restore(action),
        SourceMode::Postgres => postgres::validate_restore(action),
        SourceMode::Mongo => mongo::validate_restore(action),
        _ => Ok(()),
    }
}

/// The source of a database backup (mode `mongo` talks to its server first: the primary
/// check and the list of collections).
pub async fn backup_source(
    mode: SourceMode,
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<Arc<dyn Source>> {
    match mode {
        SourceMode::Mysql => mysql::backup_source(action, ctx),
        SourceMode::Postgres => postgres::backup_source(action, ctx),
        SourceMode::Mongo => mongo::backup_source(action, ctx).await,
        m => Err(Error::unsupported(format!("{m:?} is not a database mode"))),
    }
}

/// Restores snapshot `id` of a database mode into the server (or data folder) `action`
/// names. The caller holds the repository's read lock and has loaded its index.
pub async fn restore(
    mode: SourceMode,
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    if snapshot.mode != action.mode().trim() {
        return Err(Error::bad_input(
            "mode",
            format!(
                "snapshot {} is a backup of mode {}, not {}",
                id.short(),
                snapshot.mode,
                action.mode()
            ),
        ));
    }
    match mode {
        SourceMode::Mysql => mysql::restore(repo, id, snapshot, action, ctx).await,
        SourceMode::Postgres => postgres::restore(repo, id, snapshot, action, ctx).await,
        SourceMode::Mongo => mongo::restore(repo, id, snapshot, action, ctx).await,
        m => Err(Error::unsupported(format!("{m:?} is not a database mode"))),
    }
}

/// The streams of a database snapshot, name and size: the files of the one folder at its
/// top (named after its mode). Anything else is corrupt, said of the snapshot.
pub(crate) async fn snapshot_streams(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
) -> Result<Vec<(String, u64)>> {
    let what = format!("snapshot {}", id.short());
    let reader = repo.reader();
    let top = reader
        .read_tree(&snapshot.tree)
        .await
        .map_err(|e| e.context(&what))?;
    let subtree = match top.nodes.as_slice() {
        [d] if d.kind() == crate::repo::tree::NodeKind::Dir => d.subtree,
        _ => None,
    }
    .ok_or_else(|| {
        Error::corrupt(
            &what,
            format!("it holds no folder of {} streams", snapshot.mode),
        )
    })?;
    let dir = reader
        .read_tree(&subtree)
        .await
        .map_err(|e| e.context(&what))?;
    dir.nodes
        .iter()
        .filter(|n| n.kind() == crate::repo::tree::NodeKind::File)
        .map(|n| {
            String::from_utf8(n.name.clone())
                .map(|name| (name, n.size))
                .map_err(|_| {
                    Error::corrupt(&what, format!("stream {} is no UTF-8 name", n.name_lossy()))
                })
        })
        .collect()
}

/// Connection options from an INI file's `[default]` section (upstream's `mysql_conf`:
/// `host`, `port`, `user`, `password`, `socket`); other keys are kept in `other`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DbConf {
    /// Server host name or address.
    pub host: Option<String>,
    /// TCP port.
    pub port: Option<u16>,
    /// User name.
    pub user: Option<String>,
    /// Password (never shown by `Debug`).
    pub password: Option<String>,
    /// A Unix socket path.
    pub socket: Option<String>,
    /// Every other key of the section, lower-cased.
    pub other: BTreeMap<String, String>,
}

impl std::fmt::Debug for DbConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConf")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("socket", &self.socket)
            .field("other", &self.other.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DbConf {
    /// Reads `path`, named `field` in errors (`mysql_conf`). Its `[default]` section (or, as
    /// MySQL's own option files, `[client]`) holds the options; a file that cannot be read,
    /// is not INI, or has neither section is an error naming `field` and the file.
    pub fn read(path: &Path, field: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::bad_input(field, format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| Error::bad_input(field, format!("{}: {e}", path.display())))
    }

    /// Parses the text of an INI file (see [`DbConf::read`]); the error says what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        // Values are taken as written, as upstream's configparser reads them: a backslash in
        // a password is a backslash, not an escape.
        let opts = ini::ParseOption {
            enabled_escape: false,
            ..Default::default()
        };
        let ini = ini::Ini::load_from_str_opt(text, opts)
            .map_err(|e| format!("not an INI file ({e})"))?;
        let section = ini
            .section(Some("default"))
            .or_else(|| ini.section(Some("client")))
            .ok_or("it has no [default] section")?;
        let mut conf = DbConf::default();
        for (k, v) in section.iter() {
            let v = v.trim().trim_matches('"').to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "host" => conf.host = Some(v),
                "port" => {
                    conf.port = Some(
                        v.parse()
                            .map_err(|_| format!("port {v:?} is not a port number"))?,
                    )
                }
                "user" | "username" => conf.user = Some(v),
                "password" | "passwd" => conf.password = Some(v),
                "socket" => conf.socket = Some(v),
                other => {
                    conf.other.insert(other.to_string(), v);
                }
            }
        }
        Ok(conf)
    }
}

/// A private folder (mode 0700) for files that hold a secret (a client's password file),
/// removed when dropped.
#[derive(Debug)]
pub struct SecretDir {
    dir: tempfile::TempDir,
}

impl SecretDir {
    /// Makes one in the system's temporary folder.
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("freezer-db-")
            .tempdir()
            .map_err(|e| Error::io("a private temporary folder", e))?;
        // tempfile makes it 0700 already; say so rather than trust it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| Error::io("a private temporary folder", e))?;
        Ok(SecretDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `content` to a new file `name` (mode 0600) in the folder; returns its path.
    pub fn write(&self, name: &str, content: &[u8]) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("{}", path.display()), e))?;
        f.write_all(content)
            .map_err(|e| Error::io(format!("{}", path.display()), e))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_reads_upstreams_ini_and_hides_the_password() {
        let c = DbConf::parse(
            "[default]\nhost = 127.0.0.1\nport=3307\nuser=root\npassword=s3cret\nsocket=/run/x.sock\n",
        )
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.port, Some(3307));
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = DbConf::parse("[default]\npassword=a\\nb\\tc\\\\d;e#f\n").unwrap();
        assert_eq!(
            c.password.as_deref(),
            Some("a\\nb\\tc\\\\d;e#f"),
            "taken as written"
        );
        assert!(
            DbConf::parse("[other]\nhost=x\n")
                .unwrap_err()
                .contains("[default]")
        );
        assert!(
            DbConf::parse("[default]\nport=many\n")
                .unwrap_err()
                .contains("many")
        );
        let e = DbConf::read(Path::new("/nonexistent/my.cnf"), "mysql_conf").unwrap_err();
        assert!(e.to_string().contains("mysql_conf"), "{e}");
    }

    #[test]
    fn secret_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = SecretDir::new().unwrap();
        let p = d.write("my.cnf", b"[client]\npassword=x\n").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(d.path()), 0o700);
        assert_eq!(mode(&p), 0o600);
        assert!(d.write("my.cnf", b"again").is_err(), "never overwritten");
        let dir = d.path().to_path_buf();
        drop(d);
        assert!(!dir.exists());
    }
}

//! Mode `postgres`: a PostgreSQL server, backed up one of two ways, the operator's choice
//! (`postgres_method`).
//!
//! - `logical` (the default): the cluster's roles and tablespaces (`pg_dumpall
//!   --globals-only`, stream `globals.sql`) and each database that accepts connections
//!   (`pg_dump -Fc -Z 0`, stream `db-<name>.dump`, the name percent-encoded: see
//!   [`stream_name`]). Each dump is consistent within its database (one repeatable-read
//!   snapshot); databases are dumped one after another, each at its own point in time. The
//!   dumps are uncompressed so that the repository deduplicates and compresses them.
//! - `physical`: `pg_basebackup -D - -Ft -X fetch` (stream `base.tar`): the whole data folder
//!   and the WAL written while it was copied, one tar, consistent once recovered.
//!
//! The connection comes from `postgres_conf`, an INI file as upstream's `mysql_conf`
//! (`[default]` `host`, `port`, `user`, `password`, `socket`; also `dbname` (the maintenance
//! database, default `postgres`), `databases` (a comma-separated selection, default all),
//! `bindir` (where the client programs are), `sslmode`, `connect_timeout`). The password goes
//! to a `PGPASSFILE` (0600, in a private folder): the programs get only its path in their
//! environment, never the password in their arguments or environment.
//!
//! A restore infers the method from the snapshot's files. A logical one goes into a server:
//! the globals first (a role that exists is kept as it is unless `overwrite`), then each
//! database: created from the dump when absent (`pg_restore --create`), restored into it
//! when it exists and holds no table (a fresh server's `postgres`), refused when it holds
//! data unless `overwrite` (then `pg_restore --clean --if-exists --single-transaction`).
//! Every refusal comes before anything is written. A physical one is unpacked into
//! `restore_datadir` (absent or empty), owned by that folder's owner, mode 0700; the
//! operator then starts PostgreSQL on it, which replays the WAL it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{DbConf, SecretDir};
use crate::engine::StreamTarget;
use crate::engine::{NoProgress, Progress, RestoreResult, restore_stream_entry};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::job::FreezerAction;
use crate::job::RunContext;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::source::stream::{NamedStream, StreamCommand, StreamSource};
use crate::source::{ContentReader, Listing, Source, SourceEntry, SourceInfo};

/// The Debian package that has the client programs.
pub const CLIENT_PACKAGE: &str = "postgresql-client";
/// The stream of the cluster's roles and tablespaces.
pub const GLOBALS: &str = "globals.sql";
/// The stream of a physical backup.
pub const BASE_TAR: &str = "base.tar";
/// Where Debian and Ubuntu install each PostgreSQL version's programs (`<root>/<version>/bin`).
pub const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// How a backup is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `pg_dumpall --globals-only` and `pg_dump -Fc` per database.
    Logical,
    /// `pg_basebackup`.
    Physical,
}

fn method(action: &FreezerAction) -> Result<Method> {
    match action
        .db
        .postgres_method
        .as_deref()
        .map(str::trim)
        .unwrap_or("")
    {
        "" | "logical" => Ok(Method::Logical),
        "physical" => Ok(Method::Physical),
        other => Err(Error::bad_input(
            "postgres_method",
            format!("{other:?}: use logical or physical"),
        )),
    }
}

fn read_conf(action: &FreezerAction) -> Result<DbConf> {
    let path = action
        .db
        .postgres_conf
        .as_deref()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            Error::bad_input(
                "postgres_conf",
                "mode postgres needs postgres_conf: an INI file with a [default] section (host, port, user, password)",
            )
        })?;
    let conf = DbConf::read(Path::new(path), "postgres_conf")?;
    if conf
        .password
        .as_deref()
        .is_some_and(|p| p.contains(['\n', '\r', '\0']))
    {
        return Err(Error::bad_input(
            "postgres_conf",
            format!("{path}: the password holds a line break"),
        ));
    }
    Ok(conf)
}

/// Checks a backup's options.
pub fn validate_backup(action: &FreezerAction) -> Result<()> {
    method(action)?;
    read_conf(action)?;
    Ok(())
}

/// Checks a restore's options: into a server it needs `postgres_conf`; a physical one
/// (`postgres_method` physical) needs `restore_datadir`.
pub fn validate_restore(action: &FreezerAction) -> Result<()> {
    let m = method(action)?;
    if action.restores_a_stream()
        || action
            .restore_abs_path
            .as_deref()
            .is_some_and(|p| !p.is_empty())
    {
        return Ok(());
    }
    let datadir = action
        .db
        .restore_datadir
        .as_deref()
        .filter(|d| !d.trim().is_empty());
    match (m, datadir) {
        (Method::Physical, None) => Err(Error::bad_input(
            "restore_datadir",
            "a physical postgres restore needs restore_datadir: an empty (or absent) folder for the data",
        )),
        (_, Some(_)) => Ok(()),
        (Method::Logical, None) => read_conf(action).map(|_| ()),
    }
}

/// Percent-encodes a database name into a stream name, `db-<name>.dump`: every byte but
/// ASCII letters, digits, `_` and `-` becomes `%XX`, so any name (with `/`, spaces, dots,
/// unicode) gives one path component, and [`database_of`] gives the name back.
pub fn stream_name(database: &str) -> String {
    let mut s = String::from("db-");
    for b in database.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s.push_str(".dump");
    s
}

/// The database name of a stream named by [`stream_name`]; `None` for another name.
pub fn database_of(stream: &str) -> Option<String> {
    let enc = stream.strip_prefix("db-")?.strip_suffix(".dump")?;
    let mut out = Vec::new();
    let b = enc.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = enc.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A libpq connection string naming database `name` (quoted, so a name holding `=` or
/// looking like a URI is only a name).
fn dbname_conninfo(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

/// Finds program `name`: in `bindir` only when given; else in the `PATH` of `env`, then in
/// the newest `<fallback_root>/<version>/bin` (Debian's layout). Not found: an error naming
/// the program and the package that has it.
pub fn find_program(
    name: &str,
    env: &BTreeMap<String, String>,
    bindir: Option<&str>,
    fallback_root: Option<&Path>,
) -> Result<PathBuf> {
    let runnable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(dir) = bindir {
        let p = Path::new(dir).join(name);
        if runnable(&p) {
            return Ok(p);
        }
        return Err(Error::not_found(format!(
            "{name} in {dir} (postgres_conf bindir): install the PostgreSQL client programs (Debian package {CLIENT_PACKAGE})"
        )));
    }
    if let Some(path) = env.get("PATH") {
        for dir in std::env::split_paths(path) {
            let p = dir.join(name);
            if dir.is_absolute() && runnable(&p) {
                return Ok(p);
            }
        }
    }
    let mut looked = String::from("PATH");
    if let Some(root) = fallback_root {
        looked.push_str(&format!(" and {}/*/bin", root.display()));
        let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().to_string();
                let key: Option<Vec<u64>> = v.split('.').map(|p| p.parse().ok()).collect();
                Some((key?, e.path().join("bin").join(name)))
            })
            .collect();
        versions.sort();
        if let Some((_, p)) = versions.into_iter().rev().find(|(_, p)| runnable(p)) {
            return Ok(p);
        }
    }
    Err(Error::not_found(format!(
        "{name} (looked in {looked}): install the PostgreSQL client programs (Debian package {CLIENT_PACKAGE})"
    )))
}

/// How the client programs reach the server: their environment (`PGHOST`, `PGPORT`,
/// `PGUSER`, `PGPASSFILE`...) and where they are.
struct Client {
    env: BTreeMap<String, String>,
    bindir: Option<String>,
    maintenance_db: String,
    selection: Option<Vec<String>>,
    /// The server, for errors (`host:port as user`).
    target: String,
    secret: Arc<SecretDir>,
}

impl Client {
    fn new(conf: &DbConf, exec_env: &BTreeMap<String, String>) -> Result<Client> {
        let secret = Arc::new(SecretDir::new()?);
        let mut env = exec_env.clone();
        env.retain(|k, _| !k.starts_with("PG"));
        let (mut host, mut port) = (conf.host.clone(), conf.port);
        if let Some(sock) = conf.socket.as_deref().filter(|s| !s.is_empty()) {
            // libpq takes the socket's folder; a path to the socket itself names the port.
            let p = Path::new(sock);
            match p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(".s.PGSQL."))
            {
                Some(n) => {
                    host = p.parent().map(|d| d.display().to_string());
                    port = port.or(n.parse().ok());
                }
                None => host = Some(sock.to_string()),
            }
        }
        if let Some(h) = host.as_deref().filter(|h| !h.is_empty()) {
            env.insert("PGHOST".into(), h.to_string());
        }
        if let Some(p) = port {
            env.insert("PGPORT".into(), p.to_string());
        }
        if let Some(u) = conf.user.as_deref().filter(|u| !u.is_empty()) {
            env.insert("PGUSER".into(), u.to_string());
        }
        if let Some(pw) = conf.password.as_deref() {
            let escaped = pw.replace('\\', "\\\\").replace(':', "\\:");
            let file = secret.write("pgpass", format!("*:*:*:*:{escaped}\n").as_bytes())?;
            env.insert("PGPASSFILE".into(), file.display().to_string());
        } else {
            // Never an operator's own ~/.pgpass by surprise: only what postgres_conf says.
            env.insert("PGPASSFILE".into(), "/dev/null".into());
        }
        let other = |k: &str| conf.other.get(k).filter(|v| !v.is_empty()).cloned();
        if let Some(m) = other("sslmode") {
            env.insert("PGSSLMODE".into(), m);
        }
        env.insert(
            "PGCONNECT_TIMEOUT".into(),
            other("connect_timeout").unwrap_or_else(|| "10".into()),
        );
        env.insert("PGCLIENTENCODING".into(), "UTF8".into());
        env.insert("PGAPPNAME".into(), "freezer".into());
        let maintenance_db = other("dbname")
            .or_else(|| other("database"))
            .unwrap_or_else(|| "postgres".into());
        let selection = other("databases").map(|s| {
            s.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        });
        let target = format!(
            "{}:{} as user {}",
            env.get("PGHOST").map(String::as_str).unwrap_or("localhost"),
            env.get("PGPORT").map(String::as_str).unwrap_or("5432"),
            env.get("PGUSER")
                .or(env.get("USER"))
                .map(String::as_str)
                .unwrap_or("?")
        );
        Ok(Client {
            env,
            bindir: other("bindir"),
            maintenance_db,
            selection,
            target,
            secret,
        })
    }

    fn program(&self, name: &str) -> Result<PathBuf> {
        find_program(
            name,
            &self.env,
            self.bindir.as_deref(),
            Some(Path::new(DEBIAN_ROOT)),
        )
    }

    /// The argv of a program: its path, then `args`.
    fn argv(&self, name: &str, args: &[&str]) -> Result<Vec<String>> {
        let mut v = vec![self.program(name)?.display().to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        Ok(v)
    }

    /// `psql` running `sql` on database `db`: tuples only, unaligned, records ended by NUL.
    fn psql_argv(&self, db: &str, sql: &[&str]) -> Result<Vec<String>> {
        let conn = dbname_conninfo(db);
        let mut args = vec![
            "-X",
            "-w",
            "-A",
            "-t",
            "-0",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conn,
        ];
        for s in sql {
            args.push("-c");
            args.push(s);
        }
        self.argv("psql", &args)
    }

    fn command(&self, argv: &[String]) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut c = std::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .env_clear()
            .envs(&self.env)
            .stdin(std::process::Stdio::null())
            .process_group(0);
        c
    }

    /// What a finished query printed: its NUL-ended records; an error names the server and
    /// carries psql's own words (connection refused, password authentication failed...).
    fn records(&self, out: std::process::Output, what: &str) -> Result<Vec<String>> {
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err: Vec<&str> = err
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let how = match out.status.code() {
                Some(c) => format!("psql exited with status {c}"),
                None => "psql was killed".to_string(),
            };
            return Err(Error::io(
                format!("postgres server {}: {what}", self.target),
                std::io::Error::other(if err.is_empty() { how } else { err.join(" ") }),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .split('\0')
            .map(|r| r.strip_suffix('\n').unwrap_or(r).to_string())
            .filter(|r| !r.is_empty())
            .collect())
    }

    /// Runs a query now (a backup is set up before the engine runs): see [`Client::records`].
    fn query_blocking(&self, db: &str, sql: &[&str], what: &str) -> Result<Vec<String>> {
        let argv = self.psql_argv(db, sql)?;
        let run = || {
            self.command(&argv)
                .output()
                .map_err(|e| Error::io(format!("running {}", argv[0]), e))
        };
        // Not a worker of the runtime blocked unannounced (a connect can take up to
        // PGCONNECT_TIMEOUT).
        let out = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(run)?
            }
            _ => run()?,
        };
        self.records(out, what)
    }

    /// As [`Client::query_blocking`], without blocking the runtime.
    async fn query(&self, db: &str, sql: &[&str], what: &str) -> Result<Vec<String>> {
        let argv = self.psql_argv(db, sql)?;
        let mut cmd = tokio::process::Command::from(self.command(&argv));
        cmd.kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| Error::io(format!("running {}", argv[0]), e))?;
        self.records(out, what)
    }
}

const LIST_DATABASES: &str =
    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1";

/// The source of a backup: the streams of the method chosen.
pub fn backup_source(action: &FreezerAction, ctx: &RunContext) -> Result<Arc<dyn Source>> {
    let method = method(action)?;
    let conf = read_conf(action)?;
    let client = Client::new(&conf, &ctx.exec_env)?;
    let mut extra = BTreeMap::new();
    let mut streams = Vec::new();
    let program = |name: &str, args: &[&str]| -> Result<StreamCommand> {
        Ok(StreamCommand::program(
            client.argv(name, args)?,
            client.env.clone(),
        ))
    };
    match method {
        Method::Logical => {
            // The listing also finds an unreachable server or a refused login early.
            let mut recs = client.query_blocking(
                &client.maintenance_db,
                &["SHOW server_version", LIST_DATABASES],
                "listing its databases",
            )?;
            let version = if recs.is_empty() {
                String::new()
            } else {
                recs.remove(0)
            };
            extra.insert("postgres_server_version".into(), version.into());
            let databases = match &client.selection {
                None => recs,
                Some(sel) => {
                    let have: BTreeSet<&String> = recs.iter().collect();
                    if let Some(missing) = sel.iter().find(|n| !have.contains(n)) {
                        return Err(Error::not_found(format!(
                            "database {missing:?} (postgres_conf databases) on postgres server {}",
                            client.target
                        )));
                    }
                    sel.clone()
                }
            };
            // Each program is looked for now: a missing one fails before any stream runs.
            streams.push(NamedStream {
                name: GLOBALS.into(),
                command: program("pg_dumpall", &["-w", "--globals-only"])?,
            });
            let pg_dump = client.program("pg_dump")?;
            extra.insert(
                "postgres_tool".into(),
                tool_version(&client, &pg_dump).into(),
            );
            for db in &databases {
                let conn = dbname_conninfo(db);
                streams.push(NamedStream {
                    name: stream_name(db),
                    command: program("pg_dump", &["-w", "-Fc", "-Z", "0", "-d", &conn])?,
                });
            }
            extra.insert("postgres_databases".into(), serde_json::json!(databases));
        }
        Method::Physical => {
            let recs = client.query_blocking(
                &client.maintenance_db,
                &["SHOW server_version"],
                "connecting",
            )?;
            extra.insert(
                "postgres_server_version".into(),
                recs.first().cloned().unwrap_or_default().into(),
            );
            let checkpoint = match conf.other.get("checkpoint").map(String::as_str) {
                None | Some("") | Some("fast") => "--checkpoint=fast",
                Some("spread") => "--checkpoint=spread",
                Some(other) => {
                    return Err(Error::bad_input(
                        "postgres_conf",
                        format!("checkpoint {other:?}: use fast or spread"),
                    ));
                }
            };
            let basebackup = client.program("pg_basebackup")?;
            extra.insert(
                "postgres_tool".into(),
                tool_version(&client, &basebackup).into(),
            );
            streams.push(NamedStream {
                name: BASE_TAR.into(),
                command: program(
                    "pg_basebackup",
                    &["-w", "-D", "-", "-F", "tar", "-X", "fetch", checkpoint],
                )?,
            });
        }
    }
    extra.insert(
        "postgres_method".into(),
        match method {
            Method::Logical => "logical",
            Method::Physical => "physical",
        }
        .into(),
    );
    let env = &client.env;
    let info = SourceInfo {
        mode: "postgres".into(),
        path: format!(
            "postgres://{}@{}:{}",
            env.get("PGUSER").map(String::as_str).unwrap_or(""),
            env.get("PGHOST").map(String::as_str).unwrap_or("localhost"),
            env.get("PGPORT").map(String::as_str).unwrap_or("5432"),
        ),
        command: None,
    };
    let keep: Box<dyn std::any::Any + Send + Sync> = Box::new(client.secret.clone());
    let inner = StreamSource::named(streams, info, Some(keep), ctx.cancel.clone())?;
    Ok(Arc::new(PostgresSource { inner, extra }))
}

/// The first line of `program --version`.
fn tool_version(client: &Client, program: &Path) -> String {
    client
        .command(&[program.display().to_string(), "--version".into()])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The folder of streams, with what the snapshot records of the server.
struct PostgresSource {
    inner: StreamSource,
    extra: BTreeMap<String, serde_json::Value>,
}

impl Source for PostgresSource {
    fn info(&self) -> SourceInfo {
        self.inner.info()
    }
    fn root(&self) -> Result<SourceEntry> {
        self.inner.root()
    }
    fn list(&self, dir: &SourceEntry) -> Result<Listing> {
        self.inner.list(dir)
    }
    fn xattrs(&self, entry: &SourceEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.xattrs(entry)
    }
    fn open(&self, entry: &SourceEntry) -> Result<Box<dyn ContentReader>> {
        self.inner.open(entry)
    }
    fn extra(&self) -> BTreeMap<String, serde_json::Value> {
        self.extra.clone()
    }
}

/// Restores a snapshot: a logical one into the server `postgres_conf` names, a physical one
/// into `restore_datadir`.
pub async fn restore(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    let names = super::snapshot_streams(repo, id, snapshot)
        .await?
        .into_iter()
        .map(|(n, _)| n)
        .collect::<Vec<_>>();
    if names.iter().any(|n| n == BASE_TAR) {
        let datadir = action
            .db
            .restore_datadir
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .ok_or_else(|| {
                Error::bad_input(
                    "restore_datadir",
                    format!(
                        "snapshot {} is a physical postgres backup: give restore_datadir, an empty (or absent) folder for the data",
                        id.short()
                    ),
                )
            })?;
        return restore_physical(repo, id, snapshot, Path::new(datadir), ctx).await;
    }
    if !names
        .iter()
        .any(|n| n == GLOBALS || database_of(n).is_some())
    {
        return Err(Error::corrupt(
            format!("snapshot {}", id.short()),
            format!("no {GLOBALS}, db-*.dump or {BASE_TAR} in it: not a postgres backup"),
        ));
    }
    if method(action)? == Method::Physical {
        return Err(Error::bad_input(
            "postgres_method",
            format!(
                "snapshot {} is a logical postgres backup, not a physical one",
                id.short()
            ),
        ));
    }
    restore_logical(repo, id, snapshot, &names, action, ctx).await
}

/// An identifier as `pg_dumpall` writes it (`name` or `"Quoted ""name"""`) at the start of
/// `s`: the name and what follows.
fn ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    name.push('"');
                    chars.next();
                } else {
                    return Some((name, &rest[i + 1..]));
                }
            } else {
                name.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// The role a `CREATE ROLE` or `ALTER ROLE` line of `pg_dumpall` is about.
fn role_of_line(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))?;
    ident(rest).map(|(n, _)| n)
}

/// `globals.sql` without the statements about roles in `existing` (unless `overwrite`: then
/// only their `CREATE ROLE`, which would fail): the text to run and the roles kept.
fn filter_globals(
    sql: &str,
    existing: &BTreeSet<String>,
    overwrite: bool,
) -> (String, BTreeSet<String>) {
    let mut out = String::with_capacity(sql.len());
    let mut kept = BTreeSet::new();
    for line in sql.split_inclusive('\n') {
        if let Some(role) = role_of_line(line)
            && existing.contains(&role)
            && (!overwrite || line.starts_with("CREATE ROLE "))
        {
            kept.insert(role);
            continue;
        }
        out.push_str(line);
    }
    (out, kept)
}

/// A writer into a shared buffer, refusing more than a limit.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() + buf.len() > 256 << 20 {
            return Err(std::io::Error::other("globals.sql is larger than 256 MiB"));
        }
        v.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const COUNT_USER_RELATIONS: &str = "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'";

async fn restore_logical(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    names: &[String],
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    let conf = read_conf(action)?;
    let client = Client::new(&conf, &ctx.exec_env)?;
    let progress: Arc<dyn Progress> = ctx.progress.clone();
    let mut dumps: Vec<(String, String)> = names
        .iter()
        .filter_map(|n| database_of(n).map(|d| (d, n.clone())))
        .collect();
    if let Some(sel) = &client.selection {
        if let Some(missing) = sel.iter().find(|s| !dumps.iter().any(|(d, _)| d == *s)) {
            return Err(Error::not_found(format!(
                "database {missing:?} (postgres_conf databases) in snapshot {}",
                id.short()
            )));
        }
        dumps.retain(|(d, _)| sel.contains(d));
    }
    // Every check first: nothing is written when one database would be refused.
    let psql = client.program("psql")?;
    client.program("pg_restore")?;
    let existing: BTreeSet<String> = client
        .query(
            &client.maintenance_db,
            &["SELECT datname FROM pg_database"],
            "listing its databases",
        )
        .await?
        .into_iter()
        .collect();
    let mut into_existing = BTreeSet::new();
    let mut refused = Vec::new();
    for (db, _) in &dumps {
        if !existing.contains(db) {
            continue;
        }
        into_existing.insert(db.clone());
        if action.overwrite {
            continue;
        }
        let n = client
            .query(
                db,
                &[COUNT_USER_RELATIONS],
                &format!("looking into database {db:?}"),
            )
            .await?;
        if n.first().is_some_and(|n| n.trim() != "0") {
            refused.push(format!("{db:?}"));
        }
    }
    if !refused.is_empty() {
        return Err(Error::bad_input(
            "overwrite",
            format!(
                "database {} on postgres server {} holds tables and is never overwritten unasked: drop it, or restore with overwrite to replace its content with the backup's",
                refused.join(", "),
                client.target
            ),
        ));
    }
    let mut result = RestoreResult {
        snapshot_id: id,
        ..RestoreResult::default()
    };
    // The globals: roles (those that exist kept as they are, unless overwrite) and
    // tablespaces; a statement that fails is reported and the rest goes on.
    if names.iter().any(|n| n == GLOBALS) {
        let buf = Captured::default();
        let r = restore_stream_entry(
            repo,
            id,
            snapshot,
            Some(GLOBALS),
            StreamTarget::Writer(Box::new(buf.clone())),
            &ctx.cancel,
            Arc::new(NoProgress),
        )
        .await?;
        result.bytes += r.bytes;
        result.files += 1;
        let sql =
            String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        let roles: BTreeSet<String> = client
            .query(
                &client.maintenance_db,
                &["SELECT rolname FROM pg_roles"],
                "listing its roles",
            )
            .await?
            .into_iter()
            .collect();
        let (sql, kept) = filter_globals(&sql, &roles, action.overwrite);
        for role in kept {
            result.skipped.push(if action.overwrite {
                format!("role {role:?} exists: its attributes and password set to the backup's")
            } else {
                format!(
                    "role {role:?} exists: kept as it is (overwrite sets its attributes and password to the backup's)"
                )
            });
        }
        let file = client.secret.write(GLOBALS, sql.as_bytes())?;
        let conn = dbname_conninfo(&client.maintenance_db);
        let argv: Vec<String> = [
            psql.display().to_string(),
            "-X".into(),
            "-w".into(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=0".into(),
            "-d".into(),
            conn,
            "-f".into(),
            file.display().to_string(),
        ]
        .into();
        let ran = crate::process::run(&argv, &client.env, &ctx.cancel)
            .await
            .map_err(|e| e.context(format!("{GLOBALS} into postgres server {}", client.target)))?;
        for line in ran.stderr_tail.lines().filter(|l| l.contains("ERROR:")) {
            let line = line
                .split_once("ERROR:")
                .map(|x| x.1)
                .unwrap_or(line)
                .trim();
            result.warnings.push(format!("{GLOBALS}: {line}"));
        }
    }
    for (db, stream) in &dumps {
        let argv = if into_existing.contains(db) {
            let conn = dbname_conninfo(db);
            client.argv(
                "pg_restore",
                &[
                    "-w",
                    "--exit-on-error",
                    "--clean",
                    "--if-exists",
                    "--single-transaction",
                    "-d",
                    &conn,
                ],
            )?
        } else {
            let conn = dbname_conninfo(&client.maintenance_db);
            client.argv(
                "pg_restore",
                &["-w", "--exit-on-error", "--create", "-d", &conn],
            )?
        };
        let r = restore_stream_entry(
            repo,
            id,
            snapshot,
            Some(stream),
            StreamTarget::Command(StreamCommand::program(argv, client.env.clone())),
            &ctx.cancel,
            progress.clone(),
        )
        .await
        .map_err(|e| {
            e.context(format!(
                "database {db:?} into postgres server {}",
                client.target
            ))
        })?;
        result.bytes += r.bytes;
        result.files += 1;
    }
    Ok(result)
}

async fn restore_physical(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    datadir: &Path,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let field = "restore_datadir";
    let shown = datadir.display().to_string();
    if !datadir.is_absolute() {
        return Err(Error::bad_input(
            field,
            format!("{shown}: give an absolute path"),
        ));
    }
    match std::fs::symlink_metadata(datadir) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(datadir).map_err(|e| Error::io(&shown, e))?;
            if entries.next().is_some() {
                return Err(Error::bad_input(
                    field,
                    format!(
                        "{shown} is not empty: a physical restore never overwrites a data folder; give an empty or absent one"
                    ),
                ));
            }
        }
        Ok(_) => {
            return Err(Error::bad_input(field, format!("{shown} is not a folder")));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Created with the owner of the folder it is made in.
            std::fs::create_dir_all(datadir).map_err(|e| Error::io(&shown, e))?;
            if let Some(parent) = datadir.parent() {
                let pm = std::fs::metadata(parent).map_err(|e| Error::io(parent.display(), e))?;
                std::os::unix::fs::chown(datadir, Some(pm.uid()), Some(pm.gid()))
                    .map_err(|e| Error::io(&shown, e))?;
            }
        }
        Err(e) => return Err(Error::io(&shown, e)),
    }
    let owner = std::fs::metadata(datadir).map_err(|e| Error::io(&shown, e))?;
    let (uid, gid) = (owner.uid(), owner.gid());
    let tar = find_program("tar", &ctx.exec_env, None, None)
        .map_err(|_| Error::not_found("tar (looked in PATH): install the Debian package tar"))?;
    let argv = vec![
        tar.display().to_string(),
        "-x".into(),
        "-f".into(),
        "-".into(),
        "--no-same-owner".into(),
        "-C".into(),
        shown.clone(),
    ];
    let r = restore_stream_entry(
        repo,
        id,
        snapshot,
        Some(BASE_TAR),
        StreamTarget::Command(StreamCommand::program(argv, ctx.exec_env.clone())),
        &ctx.cancel,
        ctx.progress.clone(),
    )
    .await;
    let finish = || -> Result<(u64, u64)> {
        let counts = chown_tree(datadir, uid, gid)?;
        std::fs::set_permissions(datadir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(&shown, e))?;
        for needed in ["PG_VERSION", "global", "pg_wal"] {
            if !datadir.join(needed).exists() {
                return Err(Error::corrupt(
                    format!("snapshot {}", id.short()),
                    format!("{BASE_TAR} has no {needed}: not a PostgreSQL data folder"),
                ));
            }
        }
        Ok(counts)
    };
    let done = r.and_then(|r| finish().map(|c| (r, c)));
    match done {
        Ok((r, (files, dirs))) => Ok(RestoreResult {
            snapshot_id: id,
            files,
            dirs,
            bytes: r.bytes,
            ..RestoreResult::default()
        }),
        Err(e) => {
            // Never a half data folder: the folder is left as it was found, empty.
            if let Ok(entries) = std::fs::read_dir(datadir) {
                for e in entries.flatten() {
                    let p = e.path();
                    let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
                        std::fs::remove_dir_all(&p)
                    } else {
                        std::fs::remove_file(&p)
                    };
                }
            }
            Err(e.context(format!("physical restore into {shown}")))
        }
    }
}

/// Gives every entry under `root` (and `root`) owner `uid:gid`; the files and folders under it.
fn chown_tree(root: &Path, uid: u32, gid: u32) -> Result<(u64, u64)> {
    let (mut files, mut dirs) = (0u64, 0u64);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))
            .map_err(|e| Error::io(dir.display(), e))?;
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io(dir.display(), e))? {
            let e = e.map_err(|e| Error::io(dir.display(), e))?;
            let t = e
                .file_type()
                .map_err(|err| Error::io(e.path().display(), err))?;
            if t.is_dir() {
                dirs += 1;
                stack.push(e.path());
            } else {
                files += 1;
                std::os::unix::fs::lchown(e.path(), Some(uid), Some(gid))
                    .map_err(|err| Error::io(e.path().display(), err))?;
            }
        }
    }
    Ok((files, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_round_trip_through_stream_names() {
        for name in [
            "plain",
            "with space",
            "a/b",
            "..",
            "ünïcödé ✓",
            "100%",
            "x.dump",
            "-",
            "a=b 'c' \\d",
        ] {
            let s = stream_name(name);
            assert!(!s.contains('/') && s.starts_with("db-") && s.ends_with(".dump"));
            assert_eq!(database_of(&s).as_deref(), Some(name), "{s}");
        }
        assert_eq!(stream_name("a b"), "db-a%20b.dump");
        assert_eq!(database_of(GLOBALS), None);
        assert_eq!(database_of("db-%zz.dump"), None);
        assert!(stream_name(&"é".repeat(31)).len() < 255, "63 bytes fit");
    }

    #[test]
    fn globals_keep_existing_roles_unless_overwrite() {
        let sql = "SET x = 1;\nCREATE ROLE alice;\nALTER ROLE alice WITH LOGIN PASSWORD 'h';\nCREATE ROLE \"Bob \"\"B\"\"\";\nALTER ROLE \"Bob \"\"B\"\"\" WITH NOLOGIN;\nGRANT alice TO \"Bob \"\"B\"\"\";\n";
        let existing: BTreeSet<String> = ["alice".to_string()].into();
        let (out, kept) = filter_globals(sql, &existing, false);
        assert!(!out.contains("alice;") && !out.contains("ALTER ROLE alice"));
        assert!(out.contains("CREATE ROLE \"Bob") && out.contains("GRANT alice"));
        assert_eq!(kept.into_iter().collect::<Vec<_>>(), ["alice"]);
        let (out, _) = filter_globals(sql, &existing, true);
        assert!(!out.contains("CREATE ROLE alice") && out.contains("ALTER ROLE alice"));
        let bob: BTreeSet<String> = ["Bob \"B\"".to_string()].into();
        let (out, kept) = filter_globals(sql, &bob, false);
        assert!(!out.contains("Bob \"\"B\"\"\";\nALTER") && out.contains("CREATE ROLE alice"));
        assert_eq!(kept.len(), 1);
    }

    #[test]
    fn programs_are_found_on_path_then_in_the_newest_version_folder() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        let exe = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let root = t.path().join("lib");
        exe(&root.join("9.6/bin/pg_dump"));
        exe(&root.join("15/bin/pg_dump"));
        exe(&root.join("13/bin/pg_dump"));
        let env: BTreeMap<String, String> = [(
            "PATH".to_string(),
            t.path().join("bin").display().to_string(),
        )]
        .into();
        assert_eq!(
            find_program("pg_dump", &env, None, Some(&root)).unwrap(),
            root.join("15/bin/pg_dump")
        );
        exe(&t.path().join("bin/pg_dump"));
        assert_eq!(
            find_program("pg_dump", &env, None, Some(&root)).unwrap(),
            t.path().join("bin/pg_dump")
        );
        let e = find_program("pg_restore", &env, None, Some(&root)).unwrap_err();
        assert!(
            e.to_string().contains("pg_restore") && e.to_string().contains(CLIENT_PACKAGE),
            "{e}"
        );
        let e = find_program("pg_dump", &env, Some("/nonexistent"), Some(&root)).unwrap_err();
        assert!(e.to_string().contains("bindir"), "{e}");
    }

    #[test]
    fn the_password_goes_to_a_private_pgpass_only() {
        use std::os::unix::fs::PermissionsExt;
        let conf = DbConf::parse(
            "[default]\nhost=db.example\nport=5433\nuser=bk\npassword=se:c\\ret\ndbname=maint\nsocket=/run/pg/.s.PGSQL.6000\n",
        )
        .unwrap();
        let env: BTreeMap<String, String> = [
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("PGPASSWORD".to_string(), "inherited".to_string()),
        ]
        .into();
        let c = Client::new(&conf, &env).unwrap();
        assert!(c.env.values().all(|v| !v.contains("se:c")), "{:?}", c.env);
        assert!(!c.env.contains_key("PGPASSWORD"));
        assert_eq!(c.env["PGHOST"], "/run/pg");
        assert_eq!(c.env["PGPORT"], "5433");
        assert_eq!(c.maintenance_db, "maint");
        let pass = Path::new(&c.env["PGPASSFILE"]);
        assert_eq!(
            std::fs::read_to_string(pass).unwrap(),
            "*:*:*:*:se\\:c\\\\ret\n"
        );
        let mode = std::fs::metadata(pass).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let argv = c.psql_argv("x", &["SELECT 1"]).unwrap_or_default();
        assert!(argv.iter().all(|a| !a.contains("se:c")));
    }

    #[test]
    fn conninfo_quotes_names() {
        assert_eq!(dbname_conninfo("a'b\\c"), "dbname='a\\'b\\\\c'");
    }
}

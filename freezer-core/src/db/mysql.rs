//! Mode `mysql`: a MariaDB or MySQL server, backed up one of two ways (`mysql_method`).
//!
//! The server is named by upstream's `mysql_conf`, an INI file whose `[default]` (or
//! `[client]`) section holds `host`, `port`, `user`, `password` and `socket`
//! ([`DbConf`]); two keys of this release may follow: `databases` (names separated by blanks
//! or commas: dump only those, with their `CREATE DATABASE`, instead of every database) and
//! `datadir` (given to `mariadb-backup --datadir`, which otherwise asks the server). The
//! connection options are written to a client option file (`[client]`, mode 0600, in a
//! private folder, [`SecretDir`]) handed to every tool as its first argument,
//! `--defaults-extra-file=FILE`: the password is never in an argument, in the environment
//! or in an error.
//!
//! - `logical` (the default): `mariadb-dump` (or `mysqldump`) `--single-transaction
//!   --routines --triggers --events --hex-blob --flush-privileges --all-databases`, its output
//!   stored as `mysql/dump.sql`. One transaction reads every InnoDB table at one point, while
//!   writes go on: the dump holds whole transactions only. The `mysql` system database is in
//!   it (users, grants, time zones), so the dump restores into a freshly installed server too.
//! - `physical`: `mariadb-backup` (or `xtrabackup`) `--backup --stream=xbstream`, a hot copy of
//!   the data folder and of the redo log written meanwhile, stored as `mysql/backup.xbstream`.
//!   It runs on the server's host, as a user that can read the data folder.
//!
//! Every tool is looked for on the `PATH` of the caller's environment
//! ([`crate::job::RunContext::exec_env`]) before anything runs: a missing one is an error
//! naming it and the Debian package that holds it. A tool that fails (server unreachable,
//! access denied, killed) fails the backup, which then leaves no snapshot; the error carries
//! the tool's last line of stderr and says what it means.
//!
//! A restore reads which way the snapshot was made from the name of its stream:
//!
//! - `dump.sql` is fed to `mariadb` (or `mysql`) `--binary-mode` on the server `mysql_conf`
//!   names: the databases in the dump are created if missing, their tables replaced.
//! - `backup.xbstream` goes into `restore_datadir`, an empty (or absent: created) folder,
//!   never one that holds anything. The steps: (1) `mbstream -x -C DIR` (or `xbstream`)
//!   unpacks the stream; (2) `mariadb-backup --prepare --target-dir=DIR` applies the redo
//!   log, leaving the files consistent at the end of the backup; (3) the prepare's own
//!   bookkeeping (`backup-my.cnf`, `xtrabackup_checkpoints`) is removed (the
//!   `xtrabackup_info` and `xtrabackup_binlog_*` files stay: they name the binary log
//!   position of the copy); (4) every file gets the owner and group of DIR (create DIR owned
//!   by the server's user, `mysql`). The operator then starts `mariadbd --datadir=DIR` (or
//!   points the stopped server's `datadir` at it). A step that fails empties DIR again (and
//!   removes it when the restore created it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DbConf, SecretDir};
use crate::engine::{RestoreResult, StreamTarget, restore_stream_entry};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::job::FreezerAction;
use crate::job::RunContext;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::source::stream::{NamedStream, StreamCommand, StreamSource};
use crate::source::{ContentReader, Listing, Source, SourceEntry, SourceInfo};

/// The stream of a logical backup.
pub const DUMP: &str = "dump.sql";
/// The stream of a physical backup.
pub const XBSTREAM: &str = "backup.xbstream";

/// How a backup is made (`mysql_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `mariadb-dump`: SQL.
    Logical,
    /// `mariadb-backup`: a hot copy of the data folder.
    Physical,
}

impl Method {
    fn of(action: &FreezerAction) -> Result<Method> {
        match action
            .db
            .mysql_method
            .as_deref()
            .map(str::trim)
            .unwrap_or("")
        {
            "" | "logical" => Ok(Method::Logical),
            "physical" => Ok(Method::Physical),
            m => Err(Error::bad_input(
                "mysql_method",
                format!("{m:?} (expected logical or physical)"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Method::Logical => "logical",
            Method::Physical => "physical",
        }
    }
}

/// A tool, by the names it goes by, and the Debian package that has it.
struct Tool {
    names: &'static [&'static str],
    package: &'static str,
    what: &'static str,
}

const DUMP_TOOL: Tool = Tool {
    names: &["mariadb-dump", "mysqldump"],
    package: "mariadb-client",
    what: "a logical backup",
};
const BACKUP_TOOL: Tool = Tool {
    names: &["mariadb-backup", "mariabackup", "xtrabackup"],
    package: "mariadb-backup",
    what: "a physical backup and its restore",
};
const CLIENT_TOOL: Tool = Tool {
    names: &["mariadb", "mysql"],
    package: "mariadb-client",
    what: "a logical restore",
};
const STREAM_TOOL: Tool = Tool {
    names: &["mbstream", "xbstream"],
    package: "mariadb-backup",
    what: "a physical restore",
};

/// The `PATH` used when the caller's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Tool {
    /// The first of its names found on `env`'s `PATH`, as a full path.
    fn find(&self, env: &BTreeMap<String, String>) -> Result<PathBuf> {
        let path = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
        for name in self.names {
            for dir in std::env::split_paths(path) {
                if dir.as_os_str().is_empty() {
                    continue;
                }
                let p = dir.join(name);
                if is_executable(&p) {
                    return Ok(p);
                }
            }
        }
        Err(Error::unsupported(format!(
            "mode mysql: {} needs {}, which was not found on PATH ({path}) (Debian: apt-get install {})",
            self.what,
            self.names.join(" or "),
            self.package
        )))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `mysql_conf`, required.
fn conf_path(action: &FreezerAction) -> Result<&str> {
    action
        .db
        .mysql_conf
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            Error::bad_input(
                "mysql_conf",
                "mode mysql needs mysql_conf: an INI file whose [default] section names the server (host, port, user, password, socket)",
            )
        })
}

/// The connection options, and the file they came from.
fn read_conf(action: &FreezerAction) -> Result<(DbConf, String)> {
    let path = conf_path(action)?;
    let conf = DbConf::read(Path::new(path), "mysql_conf")?;
    databases(&conf).map_err(|e| e.context(path))?;
    Ok((conf, path.to_string()))
}

/// The `databases` key: the databases to dump, or none for all.
fn databases(conf: &DbConf) -> Result<Vec<String>> {
    let names: Vec<String> = conf
        .other
        .get("databases")
        .map(|v| {
            v.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(n) = names.iter().find(|n| n.starts_with('-')) {
        return Err(Error::bad_input(
            "mysql_conf",
            format!("databases: {n:?} is not a database name"),
        ));
    }
    Ok(names)
}

/// Where the server is, for reports: `host:port` or the socket.
fn server_name(conf: &DbConf) -> String {
    match (&conf.host, &conf.socket) {
        (Some(h), _) => format!("{h}:{}", conf.port.unwrap_or(3306)),
        (None, Some(s)) => s.clone(),
        (None, None) => "localhost".into(),
    }
}

/// A value of a MySQL option file, quoted.
fn option_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The client option file's text (`[client]`): the connection options, and the `ssl*` keys
/// of the INI as they are.
fn client_options(conf: &DbConf) -> String {
    let mut s = String::from("[client]\n");
    let mut put = |k: &str, v: &str| {
        s.push_str(k);
        s.push('=');
        s.push_str(&option_value(v));
        s.push('\n');
    };
    if let Some(v) = &conf.host {
        put("host", v);
    }
    if let Some(v) = conf.port {
        put("port", &v.to_string());
    }
    if let Some(v) = &conf.user {
        put("user", v);
    }
    if let Some(v) = &conf.password {
        put("password", v);
    }
    if let Some(v) = &conf.socket {
        put("socket", v);
    }
    for (k, v) in &conf.other {
        let k = k.replace('_', "-");
        if k.starts_with("ssl") {
            put(&k, v);
        }
    }
    s
}

/// A private folder holding the client option file, and the argument naming it.
fn option_file(conf: &DbConf) -> Result<(SecretDir, String)> {
    let dir = SecretDir::new()?;
    let file = dir.write("client.cnf", client_options(conf).as_bytes())?;
    let arg = format!("--defaults-extra-file={}", file.display());
    Ok((dir, arg))
}

/// Says what a tool's failure means when its message is a known one, naming `mysql_conf`.
fn explain(e: Error, conf_file: &str, server: &str) -> Error {
    let text = e.to_string();
    let hint = if text.contains("Access denied") {
        Some(format!(
            "the server {server} refused the user and password of mysql_conf {conf_file} (access denied)"
        ))
    } else if text.contains("Can't connect") || text.contains("Unknown MySQL server host") {
        Some(format!(
            "the server {server} of mysql_conf {conf_file} cannot be reached"
        ))
    } else {
        None
    };
    match hint {
        Some(h) => e.context(h),
        None => e,
    }
}

/// Checks a backup's options.
pub fn validate_backup(action: &FreezerAction) -> Result<()> {
    Method::of(action)?;
    read_conf(action)?;
    Ok(())
}

/// Checks a restore's options. A restore into the server needs `mysql_conf`; a physical one
/// (`restore_datadir`) needs no server; one into a folder or to stdout needs neither.
pub fn validate_restore(action: &FreezerAction) -> Result<()> {
    let method = action
        .db
        .mysql_method
        .as_deref()
        .is_some_and(|m| !m.trim().is_empty())
        .then(|| Method::of(action))
        .transpose()?;
    if action.restores_a_stream()
        || action
            .restore_abs_path
            .as_deref()
            .is_some_and(|p| !p.is_empty())
    {
        return Ok(());
    }
    match (datadir(action), method) {
        (Some(_), Some(Method::Logical)) => Err(Error::bad_input(
            "restore_datadir",
            "a logical restore goes into the server of mysql_conf, not into a data folder",
        )),
        (Some(d), _) => {
            let d = Path::new(d);
            if d.exists() && !d.is_dir() {
                return Err(Error::bad_input(
                    "restore_datadir",
                    format!("{} is not a folder", d.display()),
                ));
            }
            if action.db.mysql_conf.is_some() {
                read_conf(action)?;
            }
            Ok(())
        }
        (None, Some(Method::Physical)) => Err(Error::bad_input(
            "restore_datadir",
            "a physical restore needs restore_datadir: the empty data folder to unpack and prepare the copy into",
        )),
        (None, _) => read_conf(action).map(|_| ()),
    }
}

fn datadir(action: &FreezerAction) -> Option<&str> {
    action
        .db
        .restore_datadir
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty())
}

/// The source of a backup: the tool is found and the option file written before anything
/// runs.
pub fn backup_source(action: &FreezerAction, ctx: &RunContext) -> Result<Arc<dyn Source>> {
    let method = Method::of(action)?;
    let (conf, conf_file) = read_conf(action)?;
    let tool = match method {
        Method::Logical => DUMP_TOOL.find(&ctx.exec_env)?,
        Method::Physical => BACKUP_TOOL.find(&ctx.exec_env)?,
    };
    let (secret, defaults) = option_file(&conf)?;
    let mut argv = vec![tool.to_string_lossy().into_owned(), defaults];
    let name = match method {
        Method::Logical => {
            argv.extend(
                [
                    "--single-transaction",
                    "--routines",
                    "--triggers",
                    "--events",
                    "--hex-blob",
                    "--flush-privileges",
                    "--max-allowed-packet=1G",
                ]
                .map(String::from),
            );
            let dbs = databases(&conf)?;
            if dbs.is_empty() {
                argv.push("--all-databases".into());
            } else {
                argv.push("--databases".into());
                argv.extend(dbs);
            }
            DUMP
        }
        Method::Physical => {
            let target = secret.path().join("target");
            std::fs::create_dir(&target)
                .map_err(|e| Error::io(format!("{}", target.display()), e))?;
            argv.extend(["--backup".into(), "--stream=xbstream".into()]);
            argv.push(format!("--target-dir={}", target.display()));
            if let Some(d) = conf.other.get("datadir").filter(|d| !d.is_empty()) {
                argv.push(format!("--datadir={d}"));
            }
            XBSTREAM
        }
    };
    let server = server_name(&conf);
    let line = argv.join(" ");
    let info = SourceInfo {
        mode: "mysql".into(),
        path: server.clone(),
        command: Some(line),
    };
    let tool_name = tool
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut extra = BTreeMap::from([
        ("mysql_method".to_string(), method.name().into()),
        ("mysql_tool".to_string(), tool_name.into()),
    ]);
    if let Some(v) = tool_version(&tool, &ctx.exec_env) {
        extra.insert("mysql_tool_version".into(), v.into());
    }
    let inner = StreamSource::named(
        vec![NamedStream {
            name: name.into(),
            command: StreamCommand::program(argv, ctx.exec_env.clone()),
        }],
        info,
        Some(Box::new(secret)),
        ctx.cancel.clone(),
    )?;
    Ok(Arc::new(MysqlSource {
        inner,
        extra,
        conf_file,
        server,
    }))
}

/// The first line of `tool --version`, when it answers at once.
fn tool_version(tool: &Path, env: &BTreeMap<String, String>) -> Option<String> {
    let out = std::process::Command::new(tool)
        .arg("--version")
        .env_clear()
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
}

/// The stream source, with what the snapshot records of the method and the tool, and
/// errors that say what a tool's failure means.
struct MysqlSource {
    inner: StreamSource,
    extra: BTreeMap<String, serde_json::Value>,
    conf_file: String,
    server: String,
}

impl std::fmt::Debug for MysqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSource")
            .field("server", &self.server)
            .field("extra", &self.extra)
            .finish_non_exhaustive()
    }
}

impl Source for MysqlSource {
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
        let inner = self
            .inner
            .open(entry)
            .map_err(|e| explain(e, &self.conf_file, &self.server))?;
        Ok(Box::new(Explained {
            inner,
            conf_file: self.conf_file.clone(),
            server: self.server.clone(),
        }))
    }

    fn extra(&self) -> BTreeMap<String, serde_json::Value> {
        self.extra.clone()
    }
}

struct Explained {
    inner: Box<dyn ContentReader>,
    conf_file: String,
    server: String,
}

impl ContentReader for Explained {
    fn data_extents(&mut self) -> Result<Option<Vec<(u64, u64)>>> {
        self.inner.data_extents()
    }

    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.inner.read_at(buf, offset)
    }

    fn size(&self) -> Option<u64> {
        self.inner.size()
    }

    fn finish(&mut self) -> Result<bool> {
        self.inner
            .finish()
            .map_err(|e| explain(e, &self.conf_file, &self.server))
    }
}

/// Restores a snapshot into the server the action names (a logical dump) or into
/// `restore_datadir` (a physical copy).
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
    let has = |n: &str| names.iter().any(|x| x == n);
    let method = if has(DUMP) {
        Method::Logical
    } else if has(XBSTREAM) {
        Method::Physical
    } else {
        return Err(Error::corrupt(
            format!("snapshot {}", id.short()),
            format!("a mysql backup holds {DUMP} or {XBSTREAM}; it holds {names:?}"),
        ));
    };
    match (method, datadir(action)) {
        (Method::Logical, Some(_)) => Err(Error::bad_input(
            "restore_datadir",
            format!(
                "snapshot {} is a logical dump: it restores into the server of mysql_conf, not into a data folder (leave out restore_datadir)",
                id.short()
            ),
        )),
        (Method::Logical, None) => restore_logical(repo, id, snapshot, action, ctx).await,
        (Method::Physical, None) => Err(Error::bad_input(
            "restore_datadir",
            format!(
                "snapshot {} is a physical copy: give restore_datadir, the empty data folder to place it into",
                id.short()
            ),
        )),
        (Method::Physical, Some(d)) => {
            restore_physical(repo, id, snapshot, Path::new(d), ctx).await
        }
    }
}

async fn restore_logical(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    let (conf, conf_file) = read_conf(action)?;
    let client = CLIENT_TOOL.find(&ctx.exec_env)?;
    let (secret, defaults) = option_file(&conf)?;
    let argv = vec![
        client.to_string_lossy().into_owned(),
        defaults,
        "--binary-mode".into(),
        "--max-allowed-packet=1G".into(),
    ];
    let r = restore_stream_entry(
        repo,
        id,
        snapshot,
        Some(DUMP),
        StreamTarget::Command(StreamCommand::program(argv, ctx.exec_env.clone())),
        &ctx.cancel,
        ctx.progress.clone(),
    )
    .await
    .map_err(|e| explain(e, &conf_file, &server_name(&conf)));
    drop(secret);
    r
}

async fn restore_physical(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    dir: &Path,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    let unpack = STREAM_TOOL.find(&ctx.exec_env)?;
    let prepare = BACKUP_TOOL.find(&ctx.exec_env)?;
    let shown = dir.display().to_string();
    let created = match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(&shown, e))?;
            if entries.next().is_some() {
                return Err(Error::bad_input(
                    "restore_datadir",
                    format!(
                        "{shown} is not empty: a physical restore goes into an empty folder and never overwrites a data folder"
                    ),
                ));
            }
            false
        }
        Ok(_) => {
            return Err(Error::bad_input(
                "restore_datadir",
                format!("{shown} is not a folder"),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(&shown, e))?;
            true
        }
        Err(e) => return Err(Error::io(&shown, e)),
    };
    let r = physical_steps(repo, id, snapshot, dir, &unpack, &prepare, ctx).await;
    if r.is_err() {
        // Leave the folder as it was found: empty, or absent.
        empty_folder(dir);
        if created {
            let _ = std::fs::remove_dir(dir);
        }
    }
    r
}

async fn physical_steps(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    dir: &Path,
    unpack: &Path,
    prepare: &Path,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    let shown = dir.display().to_string();
    // 1. Unpack the stream into the folder.
    let argv = vec![
        unpack.to_string_lossy().into_owned(),
        "-x".into(),
        "-C".into(),
        shown.clone(),
    ];
    let mut r = restore_stream_entry(
        repo,
        id,
        snapshot,
        Some(XBSTREAM),
        StreamTarget::Command(StreamCommand::program(argv, ctx.exec_env.clone())),
        &ctx.cancel,
        ctx.progress.clone(),
    )
    .await
    .map_err(|e| e.context(format!("unpacking {XBSTREAM} into {shown}")))?;
    // 2. Apply the redo log copied during the backup.
    let argv = vec![
        prepare.to_string_lossy().into_owned(),
        "--prepare".into(),
        format!("--target-dir={shown}"),
    ];
    crate::process::run(&argv, &ctx.exec_env, &ctx.cancel)
        .await
        .map_err(|e| e.context(format!("preparing the copy in {shown}")))?;
    // 3. The prepare's own bookkeeping.
    for leftover in [
        "backup-my.cnf",
        "xtrabackup_checkpoints",
        "xtrabackup_logfile",
        "mariadb_backup_checkpoints",
    ] {
        match std::fs::remove_file(dir.join(leftover)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(format!("{shown}/{leftover}"), e));
            }
            _ => {}
        }
    }
    // 4. The folder's owner for every file.
    let (files, dirs) = give_owner(dir)?;
    r.files = files;
    r.dirs = dirs;
    Ok(r)
}

/// Gives every entry under `dir` the owner and group of `dir`; counts files and folders.
fn give_owner(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(|e| Error::io(dir.display(), e))?;
    let (uid, gid) = (m.uid(), m.gid());
    let mut counts = (0, 0);
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| Error::io(d.display(), e))? {
            let e = e.map_err(|e| Error::io(d.display(), e))?;
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).map_err(|e| Error::io(p.display(), e))?;
            if m.uid() != uid || m.gid() != gid {
                std::os::unix::fs::lchown(&p, Some(uid), Some(gid)).map_err(|e| {
                    Error::io(format!("giving {} its folder's owner", p.display()), e)
                })?;
            }
            if m.is_dir() {
                counts.1 += 1;
                todo.push(p);
            } else {
                counts.0 += 1;
            }
        }
    }
    Ok(counts)
}

/// Removes what `dir` holds (a failed restore's part), keeping `dir`.
fn empty_folder(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = match e.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                _ => std::fs::remove_file(&p),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_file_quotes_values_and_keeps_ssl_keys() {
        let conf = DbConf::parse(
            "[default]\nhost=127.0.0.1\nport=3307\nuser=u\npassword=a\"b#d e'f\nssl_ca=/ca.pem\ndatadir=/x\n",
        )
        .unwrap();
        let s = client_options(&conf);
        assert!(s.starts_with("[client]\n"), "{s}");
        assert!(s.contains("password=\"a\\\"b#d e'f\"\n"), "{s}");
        // MariaDB's option files read `\\` and `\"` inside quotes as `\` and `"`.
        assert_eq!(option_value(r#"a\"b\c"#), r#""a\\\"b\\c""#);
        assert!(s.contains("port=\"3307\"\n"), "{s}");
        assert!(s.contains("ssl-ca=\"/ca.pem\"\n"), "{s}");
        assert!(!s.contains("datadir"), "{s}");
    }

    #[test]
    fn databases_are_split_and_options_refused() {
        let c = DbConf::parse("[default]\ndatabases = a, b  c\n").unwrap();
        assert_eq!(databases(&c).unwrap(), ["a", "b", "c"]);
        let c = DbConf::parse("[default]\ndatabases = a --all\n").unwrap();
        assert!(databases(&c).unwrap_err().to_string().contains("--all"));
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let env = BTreeMap::from([("PATH".to_string(), "/nonexistent".to_string())]);
        let e = DUMP_TOOL.find(&env).unwrap_err().to_string();
        assert!(
            e.contains("mariadb-dump") && e.contains("mariadb-client"),
            "{e}"
        );
        let e = STREAM_TOOL.find(&env).unwrap_err().to_string();
        assert!(
            e.contains("mbstream") && e.contains("mariadb-backup"),
            "{e}"
        );
    }
}

//! Mode `mongo`: a MongoDB server, checked to be the writable primary (as upstream's agent
//! aborts on any other node), then dumped through `mongodump --archive` when that tool is on
//! the job's `PATH`, else through the MongoDB driver in this process; restored the same way
//! (`mongorestore --archive`, or the driver).
//!
//! **Connection.** `mongo_conf` is an INI file as `mysql_conf` ([`DbConf`]): `host` (default
//! `localhost`; upstream connects to this host's name, port 27017, without credentials),
//! `port` (default 27017), `user`, `password`, and this mode's own keys `auth_source` (the
//! database the user is defined in, default `admin`), `tls` (`true`/`false`), `tls_ca_file`
//! and `timeout` (seconds to wait for the server, default 30). Without `mongo_conf` the server
//! is `localhost:27017` without credentials. The driver connects to that one node (no
//! discovery of a replica set's other members). The password never reaches an argument, an
//! environment variable, an error or a log: the driver gets it in memory, `mongodump` and
//! `mongorestore` in a `--config` file (mode 0600 in a private folder, [`SecretDir`]).
//!
//! **The primary check.** Before anything is read or written, `hello` (`isMaster` on servers
//! too old for it) must say the node is the writable primary; a secondary, an arbiter or a
//! node that is not the set's primary is refused, naming the replica set and its primary.
//!
//! **Snapshot layout.** Through `mongodump`: `mongo/dump.archive` (its `--archive` format,
//! every database). Through the driver, for each collection of each database except
//! `admin`, `local` and `config` (views, time series and `system.*` collections are left
//! out): `mongo/<db>.<collection>.bson`, its documents as concatenated BSON (what mongodump
//! writes into `<db>/<collection>.bson`), and `mongo/<db>.<collection>.metadata.json`, its
//! options and indexes in canonical Extended JSON (what mongodump writes beside it), so
//! `mongorestore -d DB -c COLL DB.COLL.bson` reads a folder restore of them. In names, `%`
//! and `/` of a collection's name are written `%25` and `%2F`. Documents are read with a
//! cursor, in the server's natural order, a batch at a time; each collection is read at its
//! own moment: there is no point in time common to all collections (mongodump without
//! `--oplog` has none either).
//!
//! **Restore** goes into the server `mongo_conf` names (checked to be the primary). Through
//! the driver: every collection of the snapshot is checked first, and when one exists and
//! holds documents the restore is refused (nothing written) unless `overwrite`, which drops
//! it first; then each collection is created with its options, its documents inserted in
//! batches as the stream is read, and its indexes (but `_id_`) created. An archive goes to
//! `mongorestore --archive` (with `--drop` under `overwrite`; refused when a database holds
//! documents otherwise).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Bson, Document, RawDocumentBuf, doc};
use mongodb::options::{ClientOptions, Credential, ServerAddress, Tls, TlsOptions};

use super::{DbConf, SecretDir};
use crate::engine::{RestoreResult, StreamTarget, restore_stream_entry};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::job::FreezerAction;
use crate::job::RunContext;
use crate::repo::Repository;
use crate::repo::snapshot::Snapshot;
use crate::source::stream::{
    NamedStream, ProducedStream, Producer, StreamCommand, StreamSource, StreamWriter,
};
use crate::source::{Source, SourceInfo};

/// The option this mode reads, as errors name it.
const FIELD: &str = "mongo_conf";
/// MongoDB's port.
const DEFAULT_PORT: u16 = 27017;
/// Databases a dump leaves out: the server's own.
const SYSTEM_DBS: [&str; 3] = ["admin", "local", "config"];
/// Where `mongodump` and `mongorestore` come from.
const TOOLS_PACKAGE: &str =
    "MongoDB's mongodb-database-tools package (Debian has none; without it the driver is used)";
/// The stream of a `mongodump --archive`.
const ARCHIVE: &str = "dump.archive";
/// The keys of `mongo_conf` besides [`DbConf`]'s own.
const OWN_KEYS: [&str; 4] = ["auth_source", "tls", "tls_ca_file", "timeout"];
/// Bytes of documents handed to the engine at once.
const RUN_BYTES: usize = 1 << 20;
/// Documents a cursor fetches at once.
const FIND_BATCH: u32 = 1000;
/// Documents (and bytes of them) inserted at once.
const INSERT_DOCS: usize = 1000;
const INSERT_BYTES: usize = 8 << 20;
/// The largest document a server takes (16 MiB) and some room.
const MAX_DOCUMENT: usize = (16 << 20) + (16 << 10);
/// The largest metadata file read back.
const MAX_METADATA: usize = 16 << 20;

/// Where the server is and how to log in (see the module's documentation).
#[derive(Clone, PartialEq, Eq)]
struct MongoConf {
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
    auth_source: Option<String>,
    tls: bool,
    tls_ca_file: Option<PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for MongoConf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoConf")
            .field("server", &self.server())
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("auth_source", &self.auth_source)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for MongoConf {
    fn default() -> Self {
        MongoConf {
            host: "localhost".into(),
            port: DEFAULT_PORT,
            user: None,
            password: None,
            auth_source: None,
            tls: false,
            tls_ca_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl MongoConf {
    /// The action's `mongo_conf`, or `localhost:27017` without it.
    fn of(action: &FreezerAction) -> Result<Self> {
        let Some(path) = action
            .db
            .mongo_conf
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        else {
            return Ok(MongoConf::default());
        };
        let conf = DbConf::read(Path::new(path), FIELD)?;
        Self::from_conf(conf).map_err(|e| Error::bad_input(FIELD, format!("{path}: {e}")))
    }

    fn from_conf(c: DbConf) -> std::result::Result<Self, String> {
        if c.socket.is_some() {
            return Err("socket is not read in mode mongo: give host and port".into());
        }
        if let Some(k) = c.other.keys().find(|k| !OWN_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown key {k:?} (mode mongo reads host, port, user, password, {})",
                OWN_KEYS.join(", ")
            ));
        }
        let mut m = MongoConf::default();
        if let Some(h) = c.host.filter(|h| !h.is_empty()) {
            m.host = h;
        }
        m.port = c.port.unwrap_or(DEFAULT_PORT);
        m.user = c.user.filter(|u| !u.is_empty());
        m.password = c.password.filter(|p| !p.is_empty());
        if m.password.is_some() && m.user.is_none() {
            return Err("a password without a user".into());
        }
        m.auth_source = c
            .other
            .get("auth_source")
            .cloned()
            .filter(|s| !s.is_empty());
        if let Some(t) = c.other.get("tls") {
            m.tls = match t.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => true,
                "false" | "no" | "off" | "0" | "" => false,
                _ => return Err(format!("tls {t:?} is neither true nor false")),
            };
        }
        m.tls_ca_file = c
            .other
            .get("tls_ca_file")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if m.tls_ca_file.is_some() && !m.tls {
            return Err("tls_ca_file without tls = true".into());
        }
        if let Some(t) = c.other.get("timeout") {
            match t.parse::<u64>() {
                Ok(s) if s > 0 => m.timeout = Duration::from_secs(s),
                _ => return Err(format!("timeout {t:?} is not a number of seconds")),
            }
        }
        Ok(m)
    }

    /// `host:port`, as errors and the snapshot name the server.
    fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions::default();
        o.hosts = vec![ServerAddress::Tcp {
            host: self.host.clone(),
            port: Some(self.port),
        }];
        // This node, as upstream checks this node: no discovery of the others.
        o.direct_connection = Some(true);
        o.app_name = Some("freezer-rs".into());
        o.connect_timeout = Some(self.timeout);
        o.server_selection_timeout = Some(self.timeout);
        if let Some(user) = &self.user {
            let mut c = Credential::default();
            c.username = Some(user.clone());
            c.password = self.password.clone();
            c.source = Some(self.auth_source.clone().unwrap_or_else(|| "admin".into()));
            o.credential = Some(c);
        }
        if self.tls {
            let mut t = TlsOptions::default();
            t.ca_file_path = self.tls_ca_file.clone();
            o.tls = Some(Tls::Enabled(t));
        }
        o
    }

    /// A driver error as one of ours: what was done, the server, the driver's words (the
    /// password, should a message ever hold it, replaced).
    fn error(&self, doing: &str, e: mongodb::error::Error) -> Error {
        let mut msg = e.kind.to_string();
        if let Some(p) = self.password.as_deref().filter(|p| p.len() >= 3) {
            msg = msg.replace(p, "<hidden>");
        }
        let server = self.server();
        let denied = |msg: String| Error::Permission {
            what: format!(
                "{FIELD}: the MongoDB server at {server} refused user {} ({doing})",
                self.user.as_deref().unwrap_or("(none)")
            ),
            source: std::io::Error::other(msg),
        };
        use mongodb::error::ErrorKind as K;
        match &*e.kind {
            K::Authentication { .. } => denied(msg),
            // Unauthorized, AuthenticationFailed.
            K::Command(c) if c.code == 13 || c.code == 18 => denied(msg),
            K::ServerSelection { .. } | K::Io(_) | K::ConnectionPoolCleared { .. } => {
                Error::Transient {
                    what: format!("{FIELD}: the MongoDB server at {server} ({doing})"),
                    source: std::io::Error::other(msg),
                }
            }
            _ => Error::Io {
                what: format!("the MongoDB server at {server}: {doing}"),
                source: std::io::Error::other(msg),
            },
        }
    }
}

/// Checks a backup's options: `mongo_conf`, when given, is a readable INI file this mode
/// understands.
pub fn validate_backup(action: &FreezerAction) -> Result<()> {
    MongoConf::of(action).map(drop)
}

/// Checks a restore's options (as [`validate_backup`]).
pub fn validate_restore(action: &FreezerAction) -> Result<()> {
    MongoConf::of(action).map(drop)
}

/// Connects to the server `conf` names and checks it is the writable primary.
async fn connect(conf: &MongoConf) -> Result<Client> {
    let server = conf.server();
    // A port that refuses or a host that does not answer says so now, not after the
    // driver's whole server-selection wait.
    let probe = tokio::net::TcpStream::connect((conf.host.as_str(), conf.port));
    match tokio::time::timeout(conf.timeout, probe).await {
        Err(_) => {
            return Err(Error::Transient {
                what: format!("{FIELD}: the MongoDB server at {server}"),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", conf.timeout.as_secs()),
                ),
            });
        }
        Ok(Err(e)) => {
            return Err(Error::io(
                format!("{FIELD}: cannot reach the MongoDB server at {server}"),
                e,
            ));
        }
        Ok(Ok(_)) => {}
    }
    let client = Client::with_options(conf.client_options())
        .map_err(|e| conf.error("connection options", e))?;
    let admin = client.database("admin");
    let reply = match admin.run_command(doc! {"hello": 1}).await {
        Ok(r) => r,
        // CommandNotFound: a server older than 4.4 (5.0 for `hello`): its `isMaster`.
        Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 59) => {
            admin
                .run_command(doc! {"isMaster": 1})
                .await
                .map_err(|e| conf.error("isMaster", e))?
        }
        Err(e) => return Err(conf.error("hello", e)),
    };
    primary_check(&reply, &server)?;
    Ok(client)
}

fn truthy(d: &Document, key: &str) -> Option<bool> {
    match d.get(key)? {
        Bson::Boolean(b) => Some(*b),
        Bson::Int32(i) => Some(*i != 0),
        Bson::Int64(i) => Some(*i != 0),
        Bson::Double(f) => Some(*f != 0.0),
        _ => None,
    }
}

/// Upstream's check, on a `hello` (or `isMaster`) reply: the node must be the writable
/// primary (`isWritablePrimary`, or `ismaster` of older servers), and, in a replica set, the
/// primary it names itself (`me` = `primary`). Anything else is refused, saying what the
/// node is.
fn primary_check(reply: &Document, server: &str) -> Result<()> {
    let writable = truthy(reply, "isWritablePrimary")
        .or_else(|| truthy(reply, "ismaster"))
        .unwrap_or(false);
    let me = reply.get_str("me").ok();
    let primary = reply.get_str("primary").ok();
    let itself = match (me, primary) {
        (Some(m), Some(p)) => m == p,
        _ => true,
    };
    if writable && itself {
        return Ok(());
    }
    let role = if truthy(reply, "secondary") == Some(true) {
        "a secondary"
    } else if truthy(reply, "arbiterOnly") == Some(true) {
        "an arbiter"
    } else if truthy(reply, "hidden") == Some(true) {
        "a hidden member"
    } else {
        "not the writable primary"
    };
    let mut what = format!("the MongoDB server at {server} is {role}");
    if let Ok(set) = reply.get_str("setName") {
        what.push_str(&format!(" of replica set {set}"));
    }
    match primary {
        Some(p) => what.push_str(&format!(" (its primary is {p})")),
        None if reply.contains_key("setName") => what.push_str(" (which has no primary now)"),
        None => {}
    }
    Err(Error::bad_input(
        FIELD,
        format!("{what}: mode mongo backs up and restores on the primary only, as upstream"),
    ))
}

/// A program on the `PATH` of `env` (the job's environment), executable.
fn find_on_path(name: &str, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env.get("PATH")?;
    std::env::split_paths(path)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The arguments of `mongodump` or `mongorestore` for the server `conf` names, then `extra`;
/// a password goes into a `--config` file in `secret` (a YAML file of one key), never here.
fn tool_argv(
    tool: &Path,
    conf: &MongoConf,
    secret: &SecretDir,
    extra: &[&str],
) -> Result<Vec<String>> {
    let mut argv = vec![
        tool.display().to_string(),
        format!("--host={}", conf.host),
        format!("--port={}", conf.port),
    ];
    if let Some(user) = &conf.user {
        argv.push(format!("--username={user}"));
        argv.push(format!(
            "--authenticationDatabase={}",
            conf.auth_source.as_deref().unwrap_or("admin")
        ));
    }
    if let Some(pw) = &conf.password {
        // YAML single quotes: a quote doubled, nothing else special.
        let yaml = format!("password: '{}'\n", pw.replace('\'', "''"));
        let name = format!(
            "{}.yaml",
            tool.file_name().unwrap_or_default().to_string_lossy()
        );
        let path = secret.write(&name, yaml.as_bytes())?;
        argv.push(format!("--config={}", path.display()));
    }
    if conf.tls {
        argv.push("--tls".into());
        if let Some(ca) = &conf.tls_ca_file {
            argv.push(format!("--tlsCAFile={}", ca.display()));
        }
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    Ok(argv)
}

/// A collection's name as a stream name holds it: `%` and `/` escaped.
fn escape(name: &str) -> String {
    name.replace('%', "%25").replace('/', "%2F")
}

fn unescape(name: &str) -> String {
    name.replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%25", "%")
}

/// The streams of one collection: `<db>.<coll>.bson` and `<db>.<coll>.metadata.json`.
fn stream_names(db: &str, coll: &str) -> (String, String) {
    let stem = format!("{db}.{}", escape(coll));
    (format!("{stem}.bson"), format!("{stem}.metadata.json"))
}

/// What a stream name of a driver dump holds.
#[derive(Debug, PartialEq, Eq)]
enum StreamKind {
    Data { db: String, coll: String },
    Metadata { db: String, coll: String },
}

fn parse_stream_name(name: &str) -> Option<StreamKind> {
    let (stem, data) = if let Some(s) = name.strip_suffix(".metadata.json") {
        (s, false)
    } else {
        (name.strip_suffix(".bson")?, true)
    };
    // A database's name holds no dot; a collection's may.
    let (db, coll) = stem.split_once('.')?;
    if db.is_empty() || coll.is_empty() {
        return None;
    }
    let (db, coll) = (db.to_string(), unescape(coll));
    Some(if data {
        StreamKind::Data { db, coll }
    } else {
        StreamKind::Metadata { db, coll }
    })
}

/// The source of a backup: the primary check, then `mongodump --archive` when the job's
/// `PATH` has it, else the driver's streams (see the module's documentation).
pub async fn backup_source(action: &FreezerAction, ctx: &RunContext) -> Result<Arc<dyn Source>> {
    let conf = Arc::new(MongoConf::of(action)?);
    let client = connect(&conf).await?;
    let info = SourceInfo {
        mode: "mongo".into(),
        path: conf.server(),
        command: None,
    };
    if let Some(tool) = find_on_path("mongodump", &ctx.exec_env) {
        let secret = SecretDir::new()?;
        let argv = tool_argv(&tool, &conf, &secret, &["--archive"])?;
        let stream = NamedStream {
            name: ARCHIVE.into(),
            command: StreamCommand::program(argv, ctx.exec_env.clone()),
        };
        return Ok(Arc::new(StreamSource::named(
            vec![stream],
            info,
            Some(Box::new(secret)),
            ctx.cancel.clone(),
        )?));
    }
    let version = client
        .database("admin")
        .run_command(doc! {"buildInfo": 1})
        .await
        .ok()
        .and_then(|d| d.get_str("version").ok().map(str::to_string));
    let mut streams = Vec::new();
    let mut collections = 0u64;
    for db in user_databases(&client, &conf).await? {
        for (coll, options) in list_collections(&client, &conf, &db).await? {
            let indexes = list_indexes(&client, &conf, &db, &coll).await?;
            let (data, meta) = stream_names(&db, &coll);
            streams.push(ProducedStream {
                name: meta,
                producer: bytes_producer(metadata_json(&coll, options, indexes)?),
            });
            streams.push(ProducedStream {
                name: data,
                producer: documents_producer(client.clone(), conf.clone(), db.clone(), coll),
            });
            collections += 1;
        }
    }
    if streams.is_empty() {
        return Err(Error::not_found(format!(
            "{FIELD}: a collection to back up on the MongoDB server at {} (it holds no database but admin, local and config)",
            conf.server()
        )));
    }
    let mut extra = BTreeMap::from([
        ("mongo_method".to_string(), serde_json::json!("driver")),
        (
            "mongo_collections".to_string(),
            serde_json::json!(collections),
        ),
    ]);
    if let Some(v) = version {
        extra.insert("mongo_version".into(), serde_json::json!(v));
    }
    Ok(Arc::new(StreamSource::produced(
        streams,
        info,
        extra,
        None,
        ctx.cancel.clone(),
    )?))
}

/// The databases a dump holds: all but the server's own, sorted.
async fn user_databases(client: &Client, conf: &MongoConf) -> Result<Vec<String>> {
    let mut dbs = client
        .list_database_names()
        .await
        .map_err(|e| conf.error("listing databases", e))?;
    dbs.retain(|d| !SYSTEM_DBS.contains(&d.as_str()));
    dbs.sort();
    Ok(dbs)
}

/// The collections of `db` a dump holds (no views, no time series, no `system.*`), with
/// their options, sorted by name.
async fn list_collections(
    client: &Client,
    conf: &MongoConf,
    db: &str,
) -> Result<Vec<(String, Document)>> {
    let doing = format!("listing the collections of {db}");
    let mut cursor = client
        .database(db)
        .run_cursor_command(doc! {"listCollections": 1})
        .await
        .map_err(|e| conf.error(&doing, e))?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(|e| conf.error(&doing, e))? {
        let d = cursor
            .deserialize_current()
            .map_err(|e| conf.error(&doing, e))?;
        let Ok(name) = d.get_str("name") else {
            continue;
        };
        let kind = d.get_str("type").unwrap_or("collection");
        if kind != "collection" || name.starts_with("system.") {
            continue;
        }
        let options = d.get_document("options").cloned().unwrap_or_default();
        out.push((name.to_string(), options));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

async fn list_indexes(
    client: &Client,
    conf: &MongoConf,
    db: &str,
    coll: &str,
) -> Result<Vec<Document>> {
    let doing = format!("listing the indexes of {db}.{coll}");
    let mut cursor = client
        .database(db)
        .run_cursor_command(doc! {"listIndexes": coll})
        .await
        .map_err(|e| conf.error(&doing, e))?;
    let mut out = Vec::new();
    while cursor.advance().await.map_err(|e| conf.error(&doing, e))? {
        out.push(
            cursor
                .deserialize_current()
                .map_err(|e| conf.error(&doing, e))?,
        );
    }
    Ok(out)
}

/// What mongodump writes into `<coll>.metadata.json`: options and indexes, canonical
/// Extended JSON (no uuid: a restore makes new collections).
fn metadata_json(coll: &str, options: Document, indexes: Vec<Document>) -> Result<Vec<u8>> {
    let meta = doc! {
        "options": options,
        "indexes": indexes,
        "collectionName": coll,
        "type": "collection",
    };
    serde_json::to_vec(&Bson::Document(meta).into_canonical_extjson())
        .map_err(|e| Error::io("a collection's metadata", std::io::Error::other(e)))
}

fn bytes_producer(data: Vec<u8>) -> Producer {
    Box::new(move |w: StreamWriter| Box::pin(async move { w.write(data.into()).await }))
}

/// Writes the documents of `db.coll` as concatenated BSON, read with a cursor.
fn documents_producer(client: Client, conf: Arc<MongoConf>, db: String, coll: String) -> Producer {
    Box::new(move |w: StreamWriter| {
        Box::pin(async move {
            let doing = format!("reading {db}.{coll}");
            let c = client.database(&db).collection::<RawDocumentBuf>(&coll);
            let mut cursor = c
                .find(doc! {})
                .batch_size(FIND_BATCH)
                .await
                .map_err(|e| conf.error(&doing, e))?;
            let mut run = Vec::with_capacity(RUN_BYTES);
            while cursor.advance().await.map_err(|e| conf.error(&doing, e))? {
                run.extend_from_slice(cursor.current().as_bytes());
                if run.len() >= RUN_BYTES {
                    w.write(std::mem::replace(&mut run, Vec::with_capacity(RUN_BYTES)).into())
                        .await?;
                }
            }
            w.write(run.into()).await
        })
    })
}

/// Restores snapshot `id` into the server the action's `mongo_conf` names (see the module's
/// documentation).
pub async fn restore(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    action: &FreezerAction,
    ctx: &RunContext,
) -> Result<RestoreResult> {
    let conf = MongoConf::of(action)?;
    let streams = super::snapshot_streams(repo, id, snapshot).await?;
    let client = connect(&conf).await?;
    if streams.iter().any(|(n, _)| n == ARCHIVE) {
        return restore_archive(repo, id, snapshot, action, ctx, &conf, &client).await;
    }
    restore_driver(repo, id, snapshot, &streams, action, ctx, &conf, &client).await
}

/// One collection of a driver dump.
#[derive(Debug, Default)]
struct Collection {
    data: Option<(String, u64)>,
    metadata: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn restore_driver(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    streams: &[(String, u64)],
    action: &FreezerAction,
    ctx: &RunContext,
    conf: &MongoConf,
    client: &Client,
) -> Result<RestoreResult> {
    let what = format!("snapshot {}", id.short());
    let mut colls: BTreeMap<(String, String), Collection> = BTreeMap::new();
    for (name, size) in streams {
        match parse_stream_name(name) {
            Some(StreamKind::Data { db, coll }) => {
                colls.entry((db, coll)).or_default().data = Some((name.clone(), *size))
            }
            Some(StreamKind::Metadata { db, coll }) => {
                colls.entry((db, coll)).or_default().metadata = Some(name.clone())
            }
            None => {
                return Err(Error::corrupt(
                    &what,
                    format!(
                        "{name} is no stream of a mongo dump (<db>.<collection>.bson or .metadata.json)"
                    ),
                ));
            }
        }
    }
    // Read every collection's metadata, and see what the server holds, before writing.
    let mut plan = Vec::new();
    let mut existing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut busy = Vec::new();
    for ((db, coll), c) in colls {
        let (options, indexes) = match &c.metadata {
            Some(m) => read_metadata(repo, id, snapshot, m, ctx).await?,
            None => (Document::new(), Vec::new()),
        };
        if !existing.contains_key(&db) {
            let names = client
                .database(&db)
                .list_collection_names()
                .await
                .map_err(|e| conf.error(&format!("listing the collections of {db}"), e))?;
            existing.insert(db.clone(), names.into_iter().collect());
        }
        let exists = existing[&db].contains(&coll);
        if exists {
            let one = client
                .database(&db)
                .collection::<Document>(&coll)
                .find_one(doc! {})
                .projection(doc! {"_id": 1})
                .await
                .map_err(|e| conf.error(&format!("reading {db}.{coll}"), e))?;
            if one.is_some() {
                busy.push(format!("{db}.{coll}"));
            }
        }
        plan.push((db, coll, c, options, indexes, exists));
    }
    if !busy.is_empty() && !action.overwrite {
        return Err(Error::bad_input(
            "overwrite",
            format!(
                "collections on the MongoDB server at {} hold documents: {}; restore into empty collections, or with overwrite to drop them first",
                conf.server(),
                busy.join(", ")
            ),
        ));
    }
    let mut result = RestoreResult {
        snapshot_id: id,
        ..RestoreResult::default()
    };
    for (db, coll, c, options, indexes, exists) in plan {
        ctx.cancel.check()?;
        let database = client.database(&db);
        let name = format!("{db}.{coll}");
        let mut create = !exists;
        if exists && action.overwrite {
            database
                .collection::<Document>(&coll)
                .drop()
                .await
                .map_err(|e| conf.error(&format!("dropping {name}"), e))?;
            create = true;
        }
        if create {
            let mut cmd = doc! {"create": coll.as_str()};
            for (k, v) in options {
                if k != "create" {
                    cmd.insert(k, v);
                }
            }
            match database.run_command(cmd).await {
                Ok(_) => {}
                // NamespaceExists: made meanwhile, or by a server that makes one on demand.
                Err(e) if matches!(&*e.kind, mongodb::error::ErrorKind::Command(c) if c.code == 48) =>
                    {}
                Err(e) => return Err(conf.error(&format!("creating {name}"), e)),
            }
        }
        if c.metadata.is_some() {
            result.files += 1;
        }
        if let Some((stream, _)) = &c.data {
            let target = database.collection::<RawDocumentBuf>(&coll);
            let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
            let feed = restore_stream_entry(
                repo,
                id,
                snapshot,
                Some(stream),
                StreamTarget::Writer(Box::new(ChannelWriter(tx))),
                &ctx.cancel,
                ctx.progress.clone(),
            );
            let insert = insert_documents(&target, rx, conf, &name);
            let (fed, inserted) = tokio::join!(feed, insert);
            // The inserts' own failure explains a stream whose reader went away.
            inserted?;
            let fed = fed.map_err(|e| e.context(format!("restoring {name}")))?;
            result.files += 1;
            result.bytes += fed.bytes;
        }
        let specs: Vec<Document> = indexes
            .into_iter()
            .filter(|i| i.get_str("name").ok() != Some("_id_"))
            .map(|mut i| {
                i.remove("ns");
                i
            })
            .collect();
        if !specs.is_empty() {
            database
                .run_command(doc! {"createIndexes": coll.as_str(), "indexes": specs})
                .await
                .map_err(|e| conf.error(&format!("creating the indexes of {name}"), e))?;
        }
    }
    Ok(result)
}

/// A collection's options and indexes from its `.metadata.json` stream.
async fn read_metadata(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    stream: &str,
    ctx: &RunContext,
) -> Result<(Document, Vec<Document>)> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    restore_stream_entry(
        repo,
        id,
        snapshot,
        Some(stream),
        StreamTarget::Writer(Box::new(Collect(buf.clone()))),
        &ctx.cancel,
        Arc::new(crate::engine::NoProgress),
    )
    .await?;
    let bytes = std::mem::take(&mut *buf.lock().unwrap_or_else(|e| e.into_inner()));
    parse_metadata(&bytes).map_err(|e| Error::corrupt(format!("stream {stream}"), e))
}

fn parse_metadata(bytes: &[u8]) -> std::result::Result<(Document, Vec<Document>), String> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let meta = match Bson::try_from(json).map_err(|e| format!("not Extended JSON: {e}"))? {
        Bson::Document(d) => d,
        _ => return Err("not a JSON object".into()),
    };
    let options = meta.get_document("options").cloned().unwrap_or_default();
    let indexes = match meta.get("indexes") {
        None => Vec::new(),
        Some(Bson::Array(a)) => a
            .iter()
            .map(|i| match i {
                Bson::Document(d) => Ok(d.clone()),
                _ => Err("an index that is not an object".to_string()),
            })
            .collect::<std::result::Result<_, _>>()?,
        Some(_) => return Err("indexes is not a list".into()),
    };
    Ok((options, indexes))
}

/// A restore's writer collecting a small stream (a metadata file).
struct Collect(Arc<Mutex<Vec<u8>>>);

impl Write for Collect {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() + b.len() > MAX_METADATA {
            return Err(std::io::Error::other("a metadata file larger than 16 MiB"));
        }
        v.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A restore's writer handing the stream to [`insert_documents`] (it runs on the restore's
/// writer thread, outside the runtime).
struct ChannelWriter(tokio::sync::mpsc::Sender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(b.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Splits concatenated BSON into documents, as they come.
#[derive(Debug, Default)]
struct BsonSplitter {
    buf: Vec<u8>,
    /// Bytes of the stream taken out as documents.
    offset: u64,
}

impl BsonSplitter {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The whole documents received so far.
    fn documents(&mut self) -> std::result::Result<Vec<RawDocumentBuf>, String> {
        let mut out = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let len = i32::from_le_bytes(self.buf[at..at + 4].try_into().expect("4 bytes"));
            let start = self.offset + at as u64;
            if len < 5 || len as usize > MAX_DOCUMENT {
                return Err(format!(
                    "a document at byte {start} claims {len} bytes (not BSON)"
                ));
            }
            let len = len as usize;
            if self.buf.len() - at < len {
                break;
            }
            let doc = RawDocumentBuf::from_bytes(self.buf[at..at + len].to_vec())
                .map_err(|e| format!("the document at byte {start}: {e}"))?;
            out.push(doc);
            at += len;
        }
        self.buf.drain(..at);
        self.offset += at as u64;
        Ok(out)
    }

    /// At the stream's end: nothing may be left.
    fn end(&self) -> std::result::Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "it ends inside a document ({} bytes after byte {})",
                self.buf.len(),
                self.offset
            ))
        }
    }
}

/// Inserts the documents of the stream `rx` yields into `coll`, in batches.
async fn insert_documents(
    coll: &mongodb::Collection<RawDocumentBuf>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    conf: &MongoConf,
    name: &str,
) -> Result<u64> {
    let corrupt = |e: String| Error::corrupt(format!("the documents of {name}"), e);
    let mut split = BsonSplitter::default();
    let mut batch: Vec<RawDocumentBuf> = Vec::new();
    let mut batch_bytes = 0;
    let mut count = 0u64;
    let doing = format!("inserting into {name}");
    loop {
        let more = rx.recv().await;
        match &more {
            Some(data) => split.push(data),
            None => split.end().map_err(corrupt)?,
        }
        for d in split.documents().map_err(corrupt)? {
            batch_bytes += d.as_bytes().len();
            batch.push(d);
            if batch.len() >= INSERT_DOCS || batch_bytes >= INSERT_BYTES {
                count += batch.len() as u64;
                coll.insert_many(std::mem::take(&mut batch))
                    .await
                    .map_err(|e| conf.error(&doing, e))?;
                batch_bytes = 0;
            }
        }
        if more.is_none() {
            break;
        }
    }
    if !batch.is_empty() {
        count += batch.len() as u64;
        coll.insert_many(batch)
            .await
            .map_err(|e| conf.error(&doing, e))?;
    }
    Ok(count)
}

/// Restores a `mongodump --archive` through `mongorestore --archive`.
async fn restore_archive(
    repo: &Repository,
    id: Id,
    snapshot: &Snapshot,
    action: &FreezerAction,
    ctx: &RunContext,
    conf: &MongoConf,
    client: &Client,
) -> Result<RestoreResult> {
    let tool = find_on_path("mongorestore", &ctx.exec_env).ok_or_else(|| {
        Error::not_found(format!(
            "mongorestore on PATH (snapshot {} is a mongodump archive; install {TOOLS_PACKAGE})",
            id.short()
        ))
    })?;
    if !action.overwrite {
        let mut busy = Vec::new();
        for db in user_databases(client, conf).await? {
            for (coll, _) in list_collections(client, conf, &db).await? {
                let one = client
                    .database(&db)
                    .collection::<Document>(&coll)
                    .find_one(doc! {})
                    .await
                    .map_err(|e| conf.error(&format!("reading {db}.{coll}"), e))?;
                if one.is_some() {
                    busy.push(format!("{db}.{coll}"));
                }
            }
        }
        if !busy.is_empty() {
            return Err(Error::bad_input(
                "overwrite",
                format!(
                    "collections on the MongoDB server at {} hold documents: {}; restore an archive into an empty server, or with overwrite (mongorestore --drop)",
                    conf.server(),
                    busy.join(", ")
                ),
            ));
        }
    }
    let secret = SecretDir::new()?;
    let mut extra = vec!["--archive"];
    if action.overwrite {
        extra.push("--drop");
    }
    let argv = tool_argv(&tool, conf, &secret, &extra)?;
    let r = restore_stream_entry(
        repo,
        id,
        snapshot,
        Some(ARCHIVE),
        StreamTarget::Command(StreamCommand::program(argv, ctx.exec_env.clone())),
        &ctx.cancel,
        ctx.progress.clone(),
    )
    .await;
    drop(secret);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> std::result::Result<MongoConf, String> {
        MongoConf::from_conf(DbConf::parse(text)?)
    }

    #[test]
    fn conf_defaults_and_keys() {
        let d = conf("[default]\n").unwrap();
        assert_eq!(d.server(), "localhost:27017");
        assert!(d.user.is_none() && !d.tls);
        let c = conf(
            "[default]\nhost=db1\nport=27018\nuser=bk\npassword=s3cret\nauth_source=ops\ntls=true\ntls_ca_file=/ca.pem\ntimeout=5\n",
        )
        .unwrap();
        assert_eq!(c.server(), "db1:27018");
        assert_eq!(c.auth_source.as_deref(), Some("ops"));
        assert!(c.tls && c.timeout == Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("s3cret"));
        let o = c.client_options();
        assert_eq!(o.credential.unwrap().source.as_deref(), Some("ops"));
        assert_eq!(o.direct_connection, Some(true));
        assert_eq!(
            conf("[default]\nhost=::1\n").unwrap().server(),
            "[::1]:27017"
        );
        for (bad, says) in [
            ("[default]\nsocket=/tmp/m.sock\n", "socket"),
            ("[default]\nhots=x\n", "hots"),
            ("[default]\npassword=x\n", "without a user"),
            ("[default]\ntls=maybe\n", "maybe"),
            ("[default]\ntls_ca_file=/ca\n", "tls_ca_file"),
            ("[default]\ntimeout=soon\n", "soon"),
        ] {
            let e = conf(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn the_primary_check_reads_hello_and_is_master() {
        let ok = |d: Document| primary_check(&d, "h:1");
        ok(doc! {"isWritablePrimary": true, "ok": 1}).unwrap();
        ok(doc! {"ismaster": true, "ok": 1.0}).unwrap();
        ok(doc! {"isWritablePrimary": true, "setName": "rs0", "me": "a:1", "primary": "a:1"})
            .unwrap();
        let refused = |d: Document| ok(d).unwrap_err().to_string();
        let e = refused(doc! {
            "isWritablePrimary": false, "secondary": true, "setName": "rs0",
            "me": "b:1", "primary": "a:1"
        });
        assert!(e.starts_with("mongo_conf:"), "{e}");
        assert!(
            e.contains("h:1 is a secondary of replica set rs0 (its primary is a:1)"),
            "{e}"
        );
        let e = refused(doc! {"ismaster": false, "arbiterOnly": true, "setName": "rs0"});
        assert!(
            e.contains("an arbiter") && e.contains("no primary now"),
            "{e}"
        );
        // Upstream's own test: `me` is not `primary`.
        let e = refused(doc! {"isWritablePrimary": true, "me": "b:1", "primary": "a:1"});
        assert!(e.contains("not the writable primary"), "{e}");
        assert!(refused(doc! {"ok": 1}).contains("not the writable primary"));
    }

    #[test]
    fn stream_names_round_trip() {
        let (d, m) = stream_names("shop", "a/b%c.d");
        assert_eq!(d, "shop.a%2Fb%25c.d.bson");
        assert_eq!(m, "shop.a%2Fb%25c.d.metadata.json");
        let back = |db: &str, coll: &str| (db.to_string(), coll.to_string());
        assert_eq!(
            parse_stream_name(&d),
            Some(StreamKind::Data {
                db: back("shop", "a/b%c.d").0,
                coll: back("shop", "a/b%c.d").1
            })
        );
        assert_eq!(
            parse_stream_name(&m),
            Some(StreamKind::Metadata {
                db: "shop".into(),
                coll: "a/b%c.d".into()
            })
        );
        // A collection named like a metadata file stays a collection.
        let (d, _) = stream_names("x", "y.metadata.json");
        assert!(
            matches!(parse_stream_name(&d), Some(StreamKind::Data { coll, .. }) if coll == "y.metadata.json")
        );
        for bad in ["dump.sql", "nodot.bson", ".x.bson", "x..bson"] {
            assert_eq!(parse_stream_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn bson_splits_across_runs_and_refuses_garbage() {
        let a = RawDocumentBuf::try_from(&doc! {"a": 1, "s": "x"}).unwrap();
        let b = RawDocumentBuf::try_from(&doc! {"b": {"c": [1, 2]}}).unwrap();
        let mut all = a.as_bytes().to_vec();
        all.extend_from_slice(b.as_bytes());
        let mut s = BsonSplitter::default();
        let mut got = Vec::new();
        for piece in all.chunks(3) {
            s.push(piece);
            got.extend(s.documents().unwrap());
        }
        s.end().unwrap();
        assert_eq!(got, [a.clone(), b]);
        let mut s = BsonSplitter::default();
        s.push(&a.as_bytes()[..7]);
        assert!(s.documents().unwrap().is_empty());
        assert!(s.end().unwrap_err().contains("ends inside"));
        let mut s = BsonSplitter::default();
        s.push(b"\xff\xff\xff\x7fjunk");
        assert!(s.documents().unwrap_err().contains("not BSON"));
    }

    #[test]
    fn metadata_is_extended_json_and_reads_back() {
        let idx = vec![
            doc! {"v": 2, "key": {"_id": 1}, "name": "_id_"},
            doc! {"v": 2, "key": {"a": 1, "b": -1}, "name": "a_1_b_-1", "unique": true},
        ];
        let json =
            metadata_json("c", doc! {"capped": true, "size": 4096_i64}, idx.clone()).unwrap();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains(r#""$numberLong":"4096""#), "{text}");
        assert!(text.contains(r#""collectionName":"c""#), "{text}");
        let (options, indexes) = parse_metadata(&json).unwrap();
        assert_eq!(options, doc! {"capped": true, "size": 4096_i64});
        assert_eq!(indexes, idx);
        assert!(parse_metadata(b"{").unwrap_err().contains("not JSON"));
        assert!(parse_metadata(b"[]").is_err());
    }

    #[test]
    fn tools_get_the_password_in_a_private_file_only() {
        use std::os::unix::fs::PermissionsExt;
        let c = conf(
            "[default]\nhost=db1\nuser=bk\npassword=it's-s3cret\ntls=1\ntls_ca_file=/ca.pem\n",
        )
        .unwrap();
        let secret = SecretDir::new().unwrap();
        let argv = tool_argv(Path::new("/usr/bin/mongodump"), &c, &secret, &["--archive"]).unwrap();
        assert!(argv.iter().all(|a| !a.contains("s3cret")), "{argv:?}");
        assert_eq!(
            &argv[..5],
            [
                "/usr/bin/mongodump",
                "--host=db1",
                "--port=27017",
                "--username=bk",
                "--authenticationDatabase=admin"
            ]
        );
        assert!(argv.contains(&"--tlsCAFile=/ca.pem".to_string()));
        assert_eq!(argv.last().unwrap(), "--archive");
        let config = argv
            .iter()
            .find_map(|a| a.strip_prefix("--config="))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(config).unwrap(),
            "password: 'it''s-s3cret'\n"
        );
        let mode = std::fs::metadata(config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let anon = tool_argv(
            Path::new("mongorestore"),
            &MongoConf::default(),
            &secret,
            &[],
        )
        .unwrap();
        assert_eq!(anon, ["mongorestore", "--host=localhost", "--port=27017"]);
    }

    #[test]
    fn tools_are_found_on_the_jobs_path_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mongodump");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let env = BTreeMap::from([(
            "PATH".to_string(),
            format!("/nonexistent:{}", d.path().display()),
        )]);
        assert_eq!(find_on_path("mongodump", &env), None, "not executable");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path("mongodump", &env), Some(p));
        assert_eq!(find_on_path("mongodump", &BTreeMap::new()), None);
    }
}

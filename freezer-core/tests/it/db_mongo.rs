//! Mode `mongo` against a MongoDB wire-protocol server: nx-27017 (PyPI, MongoDB's wire
//! protocol over SQLite; no real `mongod` installs here), started once per test binary on a
//! free loopback port, used by one test at a time, each starting from an empty server.
//!
//! Through the job API: collections with many BSON types, nested documents, binary data, a
//! unique and a compound index are backed up through the driver (no `mongodump` on the job's
//! PATH), the server is emptied, and a restore brings every document and index back; a
//! restore over collections that hold documents is refused unless `overwrite`; a second
//! backup of the same data adds almost nothing. Bad cases (an unreachable server, a
//! `mongo_conf` that is not INI or has an unknown key, credentials the server refuses, the
//! server killed during the backup) each fail with an error naming the cause, leave no
//! snapshot and no lock, and the repository checks clean. What nx-27017 cannot be (a
//! secondary, a server with users) is covered by the module's unit tests and said in
//! docs/COMPAT.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use freezer_core::engine::{
    BackupOptions, BackupResult, CheckOptions, NoProgress, ReadData, check,
};
use freezer_core::job::{ActionOutcome, FreezerAction, RunContext, SourceMode, run_action};
use mongodb::Client;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc, oid::ObjectId, spec::BinarySubtype};

use crate::servers::{free_port, reap_at_exit, show_log_on_failure};
use crate::support::*;

const INSTALL: &str =
    "python3 -m venv target/mongo-venv && target/mongo-venv/bin/pip install 'nx-27017==0.8.1'";

/// nx-27017: `FREEZER_TEST_NX_27017`, or the virtual environment test.sh makes.
fn nx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("FREEZER_TEST_NX_27017") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/mongo-venv/bin/nx-27017");
    assert!(
        venv.exists(),
        "nx-27017 (a MongoDB wire-protocol server from PyPI) is missing at {}; these tests need it. \
         Install it with: {INSTALL} (./test.sh does), or set FREEZER_TEST_NX_27017",
        venv.display()
    );
    venv
}

/// A running nx-27017 with its own data folder.
struct Nx {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Nx {
    /// The server the tests of this binary share (killed when the binary ends).
    fn shared() -> &'static Nx {
        static SHARED: OnceLock<Nx> = OnceLock::new();
        let nx = SHARED.get_or_init(|| {
            let mut nx = Nx::start();
            let dir = nx._dir.take().unwrap().keep();
            let child = nx.child.take().unwrap();
            reap_at_exit(child.id(), Some(&dir));
            std::mem::forget(child);
            nx
        });
        show_log_on_failure("nx-27017", &nx.log);
        nx
    }

    /// A server of its own, killed when dropped.
    fn start() -> Nx {
        let bin = nx_bin();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("nx.log");
        let out = std::fs::File::create(dir.path().join("nx.out")).unwrap();
        let mut child = Command::new(&bin)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--host", "127.0.0.1", "-p", &port.to_string()])
            .arg("--log-file")
            .arg(&log)
            .arg("--pid-file")
            .arg(dir.path().join("nx.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", bin.display()));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "nx-27017 exited early: {st}: {}",
                    std::fs::read_to_string(dir.path().join("nx.out")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nx-27017 was not ready on port {port} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Nx {
            port,
            log,
            child: Some(child),
            _dir: Some(dir),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn client(&self) -> Client {
        Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=10000",
            self.port
        ))
        .await
        .unwrap()
    }
}

impl Drop for Nx {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test at a time on the shared server: each starts from an empty one.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SYSTEM_DBS: [&str; 3] = ["admin", "local", "config"];

async fn user_dbs(c: &Client) -> Vec<String> {
    let mut v = c.list_database_names().await.unwrap();
    v.retain(|d| !SYSTEM_DBS.contains(&d.as_str()));
    v.sort();
    v
}

/// Drops every database but the server's own.
async fn wipe(c: &Client) {
    for db in user_dbs(c).await {
        c.database(&db).drop().await.unwrap();
    }
    assert!(user_dbs(c).await.is_empty(), "the server is empty");
}

/// Collections of several shapes: 2500 documents of many BSON types (more than a cursor's
/// batch and an insert batch), nested documents and arrays, binary data, a unique and a
/// compound index; a collection of large documents; an empty collection.
async fn fill(c: &Client) {
    let items = c.database("shop").collection::<Document>("items");
    let docs: Vec<Document> = (0..2500i32)
        .map(|i| {
            doc! {
                "_id": i,
                "sku": format!("sku-{i:05}"),
                "cat": format!("c{}", i % 7),
                "price": (i % 97) as i64 * 1_000_000_007,
                "ratio": i as f64 / 7.0,
                "ok": i % 2 == 0,
                "none": Bson::Null,
                "when": DateTime::from_millis(1_600_000_000_123 + i as i64 * 1000),
                "tags": ["a", format!("t{}", i % 5), i],
                "nested": {"level": {"deep": i, "list": [1, {"x": "y", "z": [true, Bson::Null]}]}},
                "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![i as u8, 0, 255, 7] },
            }
        })
        .collect();
    items.insert_many(docs).await.unwrap();
    let db = c.database("shop");
    db.run_command(doc! {
        "createIndexes": "items",
        "indexes": [
            {"key": {"sku": 1}, "name": "sku_1", "unique": true},
            {"key": {"cat": 1, "price": -1}, "name": "cat_1_price_-1"},
        ],
    })
    .await
    .unwrap();
    let people = c.database("crm").collection::<Document>("people");
    people
        .insert_many([
            doc! {"_id": ObjectId::new(), "name": "Zoë Ångström", "bio": "x".repeat(200_000), "n": i64::MAX},
            doc! {"_id": ObjectId::new(), "name": "李雷", "bio": "y".repeat(50_000), "n": i64::MIN},
            doc! {"_id": "text-id", "name": "", "address": {"city": "Oslo", "geo": [59.91, 10.75]}, "n": -1},
        ])
        .await
        .unwrap();
    c.database("crm").create_collection("empty").await.unwrap();
}

/// What the server holds: for each `db.collection`, its documents in natural order and its
/// indexes by name.
async fn state(c: &Client) -> BTreeMap<String, (Vec<Document>, Vec<Document>)> {
    let mut out = BTreeMap::new();
    for db in user_dbs(c).await {
        let d = c.database(&db);
        for coll in d.list_collection_names().await.unwrap() {
            let col = d.collection::<Document>(&coll);
            let mut docs = Vec::new();
            let mut cursor = col.find(doc! {}).await.unwrap();
            while cursor.advance().await.unwrap() {
                docs.push(cursor.deserialize_current().unwrap());
            }
            let mut idx = Vec::new();
            let mut cursor = d
                .run_cursor_command(doc! {"listIndexes": coll.as_str()})
                .await
                .unwrap();
            while cursor.advance().await.unwrap() {
                idx.push(cursor.deserialize_current().unwrap());
            }
            idx.sort_by(|a, b| a.get_str("name").unwrap().cmp(b.get_str("name").unwrap()));
            out.insert(format!("{db}.{coll}"), (docs, idx));
        }
    }
    out
}

struct Fixture {
    tmp: tempfile::TempDir,
    port: u16,
}

impl Fixture {
    async fn new(port: u16) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pass"), "pw\n").unwrap();
        let f = Fixture { tmp, port };
        f.conf("mongo.ini", "");
        init(vec![local(&f.repo())], Some("pw")).await;
        f
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// A `mongo_conf` naming the server, with `more` lines.
    fn conf(&self, name: &str, more: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(
            &p,
            format!(
                "[default]\nhost = 127.0.0.1\nport = {}\ntimeout = 5\n{more}",
                self.port
            ),
        )
        .unwrap();
        p
    }

    fn action(&self, conf: &Path, fields: &str) -> FreezerAction {
        FreezerAction::from_json(&format!(
            r#"{{"container":{},"backup_name":"db","hostname":"test-host","encrypt_pass_file":{},"mode":"mongo","mongo_conf":{},{fields}}}"#,
            serde_json::json!(self.repo()),
            serde_json::json!(self.path("pass")),
            serde_json::json!(conf),
        ))
        .unwrap()
    }

    /// The job's context: a PATH without `mongodump`, so the driver dumps.
    fn ctx(&self) -> RunContext {
        let bin = self.path("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let mut c = RunContext::current();
        c.actor = actor();
        c.exec_env = BTreeMap::from([("PATH".to_string(), bin.display().to_string())]);
        c
    }

    async fn backup_with(&self, conf: &Path) -> freezer_core::Result<BackupResult> {
        match run_action(&self.action(conf, r#""action":"backup""#), &self.ctx()).await? {
            ActionOutcome::Backup(b) => Ok(*b),
            other => panic!("{other:?}"),
        }
    }

    async fn backup(&self) -> BackupResult {
        let b = self.backup_with(&self.path("mongo.ini")).await.unwrap();
        assert!(b.is_complete(), "{b:?}");
        b
    }

    async fn restore(&self, fields: &str) -> freezer_core::Result<()> {
        let a = self.action(
            &self.path("mongo.ini"),
            &format!(r#""action":"restore"{fields}"#),
        );
        match run_action(&a, &self.ctx()).await? {
            ActionOutcome::Restore(r) => {
                assert!(r.is_complete(), "{r:?}");
                Ok(())
            }
            other => panic!("{other:?}"),
        }
    }

    async fn snapshots(&self) -> usize {
        let repo = open(&[&self.repo()], Some("pw")).await;
        repo.snapshots().await.unwrap().0.len()
    }

    async fn assert_checks_clean(&self) {
        let mut repo = open(&[&self.repo()], Some("pw")).await;
        let mut o = CheckOptions::new(actor());
        o.read_data = ReadData::All;
        let r = check(&mut repo, &o, Arc::new(NoProgress)).await.unwrap();
        assert!(r.is_ok(), "{:?}", r.damaged);
        assert!(!has_lock(&self.repo()), "no lock left behind");
    }
}

/// Counts the concatenated BSON documents of a file.
fn bson_documents(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap();
    let (mut at, mut n) = (0, 0);
    while at < data.len() {
        let len = i32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        mongodb::bson::RawDocument::from_bytes(&data[at..at + len]).unwrap();
        at += len;
        n += 1;
    }
    assert_eq!(at, data.len());
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_and_index_restores_into_an_empty_server() {
    let _one = SERVER.lock().await;
    let nx = Nx::shared();
    let c = nx.client().await;
    wipe(&c).await;
    fill(&c).await;
    let before = state(&c).await;
    assert_eq!(before["shop.items"].0.len(), 2500);
    assert_eq!(
        before["shop.items"].1.len(),
        3,
        "{:?}",
        before["shop.items"].1
    );
    assert_eq!(before["crm.people"].0.len(), 3);
    assert!(before.contains_key("crm.empty"));

    let f = Fixture::new(nx.port).await;
    let t = Instant::now();
    let b = f.backup().await;
    let s = &b.snapshot;
    eprintln!("backup of {} bytes in {:?}", s.stats.bytes, t.elapsed());
    assert_eq!(s.mode, "mongo");
    assert_eq!(s.path_to_backup, format!("127.0.0.1:{}", nx.port));
    assert_eq!(
        s.extra.get("mongo_method"),
        Some(&serde_json::json!("driver"))
    );
    assert_eq!(
        s.extra.get("mongo_collections"),
        Some(&serde_json::json!(3))
    );
    assert_eq!(
        s.stats.files, 6,
        "a .bson and a .metadata.json per collection"
    );

    // A folder restore: the files mongodump would write, flat.
    let out = f.path("files");
    f.restore(&format!(
        r#","restore_abs_path":{}"#,
        serde_json::json!(out)
    ))
    .await
    .unwrap();
    let files = fingerprint(&out);
    let names: Vec<String> = files
        .keys()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for n in [
        "crm.empty.bson",
        "crm.empty.metadata.json",
        "crm.people.bson",
        "crm.people.metadata.json",
        "shop.items.bson",
        "shop.items.metadata.json",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
    }
    let file = |n: &str| {
        files
            .keys()
            .find(|p| p.file_name().unwrap() == n)
            .map(|p| out.join(p))
            .unwrap()
    };
    assert_eq!(bson_documents(&file("shop.items.bson")), 2500);
    assert_eq!(std::fs::metadata(file("crm.empty.bson")).unwrap().len(), 0);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file("shop.items.metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["collectionName"], "items");
    assert_eq!(meta["indexes"].as_array().unwrap().len(), 3, "{meta}");

    // Into the emptied server: everything back, documents in their order, every index.
    wipe(&c).await;
    f.restore("").await.unwrap();
    let after = state(&c).await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (k, (docs, idx)) in &before {
        assert!(after[k].0 == *docs, "{k}: the documents differ");
        assert_eq!(after[k].1, *idx, "{k}: the indexes differ");
    }
    // The unique index holds.
    let dup = c
        .database("shop")
        .collection::<Document>("items")
        .insert_one(doc! {"sku": "sku-00001"})
        .await;
    assert!(dup.is_err(), "the unique index refuses a duplicate");

    // Over collections that hold documents: refused, naming them and `overwrite`; nothing
    // changes. With overwrite: they are dropped and restored.
    c.database("shop")
        .collection::<Document>("items")
        .delete_one(doc! {"_id": 0})
        .await
        .unwrap();
    let e = f.restore("").await.unwrap_err().to_string();
    eprintln!("not empty: {e}");
    assert!(
        e.starts_with("overwrite:") && e.contains("shop.items"),
        "{e}"
    );
    assert_eq!(state(&c).await["shop.items"].0.len(), 2499);
    f.restore(r#","overwrite":true"#).await.unwrap();
    let again = state(&c).await;
    for (k, (docs, idx)) in &before {
        assert!(
            again[k].0 == *docs,
            "{k}: the documents differ after overwrite"
        );
        assert_eq!(again[k].1, *idx, "{k}: the indexes differ after overwrite");
    }
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_data_twice_adds_almost_nothing() {
    let _one = SERVER.lock().await;
    let nx = Nx::shared();
    let c = nx.client().await;
    wipe(&c).await;
    fill(&c).await;
    let f = Fixture::new(nx.port).await;
    let first = f.backup().await.snapshot.stats;
    let second = f.backup().await.snapshot.stats;
    eprintln!(
        "mongo dump of {} bytes: first backup added {} bytes, the second {} bytes",
        first.bytes, first.bytes_added, second.bytes_added
    );
    assert_eq!(first.bytes, second.bytes);
    // The documents compress well: what counts is the second against the first.
    assert!(first.bytes_added > 10_000, "{first:?}");
    assert!(
        second.bytes_added * 50 < first.bytes_added,
        "the second backup added {} bytes, the first {}",
        second.bytes_added,
        first.bytes_added
    );
    assert_eq!(f.snapshots().await, 2);
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_and_confs_fail_clearly_and_leave_no_snapshot() {
    let _one = SERVER.lock().await;
    let nx = Nx::shared();
    let c = nx.client().await;
    wipe(&c).await;
    fill(&c).await;
    let f = Fixture::new(nx.port).await;

    // Nothing listens on the port.
    let closed = free_port();
    let conf = f.path("closed.ini");
    std::fs::write(&conf, format!("[default]\nhost=127.0.0.1\nport={closed}\n")).unwrap();
    let e = f.backup_with(&conf).await.unwrap_err().to_string();
    eprintln!("closed port: {e}");
    assert!(
        e.contains("cannot reach the MongoDB server at 127.0.0.1:") && e.contains("refused"),
        "{e}"
    );

    // Not INI, missing, an unknown key, a socket: refused before anything runs, naming
    // mongo_conf.
    let not_ini = f.path("not.ini");
    std::fs::write(&not_ini, "{\"host\": \"127.0.0.1\"}\n").unwrap();
    for (conf, says) in [
        (not_ini, "mongo_conf"),
        (f.path("missing.ini"), "missing.ini"),
        (f.conf("typo.ini", "hots = x\n"), "unknown key \"hots\""),
        (f.conf("sock.ini", "socket = /tmp/m.sock\n"), "socket"),
    ] {
        let e = f.backup_with(&conf).await.unwrap_err().to_string();
        eprintln!("{}: {e}", conf.display());
        assert!(e.starts_with("mongo_conf:") && e.contains(says), "{e}");
    }

    // Credentials the server does not take (nx-27017 has no users: its refusal of the login
    // stands for a wrong password here); the password appears nowhere.
    let pw = "Sesame-9Zq-secret";
    let conf = f.conf("auth.ini", &format!("user = backup\npassword = {pw}\n"));
    let e = f.backup_with(&conf).await.unwrap_err().to_string();
    eprintln!("credentials: {e}");
    assert!(!e.contains(pw), "{e}");
    assert!(e.contains("refused user backup"), "{e}");

    assert_eq!(f.snapshots().await, 0, "no snapshot from a failed backup");
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_during_the_backup_leaves_no_snapshot() {
    // A server of its own, killed after the source has listed the collections and before
    // their documents are read.
    let mut nx = Nx::start();
    let c = nx.client().await;
    fill(&c).await;
    let f = Fixture::new(nx.port).await;
    let action = f.action(&f.path("mongo.ini"), r#""action":"backup""#);
    let ctx = f.ctx();
    let source = freezer_core::db::backup_source(SourceMode::Mongo, &action, &ctx)
        .await
        .unwrap();
    nx.kill();
    let mut repo = open(&[&f.repo()], Some("pw")).await;
    let opts = BackupOptions::new("test-host", "db", actor());
    let e = freezer_core::engine::backup(&mut repo, source, &opts, Arc::new(NoProgress))
        .await
        .unwrap_err()
        .to_string();
    eprintln!("killed: {e}");
    assert!(e.contains("MongoDB server at 127.0.0.1"), "{e}");
    assert!(e.contains(".bson"), "the error names the stream: {e}");
    drop(repo);
    assert_eq!(f.snapshots().await, 0);
    f.assert_checks_clean().await;
}

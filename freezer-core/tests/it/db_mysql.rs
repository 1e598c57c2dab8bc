//! Mode `mysql` against real MariaDB servers (`mariadbd` of Debian's mariadb-server, each with
//! its own data folder, on a free loopback port), through the job API:
//!
//! - logical, one database, on the server the tests share: a writer commits transactions that
//!   each touch two tables while the backup runs; the database is dropped and restored; both
//!   tables hold the same transactions (no half one), and a table nobody wrote keeps its
//!   `CHECKSUM TABLE`;
//! - logical, every database (the default), from a server of its own into a freshly installed
//!   one: data, a view, a routine, a trigger, an event and a user come back;
//! - physical (`mariadb-backup`), from a server of its own while the writer runs: restored into
//!   an empty data folder (a folder that holds anything is refused, untouched; a failing
//!   prepare leaves the folder as it was found), on which a second `mariadbd` starts and shows
//!   a consistent point;
//! - bad cases: a closed port, a wrong password, a missing tool, a tool killed mid-stream, a
//!   `mysql_conf` missing or not INI: each fails naming the cause, leaves no snapshot, no lock,
//!   and a repository that checks clean; the password is in no error and no recorded command.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use freezer_core::engine::{CheckOptions, NoProgress, ReadData, check};
use freezer_core::job::{ActionOutcome, FreezerAction, RunContext, exec_environment, run_action};

use crate::mariadb_server::*;
use crate::support::*;

/// Tables `a` and `b` (each transaction of the writer adds one row to both) and `still`
/// (rows nobody changes), in `db`.
fn make_tables(s: &Server, db: &str) {
    s.sql(&format!(
        "CREATE DATABASE IF NOT EXISTS `{db}`; USE `{db}`;
         CREATE TABLE a (tx INT PRIMARY KEY, v BIGINT NOT NULL, pad VARBINARY(200)) ENGINE=InnoDB;
         CREATE TABLE b (tx INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB;
         CREATE TABLE still (id INT PRIMARY KEY, payload BLOB) ENGINE=InnoDB;
         INSERT INTO still SELECT seq, RANDOM_BYTES(100) FROM seq_1_to_2000;"
    ));
}

/// A client committing transactions into `db`: each inserts transaction `k` into `a`
/// and into `b`, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(s: &Server, db: &str) -> Writer {
        let mut child = s
            .client()
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut input = child.stdin.take().unwrap();
            let mut k = 1u64;
            while !flag.load(Ordering::Relaxed) {
                let sql = format!(
                    "START TRANSACTION; INSERT INTO a VALUES ({k}, {v}, RANDOM_BYTES(150)); \
                     DO SLEEP(0.001); INSERT INTO b VALUES ({k}, {v}); COMMIT;\n",
                    v = k * 7919 % 100_003
                );
                if input.write_all(sql.as_bytes()).is_err() {
                    break;
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(input);
            let st = child.wait().unwrap();
            assert!(st.success(), "the writer's client failed: {st}");
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
    }
}

fn rows(s: &Server, db: &str, table: &str) -> u64 {
    s.sql(&format!("SELECT COUNT(*) FROM `{db}`.{table}"))
        .parse()
        .unwrap()
}

/// Waits until the writer has committed `n` transactions.
fn wait_rows(s: &Server, db: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(s, db, "b") < n {
        assert!(Instant::now() < deadline, "the writer is not writing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts `a` and `b` hold the same whole transactions, at least `min` and at most `max`;
/// returns how many.
fn assert_consistent(s: &Server, db: &str, min: u64, max: u64) -> u64 {
    let (na, nb) = (rows(s, db, "a"), rows(s, db, "b"));
    assert_eq!(na, nb, "a half transaction: {na} rows in a, {nb} in b");
    let sums = s.sql(&format!(
        "SELECT (SELECT SUM(v) FROM `{db}`.a), (SELECT SUM(v) FROM `{db}`.b), \
         (SELECT SUM(CRC32(CONCAT(tx, ':', v))) FROM `{db}`.a), \
         (SELECT SUM(CRC32(CONCAT(tx, ':', v))) FROM `{db}`.b), \
         (SELECT COUNT(*) FROM `{db}`.a LEFT JOIN `{db}`.b USING (tx) WHERE b.tx IS NULL), \
         (SELECT MAX(tx) FROM `{db}`.a)"
    ));
    let f: Vec<&str> = sums.split('\t').collect();
    assert_eq!(f[0], f[1], "sums differ: {sums}");
    assert_eq!(f[2], f[3], "checksums differ: {sums}");
    assert_eq!(f[4], "0", "rows of a without their b: {sums}");
    assert_eq!(f[5], na.to_string(), "transactions missing: {sums}");
    assert!(
        (min..=max).contains(&na),
        "{na} transactions restored; expected {min}..={max}"
    );
    na
}

fn checksum(s: &Server, db: &str, table: &str) -> String {
    s.sql(&format!("CHECKSUM TABLE `{db}`.{table} EXTENDED"))
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pass"), "pw\n").unwrap();
        let f = Fixture { tmp };
        init(vec![local(&f.repo())], Some("pw")).await;
        f
    }

    fn repo(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn action(&self, fields: &str) -> FreezerAction {
        FreezerAction::from_json(&format!(
            r#"{{"container":{},"backup_name":"db","hostname":"test-host","encrypt_pass_file":{},"mode":"mysql",{fields}}}"#,
            serde_json::json!(self.repo()),
            serde_json::json!(self.path("pass")),
        ))
        .unwrap()
    }

    async fn backup_with(
        &self,
        conf: &Path,
        method: &str,
        c: &RunContext,
    ) -> freezer_core::Result<freezer_core::engine::BackupResult> {
        let a = self.action(&format!(
            r#""action":"backup","mysql_conf":{},"mysql_method":"{method}""#,
            serde_json::json!(conf)
        ));
        match run_action(&a, c).await? {
            ActionOutcome::Backup(b) => Ok(*b),
            other => panic!("{other:?}"),
        }
    }

    async fn backup(&self, conf: &Path, method: &str) -> freezer_core::engine::BackupResult {
        let b = self.backup_with(conf, method, &ctx()).await.unwrap();
        assert!(b.is_complete(), "{b:?}");
        b
    }

    async fn restore(&self, fields: &str) -> freezer_core::Result<()> {
        self.restore_with(fields, &ctx()).await
    }

    async fn restore_with(&self, fields: &str, c: &RunContext) -> freezer_core::Result<()> {
        let a = self.action(&format!(r#""action":"restore",{fields}"#));
        match run_action(&a, c).await? {
            ActionOutcome::Restore(r) => {
                assert!(r.is_complete(), "{r:?}");
                Ok(())
            }
            other => panic!("{other:?}"),
        }
    }

    async fn snapshots(&self) -> Vec<freezer_core::repo::snapshot::Snapshot> {
        let repo = open(&[&self.repo()], Some("pw")).await;
        repo.snapshots()
            .await
            .unwrap()
            .0
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    async fn assert_checks_clean(&self) {
        let mut repo = open(&[&self.repo()], Some("pw")).await;
        let mut o = CheckOptions::new(actor());
        o.read_data = ReadData::All;
        let r = check(&mut repo, &o, Arc::new(NoProgress)).await.unwrap();
        assert!(r.is_ok(), "{:?}", r.damaged);
        assert!(!has_lock(&self.repo()), "no lock left behind");
    }

    /// A backup that must fail: its error, after checking that no snapshot is left, the
    /// repository checks clean, and the password shows nowhere.
    async fn backup_fails(&self, conf: &Path, method: &str, c: &RunContext) -> String {
        let e = self
            .backup_with(conf, method, c)
            .await
            .expect_err("the backup must fail")
            .to_string();
        assert!(!e.contains(PASSWORD), "the password is in the error: {e}");
        assert!(self.snapshots().await.is_empty(), "no snapshot: {e}");
        self.assert_checks_clean().await;
        e
    }
}

fn ctx() -> RunContext {
    let mut c = RunContext::current();
    c.actor = actor();
    c.exec_env = exec_environment(std::env::vars());
    c
}

/// The recorded command of the one snapshot: the tool, and no password.
async fn assert_recorded(f: &Fixture, tool: &str) {
    let snaps = f.snapshots().await;
    assert_eq!(snaps.len(), 1);
    let s = &snaps[0];
    assert_eq!(s.mode, "mysql");
    let cmd = s.command.clone().unwrap_or_default();
    assert!(cmd.contains(tool), "{cmd}");
    assert!(cmd.contains("--defaults-extra-file="), "{cmd}");
    assert!(!cmd.contains(PASSWORD), "the password is in argv: {cmd}");
    // The option file lived as long as the backup.
    let file = cmd
        .split(' ')
        .find_map(|w| w.strip_prefix("--defaults-extra-file="))
        .unwrap();
    assert!(!Path::new(file).exists(), "{file} is left behind");
    assert!(s.extra.contains_key("mysql_method"), "{:?}", s.extra);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_logical_backup_while_writing_restores_a_consistent_point() {
    let s = Server::shared();
    let f = Fixture::new().await;
    let db = s.database();
    make_tables(s, &db);
    let still = checksum(s, &db, "still");
    let writer = Writer::start(s, &db);
    wait_rows(s, &db, 30);
    let before = rows(s, &db, "b");
    let conf = s.conf(f.tmp.path(), &format!("databases = {db}\n"));
    f.backup(&conf, "logical").await;
    let after = rows(s, &db, "b");
    writer.stop();
    assert!(
        after > before,
        "the writer wrote during the backup ({before} → {after})"
    );
    assert_recorded(&f, "mariadb-dump").await;

    s.sql(&format!("DROP DATABASE `{db}`"));
    f.restore(&format!(r#""mysql_conf":{}"#, serde_json::json!(conf)))
        .await
        .unwrap();
    let n = assert_consistent(s, &db, before, after);
    assert_eq!(checksum(s, &db, "still"), still);
    eprintln!("{n} transactions restored ({before} before the backup, {after} after)");
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_logical_all_databases_restore_into_a_fresh_server() {
    let s = Server::new();
    let f = Fixture::new().await;
    let db = "shop";
    make_tables(&s, db);
    s.sql(
        "USE shop; CREATE VIEW totals AS SELECT COUNT(*) n, SUM(v) s FROM a;
         CREATE PROCEDURE count_b(OUT n INT) SELECT COUNT(*) INTO n FROM b;
         CREATE TABLE audit (tx INT) ENGINE=InnoDB;
         CREATE TRIGGER b_audit AFTER INSERT ON b FOR EACH ROW INSERT INTO audit VALUES (NEW.tx);
         CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit;
         CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw-1'; GRANT SELECT ON shop.* TO 'app'@'%';",
    );
    let still = checksum(&s, db, "still");
    let writer = Writer::start(&s, db);
    wait_rows(&s, db, 30);
    let before = rows(&s, db, "b");
    let conf = s.conf(f.tmp.path(), "");
    f.backup(&conf, "logical").await;
    let after = rows(&s, db, "b");
    writer.stop();
    assert!(after > before, "the writer wrote during the backup");
    drop(s);

    // A server just installed: only its administrator.
    let fresh = Server::new();
    assert!(fresh.try_sql("USE shop").is_err());
    let conf = fresh.conf(f.tmp.path(), "");
    f.restore(&format!(r#""mysql_conf":{}"#, serde_json::json!(conf)))
        .await
        .unwrap();
    let n = assert_consistent(&fresh, db, before, after);
    assert_eq!(checksum(&fresh, db, "still"), still);
    assert_eq!(rows(&fresh, db, "audit"), n, "the trigger's rows");
    assert_eq!(
        fresh.sql("USE shop; CALL count_b(@n); SELECT @n"),
        n.to_string()
    );
    assert_eq!(fresh.sql("SELECT n FROM shop.totals"), n.to_string());
    assert_eq!(
        fresh.sql("SELECT COUNT(*) FROM information_schema.events WHERE event_schema='shop'"),
        "1"
    );
    // The user of the first server, with its password and grant (privileges flushed).
    let out = Command::new(tool("mariadb"))
        .args([
            "--no-defaults",
            "-h127.0.0.1",
            "-uapp",
            "-papp-pw-1",
            "--batch",
            "--skip-column-names",
        ])
        .arg(format!("-P{}", fresh.port))
        .args(["-e", "SELECT COUNT(*) FROM shop.still"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    f.assert_checks_clean().await;
}

fn is_root() -> bool {
    user() == "root"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_physical_backup_while_writing_restores_into_an_empty_datadir() {
    tool("mariadb-backup");
    tool("mbstream");
    let mut s = Server::new();
    let f = Fixture::new().await;
    let db = "shop";
    make_tables(&s, db);
    let still = checksum(&s, db, "still");
    let writer = Writer::start(&s, db);
    wait_rows(&s, db, 30);
    let before = rows(&s, db, "b");
    let conf = s.conf(f.tmp.path(), "");
    f.backup(&conf, "physical").await;
    let after = rows(&s, db, "b");
    writer.stop();
    assert!(after > before, "the writer wrote during the backup");
    assert_recorded(&f, "mariadb-backup").await;
    s.stop();

    // Without restore_datadir, or into a folder that holds anything: refused, untouched.
    let e = f
        .restore(&format!(r#""mysql_conf":{}"#, serde_json::json!(conf)))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("restore_datadir"), "{e}");
    let busy = f.path("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("ibdata1"), "keep me").unwrap();
    let e = f
        .restore(&format!(r#""restore_datadir":{}"#, serde_json::json!(busy)))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("restore_datadir") && e.contains("not empty"),
        "{e}"
    );
    assert_eq!(std::fs::read(busy.join("ibdata1")).unwrap(), b"keep me");

    // Without mbstream: refused before anything, naming it and its package; nothing created.
    let mut c = ctx();
    c.exec_env.insert("PATH".into(), "/nonexistent".into());
    let absent = f.path("absent");
    let e = f
        .restore_with(
            &format!(r#""restore_datadir":{}"#, serde_json::json!(absent)),
            &c,
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mbstream") && e.contains("apt-get install mariadb-backup"),
        "{e}"
    );
    assert!(!absent.exists());

    // A prepare that fails: the error says which step; the folder is left as found (empty, or
    // absent).
    let bin = f.path("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("mariadb-backup");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'InnoDB: prepare broke' >&2\nexit 3\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = ctx();
    let path = c.exec_env.get("PATH").cloned().unwrap_or_default();
    c.exec_env
        .insert("PATH".into(), format!("{}:{path}", bin.display()));
    let empty = f.path("empty");
    std::fs::create_dir(&empty).unwrap();
    for (dir, existed) in [(&empty, true), (&absent, false)] {
        let e = f
            .restore_with(
                &format!(r#""restore_datadir":{}"#, serde_json::json!(dir)),
                &c,
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("preparing the copy") && e.contains("prepare broke"),
            "{e}"
        );
        assert_eq!(dir.exists(), existed, "{}", dir.display());
        if existed {
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "left empty");
        }
    }

    // Into an empty folder owned by another user: every file gets that owner.
    let home = tempfile::tempdir().unwrap().keep();
    let datadir = home.join("data");
    std::fs::create_dir(&datadir).unwrap();
    let owner = if is_root() {
        65534
    } else {
        rustix::process::getuid().as_raw()
    };
    if is_root() {
        std::os::unix::fs::chown(&datadir, Some(owner), Some(owner)).unwrap();
    }
    f.restore(&format!(
        r#""restore_datadir":{}"#,
        serde_json::json!(datadir)
    ))
    .await
    .unwrap();
    assert!(!datadir.join("backup-my.cnf").exists());
    assert!(datadir.join("ibdata1").exists());
    let mut todo = vec![datadir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            use std::os::unix::fs::MetadataExt;
            let m = e.metadata().unwrap();
            assert_eq!(m.uid(), owner, "{}", e.path().display());
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    let restored = Server::start(home, &datadir);
    let n = assert_consistent(&restored, db, before, after);
    assert_eq!(checksum(&restored, db, "still"), still);
    eprintln!("{n} transactions restored ({before} before the backup, {after} after)");
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unreachable_server_fails_naming_it() {
    let f = Fixture::new().await;
    // Port 1: nothing listens there (a free port could be taken by a server starting now).
    let port = 1;
    let conf = write_conf(
        f.tmp.path(),
        &format!("[default]\nhost=127.0.0.1\nport={port}\nuser={ADMIN}\npassword={PASSWORD}\n"),
    );
    for method in ["logical", "physical"] {
        let e = f.backup_fails(&conf, method, &ctx()).await;
        assert!(
            e.contains("cannot be reached") && e.contains(&format!("127.0.0.1:{port}")),
            "{method}: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_wrong_password_fails_naming_it() {
    let s = Server::shared();
    let f = Fixture::new().await;
    let conf = write_conf(
        f.tmp.path(),
        &format!(
            "[default]\nhost=127.0.0.1\nport={}\nuser={ADMIN}\npassword=not-{PASSWORD}\n",
            s.port
        ),
    );
    for method in ["logical", "physical"] {
        let e = f.backup_fails(&conf, method, &ctx()).await;
        assert!(
            e.contains("access denied") && e.contains("Access denied"),
            "{method}: {e}"
        );
    }
    // Nor into the server.
    let db = s.database();
    s.sql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (x INT)"
    ));
    let good = s.conf(f.tmp.path(), &format!("databases = {db}\n"));
    f.backup(&good, "logical").await;
    let e = f
        .restore(&format!(r#""mysql_conf":{}"#, serde_json::json!(conf)))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("access denied") && !e.contains(PASSWORD), "{e}");
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_missing_tool_fails_before_anything_runs() {
    let s = Server::shared();
    let f = Fixture::new().await;
    let conf = s.conf(f.tmp.path(), "");
    let mut c = ctx();
    let empty = f.path("bin");
    std::fs::create_dir(&empty).unwrap();
    c.exec_env
        .insert("PATH".into(), empty.display().to_string());
    let e = f.backup_fails(&conf, "logical", &c).await;
    assert!(
        e.contains("mariadb-dump") && e.contains("apt-get install mariadb-client"),
        "{e}"
    );
    let e = f.backup_fails(&conf, "physical", &c).await;
    assert!(
        e.contains("mariadb-backup") && e.contains("apt-get install mariadb-backup"),
        "{e}"
    );
    // A restore into the server without the mariadb client.
    let db = s.database();
    s.sql(&format!(
        "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (x INT)"
    ));
    let conf = s.conf(f.tmp.path(), &format!("databases = {db}\n"));
    f.backup(&conf, "logical").await;
    let e = f
        .restore_with(&format!(r#""mysql_conf":{}"#, serde_json::json!(conf)), &c)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mariadb") && e.contains("apt-get install mariadb-client"),
        "{e}"
    );
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_killed_dump_tool_leaves_no_snapshot() {
    let s = Server::shared();
    let f = Fixture::new().await;
    let db = s.database();
    make_tables(s, &db);
    let conf = s.conf(f.tmp.path(), &format!("databases = {db}\n"));
    // A mariadb-dump that is killed after a part of its dump.
    let bin = f.path("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("mariadb-dump");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n{} \"$@\" | head -c 20000\nkill -9 $$\n",
            tool("mariadb-dump").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = ctx();
    let path = c.exec_env.get("PATH").cloned().unwrap_or_default();
    c.exec_env
        .insert("PATH".into(), format!("{}:{path}", bin.display()));
    let e = f.backup_fails(&conf, "logical", &c).await;
    assert!(e.contains("SIGKILL"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_conf_missing_or_not_ini_is_refused() {
    let f = Fixture::new().await;
    let missing = f.path("nope.cnf");
    let e = f.backup_fails(&missing, "logical", &ctx()).await;
    assert!(e.contains("mysql_conf") && e.contains("nope.cnf"), "{e}");
    let junk = write_conf(f.tmp.path(), "this is = not\n[[[ an ini\n");
    let e = f.backup_fails(&junk, "logical", &ctx()).await;
    assert!(e.contains("mysql_conf") && e.contains("INI"), "{e}");
    let nosection = write_conf(f.tmp.path(), "[mysqld]\nport=1\n");
    let e = f.backup_fails(&nosection, "logical", &ctx()).await;
    assert!(e.contains("mysql_conf") && e.contains("[default]"), "{e}");
    let conf = write_conf(f.tmp.path(), "[default]\nhost=127.0.0.1\n");
    let e = f.backup_fails(&conf, "hot", &ctx()).await;
    assert!(e.contains("mysql_method") && e.contains("hot"), "{e}");
    // No mysql_conf at all.
    let a = f.action(r#""action":"backup""#);
    let e = run_action(&a, &ctx()).await.unwrap_err().to_string();
    assert!(e.contains("mysql_conf"), "{e}");
    // A restore into the server needs it too; a physical one needs restore_datadir.
    let a = f.action(r#""action":"restore""#);
    let e = run_action(&a, &ctx()).await.unwrap_err().to_string();
    assert!(e.contains("mysql_conf"), "{e}");
    let a = f.action(&format!(
        r#""action":"restore","mysql_method":"physical","mysql_conf":{}"#,
        serde_json::json!(conf)
    ));
    let e = run_action(&a, &ctx()).await.unwrap_err().to_string();
    assert!(e.contains("restore_datadir"), "{e}");
    f.assert_checks_clean().await;
}

//! Mode `postgres` against real PostgreSQL servers (Debian's postgresql-15) on loopback, with
//! scram-sha-256 password logins: a logical and a physical backup taken while a writer keeps
//! committing transactions that touch two tables, the databases dropped (or a new data
//! folder), a restore, and the data equal to one consistent point (both tables hold the same
//! rows, a prefix of what was committed). Bad input (a closed port, a wrong password, a
//! missing client program, a postgres_conf that is not INI) fails with an error naming the
//! cause, never the password, leaving no snapshot and a repository that checks clean.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use freezer_core::engine::{CheckOptions, NoProgress, ReadData, RestoreResult, check};
use freezer_core::job::{ActionOutcome, FreezerAction, RunContext, exec_environment, run_action};

use crate::postgres_server::*;
use crate::servers::{free_port, show_log_on_failure};
use crate::support::*;

/// Two tables whose rows a transaction always adds together.
fn make_tables(pg: &Pg, db: &str, rows: usize) {
    pg.sql(
        db,
        &format!(
            "CREATE TABLE a (id bigserial PRIMARY KEY, payload text NOT NULL); \
             CREATE TABLE b (id bigint PRIMARY KEY, payload text NOT NULL); \
             INSERT INTO a (payload) SELECT repeat(md5(g::text), 8) FROM generate_series(1, {rows}) g; \
             INSERT INTO b SELECT id, 'b:' || payload FROM a;"
        ),
    );
}

/// Commits transactions (a row into `a`, the same into `b`) until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(pg: &Pg, db: &str) -> Writer {
        let mut child = pg
            .psql(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let (s, d) = (stop.clone(), done.clone());
        let thread = std::thread::spawn(move || {
            let mut stdin = child.stdin.take().unwrap();
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let t = format!(
                    "BEGIN; INSERT INTO a (payload) VALUES ('w{n}'); \
                     INSERT INTO b VALUES (currval('a_id_seq'), 'b:w{n}'); COMMIT; \
                     SELECT pg_sleep(0.002);\n"
                );
                stdin.write_all(t.as_bytes()).unwrap();
                stdin.flush().unwrap();
                d.fetch_add(1, Ordering::Relaxed);
            }
            drop(stdin);
            assert!(child.wait().unwrap().success(), "the writer's psql failed");
        });
        let w = Writer {
            stop,
            done,
            thread: Some(thread),
        };
        // Some transactions in before the backup starts.
        while w.done.load(Ordering::Relaxed) < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        w
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.done.load(Ordering::Relaxed)
    }
}

/// The rows of a table, `id|payload`, in id order.
fn rows(pg: &Pg, db: &str, table: &str) -> Vec<String> {
    pg.sql(db, &format!("SELECT id, payload FROM {table} ORDER BY id"))
        .lines()
        .map(str::to_string)
        .collect()
}

fn checksum(pg: &Pg, db: &str, table: &str) -> String {
    pg.sql(
        db,
        &format!("SELECT md5(string_agg(id || ':' || payload, ',' ORDER BY id)) FROM {table}"),
    )
}

/// The data restored into `restored` is one consistent point of what `source_a`/`source_b`
/// (read after the writer stopped) hold: the same rows in both tables, a prefix of what was
/// committed, at least `at_least` rows, with the checksums of that prefix.
fn assert_consistent(
    restored: &Pg,
    db: &str,
    source_a: &[String],
    source_b: &[String],
    at_least: usize,
) {
    let (ra, rb) = (rows(restored, db, "a"), rows(restored, db, "b"));
    assert_eq!(
        ra.len(),
        rb.len(),
        "both tables hold the same number of rows"
    );
    assert!(ra.len() >= at_least, "{} rows < {at_least}", ra.len());
    assert!(ra.len() <= source_a.len());
    assert_eq!(
        ra,
        source_a[..ra.len()],
        "table a is a prefix of what was committed"
    );
    assert_eq!(
        rb,
        source_b[..rb.len()],
        "table b is a prefix of what was committed"
    );
    for (x, y) in ra.iter().zip(&rb) {
        let (ia, pa) = x.split_once('|').unwrap();
        let (ib, pb) = y.split_once('|').unwrap();
        assert_eq!(
            (ia, format!("b:{pa}")),
            (ib, pb.to_string()),
            "no half transaction"
        );
    }
    // The per-table checksums agree with the rows compared.
    let ids: Vec<&str> = ra.iter().map(|r| r.split_once('|').unwrap().0).collect();
    assert_eq!(checksum(restored, db, "a").len(), 32);
    assert_eq!(
        restored.sql(
            db,
            &format!("SELECT count(*) FROM a WHERE id IN ({})", ids.join(","))
        ),
        ids.len().to_string()
    );
}

fn ctx() -> RunContext {
    let mut c = RunContext::current();
    c.actor = actor();
    c.exec_env = exec_environment(std::env::vars());
    c
}

struct Fixture {
    tmp: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pass"), "pw\n").unwrap();
        init(vec![local(&tmp.path().join("repo"))], Some("pw")).await;
        Fixture { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn action(&self, fields: &str) -> FreezerAction {
        FreezerAction::from_json(&format!(
            r#"{{"container":{},"backup_name":"pg","hostname":"test-host","encrypt_pass_file":{},"mode":"postgres",{fields}}}"#,
            serde_json::json!(self.path("repo")),
            serde_json::json!(self.path("pass")),
        ))
        .unwrap()
    }

    async fn backup(
        &self,
        fields: &str,
    ) -> freezer_core::Result<freezer_core::engine::BackupResult> {
        let a = self.action(&format!(r#""action":"backup",{fields}"#));
        match run_action(&a, &ctx()).await? {
            ActionOutcome::Backup(b) => Ok(*b),
            other => panic!("{other:?}"),
        }
    }

    async fn restore(&self, fields: &str) -> freezer_core::Result<RestoreResult> {
        let a = self.action(&format!(r#""action":"restore",{fields}"#));
        match run_action(&a, &ctx()).await? {
            ActionOutcome::Restore(r) => Ok(*r),
            other => panic!("{other:?}"),
        }
    }

    async fn snapshots(&self) -> usize {
        let repo = open(&[&self.path("repo")], Some("pw")).await;
        repo.snapshots().await.unwrap().0.len()
    }

    async fn assert_checks_clean(&self) {
        let mut repo = open(&[&self.path("repo")], Some("pw")).await;
        let mut o = CheckOptions::new(actor());
        o.read_data = ReadData::All;
        let r = check(&mut repo, &o, Arc::new(NoProgress)).await.unwrap();
        assert!(r.is_ok(), "{:?}", r.damaged);
        assert!(!has_lock(&self.path("repo")), "no lock left behind");
    }
}

fn conf_field(conf: &Path) -> String {
    format!(r#""postgres_conf":{}"#, serde_json::json!(conf))
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A database name of this test run, with `tail` (which may hold odd characters).
fn db_name(tail: &str) -> String {
    format!(
        "ft_{}_{}{tail}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn logical_backup_while_writing_restores_a_consistent_point() {
    let pg = Pg::shared();
    let f = Fixture::new().await;
    let odd = db_name(" odd/ü ✓.x");
    let plain = db_name("");
    for db in [&odd, &plain] {
        pg.sql("postgres", &format!("CREATE DATABASE {}", q(db)));
        make_tables(pg, db, 2000);
    }
    pg.sql(&plain, "CREATE VIEW v AS SELECT count(*) FROM a");
    let conf = pg.conf(f.tmp.path(), &format!("databases = {odd}, {plain}\n"));
    let writer = Writer::start(pg, &odd);
    let before = rows(pg, &odd, "a").len();
    let b = f.backup(&conf_field(&conf)).await.unwrap();
    let after_backup = rows(pg, &odd, "a").len();
    let wrote = writer.finish();
    assert!(b.is_complete(), "{b:?}");
    assert!(
        after_backup > before,
        "the writer committed during the backup"
    );
    assert!(wrote > 20);
    let s = &b.snapshot;
    assert_eq!(s.mode, "postgres");
    assert_eq!(s.extra["postgres_method"], "logical");
    assert_eq!(
        s.path_to_backup,
        format!("postgres://postgres@127.0.0.1:{}", pg.port)
    );
    assert!(
        s.extra["postgres_server_version"]
            .as_str()
            .unwrap()
            .starts_with("15")
    );
    assert_eq!(
        s.extra["postgres_databases"],
        serde_json::json!([odd, plain])
    );
    let shown = serde_json::to_string(s).unwrap();
    assert!(!shown.contains(PASSWORD), "the password is in the snapshot");
    // The files of the snapshot, as a folder restore gives them.
    f.restore(&format!(
        r#""restore_abs_path":{}"#,
        serde_json::json!(f.path("files"))
    ))
    .await
    .unwrap();
    let mut files: Vec<String> = std::fs::read_dir(f.path("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut want = vec![
        "globals.sql".to_string(),
        freezer_core::db::postgres::stream_name(&odd),
        freezer_core::db::postgres::stream_name(&plain),
    ];
    want.sort();
    assert_eq!(files, want);

    let (src_a, src_b) = (rows(pg, &odd, "a"), rows(pg, &odd, "b"));
    let plain_sum = checksum(pg, &plain, "a");
    let plain_sum_b = checksum(pg, &plain, "b");
    // Wiped: both databases dropped.
    for db in [&odd, &plain] {
        pg.sql("postgres", &format!("DROP DATABASE {}", q(db)));
    }
    let r = f.restore(&conf_field(&conf)).await.unwrap();
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(r.files, 3);
    assert!(
        r.skipped.iter().any(|s| s.contains("\"postgres\"")),
        "the existing superuser is kept: {:?}",
        r.skipped
    );
    assert_consistent(pg, &odd, &src_a, &src_b, before);
    assert_eq!(checksum(pg, &plain, "a"), plain_sum);
    assert_eq!(checksum(pg, &plain, "b"), plain_sum_b);
    assert_eq!(pg.sql(&plain, "SELECT * FROM v"), "2000");

    // Databases that hold tables are never overwritten unless asked.
    pg.sql(&odd, "INSERT INTO b VALUES (-1, 'after')");
    let e = f.restore(&conf_field(&conf)).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&odd) && msg.contains("overwrite"), "{msg}");
    assert_eq!(pg.sql(&odd, "SELECT count(*) FROM b WHERE id = -1"), "1");
    let r = f
        .restore(&format!(r#"{},"overwrite":true"#, conf_field(&conf)))
        .await
        .unwrap();
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(pg.sql(&odd, "SELECT count(*) FROM b WHERE id = -1"), "0");
    assert_consistent(pg, &odd, &src_a, &src_b, before);

    // One database of the backup alone, into an existing empty one.
    pg.sql("postgres", &format!("DROP DATABASE {}", q(&plain)));
    pg.sql("postgres", &format!("CREATE DATABASE {}", q(&plain)));
    let one = pg.conf(f.tmp.path(), &format!("databases = {plain}\n"));
    let r = f.restore(&conf_field(&one)).await.unwrap();
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(checksum(pg, &plain, "a"), plain_sum);
    f.assert_checks_clean().await;
    for db in [&odd, &plain] {
        pg.sql("postgres", &format!("DROP DATABASE {}", q(db)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn physical_backup_while_writing_restores_into_a_new_data_folder() {
    let f = Fixture::new().await;
    let dir = tempfile::tempdir().unwrap();
    let mut pg = Pg::init(&dir.path().join("src"));
    pg.start();
    show_log_on_failure("postgres", &pg.log);
    pg.sql("postgres", "CREATE DATABASE app");
    make_tables(&pg, "app", 3000);
    let conf = pg.conf(f.tmp.path(), "");
    let writer = Writer::start(&pg, "app");
    let before = rows(&pg, "app", "a").len();
    let b = f
        .backup(&format!(
            r#"{},"postgres_method":"physical""#,
            conf_field(&conf)
        ))
        .await
        .unwrap();
    let after_backup = rows(&pg, "app", "a").len();
    writer.finish();
    assert!(b.is_complete(), "{b:?}");
    assert!(
        after_backup > before,
        "the writer committed during the backup"
    );
    assert_eq!(b.snapshot.extra["postgres_method"], "physical");
    let (src_a, src_b) = (rows(&pg, "app", "a"), rows(&pg, "app", "b"));
    pg.stop();

    // A restore needs restore_datadir, and never writes into a folder that holds anything.
    let e = f.restore(&conf_field(&conf)).await.unwrap_err();
    assert!(e.to_string().contains("restore_datadir"), "{e}");
    let e = f
        .restore(&format!(
            r#""restore_datadir":{}"#,
            serde_json::json!(pg.data)
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");

    let (uid, gid) = postgres_ids();
    let new = dir.path().join("restored");
    std::fs::create_dir(&new).unwrap();
    std::os::unix::fs::chown(&new, Some(uid), Some(gid)).unwrap();
    let data = new.join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    let r = f
        .restore(&format!(r#""restore_datadir":{}"#, serde_json::json!(data)))
        .await
        .unwrap();
    assert!(r.is_complete(), "{r:?}");
    assert!(r.files > 100, "{r:?}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&data).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o700));
    assert_eq!(
        std::fs::metadata(data.join("PG_VERSION")).unwrap().uid(),
        uid
    );
    assert!(data.join("pg_wal").is_dir());

    let mut restored = Pg::on(&new, &data);
    restored.start();
    show_log_on_failure("postgres (restored)", &restored.log);
    assert_consistent(&restored, "app", &src_a, &src_b, before);
    restored.stop();

    // An absent folder is made, owned as the folder it is made in.
    let absent = new.join("absent");
    let r = f
        .restore(&format!(
            r#""restore_datadir":{}"#,
            serde_json::json!(absent)
        ))
        .await
        .unwrap();
    assert!(r.is_complete(), "{r:?}");
    let m = std::fs::metadata(&absent).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (uid, 0o700));
    assert_eq!(std::fs::metadata(absent.join("pg_wal")).unwrap().uid(), uid);
    f.assert_checks_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_fails_clearly_leaves_no_snapshot_and_never_shows_the_password() {
    let pg = Pg::shared();
    let f = Fixture::new().await;
    let db = db_name("");
    pg.sql("postgres", &format!("CREATE DATABASE {}", q(&db)));
    make_tables(pg, &db, 10);
    let sel = format!("databases = {db}\n");

    // A closed port.
    let closed = free_port();
    let conf = f.path("closed.ini");
    std::fs::write(
        &conf,
        format!("[default]\nhost=127.0.0.1\nport={closed}\nuser=postgres\npassword={PASSWORD}\n"),
    )
    .unwrap();
    // A wrong password.
    let wrong = f.path("wrong.ini");
    std::fs::write(
        &wrong,
        format!(
            "[default]\nhost=127.0.0.1\nport={}\nuser=postgres\npassword=Not-{PASSWORD}\n{sel}",
            pg.port
        ),
    )
    .unwrap();
    // The client programs in a folder without pg_dump.
    let bindir = f.path("bin");
    std::fs::create_dir(&bindir).unwrap();
    std::os::unix::fs::symlink(bin("psql"), bindir.join("psql")).unwrap();
    let no_dump = pg.conf(
        f.tmp.path(),
        &format!("{sel}bindir = {}\n", bindir.display()),
    );
    // A pg_dump killed in the middle of its dump (the real one, through a wrapper).
    let killed = f.path("killed");
    std::fs::create_dir(&killed).unwrap();
    for tool in ["psql", "pg_dumpall"] {
        std::os::unix::fs::symlink(bin(tool), killed.join(tool)).unwrap();
    }
    std::fs::write(
        killed.join("pg_dump"),
        format!(
            "#!/bin/sh\n{} \"$@\" | head -c 3000\nkill -9 $$\n",
            bin("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        killed.join("pg_dump"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let killed = pg.conf(
        f.tmp.path(),
        &format!("{sel}bindir = {}\n", killed.display()),
    );
    // Not INI.
    let not_ini = f.path("not.ini");
    std::fs::write(&not_ini, "this is { not an INI file\n[[[").unwrap();

    let cases: [(String, &[&str]); 7] = [
        (conf_field(&killed), &["killed by signal 9", "pg_dump"]),
        (
            conf_field(&conf),
            &["Connection refused", &closed.to_string()],
        ),
        (
            conf_field(&wrong),
            &["password authentication failed", "postgres"],
        ),
        (
            format!(r#"{},"postgres_method":"physical""#, conf_field(&wrong)),
            &["password authentication failed"],
        ),
        (conf_field(&no_dump), &["pg_dump", "postgresql-client"]),
        (conf_field(&not_ini), &["postgres_conf", "not.ini"]),
        (
            format!(r#"{},"postgres_method":"sideways""#, conf_field(&conf)),
            &["postgres_method", "sideways"],
        ),
    ];
    for (fields, needles) in cases {
        let e = f.backup(&fields).await.unwrap_err();
        let msg = format!("{e} {e:?}");
        for n in needles {
            assert!(msg.contains(n), "{fields}: {msg} lacks {n:?}");
        }
        assert!(
            !msg.contains(PASSWORD),
            "{fields}: the password shows: {msg}"
        );
        assert_eq!(f.snapshots().await, 0, "{fields}: no snapshot");
        f.assert_checks_clean().await;
    }
    let e = f
        .backup(r#""postgres_method":"logical""#)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("postgres_conf"), "{e}");

    // A restore with a wrong password fails naming the cause, writing nothing.
    let good = pg.conf(f.tmp.path(), &sel);
    f.backup(&conf_field(&good)).await.unwrap();
    pg.sql("postgres", &format!("DROP DATABASE {}", q(&db)));
    let e = f.restore(&conf_field(&wrong)).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(!msg.contains(PASSWORD));
    let e = f
        .restore(r#""postgres_method":"physical""#)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("restore_datadir"), "{e}");
    let r = f.restore(&conf_field(&good)).await.unwrap();
    assert!(r.is_complete(), "{r:?}");
    assert_eq!(pg.sql(&db, "SELECT count(*) FROM b"), "10");
    f.assert_checks_clean().await;
    pg.sql("postgres", &format!("DROP DATABASE {}", q(&db)));
}

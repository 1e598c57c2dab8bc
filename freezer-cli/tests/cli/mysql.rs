//! `freezer backup --mode mysql` and `freezer restore --mode mysql` against a real MariaDB, as
//! an operator runs them: a logical round trip of one database, and a wrong password that
//! fails naming the cause without showing it.

use crate::mariadb_server::{PASSWORD, Server, write_conf};
use crate::{Env, stderr};

#[test]
fn mysql_logical_round_trip_through_the_cli() {
    let s = Server::shared();
    let e = Env::new();
    let p = e.pass();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let db = s.database();
    s.sql(&format!(
        "CREATE DATABASE `{db}`; USE `{db}`; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
         INSERT INTO t SELECT seq, CONCAT('row ', seq) FROM seq_1_to_500;"
    ));
    let sum = format!("SELECT COUNT(*), SUM(CRC32(v)) FROM `{db}`.t");
    let before = s.sql(&sum);
    let conf = s.conf(e.tmp.path(), &format!("databases = {db}\n"));
    let conf = conf.to_str().unwrap();
    let b = e.json(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--mode",
        "mysql",
        "--mysql-conf",
        conf,
        "-N",
        "db",
    ]);
    assert_eq!(b["complete"], true, "{b}");
    s.sql(&format!("DROP DATABASE `{db}`"));
    e.ok(&[
        "restore",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--mode",
        "mysql",
        "--mysql-conf",
        conf,
        "-N",
        "db",
    ]);
    assert_eq!(s.sql(&sum), before);

    // A wrong password: a clear failure, no snapshot added, the password nowhere.
    let bad = write_conf(
        e.tmp.path(),
        &format!(
            "[default]\nhost=127.0.0.1\nport={}\nuser=fz_admin\npassword=x{PASSWORD}\n",
            s.port
        ),
    );
    let o = e.run(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--mode",
        "mysql",
        "--mysql-conf",
        bad.to_str().unwrap(),
        "-N",
        "db",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("access denied"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
    let list = e.json(&["snapshots", "--repo", "repo", "--encrypt-pass-file", p]);
    assert_eq!(list["snapshots"].as_array().unwrap().len(), 1, "{list}");
    e.ok(&[
        "check",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--read-data",
    ]);
}

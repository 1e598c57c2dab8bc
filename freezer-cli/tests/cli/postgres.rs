//! `freezer backup --mode postgres` and `freezer restore --mode postgres` against a real
//! PostgreSQL, as an operator runs them: a logical round trip of one database, a second restore
//! refused while the database holds data, and a wrong password that fails naming the cause
//! without showing it.

use crate::postgres_server::{PASSWORD, Pg, q};
use crate::{Env, stderr};

#[test]
fn postgres_logical_round_trip_through_the_cli() {
    let s = Pg::shared();
    let e = Env::new();
    let p = e.pass();
    e.ok(&["init", "--repo", "repo", "--encrypt-pass-file", p]);
    let db = format!("cli_{}", std::process::id());
    s.sql("postgres", &format!("CREATE DATABASE {}", q(&db)));
    s.sql(
        &db,
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g",
    );
    let sum = "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM t";
    let before = s.sql(&db, sum);
    let conf = s.conf(e.tmp.path(), &format!("databases = {db}\n"));
    let conf = conf.to_str().unwrap();
    let args = |verb: &'static str| {
        vec![
            verb,
            "--repo",
            "repo",
            "--encrypt-pass-file",
            p,
            "--mode",
            "postgres",
            "--postgres-conf",
            conf,
            "-N",
            "pg",
        ]
    };
    let b = e.json(&args("backup"));
    assert_eq!(b["complete"], true, "{b}");
    s.sql("postgres", &format!("DROP DATABASE {}", q(&db)));
    e.ok(&args("restore"));
    assert_eq!(s.sql(&db, sum), before);
    // Never over a database that holds data, unless --overwrite.
    let o = e.run(&args("restore"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("overwrite"), "{}", stderr(&o));
    let mut over = args("restore");
    over.push("--overwrite");
    e.ok(&over);
    assert_eq!(s.sql(&db, sum), before);

    // A wrong password: a clear failure, no snapshot added, the password nowhere.
    let bad = e.tmp.path().join("bad.ini");
    std::fs::write(
        &bad,
        format!(
            "[default]\nhost=127.0.0.1\nport={}\nuser=postgres\npassword=x{PASSWORD}\n",
            s.port
        ),
    )
    .unwrap();
    let o = e.run(&[
        "backup",
        "--repo",
        "repo",
        "--encrypt-pass-file",
        p,
        "--mode",
        "postgres",
        "--postgres-conf",
        bad.to_str().unwrap(),
        "-N",
        "pg",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("password authentication failed"), "{err}");
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
    s.sql("postgres", &format!("DROP DATABASE {}", q(&db)));
}

//! The store conformance suite: one set of checks of the `Store` contract, run against every
//! implementation (SQLite in memory and in a file, and MariaDB started by the tests), and the
//! checks each backend adds (two stores on one database, schema newer than the code, URLs).

pub(crate) mod mariadb;

use std::sync::Arc;

use freezer_core::service::store::{
    self, Doc, Kind, MYSQL_SCHEMA_VERSION, MySqlStore, SQLITE_SCHEMA_VERSION, Scope, SqliteStore,
    Store, StoreError,
};
use mariadb::MariaDb;
use serde_json::json;

fn project(p: &str) -> Scope {
    Scope::Project(p.to_string())
}

/// Create, read, update, delete, and the versions they leave.
async fn crud(s: &dyn Store) {
    let p = project("p1");
    let body = json!({"job_id": "j1", "description": "nightly", "n": [1, 2, {"x": null}]});
    let doc = s.insert(Kind::Job, "p1", "j1", &body).await.unwrap();
    assert_eq!(
        doc,
        Doc {
            kind: Kind::Job,
            id: "j1".into(),
            project_id: "p1".into(),
            version: 1,
            body: body.clone()
        }
    );
    assert_eq!(s.get(Kind::Job, &p, "j1").await.unwrap(), Some(doc.clone()));
    assert_eq!(
        s.get(Kind::Job, &Scope::All, "j1").await.unwrap(),
        Some(doc)
    );
    // Kinds are apart: the same id as another kind is another document.
    assert_eq!(s.get(Kind::Action, &p, "j1").await.unwrap(), None);
    assert_eq!(s.get(Kind::Job, &p, "nope").await.unwrap(), None);

    let body2 = json!({"job_id": "j1", "description": "weekly ünïcödé ☃"});
    let doc2 = s.update(Kind::Job, &p, "j1", 1, &body2).await.unwrap();
    assert_eq!(
        (doc2.version, &doc2.body, doc2.project_id.as_str()),
        (2, &body2, "p1")
    );
    // An admin's update names the owner's project.
    let body3 = json!({"job_id": "j1", "description": "by admin"});
    let doc3 = s
        .update(Kind::Job, &Scope::All, "j1", 2, &body3)
        .await
        .unwrap();
    assert_eq!((doc3.version, doc3.project_id.as_str()), (3, "p1"));
    assert_eq!(s.get(Kind::Job, &p, "j1").await.unwrap(), Some(doc3));

    assert!(s.delete(Kind::Job, &p, "j1").await.unwrap());
    assert!(!s.delete(Kind::Job, &p, "j1").await.unwrap());
    assert_eq!(s.get(Kind::Job, &p, "j1").await.unwrap(), None);
    assert!(matches!(
        s.update(Kind::Job, &p, "j1", 3, &body3).await,
        Err(StoreError::NotFound(Kind::Job, id)) if id == "j1"
    ));
    // A deleted id can be used again, from version 1.
    let again = s.insert(Kind::Job, "p2", "j1", &body).await.unwrap();
    assert_eq!(again.version, 1);
    assert!(s.delete(Kind::Job, &Scope::All, "j1").await.unwrap());
}

/// Another project's document is not found on get, update and delete, and not listed.
async fn scope_isolation(s: &dyn Store) {
    s.insert(Kind::Session, "alice", "s-a", &json!({"a": 1}))
        .await
        .unwrap();
    s.insert(Kind::Session, "bob", "s-b", &json!({"b": 1}))
        .await
        .unwrap();
    let bob = project("bob");
    assert_eq!(s.get(Kind::Session, &bob, "s-a").await.unwrap(), None);
    assert!(matches!(
        s.update(Kind::Session, &bob, "s-a", 1, &json!({"stolen": true})).await,
        Err(StoreError::NotFound(Kind::Session, id)) if id == "s-a"
    ));
    // Even with a wrong version: NotFound, never a Conflict that tells the version.
    assert!(matches!(
        s.update(Kind::Session, &bob, "s-a", 7, &json!({})).await,
        Err(StoreError::NotFound(..))
    ));
    assert!(!s.delete(Kind::Session, &bob, "s-a").await.unwrap());
    let listed: Vec<String> = s
        .list(Kind::Session, &bob, 0, None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, ["s-b"]);
    let all: Vec<String> = s
        .list(Kind::Session, &Scope::All, 0, None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(all, ["s-a", "s-b"]);
    // Alice's document is untouched.
    let a = s
        .get(Kind::Session, &project("alice"), "s-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((a.version, a.body), (1, json!({"a": 1})));
}

/// An id is unique per kind across projects.
async fn exists(s: &dyn Store) {
    s.insert(Kind::Client, "p1", "node-1", &json!({"v": 1}))
        .await
        .unwrap();
    for p in ["p1", "p2"] {
        assert!(matches!(
            s.insert(Kind::Client, p, "node-1", &json!({"v": 2})).await,
            Err(StoreError::Exists(Kind::Client, id)) if id == "node-1"
        ));
    }
    let d = s
        .get(Kind::Client, &Scope::All, "node-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((d.project_id.as_str(), d.body), ("p1", json!({"v": 1})));
    // Another kind may use the id.
    s.insert(Kind::Action, "p2", "node-1", &json!({}))
        .await
        .unwrap();
}

/// A stale version is a Conflict naming the current version, and changes nothing.
async fn conflict(s: &dyn Store) {
    let p = project("p1");
    s.insert(Kind::Action, "p1", "a1", &json!({"n": 0}))
        .await
        .unwrap();
    s.update(Kind::Action, &p, "a1", 1, &json!({"n": 1}))
        .await
        .unwrap();
    s.update(Kind::Action, &p, "a1", 2, &json!({"n": 2}))
        .await
        .unwrap();
    for stale in [1, 2, 4, 0, -1] {
        match s
            .update(Kind::Action, &p, "a1", stale, &json!({"n": 99}))
            .await
        {
            Err(StoreError::Conflict(Kind::Action, id, 3)) => assert_eq!(id, "a1"),
            other => panic!("version {stale}: {other:?}"),
        }
    }
    let d = s.get(Kind::Action, &p, "a1").await.unwrap().unwrap();
    assert_eq!((d.version, d.body), (3, json!({"n": 2})));
    let e = s
        .update(Kind::Action, &Scope::All, "a1", 1, &json!({}))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("a1") && e.to_string().contains('3'),
        "{e}"
    );
}

/// Lists are oldest first, by creation (not by id, nor by update), paged by offset and limit.
async fn pagination(s: &dyn Store) {
    let ids: Vec<String> = (0..12).map(|i| format!("b-{:02}", (i * 7) % 12)).collect();
    for id in &ids {
        s.insert(Kind::Backup, "pg", id, &json!({"id": id}))
            .await
            .unwrap();
        // Another project's in between: never counted in pg's pages.
        s.insert(Kind::Backup, "other", &format!("o-{id}"), &json!({}))
            .await
            .unwrap();
    }
    // An update does not move a document.
    let first = &ids[0];
    s.update(
        Kind::Backup,
        &project("pg"),
        first,
        1,
        &json!({"id": first, "u": 1}),
    )
    .await
    .unwrap();
    let pg = project("pg");
    let page = |offset, limit| async move {
        s.list(Kind::Backup, &project("pg"), offset, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(page(0, None).await, ids);
    assert_eq!(page(0, Some(5)).await, ids[..5]);
    assert_eq!(page(5, Some(5)).await, ids[5..10]);
    assert_eq!(page(10, Some(5)).await, ids[10..]);
    assert_eq!(page(12, Some(5)).await, Vec::<String>::new());
    assert_eq!(page(100, None).await, Vec::<String>::new());
    assert_eq!(page(3, Some(0)).await, Vec::<String>::new());
    assert_eq!(page(11, None).await, ids[11..]);
    let all = s.list(Kind::Backup, &Scope::All, 0, Some(3)).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1].project_id, "other");
    assert!(s.list(Kind::Job, &pg, 0, None).await.unwrap().is_empty());
}

/// Tasks on two stores (or connections) of one database incrementing one document with
/// read-modify-write, retrying on Conflict: no increment is lost.
async fn concurrent(a: Arc<dyn Store>, b: Arc<dyn Store>, per_store: usize) {
    let p = project("p1");
    a.insert(Kind::Job, "p1", "counter", &json!({"n": 0}))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for store in [a.clone(), b.clone()] {
        for _ in 0..per_store {
            let (store, p) = (store.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                let mut conflicts = 0usize;
                loop {
                    let d = store.get(Kind::Job, &p, "counter").await.unwrap().unwrap();
                    let n = d.body["n"].as_u64().unwrap();
                    match store
                        .update(Kind::Job, &p, "counter", d.version, &json!({"n": n + 1}))
                        .await
                    {
                        Ok(new) => {
                            assert_eq!(new.version, d.version + 1);
                            return conflicts;
                        }
                        Err(StoreError::Conflict(_, _, current)) => {
                            assert!(current > d.version, "{current} after {}", d.version);
                            conflicts += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = 2 * per_store;
    for s in [&a, &b] {
        let d = s.get(Kind::Job, &p, "counter").await.unwrap().unwrap();
        assert_eq!(d.body["n"], total, "{s:?}");
        assert_eq!(d.version, total as i64 + 1, "{s:?}");
    }
}

async fn conformance(s: &dyn Store) {
    crud(s).await;
    scope_isolation(s).await;
    exists(s).await;
    conflict(s).await;
    pagination(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_in_memory_conforms() {
    let s = SqliteStore::open_in_memory().unwrap();
    conformance(&s).await;
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    concurrent(s.clone(), s, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_conforms_and_two_stores_on_one_file_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/api.sqlite");
    let s = SqliteStore::open(&path).await.unwrap();
    conformance(&s).await;
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = dir2.path().join("api.sqlite");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path2).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path2).await.unwrap());
    concurrent(a, b, 25).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_refuses_a_schema_newer_than_this_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sqlite");
    drop(SqliteStore::open(&path).await.unwrap());
    let newer = SQLITE_SCHEMA_VERSION + 1;
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_version (version, name, applied_at) VALUES (?1, 'future', 'now')",
        [newer],
    )
    .unwrap();
    drop(conn);
    let url = format!("sqlite:{}", path.display());
    let e = store::open(&url).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("version {newer}"))
            && e.contains(&format!("version {SQLITE_SCHEMA_VERSION}")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_reads_sqlite_urls_and_names_the_forms_for_others() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        format!("sqlite:{}", dir.path().join("a.sqlite").display()),
        format!("sqlite://{}", dir.path().join("b/b.sqlite").display()),
        "sqlite::memory:".to_string(),
    ] {
        let s = store::open(&url).await.unwrap();
        s.insert(Kind::Job, "p", "j", &json!({})).await.unwrap();
        assert_eq!(
            s.list(Kind::Job, &Scope::All, 0, None).await.unwrap().len(),
            1,
            "{url}"
        );
    }
    assert!(dir.path().join("a.sqlite").is_file());
    assert!(dir.path().join("b/b.sqlite").is_file());
    for bad in [
        "postgres://u:Hunter2-secret@h/db",
        "Hunter2-secret",
        "ftp:u:Hunter2-secret@h",
        "sqlite:",
    ] {
        let e = match store::open(bad).await {
            Err(e) => e.to_string(),
            Ok(s) => panic!("{bad} opened {s:?}"),
        };
        assert!(!e.contains("Hunter2"), "{e}");
        if bad != "sqlite:" {
            assert!(e.contains("sqlite:PATH") && e.contains("mysql://"), "{e}");
        }
    }
}

// MariaDB: a real server started by the tests.

async fn mysql(url: &str) -> Arc<dyn Store> {
    store::open(url).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_conforms() {
    let (_, url) = MariaDb::shared().database();
    let s = mysql(&url).await;
    conformance(s.as_ref()).await;
    let debug = format!("{s:?}");
    assert!(
        debug.contains("MySqlStore") && !debug.contains(mariadb::PASSWORD),
        "{debug}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_two_stores_on_one_database_share_documents_and_lose_nothing() {
    let (_, url) = MariaDb::shared().database();
    // Two pools, as two API processes would have; the second comes up on a migrated schema.
    let a = mysql(&url).await;
    let b = mysql(&url.replacen("mysql://", "mariadb://", 1)).await;
    let p = project("p1");
    a.insert(Kind::Job, "p1", "shared", &json!({"description": "from a"}))
        .await
        .unwrap();
    let seen = b.get(Kind::Job, &p, "shared").await.unwrap().unwrap();
    assert_eq!(
        (seen.version, &seen.body),
        (1, &json!({"description": "from a"}))
    );
    b.update(
        Kind::Job,
        &p,
        "shared",
        1,
        &json!({"description": "from b"}),
    )
    .await
    .unwrap();
    let seen = a.get(Kind::Job, &p, "shared").await.unwrap().unwrap();
    assert_eq!(
        (seen.version, &seen.body),
        (2, &json!({"description": "from b"}))
    );
    // a's copy is stale now: its write is a Conflict, and b's stays.
    match a
        .update(Kind::Job, &p, "shared", 1, &json!({"description": "stale"}))
        .await
    {
        Err(StoreError::Conflict(Kind::Job, _, 2)) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        b.insert(Kind::Job, "p2", "shared", &json!({})).await,
        Err(StoreError::Exists(..))
    ));
    assert_eq!(
        b.get(Kind::Job, &p, "shared").await.unwrap().unwrap().body["description"],
        "from b"
    );
    concurrent(a, b, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_refuses_a_schema_newer_than_this_code() {
    let db = MariaDb::shared();
    let (name, url) = db.database();
    drop(mysql(&url).await);
    let newer = MYSQL_SCHEMA_VERSION + 1;
    db.sql(&format!(
        "INSERT INTO `{name}`.freezer_schema_migrations (version, name, applied_at) \
         VALUES ({newer}, 'future', UTC_TIMESTAMP(6))"
    ));
    let e = MySqlStore::connect(&url).await.unwrap_err().to_string();
    assert!(
        e.contains(&format!("version {newer}"))
            && e.contains(&format!("version {MYSQL_SCHEMA_VERSION}")),
        "{e}"
    );
    assert!(!e.contains(mariadb::PASSWORD), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_refuses_upstream_freezer_api_tables() {
    let db = MariaDb::shared();
    let (name, url) = db.database();
    db.sql(&format!(
        "CREATE TABLE `{name}`.alembic_version (version_num VARCHAR(32) NOT NULL)"
    ));
    let e = MySqlStore::connect(&url).await.unwrap_err().to_string();
    assert!(e.contains("upstream") && e.contains(&name), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_bad_urls_and_credentials_are_errors_without_the_password() {
    let db = MariaDb::shared();
    let (name, url) = db.database();
    let port = db.port;
    let cases = [
        // Wrong password.
        url.replace(mariadb::PASSWORD, "Wrong-Hunter2-pw"),
        // A database the user may not reach.
        format!(
            "mysql://{}:{}@127.0.0.1:{port}/mysql",
            mariadb::USER,
            mariadb::PASSWORD
        ),
        // No database named.
        format!(
            "mysql://{}:{}@127.0.0.1:{port}/",
            mariadb::USER,
            mariadb::PASSWORD
        ),
        // Nothing listening.
        format!(
            "mariadb://{}:{}@127.0.0.1:{}/{name}",
            mariadb::USER,
            mariadb::PASSWORD,
            crate::servers::free_port()
        ),
        // An unknown parameter.
        format!("{url}?colour=blue"),
        // TLS required from a server that has none.
        format!("{url}?require_ssl=true"),
    ];
    for bad in cases {
        let e = match store::open(&bad).await {
            Err(e) => e.to_string(),
            Ok(s) => panic!("{s:?} opened"),
        };
        assert!(
            !e.contains(mariadb::PASSWORD) && !e.contains("Hunter2"),
            "a password in: {e}"
        );
        assert!(e.contains("127.0.0.1") || e.contains("URL"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_reads_again_after_the_server_drops_its_connections() {
    let db = MariaDb::shared();
    let (name, url) = db.database();
    let s = mysql(&url).await;
    s.insert(Kind::Client, "p", "c1", &json!({"k": 1}))
        .await
        .unwrap();
    assert!(
        s.get(Kind::Client, &Scope::All, "c1")
            .await
            .unwrap()
            .is_some()
    );
    // The server kills every connection of the store (as a restart or a proxy would).
    let ids = db.sql(&format!(
        "SELECT id FROM information_schema.processlist WHERE db = '{name}'"
    ));
    let ids: Vec<&str> = ids.split_whitespace().collect();
    assert!(!ids.is_empty(), "the store holds a pooled connection");
    for id in ids {
        let _ = db.try_kill(id);
    }
    let d = s
        .get(Kind::Client, &Scope::All, "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.body, json!({"k": 1}));
    // And writes work again on fresh connections.
    s.update(Kind::Client, &Scope::All, "c1", 1, &json!({"k": 2}))
        .await
        .unwrap();
}

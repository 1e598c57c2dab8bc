//! Two API servers on one MariaDB database, as two `freezer api serve` processes behind a
//! load balancer would run: each with its own `MySqlStore` pool and its own standalone
//! identity built from one users file and one token key file (a token from one is valid on
//! the other). A job created through one is read, patched and evented through the other;
//! concurrent session ends and PATCHes spread over both lose nothing; another project's
//! user gets 404 through either.
//!
//! No route lets a client send an expected version: the API's writes are server-side
//! versioned read-modify-writes retried on `StoreError::Conflict`, so a concurrent write is
//! never a 409 nor a silent overwrite. That a stale version is a Conflict across two pools
//! is proven at store level (`service_store::mysql_two_stores_on_one_database_...`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use freezer_core::service::api::{ApiState, router, serve};
use freezer_core::service::auth::setup::{AuthOptions, AuthSetup};
use freezer_core::service::store::MySqlStore;
use serde_json::{Value, json};

use crate::service_store::mariadb::MariaDb;

const ALICE_PW: &str = "alice-pw-mariadb";
const EVE_PW: &str = "eve-pw-mariadb";
const PROJECT: &str = "proj-alice";
const OTHER: &str = "proj-eve";

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts an API server over its own pool on `url`, with its own identity read from the
/// shared users and key files; its base URL.
async fn start_server(db_url: &str, dir: &Path) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let setup = AuthSetup::from_options(&AuthOptions {
        keystone: None,
        users_file: Some(dir.join("users.json")),
        token_key_file: dir.join("token.key"),
        token_ttl: Duration::from_secs(3600),
        public_url: format!("{base}/"),
    })
    .unwrap();
    let store = MySqlStore::connect(db_url).await.unwrap();
    let state = ApiState::new(Arc::new(store), setup.authenticator())
        .with_identity(setup.identity_router().unwrap());
    tokio::spawn(serve(listener, router(state), std::future::pending()));
    base
}

async fn login(base: &str, user: &str, password: &str) -> String {
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
        {"name": user, "domain": {"name": "Default"}, "password": password}}}}});
    let r = reqwest::Client::new()
        .post(format!("{base}/identity/v3/auth/tokens"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.headers()["x-subject-token"].to_str().unwrap().to_string()
}

/// One server as one user.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token)
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }

    async fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (s, b) = self.call(method, path, body).await;
        assert_eq!(s, status, "{method} {}{path}: {b}", self.base);
        b
    }
}

fn a_job(client_id: &str, description: &str) -> Value {
    json!({
        "description": description,
        "client_id": client_id,
        "job_schedule": {"schedule_interval": "1 days"},
        "job_actions": [
            {"freezer_action": {"action": "backup", "mode": "fs", "path_to_backup": "/etc",
                "backup_name": "etc", "storage": "local", "container": "/srv/backups"}}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_api_servers_on_one_mariadb_share_documents_and_lose_nothing() {
    let (_, db_url) = MariaDb::shared().database();
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("users.json"),
        &json!([
            {"user": "alice", "password": ALICE_PW, "project": "alice", "roles": ["member"],
             "project_id": PROJECT},
            {"user": "eve", "password": EVE_PW, "project": "eve", "roles": ["member"],
             "project_id": OTHER},
        ])
        .to_string(),
    );
    // Two servers, each its own pool and identity, on one database and one key file.
    let base_a = start_server(&db_url, dir.path()).await;
    let base_b = start_server(&db_url, dir.path()).await;
    assert_ne!(base_a, base_b);
    // A token from A is valid on B.
    let token = login(&base_a, "alice", ALICE_PW).await;
    let api = |base: &str| Api {
        http: reqwest::Client::new(),
        base: base.to_string(),
        token: token.clone(),
    };
    let (a, b) = (api(&base_a), api(&base_b));
    let p = format!("/v2/{PROJECT}");

    // A client registered and a job created through A are read through B.
    a.expect(
        "POST",
        &format!("{p}/clients"),
        Some(json!({"client_id": "node1", "hostname": "node1"})),
        201,
    )
    .await;
    let c = b
        .expect("GET", &format!("{p}/clients/node1"), None, 200)
        .await;
    assert_eq!(c["client"]["client_id"], "node1", "{c}");
    let job_id = a
        .expect(
            "POST",
            &format!("{p}/jobs"),
            Some(a_job("node1", "made on a")),
            201,
        )
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job_url = format!("{p}/jobs/{job_id}");
    let j = b.expect("GET", &job_url, None, 200).await;
    assert_eq!(
        (&j["job_id"], &j["description"]),
        (&json!(job_id), &json!("made on a"))
    );
    // Patched through B, A reads B's change.
    let v = b
        .expect(
            "PATCH",
            &job_url,
            Some(json!({"description": "patched on b"})),
            200,
        )
        .await;
    assert_eq!(v["version"], 2, "{v}");
    let j = a.expect("GET", &job_url, None, 200).await;
    assert_eq!(j["description"], "patched on b");
    // An event through A is seen through B.
    let r = a
        .expect(
            "POST",
            &format!("{job_url}/event"),
            Some(json!({"stop": null})),
            202,
        )
        .await;
    assert_eq!(r["result"], "success");
    let j = b.expect("GET", &job_url, None, 200).await;
    assert_eq!(j["job_schedule"]["event"], "stop", "{j}");
    let r = b
        .expect(
            "POST",
            &format!("{job_url}/event"),
            Some(json!({"stop": null})),
            202,
        )
        .await;
    assert_eq!(r["result"], "stop already requested");

    // Another project's user gets 404 through either server, by either URL.
    let eve_token = login(&base_b, "eve", EVE_PW).await;
    for base in [&base_a, &base_b] {
        let eve = Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
            token: eve_token.clone(),
        };
        for path in [job_url.clone(), format!("/v2/{OTHER}/jobs/{job_id}")] {
            eve.expect("GET", &path, None, 404).await;
            eve.expect("PATCH", &path, Some(json!({"description": "eve"})), 404)
                .await;
        }
        eve.expect("GET", &format!("{p}/clients/node1"), None, 404)
            .await;
    }
    assert_eq!(
        a.expect("GET", &job_url, None, 200).await["description"],
        "patched on b"
    );

    // Many concurrent PATCHes of one job from both servers: every one is 200, each makes
    // one version (the versions answered are exactly the next N), and the final description
    // is one of those written.
    const PATCHES: i64 = 16;
    // A PATCH that changes nothing answers the current version (the event made 3).
    let base = a
        .expect(
            "PATCH",
            &job_url,
            Some(json!({"description": "patched on b"})),
            200,
        )
        .await["version"]
        .as_i64()
        .unwrap();
    assert_eq!(base, 3);
    let answers = futures::future::join_all((0..PATCHES).map(|i| {
        let api = if i % 2 == 0 { a.clone() } else { b.clone() };
        let url = job_url.clone();
        async move {
            api.expect(
                "PATCH",
                &url,
                Some(json!({"description": format!("w{i}")})),
                200,
            )
            .await["version"]
                .as_i64()
                .unwrap()
        }
    }))
    .await;
    let mut versions = answers.clone();
    versions.sort_unstable();
    assert_eq!(
        versions,
        (base + 1..=base + PATCHES).collect::<Vec<_>>(),
        "{answers:?}"
    );
    let last = a.expect("GET", &job_url, None, 200).await["description"]
        .as_str()
        .unwrap()
        .to_string();
    let writer: i64 = last.strip_prefix('w').unwrap().parse().unwrap();
    assert!((0..PATCHES).contains(&writer), "{last}");
    // The writer of the final value was answered the last version; a PATCH that changes
    // nothing answers the current version without making one.
    assert_eq!(answers[writer as usize], base + PATCHES, "{answers:?}");
    let v = b
        .expect("PATCH", &job_url, Some(json!({"description": last})), 200)
        .await;
    assert_eq!(v["version"], base + PATCHES, "{v}");

    // A session of N jobs started and ended concurrently through both servers: every job's
    // result is recorded.
    const N: usize = 12;
    let sid = a
        .expect(
            "POST",
            &format!("{p}/sessions"),
            Some(json!({"schedule": {}, "hold_off": 600})),
            201,
        )
        .await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut jobs = Vec::new();
    for i in 0..N {
        let api = if i % 2 == 0 { &a } else { &b };
        let id = api
            .expect(
                "POST",
                &format!("{p}/jobs"),
                Some(a_job("node1", "in session")),
                201,
            )
            .await["job_id"]
            .as_str()
            .unwrap()
            .to_string();
        api.expect("PUT", &format!("{p}/sessions/{sid}/jobs/{id}"), None, 204)
            .await;
        jobs.push(id);
    }
    let action = format!("{p}/sessions/{sid}/action");
    // Every job starts at once (within hold-off, all succeed; one opens round 1).
    let started = futures::future::join_all(jobs.iter().enumerate().map(|(i, j)| {
        let api = if i % 2 == 0 { a.clone() } else { b.clone() };
        let body = json!({"start": {"job_id": j, "current_tag": 0}});
        let action = action.clone();
        async move { api.expect("POST", &action, Some(body), 202).await }
    }))
    .await;
    assert!(
        started.iter().all(|r| r["result"] == "success"),
        "{started:?}"
    );
    let s = b
        .expect("GET", &format!("{p}/sessions/{sid}"), None, 200)
        .await;
    assert_eq!(s["session_tag"], 1, "{s}");
    // Every job ends at once, a third of them failing, spread over both servers.
    let result = |i: usize| {
        if i.is_multiple_of(3) {
            "fail"
        } else {
            "success"
        }
    };
    futures::future::join_all(jobs.iter().enumerate().map(|(i, j)| {
        let api = if i % 2 == 1 { a.clone() } else { b.clone() };
        let body = json!({"end": {"job_id": j, "current_tag": 1, "result": result(i)}});
        let action = action.clone();
        async move { api.expect("POST", &action, Some(body), 202).await }
    }))
    .await;
    for api in [&a, &b] {
        let s = api
            .expect("GET", &format!("{p}/sessions/{sid}"), None, 200)
            .await;
        assert_eq!(s["jobs"].as_object().unwrap().len(), N, "{s}");
        for (i, j) in jobs.iter().enumerate() {
            assert_eq!(s["jobs"][j]["status"], "completed", "job {i}: {s}");
            assert_eq!(s["jobs"][j]["result"], result(i), "job {i}: {s}");
        }
        assert_eq!(
            (&s["status"], &s["result"]),
            (&json!("completed"), &json!("fail"))
        );
    }
}

//! Token revocations of the standalone identity shared through the database: two API
//! servers on one database (one SQLite file; one MariaDB database), each with its own store
//! and identity built from one users file and one token key file, as `freezer api serve`
//! builds them. A token revoked on one is refused by the other within the refresh bound
//! (`REFRESH_EVERY`), by a server started afterwards from its first request, and by the one
//! that revoked it at once; an unrelated token keeps working everywhere.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use freezer_core::service::api::{ApiState, router, serve};
use freezer_core::service::auth::revocations::REFRESH_EVERY;
use freezer_core::service::auth::setup::{AuthOptions, AuthSetup};
use freezer_core::service::store;
use serde_json::json;

use crate::service_store::mariadb::MariaDb;

const ALICE_PW: &str = "alice-pw-revocations";
const PROJECT: &str = "proj-revocations";

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Starts an API server on `db_url` with its identity read from the users and key files in
/// `dir`, sharing revocations through its store as `freezer api serve` does; its base URL.
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
    let store = store::open(db_url).await.unwrap();
    setup.share_revocations(Arc::clone(&store)).await.unwrap();
    let state =
        ApiState::new(store, setup.authenticator()).with_identity(setup.identity_router().unwrap());
    tokio::spawn(serve(listener, router(state), std::future::pending()));
    base
}

async fn login(base: &str) -> String {
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user":
        {"name": "alice", "domain": {"name": "Default"}, "password": ALICE_PW}}}}});
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

/// The status of listing the project's jobs on `base` with `token`.
async fn list_jobs(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/v2/{PROJECT}/jobs"))
        .header("X-Auth-Token", token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn revoke(base: &str, caller: &str, subject: &str) -> u16 {
    reqwest::Client::new()
        .delete(format!("{base}/identity/v3/auth/tokens"))
        .header("X-Auth-Token", caller)
        .header("X-Subject-Token", subject)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The whole scenario on one database URL.
async fn revocations_are_shared_and_kept(db_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_private(
        &dir.path().join("users.json"),
        &json!([{"user": "alice", "password": ALICE_PW, "project": "p", "roles": ["member"],
                 "project_id": PROJECT}])
        .to_string(),
    );
    let a = start_server(db_url, dir.path()).await;
    let b = start_server(db_url, dir.path()).await;
    let doomed = login(&a).await;
    let kept = login(&b).await;
    for base in [&a, &b] {
        assert_eq!(list_jobs(base, &doomed).await, 200, "{base}");
        assert_eq!(list_jobs(base, &kept).await, 200, "{base}");
    }
    // Revoked on A: A refuses it at once.
    assert_eq!(revoke(&a, &doomed, &doomed).await, 204);
    let revoked_at = Instant::now();
    assert_eq!(list_jobs(&a, &doomed).await, 401);
    // B refuses it within the refresh bound.
    loop {
        match list_jobs(&b, &doomed).await {
            401 => break,
            200 => {
                assert!(
                    revoked_at.elapsed() < REFRESH_EVERY + Duration::from_secs(2),
                    "B still accepts the revoked token {:?} after its revocation",
                    revoked_at.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("B answered {other}"),
        }
    }
    // A server started afterwards (a restart) refuses it from its first request.
    let c = start_server(db_url, dir.path()).await;
    assert_eq!(list_jobs(&c, &doomed).await, 401);
    // The revoked token cannot revoke anything, there either.
    assert_eq!(revoke(&c, &doomed, &kept).await, 401);
    // The unrelated token works everywhere.
    for base in [&a, &b, &c] {
        assert_eq!(list_jobs(base, &kept).await, 200, "{base}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_shared_on_one_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("api.sqlite").display());
    revocations_are_shared_and_kept(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_shared_on_one_mariadb() {
    let (_, db_url) = MariaDb::shared().database();
    revocations_are_shared_and_kept(&db_url).await;
}

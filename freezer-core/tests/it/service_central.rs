//! Upstream's "centralized scheduler", end to end: central clients in the API, the trust a
//! job for one gets, trust-scoped tokens from the standalone identity (and from a real
//! Keystone), and the centralized scheduler that runs every project's jobs through their
//! trusts so that what it reports lands in each job's own project.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use freezer_core::CancelToken;
use freezer_core::job::{RunContext, Secret};
use freezer_core::service::api::{ApiState, router, serve};
use freezer_core::service::auth::setup::{AuthOptions, AuthSetup, KeystoneOptions};
use freezer_core::service::client::{Client, ClientSettings};
use freezer_core::service::scheduler::{JobFeed, Scheduler, SchedulerOptions, StatusHandle};
use freezer_core::service::store::{SqliteStore, Store};
use serde_json::{Value, json};

use crate::support;

const ALICE_PROJECT: &str = "demo1";
const BOB_PROJECT: &str = "other1";
const SERVICE_PROJECT: &str = "svc1";

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The users: alice (member of demo1), bob (member of other1), svc (the service user the
/// central scheduler runs as, role service in svc1).
fn users_file(dir: &Path) -> std::path::PathBuf {
    let users = dir.join("users.json");
    if !users.exists() {
        write_private(
            &users,
            &json!([
                {"user": "alice", "password": "alice-pw", "project": "demo",
                 "project_id": ALICE_PROJECT, "roles": ["member"]},
                {"user": "bob", "password": "bob-pw", "project": "other",
                 "project_id": BOB_PROJECT, "roles": ["member"]},
                {"user": "svc", "password": "svc-pw", "project": "service",
                 "project_id": SERVICE_PROJECT, "roles": ["service"]},
            ])
            .to_string(),
        );
    }
    users
}

struct Api {
    port: u16,
    stop: CancelToken,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Our API with the standalone identity on a free port, its database `dir/<db>`;
    /// trusts delegate `roles` to `svc` unless `trusts` is `None` (the feature off).
    async fn start(dir: &Path, db: &str, trusts: Option<&[&str]>) -> Api {
        let port = crate::servers::free_port();
        let setup = AuthSetup::from_options(&AuthOptions {
            keystone: None,
            users_file: Some(users_file(dir)),
            token_key_file: dir.join("token.key"),
            token_ttl: Duration::from_secs(3600),
            public_url: format!("http://127.0.0.1:{port}"),
        })
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join(db)).await.unwrap());
        let mut state = ApiState::new(Arc::clone(&store), setup.authenticator())
            .with_identity(setup.identity_router().unwrap());
        if let Some(roles) = trusts {
            let policy = setup
                .trust_policy(
                    store,
                    Some("svc"),
                    false,
                    roles.iter().map(|r| r.to_string()).collect(),
                )
                .unwrap();
            state = state.with_trusts(policy);
        }
        Api::serve(port, state).await
    }

    async fn serve(port: u16, state: ApiState) -> Api {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let stop = CancelToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            serve(listener, router(state), async move { s.cancelled().await })
                .await
                .unwrap();
        });
        Api { port, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the API stops")
            .unwrap();
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A token of `user`, scoped to their project.
    async fn login(&self, user: &str, password: &str) -> String {
        let (status, _, token) = self
            .auth(
                json!({"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": "Default"}, "password": password}}}),
                None,
            )
            .await;
        assert_eq!(status, 201, "login of {user}");
        token.unwrap()
    }

    /// `POST /identity/v3/auth/tokens`: the status, the body and the token.
    async fn auth(&self, identity: Value, scope: Option<Value>) -> (u16, Value, Option<String>) {
        let mut auth = json!({ "identity": identity });
        if let Some(s) = scope {
            auth["scope"] = s;
        }
        let r = reqwest::Client::new()
            .post(format!("{}/identity/v3/auth/tokens?nocatalog", self.url()))
            .header("content-type", "application/json")
            .body(json!({ "auth": auth }).to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let token = r
            .headers()
            .get("x-subject-token")
            .map(|v| v.to_str().unwrap().to_string());
        let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
        (status, body, token)
    }

    /// `method` on `<url><path>` with `token`: the status and the JSON answer.
    async fn call(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}{path}", self.url()),
            )
            .header("X-Auth-Token", token);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(token, method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// The scheduler's client: `svc`, password authentication at our identity.
    fn service_client(&self) -> Client {
        Client::new(ClientSettings {
            auth_url: Some(format!("{}/identity/v3", self.url())),
            username: Some("svc".into()),
            password: Some(Secret("svc-pw".into())),
            project_name: Some("service".into()),
            region_name: Some("RegionOne".into()),
            ..ClientSettings::default()
        })
        .unwrap()
    }
}

/// The central client the tests register: upstream's `<project>_<hostname>`.
const CENTRAL: &str = "svc1_central";

fn central_info() -> Value {
    let mut opts = SchedulerOptions::new(CENTRAL, "central");
    opts.centralized = true;
    opts.client_info()
}

struct Running {
    status: StatusHandle,
    stop: CancelToken,
    task: tokio::task::JoinHandle<freezer_core::Result<()>>,
}

impl Running {
    fn start(client: Client) -> Running {
        let mut opts = SchedulerOptions::new(CENTRAL, "central");
        opts.centralized = true;
        opts.poll_interval = Duration::from_millis(200);
        opts.retry_interval = Duration::from_millis(300);
        opts.tz = freezer_core::TimeZone::UTC;
        let mut ctx = RunContext::current();
        ctx.actor = support::actor();
        opts.context = ctx;
        let s = Scheduler::new(JobFeed::Api(Arc::new(client)), opts);
        let status = s.status_handle();
        let stop = CancelToken::new();
        let task = tokio::spawn(s.run(stop.clone()));
        Running { status, stop, task }
    }

    async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        f: impl Fn(&freezer_core::service::scheduler::SchedulerStatus) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.status.get();
            if f(&s) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {secs} s for {what}; status: {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the scheduler stops")
            .unwrap()
            .unwrap();
    }
}

/// A one-shot backup job of `src` into `repo` for the central client.
fn backup_job(dir: &Path, name: &str) -> Value {
    json!({
        "client_id": CENTRAL,
        "description": "a job for the central scheduler",
        "job_actions": [{"freezer_action": {
            "action": "backup",
            "mode": "fs",
            "storage": "local",
            "container": dir.join("repo").display().to_string(),
            "path_to_backup": dir.join("src").display().to_string(),
            "backup_name": name,
        }, "max_retries": 1, "max_retries_interval": 1}],
        "job_schedule": {},
    })
}

fn env() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for d in ["src", "repo"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("src/a.txt"), "hello central\n").unwrap();
    dir
}

fn jobs(v: &Value) -> Vec<Value> {
    v["jobs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_job_runs_through_its_trust_into_the_members_project() {
    let dir = env();
    let api = Api::start(dir.path(), "api.db", Some(&["member"])).await;
    let alice = api.login("alice", "alice-pw").await;
    let bob = api.login("bob", "bob-pw").await;
    let svc = api.login("svc", "svc-pw").await;
    let alice_v2 = format!("/v2/{ALICE_PROJECT}");
    let bob_v2 = format!("/v2/{BOB_PROJECT}");

    // A member may not register a central client (clients:create_central), with upstream's
    // body; a plain client it may.
    let mut info = central_info();
    info["client_id"] = json!("demo1_sneaky");
    let (status, body) = api
        .call(&alice, "POST", &format!("{alice_v2}/clients"), Some(info))
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body,
        json!({"title": "Access Forbidden", "description": "You are not allowed to access this resource"})
    );

    // The centralized scheduler, as svc, registers its central client.
    let sched = Running::start(api.service_client());
    sched.wait_for(10, "registered", |s| s.registered).await;
    let c = api
        .ok(
            &svc,
            "GET",
            &format!("/v2/{SERVICE_PROJECT}/clients/{CENTRAL}"),
            None,
        )
        .await;
    assert_eq!(c["client"]["is_central"], json!(true), "{c}");

    // Every project sees it; no other project may delete it.
    for (token, v2) in [(&alice, &alice_v2), (&bob, &bob_v2)] {
        let list = api.ok(token, "GET", &format!("{v2}/clients"), None).await;
        assert!(
            list["clients"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["client"]["client_id"] == CENTRAL),
            "{list}"
        );
        let (status, body) = api
            .call(token, "DELETE", &format!("{v2}/clients/{CENTRAL}"), None)
            .await;
        assert_eq!(status, 403, "{body}");
    }
    api.ok(
        &svc,
        "GET",
        &format!("/v2/{SERVICE_PROJECT}/clients/{CENTRAL}"),
        None,
    )
    .await;

    // Alice's job for the central client gets a trust from her to svc.
    let created = api
        .ok(
            &alice,
            "POST",
            &format!("{alice_v2}/jobs"),
            Some(backup_job(dir.path(), "central-b")),
        )
        .await;
    let job_id = created["job_id"].as_str().unwrap().to_string();
    let job = api
        .ok(&alice, "GET", &format!("{alice_v2}/jobs/{job_id}"), None)
        .await;
    let alice_id = job["user_id"].as_str().unwrap().to_string();
    let creds = &job["user_credentials"];
    assert_eq!(creds["trustor_user_id"], json!(alice_id), "{job}");
    let trust_id = creds["trust_id"].as_str().unwrap().to_string();
    let trust = api
        .ok(
            &svc,
            "GET",
            &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
            None,
        )
        .await;
    let svc_id = trust["trust"]["trustee_user_id"].as_str().unwrap();
    assert_ne!(svc_id, alice_id);
    assert_eq!(trust["trust"]["trustor_user_id"], json!(alice_id));
    assert_eq!(trust["trust"]["project_id"], json!(ALICE_PROJECT));
    assert_eq!(trust["trust"]["impersonation"], json!(false));
    assert_eq!(trust["trust"]["roles"][0]["name"], json!("member"));
    let listed = api
        .ok(&alice, "GET", &format!("{alice_v2}/jobs"), None)
        .await;
    assert_eq!(
        jobs(&listed)[0]["user_credentials"]["trust_id"],
        json!(trust_id)
    );
    // A caller's own user_credentials are not taken.
    let mut forged = backup_job(dir.path(), "forged");
    forged["user_credentials"] = json!({"trust_id": "someone-elses", "trustor_user_id": "x"});
    let forged_id = api
        .ok(&alice, "POST", &format!("{alice_v2}/jobs"), Some(forged))
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let f = api
        .ok(&alice, "GET", &format!("{alice_v2}/jobs/{forged_id}"), None)
        .await;
    assert_eq!(
        f["user_credentials"]["trust_id"],
        json!(trust_id),
        "reused: {f}"
    );
    // Bob cannot read the trust, or the job.
    let (status, _) = api
        .call(
            &bob,
            "GET",
            &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call(&bob, "GET", &format!("{alice_v2}/jobs/{job_id}"), None)
        .await;
    assert_eq!(status, 404);

    // The scheduler (svc, all projects) runs both; their state is in alice's project.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = api
            .ok(&alice, "GET", &format!("{alice_v2}/jobs/{job_id}"), None)
            .await;
        let b = api
            .ok(&alice, "GET", &format!("{alice_v2}/jobs/{forged_id}"), None)
            .await;
        let done = |j: &Value| {
            j["job_schedule"]["status"] == "completed" && j["job_schedule"]["result"] == "success"
        };
        if done(&a) && done(&b) {
            assert!(a["job_schedule"]["time_ended"].as_i64().unwrap() > 0, "{a}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{a}\n{b}\n{:#?}",
            sched.status.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The backup metadata is alice's, and nobody else's.
    let backups = api
        .ok(&alice, "GET", &format!("{alice_v2}/backups"), None)
        .await;
    let backups = backups["backups"].as_array().unwrap().clone();
    assert_eq!(backups.len(), 2, "{backups:?}");
    let names: std::collections::BTreeSet<&str> = backups
        .iter()
        .map(|b| b["backup_metadata"]["backup_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["central-b", "forged"].into());
    for b in &backups {
        assert_eq!(b["project_id"], json!(ALICE_PROJECT), "{b}");
    }
    for (token, v2) in [(&bob, &bob_v2), (&svc, &format!("/v2/{SERVICE_PROJECT}"))] {
        let theirs = api.ok(token, "GET", &format!("{v2}/backups"), None).await;
        assert_eq!(theirs["backups"], json!([]), "{v2}");
    }
    let bobs = api.ok(&bob, "GET", &format!("{bob_v2}/jobs"), None).await;
    assert!(jobs(&bobs).is_empty(), "{bobs}");
    sched.stop().await;

    // The trust stays while a job uses it; the last job's delete deletes it.
    api.ok(
        &alice,
        "DELETE",
        &format!("{alice_v2}/jobs/{forged_id}"),
        None,
    )
    .await;
    api.ok(
        &svc,
        "GET",
        &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
        None,
    )
    .await;
    api.ok(&alice, "DELETE", &format!("{alice_v2}/jobs/{job_id}"), None)
        .await;
    let (status, body) = api
        .call(
            &svc,
            "GET",
            &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    // svc deletes its own central client.
    api.ok(
        &svc,
        "DELETE",
        &format!("/v2/{SERVICE_PROJECT}/clients/{CENTRAL}"),
        None,
    )
    .await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_scoped_tokens_are_for_the_trustee_while_the_trust_lasts() {
    let dir = env();
    let api = Api::start(dir.path(), "api.db", Some(&["member"])).await;
    let alice = api.login("alice", "alice-pw").await;
    let svc = api.login("svc", "svc-pw").await;
    api.ok(
        &svc,
        "POST",
        &format!("/v2/{SERVICE_PROJECT}/clients"),
        Some(central_info()),
    )
    .await;
    let job = api
        .ok(
            &alice,
            "POST",
            &format!("/v2/{ALICE_PROJECT}/jobs"),
            Some(backup_job(dir.path(), "t")),
        )
        .await;
    let job_id = job["job_id"].as_str().unwrap();
    let job = api
        .ok(
            &alice,
            "GET",
            &format!("/v2/{ALICE_PROJECT}/jobs/{job_id}"),
            None,
        )
        .await;
    let trust_id = job["user_credentials"]["trust_id"].as_str().unwrap();
    let password = |user: &str, pw: &str| {
        json!({"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"name": "Default"}, "password": pw}}})
    };
    let scope = json!({"OS-TRUST:trust": {"id": trust_id}});

    // The trustee gets a token acting in the trustor's project with the delegated roles.
    let (status, body, token) = api
        .auth(password("svc", "svc-pw"), Some(scope.clone()))
        .await;
    assert_eq!(status, 201, "{body}");
    let t = &body["token"];
    assert_eq!(t["project"]["id"], json!(ALICE_PROJECT), "{body}");
    assert_eq!(t["project"]["name"], json!("demo"), "{body}");
    assert_eq!(t["user"]["name"], json!("svc"), "{body}");
    let names: Vec<&str> = t["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["member"], "{body}");
    assert_eq!(t["OS-TRUST:trust"]["id"], json!(trust_id), "{body}");
    assert_eq!(
        t["OS-TRUST:trust"]["trustor_user"]["id"], job["user_id"],
        "{body}"
    );
    assert_eq!(t["OS-TRUST:trust"]["impersonation"], json!(false));
    let trust_token = token.unwrap();
    // It reads and writes alice's project, and nothing else.
    let listed = api
        .ok(
            &trust_token,
            "GET",
            &format!("/v2/{ALICE_PROJECT}/jobs"),
            None,
        )
        .await;
    assert_eq!(jobs(&listed).len(), 1);
    api.ok(
        &trust_token,
        "PATCH",
        &format!("/v2/{ALICE_PROJECT}/jobs/{job_id}"),
        Some(json!({"job_schedule": {"status": "scheduled"}})),
    )
    .await;
    for p in [BOB_PROJECT, SERVICE_PROJECT] {
        let (status, _) = api
            .call(&trust_token, "GET", &format!("/v2/{p}/jobs"), None)
            .await;
        assert_eq!(status, 404, "{p}");
    }
    // The token validates at /identity with its trust section.
    let r = reqwest::Client::new()
        .get(format!("{}/identity/v3/auth/tokens", api.url()))
        .header("x-auth-token", &svc)
        .header("x-subject-token", &trust_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["token"]["OS-TRUST:trust"]["id"], json!(trust_id));

    // Not the trustee (the trustor, another member): 403 as Keystone; no such trust: 404; a
    // wrong password: 401; a trust-scoped token is not rescoped, nor manages trusts.
    for (user, pw) in [("alice", "alice-pw"), ("bob", "bob-pw")] {
        let (status, body, token) = api.auth(password(user, pw), Some(scope.clone())).await;
        assert_eq!(status, 403, "{user}: {body}");
        assert!(token.is_none());
    }
    let (status, _, _) = api
        .auth(
            password("svc", "svc-pw"),
            Some(json!({"OS-TRUST:trust": {"id": "no-such-trust"}})),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = api
        .auth(password("svc", "wrong"), Some(scope.clone()))
        .await;
    assert_eq!(status, 401);
    let (status, _, _) = api
        .auth(
            json!({"methods": ["token"], "token": {"id": trust_token}}),
            Some(json!({"project": {"id": SERVICE_PROJECT}})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call(
            &trust_token,
            "GET",
            "/identity/v3/OS-TRUST/trusts?trustee_user_id=x",
            None,
        )
        .await;
    assert_eq!(status, 403);
    // Bob may not delete alice's trust; alice may, and its tokens end at once.
    let bob = api.login("bob", "bob-pw").await;
    let (status, _) = api
        .call(
            &bob,
            "DELETE",
            &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .call(
            &alice,
            "DELETE",
            &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = api
        .call(
            &trust_token,
            "GET",
            &format!("/v2/{ALICE_PROJECT}/jobs"),
            None,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = api.auth(password("svc", "svc-pw"), Some(scope)).await;
    assert_eq!(status, 404);
    api.stop().await;

    // A trust delegating a role the member does not hold cannot be made: 422 as upstream.
    let api = Api::start(dir.path(), "api2.db", Some(&["admin"])).await;
    let alice = api.login("alice", "alice-pw").await;
    let svc = api.login("svc", "svc-pw").await;
    api.ok(
        &svc,
        "POST",
        &format!("/v2/{SERVICE_PROJECT}/clients"),
        Some(central_info()),
    )
    .await;
    let (status, body) = api
        .call(
            &alice,
            "POST",
            &format!("/v2/{ALICE_PROJECT}/jobs"),
            Some(backup_job(dir.path(), "x")),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["title"],
        json!("Missing required credentials"),
        "{body}"
    );
    assert!(
        body["description"].as_str().unwrap().contains("admin"),
        "{body}"
    );
    let listed = api
        .ok(&alice, "GET", &format!("/v2/{ALICE_PROJECT}/jobs"), None)
        .await;
    assert!(jobs(&listed).is_empty(), "nothing stored: {listed}");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_centralized_scheduler_skips_jobs_without_a_live_trust() {
    let dir = env();
    // Two API servers on one database: one makes trusts, the other has the feature off (an
    // API upgraded from before trusts, say), so its jobs have no user_credentials.
    let api = Api::start(dir.path(), "api.db", Some(&["member"])).await;
    let plain = Api::start(dir.path(), "api.db", None).await;
    let alice = api.login("alice", "alice-pw").await;
    let svc = api.login("svc", "svc-pw").await;
    let alice_v2 = format!("/v2/{ALICE_PROJECT}");
    api.ok(
        &svc,
        "POST",
        &format!("/v2/{SERVICE_PROJECT}/clients"),
        Some(central_info()),
    )
    .await;
    let untrusted = plain
        .ok(
            &plain.login("alice", "alice-pw").await,
            "POST",
            &format!("{alice_v2}/jobs"),
            Some(backup_job(dir.path(), "untrusted")),
        )
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let u = api
        .ok(&alice, "GET", &format!("{alice_v2}/jobs/{untrusted}"), None)
        .await;
    assert!(u.get("user_credentials").is_none(), "{u}");
    // A job whose trust alice then deletes.
    let revoked = api
        .ok(
            &alice,
            "POST",
            &format!("{alice_v2}/jobs"),
            Some(backup_job(dir.path(), "revoked")),
        )
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .ok(&alice, "GET", &format!("{alice_v2}/jobs/{revoked}"), None)
        .await;
    let trust_id = r["user_credentials"]["trust_id"]
        .as_str()
        .unwrap()
        .to_string();
    api.ok(
        &alice,
        "DELETE",
        &format!("/identity/v3/OS-TRUST/trusts/{trust_id}"),
        None,
    )
    .await;

    let sched = Running::start(api.service_client());
    sched
        .wait_for(
            20,
            "the job without a trust reported, the other tried",
            |s| {
                s.feed_errors
                    .iter()
                    .any(|e| e.contains(&untrusted) && e.contains("user_credentials.trust_id"))
                    && s.jobs.get(&revoked).is_some_and(|j| j.runs >= 1)
            },
        )
        .await;
    let st = sched.status.get();
    assert!(!st.jobs.contains_key(&untrusted), "{st:#?}");
    let err = st.jobs[&revoked].last_error.clone().unwrap_or_default();
    assert!(
        err.contains(&trust_id) && err.contains("did not run"),
        "{err}"
    );
    assert_eq!(st.jobs[&revoked].result, "fail", "{st:#?}");
    sched.stop().await;
    // Neither ran: no backup, an empty repository folder, the jobs as created.
    let backups = api
        .ok(&alice, "GET", &format!("{alice_v2}/backups"), None)
        .await;
    assert_eq!(backups["backups"], json!([]));
    assert_eq!(
        std::fs::read_dir(dir.path().join("repo")).unwrap().count(),
        0
    );
    for id in [&untrusted, &revoked] {
        let j = api
            .ok(&alice, "GET", &format!("{alice_v2}/jobs/{id}"), None)
            .await;
        assert_eq!(
            j["job_schedule"].get("status"),
            None,
            "nothing reported for {id}: {j}"
        );
    }
    plain.stop().await;
    api.stop().await;
}

// --- Against a real Keystone -------------------------------------------------------------

/// `method` on Keystone's `path` with `token`: the status and the JSON answer.
async fn keystone_call(url: &str, token: &str, method: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{url}{path}"),
        )
        .header("x-auth-token", token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null),
    )
}

async fn keystone_login(
    url: &str,
    user: &str,
    password: &str,
    scope: Value,
) -> (u16, Value, Option<String>) {
    let r = reqwest::Client::new()
        .post(format!("{url}/auth/tokens?nocatalog"))
        .header("content-type", "application/json")
        .body(
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": "Default"}, "password": password}}},
                "scope": scope}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let token = r
        .headers()
        .get("x-subject-token")
        .map(|v| v.to_str().unwrap().to_string());
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_trusts_are_made_for_central_jobs_and_deleted_with_them() {
    let ks = crate::service_auth::keystone().await;
    let setup = AuthSetup::from_options(&AuthOptions {
        keystone: Some(KeystoneOptions {
            url: ks.url.clone(),
            username: "admin".into(),
            password: ks.admin_password.clone(),
            project_name: "admin".into(),
            user_domain_name: "Default".into(),
            project_domain_name: "Default".into(),
        }),
        users_file: None,
        token_key_file: "/nonexistent/unused.key".into(),
        token_ttl: Duration::from_secs(3600),
        public_url: "http://127.0.0.1:9".into(),
    })
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    // --service-user is for the standalone identity only.
    let e = setup
        .trust_policy(
            Arc::clone(&store),
            Some("svc"),
            false,
            vec!["member".into()],
        )
        .unwrap_err();
    assert!(e.to_string().contains("--service-user"), "{e}");
    let policy = setup
        .trust_policy(Arc::clone(&store), None, false, vec!["member".into()])
        .unwrap();
    let state = ApiState::new(store, setup.authenticator()).with_trusts(policy);
    let api = Api::serve(crate::servers::free_port(), state).await;

    let (status, _, admin) = keystone_login(
        &ks.url,
        "admin",
        &ks.admin_password,
        json!({"project": {"name": "admin", "domain": {"name": "Default"}}}),
    )
    .await;
    assert_eq!(status, 201);
    let admin = admin.unwrap();
    let (status, member, member_token) = keystone_login(
        &ks.url,
        "freezer",
        &ks.user_password,
        json!({"project": {"name": "freezer-test", "domain": {"name": "Default"}}}),
    )
    .await;
    assert_eq!(status, 201, "{member}");
    let member_token = member_token.unwrap();
    let admin_project = {
        let (status, body, _) = keystone_login(
            &ks.url,
            "admin",
            &ks.admin_password,
            json!({"project": {"name": "admin", "domain": {"name": "Default"}}}),
        )
        .await;
        assert_eq!(status, 201);
        (
            body["token"]["project"]["id"].as_str().unwrap().to_string(),
            body["token"]["user"]["id"].as_str().unwrap().to_string(),
        )
    };
    let (admin_project, admin_id) = admin_project;

    // The admin (the API's service user) registers the central client in its project.
    api.ok(
        &admin,
        "POST",
        &format!("/v2/{admin_project}/clients"),
        Some(central_info()),
    )
    .await;
    // The member's job for it gets a Keystone trust from the member to the service user.
    let v2 = format!("/v2/{}", ks.project_id);
    let created = api
        .ok(
            &member_token,
            "POST",
            &format!("{v2}/jobs"),
            Some(backup_job(Path::new("/nonexistent"), "ks")),
        )
        .await;
    let job_id = created["job_id"].as_str().unwrap().to_string();
    let job = api
        .ok(&member_token, "GET", &format!("{v2}/jobs/{job_id}"), None)
        .await;
    assert_eq!(
        job["user_credentials"]["trustor_user_id"],
        json!(ks.user_id),
        "{job}"
    );
    let trust_id = job["user_credentials"]["trust_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, trust) = keystone_call(
        &ks.url,
        &admin,
        "GET",
        &format!("/OS-TRUST/trusts/{trust_id}"),
    )
    .await;
    assert_eq!(status, 200, "{trust}");
    assert_eq!(trust["trust"]["trustor_user_id"], json!(ks.user_id));
    assert_eq!(trust["trust"]["trustee_user_id"], json!(admin_id));
    assert_eq!(trust["trust"]["project_id"], json!(ks.project_id));
    assert_eq!(trust["trust"]["impersonation"], json!(false));

    // The trustee's trust-scoped token from Keystone reaches the member's project here.
    let (status, body, trust_token) = keystone_login(
        &ks.url,
        "admin",
        &ks.admin_password,
        json!({"OS-TRUST:trust": {"id": trust_id}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["token"]["project"]["id"], json!(ks.project_id));
    let listed = api
        .ok(&trust_token.unwrap(), "GET", &format!("{v2}/jobs"), None)
        .await;
    assert_eq!(jobs(&listed)[0]["job_id"], json!(job_id));
    // The member (not the trustee) gets no such token.
    let (status, _, _) = keystone_login(
        &ks.url,
        "freezer",
        &ks.user_password,
        json!({"OS-TRUST:trust": {"id": trust_id}}),
    )
    .await;
    assert_eq!(status, 403);
    // A second job reuses the trust.
    let second = api
        .ok(
            &member_token,
            "POST",
            &format!("{v2}/jobs"),
            Some(backup_job(Path::new("/nonexistent"), "ks2")),
        )
        .await["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let j2 = api
        .ok(&member_token, "GET", &format!("{v2}/jobs/{second}"), None)
        .await;
    assert_eq!(j2["user_credentials"]["trust_id"], json!(trust_id));

    // Deleting the jobs deletes the trust in Keystone once unused.
    api.ok(
        &member_token,
        "DELETE",
        &format!("{v2}/jobs/{second}"),
        None,
    )
    .await;
    let (status, _) = keystone_call(
        &ks.url,
        &admin,
        "GET",
        &format!("/OS-TRUST/trusts/{trust_id}"),
    )
    .await;
    assert_eq!(status, 200, "still used by the first job");
    api.ok(
        &member_token,
        "DELETE",
        &format!("{v2}/jobs/{job_id}"),
        None,
    )
    .await;
    let (status, body) = keystone_call(
        &ks.url,
        &admin,
        "GET",
        &format!("/OS-TRUST/trusts/{trust_id}"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    api.stop().await;
}

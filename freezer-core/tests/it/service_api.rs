//! The freezer-api v2 REST API over HTTP: every route and status code of upstream's
//! reference, the bad cases (malformed JSON, unknown and wrong-typed fields, missing ids,
//! another project's documents, no token, an expired token, a reader writing), pagination,
//! search, and concurrent session ends.
//!
//! One in-process server over an in-memory SQLite store for the whole test binary (on a loopback port of its own), each
//! test in projects of its own. Tokens are read by a test authenticator:
//! `<role>[+<role>...]@<project>` stands for a user with those roles in that project,
//! `expired` for an expired token; anything else is invalid.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use freezer_core::service::api::{ApiState, router, serve};
use freezer_core::service::auth::{AuthError, Authenticator, Identity};
use freezer_core::service::store::{SqliteStore, Store};
use serde_json::{Value, json};

/// `<roles>@<project>` tokens (see the module's first lines).
#[derive(Debug)]
struct TestAuth;

#[async_trait]
impl Authenticator for TestAuth {
    async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        if token == "expired" {
            return Err(AuthError::Expired(jiff::Timestamp::UNIX_EPOCH));
        }
        let (roles, project) = token.split_once('@').ok_or(AuthError::Invalid)?;
        Ok(Identity {
            user_id: format!("user-{}", roles.replace('+', "-")),
            user_name: roles.to_string(),
            project_id: project.to_string(),
            roles: roles.split('+').map(str::to_string).collect(),
            expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
        })
    }
}

fn test_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::open_in_memory().expect("an in-memory SQLite store"))
}

/// The shared server's base URL (`http://127.0.0.1:PORT`).
fn base() -> &'static str {
    static BASE: OnceLock<String> = OnceLock::new();
    BASE.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                let mut state = ApiState::new(test_store(), Arc::new(TestAuth));
                state.body_limit = 64 * 1024;
                serve(listener, router(state), std::future::pending())
                    .await
                    .unwrap();
            });
        });
        format!("http://{}", rx.recv().unwrap())
    })
}

struct Resp {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn as_(token: &str) -> Api {
        Api {
            http: reqwest::Client::new(),
            token: Some(token.to_string()),
        }
    }

    fn anonymous() -> Api {
        Api {
            http: reqwest::Client::new(),
            token: None,
        }
    }

    async fn raw(
        &self,
        method: &str,
        path: impl Into<String>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{}", base(), path.into()));
        if let Some(t) = &self.token {
            req = req.header("X-Auth-Token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    async fn call(&self, method: &str, path: impl Into<String>, body: Option<Value>) -> Resp {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        self.raw(
            method,
            path,
            body,
            &[
                ("Content-Type", "application/json"),
                ("Accept", "application/json"),
            ],
        )
        .await
    }

    async fn get(&self, path: impl Into<String>) -> Resp {
        self.call("GET", path, None).await
    }
    async fn post(&self, path: impl Into<String>, body: Value) -> Resp {
        self.call("POST", path, Some(body)).await
    }
    async fn patch(&self, path: impl Into<String>, body: Value) -> Resp {
        self.call("PATCH", path, Some(body)).await
    }
    async fn delete(&self, path: impl Into<String>) -> Resp {
        self.call("DELETE", path, None).await
    }
}

/// Asserts the status, and that an error has upstream's body.
#[track_caller]
fn expect(r: &Resp, status: u16) -> &Value {
    assert_eq!(r.status, status, "body: {}", r.body);
    if status >= 400 {
        assert!(
            r.body["title"].is_string(),
            "error without a title: {}",
            r.body
        );
        assert!(
            r.body["description"].is_string(),
            "error without a description: {}",
            r.body
        );
    }
    &r.body
}

#[track_caller]
fn says(r: &Resp, status: u16, needle: &str) {
    let d = expect(r, status)["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(d.contains(needle), "{needle:?} not in {d:?}");
}

async fn register(api: &Api, project: &str, client_id: &str) {
    let r = api
        .post(
            &format!("/v2/{project}/clients/"),
            json!({"client_id": client_id, "hostname": "node1", "description": "a node"}),
        )
        .await;
    expect(&r, 201);
}

fn a_job(client_id: &str) -> Value {
    json!({
        "description": "nightly",
        "client_id": client_id,
        "job_schedule": {"schedule_interval": "2 seconds", "time_created": 5, "time_started": 7},
        "job_actions": [
            {"freezer_action": {"action": "backup", "mode": "fs", "path_to_backup": "/etc", "backup_name": "etc"},
             "max_retries": 3, "mandatory": true},
            {"freezer_action": {"action": "exec", "command": "true"}}
        ],
        "action_defaults": {"storage": "local", "container": "/srv/backups", "backup_name": "ignored"}
    })
}

fn is_uuid_hex(s: &str) -> bool {
    s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_home_healthcheck_and_request_ids() {
    let anon = Api::anonymous();
    let r = anon.get("/").await;
    let v = expect(&r, 300);
    assert_eq!(v["versions"][0]["id"], "v2");
    assert_eq!(v["versions"][0]["status"], "CURRENT");
    assert_eq!(
        v["versions"][0]["links"][0]["href"],
        format!("{}/v2/", base())
    );
    let id = r.headers["x-openstack-request-id"].to_str().unwrap();
    assert!(id.starts_with("req-") && id.len() == 40, "{id}");

    let r = anon.raw("GET", "/healthcheck", None, &[]).await;
    assert_eq!(r.status, 200);
    expect(&anon.get("/v2").await, 401);

    let api = Api::as_("member@p-home");
    for path in ["/v2", "/v2/"] {
        let r = api.get(path).await;
        let home = expect(&r, 200);
        assert_eq!(r.headers["content-type"], "application/json-home");
        assert_eq!(
            home["resources"]["rel/backups"],
            json!({"href-template": "/v2/{project_id}/backups/{backup_id}",
                "href-vars": {"project_id": "param/project_id", "backup_id": "param/backup_id"},
                "hints": {"allow": ["GET"], "formats": {"application/json": {}}}})
        );
    }
    // A caller's request id is kept; a malformed one is replaced.
    let r = api
        .raw(
            "GET",
            "/v2/p-home/jobs",
            None,
            &[("X-Openstack-Request-ID", "req-abc-123")],
        )
        .await;
    assert_eq!(r.headers["x-openstack-request-id"], "req-abc-123");
    let r = api
        .raw(
            "GET",
            "/v2/p-home/jobs",
            None,
            &[("X-Openstack-Request-ID", "evil\tvalue")],
        )
        .await;
    assert_ne!(r.headers["x-openstack-request-id"], "evil\tvalue");
    // Unknown routes and methods: JSON errors.
    says(
        &api.get("/v2/p-home/nothing").await,
        404,
        "/v2/p-home/nothing",
    );
    expect(
        &api.call("PUT", "/v2/p-home/jobs", Some(json!({}))).await,
        405,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_policy() {
    let path = "/v2/p-auth/jobs/";
    let r = Api::anonymous().get(path).await;
    says(&r, 401, "X-Auth-Token");
    says(&Api::as_("garbage").get(path).await, 401, "not valid");
    says(&Api::as_("expired").get(path).await, 401, "expired");
    // No role in the project: 403; a reader reads and may not write.
    expect(&Api::as_("observer@p-auth").get(path).await, 403);
    let reader = Api::as_("reader@p-auth");
    expect(&reader.get(path).await, 200);
    let r = reader.post(path, a_job("auth-node1")).await;
    assert_eq!(expect(&r, 403)["title"], "Access Forbidden");
    expect(
        &reader
            .post("/v2/p-auth/clients", json!({"client_id": "n1"}))
            .await,
        403,
    );
    expect(
        &reader
            .post(
                "/v2/p-auth/backups",
                json!({"container": "c", "hostname": "h", "backup_name": "b"}),
            )
            .await,
        403,
    );

    // Another project's URL is 404, never 403 and never data.
    let member = Api::as_("member@p-auth");
    register(&member, "p-auth", "auth-node1").await;
    let job_id = expect(&member.post(path, a_job("auth-node1")).await, 201)["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = Api::as_("member@p-other");
    expect(&other.get("/v2/p-auth/jobs").await, 404);
    expect(&other.get(&format!("/v2/p-auth/jobs/{job_id}")).await, 404);
    expect(
        &other.post("/v2/p-auth/jobs", a_job("auth-node1")).await,
        404,
    );
    // ... and another project's document through one's own URL is 404 too.
    let r = other.get(&format!("/v2/p-other/jobs/{job_id}")).await;
    assert!(!r.body.to_string().contains("nightly"));
    expect(&r, 404);
    expect(
        &other
            .patch(
                &format!("/v2/p-other/jobs/{job_id}"),
                json!({"description": "x"}),
            )
            .await,
        404,
    );
    expect(
        &other
            .post(
                &format!("/v2/p-other/jobs/{job_id}/event"),
                json!({"stop": null}),
            )
            .await,
        404,
    );
    // Deleting it from another project does nothing (204, as upstream).
    expect(
        &other.delete(&format!("/v2/p-other/jobs/{job_id}")).await,
        204,
    );
    expect(&member.get(&format!("/v2/p-auth/jobs/{job_id}")).await, 200);
    let listed = expect(&other.get("/v2/p-other/jobs").await, 200).clone();
    assert_eq!(listed, json!({"jobs": []}));

    // The admin sees all: any job by id, every project's jobs with all_projects.
    let admin = Api::as_("admin@p-admin");
    assert_eq!(
        expect(&admin.get(&format!("/v2/p-admin/jobs/{job_id}")).await, 200)["job_id"],
        job_id.as_str()
    );
    let all = admin
        .get("/v2/p-admin/jobs?all_projects=True&limit=1000")
        .await;
    assert!(
        expect(&all, 200)["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["job_id"] == job_id.as_str())
    );
    let own = admin.get("/v2/p-admin/jobs?all_projects=False").await;
    assert_eq!(expect(&own, 200)["jobs"], json!([]));
    // A service user reads any project and posts backups, but writes no job.
    let service = Api::as_("service@p-svc");
    expect(&service.get("/v2/p-auth/jobs").await, 200);
    expect(
        &service
            .post(
                "/v2/p-auth/backups",
                json!({"container": "c", "hostname": "h", "backup_name": "b"}),
            )
            .await,
        201,
    );
    expect(
        &service.post("/v2/p-auth/jobs", a_job("auth-node1")).await,
        403,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_json_accept_and_size() {
    let api = Api::as_("member@p-body");
    let r = api
        .raw(
            "POST",
            "/v2/p-body/jobs",
            Some(b"{\"client_id\": ".to_vec()),
            &[],
        )
        .await;
    says(&r, 400, "malformed JSON");
    says(
        &api.raw("POST", "/v2/p-body/backups", Some(b"[1, 2]".to_vec()), &[])
            .await,
        400,
        "must be an object",
    );
    says(
        &api.raw("GET", "/v2/p-body/jobs", Some(b"{oops}".to_vec()), &[])
            .await,
        400,
        "line 1",
    );
    // Accept must allow JSON.
    let r = api
        .raw("GET", "/v2/p-body/jobs", None, &[("Accept", "text/html")])
        .await;
    expect(&r, 406);
    expect(
        &api.raw("GET", "/v2/p-body/jobs", None, &[("Accept", "*/*")])
            .await,
        200,
    );
    // Too large.
    let big = format!(
        "{{\"container\": \"c\", \"hostname\": \"h\", \"backup_name\": \"{}\"}}",
        "x".repeat(70_000)
    );
    expect(
        &api.raw("POST", "/v2/p-body/backups", Some(big.into_bytes()), &[])
            .await,
        413,
    );
    // No headers at all (tempest's post without content type): 201.
    let body = br#"{"container": "c", "hostname": "h", "backup_name": "b"}"#.to_vec();
    expect(
        &api.raw("POST", "/v2/p-body/backups", Some(body), &[]).await,
        201,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_register_update_and_conflict() {
    let api = Api::as_("member@p-cli");
    let r = api
        .post(
            "/v2/p-cli/clients",
            json!({"client_id": "p-cli_node1.example.org", "hostname": "node1.example.org"}),
        )
        .await;
    assert_eq!(expect(&r, 201)["client_id"], "p-cli_node1.example.org");
    let c = expect(
        &api.get("/v2/p-cli/clients/p-cli_node1.example.org").await,
        200,
    )
    .clone();
    assert_eq!(c["project_id"], "p-cli");
    assert!(c["client"]["uuid"].is_string());
    assert_eq!(
        c["client"]["supported_actions"],
        json!(["backup", "restore", "info", "admin", "exec"])
    );
    // Re-registering updates description and capabilities, keeps the uuid.
    let r = api.post("/v2/p-cli/clients/", json!({"client_id": "p-cli_node1.example.org", "description": "new", "supported_actions": ["backup"]})).await;
    expect(&r, 201);
    let c2 = expect(
        &api.get("/v2/p-cli/clients/p-cli_node1.example.org/").await,
        200,
    )
    .clone();
    assert_eq!(c2["client"]["description"], "new");
    assert_eq!(c2["client"]["supported_actions"], json!(["backup"]));
    assert_eq!(c2["client"]["uuid"], c["client"]["uuid"]);
    // Another project: 409, and it does not see the client.
    let other = Api::as_("member@p-cli2");
    says(
        &other
            .post(
                "/v2/p-cli2/clients",
                json!({"client_id": "p-cli_node1.example.org"}),
            )
            .await,
        409,
        "another project",
    );
    expect(
        &other
            .get("/v2/p-cli2/clients/p-cli_node1.example.org")
            .await,
        404,
    );
    // Bad ids and types: 400 naming the field.
    says(
        &api.post(
            "/v2/p-cli/clients",
            json!({"client_id": "bad%project$id_host.domain.tld"}),
        )
        .await,
        400,
        "client.client_id",
    );
    says(
        &api.post(
            "/v2/p-cli/clients",
            json!({"client_id": "p_bad_hostname.bad/domain.b"}),
        )
        .await,
        400,
        "client.client_id",
    );
    expect(
        &api.post(
            "/v2/p-cli/clients",
            json!({"client_id": "padawan-ccp-c1-m1-mgmt"}),
        )
        .await,
        201,
    );
    says(
        &api.post("/v2/p-cli/clients", json!({"hostname": "h"}))
            .await,
        400,
        "client.client_id: required",
    );
    says(
        &api.post(
            "/v2/p-cli/clients",
            json!({"client_id": "n2", "is_central": "yes"}),
        )
        .await,
        400,
        "client.is_central",
    );
    // Central clients need the admin (or service) role; everyone sees them.
    expect(
        &api.post(
            "/v2/p-cli/clients",
            json!({"client_id": "central1", "is_central": true}),
        )
        .await,
        403,
    );
    let admin = Api::as_("admin@p-cli-admin");
    expect(
        &admin
            .post(
                "/v2/p-cli-admin/clients",
                json!({"client_id": "central1", "is_central": true}),
            )
            .await,
        201,
    );
    let list = expect(&api.get("/v2/p-cli/clients?limit=100").await, 200)["clients"].clone();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"]["client_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"central1") && ids.contains(&"padawan-ccp-c1-m1-mgmt"),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|i| i.starts_with("p-cli2")));
    // Deleting another project's central client is 403; one's own 204; unknown 204.
    expect(&api.delete("/v2/p-cli/clients/central1").await, 403);
    expect(
        &api.delete("/v2/p-cli/clients/padawan-ccp-c1-m1-mgmt").await,
        204,
    );
    expect(
        &api.get("/v2/p-cli/clients/padawan-ccp-c1-m1-mgmt").await,
        404,
    );
    expect(&api.delete("/v2/p-cli/clients/never-was").await, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_create_read_update_events_delete() {
    let p = "/v2/p-jobs";
    let api = Api::as_("member@p-jobs");
    // An unregistered client is 422.
    says(
        &api.post(&format!("{p}/jobs/"), a_job("ghost")).await,
        422,
        "Client not found with ID ghost",
    );
    register(&api, "p-jobs", "jobs-node1").await;
    let r = api.post(&format!("{p}/jobs/"), a_job("jobs-node1")).await;
    let job_id = expect(&r, 201)["job_id"].as_str().unwrap().to_string();
    assert!(is_uuid_hex(&job_id), "{job_id}");
    let job = expect(&api.get(&format!("{p}/jobs/{job_id}")).await, 200).clone();
    assert_eq!(job["user_id"], "user-member");
    assert_eq!(job["project_id"], "p-jobs");
    assert_eq!(job["client_id"], "jobs-node1");
    assert!(job.get("action_defaults").is_none());
    let sched = &job["job_schedule"];
    assert!(sched["time_created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(
        (sched["time_started"].clone(), sched["time_ended"].clone()),
        (json!(-1), json!(-1))
    );
    assert_eq!(sched["schedule_interval"], "2 seconds");
    // action_defaults filled what each action lacked, and nothing it had.
    let a0 = &job["job_actions"][0];
    assert_eq!(a0["freezer_action"]["storage"], "local");
    assert_eq!(a0["freezer_action"]["backup_name"], "etc");
    assert_eq!(a0["max_retries"], 3);
    assert_eq!(a0["max_retries_interval"], 6);
    assert_eq!(job["job_actions"][1]["max_retries"], 5);
    assert_eq!(
        job["job_actions"][1]["freezer_action"]["container"],
        "/srv/backups"
    );
    // Each action went into the library.
    let action_id = a0["action_id"].as_str().unwrap().to_string();
    let action = expect(&api.get(&format!("{p}/actions/{action_id}")).await, 200).clone();
    assert_eq!(action["freezer_action"], a0["freezer_action"]);
    // A job may name a stored action by id; an unknown one is 422.
    let by_id = json!({"client_id": "jobs-node1", "job_actions": [{"action_id": action_id}]});
    let r = api.post(&format!("{p}/jobs"), by_id).await;
    let id2 = expect(&r, 201)["job_id"].as_str().unwrap().to_string();
    let j2 = expect(&api.get(&format!("{p}/jobs/{id2}")).await, 200).clone();
    assert_eq!(j2["job_actions"][0]["freezer_action"], a0["freezer_action"]);
    says(
        &api.post(
            &format!("{p}/jobs"),
            json!({"client_id": "jobs-node1", "job_actions": [{"action_id": "nope"}]}),
        )
        .await,
        422,
        "action nope not found",
    );
    // A given job_id is kept; a duplicate is 409.
    let mut doc = a_job("jobs-node1");
    doc["job_id"] = json!("my-job");
    assert_eq!(
        expect(&api.post(&format!("{p}/jobs"), doc.clone()).await, 201)["job_id"],
        "my-job"
    );
    expect(&api.post(&format!("{p}/jobs"), doc).await, 409);
    // Schema: unknown and wrong-typed fields, missing ones, bad enums, each named.
    let mut bad = a_job("jobs-node1");
    bad["colour"] = json!("blue");
    says(
        &api.post(&format!("{p}/jobs"), bad).await,
        400,
        "job: unknown field \"colour\"",
    );
    let mut bad = a_job("jobs-node1");
    bad["job_schedule"]["every"] = json!("day");
    says(
        &api.post(&format!("{p}/jobs"), bad).await,
        400,
        "job.job_schedule: unknown field \"every\"",
    );
    let mut bad = a_job("jobs-node1");
    bad["job_schedule"]["schedule_interval"] = json!(5);
    says(
        &api.post(&format!("{p}/jobs"), bad).await,
        400,
        "job.job_schedule.schedule_interval: must be a string",
    );
    let mut bad = a_job("jobs-node1");
    bad["job_actions"][0]["freezer_action"]["mode"] = json!("tape");
    says(
        &api.post(&format!("{p}/jobs"), bad).await,
        400,
        "job.job_actions[0].freezer_action.mode",
    );
    // This release's own modes are held; stdin is not (a pulled job has no standard input).
    for mode in ["postgres", "image", "command"] {
        let mut job = a_job("jobs-node1");
        job["job_actions"][0]["freezer_action"]["mode"] = json!(mode);
        let id = expect(&api.post(&format!("{p}/jobs"), job).await, 201)["job_id"]
            .as_str()
            .unwrap()
            .to_string();
        let back = expect(&api.get(&format!("{p}/jobs/{id}")).await, 200).clone();
        assert_eq!(back["job_actions"][0]["freezer_action"]["mode"], mode);
    }
    let mut bad = a_job("jobs-node1");
    bad["job_actions"][0]["freezer_action"]["mode"] = json!("stdin");
    says(
        &api.post(&format!("{p}/jobs"), bad).await,
        400,
        "job.job_actions[0].freezer_action.mode",
    );
    let mut bad = a_job("jobs-node1");
    bad["job_actions"][0]["max_retries"] = json!("3");
    says(
        &api.post(&format!("{p}/jobs"), bad).await,
        400,
        "job.job_actions[0].max_retries: must be an integer",
    );
    says(
        &api.post(&format!("{p}/jobs"), json!({"job_actions": []}))
            .await,
        400,
        "job.client_id: required",
    );
    says(
        &api.post(&format!("{p}/jobs"), json!({"client_id": "jobs-node1"}))
            .await,
        400,
        "job.job_actions: required",
    );
    says(
        &api.post(
            &format!("{p}/jobs"),
            json!({"client_id": "jobs-node1", "job_actions": [], "action_defaults": 3}),
        )
        .await,
        400,
        "job.action_defaults: must be an object",
    );
    // Capabilities: a client that only backs up refuses a restore job (422).
    api.post(&format!("{p}/clients"), json!({"client_id": "jobs-node2", "supported_actions": ["backup"], "supported_storages": ["local"]})).await;
    let restore = json!({"client_id": "jobs-node2", "job_actions": [{"freezer_action": {"action": "restore"}}]});
    says(
        &api.post(&format!("{p}/jobs"), restore).await,
        422,
        "does not support \"restore\"",
    );
    let swift = json!({"client_id": "jobs-node2", "job_actions": [{"freezer_action": {"action": "backup", "storage": "swift"}}]});
    says(
        &api.post(&format!("{p}/jobs"), swift).await,
        422,
        "freezer_action.storage",
    );
    // A client registered with upstream's modes alone (upstream's scheduler) is given no
    // postgres job.
    api.post(
        &format!("{p}/clients"),
        json!({"client_id": "jobs-node3", "supported_modes": ["fs", "mysql", "mongo"]}),
    )
    .await;
    let pg = json!({"client_id": "jobs-node3", "job_actions": [{"freezer_action": {"action": "backup", "mode": "postgres"}}]});
    says(
        &api.post(&format!("{p}/jobs"), pg).await,
        422,
        "does not support \"postgres\"",
    );

    // PATCH: 200 {job_id, version}; job_schedule replaced as a whole; ids not changeable.
    let r = api.patch(&format!("{p}/jobs/{job_id}"), json!({"description": "changed", "job_schedule": {"status": "scheduled"}, "job_id": "other", "user_id": "x"})).await;
    let v = expect(&r, 200);
    assert_eq!(v["job_id"], job_id.as_str());
    assert!(v["version"].as_i64().unwrap() >= 2);
    let job = expect(&api.get(&format!("{p}/jobs/{job_id}")).await, 200).clone();
    assert_eq!(job["description"], "changed");
    assert_eq!(job["job_schedule"], json!({"status": "scheduled"}));
    assert_eq!(job["user_id"], "user-member");
    assert_eq!(job["job_id"], job_id.as_str());
    says(
        &api.patch(
            &format!("{p}/jobs/{job_id}"),
            json!({"job_schedule": {"status": "sleeping"}}),
        )
        .await,
        400,
        "job.job_schedule.status",
    );
    says(
        &api.patch(&format!("{p}/jobs/nope"), json!({"description": "x"}))
            .await,
        404,
        "job nope",
    );

    // Events: 202 with upstream's results; unknown event 400.
    let ev = |body: Value| api.post(format!("{p}/jobs/{job_id}/event"), body);
    assert_eq!(
        expect(&ev(json!({"start": null})).await, 202)["result"],
        "success"
    );
    assert_eq!(
        expect(&ev(json!({"start": null})).await, 202)["result"],
        "start already requested"
    );
    let job = expect(&api.get(&format!("{p}/jobs/{job_id}")).await, 200).clone();
    assert_eq!(job["job_schedule"]["event"], "start");
    assert_eq!(job["job_schedule"]["status"], "");
    assert_eq!(
        expect(&ev(json!({"stop": null})).await, 202)["result"],
        "success"
    );
    assert_eq!(
        expect(&ev(json!({"stop": null})).await, 202)["result"],
        "stop already requested"
    );
    assert_eq!(
        expect(&ev(json!({"abort": null})).await, 202)["result"],
        "success"
    );
    assert_eq!(
        expect(&ev(json!({"abort": {}})).await, 202)["result"],
        "abort already requested"
    );
    assert_eq!(
        expect(&ev(json!({"remove": null})).await, 202)["result"],
        "success"
    );
    says(&ev(json!({"dance": null})).await, 400, "Bad Action Method");
    says(&ev(json!({})).await, 400, "Bad Action Method");
    expect(
        &api.post(&format!("{p}/jobs/nope/event"), json!({"start": null}))
            .await,
        404,
    );

    // POST /jobs/{id}: create-or-replace, 201 {job_id, version}.
    let r = api
        .post(&format!("{p}/jobs/replaced-job"), a_job("jobs-node1"))
        .await;
    assert_eq!(expect(&r, 201)["job_id"], "replaced-job");
    let mut doc = a_job("jobs-node1");
    doc["description"] = json!("second");
    let r = api.post(&format!("{p}/jobs/replaced-job/"), doc).await;
    assert_eq!(expect(&r, 201)["version"], 2);
    assert_eq!(
        expect(&api.get(&format!("{p}/jobs/replaced-job")).await, 200)["description"],
        "second"
    );
    // Another project's job id cannot be taken over.
    let other = Api::as_("member@p-jobs-other");
    register(&other, "p-jobs-other", "node9").await;
    expect(
        &other
            .post(&format!("/v2/p-jobs-other/jobs/{job_id}"), a_job("node9"))
            .await,
        409,
    );

    // DELETE: 204, then 404; again 204.
    expect(&api.delete(&format!("{p}/jobs/{job_id}")).await, 204);
    says(&api.get(&format!("{p}/jobs/{job_id}")).await, 404, &job_id);
    expect(&api.delete(&format!("{p}/jobs/{job_id}/")).await, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_library_follows_into_jobs() {
    let p = "/v2/p-act";
    let api = Api::as_("member@p-act");
    register(&api, "p-act", "act-node1").await;
    let r = api
        .post(
            &format!("{p}/actions/"),
            json!({"freezer_action": {"action": "backup", "path_to_backup": "/srv"}}),
        )
        .await;
    let action_id = expect(&r, 201)["action_id"].as_str().unwrap().to_string();
    assert!(is_uuid_hex(&action_id));
    let a = expect(&api.get(&format!("{p}/actions/{action_id}")).await, 200).clone();
    assert_eq!(
        (a["max_retries"].clone(), a["max_retries_interval"].clone()),
        (json!(5), json!(6))
    );
    assert_eq!(a["project_id"], "p-act");
    says(
        &api.post(&format!("{p}/actions"), json!({"max_retries": 1}))
            .await,
        400,
        "action.freezer_action: required",
    );
    says(
        &api.post(
            &format!("{p}/actions"),
            json!({"freezer_action": {"action": 1}}),
        )
        .await,
        400,
        "action.freezer_action.action",
    );
    let job = json!({"client_id": "act-node1", "job_actions": [{"action_id": action_id}, {"freezer_action": {"action": "info"}}]});
    let job_id = expect(&api.post(&format!("{p}/jobs"), job).await, 201)["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    // PATCH the action: 200 {action_id, version}; the job's copy follows.
    let r = api.patch(&format!("{p}/actions/{action_id}"), json!({"freezer_action": {"action": "backup", "path_to_backup": "/home"}, "max_retries": 9})).await;
    assert_eq!(expect(&r, 200)["action_id"], action_id.as_str());
    let j = expect(&api.get(&format!("{p}/jobs/{job_id}")).await, 200).clone();
    assert_eq!(
        j["job_actions"][0]["freezer_action"]["path_to_backup"],
        "/home"
    );
    assert_eq!(j["job_actions"][0]["max_retries"], 9);
    // POST /actions/{id}: create-or-replace, 201.
    let r = api
        .post(
            &format!("{p}/actions/{action_id}"),
            json!({"freezer_action": {"action": "backup", "path_to_backup": "/var"}}),
        )
        .await;
    assert_eq!(expect(&r, 201)["action_id"], action_id.as_str());
    let j = expect(&api.get(&format!("{p}/jobs/{job_id}")).await, 200).clone();
    assert_eq!(
        j["job_actions"][0]["freezer_action"]["path_to_backup"],
        "/var"
    );
    expect(
        &api.post(
            &format!("{p}/actions/new-action"),
            json!({"freezer_action": {}}),
        )
        .await,
        201,
    );
    let list = expect(&api.get(&format!("{p}/actions?limit=50")).await, 200).clone();
    assert_eq!(list["actions"].as_array().unwrap().len(), 3);
    // DELETE: 204; the action leaves the job.
    expect(&api.delete(&format!("{p}/actions/{action_id}")).await, 204);
    expect(&api.get(&format!("{p}/actions/{action_id}")).await, 404);
    let j = expect(&api.get(&format!("{p}/jobs/{job_id}")).await, 200).clone();
    assert_eq!(j["job_actions"].as_array().unwrap().len(), 1);
    assert_eq!(j["job_actions"][0]["freezer_action"]["action"], "info");
    expect(&api.delete(&format!("{p}/actions/{action_id}")).await, 204);
    expect(
        &api.patch(
            &format!("{p}/actions/{action_id}"),
            json!({"max_retries": 1}),
        )
        .await,
        404,
    );
    expect(
        &Api::as_("reader@p-act")
            .delete(&format!("{p}/actions/new-action"))
            .await,
        403,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_jobs_start_end() {
    let p = "/v2/p-ses";
    let api = Api::as_("member@p-ses");
    register(&api, "p-ses", "ses-node1").await;
    register(&api, "p-ses", "ses-node2").await;
    says(
        &api.post(&format!("{p}/sessions"), json!({})).await,
        400,
        "session.schedule: required",
    );
    says(
        &api.post(
            &format!("{p}/sessions"),
            json!({"schedule": {"schedule_interval": "often"}}),
        )
        .await,
        400,
        "session.schedule.schedule_interval",
    );
    let r = api.post(&format!("{p}/sessions/"), json!({"session_id": "mine", "description": "nightly", "schedule": {"schedule_interval": "1 days"}})).await;
    let sid = expect(&r, 201)["session_id"].as_str().unwrap().to_string();
    assert!(is_uuid_hex(&sid), "a given session_id is ignored: {sid}");
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    assert_eq!(
        (
            s["status"].clone(),
            s["hold_off"].clone(),
            s["session_tag"].clone()
        ),
        (json!("active"), json!(30), json!(0))
    );
    // Two jobs join: each takes the session's id, tag and schedule.
    let mut jobs = Vec::new();
    for client in ["ses-node1", "ses-node2"] {
        let r = api.post(&format!("{p}/jobs"), a_job(client)).await;
        let id = expect(&r, 201)["job_id"].as_str().unwrap().to_string();
        expect(
            &api.call("PUT", &format!("{p}/sessions/{sid}/jobs/{id}"), None)
                .await,
            204,
        );
        let j = expect(&api.get(&format!("{p}/jobs/{id}")).await, 200).clone();
        assert_eq!(j["session_id"], sid.as_str());
        assert_eq!(j["session_tag"], 0);
        assert_eq!(j["job_schedule"]["schedule_interval"], "1 days");
        assert!(j["job_schedule"]["time_created"].as_i64().unwrap() > 0);
        jobs.push(id);
    }
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    assert_eq!(s["jobs"][&jobs[0]]["client_id"], "ses-node1");
    assert_eq!(s["jobs"][&jobs[1]]["client_id"], "ses-node2");
    expect(
        &api.call("PUT", &format!("{p}/sessions/{sid}/jobs/nope"), None)
            .await,
        404,
    );
    expect(
        &api.call("PUT", &format!("{p}/sessions/nope/jobs/{}", jobs[0]), None)
            .await,
        404,
    );

    let act = |body: Value| api.post(format!("{p}/sessions/{sid}/action"), body);
    let start = |job: &str, tag: i64| json!({"start": {"job_id": job, "current_tag": tag}});
    let r = act(start(&jobs[0], 0)).await;
    assert_eq!(
        expect(&r, 202).clone(),
        json!({"result": "success", "session_tag": 1})
    );
    // Within hold-off: the other node (old tag) joins; a new-tag start holds off.
    assert_eq!(
        expect(&act(start(&jobs[1], 0)).await, 202)["result"],
        "success"
    );
    assert_eq!(
        expect(&act(start(&jobs[1], 1)).await, 202)["result"],
        "hold-off"
    );
    says(&act(start(&jobs[1], 7)).await, 400, "too high");
    says(
        &act(start("stranger", 0)).await,
        400,
        "not found in session",
    );
    says(
        &act(json!({"start": {"current_tag": 0}})).await,
        400,
        "start.job_id",
    );
    says(
        &act(json!({"start": {"job_id": jobs[0]}})).await,
        400,
        "start.current_tag",
    );
    says(&act(json!({"pause": {}})).await, 405, "pause");
    // End: the session completes when both ended.
    let end = |job: &str, result: &str| json!({"end": {"job_id": job, "current_tag": 1, "result": result}});
    assert_eq!(
        expect(&act(end(&jobs[0], "success")).await, 202)["result"],
        "success"
    );
    assert_eq!(
        expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200)["status"],
        "running"
    );
    says(
        &act(json!({"end": {"job_id": jobs[1]}})).await,
        400,
        "end.result",
    );
    act(end(&jobs[1], "fail")).await;
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    assert_eq!(
        (s["status"].clone(), s["result"].clone()),
        (json!("completed"), json!("fail"))
    );
    assert_eq!(s["jobs"][&jobs[1]]["result"], "fail");

    // Remove a job: 204; the job leaves the session and is stopped, its schedule kept.
    expect(
        &api.delete(&format!("{p}/sessions/{sid}/jobs/{}", jobs[1]))
            .await,
        204,
    );
    let j = expect(&api.get(&format!("{p}/jobs/{}", jobs[1])).await, 200).clone();
    assert_eq!(
        (j["session_id"].clone(), j["session_tag"].clone()),
        (json!(""), json!(0))
    );
    assert_eq!(j["job_schedule"]["event"], "stop");
    assert_eq!(j["job_schedule"]["schedule_interval"], "1 days");
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    assert!(s["jobs"].get(&jobs[1]).is_none());
    expect(
        &api.delete(&format!("{p}/sessions/{sid}/jobs/{}", jobs[1]))
            .await,
        204,
    );

    // PATCH 200, POST replace 201, list, DELETE 204.
    let r = api
        .patch(
            &format!("{p}/sessions/{sid}"),
            json!({"description": "weekly", "session_id": "x"}),
        )
        .await;
    assert_eq!(expect(&r, 200)["session_id"], sid.as_str());
    says(
        &api.patch(&format!("{p}/sessions/{sid}"), json!({"hold_off": "long"}))
            .await,
        400,
        "session.hold_off",
    );
    let r = api
        .post(
            &format!("{p}/sessions/{sid}"),
            json!({"schedule": {}, "description": "replaced"}),
        )
        .await;
    assert_eq!(expect(&r, 201)["session_id"], sid.as_str());
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    assert_eq!(s["description"], "replaced");
    assert!(
        s["jobs"].get(&jobs[0]).is_some(),
        "a replace keeps the jobs: {s}"
    );
    expect(
        &api.post(&format!("{p}/sessions/brand-new"), json!({"schedule": {}}))
            .await,
        201,
    );
    let list = expect(&api.get(&format!("{p}/sessions")).await, 200).clone();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    expect(&api.delete(&format!("{p}/sessions/{sid}")).await, 204);
    expect(&api.get(&format!("{p}/sessions/{sid}")).await, 404);
    expect(
        &api.post(&format!("{p}/sessions/{sid}/action"), start(&jobs[0], 1))
            .await,
        404,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_status_and_patch() {
    let p = "/v2/p-bak";
    let api = Api::as_("member@p-bak");
    let meta = json!({"container": "c1", "hostname": "node1", "backup_name": "etc", "level": 0, "time_stamp": 1700000000});
    let id = expect(&api.post(&format!("{p}/backups/"), meta.clone()).await, 201)["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_uuid_hex(&id));
    let b = expect(&api.get(&format!("{p}/backups/{id}")).await, 200).clone();
    assert_eq!(
        b,
        json!({"backup_id": id, "user_id": "user-member", "project_id": "p-bak", "status": "available", "backup_metadata": meta})
    );
    let mut creating = meta.clone();
    creating["status"] = json!("creating");
    let id2 = expect(&api.post(&format!("{p}/backups"), creating).await, 201)["backup_id"]
        .as_str()
        .unwrap()
        .to_string();
    let b2 = expect(&api.get(&format!("{p}/backups/{id2}")).await, 200).clone();
    assert_eq!(b2["status"], "creating");
    assert!(b2["backup_metadata"].get("status").is_none());
    says(
        &api.post(
            &format!("{p}/backups"),
            json!({"container": "c", "hostname": "h"}),
        )
        .await,
        400,
        "backup.backup_name: required",
    );
    says(
        &api.post(
            &format!("{p}/backups"),
            json!({"container": "", "hostname": "h", "backup_name": "b"}),
        )
        .await,
        400,
        "backup.container",
    );
    says(
        &api.post(
            &format!("{p}/backups"),
            json!({"container": "c", "hostname": "h", "backup_name": "b", "status": "lost"}),
        )
        .await,
        400,
        "backup.status",
    );
    // PATCH: status set, metadata merged, ids kept; the whole document back.
    let r = api.patch(&format!("{p}/backups/{id2}"), json!({"status": "available", "backup_metadata": {"cinder_backup_id": "cb1", "level": 1}, "backup_id": "x"})).await;
    let b2 = expect(&r, 200).clone();
    assert_eq!(b2["status"], "available");
    assert_eq!(b2["backup_id"], id2.as_str());
    assert_eq!(b2["backup_metadata"]["cinder_backup_id"], "cb1");
    assert_eq!(b2["backup_metadata"]["level"], 1);
    assert_eq!(b2["backup_metadata"]["container"], "c1");
    says(
        &api.patch(&format!("{p}/backups/{id2}"), json!({"status": "gone"}))
            .await,
        400,
        "backup.status",
    );
    says(
        &api.patch(
            &format!("{p}/backups/{id2}"),
            json!({"backup_metadata": [1]}),
        )
        .await,
        400,
        "backup.backup_metadata",
    );
    expect(
        &api.patch(&format!("{p}/backups/nope"), json!({"status": "error"}))
            .await,
        404,
    );
    expect(
        &Api::as_("member@p-bak2")
            .get(&format!("/v2/p-bak2/backups/{id}"))
            .await,
        404,
    );
    // DELETE 204 (also for an unknown id).
    expect(&api.delete(&format!("{p}/backups/{id}")).await, 204);
    expect(&api.get(&format!("{p}/backups/{id}")).await, 404);
    expect(&api.delete(&format!("{p}/backups/{id}")).await, 204);
}

/// `time_after` / `time_before` in a backup search bound the metadata's `time_stamp`, both
/// inclusive; they combine with `match` and come before paging; a bound that is not an
/// integer is a 400 naming it.
#[tokio::test(flavor = "multi_thread")]
async fn backups_search_by_time() {
    let p = "/v2/p-btime";
    let api = Api::as_("member@p-btime");
    let t0 = 1_700_000_000i64;
    for i in 0..12i64 {
        let host = if i % 2 == 0 { "even" } else { "odd" };
        let meta = json!({"container": "c", "hostname": host, "backup_name": format!("t{i:02}"), "time_stamp": t0 + i * 100});
        expect(&api.post(&format!("{p}/backups"), meta).await, 201);
    }
    // Neither a backup without time_stamp nor one with upstream's ES field name is in a range.
    let meta = json!({"container": "c", "hostname": "even", "backup_name": "stampless", "timestamp": t0 + 500});
    expect(&api.post(&format!("{p}/backups"), meta).await, 201);
    // Another project's backup in the range stays invisible.
    let other = json!({"container": "c", "hostname": "even", "backup_name": "other", "time_stamp": t0 + 500});
    expect(
        &Api::as_("member@p-btime2")
            .post("/v2/p-btime2/backups", other)
            .await,
        201,
    );
    let names = |r: &Resp| -> Vec<String> {
        expect(r, 200)["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["backup_metadata"]["backup_name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let search = |body: Value, q: &str| api.call("GET", format!("{p}/backups{q}"), Some(body));
    let r = search(
        json!({"time_after": t0 + 300, "time_before": t0 + 600}),
        "?limit=100",
    )
    .await;
    assert_eq!(
        names(&r),
        ["t03", "t04", "t05", "t06"],
        "both bounds inclusive"
    );
    let r = search(json!({"time_after": t0 + 301}), "?limit=100").await;
    assert_eq!(
        names(&r),
        ["t04", "t05", "t06", "t07", "t08", "t09", "t10", "t11"]
    );
    let r = search(json!({"time_before": (t0 + 199).to_string()}), "?limit=100").await;
    assert_eq!(
        names(&r),
        ["t00", "t01"],
        "a string of digits is an integer"
    );
    // Paging applies to the filtered list.
    let r = search(json!({"time_after": t0 + 200}), "?limit=3&offset=2").await;
    assert_eq!(names(&r), ["t04", "t05", "t06"]);
    let r = search(json!({"time_after": t0 + 200}), "").await;
    assert_eq!(names(&r).len(), 10, "limit defaults to 10 after the filter");
    // With match and match_not.
    let r = search(
        json!({"time_after": t0 + 200, "time_before": t0 + 900,
               "match": [{"hostname": "even"}], "match_not": [{"backup_name": "t04"}]}),
        "?limit=100",
    )
    .await;
    assert_eq!(names(&r), ["t02", "t06", "t08"]);
    let r = search(json!({"time_after": t0 + 2000}), "?limit=100").await;
    assert!(names(&r).is_empty());
    // Without bounds every backup is listed, the stampless one too.
    let r = search(json!({"match": [{"hostname": "even"}]}), "?limit=100").await;
    assert_eq!(names(&r).len(), 7);
    // Bad bounds name the field.
    for bad in [
        json!("yesterday"),
        json!(1.5),
        json!(true),
        json!({"gte": 1}),
    ] {
        says(
            &search(json!({ "time_after": bad }), "").await,
            400,
            "search.time_after",
        );
    }
    says(
        &search(json!({"time_after": t0, "time_before": "noon"}), "").await,
        400,
        "search.time_before",
    );
    // Another project's URL is still 404, bounds or not.
    expect(
        &Api::as_("member@p-btime2")
            .call(
                "GET",
                format!("{p}/backups"),
                Some(json!({"time_after": 0})),
            )
            .await,
        404,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pagination_and_search() {
    let p = "/v2/p-page";
    let api = Api::as_("member@p-page");
    for i in 0..25 {
        let host = if i % 5 == 0 { "special" } else { "plain" };
        let meta = json!({"container": "c", "hostname": host, "backup_name": format!("b{i:02}"), "curr_backup_level": i % 3});
        expect(&api.post(&format!("{p}/backups"), meta).await, 201);
    }
    let names = |r: &Resp| -> Vec<String> {
        expect(r, 200)["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["backup_metadata"]["backup_name"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(
        names(&api.get(&format!("{p}/backups")).await).len(),
        10,
        "limit defaults to 10"
    );
    assert_eq!(
        names(&api.get(&format!("{p}/backups/?limit=5&offset=20")).await),
        ["b20", "b21", "b22", "b23", "b24"]
    );
    assert!(names(&api.get(&format!("{p}/backups?offset=30")).await).is_empty());
    says(
        &api.get(&format!("{p}/backups?limit=-1")).await,
        400,
        "limit",
    );
    says(
        &api.get(&format!("{p}/backups?offset=x")).await,
        400,
        "offset",
    );
    // Search in the GET body, applied before paging; keys found at any depth.
    let search = |body: Value, q: &str| api.call("GET", format!("{p}/backups{q}"), Some(body));
    let r = search(json!({"match": [{"hostname": "special"}]}), "?limit=100").await;
    assert_eq!(names(&r), ["b00", "b05", "b10", "b15", "b20"]);
    let r = search(
        json!({"match": [{"hostname": "special"}]}),
        "?limit=2&offset=2",
    )
    .await;
    assert_eq!(names(&r), ["b10", "b15"]);
    let r = search(
        json!({"match": [{"hostname": "special"}], "match_not": [{"curr_backup_level": 0}]}),
        "?limit=100",
    )
    .await;
    assert_eq!(names(&r), ["b05", "b10", "b20"]);
    // The CLI's `_all` form: a JSON list of pairs in a string; else free text.
    let r = search(
        json!({"match": [{"_all": "[{\"hostname\": \"special\"}, {\"curr_backup_level\": 2}]"}]}),
        "",
    )
    .await;
    assert_eq!(names(&r), ["b05", "b20"]);
    let r = search(json!({"match": [{"_all": "PLAIN"}]}), "?limit=100").await;
    assert_eq!(names(&r).len(), 20);
    says(
        &search(json!({"match": "hostname"}), "").await,
        400,
        "search.match",
    );
    // The scheduler's job search.
    register(&api, "p-page", "n1").await;
    register(&api, "p-page", "n2").await;
    for c in ["n1", "n1", "n2"] {
        api.post(&format!("{p}/jobs"), a_job(c)).await;
    }
    let r = api
        .call(
            "GET",
            &format!("{p}/jobs/?limit=10&offset=0"),
            Some(json!({"match": [{"client_id": "n1"}], "match_not": [{"status": "completed"}]})),
        )
        .await;
    assert_eq!(expect(&r, 200)["jobs"].as_array().unwrap().len(), 2);
}

/// Many nodes end their jobs of one session at once: every result is recorded.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_session_ends_lose_nothing() {
    const N: usize = 24;
    let p = "/v2/p-conc";
    let api = Api::as_("member@p-conc");
    register(&api, "p-conc", "conc-node1").await;
    let sid = expect(
        &api.post(
            &format!("{p}/sessions"),
            json!({"schedule": {}, "hold_off": 600}),
        )
        .await,
        201,
    )["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut jobs = Vec::new();
    for _ in 0..N {
        let id = expect(
            &api.post(&format!("{p}/jobs"), a_job("conc-node1")).await,
            201,
        )["job_id"]
            .as_str()
            .unwrap()
            .to_string();
        expect(
            &api.call("PUT", &format!("{p}/sessions/{sid}/jobs/{id}"), None)
                .await,
            204,
        );
        jobs.push(id);
    }
    // Every node starts at once: exactly one opens the round, all succeed.
    let started: Vec<Value> = futures::future::join_all(jobs.iter().map(|j| {
        let api = api.clone();
        let sid = sid.clone();
        async move {
            let body = json!({"start": {"job_id": j, "current_tag": 0}});
            expect(
                &api.post(&format!("/v2/p-conc/sessions/{sid}/action"), body)
                    .await,
                202,
            )
            .clone()
        }
    }))
    .await;
    assert!(
        started.iter().all(|r| r["result"] == "success"),
        "{started:?}"
    );
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    assert_eq!(s["session_tag"], 1);
    assert!(
        jobs.iter().all(|j| s["jobs"][j]["status"] == "running"),
        "{s}"
    );
    // Every node ends at once, half failing.
    futures::future::join_all(jobs.iter().enumerate().map(|(i, j)| {
        let api = api.clone();
        let sid = sid.clone();
        async move {
            let result = if i % 2 == 0 { "success" } else { "fail" };
            let body = json!({"end": {"job_id": j, "current_tag": 1, "result": result}});
            expect(
                &api.post(&format!("/v2/p-conc/sessions/{sid}/action"), body)
                    .await,
                202,
            );
        }
    }))
    .await;
    let s = expect(&api.get(&format!("{p}/sessions/{sid}")).await, 200).clone();
    for (i, j) in jobs.iter().enumerate() {
        assert_eq!(s["jobs"][j]["status"], "completed", "job {i}: {s}");
        assert_eq!(
            s["jobs"][j]["result"],
            if i % 2 == 0 { "success" } else { "fail" }
        );
    }
    assert_eq!(
        (s["status"].clone(), s["result"].clone()),
        (json!("completed"), json!("fail"))
    );
}

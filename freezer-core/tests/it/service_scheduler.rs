//! The scheduler in jobs-folder mode, with a local repository: schedules fire, a folder's
//! changes take effect without a restart, a bad file is reported while the others run, an
//! abort stops a running backup and leaves the repository valid, the concurrency limit holds.
//! In API mode, against our own API served in-process: registration, pulling, reports, an
//! outage and a restart, events, sessions and an abort; over TLS with a private CA (trusted,
//! not trusted, insecure) and the errors of bad certificate, key and CA files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use freezer_core::CancelToken;
use freezer_core::job::{Action, ActionOutcome, FreezerAction, RunContext, StorageSpec};
use freezer_core::service::scheduler::{JobFeed, Scheduler, SchedulerOptions, StatusHandle};
use serde_json::{Value, json};

use crate::support;

struct Running {
    status: StatusHandle,
    stop: CancelToken,
    task: tokio::task::JoinHandle<freezer_core::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the scheduler stops")
            .unwrap()
            .unwrap();
    }

    fn runs(&self, id: &str) -> u32 {
        self.status.get().jobs.get(id).map_or(0, |j| j.runs)
    }

    /// Waits until `f` holds for the status, up to `secs`.
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
}

fn options(concurrent_jobs: usize) -> SchedulerOptions {
    let mut opts = SchedulerOptions::new("test_node1", "node1");
    opts.concurrent_jobs = concurrent_jobs;
    opts.poll_interval = Duration::from_millis(200);
    opts.tz = freezer_core::TimeZone::UTC;
    let mut ctx = RunContext::current();
    ctx.actor = support::actor();
    opts.context = ctx;
    opts
}

fn start(dir: &Path, concurrent_jobs: usize) -> Running {
    start_with(dir, options(concurrent_jobs))
}

fn start_with(dir: &Path, opts: SchedulerOptions) -> Running {
    let s = Scheduler::new(JobFeed::Dir(dir.to_path_buf()), opts);
    let status = s.status_handle();
    let stop = CancelToken::new();
    let task = tokio::spawn(s.run(stop.clone()));
    Running { status, stop, task }
}

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["jobs", "src", "repo"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        std::fs::write(tmp.path().join("src/a.txt"), "hello scheduler\n").unwrap();
        Env { tmp }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
    fn jobs(&self) -> PathBuf {
        self.path("jobs")
    }
    fn backup_action(&self, name: &str, repo: &str) -> Value {
        json!({
            "action": "backup",
            "mode": "fs",
            "storage": "local",
            "container": self.path(repo).display().to_string(),
            "path_to_backup": self.path("src").display().to_string(),
            "backup_name": name,
        })
    }
    fn write_job(&self, file: &str, doc: &Value) {
        // Written aside and renamed: the scheduler never reads half a file.
        let tmp = self.jobs().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        std::fs::rename(&tmp, self.jobs().join(file)).unwrap();
    }
    fn job(&self, id: &str, action: Value, schedule: Value) -> Value {
        json!({
            "job_id": id,
            "client_id": "test_node1",
            "description": "a test job",
            "job_actions": [{"freezer_action": action, "max_retries": 0}],
            "job_schedule": schedule,
        })
    }
}

/// Snapshots of `name` in the local repository `repo`.
async fn snapshots(repo: &Path, name: &str) -> usize {
    if !repo.join("config").exists() {
        return 0;
    }
    let r = freezer_core::repo::Repository::open(vec![support::local(repo)], None)
        .await
        .unwrap();
    r.snapshots()
        .await
        .unwrap()
        .0
        .iter()
        .filter(|(_, s)| s.backup_name == name)
        .count()
}

async fn check_repository(repo: &Path) {
    let action = FreezerAction {
        action: Some(Action::Check),
        storages: vec![StorageSpec::from_url(&repo.display().to_string()).unwrap()],
        ..FreezerAction::default()
    };
    let mut ctx = RunContext::current();
    ctx.actor = support::actor();
    match freezer_core::job::run_action(&action, &ctx).await.unwrap() {
        ActionOutcome::Check(r) => assert!(r.is_ok(), "the repository is damaged: {r:?}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_of_two_seconds_runs_three_times_in_ten_seconds() {
    let env = Env::new();
    env.write_job(
        "every2.json",
        &env.job(
            "every2",
            env.backup_action("b2", "repo"),
            json!({"schedule_interval": "2 seconds"}),
        ),
    );
    let s = start(&env.jobs(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let st = s.status.get();
    let j = &st.jobs["every2"];
    assert!(j.runs >= 3, "{st:#?}");
    // Between two runs, or in one (whose result is cleared while it runs).
    assert!(
        (j.status == "scheduled" && j.result == "success")
            || (j.status == "running" && j.result.is_empty()),
        "{st:#?}"
    );
    assert!(
        j.last_error.is_none() && st.feed_errors.is_empty(),
        "{st:#?}"
    );
    s.stop().await;
    assert!(snapshots(&env.path("repo"), "b2").await >= 3);
    assert!(!support::has_lock(&env.path("repo")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_changed_and_removed_take_effect_without_a_restart() {
    let env = Env::new();
    let s = start(&env.jobs(), 1);
    // Added after the start: an hourly job, not due for an hour.
    env.write_job(
        "j.json",
        &env.job(
            "j",
            env.backup_action("bj", "repo"),
            json!({"schedule_interval": "1 hours"}),
        ),
    );
    s.wait_for(5, "the new job scheduled", |st| {
        st.jobs.get("j").is_some_and(|j| j.status == "scheduled")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(s.runs("j"), 0);
    // Changed: every second now.
    env.write_job(
        "j.json",
        &env.job(
            "j",
            env.backup_action("bj", "repo"),
            json!({"schedule_interval": "1 seconds"}),
        ),
    );
    s.wait_for(10, "two runs after the change", |st| {
        st.jobs.get("j").is_some_and(|j| j.runs >= 2)
    })
    .await;
    // Removed: it stops.
    std::fs::remove_file(env.jobs().join("j.json")).unwrap();
    s.wait_for(10, "the job gone", |st| !st.jobs.contains_key("j"))
        .await;
    let n = snapshots(&env.path("repo"), "bj").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        snapshots(&env.path("repo"), "bj").await,
        n,
        "no run after the removal"
    );
    // An event written into the file: stop, then start again.
    env.write_job(
        "k.json",
        &env.job(
            "k",
            env.backup_action("bk", "repo"),
            json!({"schedule_interval": "1 seconds"}),
        ),
    );
    s.wait_for(10, "k runs", |st| {
        st.jobs.get("k").is_some_and(|j| j.runs >= 1)
    })
    .await;
    env.write_job(
        "k.json",
        &env.job(
            "k",
            env.backup_action("bk", "repo"),
            json!({"schedule_interval": "1 seconds", "event": "stop"}),
        ),
    );
    s.wait_for(10, "k stopped", |st| {
        st.jobs.get("k").is_some_and(|j| j.status == "stop")
    })
    .await;
    let runs = s.runs("k");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.runs("k"), runs, "a stopped job does not run");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_file_is_reported_by_name_and_the_others_run() {
    let env = Env::new();
    std::fs::write(env.jobs().join("broken.json"), "{ not json").unwrap();
    env.write_job(
        "badschedule.json",
        &env.job(
            "bs",
            env.backup_action("bs", "repo"),
            json!({"schedule_interval": "2 fortnights"}),
        ),
    );
    env.write_job(
        "badoption.json",
        &env.job("bo", json!({"action": "backup", "container": "/x", "path_to_backup": "/y", "backup_name": "n", "encrypt_pas_file": "/p"}), json!({})),
    );
    std::fs::write(env.jobs().join("notes.txt"), "not a job file").unwrap();
    env.write_job(
        "good.json",
        &env.job(
            "good",
            env.backup_action("good", "repo"),
            json!({"schedule_interval": "1 seconds"}),
        ),
    );
    let s = start(&env.jobs(), 1);
    s.wait_for(10, "the good job runs", |st| {
        st.jobs.get("good").is_some_and(|j| j.runs >= 1)
    })
    .await;
    let st = s.status.get();
    let errs = st.feed_errors.join("\n");
    assert_eq!(st.feed_errors.len(), 3, "{errs}");
    assert!(errs.contains("broken.json: malformed JSON"), "{errs}");
    assert!(
        errs.contains("badschedule.json: job_schedule.schedule_interval"),
        "{errs}"
    );
    assert!(
        errs.contains("badoption.json: job_actions[0].freezer_action.encrypt_pas_file"),
        "{errs}"
    );
    assert!(!st.jobs.contains_key("bs") && !st.jobs.contains_key("bo"));
    // A good job whose file turns bad keeps its last good version and is reported.
    std::fs::write(env.jobs().join("good.json"), "{ half written").unwrap();
    s.wait_for(5, "the broken good.json reported", |st| {
        st.feed_errors.iter().any(|e| e.contains("good.json"))
    })
    .await;
    let runs = s.runs("good");
    s.wait_for(10, "the last good version still runs", |st| {
        st.jobs.get("good").is_some_and(|j| j.runs > runs)
    })
    .await;
    // Fixed: the error goes.
    env.write_job(
        "broken.json",
        &env.job(
            "fixed",
            env.backup_action("fixed", "repo"),
            json!({"schedule_interval": "1 seconds"}),
        ),
    );
    s.wait_for(10, "the fixed file runs", |st| {
        st.jobs.get("fixed").is_some_and(|j| j.runs >= 1)
            && !st.feed_errors.iter().any(|e| e.contains("broken.json"))
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_a_running_backup_and_the_next_run_succeeds() {
    let env = Env::new();
    for i in 0..8 {
        std::fs::write(
            env.path(&format!("src/big{i}")),
            support::pseudo_random(2 << 20, i),
        )
        .unwrap();
    }
    let mut slow = env.backup_action("slow", "repo");
    slow["upload_limit"] = json!("1M");
    env.write_job(
        "slow.json",
        &env.job(
            "slow",
            slow.clone(),
            json!({"schedule_interval": "2 seconds"}),
        ),
    );
    let s = start(&env.jobs(), 1);
    s.wait_for(15, "the backup running", |st| {
        st.jobs.get("slow").is_some_and(|j| j.status == "running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.status.get().jobs["slow"].status,
        "running",
        "still running: the backup is slow"
    );
    let asked = Instant::now();
    env.write_job(
        "slow.json",
        &env.job(
            "slow",
            slow,
            json!({"schedule_interval": "2 seconds", "event": "abort"}),
        ),
    );
    s.wait_for(10, "the run aborted", |st| {
        st.jobs.get("slow").is_some_and(|j| j.result == "aborted")
    })
    .await;
    // The poll (0.2 s) plus the grace an engine has to stop by itself (1.5 s).
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "abort took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        s.status.get().jobs["slow"].status,
        "scheduled",
        "an abort ends the run, not the job"
    );
    // The next run, without the throttle, succeeds.
    env.write_job(
        "slow.json",
        &env.job(
            "slow",
            env.backup_action("slow", "repo"),
            json!({"schedule_interval": "2 seconds"}),
        ),
    );
    s.wait_for(60, "a successful run", |st| {
        st.jobs.get("slow").is_some_and(|j| j.result == "success")
    })
    .await;
    s.stop().await;
    // Locks held by the dropped run are released in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::has_lock(&env.path("repo")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!support::has_lock(&env.path("repo")));
    check_repository(&env.path("repo")).await;
    assert!(snapshots(&env.path("repo"), "slow").await >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_jobs_run_at_once_than_allowed() {
    for limit in [1usize, 2] {
        let env = Env::new();
        for i in 0..3 {
            std::fs::write(
                env.path(&format!("src/f{i}")),
                support::pseudo_random(1 << 20, i),
            )
            .unwrap();
        }
        for j in ["c1", "c2", "c3"] {
            let mut a = env.backup_action(j, j);
            a["upload_limit"] = json!("2M");
            env.write_job(
                &format!("{j}.json"),
                &env.job(j, a, json!({"schedule_interval": "1 seconds"})),
            );
        }
        let s = start(&env.jobs(), limit);
        let mut most = 0;
        let end = Instant::now() + Duration::from_secs(8);
        while Instant::now() < end {
            let st = s.status.get();
            most = most.max(st.jobs.values().filter(|j| j.status == "running").count());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let st = s.status.get();
        s.stop().await;
        assert_eq!(most, limit, "limit {limit}: {st:#?}");
        let ran = st.jobs.values().filter(|j| j.runs >= 1).count();
        assert!(ran >= limit, "limit {limit}: {st:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_actions_are_refused_under_disable_exec_and_one_shots_complete() {
    let env = Env::new();
    env.write_job(
        "once.json",
        &env.job("once", env.backup_action("once", "repo"), json!({})),
    );
    let mut opts = options(1);
    opts.disable_exec = true;
    assert!(
        !opts.client_info()["supported_actions"]
            .as_array()
            .unwrap()
            .contains(&json!("exec"))
    );
    let s = start_with(&env.jobs(), opts);
    // No schedule: one run two seconds later, then completed.
    s.wait_for(15, "the one-shot completed", |st| {
        st.jobs
            .get("once")
            .is_some_and(|j| j.status == "completed" && j.runs == 1 && j.result == "success")
    })
    .await;
    env.write_job(
        "exec.json",
        &json!({"job_id": "exec", "job_actions": [{"freezer_action": {"action": "exec", "command": "true"}}], "job_schedule": {}}),
    );
    s.wait_for(15, "the exec job refused", |st| {
        st.jobs.get("exec").is_some_and(|j| j.result == "fail")
            || st.feed_errors.iter().any(|e| e.contains("exec.json"))
    })
    .await;
    let st = s.status.get();
    if let Some(j) = st.jobs.get("exec") {
        assert!(
            j.last_error
                .as_deref()
                .unwrap_or("")
                .contains("--disable-exec"),
            "{st:#?}"
        );
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------
// API mode, against our own freezer-api served in-process: the real router, a SQLite store
// on a file (a restarted server keeps its data) and the standalone identity (Keystone v3 at
// `/identity`, users from a file, tokens signed with a key file).

mod api {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use freezer_core::CancelToken;
    use freezer_core::job::Secret;
    use freezer_core::service::api::{ApiState, router, serve, serve_tls};
    use freezer_core::service::auth::setup::{AuthOptions, AuthSetup};
    use freezer_core::service::client::{Client, ClientSettings};
    use freezer_core::service::store::SqliteStore;
    use serde_json::{Value, json};

    pub const PROJECT: &str = "proj1";

    /// A running server; `stop` ends it.
    pub struct Server {
        stop: CancelToken,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        pub async fn stop(self) {
            self.stop.cancel();
            tokio::time::timeout(Duration::from_secs(20), self.task)
                .await
                .expect("the API stops")
                .unwrap();
        }
    }

    fn write_private(path: &Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Our API on `127.0.0.1:port`, its database `dir/api.db`, its users `dir/users.json`
    /// (user `sched`, password `s3cret`, project `proj` = `proj1`, role member), its tokens
    /// signed with the key in `dir/<key>` (created when missing).
    pub async fn start(dir: &Path, port: u16, key: &str) -> Server {
        start_with_tls(dir, port, key, None).await
    }

    /// As [`start`], over TLS with `tls` when given (the catalog then says https).
    pub async fn start_with_tls(
        dir: &Path,
        port: u16,
        key: &str,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Server {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let users = dir.join("users.json");
        if !users.exists() {
            write_private(
                &users,
                &json!([{"user": "sched", "password": "s3cret", "project": "proj",
                         "project_id": PROJECT, "roles": ["member"]}])
                .to_string(),
            );
        }
        let setup = AuthSetup::from_options(&AuthOptions {
            keystone: None,
            users_file: Some(users),
            token_key_file: dir.join(key),
            token_ttl: Duration::from_secs(3600),
            public_url: format!("{scheme}://127.0.0.1:{port}"),
        })
        .unwrap();
        let store = SqliteStore::open(&dir.join("api.db")).await.unwrap();
        let state = ApiState::new(Arc::new(store), setup.authenticator())
            .with_identity(setup.identity_router().unwrap());
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(([127, 0, 0, 1], port).into()).unwrap();
        let listener = sock.listen(128).unwrap();
        let stop = CancelToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move { s.cancelled().await };
            match tls {
                Some(tls) => serve_tls(listener, tls, router(state), shutdown).await,
                None => serve(listener, router(state), shutdown).await,
            }
            .unwrap();
        });
        Server { stop, task }
    }

    pub fn client(port: u16, password: &str) -> Client {
        Client::new(settings("http", port, password)).unwrap()
    }

    /// The settings of a client of `sched` logging in at `scheme://127.0.0.1:port`.
    pub fn settings(scheme: &str, port: u16, password: &str) -> ClientSettings {
        ClientSettings {
            auth_url: Some(format!("{scheme}://127.0.0.1:{port}/identity/v3")),
            username: Some("sched".into()),
            password: Some(Secret(password.into())),
            project_name: Some("proj".into()),
            region_name: Some("RegionOne".into()),
            ..ClientSettings::default()
        }
    }

    /// A test's own HTTP caller, logged in as `sched`.
    pub struct Http {
        base: String,
        pub token: String,
        /// The CA of an https server.
        ca: Option<reqwest::Certificate>,
    }

    impl Http {
        pub async fn login(port: u16) -> Http {
            Http::login_at(format!("http://127.0.0.1:{port}"), None).await
        }

        /// Logs in at `https://127.0.0.1:port`, trusting the CA of the PEM file `ca`.
        pub async fn login_tls(port: u16, ca: &Path) -> Http {
            let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
            Http::login_at(format!("https://127.0.0.1:{port}"), Some(ca)).await
        }

        fn http(ca: &Option<reqwest::Certificate>) -> reqwest::Client {
            let mut b = reqwest::Client::builder();
            if let Some(ca) = ca {
                b = b.tls_certs_only([ca.clone()]);
            }
            b.build().unwrap()
        }

        async fn login_at(base: String, ca: Option<reqwest::Certificate>) -> Http {
            let r = Http::http(&ca)
                .post(format!("{base}/identity/v3/auth/tokens"))
                .header("Content-Type", "application/json")
                .body(
                    json!({"auth": {
                    "identity": {"methods": ["password"], "password": {"user": {
                        "name": "sched", "domain": {"name": "Default"}, "password": "s3cret"}}},
                    "scope": {"project": {"name": "proj", "domain": {"name": "Default"}}}}})
                    .to_string(),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
            Http { base, token, ca }
        }

        /// `method` on `/v2/proj1<path>`: the status and the JSON answer.
        pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
            // A new connection each time: the server restarts under the tests.
            let mut req = Http::http(&self.ca)
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}/v2/{PROJECT}{path}", self.base),
                )
                .header("X-Auth-Token", &self.token);
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

        pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
            let (status, v) = self.call(method, path, body).await;
            assert!(
                (200..300).contains(&status),
                "{method} {path}: {status} {v}"
            );
            v
        }

        pub async fn job(&self, id: &str) -> Value {
            self.ok("GET", &format!("/jobs/{id}"), None).await
        }

        pub async fn create_job(&self, doc: Value) -> String {
            let v = self.ok("POST", "/jobs", Some(doc)).await;
            v["job_id"].as_str().unwrap().to_string()
        }

        pub async fn event(&self, id: &str, event: &str) {
            self.ok(
                "POST",
                &format!("/jobs/{id}/event"),
                Some(json!({ event: null })),
            )
            .await;
        }

        /// The `backup_metadata` of the project's backups.
        pub async fn backups(&self) -> Vec<Value> {
            let v = self.ok("GET", "/backups?limit=1000", None).await;
            v["backups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.get("backup_metadata").unwrap_or(b).clone())
                .collect()
        }
    }
}

fn api_options(client_id: &str) -> SchedulerOptions {
    let mut opts = options(1);
    opts.client_id = client_id.into();
    opts.poll_interval = Duration::from_millis(200);
    opts.retry_interval = Duration::from_millis(500);
    opts
}

fn start_api_scheduler(
    client: std::sync::Arc<freezer_core::service::client::Client>,
    opts: SchedulerOptions,
) -> Running {
    let s = Scheduler::new(JobFeed::Api(client), opts);
    let status = s.status_handle();
    let stop = CancelToken::new();
    let task = tokio::spawn(s.run(stop.clone()));
    Running { status, stop, task }
}

impl Env {
    /// A job document for the API (the server fills `job_id`, `user_id` and the times).
    fn api_job(&self, client_id: &str, action: Value, schedule: Value) -> Value {
        json!({
            "client_id": client_id,
            "description": "a test job",
            "job_actions": [{"freezer_action": action, "max_retries": 1, "max_retries_interval": 1}],
            "job_schedule": schedule,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_registers_runs_reports_and_survives_an_outage() {
    let env = Env::new();
    let port = crate::servers::free_port();
    let server = api::start(env.tmp.path(), port, "token1.key").await;
    let http = api::Http::login(port).await;

    // Wrong password: the error says what to check, and never shows the password.
    let bad = api::client(port, "wrong-pw");
    let e = bad.get_job("any").await.unwrap_err();
    assert_eq!(e.status, Some(401));
    assert!(
        e.to_string().contains("OS_PASSWORD") && !e.to_string().contains("wrong-pw"),
        "{e}"
    );

    let client = std::sync::Arc::new(api::client(port, "s3cret"));
    assert_eq!(
        client.base_url().await.unwrap(),
        format!("http://127.0.0.1:{port}/v2/proj1")
    );
    let s = start_api_scheduler(client.clone(), api_options("proj1_node1"));
    s.wait_for(10, "registered", |st| st.registered).await;
    let me = http.ok("GET", "/clients/proj1_node1", None).await;
    let info = me.get("client").unwrap_or(&me);
    assert_eq!(info["client_id"], "proj1_node1", "{me}");
    assert!(
        info["supported_actions"]
            .as_array()
            .unwrap()
            .contains(&json!("backup")),
        "{me}"
    );
    // This API takes the release's own modes: a postgres job can be given to this node.
    assert_eq!(
        info["supported_modes"],
        json!(["fs", "mysql", "mongo", "postgres", "image", "command"]),
        "{me}"
    );
    // Someone else's job, for another registered client, is not pulled.
    let mut other = api_options("proj1_node2").client_info();
    other["client_id"] = json!("proj1_node2");
    other["hostname"] = json!("node2");
    http.ok("POST", "/clients", Some(other)).await;
    let other_job = http
        .create_job(env.api_job(
            "proj1_node2",
            env.backup_action("other", "repo"),
            json!({"schedule_interval": "1 seconds"}),
        ))
        .await;
    let job = http
        .create_job(env.api_job(
            "proj1_node1",
            env.backup_action("apib", "repo"),
            json!({"schedule_interval": "2 seconds"}),
        ))
        .await;

    // Two runs; the job's status in the API seen going running and back to scheduled.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.runs(&job) < 2 {
        assert!(Instant::now() < deadline, "{:#?}", s.status.get());
        let j = http.job(&job).await;
        seen.insert(
            j["job_schedule"]["status"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // `running` lasts as long as a tiny backup, so a sample may miss it; what every run leaves
    // in the API is checked instead: its start and end times, and the state after it.
    assert!(seen.contains("scheduled"), "{seen:?}");
    // Between two runs (a new one may be under way at this instant).
    let deadline = Instant::now() + Duration::from_secs(10);
    let j = loop {
        let j = http.job(&job).await;
        if j["job_schedule"]["status"] == "scheduled" {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sched = &j["job_schedule"];
    let (started, ended) = (
        sched["time_started"].as_i64().unwrap_or(-1),
        sched["time_ended"].as_i64().unwrap_or(-1),
    );
    assert!(started > 0 && ended >= started, "{j}");
    assert_eq!(sched["result"].as_str(), Some("success"), "{j}");
    let st = s.status.get();
    assert!(
        st.registered && !st.jobs.contains_key(&other_job),
        "{st:#?}"
    );
    let j = http.job(&job).await;
    assert_eq!(j["job_schedule"]["event"].as_str().unwrap_or(""), "", "{j}");
    assert!(j.get("session_tag").is_some(), "{j}");
    let o = http.job(&other_job).await;
    assert_eq!(
        o["job_schedule"]["status"].as_str().unwrap_or(""),
        "",
        "{o}"
    );
    let backups = http.backups().await;
    assert!(!backups.is_empty());
    let b = &backups[0];
    assert_eq!(
        (
            b["job_id"].as_str(),
            b["backup_name"].as_str(),
            b["hostname"].as_str()
        ),
        (Some(job.as_str()), Some("apib"), Some("test-host")),
        "{b}"
    );
    assert!(
        b["snapshot_id"].as_str().is_some_and(|s| s.len() == 64),
        "{b}"
    );

    // The API stops for 30 s: the job keeps running, and what ran is reported after.
    server.stop().await;
    let backups_before = backups.len();
    let snaps_before = snapshots(&env.path("repo"), "apib").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let st = s.status.get();
    assert!(st.api_unreachable && st.pending_reports > 0, "{st:#?}");
    let snaps_during = snapshots(&env.path("repo"), "apib").await;
    assert!(
        snaps_during >= snaps_before + 5,
        "{snaps_before} -> {snaps_during}"
    );
    // Restarted on the same database with a new token key: the scheduler's token is no
    // longer valid, so its first call gets a 401 and it authenticates again.
    let server = api::start(env.tmp.path(), port, "token2.key").await;
    let (status, _) = http.call("GET", &format!("/jobs/{job}"), None).await;
    assert_eq!(status, 401, "a token of the old key");
    let http = api::Http::login(port).await;
    s.wait_for(20, "the reports delivered", |st| {
        !st.api_unreachable && st.pending_reports == 0
    })
    .await;
    let delivered = http.backups().await.len() - backups_before;
    assert!(
        delivered + 1 >= snaps_during - snaps_before,
        "{delivered} of {} backups reported",
        snaps_during - snaps_before
    );

    // A stop event sent to the API: handled, cleared, status stop.
    http.event(&job, "stop").await;
    s.wait_for(20, "the job stopped", |st| {
        st.jobs.get(&job).is_some_and(|j| j.status == "stop")
    })
    .await;
    s.wait_for(20, "the stop reported", |st| st.pending_reports == 0)
        .await;
    let j = http.job(&job).await;
    let j = &j["job_schedule"];
    assert_eq!(
        (j["status"].as_str(), j["event"].as_str().unwrap_or("")),
        (Some("stop"), ""),
        "{j}"
    );
    s.stop().await;
    server.stop().await;
}

/// Registers `client_id` with the capabilities a scheduler of that id announces.
async fn register(http: &api::Http, client_id: &str) {
    let mut info = api_options(client_id).client_info();
    info["client_id"] = json!(client_id);
    http.ok("POST", "/clients", Some(info)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_in_one_session_start_together_and_the_session_records_each_result() {
    let env = Env::new();
    let port = crate::servers::free_port();
    let server = api::start(env.tmp.path(), port, "token.key").await;
    let http = api::Http::login(port).await;
    register(&http, "proj1_node1").await;
    register(&http, "proj1_node2").await;
    let j1 = http
        .create_job(env.api_job("proj1_node1", env.backup_action("s1", "repo1"), json!({})))
        .await;
    let j2 = http
        .create_job(env.api_job("proj1_node2", env.backup_action("s2", "repo2"), json!({})))
        .await;
    let sid = http
        .ok(
            "POST",
            "/sessions",
            Some(
                json!({"description": "two nodes", "schedule": {"schedule_interval": "3 seconds"}}),
            ),
        )
        .await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    for j in [&j1, &j2] {
        http.ok("PUT", &format!("/sessions/{sid}/jobs/{j}"), None)
            .await;
    }
    let s1 = start_api_scheduler(
        std::sync::Arc::new(api::client(port, "s3cret")),
        api_options("proj1_node1"),
    );
    let s2 = start_api_scheduler(
        std::sync::Arc::new(api::client(port, "s3cret")),
        api_options("proj1_node2"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let session = loop {
        let s = http.ok("GET", &format!("/sessions/{sid}"), None).await;
        if s["status"] == "completed" {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{s}\n{:#?}\n{:#?}",
            s1.status.get(),
            s2.status.get()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Upstream's session end: each job completed with its result; the session completed
    // with success once every job has ended successfully; one start advanced the tag.
    for j in [&j1, &j2] {
        let e = &session["jobs"][j.as_str()];
        assert_eq!(
            (e["status"].as_str(), e["result"].as_str()),
            (Some("completed"), Some("success")),
            "{session}"
        );
    }
    assert_eq!(session["result"], "success", "{session}");
    assert_eq!(session["session_tag"], 1, "{session}");
    // Both ran once, in that round (the next fires fall in the session's hold-off).
    for (s, j) in [(&s1, &j1), (&s2, &j2)] {
        s.wait_for(5, "the run counted", |st| {
            st.jobs.get(j.as_str()).is_some_and(|e| e.runs >= 1)
        })
        .await;
    }
    assert_eq!(snapshots(&env.path("repo1"), "s1").await, 1);
    assert_eq!(snapshots(&env.path("repo2"), "s2").await, 1);
    s1.stop().await;
    s2.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_through_the_api_ends_a_running_backup_within_two_seconds() {
    let env = Env::new();
    for i in 0..8 {
        std::fs::write(
            env.path(&format!("src/big{i}")),
            support::pseudo_random(2 << 20, i),
        )
        .unwrap();
    }
    let port = crate::servers::free_port();
    let server = api::start(env.tmp.path(), port, "token.key").await;
    let http = api::Http::login(port).await;
    register(&http, "proj1_node1").await;
    let mut slow = env.backup_action("slow", "repo");
    slow["upload_limit"] = json!("1M");
    let job = http
        .create_job(env.api_job(
            "proj1_node1",
            slow,
            json!({"schedule_interval": "2 seconds"}),
        ))
        .await;
    let s = start_api_scheduler(
        std::sync::Arc::new(api::client(port, "s3cret")),
        api_options("proj1_node1"),
    );
    s.wait_for(15, "the backup running", |st| {
        st.jobs.get(&job).is_some_and(|j| j.status == "running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.status.get().jobs[&job].status,
        "running",
        "still running: the backup is slow"
    );
    http.event(&job, "abort").await;
    let asked = Instant::now();
    s.wait_for(10, "the run aborted", |st| {
        st.jobs.get(&job).is_some_and(|j| j.result == "aborted")
    })
    .await;
    // Seen at the next poll (0.2 s), then ended within 2 s.
    assert!(
        asked.elapsed() < Duration::from_millis(2200),
        "abort took {:?}",
        asked.elapsed()
    );
    assert_eq!(
        s.status.get().jobs[&job].status,
        "scheduled",
        "an abort ends the run, not the job"
    );
    // The next run, with little left to upload, succeeds.
    for i in 0..8 {
        std::fs::remove_file(env.path(&format!("src/big{i}"))).unwrap();
    }
    s.wait_for(60, "a successful run", |st| {
        st.jobs.get(&job).is_some_and(|j| j.result == "success")
    })
    .await;
    s.wait_for(10, "the reports delivered", |st| st.pending_reports == 0)
        .await;
    let j = http.job(&job).await;
    assert_eq!(j["job_schedule"]["event"].as_str().unwrap_or(""), "", "{j}");
    s.stop().await;
    server.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while support::has_lock(&env.path("repo")) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!support::has_lock(&env.path("repo")));
    check_repository(&env.path("repo")).await;
    assert!(snapshots(&env.path("repo"), "slow").await >= 1);
}

/// The client of `sched` at `https://127.0.0.1:port`, with `tls` applied to its settings.
fn tls_client(
    port: u16,
    tls: impl FnOnce(&mut freezer_core::service::client::ClientSettings),
) -> freezer_core::Result<freezer_core::service::client::Client> {
    let mut settings = api::settings("https", port, "s3cret");
    tls(&mut settings);
    freezer_core::service::client::Client::new(settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_over_tls_with_a_private_ca() {
    use freezer_core::service::api::tls_server_config;
    let env = Env::new();
    let pki = crate::servers::TestPki::new();
    let tls = tls_server_config(&pki.path("server.pem"), &pki.path("server.key")).unwrap();
    let port = crate::servers::free_port();
    let server = api::start_with_tls(env.tmp.path(), port, "token.key", Some(tls)).await;
    let http = api::Http::login_tls(port, &pki.path("ca.pem")).await;

    // With the CA: the catalog leads to the https API; the scheduler registers and runs a job.
    let client =
        std::sync::Arc::new(tls_client(port, |s| s.ca_file = Some(pki.path("ca.pem"))).unwrap());
    assert_eq!(
        client.base_url().await.unwrap(),
        format!("https://127.0.0.1:{port}/v2/proj1")
    );
    register(&http, "proj1_tls").await;
    let job = http
        .create_job(env.api_job(
            "proj1_tls",
            env.backup_action("tls", "repo"),
            json!({"schedule_interval": "2 seconds"}),
        ))
        .await;
    let s = start_api_scheduler(client, api_options("proj1_tls"));
    s.wait_for(20, "registered and one run", |st| {
        st.registered && st.jobs.get(&job).is_some_and(|j| j.runs >= 1)
    })
    .await;
    s.wait_for(20, "the reports delivered", |st| st.pending_reports == 0)
        .await;
    let j = http.job(&job).await;
    assert_eq!(j["job_schedule"]["result"], "success", "{j}");
    let me = http.ok("GET", "/clients/proj1_tls", None).await;
    assert_eq!(me.get("client").unwrap_or(&me)["client_id"], "proj1_tls");
    assert!(snapshots(&env.path("repo"), "tls").await >= 1);
    s.stop().await;

    // Without the CA: refused with an error that names certificate verification and what to
    // give; the scheduler keeps trying, as in an outage, and stops cleanly.
    let untrusting = tls_client(port, |_| {}).unwrap();
    let e = untrusting.get_job(&job).await.unwrap_err();
    let text = e.to_string();
    assert_eq!(e.status, None, "{text}");
    assert!(
        text.contains("certificate") && text.contains("OS_CACERT") && !text.contains("s3cret"),
        "{text}"
    );
    let s = start_api_scheduler(std::sync::Arc::new(untrusting), api_options("proj1_x"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = s.status.get();
    assert!(
        !st.registered && st.api_unreachable && !s.task.is_finished(),
        "{st:#?}"
    );
    s.stop().await;
    let (status, _) = http.call("GET", "/clients/proj1_x", None).await;
    assert_eq!(status, 404, "never registered");

    // Insecure: no verification, so it works without the CA.
    let insecure = tls_client(port, |s| s.insecure = true).unwrap();
    let got = insecure.get_job(&job).await.unwrap().unwrap();
    assert_eq!(got["job_id"], job.as_str());

    // A plain-http client of the https server fails; it is not a certificate problem.
    let plain = api::client(port, "s3cret");
    let e = plain.get_job(&job).await.unwrap_err();
    assert!(!e.to_string().contains("OS_CACERT"), "{e}");
    server.stop().await;
}

#[test]
fn a_bad_ca_file_or_client_certificate_is_named() {
    let pki = crate::servers::TestPki::new();
    let missing = pki.path("no-such-ca.pem");
    let e = tls_client(1, |s| s.ca_file = Some(missing.clone()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("OS_CACERT") && e.contains(&missing.display().to_string()),
        "{e}"
    );
    // A file without a certificate: a key.
    let e = tls_client(1, |s| s.ca_file = Some(pki.path("server.key")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("OS_CACERT") && e.contains("no PEM certificate") && e.contains("server.key"),
        "{e}"
    );
    // A client certificate: its key in its own file, or a key without a certificate.
    tls_client(1, |s| {
        s.client_cert = Some(pki.path("server.pem"));
        s.client_key = Some(pki.path("server.key"));
    })
    .unwrap();
    let e = tls_client(1, |s| s.client_key = Some(pki.path("server.key")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("OS_CERT"), "{e}");
    let e = tls_client(1, |s| {
        s.client_cert = Some(pki.path("server.pem"));
        s.client_key = Some(pki.path("ca.pem"));
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("OS_KEY") && e.contains("ca.pem") && e.contains("no private key"),
        "{e}"
    );
    // A key others may read is refused, in its own file or in the certificate's.
    use std::os::unix::fs::PermissionsExt;
    let key = pki.path("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = tls_client(1, |s| {
        s.client_cert = Some(pki.path("server.pem"));
        s.client_key = Some(key.clone());
    })
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("OS_KEY:") && e.contains("chmod 600"), "{e}");
    let both = pki.path("both.pem");
    let mut pem = std::fs::read(pki.path("server.pem")).unwrap();
    pem.extend(std::fs::read(&key).unwrap());
    std::fs::write(&both, pem).unwrap();
    std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = tls_client(1, |s| s.client_cert = Some(both.clone()))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("OS_CERT:") && e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o600)).unwrap();
    tls_client(1, |s| s.client_cert = Some(both.clone())).unwrap();
}

#[test]
fn the_server_names_a_bad_certificate_or_key() {
    use freezer_core::service::api::tls_server_config;
    use std::os::unix::fs::PermissionsExt;
    let pki = crate::servers::TestPki::new();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let err = |c: &Path, k: &Path| tls_server_config(c, k).unwrap_err().to_string();
    let missing = pki.path("missing.pem");
    let e = err(&missing, &key);
    assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
    let e = err(&cert, &missing);
    assert!(e.contains("--tls-key") && e.contains("missing.pem"), "{e}");
    // Not a key; the key of another certificate.
    std::fs::copy(&cert, pki.path("cert-as-key.pem")).unwrap();
    std::fs::set_permissions(
        pki.path("cert-as-key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let e = err(&cert, &pki.path("cert-as-key.pem"));
    assert!(
        e.contains("no private key") && e.contains("cert-as-key.pem"),
        "{e}"
    );
    let e = err(&cert, &pki.path("ca.key"));
    assert!(
        e.contains("--tls-key") && e.contains("ca.key") && e.contains("server.pem"),
        "{e}"
    );
    // A key others may read is refused, and says how to fix it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = err(&cert, &key);
    assert!(e.contains("chmod 600") && e.contains("server.key"), "{e}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    tls_server_config(&cert, &key).unwrap();
}

/// Upstream's API knows only its own modes: its schema refuses a client that names
/// `postgres` (400). A stand-in for that one check (upstream's freezer-api does not run
/// here; docs/COMPAT.md): the scheduler registers again with upstream's modes alone, and
/// an answer that is no refusal of the document (500) is not retried so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_upstreams_api_the_scheduler_registers_upstreams_modes_alone() {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::{Json, Router, routing::post};
    use freezer_core::job::Secret;
    use freezer_core::service::client::{Client, ClientSettings, Registration};
    use freezer_core::service::scheduler::register_client;

    type Seen = Arc<Mutex<Vec<Value>>>;
    async fn clients(
        State(seen): State<Seen>,
        Json(body): Json<Value>,
    ) -> (StatusCode, Json<Value>) {
        seen.lock().unwrap().push(body.clone());
        const UPSTREAM: &[&str] = &[
            "fs",
            "mongo",
            "mysql",
            "sqlserver",
            "cinder",
            "glance",
            "cindernative",
            "nova",
        ];
        if body["client_id"] == "proj_boom" {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"title": "Internal Server Error"})),
            );
        }
        let known = body["supported_modes"].as_array().is_none_or(|m| {
            m.iter()
                .all(|v| v.as_str().is_some_and(|s| UPSTREAM.contains(&s)))
        });
        if known {
            (
                StatusCode::CREATED,
                Json(json!({"client_id": body["client_id"]})),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"title": "Bad request format", "description": "'postgres' is not one of ['fs', 'mongo', ...]"}),
                ),
            )
        }
    }
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/v2/proj/clients", post(clients))
        .route("/v2/proj/clients/", post(clients))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::new(ClientSettings {
        token: Some(Secret("a-token".into())),
        backup_url: Some(format!("http://127.0.0.1:{port}")),
        project_id: Some("proj".into()),
        ..ClientSettings::default()
    })
    .unwrap();

    let r = register_client(&client, &api_options("proj_node1")).await;
    assert_eq!(r, Ok(Registration::Registered));
    let tried: Vec<Value> = std::mem::take(&mut *seen.lock().unwrap());
    let modes: Vec<&Value> = tried.iter().map(|b| &b["supported_modes"]).collect();
    assert_eq!(
        modes,
        [
            &json!(["fs", "mysql", "mongo", "postgres", "image", "command"]),
            &json!(["fs", "mysql", "mongo"])
        ],
        "{tried:?}"
    );

    let e = register_client(&client, &api_options("proj_boom"))
        .await
        .unwrap_err();
    assert_eq!(e.status, Some(500), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 1, "not tried again");
    server.abort();
}

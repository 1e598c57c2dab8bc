//! The scheduler in jobs-folder mode, with a local repository: schedules fire, a folder's
//! changes take effect without a restart, a bad file is reported while the others run, an
//! abort stops a running backup and leaves the repository valid, the concurrency limit holds.

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
// API mode, against a small fake freezer-api and Keystone on loopback (what our API server
// and upstream's answer for the calls the scheduler makes). The same scenarios against our
// own `freezer api serve` belong with the API's integration.

mod fake_api {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, patch, post};
    use serde_json::{Value, json};

    #[derive(Default)]
    pub struct Data {
        pub jobs: BTreeMap<String, Value>,
        pub clients: Vec<Value>,
        pub backups: Vec<Value>,
        pub patches: Vec<(String, Value)>,
        pub tokens: Vec<String>,
        pub issued: usize,
        pub port: u16,
    }

    pub type Shared = Arc<Mutex<Data>>;

    fn unauthorized() -> Response {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"title": "Unauthorized", "description": "token not valid"})),
        )
            .into_response()
    }

    fn authorized(d: &Data, h: &HeaderMap) -> bool {
        h.get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| d.tokens.iter().any(|k| k == t))
    }

    async fn tokens(State(s): State<Shared>, body: String) -> Response {
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let pw = &v["auth"]["identity"]["password"]["user"];
        if pw["name"] != "sched"
            || pw["password"] != "s3cret"
            || v["auth"]["scope"]["project"]["name"] != "proj"
        {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": "The request you have made requires authentication.", "code": 401}}))).into_response();
        }
        let mut d = s.lock().unwrap();
        d.issued += 1;
        let t = format!("tok{}", d.issued);
        d.tokens.push(t.clone());
        let expires = jiff::Timestamp::now().as_second() + 3600;
        let url = format!("http://127.0.0.1:{}", d.port);
        (
            StatusCode::CREATED,
            [("X-Subject-Token", t)],
            axum::Json(json!({"token": {
                "expires_at": jiff::Timestamp::from_second(expires).unwrap().to_string(),
                "project": {"id": "proj1", "name": "proj"},
                "catalog": [
                    {"type": "identity", "endpoints": [{"interface": "public", "url": "http://x"}]},
                    {"type": "backup", "endpoints": [
                        {"interface": "internal", "url": "http://127.0.0.1:1"},
                        {"interface": "public", "region": "RegionOne", "url": url}
                    ]}
                ]
            }})),
        )
            .into_response()
    }

    async fn register(
        State(s): State<Shared>,
        h: HeaderMap,
        Path(p): Path<String>,
        body: String,
    ) -> Response {
        let mut d = s.lock().unwrap();
        if !authorized(&d, &h) {
            return unauthorized();
        }
        assert_eq!(p, "proj1");
        let v: Value = serde_json::from_str(&body).unwrap();
        if d.clients.iter().any(|c| c["client_id"] == v["client_id"]) {
            return (
                StatusCode::CONFLICT,
                axum::Json(
                    json!({"title": "Document already existing", "description": "client exists"}),
                ),
            )
                .into_response();
        }
        d.clients.push(v.clone());
        (
            StatusCode::CREATED,
            axum::Json(json!({"client_id": v["client_id"]})),
        )
            .into_response()
    }

    async fn list_jobs(
        State(s): State<Shared>,
        h: HeaderMap,
        Query(q): Query<BTreeMap<String, usize>>,
        body: String,
    ) -> Response {
        let d = s.lock().unwrap();
        if !authorized(&d, &h) {
            return unauthorized();
        }
        let search: Value = serde_json::from_str(&body).unwrap();
        let cid = search["match"][0]["client_id"].clone();
        let jobs: Vec<Value> = d
            .jobs
            .values()
            .filter(|j| j["client_id"] == cid && j["job_schedule"]["status"] != "completed")
            .skip(q.get("offset").copied().unwrap_or(0))
            .take(q.get("limit").copied().unwrap_or(10))
            .cloned()
            .collect();
        (StatusCode::OK, axum::Json(json!({"jobs": jobs}))).into_response()
    }

    async fn patch_job(
        State(s): State<Shared>,
        h: HeaderMap,
        Path((_, id)): Path<(String, String)>,
        body: String,
    ) -> Response {
        let mut d = s.lock().unwrap();
        if !authorized(&d, &h) {
            return unauthorized();
        }
        let v: Value = serde_json::from_str(&body).unwrap();
        let Some(job) = d.jobs.get_mut(&id) else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"title": "Not Found", "description": format!("no job {id}")})),
            )
                .into_response();
        };
        for (k, x) in v.as_object().unwrap() {
            job[k] = x.clone();
        }
        d.patches.push((id.clone(), v));
        (
            StatusCode::OK,
            axum::Json(json!({"job_id": id, "version": 0})),
        )
            .into_response()
    }

    async fn post_backup(State(s): State<Shared>, h: HeaderMap, body: String) -> Response {
        let mut d = s.lock().unwrap();
        if !authorized(&d, &h) {
            return unauthorized();
        }
        let v: Value = serde_json::from_str(&body).unwrap();
        for k in ["container", "hostname", "backup_name"] {
            if v[k].as_str().is_none_or(str::is_empty) {
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"title": "Bad request format", "description": format!("{k} missing")}))).into_response();
            }
        }
        d.backups.push(v);
        let id = format!("b{}", d.backups.len());
        (StatusCode::CREATED, axum::Json(json!({"backup_id": id}))).into_response()
    }

    pub fn router(s: Shared) -> Router {
        Router::new()
            .route("/identity/v3/auth/tokens", post(tokens))
            .route("/v2/{p}/clients/", post(register))
            .route("/v2/{p}/jobs/", get(list_jobs))
            .route("/v2/{p}/jobs/{id}", patch(patch_job))
            .route("/v2/{p}/backups/", post(post_backup))
            .with_state(s)
    }

    /// The server on `port` until `stop` is cancelled.
    pub async fn serve(
        s: Shared,
        port: u16,
        stop: freezer_core::CancelToken,
    ) -> tokio::task::JoinHandle<()> {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_reuseaddr(true).unwrap();
        sock.bind(([127, 0, 0, 1], port).into()).unwrap();
        let listener = sock.listen(128).unwrap();
        tokio::spawn(async move {
            axum::serve(listener, router(s))
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
                .unwrap();
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_mode_registers_runs_reports_and_survives_an_outage() {
    use freezer_core::job::Secret;
    use freezer_core::service::client::{Client, ClientSettings};

    let env = Env::new();
    let port = crate::servers::free_port();
    let data: fake_api::Shared = Default::default();
    data.lock().unwrap().port = port;
    let job = json!({
        "job_id": "api-job",
        "client_id": "proj1_node1",
        "user_id": "u1",
        "project_id": "proj1",
        "session_id": "",
        "session_tag": 0,
        "job_actions": [{"freezer_action": env.backup_action("apib", "repo"), "max_retries": 1, "max_retries_interval": 1, "action_id": "a1"}],
        "job_schedule": {"schedule_interval": "2 seconds", "time_created": 1, "time_started": -1, "time_ended": -1, "status": "", "event": "", "result": ""},
    });
    data.lock().unwrap().jobs.insert("api-job".into(), job);
    // Someone else's job is not pulled.
    data.lock().unwrap().jobs.insert("other".into(), json!({"job_id": "other", "client_id": "proj1_node2", "job_actions": [], "job_schedule": {}}));
    let server_stop = CancelToken::new();
    let server = fake_api::serve(data.clone(), port, server_stop.clone()).await;

    // Wrong password: the error says what to check, and never shows the password.
    let bad = Client::new(ClientSettings {
        auth_url: Some(format!("http://127.0.0.1:{port}/identity/v3")),
        username: Some("sched".into()),
        password: Some(Secret("wrong-pw".into())),
        project_name: Some("proj".into()),
        ..ClientSettings::default()
    })
    .unwrap();
    let e = bad.get_job("api-job").await.unwrap_err();
    assert_eq!(e.status, Some(401));
    assert!(
        e.to_string().contains("OS_PASSWORD") && !e.to_string().contains("wrong-pw"),
        "{e}"
    );

    let client = std::sync::Arc::new(
        Client::new(ClientSettings {
            auth_url: Some(format!("http://127.0.0.1:{port}/identity/v3")),
            username: Some("sched".into()),
            password: Some(Secret("s3cret".into())),
            project_name: Some("proj".into()),
            region_name: Some("RegionOne".into()),
            ..ClientSettings::default()
        })
        .unwrap(),
    );
    assert_eq!(
        client.base_url().await.unwrap(),
        format!("http://127.0.0.1:{port}/v2/proj1")
    );
    let mut opts = options(1);
    opts.client_id = "proj1_node1".into();
    opts.poll_interval = Duration::from_millis(500);
    opts.retry_interval = Duration::from_millis(500);
    let sched = Scheduler::new(JobFeed::Api(client.clone()), opts);
    let s = Running {
        status: sched.status_handle(),
        stop: CancelToken::new(),
        task: tokio::spawn(async { Ok(()) }),
    };
    let task = tokio::spawn(sched.run(s.stop.clone()));
    let s = Running { task, ..s };

    s.wait_for(20, "two runs", |st| {
        st.jobs.get("api-job").is_some_and(|j| j.runs >= 2)
    })
    .await;
    let st = s.status.get();
    assert!(st.registered && !st.jobs.contains_key("other"), "{st:#?}");
    {
        let d = data.lock().unwrap();
        assert_eq!(d.clients.len(), 1);
        assert_eq!(d.clients[0]["client_id"], "proj1_node1");
        assert!(
            d.clients[0]["supported_actions"]
                .as_array()
                .unwrap()
                .contains(&json!("backup"))
        );
        let statuses: Vec<&Value> = d
            .patches
            .iter()
            .map(|(_, p)| &p["job_schedule"]["status"])
            .collect();
        assert!(
            statuses.contains(&&json!("running")) && statuses.contains(&&json!("scheduled")),
            "{statuses:?}"
        );
        assert!(d.patches.iter().all(|(id, p)| id == "api-job"
            && p["job_schedule"]["event"] == ""
            && p.get("session_tag").is_some()));
        assert!(!d.backups.is_empty());
        let b = &d.backups[0];
        assert_eq!(
            (
                b["job_id"].as_str(),
                b["backup_name"].as_str(),
                b["hostname"].as_str()
            ),
            (Some("api-job"), Some("apib"), Some("test-host"))
        );
        assert!(
            b["snapshot_id"].as_str().is_some_and(|s| s.len() == 64),
            "{b}"
        );
    }

    // Tokens revoked: the next call gets a 401, authenticates again and goes on.
    let issued = data.lock().unwrap().issued;
    data.lock().unwrap().tokens.clear();
    let runs = s.runs("api-job");
    s.wait_for(20, "runs reported after the 401", |st| {
        st.jobs.get("api-job").is_some_and(|j| j.runs >= runs + 2)
    })
    .await;
    assert!(data.lock().unwrap().issued > issued);

    // The API stops for 30 s: the job keeps running, and what ran is reported after.
    server_stop.cancel();
    server.await.unwrap();
    let backups_before = data.lock().unwrap().backups.len();
    let snaps_before = snapshots(&env.path("repo"), "apib").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let st = s.status.get();
    assert!(st.api_unreachable && st.pending_reports > 0, "{st:#?}");
    let snaps_during = snapshots(&env.path("repo"), "apib").await;
    assert!(
        snaps_during >= snaps_before + 5,
        "{snaps_before} -> {snaps_during}"
    );
    let server = fake_api::serve(data.clone(), port, CancelToken::new()).await;
    s.wait_for(20, "the reports delivered", |st| {
        !st.api_unreachable && st.pending_reports == 0
    })
    .await;
    {
        let d = data.lock().unwrap();
        let delivered = d.backups.len() - backups_before;
        assert!(
            delivered + 1 >= snaps_during - snaps_before,
            "{delivered} of {} backups reported",
            snaps_during - snaps_before
        );
    }

    // A stop event set in the API: handled, cleared, status stop.
    {
        let mut d = data.lock().unwrap();
        let j = d.jobs.get_mut("api-job").unwrap();
        j["job_schedule"]["event"] = json!("stop");
    }
    s.wait_for(20, "the job stopped", |st| {
        st.jobs.get("api-job").is_some_and(|j| j.status == "stop")
    })
    .await;
    s.wait_for(20, "the stop reported", |st| st.pending_reports == 0)
        .await;
    {
        let d = data.lock().unwrap();
        let j = &d.jobs["api-job"]["job_schedule"];
        assert_eq!(
            (j["status"].as_str(), j["event"].as_str()),
            (Some("stop"), Some("")),
            "{j}"
        );
    }
    s.stop().await;
    server.abort();
}

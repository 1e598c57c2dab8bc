//! The scheduler: pulls jobs from a freezer-api or a jobs folder ([`JobFeed`]), runs each on
//! its schedule ([`schedule`]) in-process through [`crate::job::run_job`], obeys the job
//! events (start, stop, abort, remove) and reports what ran ([`reports`]).
//!
//! Upstream's model, kept: a job is `stop`, `scheduled`, `running`, `completed` or `removed`;
//! a run ends `success`, `fail` or `aborted`; an event is handled once and cleared; only
//! `{job_schedule, session_id, session_tag}` is written back; a job whose `session_id` is set
//! starts and ends its session around the run; at most `concurrent_jobs` run at once, a due
//! job waiting for a free slot (missed fires merge into one, as APScheduler's `coalesce`).
//! Better than upstream: `abort` cancels the run's [`CancelToken`] (the engine stops at its
//! next check and leaves the repository valid) instead of a SIGTERM that never reached the
//! agent; the folder is watched; reports survive an API outage.
//!
//! The library never prints and never exits: it logs through `tracing` and ends when the
//! stop token given to [`Scheduler::run`] is cancelled (the CLI maps SIGTERM to it).

mod feed;
pub mod reports;
pub mod schedule;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

pub use feed::{FeedJob, JobFeed};
pub use schedule::JobSchedule;

use crate::CancelToken;
use crate::job::{Action, ActionOutcome, Job, RunContext};
use crate::service::client::{Client, JobPatch, Registration};
use feed::FeedReader;
use reports::{Outbox, Report};

/// Upstream's `SUPPORTED_MODES` this release runs.
pub const SUPPORTED_MODES: &[&str] = &["fs", "mysql", "mongo"];
/// This release's own modes, offered too when registering: freezer-rs's API takes them;
/// upstream's refuses a client that names a mode it lacks, and the scheduler then registers
/// with [`SUPPORTED_MODES`] alone (`stdin` is not offered: a pulled job has no stdin).
pub const OWN_MODES: &[&str] = &["postgres", "image", "command"];
/// Upstream's `SUPPORTED_STORAGES` this release runs.
pub const SUPPORTED_STORAGES: &[&str] = &["local", "swift", "ssh", "s3", "ftp", "ftps"];
/// Upstream's `SUPPORTED_ENGINES` whose jobs this release runs (with its own engine).
pub const SUPPORTED_ENGINES: &[&str] = &["tar", "rsync", "rsyncv2"];

/// The actions this scheduler runs (`exec` unless refused).
pub fn supported_actions(disable_exec: bool) -> Vec<&'static str> {
    let mut a = vec!["backup", "restore", "info", "admin"];
    if !disable_exec {
        a.push("exec");
    }
    a
}

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// The client id (`<project>_<hostname>` by upstream's default).
    pub client_id: String,
    /// This host's name, registered with the client.
    pub hostname: String,
    /// Jobs running at once (at least 1).
    pub concurrent_jobs: usize,
    /// Refuse jobs holding an `exec` action.
    pub disable_exec: bool,
    /// How often the feed is read (the API: upstream's 60 s; a folder: 1 s).
    pub poll_interval: Duration,
    /// The zone of dates without an offset and of cron fields.
    pub tz: TimeZone,
    /// The context each run starts from (progress, actor, credentials); its `cancel` is
    /// replaced by a fresh token per run.
    pub context: RunContext,
    /// How long an aborted run may take to stop by itself before it is dropped (its locks
    /// are released as it is dropped).
    pub abort_grace: Duration,
    /// How often undelivered reports are tried again while the API is down.
    pub retry_interval: Duration,
    /// The most reports kept for an API that is down.
    pub max_queued_reports: usize,
    /// Upstream's centralized scheduler: registers a central client, lists every project's
    /// jobs for it, runs only those with a trust (`user_credentials.trust_id`) and reports
    /// each through a token scoped to its trust, into its creator's project.
    pub centralized: bool,
}

impl SchedulerOptions {
    /// Upstream's defaults for `client_id` on `hostname`.
    pub fn new(client_id: impl Into<String>, hostname: impl Into<String>) -> Self {
        SchedulerOptions {
            client_id: client_id.into(),
            hostname: hostname.into(),
            concurrent_jobs: 1,
            disable_exec: false,
            poll_interval: Duration::from_secs(60),
            tz: TimeZone::system(),
            context: RunContext::current(),
            abort_grace: Duration::from_millis(1500),
            retry_interval: Duration::from_secs(5),
            max_queued_reports: 10_000,
            centralized: false,
        }
    }

    /// The `client_info` registered with the API: every mode this release runs.
    pub fn client_info(&self) -> Value {
        let mut info = self.upstream_client_info();
        info["supported_modes"] = json!([SUPPORTED_MODES, OWN_MODES].concat());
        info
    }

    /// The `client_info` for upstream's API, which knows only its own modes.
    pub fn upstream_client_info(&self) -> Value {
        json!({
            "client_id": self.client_id,
            "hostname": self.hostname,
            "description": format!("freezer-rs scheduler {}", env!("CARGO_PKG_VERSION")),
            "supported_actions": supported_actions(self.disable_exec),
            "supported_modes": SUPPORTED_MODES,
            "supported_storages": SUPPORTED_STORAGES,
            "supported_engines": SUPPORTED_ENGINES,
            "is_central": self.centralized,
        })
    }
}

/// Registers the scheduler's client with every mode it runs ([`SchedulerOptions::client_info`]);
/// when the API refuses that document (400 or 422: upstream's, whose schema lacks
/// [`OWN_MODES`]), again with upstream's modes alone.
pub async fn register_client(
    client: &Client,
    opts: &SchedulerOptions,
) -> Result<Registration, crate::service::client::ApiError> {
    match client.register_client(&opts.client_info()).await {
        Err(e) if matches!(e.status, Some(400 | 422)) => {
            tracing::info!(
                "the API refused this release's own modes ({}), registering with upstream's alone: {e}",
                OWN_MODES.join(", ")
            );
            client.register_client(&opts.upstream_client_info()).await
        }
        r => r,
    }
}

/// What the scheduler holds, for a front-end or a test to look at.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SchedulerStatus {
    /// Every job, by id.
    pub jobs: BTreeMap<String, JobStatus>,
    /// What could not be read at the last poll, each naming its file or job.
    pub feed_errors: Vec<String>,
    /// Reports waiting for the API.
    pub pending_reports: usize,
    /// Whether the API is unreachable now.
    pub api_unreachable: bool,
    /// Whether the client is registered with the API.
    pub registered: bool,
}

/// One job, as the scheduler sees it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JobStatus {
    /// Where it came from (a file, `freezer-api`).
    pub origin: String,
    /// `stop`, `scheduled`, `running`, `completed` or `removed`.
    pub status: String,
    /// The last run's result: `success`, `fail`, `aborted` (empty before a run).
    pub result: String,
    /// Runs finished.
    pub runs: u32,
    /// When it runs next.
    pub next_fire: Option<Timestamp>,
    /// The last run's error, or why the job cannot be scheduled.
    pub last_error: Option<String>,
}

/// A shared view of the status, updated as the scheduler works.
#[derive(Clone, Debug, Default)]
pub struct StatusHandle(Arc<Mutex<SchedulerStatus>>);

impl StatusHandle {
    /// A copy of the status now.
    pub fn get(&self) -> SchedulerStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, s: SchedulerStatus) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }
}

/// What to do once a running job ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Schedule the next fire (or complete).
    Reschedule,
    /// Stop (a `stop` event came while it ran).
    Stop,
    /// Status `removed`, then forget the job.
    Remove,
    /// Forget the job, reporting nothing (it left the feed).
    Forget,
}

#[derive(Debug)]
enum State {
    Stopped,
    /// Waiting for `next` (`None`: nothing more, the job completes).
    Scheduled {
        next: Option<Timestamp>,
    },
    Running {
        cancel: CancelToken,
        after: After,
        fired_at: Timestamp,
    },
}

/// One job and what the scheduler knows of it.
#[derive(Debug)]
struct Entry {
    id: String,
    origin: String,
    job: Job,
    /// The document without its volatile parts, to see a change.
    definition: Value,
    schedule: Result<JobSchedule, String>,
    /// `job_schedule` as reported (status, result, event, times).
    sched_doc: serde_json::Map<String, Value>,
    state: State,
    session_id: String,
    session_tag: i64,
    /// The trust the job runs through (centralized mode).
    trust_id: Option<String>,
    last_feed_event: String,
    last_feed_tag: i64,
    runs: u32,
    last_error: Option<String>,
}

/// The fields of `job_schedule` the scheduler writes; a change in them is not a change of
/// the job.
const VOLATILE: &[&str] = &[
    "event",
    "status",
    "result",
    "time_created",
    "time_started",
    "time_ended",
    "current_pid",
];

fn definition_of(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("session_tag");
        if let Some(Value::Object(s)) = o.get_mut("job_schedule") {
            for k in VOLATILE {
                s.remove(*k);
            }
        }
    }
    d
}

/// A job's `user_credentials.trust_id`, if any.
fn trust_of(doc: &Value) -> Option<String> {
    doc.pointer("/user_credentials/trust_id")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// How a run ended, sent from its task to the loop.
#[derive(Debug)]
struct RunDone {
    id: String,
    result: &'static str,
    error: Option<String>,
    backups: Vec<Value>,
    /// The session's tag as `start_session` answered it.
    session_tag: Option<i64>,
    /// Whether the session started (and so must be ended).
    session_started: bool,
}

/// The scheduler.
#[derive(Debug)]
pub struct Scheduler {
    feed: FeedReader,
    opts: SchedulerOptions,
    status: StatusHandle,
    entries: BTreeMap<String, Entry>,
    outbox: Outbox,
    feed_errors: Vec<String>,
    api_down: bool,
    registered: bool,
    /// Centralized mode: a client per trust, each scoped to its trustor's project.
    trust_clients: std::collections::HashMap<String, Arc<Client>>,
}

impl Scheduler {
    /// A scheduler of the jobs of `feed`.
    pub fn new(feed: JobFeed, opts: SchedulerOptions) -> Self {
        let allow_unknown = opts.context.allow_unknown_options;
        Scheduler {
            feed: FeedReader::new(feed, allow_unknown),
            outbox: Outbox::new(opts.max_queued_reports),
            opts,
            status: StatusHandle::default(),
            entries: BTreeMap::new(),
            feed_errors: Vec::new(),
            api_down: false,
            registered: false,
            trust_clients: std::collections::HashMap::new(),
        }
    }

    /// A view of the status that stays valid while [`Scheduler::run`] works.
    pub fn status_handle(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Runs until `stop` is cancelled: then aborts the running jobs, waits for them to end
    /// (each within [`SchedulerOptions::abort_grace`] of its abort), tries once more to
    /// deliver the reports, and returns.
    pub async fn run(mut self, stop: CancelToken) -> crate::Result<()> {
        if self.opts.concurrent_jobs == 0 {
            return Err(crate::Error::bad_input(
                "concurrent_jobs",
                "at least one job must be able to run",
            ));
        }
        tracing::info!(
            client_id = self.opts.client_id,
            concurrent_jobs = self.opts.concurrent_jobs,
            disable_exec = self.opts.disable_exec,
            centralized = self.opts.centralized,
            "scheduler started"
        );
        if self.opts.centralized && self.feed.client().is_none() {
            return Err(crate::Error::bad_input(
                "centralized",
                "a centralized scheduler reads its jobs from freezer-api, not a folder",
            ));
        }
        let mut tasks: JoinSet<RunDone> = JoinSet::new();
        let mut next_poll = Timestamp::UNIX_EPOCH;
        let mut next_flush = Timestamp::UNIX_EPOCH;
        loop {
            let now = crate::time::now();
            if self.feed.client().is_some() && !self.registered && now >= next_poll {
                self.register().await;
            }
            if now >= next_poll {
                let read = self
                    .feed
                    .read(&self.opts.client_id, self.opts.centralized)
                    .await;
                self.reconcile(read, crate::time::now());
                next_poll = add(crate::time::now(), self.opts.poll_interval);
            }
            self.start_due(crate::time::now(), &mut tasks);
            if !self.outbox.is_empty() && crate::time::now() >= next_flush && !self.flush().await {
                next_flush = add(crate::time::now(), self.opts.retry_interval);
            }
            self.publish();
            let now = crate::time::now();
            let mut wake = next_poll;
            if tasks.len() < self.opts.concurrent_jobs {
                for e in self.entries.values() {
                    if let State::Scheduled { next: Some(t) } = e.state {
                        wake = wake.min(t);
                    }
                }
            }
            if !self.outbox.is_empty() {
                wake = wake.min(next_flush.max(now));
            }
            let nanos =
                (wake.as_nanosecond() - now.as_nanosecond()).clamp(1_000_000, 60_000_000_000);
            let sleep = Duration::from_nanos(nanos as u64);
            tokio::select! {
                _ = stop.cancelled() => break,
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    match done {
                        Ok(d) => self.finish(d),
                        Err(e) => tracing::error!("a job's task ended abnormally: {e}"),
                    }
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        tracing::info!(
            running = tasks.len(),
            "scheduler stopping: aborting running jobs"
        );
        for e in self.entries.values_mut() {
            if let State::Running { cancel, .. } = &e.state {
                cancel.cancel();
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(d) = done {
                self.finish(d);
            }
        }
        if self.feed.client().is_some() && !self.outbox.is_empty() {
            // One last try, bounded: a stop must not hang on an API that is down.
            let _ = tokio::time::timeout(Duration::from_secs(10), self.flush()).await;
            if !self.outbox.is_empty() {
                tracing::warn!(
                    undelivered = self.outbox.len(),
                    "reports not delivered to freezer-api before the stop"
                );
            }
        }
        self.publish();
        tracing::info!("scheduler stopped");
        Ok(())
    }

    async fn register(&mut self) {
        let Some(client) = self.feed.client().cloned() else {
            return;
        };
        match register_client(&client, &self.opts).await {
            Ok(r) => {
                self.registered = true;
                match r {
                    Registration::Registered => {
                        tracing::info!(client_id = self.opts.client_id, "client registered")
                    }
                    Registration::AlreadyRegistered => {
                        tracing::info!(client_id = self.opts.client_id, "client already registered")
                    }
                }
            }
            Err(e) => {
                tracing::warn!("registering the client failed (tried again at the next poll): {e}")
            }
        }
    }

    /// Delivers queued reports; `false` when the API is down.
    async fn flush(&mut self) -> bool {
        let Some(client) = self.feed.client().cloned() else {
            return true;
        };
        let pending = self.outbox.len();
        match self.outbox.flush(&client).await {
            Ok(delivered) => {
                if self.api_down {
                    tracing::info!(pending, "freezer-api is back; reports delivered");
                }
                self.api_down = false;
                for id in delivered {
                    if let Some(e) = self.entries.get_mut(&id) {
                        // The API now holds the cleared event.
                        e.last_feed_event.clear();
                    }
                }
                true
            }
            Err(e) => {
                if !self.api_down {
                    tracing::warn!(
                        pending = self.outbox.len(),
                        "freezer-api unreachable, reports wait: {e}"
                    );
                }
                self.api_down = true;
                false
            }
        }
    }

    /// Compares what the feed holds with the jobs the scheduler has.
    fn reconcile(&mut self, read: feed::FeedRead, now: Timestamp) {
        for e in &read.errors {
            if !self.feed_errors.contains(e) {
                tracing::error!("{e}");
            }
        }
        self.feed_errors = read.errors;
        if let Some(e) = read.unreachable {
            if !self.api_down {
                tracing::warn!("freezer-api unreachable; jobs keep their schedule: {e}");
            }
            self.api_down = true;
            return;
        }
        if self.api_down && self.outbox.is_empty() {
            tracing::info!("freezer-api is back");
        }
        self.api_down = false;
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|id| !read.jobs.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            self.left_feed(&id);
        }
        for (id, fj) in read.jobs {
            self.update(id, fj, now);
        }
    }

    /// A job the feed no longer holds: stopped and forgotten (a running one ends first).
    fn left_feed(&mut self, id: &str) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        tracing::info!(job_id = id, origin = e.origin, "job removed from the feed");
        match &mut e.state {
            State::Running { after, .. } => *after = After::Forget,
            _ => {
                self.entries.remove(id);
            }
        }
    }

    fn update(&mut self, id: String, fj: FeedJob, now: Timestamp) {
        let definition = definition_of(&fj.doc);
        let feed_event = fj
            .doc
            .get("job_schedule")
            .map(|s| str_field(s, "event"))
            .unwrap_or_default();
        let feed_tag = fj
            .doc
            .get("session_tag")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let tz = self.opts.tz.clone();
        let parse = |job: &Job| {
            JobSchedule::parse(job.job_schedule.as_ref(), &tz, now).map_err(|e| e.to_string())
        };
        match self.entries.get_mut(&id) {
            Some(e) => {
                if e.definition != definition {
                    tracing::info!(job_id = id, origin = fj.origin, "job changed");
                    // The new schedule fields, with the state this scheduler reports.
                    let mut fresh = match fj.doc.get("job_schedule") {
                        Some(Value::Object(o)) => o.clone(),
                        _ => serde_json::Map::new(),
                    };
                    for k in VOLATILE {
                        if let Some(v) = e.sched_doc.get(*k) {
                            fresh.insert((*k).to_string(), v.clone());
                        }
                    }
                    e.sched_doc = fresh;
                    e.schedule = parse(&fj.job);
                    e.job = fj.job;
                    e.definition = definition;
                    e.session_id = str_field(&fj.doc, "session_id");
                    e.trust_id = trust_of(&fj.doc);
                    // A scheduled job takes its new schedule now; a finished one-shot whose
                    // document changed runs again (a running one takes it when it ends).
                    let completed = e.sched_doc.get("status") == Some(&json!("completed"));
                    match e.state {
                        State::Scheduled { .. } => e.arm(now),
                        State::Stopped if completed => e.arm(now),
                        _ => {}
                    }
                }
                if feed_tag != e.last_feed_tag {
                    e.last_feed_tag = feed_tag;
                    e.session_tag = feed_tag;
                }
                if feed_event != e.last_feed_event {
                    e.last_feed_event = feed_event.clone();
                    if !feed_event.is_empty() {
                        self.event(&id, &feed_event, now);
                    }
                }
            }
            None => {
                let sched_doc = match fj.doc.get("job_schedule") {
                    Some(Value::Object(o)) => o.clone(),
                    _ => serde_json::Map::new(),
                };
                let doc_status = sched_doc
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let schedule = parse(&fj.job);
                let entry = Entry {
                    id: id.clone(),
                    origin: fj.origin.clone(),
                    session_id: str_field(&fj.doc, "session_id"),
                    session_tag: feed_tag,
                    trust_id: trust_of(&fj.doc),
                    last_feed_tag: feed_tag,
                    last_feed_event: feed_event.clone(),
                    definition,
                    schedule,
                    sched_doc,
                    job: fj.job,
                    state: State::Stopped,
                    runs: 0,
                    last_error: None,
                };
                tracing::info!(job_id = id, origin = fj.origin, "new job");
                self.entries.insert(id.clone(), entry);
                // Upstream: a new job in status stop without an event stays stopped; a
                // finished or removed one stays so; any other starts.
                let event = if !feed_event.is_empty() {
                    feed_event
                } else if matches!(doc_status.as_str(), "stop" | "completed" | "removed") {
                    String::new()
                } else {
                    "start".to_string()
                };
                if let Some(e) = self.entries.get_mut(&id) {
                    e.set_status(if doc_status == "removed" || doc_status == "completed" {
                        &doc_status
                    } else {
                        "stop"
                    });
                }
                if !event.is_empty() {
                    self.event(&id, &event, now);
                }
            }
        }
    }

    /// Handles a job event, clears it and reports the new state.
    fn event(&mut self, id: &str, event: &str, now: Timestamp) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        tracing::info!(job_id = id, event, "job event");
        let mut forget = false;
        match (event, &mut e.state) {
            ("start", State::Stopped) => e.arm(now),
            ("start", State::Scheduled { .. }) => {}
            ("start", State::Running { after, .. }) => *after = After::Reschedule,
            ("stop" | "abort", State::Stopped) => {}
            ("stop" | "abort", State::Scheduled { .. }) => {
                e.state = State::Stopped;
                e.set_status("stop");
            }
            ("stop", State::Running { after, .. }) => *after = After::Stop,
            ("abort", State::Running { cancel, .. }) => {
                tracing::warn!(job_id = id, "aborting the running job");
                cancel.cancel();
            }
            ("remove", State::Running { after, .. }) => *after = After::Remove,
            ("remove", _) => {
                e.set_status("removed");
                forget = true;
            }
            (other, _) => {
                tracing::warn!(job_id = id, event = other, "unknown job event ignored");
            }
        }
        e.sched_doc.insert("event".into(), json!(""));
        let report = e.report();
        let trust = e.trust_id.clone();
        if forget {
            self.entries.remove(id);
        }
        self.queue(report, trust.as_deref());
    }

    /// Queues a report, sent with the client of `trust` in centralized mode.
    fn queue(&mut self, r: Report, trust: Option<&str>) {
        if self.feed.client().is_none() {
            return;
        }
        match trust {
            Some(t) if self.opts.centralized => match self.trust_client(t) {
                Some(c) => self.outbox.push_via(r, c),
                None => tracing::warn!("not reported (no client for its trust): {}", r.describe()),
            },
            _ => self.outbox.push(r),
        }
    }

    /// The client acting through `trust` (made once per trust).
    fn trust_client(&mut self, trust: &str) -> Option<Arc<Client>> {
        if let Some(c) = self.trust_clients.get(trust) {
            return Some(Arc::clone(c));
        }
        let base = self.feed.client()?;
        match base.for_trust(trust) {
            Ok(c) => {
                let c = Arc::new(c);
                self.trust_clients.insert(trust.to_string(), Arc::clone(&c));
                Some(c)
            }
            Err(e) => {
                tracing::error!(trust_id = trust, "no client for the trust: {e}");
                None
            }
        }
    }

    /// Starts the due jobs while slots are free, earliest first.
    fn start_due(&mut self, now: Timestamp, tasks: &mut JoinSet<RunDone>) {
        let mut due: Vec<(Timestamp, String)> = self
            .entries
            .values()
            .filter_map(|e| match e.state {
                State::Scheduled { next: Some(t) } if t <= now => Some((t, e.id.clone())),
                _ => None,
            })
            .collect();
        due.sort();
        for (fired_at, id) in due {
            if tasks.len() >= self.opts.concurrent_jobs {
                break;
            }
            self.start(&id, fired_at, now, tasks);
        }
        // One-shot jobs that have nothing more complete.
        let done: Vec<String> = self
            .entries
            .values()
            .filter(|e| matches!(e.state, State::Scheduled { next: None }))
            .map(|e| e.id.clone())
            .collect();
        for id in done {
            if let Some(e) = self.entries.get_mut(&id) {
                e.state = State::Stopped;
                e.set_status("completed");
                let r = e.report();
                let trust = e.trust_id.clone();
                self.queue(r, trust.as_deref());
            }
        }
    }

    fn start(
        &mut self,
        id: &str,
        fired_at: Timestamp,
        now: Timestamp,
        tasks: &mut JoinSet<RunDone>,
    ) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        let cancel = CancelToken::new();
        e.state = State::Running {
            cancel: cancel.clone(),
            after: After::Reschedule,
            fired_at,
        };
        e.set_status("running");
        e.sched_doc.insert("result".into(), json!(""));
        e.sched_doc
            .insert("time_started".into(), json!(now.as_second()));
        let report = e.report();
        let job = e.job.clone();
        let session = (!e.session_id.is_empty()).then(|| (e.session_id.clone(), e.session_tag));
        let trust = e.trust_id.clone();
        let id = id.to_string();
        self.queue(report, trust.as_deref());
        tracing::info!(job_id = id, "job starting");
        let refused = self.opts.disable_exec
            && job
                .job_actions
                .iter()
                .any(|a| a.freezer_action.action() == Action::Exec);
        let mut ctx = self.opts.context.clone();
        ctx.cancel = cancel;
        // Centralized: the job's trust client, whose token is checked before the run.
        let (client, trust_check) = match (&trust, self.opts.centralized) {
            (Some(t), true) => (self.trust_client(t), Some(t.clone())),
            _ => (self.feed.client().cloned(), None),
        };
        let client_id = self.opts.client_id.clone();
        let grace = self.opts.abort_grace;
        tasks.spawn(async move {
            if refused {
                return RunDone {
                    id,
                    result: "fail",
                    error: Some(
                        "the job has an exec action and this scheduler refuses them (--disable-exec)"
                            .into(),
                    ),
                    backups: Vec::new(),
                    session_tag: None,
                    session_started: false,
                };
            }
            if let Some(trust) = trust_check {
                let checked = match &client {
                    Some(c) => c.base_url().await.map(drop).map_err(|e| e.to_string()),
                    None => Err("no client could be made for it".to_string()),
                };
                if let Err(e) = checked {
                    tracing::error!(
                        job_id = id,
                        trust_id = trust,
                        "the job's trust gives no token; the job does not run: {e}"
                    );
                    return RunDone {
                        id,
                        result: "fail",
                        error: Some(format!(
                            "trust {trust}: no trust-scoped token (the trust was deleted, or \
                             this scheduler's user is not its trustee); the job did not run: {e}"
                        )),
                        backups: Vec::new(),
                        session_tag: None,
                        session_started: false,
                    };
                }
            }
            run_one(id, job, ctx, client, client_id, session, grace).await
        });
    }

    /// A run ended: record it, report it, and schedule what comes next.
    fn finish(&mut self, d: RunDone) {
        let now = crate::time::now();
        let Some(e) = self.entries.get_mut(&d.id) else {
            return;
        };
        let State::Running {
            after, fired_at, ..
        } = e.state
        else {
            return;
        };
        e.runs += 1;
        e.last_error = d.error.clone();
        match &d.error {
            Some(err) => tracing::warn!(job_id = d.id, result = d.result, "job ended: {err}"),
            None => tracing::info!(job_id = d.id, result = d.result, "job ended"),
        }
        if let Some(t) = d.session_tag {
            e.session_tag = t;
        }
        e.sched_doc.insert("result".into(), json!(d.result));
        e.sched_doc
            .insert("time_ended".into(), json!(now.as_second()));
        let mut forget = false;
        let mut report = true;
        match after {
            After::Reschedule => {
                let next = e
                    .schedule
                    .as_ref()
                    .ok()
                    .and_then(|s| s.next_fire(fired_at.max(now)));
                match next {
                    Some(t) => {
                        e.state = State::Scheduled { next: Some(t) };
                        e.set_status("scheduled");
                    }
                    None => {
                        e.state = State::Stopped;
                        e.set_status("completed");
                    }
                }
            }
            After::Stop => {
                e.state = State::Stopped;
                e.set_status("stop");
            }
            After::Remove => {
                e.set_status("removed");
                forget = true;
            }
            After::Forget => {
                forget = true;
                report = false;
            }
        }
        let state_report = e.report();
        let session = (!e.session_id.is_empty()).then(|| (e.session_id.clone(), e.session_tag));
        let trust = e.trust_id.clone();
        let trust = trust.as_deref();
        if forget {
            self.entries.remove(&d.id);
        }
        for metadata in d.backups {
            self.queue(Report::Backup { metadata }, trust);
        }
        if let Some((session_id, tag)) = session
            && d.session_started
        {
            self.queue(
                Report::EndSession {
                    session_id,
                    job_id: d.id.clone(),
                    tag,
                    result: d.result.to_string(),
                },
                trust,
            );
        }
        if report {
            self.queue(state_report, trust);
        }
    }

    fn publish(&self) {
        let jobs = self
            .entries
            .values()
            .map(|e| {
                (
                    e.id.clone(),
                    JobStatus {
                        origin: e.origin.clone(),
                        status: str_field(&Value::Object(e.sched_doc.clone()), "status"),
                        result: str_field(&Value::Object(e.sched_doc.clone()), "result"),
                        runs: e.runs,
                        next_fire: match e.state {
                            State::Scheduled { next } => next,
                            _ => None,
                        },
                        last_error: e.last_error.clone(),
                    },
                )
            })
            .collect();
        self.status.set(SchedulerStatus {
            jobs,
            feed_errors: self.feed_errors.clone(),
            pending_reports: self.outbox.len(),
            api_unreachable: self.api_down,
            registered: self.registered,
        });
    }
}

impl Entry {
    /// Schedules the job from `now` (status `scheduled`), or stops it with the reason when
    /// its schedule is invalid.
    fn arm(&mut self, now: Timestamp) {
        match &self.schedule {
            Ok(s) => {
                self.state = State::Scheduled {
                    next: s.first_fire(now),
                };
                self.set_status("scheduled");
            }
            Err(err) => {
                tracing::error!(job_id = self.id, "job not scheduled: {err}");
                self.last_error = Some(err.clone());
                self.state = State::Stopped;
                self.set_status("stop");
            }
        }
    }

    fn set_status(&mut self, s: &str) {
        self.sched_doc.insert("status".into(), json!(s));
    }

    fn report(&self) -> Report {
        Report::JobState {
            job_id: self.id.clone(),
            patch: JobPatch {
                job_schedule: Value::Object(self.sched_doc.clone()),
                session_id: self.session_id.clone(),
                session_tag: self.session_tag,
            },
        }
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_nanosecond(t.as_nanosecond() + d.as_nanos() as i128).unwrap_or(Timestamp::MAX)
}

/// Tries a session call up to five times while the API does not answer (upstream retries
/// five times).
async fn session_call<F, Fut>(
    f: F,
) -> Result<crate::service::client::SessionReply, crate::service::client::ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<
            Output = Result<crate::service::client::SessionReply, crate::service::client::ApiError>,
        >,
{
    let mut last = None;
    for _ in 0..5 {
        match f().await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_unreachable() => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("five tries"))
}

/// One run of a job: its session start, its actions, the metadata of its backups.
async fn run_one(
    id: String,
    job: Job,
    ctx: RunContext,
    client: Option<Arc<Client>>,
    client_id: String,
    session: Option<(String, i64)>,
    grace: Duration,
) -> RunDone {
    let mut session_tag = None;
    if let (Some(c), Some((sid, tag))) = (&client, &session) {
        match session_call(|| c.start_session(sid, &id, *tag)).await {
            Ok(r) if r.result == "success" => {
                tracing::info!(
                    job_id = id,
                    session_id = sid,
                    tag = r.session_tag,
                    "session started"
                );
                session_tag = Some(r.session_tag);
            }
            Ok(r) => {
                // hold-off: this job already started the session; out-of-sync: it missed
                // the session's window. Either way it does not run now; it takes the
                // session's tag to be in step at its next fire.
                tracing::warn!(
                    job_id = id,
                    session_id = sid,
                    result = r.result,
                    "session not started; the job does not run now"
                );
                return RunDone {
                    id,
                    result: "fail",
                    error: Some(format!("session {sid}: {}", r.result)),
                    backups: Vec::new(),
                    session_tag: Some(r.session_tag),
                    session_started: false,
                };
            }
            Err(e) if e.is_unreachable() => {
                tracing::warn!(
                    job_id = id,
                    session_id = sid,
                    "freezer-api unreachable: the job runs outside its session: {e}"
                );
            }
            Err(e) => {
                return RunDone {
                    id,
                    result: "fail",
                    error: Some(format!("starting session {sid}: {e}")),
                    backups: Vec::new(),
                    session_tag: None,
                    session_started: false,
                };
            }
        }
    }
    let cancel = ctx.cancel.clone();
    // `run_job` holds a `&dyn JobSpec` across awaits, so its future is not `Send`: it runs on
    // a blocking thread that drives it with this runtime's handle (its own tasks still go to
    // the runtime's workers). An aborted run that does not stop by itself within `grace` is
    // dropped there.
    let handle = tokio::runtime::Handle::current();
    let (run_job_doc, run_ctx) = (job.clone(), ctx.clone());
    let reports = tokio::task::spawn_blocking(move || {
        handle.block_on(async move {
            let cancel = run_ctx.cancel.clone();
            tokio::select! {
                r = crate::job::run_job(&run_job_doc, &run_ctx) => Some(r),
                _ = async { cancel.cancelled().await; tokio::time::sleep(grace).await } => None,
            }
        })
    })
    .await
    .unwrap_or_else(|e| {
        tracing::error!(job_id = id, "the run ended abnormally: {e}");
        Some(Vec::new())
    });
    let aborted = cancel.is_cancelled();
    let mut backups = Vec::new();
    let mut errors = Vec::new();
    match &reports {
        None => {
            errors.push("aborted; the run was dropped after it did not stop by itself".to_string())
        }
        Some(reports) => {
            for (i, r) in reports.iter().enumerate() {
                match &r.outcome {
                    Ok(b @ (ActionOutcome::Backup(_) | ActionOutcome::TarBackup(_))) => {
                        // run_job gives upstream's metadata document of every backup that
                        // wrote a snapshot; the API also learns which job and client made it.
                        if let Some(mut doc) = r.backup_metadata.clone() {
                            doc["job_id"] = serde_json::Value::from(id.as_str());
                            doc["client_id"] = serde_json::Value::from(client_id.as_str());
                            backups.push(doc);
                        }
                        if !b.is_complete() {
                            errors.push(format!("action {}: the backup is incomplete", i + 1));
                        }
                    }
                    Ok(o) if !o.is_complete() => {
                        errors.push(format!("action {}: incomplete", i + 1));
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(format!("action {}: {e}", i + 1)),
                }
            }
            if reports.len() < job.job_actions.len() {
                errors.push(format!(
                    "{} action(s) not run after a mandatory one failed",
                    job.job_actions.len() - reports.len()
                ));
            }
        }
    }
    let result = if aborted {
        "aborted"
    } else if errors.is_empty() {
        "success"
    } else {
        "fail"
    };
    RunDone {
        id,
        result,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        backups,
        session_started: session_tag.is_some(),
        session_tag,
    }
}

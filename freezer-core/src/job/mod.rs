//! Jobs: upstream's job document, the [`JobSpec`] trait, and the runner every front-end uses.
//!
//! A front-end turns its input (CLI flags, a job JSON, later an INI file, a Python dict or
//! C JSON) into [`FreezerAction`]s and calls [`run_action`] or [`run_job`]; the decisions a
//! backup needs (which storages, which passphrase, which parent snapshot and level, which
//! snapshot to restore) are made here, once, for all of them.

mod bound;
mod metadata;
mod names;
mod options;
mod storage;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::process as exec;
pub use crate::process::{ExecResult, TAIL_BYTES, exec_environment, split_words};
pub use bound::{INIT_OPTION_NAMES, RepositoryOptions};
pub use metadata::{backup_metadata, write_metadata};
pub use options::{Action, Engine, FreezerAction, OtherOptions, SourceMode};
pub use storage::{
    CREDENTIAL_VARIABLES, Environment, Secret, StorageSpec, credential_environment,
    read_secret_file,
};

use crate::crypto::Passphrase;
use crate::engine::{
    BackupOptions, BackupResult, CheckOptions, CheckReport, ForgetOptions, NoProgress, Progress,
    PruneOptions, PruneReport, RestoreOptions, RestoreResult, RetentionResult, StreamTarget,
};
use crate::error::{Error, Result};
use crate::repo::recover::Maker;
use crate::repo::snapshot::{SnapshotFilter, SnapshotSelector, SnapshotSummary};
use crate::repo::{Actor, InitOptions, Repository};
use crate::sink::Sink;
use crate::source::Source;
use crate::source::checksum::consistency_checksum;
use crate::source::fs::{FsOptions, FsSource};
use crate::source::stream::StreamSource;

/// One action of a job, with upstream's retry and `mandatory` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobAction {
    /// The options.
    pub freezer_action: FreezerAction,
    /// Retries after a failure.
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_retries: u32,
    /// Seconds between retries.
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_retries_interval: u32,
    /// Whether the job stops when this action fails.
    #[serde(default, deserialize_with = "options::lenient_bool")]
    pub mandatory: bool,
    /// Other fields of the job action (upstream's `action_id`, ...), kept as they are.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

fn lenient_u32<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<u32, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Null => Ok(0),
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a count"))),
        serde_json::Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a count"))),
        other => Err(serde::de::Error::custom(format!("{other} is not a count"))),
    }
}

/// Upstream's job document (the freezer-api `job_schema`, in the parts a run needs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The actions, run in order.
    pub job_actions: Vec<JobAction>,
    /// When to run (used by the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_schedule: Option<serde_json::Value>,
    /// Other fields of the document, kept as they are.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Job {
    /// Parses a job document; errors name the field (`job_actions[0].freezer_action.mode`).
    /// `action_defaults` is applied as freezer-api applies it when it stores a job: each of
    /// its options goes into every `freezer_action` that lacks it (or holds null).
    pub fn from_json(text: &str) -> Result<Job> {
        Job::from_value(options::parse_json(text, "")?)
    }

    /// Parses a job document already read as JSON (from the API, from Python), as
    /// [`Job::from_json`] does: the job-level fields are type-checked (`session_tag` an
    /// integer, `client_id` a string...), errors naming the field; `job_schedule` must be an
    /// object, read by the scheduler.
    pub fn from_value(mut doc: serde_json::Value) -> Result<Job> {
        check_job_fields(&doc)?;
        apply_action_defaults(&mut doc)?;
        let job: Job =
            serde_path_to_error::deserialize(doc).map_err(|e| options::field_error("", e))?;
        if job.job_actions.is_empty() {
            return Err(Error::bad_input(
                "job_actions",
                "a job needs at least one action",
            ));
        }
        Ok(job)
    }

    /// Checks every action as [`FreezerAction::validate_with`] does, and the fields of the
    /// document and of its job actions: a name this release does not know is refused, naming
    /// the closest known one with its path (`job_actions[0].freezer_action.encrypt_pas_file`),
    /// unless `allow_unknown`; the warnings returned then say which names were ignored.
    pub fn validate_with(&self, allow_unknown: bool) -> Result<Vec<String>> {
        let mut names = names::NameCheck::new(allow_unknown);
        names.job_fields(self.other.keys(), "", false)?;
        for (i, a) in self.job_actions.iter().enumerate() {
            let at = format!("job_actions[{i}]");
            names.job_fields(a.other.keys(), &at, true)?;
            names.action(&a.freezer_action, &format!("{at}.freezer_action"))?;
        }
        for (i, a) in self.job_actions.iter().enumerate() {
            // Names were checked above, with their paths.
            a.freezer_action
                .validate_with(true)
                .map_err(|e| e.context(format!("job_actions[{i}].freezer_action")))?;
        }
        Ok(names.warnings)
    }
}

/// The types of the job-level fields of upstream's `job_schema` (null is allowed for each: an
/// unset field as freezer-api and the web UI send it).
fn check_job_fields(doc: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    let Some(job) = doc.as_object() else {
        return Err(Error::bad_input("document", "a job is a JSON object"));
    };
    const STRINGS: &[&str] = &[
        "job_id",
        "description",
        "client_id",
        "session_id",
        "session_name",
        "user_id",
        "project_id",
    ];
    for (k, v) in job {
        let (ok, expected) = if STRINGS.contains(&k.as_str()) {
            (v.is_string(), "a string")
        } else if k == "session_tag" || k == "_version" {
            (v.as_i64().is_some(), "an integer")
        } else if ["job_schedule", "action_defaults", "user_credentials"].contains(&k.as_str()) {
            (v.is_object(), "an object")
        } else if k == "job_actions" {
            (v.is_array(), "a list of job actions")
        } else {
            (true, "")
        };
        if !ok && !v.is_null() {
            return Err(Error::bad_input(k, format!("expected {expected}")));
        }
    }
    if let Some(Value::Array(actions)) = job.get("job_actions") {
        for (i, a) in actions.iter().enumerate() {
            match a {
                Value::Object(m) => {
                    if !m.get("freezer_action").is_some_and(Value::is_object) {
                        return Err(Error::bad_input(
                            format!("job_actions[{i}].freezer_action"),
                            "expected an object of options",
                        ));
                    }
                }
                _ => {
                    return Err(Error::bad_input(
                        format!("job_actions[{i}]"),
                        "expected an object with a freezer_action",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Copies freezer-api's `action_defaults` into the actions of a job document, and removes it.
fn apply_action_defaults(doc: &mut serde_json::Value) -> Result<()> {
    let Some(job) = doc.as_object_mut() else {
        return Ok(());
    };
    let defaults = match job.remove("action_defaults") {
        None | Some(serde_json::Value::Null) => return Ok(()),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => {
            return Err(Error::bad_input(
                "action_defaults",
                "expected an object of freezer_action options",
            ));
        }
    };
    if let Some(serde_json::Value::Array(actions)) = job.get_mut("job_actions") {
        for a in actions {
            if let Some(serde_json::Value::Object(fa)) = a.get_mut("freezer_action") {
                for (k, v) in &defaults {
                    if fa.get(k).is_none_or(serde_json::Value::is_null) {
                        fa.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

/// What to do: a list of actions. Implemented by a whole [`Job`] and by a single
/// [`FreezerAction`]; front-ends may implement it for their own documents.
pub trait JobSpec: Send + Sync {
    /// The job's id, if it has one.
    fn job_id(&self) -> Option<&str>;
    /// The actions, in order.
    fn actions(&self) -> Vec<JobAction>;
}

impl JobSpec for Job {
    fn job_id(&self) -> Option<&str> {
        self.job_id.as_deref()
    }
    fn actions(&self) -> Vec<JobAction> {
        self.job_actions.clone()
    }
}

impl JobSpec for FreezerAction {
    fn job_id(&self) -> Option<&str> {
        None
    }
    fn actions(&self) -> Vec<JobAction> {
        vec![JobAction {
            freezer_action: self.clone(),
            ..JobAction::default()
        }]
    }
}

/// What the runner needs from its caller.
#[derive(Clone)]
pub struct RunContext {
    /// Receives progress.
    pub progress: Arc<dyn Progress>,
    /// Who runs the job (default `hostname`, lock owner).
    pub actor: Actor,
    /// The time zone dates like `restore_from_date` are read in.
    pub tz: TimeZone,
    /// The clock: `None` is now; tests inject times here.
    pub now: Option<Timestamp>,
    /// Environment variables the front-end passes for storage credentials (`ACCESS_KEY`,
    /// `SECRET_KEY`, `ENDPOINT`, `AWS_*`); the library reads no other environment.
    pub env: Environment,
    /// How long an action waits for a live conflicting lock (a prune, a backup) before it fails.
    pub lock_wait: Duration,
    /// Whether a backup into storages that hold no repository creates one, as upstream's
    /// agent creates its container (default). Storages holding other files are never taken
    /// over. Off, such a backup fails with `NotFound`, as `freezer backup` does.
    pub create_repository: bool,
    /// Whether option names this release does not know are accepted (each one a warning from
    /// [`FreezerAction::validate_with`]) instead of failing the action (default off: a
    /// misspelt `encrypt_pass_file` must not make a backup in plaintext).
    pub allow_unknown_options: bool,
    /// Cancelled by whoever runs the job (a scheduler's `abort`): the running action stops
    /// at its next check and fails with [`Error::Cancelled`]; later actions do not run.
    pub cancel: crate::CancelToken,
    /// Whether `exec` actions may run (default on; a scheduler started with
    /// `--disable-exec` turns it off, and an `exec` action then fails naming the flag).
    pub allow_exec: bool,
    /// The whole environment an `exec` command gets; nothing else of the caller's
    /// environment reaches it (see [`exec_environment`] for a harmless choice). Default empty.
    pub exec_env: std::collections::BTreeMap<String, String>,
    /// The id of the job being run, for the backup metadata document (`job_id`);
    /// [`run_job`] fills it from the job when it is `None`.
    pub job_id: Option<String>,
    /// The front-end's standard input and output, for mode `stdin` and a restore to `-`
    /// (default: none, and those fail saying so).
    pub std_streams: StdStreams,
    /// The mount table an LVM snapshot backup reads to find the volume holding
    /// `path_to_backup` (default `/proc/self/mounts`; tests give their own).
    pub mount_table: std::path::PathBuf,
    /// The passphrase, given directly by a binding (`freezer_py.Repository(...,
    /// passphrase=...)`): when set, actions use it and never read `encrypt_pass_file`.
    pub passphrase: Option<Passphrase>,
}

/// A front-end's standard input (read by a backup in mode `stdin`) and standard output
/// (written by a restore to `-`), each taken by the first action that uses it.
#[derive(Clone, Default)]
pub struct StdStreams {
    input: Arc<std::sync::Mutex<Option<crate::source::stream::StreamInput>>>,
    output: Arc<std::sync::Mutex<Option<crate::engine::StreamOutput>>>,
}

impl std::fmt::Debug for StdStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdStreams").finish_non_exhaustive()
    }
}

impl StdStreams {
    /// Both streams.
    pub fn new(
        input: crate::source::stream::StreamInput,
        output: crate::engine::StreamOutput,
    ) -> Self {
        StdStreams {
            input: Arc::new(std::sync::Mutex::new(Some(input))),
            output: Arc::new(std::sync::Mutex::new(Some(output))),
        }
    }

    /// The streams given: an action that needs a missing one fails as with none.
    pub fn from_parts(
        input: Option<crate::source::stream::StreamInput>,
        output: Option<crate::engine::StreamOutput>,
    ) -> Self {
        StdStreams {
            input: Arc::new(std::sync::Mutex::new(input)),
            output: Arc::new(std::sync::Mutex::new(output)),
        }
    }

    /// From file descriptors the front-end owns (a binding's duplicates of its caller's):
    /// `input` is read to its end by a backup in mode `stdin`, `output` written by a restore
    /// to `-`; each is closed when the action that took it ends (or with the last clone of
    /// these streams). Reads and writes go straight to the descriptor, unbuffered (the engine
    /// reads and writes in large blocks).
    #[cfg(unix)]
    pub fn from_fds(
        input: Option<std::os::fd::OwnedFd>,
        output: Option<std::os::fd::OwnedFd>,
    ) -> Self {
        Self::from_parts(
            input.map(|fd| Box::new(std::fs::File::from(fd)) as crate::source::stream::StreamInput),
            output.map(|fd| Box::new(std::fs::File::from(fd)) as crate::engine::StreamOutput),
        )
    }

    /// Refuses a stream given to a run none of whose `actions` would use it: a standard input
    /// when no action is a backup in mode `stdin`, a standard output when none is a restore to
    /// `-` (`restore_abs_path` `-` without `restore_command`). A binding calls it before
    /// running one action; [`run_job_document`] calls it for the job's actions.
    pub fn refuse_unused<'a>(
        &self,
        actions: impl IntoIterator<Item = &'a FreezerAction>,
    ) -> Result<()> {
        let has_input = self
            .input
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let has_output = self
            .output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !has_input && !has_output {
            return Ok(());
        }
        let (mut reads, mut writes) = (false, false);
        for a in actions {
            reads |=
                a.action() == Action::Backup && matches!(a.source_mode(), Ok(SourceMode::Stdin));
            writes |= a.action() == Action::Restore
                && a.restore_command.is_none()
                && a.restore_abs_path.as_deref() == Some("-");
        }
        if has_input && !reads {
            return Err(Error::bad_input(
                "stdin",
                "a standard input was given, but no action here reads one (only a backup with mode stdin does)",
            ));
        }
        if has_output && !writes {
            return Err(Error::bad_input(
                "stdout",
                "a standard output was given, but no action here writes one (only a restore with restore_abs_path \"-\" does)",
            ));
        }
        Ok(())
    }

    fn take_input(&self) -> Result<crate::source::stream::StreamInput> {
        self.input
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                Error::bad_input(
                    "mode",
                    "mode stdin: no standard input to read (the front-end gives none, or it was read already)",
                )
            })
    }

    fn take_output(&self) -> Result<crate::engine::StreamOutput> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                Error::bad_input(
                    "restore_abs_path",
                    "-: no standard output to write to (the front-end gives none, or it was used already)",
                )
            })
    }
}

impl std::fmt::Debug for RunContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunContext")
            .field("actor", &self.actor)
            .field("now", &self.now)
            .field("allow_exec", &self.allow_exec)
            .field("job_id", &self.job_id)
            .finish_non_exhaustive()
    }
}

impl RunContext {
    /// This host and user, the system time zone, no progress.
    pub fn current() -> Self {
        RunContext {
            progress: Arc::new(NoProgress),
            actor: Actor::current(),
            tz: TimeZone::system(),
            now: None,
            env: Environment::new(),
            lock_wait: crate::repo::lock::DEFAULT_LOCK_WAIT,
            create_repository: true,
            allow_unknown_options: false,
            cancel: crate::CancelToken::new(),
            allow_exec: true,
            exec_env: std::collections::BTreeMap::new(),
            job_id: None,
            std_streams: StdStreams::default(),
            mount_table: crate::source::lvm::DEFAULT_MOUNT_TABLE.into(),
            passphrase: None,
        }
    }
}

/// What an action did.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum ActionOutcome {
    /// A backup.
    Backup(Box<BackupResult>),
    /// A restore.
    Restore(Box<RestoreResult>),
    /// A listing (`info`): the snapshots of the action's host, newest last.
    Info {
        /// One line per snapshot.
        snapshots: Vec<SnapshotSummary>,
    },
    /// Retention (`admin`): what was forgotten, then what the prune freed.
    Admin(Box<AdminResult>),
    /// Verification (`check`, an extension).
    Check(Box<CheckReport>),
    /// Removal of unused data (`prune`, an extension).
    Prune(Box<PruneReport>),
    /// A command (`exec`) that exited with status 0.
    Exec(Box<ExecResult>),
    /// A backup in upstream's `tar` format (`engine_name: tar`).
    #[serde(rename = "backup")]
    TarBackup(Box<crate::upstream::run::TarBackupResult>),
    /// A restore of upstream's `tar` format.
    #[serde(rename = "restore")]
    TarRestore(Box<crate::upstream::tar::TarRestoreReport>),
    /// A listing of upstream's `tar` backups, oldest first.
    #[serde(rename = "info")]
    TarInfo {
        /// One per backup (every level).
        backups: Vec<crate::upstream::run::TarBackupSummary>,
        /// Objects skipped while listing.
        warnings: Vec<String>,
    },
    /// Retention over upstream's `tar` backups.
    #[serde(rename = "admin")]
    TarAdmin(Box<crate::upstream::run::TarRetentionResult>),
}

/// What an `admin` action did.
pub type AdminResult = RetentionResult;

/// Appends `warnings` to the `warnings` list of a result document (an outcome serialized to
/// JSON), making the list when it has none: how the Python and C front-ends return the
/// warnings of [`FreezerAction::validate_with`] with the outcome.
pub fn append_warnings(doc: &mut serde_json::Value, warnings: Vec<String>) {
    if warnings.is_empty() {
        return;
    }
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let list = obj
        .entry("warnings")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let serde_json::Value::Array(a) = list {
        a.extend(warnings.into_iter().map(serde_json::Value::String));
    }
}

impl ActionOutcome {
    /// For a backup that wrote a snapshot (native or upstream's `tar`): upstream's backup
    /// metadata document of `action` (see [`backup_metadata`]), what upstream's agent writes
    /// with `--metadata-out` and a scheduler posts to freezer-api's `/backups`.
    pub fn backup_metadata(
        &self,
        action: &FreezerAction,
        ctx: &RunContext,
    ) -> Option<serde_json::Value> {
        match self {
            ActionOutcome::Backup(b) if b.snapshot_id.is_some() => {
                Some(backup_metadata(action, b, ctx))
            }
            ActionOutcome::TarBackup(b) => {
                Some(crate::upstream::run::backup_metadata(action, b, ctx))
            }
            _ => None,
        }
    }

    /// The outcome of `action` as one JSON document, what the bindings return: the outcome's
    /// fields (`action`, ...), `complete`, the `warnings` of
    /// [`FreezerAction::validate_with`] appended to its own; for a backup, every key of
    /// upstream's metadata document (`curr_backup_level`, `fs_real_path`, `client_os`...) the
    /// outcome does not already have, and the document whole as `backup_metadata`.
    pub fn to_document(
        &self,
        action: &FreezerAction,
        ctx: &RunContext,
        warnings: Vec<String>,
    ) -> serde_json::Value {
        let mut doc = serde_json::to_value(self).unwrap_or_else(
            |e| serde_json::json!({"error": format!("the result does not serialize: {e}")}),
        );
        append_warnings(&mut doc, warnings);
        if let Some(obj) = doc.as_object_mut() {
            obj.insert("complete".into(), self.is_complete().into());
            if let Some(meta) = self.backup_metadata(action, ctx) {
                if let Some(m) = meta.as_object() {
                    for (k, v) in m {
                        obj.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                obj.insert("backup_metadata".into(), meta);
            }
        }
        doc
    }

    /// Whether the action did all it was asked to.
    pub fn is_complete(&self) -> bool {
        match self {
            ActionOutcome::Backup(b) => b.is_complete(),
            ActionOutcome::Restore(r) => r.is_complete(),
            ActionOutcome::Info { .. } => true,
            ActionOutcome::Admin(a) => a.is_complete(),
            ActionOutcome::Check(c) => c.is_ok(),
            ActionOutcome::Prune(p) => p.is_complete(),
            ActionOutcome::Exec(_) => true,
            ActionOutcome::TarBackup(b) => b.is_complete(),
            ActionOutcome::TarRestore(_) | ActionOutcome::TarInfo { .. } => true,
            ActionOutcome::TarAdmin(_) => true,
        }
    }
}

/// The storages of an action, as sinks (remote ones retry transient failures).
pub fn sinks_of(action: &FreezerAction, env: &Environment) -> Result<Vec<Arc<dyn Sink>>> {
    let limits = action.limits()?;
    action
        .all_storages()?
        .iter()
        .map(|s| s.open(env, limits))
        .collect()
}

impl RunContext {
    /// The passphrase of `action` run in this context: [`RunContext::passphrase`] when set,
    /// else the first line of the action's `encrypt_pass_file`.
    pub fn passphrase_for(&self, action: &FreezerAction) -> Result<Option<Passphrase>> {
        match &self.passphrase {
            Some(p) => Ok(Some(p.clone())),
            None => passphrase_of(action),
        }
    }
}

/// The passphrase of an action, read from `encrypt_pass_file`.
pub fn passphrase_of(action: &FreezerAction) -> Result<Option<Passphrase>> {
    action
        .encrypt_pass_file
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| Passphrase::from_file(Path::new(p)))
        .transpose()
}

/// Opens the repository an action's storage options name (`container`, `storage`,
/// `storages`, `encrypt_pass_file`...), waiting for locks as `ctx` says.
pub async fn open_repository(action: &FreezerAction, ctx: &RunContext) -> Result<Repository> {
    let sinks = sinks_of(action, &ctx.env)?;
    if sinks.is_empty() {
        return Err(Error::bad_input(
            "container",
            "no storage given: set container (a folder for storage local, bucket[/prefix] for s3)",
        ));
    }
    let pass = ctx.passphrase_for(action)?;
    let mut repo = Repository::open(sinks, pass.as_ref()).await?;
    repo.set_lock_wait(ctx.lock_wait);
    Ok(repo)
}

/// Creates the repository a backup action names, on the storages that hold none, and
/// returns them. A storage without a `config` must be empty, but for the key files of an
/// interrupted `init`: one holding anything else (upstream's backups, another program's
/// files) is refused, never taken over. Another node creating it at the same moment wins or
/// loses the race (the config is written only if absent); either way the repository is then
/// there, and this returns no storage.
async fn create_repository(
    action: &FreezerAction,
    ctx: &RunContext,
    passphrase: Option<Passphrase>,
) -> Result<Vec<String>> {
    let sinks = sinks_of(action, &ctx.env)?;
    let opts = InitOptions::new(passphrase, ctx.actor.clone());
    match Repository::create(sinks, opts, Maker::FirstBackup).await {
        Ok(report) => Ok(report.created),
        Err(Error::AlreadyExists { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Refuses `what` (a command a backup or restore would run) on a node where `exec` is off.
fn refuse_exec(ctx: &RunContext, what: &str) -> Result<()> {
    if ctx.allow_exec {
        return Ok(());
    }
    Err(Error::bad_input(
        "action",
        format!(
            "{what} runs a command, refused on this node (the scheduler runs with --disable-exec)"
        ),
    ))
}

/// Runs one action.
pub async fn run_action(action: &FreezerAction, ctx: &RunContext) -> Result<ActionOutcome> {
    if action.action() == Action::Backup && action.snapshot.requested() {
        action.validate_with(ctx.allow_unknown_options)?;
        // The backup runs inside an LVM snapshot, reading the mounted view.
        return crate::source::lvm::with_snapshot(
            action,
            &ctx.mount_table,
            &ctx.exec_env,
            &ctx.cancel,
            |view| Box::pin(async move { run_one_action(&view, ctx).await }),
        )
        .await;
    }
    run_one_action(action, ctx).await
}

async fn run_one_action(action: &FreezerAction, ctx: &RunContext) -> Result<ActionOutcome> {
    action.validate_with(ctx.allow_unknown_options)?;
    ctx.cancel.check()?;
    if action.engine()? == Engine::Tar && action.action() != Action::Exec {
        let outcome = crate::upstream::run::run(action, ctx).await?;
        if let ActionOutcome::TarBackup(b) = &outcome
            && let Some(out) = action
                .metadata_out
                .as_deref()
                .filter(|o| !o.is_empty() && *o != "-")
        {
            write_metadata(out, &crate::upstream::run::backup_metadata(action, b, ctx))?;
        }
        return Ok(outcome);
    }
    if action.action() == Action::Exec {
        if !ctx.allow_exec {
            return Err(Error::bad_input(
                "action",
                "exec actions are refused on this node (the scheduler runs with --disable-exec)",
            ));
        }
        let words = exec::command_words(action.command.as_deref())?;
        let r = exec::run(&words, &ctx.exec_env, &ctx.cancel).await?;
        return Ok(ActionOutcome::Exec(Box::new(r)));
    }
    let mut created = Vec::new();
    let mut repo = match open_repository(action, ctx).await {
        Err(Error::NotFound { .. })
            if action.action() == Action::Backup && ctx.create_repository && !action.dry_run =>
        {
            // A missing passphrase file is that, not a reason to create anything.
            let passphrase = ctx.passphrase_for(action)?;
            created = create_repository(action, ctx, passphrase)
                .await
                .map_err(|e| e.context("creating the repository for this backup"))?;
            open_repository(action, ctx).await?
        }
        r => r?,
    };
    let now = ctx.now.unwrap_or_else(crate::time::now);
    let hostname = action
        .hostname_given()
        .unwrap_or_else(|| ctx.actor.hostname.clone());
    let backup_name = action.backup_name.clone().filter(|n| !n.is_empty());
    match action.action() {
        Action::Backup => {
            let backup_name = backup_name
                .ok_or_else(|| Error::bad_input("backup_name", "a backup needs backup_name"))?;
            let source: Arc<dyn Source> = match action.source_mode()? {
                SourceMode::Fs => crate::source::lvm::fs_source(
                    action,
                    &FsOptions {
                        excludes: action.exclude.clone(),
                        one_file_system: action.one_file_system,
                        dereference: action.dereference_symlink.unwrap_or_default(),
                    },
                )?,
                SourceMode::Command => {
                    refuse_exec(ctx, "mode command")?;
                    Arc::new(StreamSource::command(
                        action.stream_command(ctx.exec_env.clone()),
                        ctx.cancel.clone(),
                    )?)
                }
                SourceMode::Stdin => Arc::new(StreamSource::stdin(
                    ctx.std_streams.take_input()?,
                    ctx.cancel.clone(),
                )),
                // A database mode runs its own dump tools, never a command of the job's: not
                // refused by `--disable-exec`.
                m @ (SourceMode::Mysql | SourceMode::Postgres | SourceMode::Mongo) => {
                    crate::db::backup_source(m, action, ctx).await?
                }
                SourceMode::Image => Arc::new(
                    crate::source::image::ImageSource::open(
                        action.path_to_backup.as_deref().unwrap_or_default(),
                        ctx.exec_env.clone(),
                        ctx.cancel.clone(),
                    )
                    .await?,
                ),
            };
            let snaps = repo.snapshots().await?.0;
            let series = snaps
                .iter()
                .filter(|(_, s)| s.hostname == hostname && s.backup_name == backup_name)
                .map(|(id, s)| (id, s));
            let plan = crate::policy::levels::plan(series, &action.level_policy()?, now);
            let mut opts = BackupOptions::new(hostname, backup_name, ctx.actor.clone());
            // Every snapshot is complete; the parent only says which files can be trusted
            // unchanged, and a level 0 trusts none (see `policy::levels`).
            opts.parent = plan.parent;
            opts.level = plan.level;
            if action.consistency_check {
                let source = source.clone();
                let sum = tokio::task::spawn_blocking(move || consistency_checksum(&*source))
                    .await
                    .map_err(|e| Error::io("consistency checksum", std::io::Error::other(e)))??;
                opts.consistency_checksum = Some(sum);
            }
            opts.compression = action.compression.as_deref().unwrap_or("auto").parse()?;
            opts.dry_run = action.dry_run;
            opts.time = ctx.now;
            opts.excludes = action.exclude.clone();
            opts.cancel = ctx.cancel.clone();
            opts.resources = action.resources()?;
            let (series_host, series_name) = (opts.hostname.clone(), opts.backup_name.clone());
            let mut r =
                crate::engine::backup(&mut repo, source, &opts, ctx.progress.clone()).await?;
            r.created_repository = created;
            // Upstream's agent runs retention after a backup that carries its options. Only
            // after a complete one: an incomplete backup must not make older copies go.
            if let Some(rules) = action.retention(&ctx.tz)?
                && r.snapshot_id.is_some()
            {
                if !r.is_complete() {
                    r.warnings.push(
                        "retention skipped: the backup is incomplete, older snapshots stay".into(),
                    );
                } else {
                    let done = apply_retention(
                        &mut repo,
                        rules,
                        series_host,
                        Some(series_name),
                        now,
                        false,
                        ctx,
                    )
                    .await;
                    match done {
                        Ok(d) => r.retention = Some(d),
                        Err(e) => r
                            .warnings
                            .push(format!("retention after the backup failed: {e}")),
                    }
                }
            }
            if let Some(out) = action
                .metadata_out
                .as_deref()
                .filter(|o| !o.is_empty() && *o != "-")
                && r.snapshot_id.is_some()
                && let Err(e) = write_metadata(out, &backup_metadata(action, &r, ctx))
            {
                r.warnings.push(format!("backup metadata not written: {e}"));
            }
            Ok(ActionOutcome::Backup(Box::new(r)))
        }
        Action::Restore => {
            let listing = repo.snapshot_listing().await?;
            let selector = match (&action.snapshot_id, &action.restore_from_date) {
                (Some(id), _) => SnapshotSelector::Id(id.clone()),
                (None, date) => {
                    let backup_name = backup_name.ok_or_else(|| {
                        Error::bad_input(
                            "backup_name",
                            "a restore needs backup_name (or a snapshot id)",
                        )
                    })?;
                    match date {
                        Some(d) => SnapshotSelector::AtOrBefore {
                            hostname,
                            backup_name,
                            time: crate::time::parse_date(d, "restore_from_date", &ctx.tz)?,
                        },
                        None => SnapshotSelector::Latest {
                            hostname,
                            backup_name,
                        },
                    }
                }
            };
            let ((id, snap), passed_over) = listing.select(&selector, action.newest_readable)?;
            let mode = action.source_mode()?;
            if mode.is_database()
                && !action.restores_a_stream()
                && action.restore_abs_path.as_deref().is_none_or(str::is_empty)
            {
                let _lock = repo.lock_to_read("restore", &ctx.actor).await?;
                _lock.log_notes();
                repo.load_index().await?;
                let r = crate::db::restore(mode, &repo, *id, snap, action, ctx).await;
                let _ = _lock.release().await;
                let mut r = r?;
                r.passed_over = passed_over;
                return Ok(ActionOutcome::Restore(Box::new(r)));
            }
            if snap.mode == "image" && !action.restores_a_stream() && !action.dry_run {
                // An image goes to a file (holes kept) or a block device.
                let target = action.restore_abs_path.as_deref().expect("validated");
                let _lock = repo.lock_to_read("restore", &ctx.actor).await?;
                repo.load_index().await?;
                let r = crate::engine::restore_image(
                    &repo,
                    *id,
                    snap,
                    std::path::Path::new(target),
                    &ctx.cancel,
                    ctx.progress.clone(),
                )
                .await;
                let _ = _lock.release().await;
                let mut r = r?;
                r.passed_over = passed_over;
                return Ok(ActionOutcome::Restore(Box::new(r)));
            }
            if action.restores_a_stream() {
                let target = match action.restore_stream_command(ctx.exec_env.clone()) {
                    Some(cmd) => {
                        refuse_exec(ctx, "restore_command")?;
                        StreamTarget::Command(cmd)
                    }
                    None => StreamTarget::Writer(ctx.std_streams.take_output()?),
                };
                let _lock = repo.lock_to_read("restore", &ctx.actor).await?;
                _lock.log_notes();
                repo.load_index().await?;
                let r = crate::engine::restore_stream(
                    &repo,
                    *id,
                    snap,
                    target,
                    &ctx.cancel,
                    ctx.progress.clone(),
                )
                .await;
                let _ = _lock.release().await;
                let mut r = r?;
                r.passed_over = passed_over;
                return Ok(ActionOutcome::Restore(Box::new(r)));
            }
            let mut opts =
                RestoreOptions::new(action.restore_abs_path.as_deref().expect("validated"));
            opts.overwrite = action.overwrite;
            opts.dry_run = action.dry_run;
            opts.sub_path = action.sub_path.clone();
            opts.cancel = ctx.cancel.clone();
            opts.resources = action.resources()?;
            // The outcome reports damaged files (`is_complete`); the front-end decides.
            opts.accept_partial = true;
            let _lock = if action.dry_run {
                None
            } else {
                Some(repo.lock_to_read("restore", &ctx.actor).await?)
            };
            _lock
                .iter()
                .for_each(crate::repo::lock::LockGuard::log_notes);
            repo.load_index().await?;
            let r = crate::engine::restore(&repo, *id, snap, &opts, ctx.progress.clone()).await;
            if let Some(l) = _lock {
                let _ = l.release().await;
            }
            let mut r = r?;
            r.passed_over = passed_over;
            if let Some(want) = action.consistency_checksum.as_deref()
                && !action.dry_run
            {
                verify_checksum(action, want).await?;
            }
            Ok(ActionOutcome::Restore(Box::new(r)))
        }
        Action::Info => {
            let filter = SnapshotFilter {
                hostname: Some(hostname),
                backup_name,
                ..SnapshotFilter::default()
            };
            let (snaps, bad) = repo.snapshots().await?;
            if let Some(b) = bad.first() {
                return Err(Error::corrupt("snapshots", b.clone()));
            }
            Ok(ActionOutcome::Info {
                snapshots: snaps
                    .iter()
                    .filter(|(_, s)| filter.matches(s))
                    .map(|(id, s)| s.summary(*id))
                    .collect(),
            })
        }
        Action::Admin => {
            let retention = action.retention(&ctx.tz)?.expect("validated");
            let r = apply_retention(
                &mut repo,
                retention,
                hostname,
                backup_name,
                now,
                action.dry_run,
                ctx,
            )
            .await?;
            Ok(ActionOutcome::Admin(Box::new(r)))
        }
        Action::Check => {
            let mut opts = CheckOptions::new(ctx.actor.clone());
            opts.read_data = action.read_data()?;
            // A check only reads: stopping it midway leaves nothing to undo (its lock is
            // removed when dropped).
            let r = tokio::select! {
                r = crate::engine::check(&mut repo, &opts, ctx.progress.clone()) => r?,
                _ = ctx.cancel.cancelled() => return Err(Error::Cancelled),
            };
            Ok(ActionOutcome::Check(Box::new(r)))
        }
        Action::Prune => {
            let opts = action.prune_options()?;
            let r =
                crate::engine::prune(&mut repo, &opts, &ctx.actor, ctx.progress.clone()).await?;
            Ok(ActionOutcome::Prune(Box::new(r)))
        }
        other => Err(Error::unsupported(format!("action {other:?}"))),
    }
}

/// Forgets by `rules` among the snapshots of `hostname` (and `backup_name`, when given),
/// then prunes when something was forgotten (not in a dry run).
async fn apply_retention(
    repo: &mut Repository,
    rules: crate::policy::Retention,
    hostname: String,
    backup_name: Option<String>,
    now: Timestamp,
    dry_run: bool,
    ctx: &RunContext,
) -> Result<RetentionResult> {
    let mut fo = ForgetOptions::new(rules, ctx.actor.clone());
    fo.filter = SnapshotFilter {
        hostname: Some(hostname),
        backup_name,
        ..SnapshotFilter::default()
    };
    fo.now = Some(now);
    fo.tz = ctx.tz.clone();
    fo.dry_run = dry_run;
    let forget = crate::engine::forget(repo, &fo).await?;
    let prune = if forget.forgotten.is_empty() || dry_run {
        None
    } else {
        let po = PruneOptions::default();
        Some(crate::engine::prune(repo, &po, &ctx.actor, ctx.progress.clone()).await?)
    };
    Ok(RetentionResult { forget, prune })
}

/// Checks the restored files against upstream's `consistency_checksum`.
pub(crate) async fn verify_checksum(action: &FreezerAction, want: &str) -> Result<()> {
    let target = action.restore_abs_path.clone().expect("validated");
    let what = format!("restore into {target}");
    let got = tokio::task::spawn_blocking(move || {
        consistency_checksum(&FsSource::new(&target, &FsOptions::default())?)
    })
    .await
    .map_err(|e| Error::io(&what, std::io::Error::other(e)))??;
    if !got.eq_ignore_ascii_case(want.trim()) {
        return Err(Error::corrupt(
            what,
            format!(
                "consistency checksum mismatch: the restored files give {got}, expected {}",
                want.trim()
            ),
        ));
    }
    Ok(())
}

/// How one action of a job ended. Serialized (see [`ActionReport::to_json`]) as the
/// outcome's fields (`action`, ...) or `error`, with `attempts`, `complete`, `cancelled` and,
/// for a backup, `backup_metadata`.
#[derive(Debug)]
pub struct ActionReport {
    /// The action's outcome, or the error of its last attempt.
    pub outcome: std::result::Result<ActionOutcome, String>,
    /// Attempts made.
    pub attempts: u32,
    /// Whether the job was cancelled during this action or before it (upstream's `aborted`).
    pub cancelled: bool,
    /// For a backup that wrote a snapshot: upstream's backup metadata document (see
    /// [`backup_metadata`]), what a scheduler posts to freezer-api's `/backups`.
    pub backup_metadata: Option<serde_json::Value>,
}

impl Serialize for ActionReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl ActionReport {
    /// The report as one JSON object: the outcome's fields (`action`, ...) or `error`, then
    /// `attempts`, `complete` (the action did all it was asked to), `cancelled` and, for a
    /// backup, `backup_metadata`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        let mut doc = match &self.outcome {
            Ok(o) => serde_json::to_value(o).unwrap_or_else(
                |e| serde_json::json!({"error": format!("the report does not serialize: {e}")}),
            ),
            Err(e) => serde_json::json!({ "error": e }),
        };
        if let Some(m) = doc.as_object_mut() {
            m.insert("attempts".into(), self.attempts.into());
            m.insert(
                "complete".into(),
                Value::Bool(self.outcome.as_ref().is_ok_and(ActionOutcome::is_complete)),
            );
            m.insert("cancelled".into(), Value::Bool(self.cancelled));
            if let Some(b) = &self.backup_metadata {
                m.insert("backup_metadata".into(), b.clone());
            }
        }
        doc
    }

    fn failed(error: String, attempts: u32, cancelled: bool) -> Self {
        ActionReport {
            outcome: Err(error),
            attempts,
            cancelled,
            backup_metadata: None,
        }
    }
}

/// Runs every action of a job in order, retrying each up to its `max_retries`; stops after a
/// `mandatory` action fails. Returns a report per action run. The options of every action are
/// checked first: when one is invalid (a misspelt option name), none runs, and each report
/// says so. `ctx.cancel` is checked before each action and each attempt, and wakes a wait
/// between attempts: once cancelled, the running action ends with [`Error::Cancelled`] and
/// every later action is reported not run.
pub async fn run_job(job: &dyn JobSpec, ctx: &RunContext) -> Vec<ActionReport> {
    let actions = job.actions();
    for (i, a) in actions.iter().enumerate() {
        if let Err(e) = a.freezer_action.validate_with(ctx.allow_unknown_options) {
            return (0..actions.len())
                .map(|j| {
                    ActionReport::failed(
                        if i == j {
                            e.to_string()
                        } else {
                            format!("not run: the options of action {} are invalid", i + 1)
                        },
                        0,
                        false,
                    )
                })
                .collect();
        }
    }
    let mut with_id;
    let ctx = match (&ctx.job_id, job.job_id()) {
        (None, Some(id)) => {
            with_id = ctx.clone();
            with_id.job_id = Some(id.to_string());
            &with_id
        }
        _ => ctx,
    };
    let mut reports = Vec::new();
    let total = actions.len();
    for a in actions {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let mut attempts = 0;
        let outcome = loop {
            if ctx.cancel.is_cancelled() {
                break Err(Error::Cancelled);
            }
            attempts += 1;
            match run_action(&a.freezer_action, ctx).await {
                Ok(o) => break Ok(o),
                Err(e)
                    if attempts <= a.max_retries
                        && !matches!(
                            e,
                            Error::BadInput { .. }
                                | Error::Unsupported { .. }
                                | Error::WrongKey { .. }
                                | Error::Cancelled
                        ) =>
                {
                    tracing::warn!(
                        "action failed, retrying in {} s: {e}",
                        a.max_retries_interval
                    );
                    let wait = Duration::from_secs(a.max_retries_interval.into());
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = ctx.cancel.cancelled() => {}
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let report = match outcome {
            Ok(o) => {
                let backup_metadata = o.backup_metadata(&a.freezer_action, ctx);
                ActionReport {
                    outcome: Ok(o),
                    attempts,
                    cancelled: false,
                    backup_metadata,
                }
            }
            Err(e) => ActionReport::failed(e.to_string(), attempts, matches!(e, Error::Cancelled)),
        };
        let stop = report.outcome.is_err() && a.mandatory;
        reports.push(report);
        if stop {
            break;
        }
    }
    if ctx.cancel.is_cancelled() {
        while reports.len() < total {
            reports.push(ActionReport::failed(
                "not run: the job was cancelled".into(),
                0,
                true,
            ));
        }
    }
    reports
}

/// Runs a job document for a binding (Python, C): parses it and checks every action (errors
/// name the field, as [`Job::from_json`] and [`Job::validate_with`] say, with
/// `ctx.allow_unknown_options`), runs it with [`run_job`], and returns one report per action
/// ([`ActionReport::to_json`]); the warnings about the document (unknown names allowed) are in
/// the first report's `warnings`.
pub async fn run_job_document(text: &str, ctx: &RunContext) -> Result<Vec<serde_json::Value>> {
    let job = Job::from_json(text)?;
    let warnings = job.validate_with(ctx.allow_unknown_options)?;
    ctx.std_streams
        .refuse_unused(job.job_actions.iter().map(|a| &a.freezer_action))?;
    let reports = run_job(&job, ctx).await;
    let mut docs: Vec<serde_json::Value> = reports.iter().map(ActionReport::to_json).collect();
    if let Some(first) = docs.first_mut() {
        append_warnings(first, warnings);
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_documents_parse_with_field_paths_in_errors() {
        let j = Job::from_json(
            r#"{"job_id":"j1","job_actions":[{"freezer_action":{"action":"backup","path_to_backup":"/d","container":"/c","backup_name":"b"},"max_retries":"3","mandatory":true}],"job_schedule":{"schedule_interval":"1 days"},"client_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(j.job_actions[0].max_retries, 3);
        assert_eq!(j.job_id(), Some("j1"));
        let e = Job::from_json(
            r#"{"job_actions":[{"freezer_action":{"action":"backup","dry_run":[]}}]}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("job_actions[0].freezer_action.dry_run:"),
            "{e}"
        );
        let e = Job::from_json(r#"{"job_actions":[]}"#).unwrap_err();
        assert!(e.to_string().starts_with("job_actions:"), "{e}");
        let e = Job::from_json("{ not json").unwrap_err();
        assert!(e.to_string().contains("malformed JSON"), "{e}");
    }

    #[test]
    fn action_defaults_fill_what_actions_lack() {
        let j = Job::from_json(
            r#"{"action_defaults":{"encrypt_pass_file":"/p","container":"/c","exclude":"*.tmp"},
                "job_actions":[{"freezer_action":{"action":"backup","container":"/mine","exclude":null}},
                               {"freezer_action":{"action":"info"},"action_id":"a1"}]}"#,
        )
        .unwrap();
        let (a, b) = (
            &j.job_actions[0].freezer_action,
            &j.job_actions[1].freezer_action,
        );
        assert_eq!(a.encrypt_pass_file.as_deref(), Some("/p"));
        assert_eq!(
            a.container.as_deref(),
            Some("/mine"),
            "an action's own value stays"
        );
        assert_eq!(a.exclude, ["*.tmp"], "null is filled");
        assert_eq!(b.container.as_deref(), Some("/c"));
        assert!(!j.other.contains_key("action_defaults"));
        assert_eq!(j.job_actions[1].other["action_id"], "a1");
        j.validate_with(false).unwrap_err(); // the backup has no path_to_backup
        let e = Job::from_json(r#"{"action_defaults":[1],"job_actions":[{"freezer_action":{}}]}"#)
            .unwrap_err();
        assert!(e.to_string().starts_with("action_defaults:"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn std_streams_from_fds_read_and_write_the_descriptors_once() {
        use std::io::{Read, Write};
        let (in_r, mut in_w) = std::io::pipe().unwrap();
        let (mut out_r, out_w) = std::io::pipe().unwrap();
        in_w.write_all(b"from a pipe").unwrap();
        drop(in_w);
        let s = StdStreams::from_fds(Some(in_r.into()), Some(out_w.into()));
        let mut got = Vec::new();
        s.take_input().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"from a pipe");
        let mut out = s.take_output().unwrap();
        out.write_all(b"to a pipe").unwrap();
        drop(out);
        let mut got = Vec::new();
        out_r.read_to_end(&mut got).unwrap();
        assert_eq!(
            got, b"to a pipe",
            "the descriptor was closed with the writer"
        );
        let e = s.take_input().err().expect("read once");
        assert!(e.to_string().contains("mode stdin"), "{e}");
        assert!(s.take_output().is_err(), "written once");
        // Only an output: mode stdin fails as with no streams at all.
        let s = StdStreams::from_parts(None, Some(Box::new(std::io::sink())));
        let e = s.take_input().err().expect("no input");
        assert_eq!(e.kind(), crate::ErrorKind::BadInput, "{e}");
        assert!(s.take_output().is_ok());
    }

    #[test]
    fn streams_no_action_uses_are_refused() {
        let action = |j: &str| FreezerAction::from_json(j).unwrap();
        let stdin_backup = action(r#"{"action":"backup","mode":"stdin"}"#);
        let fs_backup = action(r#"{"action":"backup","path_to_backup":"/d"}"#);
        let to_dash = action(r#"{"action":"restore","restore_abs_path":"-"}"#);
        let to_command =
            action(r#"{"action":"restore","restore_abs_path":"-","restore_command":"cat"}"#);
        let both = || {
            StdStreams::from_parts(
                Some(Box::new(std::io::empty())),
                Some(Box::new(std::io::sink())),
            )
        };
        let input = || StdStreams::from_parts(Some(Box::new(std::io::empty())), None);
        let output = || StdStreams::from_parts(None, Some(Box::new(std::io::sink())));
        both().refuse_unused([&stdin_backup, &to_dash]).unwrap();
        input().refuse_unused([&fs_backup, &stdin_backup]).unwrap();
        output().refuse_unused([&to_dash]).unwrap();
        StdStreams::default().refuse_unused([&fs_backup]).unwrap();
        let e = input().refuse_unused([&fs_backup]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::BadInput, "{e}");
        assert!(e.to_string().starts_with("stdin:"), "{e}");
        let e = both().refuse_unused([&stdin_backup]).unwrap_err();
        assert!(e.to_string().starts_with("stdout:"), "{e}");
        let e = output().refuse_unused([&to_command]).unwrap_err();
        assert!(e.to_string().starts_with("stdout:"), "{e}");
        let e = input().refuse_unused([]).unwrap_err();
        assert!(e.to_string().starts_with("stdin:"), "{e}");
    }
}

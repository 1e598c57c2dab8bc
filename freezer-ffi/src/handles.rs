//! Handles: a repository ([`freezer_repository`]), a job ([`freezer_job`]) and a cancel token
//! ([`freezer_cancel`]), each made by a function of this library and released by its `_free`;
//! progress and cancellation through a [`freezer_control`].
//!
//! Ownership: a handle belongs to the caller from the moment a function stores it in its
//! out-pointer until the caller passes it to its `_free` (once). Functions that take a handle
//! borrow it for the call; a handle may be used from several threads at once, except that its
//! `_free` must come after every other call with it has returned.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use freezer_core::engine::{CopyOptions, Progress, ProgressCounts};
use freezer_core::job::{
    Job, JobSpec, RepositoryOptions, RunContext, run_action, run_job_document,
};
use freezer_core::{CancelToken, Error, Id, KdfParams, Passphrase};

use super::{FreezerResult, boundary, context, error_doc, failure, give_ptr, text_arg};

/// How often a running call reports progress to the caller's callback.
const TICK: Duration = Duration::from_millis(100);

/// Receives progress, on the thread that called the running function, about ten times a
/// second: bytes processed, total bytes expected (`UINT64_MAX` while unknown), entries
/// (files, folders) processed. Returning non-zero cancels the call (it stops at its next
/// check, the repository valid, and returns [`FreezerResult::Cancelled`]).
pub type freezer_progress_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        bytes: u64,
        total_bytes: u64,
        entries: u64,
    ) -> c_int,
>;

/// A token that cancels the calls given it (through [`freezer_control::cancel`]), from any
/// thread. Made by [`freezer_cancel_new`], released by [`freezer_cancel_free`].
#[derive(Debug, Default)]
pub struct freezer_cancel {
    token: CancelToken,
}

/// What a caller gives a long call to watch and stop it; every field may be null, and so may
/// the pointer to it.
#[repr(C)]
#[derive(Debug)]
pub struct freezer_control {
    /// Called with progress (see [`freezer_progress_cb`]).
    pub progress: freezer_progress_cb,
    /// Passed to `progress` as is.
    pub progress_data: *mut c_void,
    /// Cancels the call when [`freezer_cancel_request`] is called on it.
    pub cancel: *const freezer_cancel,
}

/// A repository, named by upstream's storage options and opened with its passphrase. Made by
/// [`freezer_repository_init`] or [`freezer_repository_open`], released by
/// [`freezer_repository_free`]. Each call opens the repository afresh.
#[derive(Debug)]
pub struct freezer_repository {
    inner: RepositoryOptions,
}

/// A checked job document. Made by [`freezer_job_new`], released by [`freezer_job_free`].
#[derive(Debug)]
pub struct freezer_job {
    text: String,
    flags: u32,
}

/// A call's control, read from the caller's struct.
struct Control {
    progress: freezer_progress_cb,
    data: *mut c_void,
    cancel: CancelToken,
    counts: Arc<ProgressCounts>,
}

impl Control {
    /// # Safety
    /// `c` is null or points to a valid `freezer_control` whose `cancel` is null or a live
    /// token.
    unsafe fn of(c: *const freezer_control) -> Control {
        // SAFETY: per the contract above.
        let c = unsafe { c.as_ref() };
        let cancel = c
            // SAFETY: per the contract above.
            .and_then(|c| unsafe { c.cancel.as_ref() })
            .map(|t| t.token.clone())
            .unwrap_or_default();
        Control {
            progress: c.and_then(|c| c.progress),
            data: c.map_or(std::ptr::null_mut(), |c| c.progress_data),
            cancel,
            counts: Arc::new(ProgressCounts::default()),
        }
    }

    /// `ctx` watching the token and counting progress.
    fn apply(&self, ctx: &mut RunContext) {
        ctx.cancel = self.cancel.clone();
        ctx.progress = self.progress();
    }

    fn progress(&self) -> Arc<dyn Progress> {
        self.counts.clone()
    }

    /// Runs `work` on the process's runtime, calling the progress callback on this thread
    /// while it runs.
    fn block<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = freezer_core::Result<T>> + Send + 'static,
    ) -> freezer_core::Result<T> {
        let mut stopped = false;
        freezer_core::runtime::block_ticking(work, TICK, || {
            if let (Some(cb), false) = (self.progress, stopped) {
                let (bytes, total, entries) = self.counts.get();
                // SAFETY: the caller's callback, called as freezer_progress_cb says, on the
                // caller's thread, with the caller's data.
                let r = unsafe { cb(self.data, bytes, total.unwrap_or(u64::MAX), entries) };
                if r != 0 {
                    self.cancel.cancel();
                    stopped = true;
                }
            }
        })?
    }
}

/// `value` as the result document.
fn doc(value: &impl serde::Serialize, complete: bool) -> (FreezerResult, String) {
    match serde_json::to_string(value) {
        Ok(s) if complete => (FreezerResult::Ok, s),
        Ok(s) => (FreezerResult::Incomplete, s),
        Err(e) => (FreezerResult::Panic, error_doc("bug", &e.to_string())),
    }
}

/// A JSON object given by the caller (null: empty when `optional`).
fn object_arg(
    text: Option<&str>,
    name: &str,
) -> Result<Map<String, Value>, (FreezerResult, String)> {
    match text.map(serde_json::from_str::<Value>) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(m))) => Ok(m),
        Some(Ok(_)) => Err(failure(&Error::bad_input(name, "must be a JSON object"))),
        Some(Err(e)) => Err(failure(&Error::bad_input(
            name,
            format!("malformed JSON: {e}"),
        ))),
    }
}

/// A passphrase given by the caller (null: none).
fn passphrase_arg(text: Option<&str>) -> Result<Option<Passphrase>, (FreezerResult, String)> {
    text.map(Passphrase::new)
        .transpose()
        .map_err(|e| failure(&e))
}

/// The new passphrase of a key operation (never null).
///
/// # Safety
/// `ptr` is null or a NUL-terminated string.
unsafe fn new_passphrase_arg(ptr: *const c_char) -> Result<Passphrase, (FreezerResult, String)> {
    // SAFETY: per the contract above.
    let text = unsafe { text_arg(ptr, "new_passphrase", false) }?;
    passphrase_arg(text)?.ok_or_else(|| failure(&Error::bad_input("new_passphrase", "is empty")))
}

/// The repository the caller's storage options and passphrase name.
///
/// # Safety
/// `storage_json` and `passphrase` are null or NUL-terminated strings.
unsafe fn repository_arg(
    storage_json: *const c_char,
    passphrase: *const c_char,
    for_init: bool,
) -> Result<RepositoryOptions, (FreezerResult, String)> {
    // SAFETY: per the contract above.
    let storage = unsafe { text_arg(storage_json, "storage_json", false) }?;
    // SAFETY: per the contract above.
    let pass = unsafe { text_arg(passphrase, "passphrase", true) }?;
    let map = object_arg(storage, "storage_json")?;
    let pass = passphrase_arg(pass)?;
    if for_init {
        RepositoryOptions::for_init(map, pass)
    } else {
        RepositoryOptions::new(map, pass)
    }
    .map_err(|e| failure(&e))
}

/// Borrows a handle the caller passed.
fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, (FreezerResult, String)> {
    // SAFETY: the caller passes null or a live handle of this library (each function says so).
    unsafe { ptr.as_ref() }.ok_or_else(|| {
        (
            FreezerResult::InvalidArgument,
            error_doc("bad input", &format!("{name} is null")),
        )
    })
}

fn ctx_of(repo: &RepositoryOptions) -> RunContext {
    repo.context(context())
}

/// Makes a cancel token. Never fails; release it with [`freezer_cancel_free`].
#[unsafe(no_mangle)]
pub extern "C" fn freezer_cancel_new() -> *mut freezer_cancel {
    Box::into_raw(Box::default())
}

/// Asks every call given `cancel` to stop. Callable from any thread (not from a signal
/// handler: there, return non-zero from the progress callback instead). Null is ignored.
///
/// # Safety
/// `cancel` is null or a live token.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_cancel_request(cancel: *const freezer_cancel) {
    // SAFETY: per the contract above.
    if let Some(c) = unsafe { cancel.as_ref() } {
        c.token.cancel();
    }
}

/// Releases a cancel token. Null is ignored.
///
/// # Safety
/// `cancel` is null or a live token no running call uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_cancel_free(cancel: *mut freezer_cancel) {
    if !cancel.is_null() {
        // SAFETY: made by Box::into_raw in freezer_cancel_new; released once, per the contract.
        drop(unsafe { Box::from_raw(cancel) });
    }
}

/// Creates a repository where `storage_json` says (upstream's storage options: `{"container":
/// "/srv/backups"}`, `{"container": "s3://bucket/node1?endpoint=..."}`, `{"storage": "swift",
/// "container": "c"}`...), encrypted with `passphrase` (null: not encrypted, unless the options
/// hold `encrypt_pass_file`). The options may also set what only `init` sets: `pack_size`
/// (MiB, 1 to 512), `kdf_memory` (MiB), `kdf_iterations`, `kdf_parallelism`. On success `*repo` holds the new handle and `*result` the report
/// (`{"id", "created", "existing"}`). [`FreezerResult::AlreadyExists`] where a repository is,
/// [`FreezerResult::BadInput`] where other files are.
///
/// # Safety
/// `storage_json` and `passphrase` are null or NUL-terminated strings; `repo` and `result`
/// are null or valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_init(
    storage_json: *const c_char,
    passphrase: *const c_char,
    repo: *mut *mut freezer_repository,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let inner = repository_arg(storage_json, passphrase, true)?;
            let ctx = ctx_of(&inner);
            let opts = inner.clone();
            let report = Control::none()
                .block(async move { opts.init(&ctx).await })
                .map_err(|e| failure(&e))?;
            give_ptr(repo, Box::into_raw(Box::new(freezer_repository { inner })));
            Ok(doc(&report, true))
        })
    }
}

/// Opens the repository `storage_json` names with `passphrase` (or the options'
/// `encrypt_pass_file`). On success `*repo` holds the handle and `*result` `{"id": ...}`.
/// [`FreezerResult::NotFound`] where none is, [`FreezerResult::WrongKey`] for a wrong passphrase.
///
/// # Safety
/// As [`freezer_repository_init`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_open(
    storage_json: *const c_char,
    passphrase: *const c_char,
    repo: *mut *mut freezer_repository,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let inner = repository_arg(storage_json, passphrase, false)?;
            let ctx = ctx_of(&inner);
            let opts = inner.clone();
            let id = Control::none()
                .block(async move { Ok(opts.open(&ctx).await?.id()) })
                .map_err(|e| failure(&e))?;
            give_ptr(repo, Box::into_raw(Box::new(freezer_repository { inner })));
            Ok(doc(&serde_json::json!({ "id": id }), true))
        })
    }
}

/// Releases a repository handle. Null is ignored.
///
/// # Safety
/// `repo` is null or a live handle no running call uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_free(repo: *mut freezer_repository) {
    if !repo.is_null() {
        // SAFETY: made by Box::into_raw in this module; released once, per the contract.
        drop(unsafe { Box::from_raw(repo) });
    }
}

/// Runs a `freezer_action` on the repository: `action_json` holds `action` (`backup`,
/// `restore`, `info`, `admin`, `check`, `prune`) and its options by upstream's names (the
/// repository's storage options are added; the action's win). `*result` is the outcome, with
/// upstream's metadata keys for a backup (`curr_backup_level`, `fs_real_path`, `client_os`...;
/// the whole document as `backup_metadata`). [`FreezerResult::Incomplete`] when it did not
/// do everything (a restore that left damaged files: the result names them). `control` may
/// be null.
///
/// # Safety
/// `repo` is null or a live handle; `action_json` null or a NUL-terminated string; `control`
/// null or valid for the call (its callback as [`freezer_progress_cb`] says); `result` null or
/// valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_run(
    repo: *const freezer_repository,
    action_json: *const c_char,
    control: *const freezer_control,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let extra = object_arg(text_arg(action_json, "action_json", false)?, "action_json")?;
            let name = extra
                .get("action")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    failure(&Error::bad_input("action", "action_json names no action"))
                })?;
            let (action, warnings) = repo
                .inner
                .action(Some(&name), &extra, true)
                .map_err(|e| failure(&e))?;
            let control = Control::of(control);
            let mut ctx = ctx_of(&repo.inner);
            control.apply(&mut ctx);
            // Never create a repository behind an opened one's back (it was moved or deleted).
            ctx.create_repository = false;
            let (complete, document) = control
                .block(async move {
                    let outcome = run_action(&action, &ctx).await?;
                    Ok((
                        outcome.is_complete(),
                        outcome.to_document(&action, &ctx, warnings),
                    ))
                })
                .map_err(|e| failure(&e))?;
            Ok(doc(&document, complete))
        })
    }
}

/// Runs `op` on the opened repository.
fn with_repo<T, F, Fut>(
    repo: &freezer_repository,
    control: &Control,
    op: F,
) -> Result<T, (FreezerResult, String)>
where
    T: Send + 'static,
    F: FnOnce(freezer_core::repo::Repository, RunContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = freezer_core::Result<T>> + Send,
{
    let inner = repo.inner.clone();
    let mut ctx = ctx_of(&inner);
    control.apply(&mut ctx);
    control
        .block(async move {
            let r = inner.open(&ctx).await?;
            op(r, ctx).await
        })
        .map_err(|e| failure(&e))
}

/// The snapshots, oldest first: `*result` is `{"snapshots": [{"id", "hostname",
/// "backup_name", "level", "time", "time_stamp", "size", "files", "added", "path_to_backup",
/// "parent", "mode"}...], "unreadable": [{"id", "error"}...]}`.
///
/// # Safety
/// `repo` is null or a live handle; `result` null or valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_snapshots(
    repo: *const freezer_repository,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let listing = with_repo(repo, &Control::none(), |r, _| async move {
                let l = r.snapshot_listing().await?;
                let snaps: Vec<_> = l.snapshots.iter().map(|(id, s)| s.summary(*id)).collect();
                let unreadable: Vec<_> = l
                    .unreadable
                    .iter()
                    .map(|u| serde_json::json!({"id": u.id, "error": u.error.to_string()}))
                    .collect();
                Ok(serde_json::json!({"snapshots": snaps, "unreadable": unreadable}))
            })?;
            Ok(doc(&listing, true))
        })
    }
}

/// The keys: `*result` is `{"keys": [{"id", "current", "created", "hostname", "username",
/// "kdf": {"algorithm", "memory_kib", "iterations", "parallelism"}}]}`.
///
/// # Safety
/// As [`freezer_repository_snapshots`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_keys(
    repo: *const freezer_repository,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let keys = with_repo(repo, &Control::none(), |r, _| async move {
                let keys = r.keys().await?;
                Ok(keys
                    .iter()
                    .map(|(id, k, current)| k.summary(id, *current))
                    .collect::<Vec<_>>())
            })?;
            Ok(doc(&serde_json::json!({ "keys": keys }), true))
        })
    }
}

/// Which key operation [`key_op`] runs.
enum KeyOp {
    Add(Passphrase),
    Change(Passphrase),
    Remove(String),
}

/// Runs a key operation; `*result` is `{"id": "<the key added, made or removed>"}`.
fn key_op(
    repo: &freezer_repository,
    op: KeyOp,
) -> Result<(FreezerResult, String), (FreezerResult, String)> {
    let current = repo.inner.passphrase().map_err(|e| failure(&e))?;
    let id: Id = with_repo(repo, &Control::none(), move |r, ctx| async move {
        let current = || {
            current.clone().ok_or_else(|| {
                Error::bad_input(
                    "passphrase",
                    "the repository was opened without a passphrase (it is not encrypted)",
                )
            })
        };
        match op {
            KeyOp::Add(new) => {
                r.add_key(&current()?, &new, KdfParams::default(), &ctx.actor)
                    .await
            }
            KeyOp::Change(new) => {
                r.change_passphrase(&current()?, &new, KdfParams::default(), &ctx.actor)
                    .await
            }
            KeyOp::Remove(prefix) => r.remove_key(&prefix).await,
        }
    })?;
    Ok(doc(&serde_json::json!({ "id": id }), true))
}

/// Adds a key for `new_passphrase` to an encrypted repository opened with a passphrase.
///
/// # Safety
/// `repo` is null or a live handle; `new_passphrase` null or a NUL-terminated string; `result`
/// null or valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_add_key(
    repo: *const freezer_repository,
    new_passphrase: *const c_char,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let new = new_passphrase_arg(new_passphrase)?;
            key_op(repo, KeyOp::Add(new))
        })
    }
}

/// Replaces the key the passphrase opened by one for `new_passphrase` (open the repository
/// again with it).
///
/// # Safety
/// As [`freezer_repository_add_key`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_change_passphrase(
    repo: *const freezer_repository,
    new_passphrase: *const c_char,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let new = new_passphrase_arg(new_passphrase)?;
            key_op(repo, KeyOp::Change(new))
        })
    }
}

/// Removes the key `key_id` (an id or a unique prefix; never the one in use).
///
/// # Safety
/// As [`freezer_repository_add_key`], with `key_id` for `new_passphrase`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_remove_key(
    repo: *const freezer_repository,
    key_id: *const c_char,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let id = text_arg(key_id, "key_id", false)?
                .unwrap_or_default()
                .to_string();
            key_op(repo, KeyOp::Remove(id))
        })
    }
}

/// Rebuilds the repository's index from its packs' headers (not cancellable: it runs to its
/// end). `*result` is the report.
///
/// # Safety
/// `repo` is null or a live handle; `control` as [`freezer_repository_run`] takes it; `result`
/// null or valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_repair_index(
    repo: *const freezer_repository,
    control: *const freezer_control,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let control = Control::of(control);
            let progress = control.progress();
            let report = with_repo(repo, &control, move |mut r, ctx| async move {
                freezer_core::engine::repair_index(&mut r, &ctx.actor, progress).await
            })?;
            let complete = report.is_complete();
            Ok(doc(&report, complete))
        })
    }
}

/// Copies snapshots into `target`, another repository: all, or as `options_json` (null, or
/// `{"snapshots": ["id"...], "backup_name": "...", "hostname": "..."}`) says; what the target
/// has already is skipped. `*result` is the report.
///
/// # Safety
/// `repo` and `target` are null or live handles; `options_json` null or a NUL-terminated
/// string; `control` and `result` as [`freezer_repository_run`] takes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repository_copy_to(
    repo: *const freezer_repository,
    target: *const freezer_repository,
    options_json: *const c_char,
    control: *const freezer_control,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let repo = handle(repo, "repo")?;
            let target = handle(target, "target")?.inner.clone();
            let o = object_arg(
                text_arg(options_json, "options_json", true)?,
                "options_json",
            )?;
            let bad = |what: &str| failure(&Error::bad_input("options_json", what.to_string()));
            let mut opts = CopyOptions::new(freezer_core::repo::Actor::current());
            for (k, v) in &o {
                match (k.as_str(), v) {
                    ("snapshots", Value::Array(ids)) => {
                        for id in ids {
                            let id = id
                                .as_str()
                                .ok_or_else(|| bad("snapshots: ids are strings"))?;
                            opts.snapshots
                                .push(Id::from_hex(id).map_err(|e| failure(&e))?);
                        }
                    }
                    ("backup_name", Value::String(s)) => opts.backup_name = Some(s.clone()),
                    ("hostname", Value::String(s)) => opts.hostname = Some(s.clone()),
                    _ => {
                        return Err(bad(&format!(
                            "unknown or mistyped option {k} (snapshots, backup_name, hostname)"
                        )));
                    }
                }
            }
            let control = Control::of(control);
            let progress = control.progress();
            let cancel = control.cancel.clone();
            let target_ctx = ctx_of(&target);
            let report = with_repo(repo, &control, move |mut src, _| async move {
                let mut dst = target.open(&target_ctx).await?;
                // A copy stopped midway is a copy killed midway: the target stays valid.
                tokio::select! {
                    r = freezer_core::engine::copy(&mut src, &mut dst, &opts, progress) => r,
                    _ = cancel.cancelled() => Err(Error::Cancelled),
                }
            })?;
            let complete = report.is_complete();
            Ok(doc(&report, complete))
        })
    }
}

/// Restores a lost or damaged config (and its copies) of the repository `storage_json` names,
/// from a copy, another of its storages, or the key `passphrase` opens; never overwrites an
/// intact config. [`FreezerResult::Incomplete`] when a storage could not be repaired.
///
/// # Safety
/// As [`freezer_repository_init`], without `repo`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_repair_config(
    storage_json: *const c_char,
    passphrase: *const c_char,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let inner = repository_arg(storage_json, passphrase, false)?;
            let ctx = ctx_of(&inner);
            let report = Control::none()
                .block(async move {
                    let (action, _) = inner.action(None, &Map::new(), false)?;
                    let sinks = freezer_core::job::sinks_of(&action, &ctx.env)?;
                    let pass = inner.passphrase()?;
                    freezer_core::engine::repair_config(sinks, pass.as_ref()).await
                })
                .map_err(|e| failure(&e))?;
            let complete = report.is_complete();
            Ok(doc(&report, complete))
        })
    }
}

/// Checks a job document (upstream's job: `job_actions`...; errors name the field) and makes
/// a handle to run it; `flags` as [`super::freezer_run_job`] takes them.
///
/// # Safety
/// `job_json` is null or a NUL-terminated string; `job` and `result` null or valid for one
/// pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_job_new(
    job_json: *const c_char,
    flags: u32,
    job: *mut *mut freezer_job,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let text = text_arg(job_json, "job_json", false)?.unwrap_or_default();
            let parsed = Job::from_json(text).map_err(|e| failure(&e))?;
            let warnings = parsed
                .validate_with(flags & super::FREEZER_JOB_ALLOW_UNKNOWN_OPTIONS != 0)
                .map_err(|e| failure(&e))?;
            give_ptr(
                job,
                Box::into_raw(Box::new(freezer_job {
                    text: text.to_string(),
                    flags,
                })),
            );
            Ok(doc(
                &serde_json::json!({"job_id": parsed.job_id(), "actions": parsed.job_actions.len(), "warnings": warnings}),
                true,
            ))
        })
    }
}

/// Runs a job: `*result` is one report per action, as [`super::freezer_run_job`] gives;
/// [`FreezerResult::Incomplete`] when an action failed or did not complete.
///
/// # Safety
/// `job` is null or a live handle; `control` and `result` as [`freezer_repository_run`]
/// takes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_job_run(
    job: *const freezer_job,
    control: *const freezer_control,
    result: *mut *mut c_char,
) -> FreezerResult {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        boundary(result, || {
            let job = handle(job, "job")?;
            let control = Control::of(control);
            let mut ctx = super::job_context(job.flags);
            control.apply(&mut ctx);
            let text = job.text.clone();
            let reports = control
                .block(async move { run_job_document(&text, &ctx).await })
                .map_err(|e| failure(&e))?;
            let complete = reports.iter().all(|r| r["complete"] == true);
            Ok(doc(&reports, complete))
        })
    }
}

/// Releases a job handle. Null is ignored.
///
/// # Safety
/// `job` is null or a live handle no running call uses.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn freezer_job_free(job: *mut freezer_job) {
    if !job.is_null() {
        // SAFETY: made by Box::into_raw in freezer_job_new; released once, per the contract.
        drop(unsafe { Box::from_raw(job) });
    }
}

impl Control {
    /// No callback, a token nobody else holds.
    fn none() -> Control {
        // SAFETY: null is allowed.
        unsafe { Control::of(std::ptr::null()) }
    }
}

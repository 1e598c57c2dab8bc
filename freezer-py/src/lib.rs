//! `import freezer_py`: freezer-rs for Python scripts and OpenStack tooling.
//!
//! Options are upstream's `freezer_action` names, as keyword arguments of the classes
//! (`Repository`, `Storage`, `Snapshot`, `Job`) or as the dict the functions (`run_action`,
//! `run_job`) take; results come back as dicts holding the keys upstream's agent writes with
//! `--metadata-out`. Every call runs on one runtime per process with the GIL released; Ctrl-C,
//! a `CancelToken` or a raising `progress` callable stops it with the repository valid; each
//! long call has an `_async` twin returning an asyncio awaitable. Errors are exceptions in one
//! hierarchy under `FreezerError`. Nothing here holds logic of its own: it maps Python to
//! freezer-core and back.

mod classes;
mod errors;
mod run;
mod streams;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::{Map, Value};

use freezer_core::Passphrase;
use freezer_core::job::{Action, FreezerAction, RunContext, run_action, run_job_document};

use errors::{bad_input, exceptions, to_py};
use run::{Control, PyCancelToken, Reply, call};

/// This process's context, with the credential variables of its environment.
pub(crate) fn context(passphrase: Option<Passphrase>) -> RunContext {
    let mut ctx = RunContext::current();
    ctx.env = freezer_core::job::credential_environment(std::env::vars_os());
    ctx.passphrase = passphrase;
    ctx
}

/// A `str` or an `os.PathLike` as a string.
pub(crate) fn fspath(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = obj.extract::<String>() {
        return Ok(s);
    }
    let p = obj.py().import("os")?.call_method1("fspath", (obj,))?;
    p.extract::<String>()
        .map_err(|_| bad_input(obj.py(), "a path must be a str or an os.PathLike of str"))
}

/// The text of a document given as a dict or as a JSON string.
pub(crate) fn document_text(
    py: Python<'_>,
    doc: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<String> {
    if let Ok(s) = doc.extract::<String>() {
        return Ok(s);
    }
    if doc.is_instance_of::<PyDict>() {
        // Paths (`pathlib.Path`) are written as their strings.
        let kwargs = PyDict::new(py);
        kwargs.set_item("default", py.import("os")?.getattr("fspath")?)?;
        return py
            .import("json")?
            .call_method("dumps", (doc,), Some(&kwargs))
            .map_err(|e| bad_input(py, format!("{what}: {}", e.value(py))))?
            .extract();
    }
    Err(bad_input(
        py,
        format!("{what} must be a dict or a JSON string"),
    ))
}

/// Options given as a dict (keyword arguments) or a JSON string, as a JSON object.
pub(crate) fn options_map(
    py: Python<'_>,
    options: Option<&Bound<'_, PyAny>>,
) -> PyResult<Map<String, Value>> {
    let Some(options) = options else {
        return Ok(Map::new());
    };
    let text = document_text(py, options, "options")?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_input(py, "options must be a JSON object")),
        Err(e) => Err(bad_input(py, format!("options: malformed JSON: {e}"))),
    }
}

/// Runs `action` in `ctx`; the result is the outcome with upstream's metadata keys. One that
/// did not complete everything raises `IncompleteError(message, result)` unless `partial` is
/// `Some(true)`.
pub(crate) fn run_action_work(
    py: Python<'_>,
    control: Control,
    asynchronous: bool,
    action: FreezerAction,
    ctx: RunContext,
    warnings: Vec<String>,
    partial: Option<bool>,
) -> PyResult<Py<PyAny>> {
    let message = if action.action() == Action::Restore {
        "the restore left damaged files behind (the result names them); \
         accept_partial=True returns the result instead"
    } else {
        "the action did not complete everything (the result says what)"
    };
    call(py, control, asynchronous, async move {
        let outcome = run_action(&action, &ctx).await?;
        let complete = outcome.is_complete() || partial == Some(true);
        let doc = outcome.to_document(&action, &ctx, warnings);
        Ok(Reply::doc(doc, complete, message))
    })
}

/// Runs the job document `text`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_job_work(
    py: Python<'_>,
    control: Control,
    asynchronous: bool,
    text: String,
    allow_unknown_options: bool,
    allow_exec: bool,
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let mut ctx = context(None);
    ctx.allow_unknown_options = allow_unknown_options;
    ctx.allow_exec = allow_exec;
    ctx.exec_env = freezer_core::job::exec_environment(std::env::vars());
    ctx.std_streams = streams::std_streams(stdin, stdout)?;
    control.apply(&mut ctx);
    call(py, control, asynchronous, async move {
        Ok(Reply::List(run_job_document(&text, &ctx).await?))
    })
}

/// The action `options` name, checked: every name known (or warned about with
/// `allow_unknown_options`), every value valid.
fn checked_action(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
) -> PyResult<(FreezerAction, Vec<String>)> {
    let text = document_text(py, options, "options")?;
    let action = FreezerAction::from_json(&text).map_err(to_py)?;
    let warnings = action.validate_with(allow_unknown_options).map_err(to_py)?;
    Ok((action, warnings))
}

#[allow(clippy::too_many_arguments)]
fn run_action_impl(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
    asynchronous: bool,
) -> PyResult<Py<PyAny>> {
    let (action, warnings) = checked_action(py, options, allow_unknown_options)?;
    let control = Control::new(py, progress, cancel)?;
    let mut ctx = context(None);
    ctx.allow_unknown_options = allow_unknown_options;
    ctx.std_streams = streams::std_streams(stdin, stdout)?;
    ctx.std_streams.refuse_unused([&action]).map_err(to_py)?;
    control.apply(&mut ctx);
    run_action_work(py, control, asynchronous, action, ctx, warnings, None)
}

/// Runs one action (`backup`, `restore`, `info`, `admin`, and the extensions `check` and
/// `prune`) given upstream's `freezer_action` options (a dict or a JSON string); returns the
/// result as a dict, with upstream's metadata keys for a backup (`curr_backup_level`,
/// `fs_real_path`, `client_os`..., the whole document as `backup_metadata`; `metadata_out`
/// writes it to a file as upstream's agent does).
#[pyfunction]
#[pyo3(name = "run_action", signature = (options, allow_unknown_options = false, *, stdin = None, stdout = None, progress = None, cancel = None))]
#[allow(clippy::too_many_arguments)]
fn run_action_py(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
) -> PyResult<Py<PyAny>> {
    run_action_impl(
        py,
        options,
        allow_unknown_options,
        stdin,
        stdout,
        progress,
        cancel,
        false,
    )
}

/// `run_action`, awaitable (no `stdin`/`stdout`).
#[pyfunction]
#[pyo3(signature = (options, allow_unknown_options = false, *, progress = None, cancel = None))]
fn run_action_async(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
) -> PyResult<Py<PyAny>> {
    run_action_impl(
        py,
        options,
        allow_unknown_options,
        None,
        None,
        progress,
        cancel,
        true,
    )
}

/// Runs a job document (upstream's: `job_actions`...), a dict or a JSON string; returns one
/// dict per action.
#[pyfunction]
#[pyo3(signature = (job, *, allow_unknown_options = false, allow_exec = true, stdin = None, stdout = None, progress = None, cancel = None))]
#[allow(clippy::too_many_arguments)]
fn run_job(
    py: Python<'_>,
    job: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    allow_exec: bool,
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
) -> PyResult<Py<PyAny>> {
    let text = document_text(py, job, "job")?;
    let control = Control::new(py, progress, cancel)?;
    run_job_work(
        py,
        control,
        false,
        text,
        allow_unknown_options,
        allow_exec,
        stdin,
        stdout,
    )
}

/// `run_job`, awaitable (no `stdin`/`stdout`).
#[pyfunction]
#[pyo3(signature = (job, *, allow_unknown_options = false, allow_exec = true, progress = None, cancel = None))]
fn run_job_async(
    py: Python<'_>,
    job: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    allow_exec: bool,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
) -> PyResult<Py<PyAny>> {
    let text = document_text(py, job, "job")?;
    let control = Control::new(py, progress, cancel)?;
    run_job_work(
        py,
        control,
        true,
        text,
        allow_unknown_options,
        allow_exec,
        None,
        None,
    )
}

/// Creates a repository in `container` (a folder or a storage URL: `s3://bucket/prefix`,
/// `swift://container/prefix`, `ssh://host/path`...; or upstream's `storage=` and options);
/// encrypted with `passphrase` or the first line of `encrypt_pass_file`; `pack_size` (MiB),
/// `kdf_memory` (MiB), `kdf_iterations` and `kdf_parallelism` set its layout. Returns
/// `{"id": ..., "created": [...], "existing": [...]}`.
#[pyfunction]
#[pyo3(signature = (container = None, encrypt_pass_file = None, *, passphrase = None, **options))]
fn init(
    py: Python<'_>,
    container: Option<&Bound<'_, PyAny>>,
    encrypt_pass_file: Option<&Bound<'_, PyAny>>,
    passphrase: Option<String>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let mut map = options_map(py, options.map(|o| o.as_any()))?;
    for (name, value) in [
        ("container", container),
        ("encrypt_pass_file", encrypt_pass_file),
    ] {
        if let Some(v) = value
            && map.insert(name.into(), fspath(v)?.into()).is_some()
        {
            return Err(bad_input(py, format!("{name} is given twice")));
        }
    }
    let pass = passphrase.map(Passphrase::new).transpose().map_err(to_py)?;
    let repo = freezer_core::job::RepositoryOptions::for_init(map, pass).map_err(to_py)?;
    let ctx = repo.context(context(None));
    call(py, Control::none(), false, async move {
        let report = repo.init(&ctx).await?;
        Reply::of(&report, true, "")
    })
}

/// A repository named by `options` (a dict of upstream's storage options), for the functions
/// that predate the classes.
fn repository_of<'py>(
    py: Python<'py>,
    options: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, classes::PyRepository>> {
    let map = options_map(py, Some(options))?;
    Bound::new(py, classes::PyRepository::from_options(map)?)
}

/// Verifies the repository `options` name; `Repository.check`.
#[pyfunction]
#[pyo3(signature = (options, read_data = None, *, progress = None, cancel = None))]
fn check(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    read_data: Option<String>,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
) -> PyResult<Py<PyAny>> {
    repository_of(py, options)?
        .get()
        .check_impl(py, read_data, progress, cancel, false)
}

/// Removes unreferenced data from the repository `options` name; `Repository.prune`.
#[pyfunction]
#[pyo3(signature = (options, max_unused = None, dry_run = false, *, progress = None, cancel = None))]
fn prune(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    max_unused: Option<&Bound<'_, PyAny>>,
    dry_run: bool,
    progress: Option<&Bound<'_, PyAny>>,
    cancel: Option<&Bound<'_, PyCancelToken>>,
) -> PyResult<Py<PyAny>> {
    repository_of(py, options)?
        .get()
        .prune_impl(py, max_unused, dry_run, progress, cancel, false)
}

/// Rebuilds the index of the repository `options` name; `Repository.repair_index`.
#[pyfunction]
#[pyo3(signature = (options, *, progress = None))]
fn repair_index(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    repository_of(py, options)?
        .get()
        .repair_index_impl(py, progress, false)
}

/// Restores a lost or damaged config (and its copies) of the repository `options` name, from
/// a copy, another of its storages, or the key the passphrase opens; never overwrites an intact
/// config. Raises `IncompleteError(message, report)` when a storage could not be repaired.
#[pyfunction]
#[pyo3(signature = (options, *, passphrase = None))]
fn repair_config(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    passphrase: Option<String>,
) -> PyResult<Py<PyAny>> {
    let text = document_text(py, options, "options")?;
    let action = FreezerAction::from_json(&text).map_err(to_py)?;
    action.check_option_names(false).map_err(to_py)?;
    let pass = passphrase.map(Passphrase::new).transpose().map_err(to_py)?;
    let ctx = context(pass);
    call(py, Control::none(), false, async move {
        let sinks = freezer_core::job::sinks_of(&action, &ctx.env)?;
        let pass = ctx.passphrase_for(&action)?;
        let report = freezer_core::engine::repair_config(sinks, pass.as_ref()).await?;
        Reply::of(
            &report,
            report.is_complete(),
            "the config could not be repaired on every storage",
        )
    })
}

/// The version of freezer-rs (also `freezer_py.__version__`).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn freezer_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(run_action_py, m)?)?;
    m.add_function(wrap_pyfunction!(run_action_async, m)?)?;
    m.add_function(wrap_pyfunction!(run_job, m)?)?;
    m.add_function(wrap_pyfunction!(run_job_async, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(repair_index, m)?)?;
    m.add_function(wrap_pyfunction!(repair_config, m)?)?;
    m.add_class::<PyCancelToken>()?;
    m.add_class::<classes::Storage>()?;
    m.add_class::<classes::PyRepository>()?;
    m.add_class::<classes::Snapshot>()?;
    m.add_class::<classes::Job>()?;
    for (name, class) in exceptions(py)?.named() {
        m.add(name, class.clone_ref(py))?;
    }
    Ok(())
}

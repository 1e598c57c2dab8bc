//! `import freezer_py`: freezer-rs for Python scripts and OpenStack tooling.
//!
//! Options are upstream's `freezer_action` names, as a dict (or a JSON string); results come
//! back as dicts. The GIL is released while the library works. Errors are exceptions in one
//! hierarchy under `FreezerError`; a missing thing is also a `FileNotFoundError`, a wrong key
//! a `PermissionError`, bad input a `ValueError`. `run_action` and `run_job` take the streams
//! of mode `stdin` and of a restore to `-` (`stdin=`, `stdout=`: an int file descriptor or a binary file object).

mod streams;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use freezer_core::job::{FreezerAction, RunContext, append_warnings, run_action};
use freezer_core::repo::{Actor, InitOptions, Repository};
use freezer_core::{Error, ErrorKind, Passphrase};

/// The exception classes, made once per interpreter:
/// `FreezerError(Exception)`, `NotFoundError(FreezerError, FileNotFoundError)`,
/// `WrongKeyError(FreezerError, PermissionError)`, `CorruptError(FreezerError)`,
/// `BadInputError(FreezerError, ValueError)`, `IncompleteError(FreezerError)`.
struct Exceptions {
    base: Py<PyType>,
    not_found: Py<PyType>,
    wrong_key: Py<PyType>,
    corrupt: Py<PyType>,
    bad_input: Py<PyType>,
    incomplete: Py<PyType>,
}

static EXCEPTIONS: PyOnceLock<Exceptions> = PyOnceLock::new();

fn exceptions(py: Python<'_>) -> PyResult<&Exceptions> {
    EXCEPTIONS.get_or_try_init(py, || {
        let builtins = py.import("builtins")?;
        let make = |name: &str, bases: Vec<Bound<'_, PyAny>>, doc: &str| -> PyResult<Py<PyType>> {
            let ns = PyDict::new(py);
            ns.set_item("__doc__", doc)?;
            ns.set_item("__module__", "freezer_py")?;
            let t = builtins
                .getattr("type")?
                .call1((name, PyTuple::new(py, bases)?, ns))?;
            Ok(t.cast_into::<PyType>()?.unbind())
        };
        let b = |n: &str| builtins.getattr(n);
        let base = make(
            "FreezerError",
            vec![b("Exception")?],
            "Base of every freezer_py error.",
        )?;
        let base_any = base.bind(py).clone().into_any();
        Ok(Exceptions {
            not_found: make(
                "NotFoundError",
                vec![base_any.clone(), b("FileNotFoundError")?],
                "A repository, snapshot or path does not exist.",
            )?,
            wrong_key: make(
                "WrongKeyError",
                vec![base_any.clone(), b("PermissionError")?],
                "No key of the repository opens with the passphrase.",
            )?,
            corrupt: make(
                "CorruptError",
                vec![base_any.clone()],
                "Stored data is damaged.",
            )?,
            bad_input: make(
                "BadInputError",
                vec![base_any.clone(), b("ValueError")?],
                "An option or document is invalid.",
            )?,
            incomplete: make(
                "IncompleteError",
                vec![base_any],
                "The action ran but did not do everything; args[1] is the result.",
            )?,
            base,
        })
    })
}

fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let ex = match exceptions(py) {
            Ok(ex) => ex,
            Err(err) => return err,
        };
        let class = match e.kind() {
            ErrorKind::NotFound => &ex.not_found,
            ErrorKind::WrongKey | ErrorKind::Permission => &ex.wrong_key,
            ErrorKind::Corrupt => &ex.corrupt,
            ErrorKind::BadInput | ErrorKind::Unsupported => &ex.bad_input,
            _ => &ex.base,
        };
        PyErr::from_type(class.bind(py).clone(), e.to_string())
    })
}

fn runtime() -> PyResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| to_py(Error::io("the runtime", e)))
}

fn options_json(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = options.extract::<String>() {
        return Ok(s);
    }
    if options.is_instance_of::<PyDict>() {
        return py
            .import("json")?
            .call_method1("dumps", (options,))?
            .extract();
    }
    Err(PyValueError::new_err(
        "options must be a dict of freezer_action options or a JSON string",
    ))
}

/// Runs one action (`backup`, `restore`, `info`, `admin`, `check`, `prune`) given upstream's
/// `freezer_action` options; returns the result as a dict. A backup into a place that holds
/// nothing creates the repository there. Raises `IncompleteError(message, result)` when the
/// action ran but did not complete everything. An option name this release does not know
/// raises `BadInputError` naming the closest known one, unless `allow_unknown_options`: then
/// the result's `warnings` name the options ignored. `stdin` (an int file descriptor or a
/// binary file object with `read(n)`) is what a backup in mode `stdin` reads to its end;
/// `stdout` (a descriptor or an object with `write(b)`) is where a restore to `-` writes.
/// Descriptors are duplicated, never closed. A stream the action would not use (`stdin` for
/// anything but a backup in mode `stdin`, `stdout` for anything but a restore to `-`) raises
/// `BadInputError` before anything runs. An exception raised by the object's `read` or
/// `write` fails the action (a backup then records no snapshot), its message naming the
/// stream.
#[pyfunction]
#[pyo3(signature = (options, allow_unknown_options = false, *, stdin = None, stdout = None))]
fn run_action_py(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let text = options_json(py, options)?;
    let action = FreezerAction::from_json(&text).map_err(to_py)?;
    let warnings = action.validate_with(allow_unknown_options).map_err(to_py)?;
    let mut ctx = context();
    ctx.allow_unknown_options = allow_unknown_options;
    ctx.std_streams = streams::std_streams(stdin, stdout)?;
    ctx.std_streams.refuse_unused([&action]).map_err(to_py)?;
    let outcome = py.detach(|| {
        runtime()?
            .block_on(run_action(&action, &ctx))
            .map_err(to_py)
    })?;
    let complete = outcome.is_complete();
    let mut doc =
        serde_json::to_value(&outcome).map_err(|e| PyValueError::new_err(e.to_string()))?;
    append_warnings(&mut doc, warnings);
    to_result(py, &doc, complete, "the action did not complete everything")
}

/// Runs a job document (upstream's job: `job_actions`, each a `freezer_action` with
/// `max_retries`, `max_retries_interval`, `mandatory`; `action_defaults`...), given as a dict
/// or a JSON string; returns one dict per action: the outcome's fields or `error`, with
/// `attempts`, `complete`, `cancelled` and, for a backup, `backup_metadata`. A malformed
/// document, a misspelt or wrongly typed field raises `BadInputError` naming the field before
/// any action runs. `allow_exec=False` refuses `exec` actions. The GIL is released while it
/// runs; Ctrl-C (KeyboardInterrupt) cancels the running action, which stops within seconds
/// leaving the repository valid, then raises. `stdin` and `stdout` are as `run_action`'s:
/// the first action in mode `stdin` reads `stdin`, the first restore to `-` writes `stdout`.
#[pyfunction]
#[pyo3(signature = (job, *, allow_unknown_options = false, allow_exec = true, stdin = None, stdout = None))]
fn run_job(
    py: Python<'_>,
    job: &Bound<'_, PyAny>,
    allow_unknown_options: bool,
    allow_exec: bool,
    stdin: Option<&Bound<'_, PyAny>>,
    stdout: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    let text = if let Ok(s) = job.extract::<String>() {
        s
    } else if job.is_instance_of::<PyDict>() {
        py.import("json")?
            .call_method1("dumps", (job,))?
            .extract()?
    } else {
        return Err(PyValueError::new_err(
            "job must be a dict (a job document) or a JSON string",
        ));
    };
    let mut ctx = context();
    ctx.allow_unknown_options = allow_unknown_options;
    ctx.allow_exec = allow_exec;
    ctx.exec_env = freezer_core::job::exec_environment(std::env::vars());
    ctx.std_streams = streams::std_streams(stdin, stdout)?;
    let cancel = ctx.cancel.clone();
    let rt = runtime()?;
    let mut task = rt.spawn(async move { freezer_core::job::run_job_document(&text, &ctx).await });
    let (done, interrupted) = py.detach(|| {
        rt.block_on(async {
            loop {
                tokio::select! {
                    r = &mut task => return (r, None),
                    _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                        // Signal handlers run only with the GIL, on the main thread.
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            cancel.cancel();
                            return ((&mut task).await, Some(e));
                        }
                    }
                }
            }
        })
    });
    // A blocking task still running (a read of a Python `stdin`) may need the GIL to end:
    // the runtime, which waits for it, is dropped without it.
    py.detach(move || drop(rt));
    if let Some(e) = interrupted {
        return Err(e);
    }
    let docs = done
        .map_err(|e| to_py(Error::io("the job", std::io::Error::other(e))))?
        .map_err(to_py)?;
    let text = serde_json::to_string(&docs).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// `report` as a dict; raises `IncompleteError(message, dict)` unless `complete`.
fn to_result(
    py: Python<'_>,
    report: &impl serde::Serialize,
    complete: bool,
    message: &str,
) -> PyResult<Py<PyAny>> {
    let doc = serde_json::to_string(report).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let result = py.import("json")?.call_method1("loads", (doc,))?.unbind();
    if !complete {
        let class = exceptions(py)?.incomplete.bind(py).clone();
        return Err(PyErr::from_type(class, (message.to_string(), result)));
    }
    Ok(result)
}

/// Creates a repository in `container` (a folder, or a storage URL: `s3://bucket/prefix`,
/// `swift://container/prefix`, `ssh://host/path`...); encrypted when `encrypt_pass_file` names a
/// file whose first line is the passphrase. Returns `{"id": ..., "created": [...]}`.
#[pyfunction]
#[pyo3(signature = (container, encrypt_pass_file = None))]
fn init(
    py: Python<'_>,
    container: String,
    encrypt_pass_file: Option<String>,
) -> PyResult<Py<PyAny>> {
    let report = py.detach(|| -> PyResult<_> {
        let pass = encrypt_pass_file
            .map(|p| Passphrase::from_file(std::path::Path::new(&p)))
            .transpose()
            .map_err(to_py)?;
        // A storage URL (`s3://bucket/node1`, `swift://c/p`, `ssh://host/path`) or a folder.
        let spec = freezer_core::job::StorageSpec::from_url(&container).map_err(to_py)?;
        spec.validate("container").map_err(to_py)?;
        let sinks = vec![spec.open(&context().env, (None, None)).map_err(to_py)?];
        runtime()?
            .block_on(Repository::init(
                sinks,
                InitOptions::new(pass, Actor::current()),
            ))
            .map_err(to_py)
    })?;
    let doc = serde_json::to_string(&report).map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (doc,))?.unbind())
}

/// Runs a lifecycle operation on the repository `options` name; returns its report as a dict,
/// or raises `IncompleteError(message, report)` when `complete` says it is not.
fn lifecycle<T, F, Fut>(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    op: F,
    complete: fn(&T) -> bool,
) -> PyResult<Py<PyAny>>
where
    T: serde::Serialize,
    F: FnOnce(Repository) -> Fut + Send,
    Fut: std::future::Future<Output = freezer_core::Result<T>>,
    T: Send,
{
    let text = options_json(py, options)?;
    let action = FreezerAction::from_json(&text).map_err(to_py)?;
    // A misspelt option (a passphrase file) is refused here too.
    action.check_option_names(false).map_err(to_py)?;
    let report = py.detach(|| -> PyResult<T> {
        runtime()?
            .block_on(async {
                let repo = freezer_core::job::open_repository(&action, &context()).await?;
                op(repo).await
            })
            .map_err(to_py)
    })?;
    to_result(
        py,
        &report,
        complete(&report),
        "the repository is damaged or the operation incomplete",
    )
}

/// Verifies the whole repository that `options` name (`container`, `storage`,
/// `encrypt_pass_file`...). `read_data`: `None` (structure only), `"all"`, `"n/m"` or `"x%"`.
/// Returns the report; raises `IncompleteError(message, report)` when something is damaged.
#[pyfunction]
#[pyo3(signature = (options, read_data = None))]
fn check(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    read_data: Option<String>,
) -> PyResult<Py<PyAny>> {
    let read_data: freezer_core::engine::ReadData = read_data
        .as_deref()
        .unwrap_or("none")
        .parse()
        .map_err(to_py)?;
    lifecycle(
        py,
        options,
        move |mut repo| async move {
            let mut opts = freezer_core::engine::CheckOptions::new(Actor::current());
            opts.read_data = read_data;
            freezer_core::engine::check(
                &mut repo,
                &opts,
                std::sync::Arc::new(freezer_core::engine::NoProgress),
            )
            .await
        },
        |r: &freezer_core::engine::CheckReport| r.is_ok(),
    )
}

/// Removes the data no snapshot references from the repository `options` name; packs more
/// than `max_unused` (a fraction) unused are repacked. Returns the report.
#[pyfunction]
#[pyo3(signature = (options, max_unused = 0.05, dry_run = false))]
fn prune(
    py: Python<'_>,
    options: &Bound<'_, PyAny>,
    max_unused: f64,
    dry_run: bool,
) -> PyResult<Py<PyAny>> {
    lifecycle(
        py,
        options,
        move |mut repo| async move {
            let opts = freezer_core::engine::PruneOptions {
                max_unused,
                dry_run,
            };
            freezer_core::engine::prune(
                &mut repo,
                &opts,
                &Actor::current(),
                std::sync::Arc::new(freezer_core::engine::NoProgress),
            )
            .await
        },
        |r: &freezer_core::engine::PruneReport| r.is_complete(),
    )
}

/// Rebuilds the index of the repository `options` name from its packs. Returns the report.
#[pyfunction]
fn repair_index(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    lifecycle(
        py,
        options,
        |mut repo| async move {
            freezer_core::engine::repair_index(
                &mut repo,
                &Actor::current(),
                std::sync::Arc::new(freezer_core::engine::NoProgress),
            )
            .await
        },
        |r: &freezer_core::engine::RepairReport| r.is_complete(),
    )
}

/// Restores a lost or damaged config (and its copies) of the repository `options` name, from
/// a copy, another of its storages, or the key the passphrase opens; never overwrites an intact
/// config. Returns the report; raises `IncompleteError(message, report)` when a storage could
/// not be repaired.
#[pyfunction]
fn repair_config(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let text = options_json(py, options)?;
    let action = FreezerAction::from_json(&text).map_err(to_py)?;
    let report = py.detach(|| -> PyResult<_> {
        let sinks = freezer_core::job::sinks_of(&action, &context().env).map_err(to_py)?;
        let pass = freezer_core::job::passphrase_of(&action).map_err(to_py)?;
        runtime()?
            .block_on(freezer_core::engine::repair_config(sinks, pass.as_ref()))
            .map_err(to_py)
    })?;
    to_result(
        py,
        &report,
        report.is_complete(),
        "the config could not be repaired on every storage",
    )
}

/// The version of freezer-rs.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn freezer_py(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(run_job, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(repair_index, m)?)?;
    m.add_function(wrap_pyfunction!(repair_config, m)?)?;
    let run = wrap_pyfunction!(run_action_py, m)?;
    m.add("run_action", run)?;
    let ex = exceptions(py)?;
    m.add("FreezerError", ex.base.clone_ref(py))?;
    m.add("NotFoundError", ex.not_found.clone_ref(py))?;
    m.add("WrongKeyError", ex.wrong_key.clone_ref(py))?;
    m.add("CorruptError", ex.corrupt.clone_ref(py))?;
    m.add("BadInputError", ex.bad_input.clone_ref(py))?;
    m.add("IncompleteError", ex.incomplete.clone_ref(py))?;
    Ok(())
}

/// This process's context, with the credential variables of its environment.
fn context() -> RunContext {
    let mut ctx = RunContext::current();
    ctx.env = freezer_core::job::CREDENTIAL_VARIABLES
        .iter()
        .filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v)))
        .collect();
    ctx
}

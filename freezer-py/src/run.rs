//! How a call runs: on one runtime per process, with the GIL released, stoppable.
//!
//! A blocking call spawns its work on the runtime and waits for it without the GIL, waking
//! every [`TICK`] to take the GIL for a moment: to let Python run its signal handlers (Ctrl-C
//! cancels the work, waits for it to stop with the repository valid, then raises
//! `KeyboardInterrupt`) and to call the caller's `progress` callable (one that raises cancels
//! the work the same way, then its exception is raised). An `_async` call returns an asyncio
//! future of the running loop instead; cancelling it cancels the work.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use freezer_core::engine::{Progress, ProgressCounts};
use freezer_core::job::RunContext;
use freezer_core::{CancelToken, Error};

use crate::errors::{exceptions, to_py};

/// How often a waiting call looks at signals and reports progress.
const TICK: Duration = Duration::from_millis(100);

/// The process's runtime (freezer-core's, shared with every call).
pub(crate) fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    freezer_core::runtime::shared().map_err(to_py)
}

/// A token that cancels the calls it is given to (`cancel=`), from any thread: the work stops
/// at its next check, leaves the repository valid, and the call raises `CancelledError`.
#[pyclass(name = "CancelToken", module = "freezer_py", frozen)]
#[derive(Debug, Default)]
pub(crate) struct PyCancelToken(pub(crate) CancelToken);

#[pymethods]
impl PyCancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Asks every call holding this token to stop.
    fn cancel(&self) {
        self.0.cancel();
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    fn __repr__(&self) -> &'static str {
        if self.0.is_cancelled() {
            "CancelToken(cancelled=True)"
        } else {
            "CancelToken(cancelled=False)"
        }
    }
}

/// `{"bytes": done, "total_bytes": total or None, "entries": done}`.
fn report_dict<'py>(py: Python<'py>, counts: &ProgressCounts) -> PyResult<Bound<'py, PyDict>> {
    let (bytes, total, entries) = counts.get();
    let d = PyDict::new(py);
    d.set_item("bytes", bytes)?;
    d.set_item("total_bytes", total)?;
    d.set_item("entries", entries)?;
    Ok(d)
}

/// What the caller gave to watch and stop a call: `progress=` and `cancel=`.
#[derive(Debug)]
pub(crate) struct Control {
    cancel: CancelToken,
    progress: Option<(Py<PyAny>, Arc<ProgressCounts>)>,
}

impl Control {
    pub(crate) fn new(
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Self> {
        let progress = match progress.filter(|p| !p.is_none()) {
            Some(p) if !p.is_callable() => {
                return Err(crate::errors::bad_input(
                    py,
                    "progress must be a callable taking one dict",
                ));
            }
            Some(p) => Some((p.clone().unbind(), Arc::new(ProgressCounts::default()))),
            None => None,
        };
        Ok(Control {
            cancel: cancel.map(|c| c.get().0.clone()).unwrap_or_default(),
            progress,
        })
    }

    /// Neither progress nor a token of the caller's (the token still serves Ctrl-C).
    pub(crate) fn none() -> Self {
        Control {
            cancel: CancelToken::new(),
            progress: None,
        }
    }

    /// The token the work must watch.
    pub(crate) fn cancel(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// What the library reports progress to.
    pub(crate) fn progress(&self) -> Arc<dyn Progress> {
        match &self.progress {
            Some((_, c)) => c.clone(),
            None => Arc::new(freezer_core::engine::NoProgress),
        }
    }

    /// The token and progress, for work that takes them apart from a [`RunContext`].
    pub(crate) fn watch(&self) -> Watch {
        Watch {
            cancel: self.cancel(),
            progress: self.progress(),
        }
    }

    /// `ctx` watching this control's token and reporting to its progress.
    pub(crate) fn apply(&self, ctx: &mut RunContext) {
        ctx.cancel = self.cancel();
        ctx.progress = self.progress();
    }

    /// Calls the progress callable with the counts so far.
    fn report(&self, py: Python<'_>) -> PyResult<()> {
        if let Some((callback, counters)) = &self.progress {
            callback.call1(py, (report_dict(py, counters)?,))?;
        }
        Ok(())
    }
}

/// A control's token and progress, moved into the work.
#[derive(Clone)]
pub(crate) struct Watch {
    pub(crate) cancel: CancelToken,
    pub(crate) progress: Arc<dyn Progress>,
}

/// Makes a Python object of a call's result, with the GIL held.
pub(crate) type MakeObject = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// What a call's work gives back, turned into Python with the GIL held.
pub(crate) enum Reply {
    /// A result dict; with a message, `IncompleteError(message, dict)` is raised instead.
    Doc(serde_json::Value, Option<&'static str>),
    /// A list of results.
    List(Vec<serde_json::Value>),
    /// Made from the result by the caller's function (a `Repository`, `Snapshot`s).
    Object(MakeObject),
}

impl Reply {
    /// A result dict, raised as incomplete with `message` unless `complete`.
    pub(crate) fn doc(doc: serde_json::Value, complete: bool, message: &'static str) -> Self {
        Reply::Doc(doc, (!complete).then_some(message))
    }

    /// `value` serialized as a dict (a report of the library).
    pub(crate) fn of(
        value: &impl serde::Serialize,
        complete: bool,
        message: &'static str,
    ) -> freezer_core::Result<Self> {
        let doc = serde_json::to_value(value).map_err(|e| {
            Error::io(
                "the result",
                std::io::Error::other(format!("does not serialize: {e}")),
            )
        })?;
        Ok(Reply::doc(doc, complete, message))
    }

    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Reply::Doc(doc, incomplete) => {
                let obj = json_to_py(py, &doc)?;
                match incomplete {
                    None => Ok(obj),
                    Some(message) => {
                        let class = exceptions(py)?.incomplete().bind(py).clone();
                        Err(PyErr::from_type(class, (message.to_string(), obj)))
                    }
                }
            }
            Reply::List(docs) => json_to_py(py, &serde_json::Value::Array(docs)),
            Reply::Object(make) => make(py),
        }
    }
}

/// A JSON value as Python objects (dicts, lists, str, int, float, bool, None).
pub(crate) fn json_to_py(py: Python<'_>, value: &serde_json::Value) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// Runs `work` to its end, blocking (`asynchronous` false), or as an asyncio future of the
/// running loop.
pub(crate) fn call<F>(
    py: Python<'_>,
    control: Control,
    asynchronous: bool,
    work: F,
) -> PyResult<Py<PyAny>>
where
    F: Future<Output = freezer_core::Result<Reply>> + Send + 'static,
{
    if asynchronous {
        spawn_async(py, control, work)
    } else {
        block(py, &control, work)
    }
}

/// Runs `work` on the runtime and waits for it with the GIL released, taking it at each tick.
fn block<F>(py: Python<'_>, control: &Control, work: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = freezer_core::Result<Reply>> + Send + 'static,
{
    // The first exception of a signal handler or of the progress callable: the work was
    // cancelled and is waited for, then this is raised.
    let mut raised: Option<PyErr> = None;
    let done = py.detach(|| {
        freezer_core::runtime::block_ticking(work, TICK, || {
            if raised.is_none() {
                let tick =
                    Python::attach(|py| py.check_signals().and_then(|()| control.report(py)));
                if let Err(e) = tick {
                    control.cancel.cancel();
                    raised = Some(e);
                }
            }
        })
    });
    if let Some(e) = raised {
        return Err(e);
    }
    done.map_err(to_py)?.map_err(to_py)?.into_py(py)
}

/// Sets an asyncio future's outcome on its loop's thread (`call_soon_threadsafe`), unless it
/// is done already (cancelled).
#[pyclass(module = "freezer_py")]
struct Resolve {
    future: Py<PyAny>,
    outcome: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl Resolve {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let future = self.future.bind(py);
        if future.call_method0("done")?.is_truthy()? {
            return Ok(());
        }
        let outcome = self
            .outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match outcome {
            Some(Ok(v)) => future.call_method1("set_result", (v,))?,
            Some(Err(e)) => future.call_method1("set_exception", (e.into_value(py),))?,
            None => return Ok(()),
        };
        Ok(())
    }
}

/// A future's done callback: a cancelled future cancels its work.
#[pyclass(module = "freezer_py")]
struct CancelOnDone(CancelToken);

#[pymethods]
impl CancelOnDone {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.0.cancel();
        }
        Ok(())
    }
}

/// One progress report, called on the loop's thread; a callable that raises cancels the work
/// and its exception becomes the future's.
#[pyclass(module = "freezer_py")]
struct Report {
    callback: Py<PyAny>,
    counters: Arc<ProgressCounts>,
    cancel: CancelToken,
    raised: Arc<Mutex<Option<PyErr>>>,
}

#[pymethods]
impl Report {
    fn __call__(&self, py: Python<'_>) {
        let mut raised = self.raised.lock().unwrap_or_else(|e| e.into_inner());
        if raised.is_some() {
            return;
        }
        let result = report_dict(py, &self.counters).and_then(|d| self.callback.call1(py, (d,)));
        if let Err(e) = result {
            self.cancel.cancel();
            *raised = Some(e);
        }
    }
}

/// Runs `work` on the runtime; returns an asyncio future of the running loop that gets its
/// result.
fn spawn_async<F>(py: Python<'_>, control: Control, work: F) -> PyResult<Py<PyAny>>
where
    F: Future<Output = freezer_core::Result<Reply>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    future.call_method1("add_done_callback", (CancelOnDone(control.cancel()),))?;
    let rt = runtime()?;
    let raised = Arc::new(Mutex::new(None::<PyErr>));
    let report = control
        .progress
        .as_ref()
        .map(|(callback, counters)| Report {
            callback: callback.clone_ref(py),
            counters: counters.clone(),
            cancel: control.cancel(),
            raised: raised.clone(),
        });
    let report = report.map(|r| Py::new(py, r)).transpose()?;
    let loop_ref = event_loop.unbind();
    let future_ref = future.clone().unbind();
    rt.spawn(async move {
        let mut work = std::pin::pin!(work);
        let done = loop {
            tokio::select! {
                done = &mut work => break done,
                _ = tokio::time::sleep(TICK), if report.is_some() => {
                    if let Some(r) = &report {
                        Python::attach(|py| {
                            // A closed loop has nobody to report to.
                            let _ = loop_ref.call_method1(py, "call_soon_threadsafe", (r.clone_ref(py),));
                        });
                    }
                }
            }
        };
        Python::attach(|py| {
            let raised = raised.lock().unwrap_or_else(|e| e.into_inner()).take();
            let outcome = match raised {
                Some(e) => Err(e),
                None => done.map_err(to_py).and_then(|r| r.into_py(py)),
            };
            let resolve = Resolve {
                future: future_ref,
                outcome: Mutex::new(Some(outcome)),
            };
            // A closed loop has nobody to tell.
            let _ = loop_ref.call_method1(py, "call_soon_threadsafe", (resolve,));
            drop(report);
        });
    });
    Ok(future.unbind())
}

//! The exception hierarchy: every error freezer_py raises for the library is a `FreezerError`,
//! one subclass per [`ErrorKind`], each also under the builtin exception a Python caller would
//! catch for it (`FileNotFoundError`, `PermissionError`, `ValueError`...). The messages are the
//! library's, the CLI's.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use freezer_core::{Error, ErrorKind};

/// `(class name, builtin bases after FreezerError, docstring)`, in the order of [`Exceptions::all`].
const CLASSES: &[(&str, &[&str], &str)] = &[
    (
        "NotFoundError",
        &["FileNotFoundError"],
        "A repository, snapshot, key or path does not exist.",
    ),
    (
        "AlreadyExistsError",
        &["FileExistsError"],
        "Something to create exists already (a repository where init was asked).",
    ),
    (
        "WrongKeyError",
        &["PermissionError"],
        "No key of the repository opens with the passphrase, or the storage refused access.",
    ),
    ("CorruptError", &[], "Stored data is damaged."),
    (
        "BadInputError",
        &["ValueError"],
        "An option, document or argument is invalid; nothing ran.",
    ),
    (
        "TransientError",
        &["ConnectionError"],
        "The storage failed in a way that may pass (a dropped connection, a timeout): retry.",
    ),
    (
        "LockedError",
        &[],
        "Another operation holds the repository's lock (a prune, a backup).",
    ),
    (
        "NoSpaceError",
        &["OSError"],
        "The storage or the restore target is full.",
    ),
    (
        "CancelledError",
        &[],
        "The operation was cancelled (a CancelToken, an asyncio cancel); the repository is valid.",
    ),
    (
        "IncompleteError",
        &[],
        "The operation ran but did not do everything: a restore that left damaged files, a \
         check that found damage. ``args[1]``, when present, is the result dict.",
    ),
];

/// The classes, made once per interpreter.
pub(crate) struct Exceptions {
    pub(crate) base: Py<PyType>,
    /// In the order of [`CLASSES`].
    all: Vec<Py<PyType>>,
}

static EXCEPTIONS: PyOnceLock<Exceptions> = PyOnceLock::new();

pub(crate) fn exceptions(py: Python<'_>) -> PyResult<&Exceptions> {
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
        let base = make(
            "FreezerError",
            vec![builtins.getattr("Exception")?],
            "Base of every freezer_py error.",
        )?;
        let mut all = Vec::with_capacity(CLASSES.len());
        for (name, builtin_bases, doc) in CLASSES {
            let mut bases = vec![base.bind(py).clone().into_any()];
            for b in *builtin_bases {
                bases.push(builtins.getattr(*b)?);
            }
            all.push(make(name, bases, doc)?);
        }
        Ok(Exceptions { base, all })
    })
}

impl Exceptions {
    /// Every class with its name, for the module.
    pub(crate) fn named(&self) -> impl Iterator<Item = (&'static str, &Py<PyType>)> {
        std::iter::once(("FreezerError", &self.base))
            .chain(CLASSES.iter().map(|c| c.0).zip(self.all.iter()))
    }

    fn by_name(&self, name: &str) -> &Py<PyType> {
        CLASSES
            .iter()
            .position(|c| c.0 == name)
            .map_or(&self.base, |i| &self.all[i])
    }

    /// The class of an error of `kind`.
    pub(crate) fn of(&self, kind: ErrorKind) -> &Py<PyType> {
        self.by_name(match kind {
            ErrorKind::NotFound => "NotFoundError",
            ErrorKind::AlreadyExists => "AlreadyExistsError",
            ErrorKind::WrongKey | ErrorKind::Permission => "WrongKeyError",
            ErrorKind::Corrupt => "CorruptError",
            ErrorKind::BadInput | ErrorKind::Unsupported => "BadInputError",
            ErrorKind::Transient => "TransientError",
            ErrorKind::Locked => "LockedError",
            ErrorKind::NoSpace => "NoSpaceError",
            ErrorKind::Cancelled => "CancelledError",
            ErrorKind::Incomplete => "IncompleteError",
            _ => "FreezerError",
        })
    }

    /// `IncompleteError`.
    pub(crate) fn incomplete(&self) -> &Py<PyType> {
        self.by_name("IncompleteError")
    }

    /// `BadInputError`.
    pub(crate) fn bad_input(&self) -> &Py<PyType> {
        self.by_name("BadInputError")
    }
}

/// The library's error as the exception of its kind, with the library's message.
pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| match exceptions(py) {
        Ok(ex) => PyErr::from_type(ex.of(e.kind()).bind(py).clone(), e.to_string()),
        Err(err) => err,
    })
}

/// A `BadInputError` for a caller's argument the library never saw.
pub(crate) fn bad_input(py: Python<'_>, message: impl Into<String>) -> PyErr {
    match exceptions(py) {
        Ok(ex) => PyErr::from_type(ex.bad_input().bind(py).clone(), message.into()),
        Err(err) => err,
    }
}

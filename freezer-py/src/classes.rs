//! The classes: `Storage`, `Repository`, `Snapshot`, `Job`. Each is a thin holder of upstream's
//! option names; the work is freezer-core's (`run_action`, `open_repository`, the engine).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyType};
use serde_json::{Map, Value};

use freezer_core::engine::CopyOptions;
use freezer_core::job::{FreezerAction, Job as CoreJob, JobSpec, RepositoryOptions, RunContext};
use freezer_core::repo::Repository;
use freezer_core::repo::snapshot::SnapshotFilter;
use freezer_core::{Error, Id, KdfParams, Passphrase};

use crate::errors::{bad_input, to_py};
use crate::run::{Control, PyCancelToken, Reply, Watch, call, json_to_py};
use crate::{context, fspath, options_map, run_action_work};

/// A place a repository lives: the CLI's URLs (`/srv/backups`, `s3://bucket/node1?endpoint=..`,
/// `swift://container/prefix`, `ssh://user@host/path`, `ftps://user@host/path`) or upstream's
/// options (`storage="s3", container="bucket/node1", endpoint=...`; several with `storages=[...]`).
#[pyclass(name = "Storage", module = "freezer_py", frozen)]
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    inner: RepositoryOptions,
}

#[pymethods]
impl Storage {
    #[new]
    #[pyo3(signature = (url = None, /, **options))]
    fn new(
        py: Python<'_>,
        url: Option<&Bound<'_, PyAny>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let mut map = options_map(py, options.map(|o| o.as_any()))?;
        if let Some(url) = url {
            if map.contains_key("container") {
                return Err(bad_input(
                    py,
                    "give the storage as a URL or as container=, not both",
                ));
            }
            map.insert("container".into(), fspath(url)?.into());
        }
        Ok(Storage {
            inner: RepositoryOptions::new(map, None).map_err(to_py)?,
        })
    }

    /// The options as upstream's names (`storage`, `container`, `endpoint`...).
    #[getter]
    fn options(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &Value::Object(self.inner.options().clone()))
    }

    /// The kind of the first storage: `local`, `s3`, `swift`, `ssh`, `ftp`, `ftps`.
    #[getter]
    fn kind(&self) -> PyResult<String> {
        let (action, _) = self.inner.action(None, &Map::new(), false).map_err(to_py)?;
        let specs = action.all_storages().map_err(to_py)?;
        Ok(specs
            .first()
            .map(|s| s.kind().to_string())
            .unwrap_or_default())
    }

    fn __repr__(&self) -> PyResult<String> {
        // The container only: an option may be a secret (`secret_key`, `ssh_password`).
        Ok(format!(
            "Storage(kind={:?}, container={:?})",
            self.kind()?,
            self.inner.container()
        ))
    }
}

/// A repository, named by its storage and opened with its passphrase. Made by
/// `Repository.init(...)` or `Repository.open(...)`; each method opens the repository afresh
/// (another process may have changed it meanwhile) and takes upstream's option names as
/// keyword arguments. Every long method has an `_async` twin returning an awaitable.
#[pyclass(name = "Repository", module = "freezer_py", frozen)]
#[derive(Debug)]
pub(crate) struct PyRepository {
    inner: RepositoryOptions,
    id: String,
}

/// Where and how to reach a repository: `location` (a `Storage`, a URL or a folder), a
/// passphrase, and upstream's options.
fn repository_options(
    py: Python<'_>,
    location: Option<&Bound<'_, PyAny>>,
    passphrase: Option<String>,
    options: Option<&Bound<'_, PyDict>>,
    for_init: bool,
) -> PyResult<RepositoryOptions> {
    let mut map = options_map(py, options.map(|o| o.as_any()))?;
    if let Some(loc) = location {
        let from: Map<String, Value> = if let Ok(s) = loc.cast::<Storage>() {
            s.get().inner.options().clone()
        } else {
            Map::from_iter([("container".to_string(), Value::from(fspath(loc)?))])
        };
        for (k, v) in from {
            if map.contains_key(&k) {
                return Err(bad_input(
                    py,
                    format!("{k} is given twice: by the location and as a keyword"),
                ));
            }
            map.insert(k, v);
        }
    }
    let passphrase = passphrase.map(Passphrase::new).transpose().map_err(to_py)?;
    if for_init {
        RepositoryOptions::for_init(map, passphrase)
    } else {
        RepositoryOptions::new(map, passphrase)
    }
    .map_err(to_py)
}

impl PyRepository {
    /// A repository named by upstream's options (with `encrypt_pass_file` when encrypted),
    /// not opened yet.
    pub(crate) fn from_options(options: Map<String, Value>) -> PyResult<Self> {
        Ok(PyRepository {
            inner: RepositoryOptions::new(options, None).map_err(to_py)?,
            id: String::new(),
        })
    }

    /// This repository's options checked as the action `name` with `extra`.
    fn action(
        &self,
        name: Option<&str>,
        extra: &Map<String, Value>,
        full: bool,
    ) -> PyResult<(FreezerAction, Vec<String>)> {
        self.inner.action(name, extra, full).map_err(to_py)
    }

    fn context(&self) -> RunContext {
        self.inner.context(context(None))
    }

    fn init_impl(
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        passphrase: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let inner = repository_options(py, location, passphrase, options, true)?;
        let ctx = inner.context(context(None));
        call(py, Control::none(), asynchronous, async move {
            let report = inner.init(&ctx).await?;
            let repo = PyRepository {
                inner,
                id: report.id.to_hex(),
            };
            Ok(Reply::Object(Box::new(move |py| {
                Ok(Py::new(py, repo)?.into_any())
            })))
        })
    }

    fn open_impl(
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        passphrase: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let inner = repository_options(py, location, passphrase, options, false)?;
        let ctx = inner.context(context(None));
        call(py, Control::none(), asynchronous, async move {
            let opened = inner.open(&ctx).await?;
            let repo = PyRepository {
                inner,
                id: opened.id().to_hex(),
            };
            Ok(Reply::Object(Box::new(move |py| {
                Ok(Py::new(py, repo)?.into_any())
            })))
        })
    }

    /// Runs the freezer_action `name` on this repository with `options`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        py: Python<'_>,
        name: &str,
        mut extra: Map<String, Value>,
        options: Option<&Bound<'_, PyDict>>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        asynchronous: bool,
        partial: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let control = Control::new(py, progress, cancel)?;
        for (k, v) in options_map(py, options.map(|o| o.as_any()))? {
            if extra.contains_key(&k) {
                return Err(bad_input(py, format!("{k} is given twice")));
            }
            extra.insert(k, v);
        }
        let (action, warnings) = self.action(Some(name), &extra, true)?;
        let mut ctx = self.context();
        control.apply(&mut ctx);
        // Never create a repository behind an opened one's back (it was moved or deleted).
        ctx.create_repository = false;
        run_action_work(py, control, asynchronous, action, ctx, warnings, partial)
    }

    /// Runs `op` on this repository, opened, with the control's token and progress.
    fn lifecycle<F, Fut>(
        &self,
        py: Python<'_>,
        control: Control,
        asynchronous: bool,
        op: F,
    ) -> PyResult<Py<PyAny>>
    where
        F: FnOnce(Repository, RunContext, Watch) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = freezer_core::Result<Reply>> + Send,
    {
        let inner = self.inner.clone();
        let mut ctx = self.context();
        control.apply(&mut ctx);
        let watch = control.watch();
        call(py, control, asynchronous, async move {
            let repo = inner.open(&ctx).await?;
            op(repo, ctx, watch).await
        })
    }

    fn snapshots_impl(
        &self,
        py: Python<'_>,
        backup_name: Option<String>,
        hostname: Option<String>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        self.lifecycle(py, Control::none(), asynchronous, |repo, _, _| async move {
            let listing = repo.snapshot_listing().await?;
            let filter = SnapshotFilter {
                hostname,
                backup_name,
                since: None,
                until: None,
            };
            let snaps: Vec<Snapshot> = listing
                .snapshots
                .iter()
                .filter(|(_, s)| filter.matches(s))
                .map(|(id, s)| Snapshot::new(*id, s))
                .collect();
            let unreadable: Vec<String> = listing
                .unreadable
                .iter()
                .map(|u| format!("snapshot {}: {}", u.id, u.error))
                .collect();
            Ok(Reply::Object(Box::new(move |py| {
                if !unreadable.is_empty() {
                    let warn = py.import("warnings")?;
                    warn.call_method1(
                        "warn",
                        (format!(
                            "{} snapshot(s) could not be read (Repository.check says more): {}",
                            unreadable.len(),
                            unreadable.join("; ")
                        ),),
                    )?;
                }
                let list = pyo3::types::PyList::empty(py);
                for s in snaps {
                    list.append(Py::new(py, s)?)?;
                }
                Ok(list.into_any().unbind())
            })))
        })
    }

    pub(crate) fn check_impl(
        &self,
        py: Python<'_>,
        read_data: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let mut extra = Map::new();
        if let Some(r) = read_data {
            extra.insert("read_data".into(), r.into());
        }
        self.run(
            py,
            "check",
            extra,
            None,
            progress,
            cancel,
            asynchronous,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prune_impl(
        &self,
        py: Python<'_>,
        max_unused: Option<&Bound<'_, PyAny>>,
        dry_run: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let mut extra = Map::new();
        if let Some(m) = max_unused.filter(|m| !m.is_none()) {
            extra.insert("max_unused".into(), m.str()?.to_string().into());
        }
        extra.insert("dry_run".into(), dry_run.into());
        self.run(
            py,
            "prune",
            extra,
            None,
            progress,
            cancel,
            asynchronous,
            None,
        )
    }

    /// Not cancellable: Ctrl-C waits for it to end (a rebuilt index half written would be
    /// harmless, but the old one is removed only once the new one is whole).
    pub(crate) fn repair_index_impl(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let control = Control::new(py, progress, None)?;
        self.lifecycle(
            py,
            control,
            asynchronous,
            |mut repo, ctx, watch| async move {
                let r = freezer_core::engine::repair_index(&mut repo, &ctx.actor, watch.progress)
                    .await?;
                Reply::of(&r, r.is_complete(), "the index could not be rebuilt whole")
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_impl(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyRepository>,
        snapshots: Vec<String>,
        backup_name: Option<String>,
        hostname: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        asynchronous: bool,
    ) -> PyResult<Py<PyAny>> {
        let ids = snapshots
            .iter()
            .map(|s| Id::from_hex(s))
            .collect::<freezer_core::Result<Vec<Id>>>()
            .map_err(to_py)?;
        let control = Control::new(py, progress, cancel)?;
        let target = target.get().inner.clone();
        let target_ctx = target.context(context(None));
        self.lifecycle(py, control, asynchronous, move |mut repo, ctx, watch| async move {
            let mut dst = target.open(&target_ctx).await?;
            let mut opts = CopyOptions::new(ctx.actor.clone());
            opts.snapshots = ids;
            opts.backup_name = backup_name;
            opts.hostname = hostname;
            // A copy stopped midway is a copy killed midway: the target stays valid (what was
            // written before its snapshot is unreferenced until a later copy or prune).
            let r = tokio::select! {
                r = freezer_core::engine::copy(&mut repo, &mut dst, &opts, watch.progress) => r?,
                _ = watch.cancel.cancelled() => return Err(Error::Cancelled),
            };
            Reply::of(&r, r.is_complete(), "not every snapshot was copied")
        })
    }
}

#[pymethods]
impl PyRepository {
    /// Creates a repository (a `Storage`, a URL such as ``s3://bucket/node1``, or a folder;
    /// or upstream's ``storage=``/``container=``...), encrypted with ``passphrase`` or the
    /// first line of ``encrypt_pass_file``; returns it. ``pack_size`` (MiB, 1 to 512),
    /// ``kdf_memory`` (MiB), ``kdf_iterations`` and ``kdf_parallelism`` set the pack size and the
    /// key's Argon2id costs. Raises ``AlreadyExistsError`` where a repository is,
    /// ``BadInputError`` where other files are.
    #[classmethod]
    #[pyo3(signature = (location = None, /, *, passphrase = None, **options))]
    fn init(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        passphrase: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Self::init_impl(py, location, passphrase, options, false)
    }

    /// `init`, awaitable.
    #[classmethod]
    #[pyo3(signature = (location = None, /, *, passphrase = None, **options))]
    fn init_async(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        passphrase: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Self::init_impl(py, location, passphrase, options, true)
    }

    /// Opens the repository at ``location`` with ``passphrase`` (or ``encrypt_pass_file=``):
    /// raises ``NotFoundError`` where none is, ``WrongKeyError`` for a wrong passphrase.
    #[classmethod]
    #[pyo3(signature = (location = None, /, *, passphrase = None, **options))]
    fn open(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        passphrase: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Self::open_impl(py, location, passphrase, options, false)
    }

    /// `open`, awaitable.
    #[classmethod]
    #[pyo3(signature = (location = None, /, *, passphrase = None, **options))]
    fn open_async(
        _cls: &Bound<'_, PyType>,
        py: Python<'_>,
        location: Option<&Bound<'_, PyAny>>,
        passphrase: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        Self::open_impl(py, location, passphrase, options, true)
    }

    /// The repository's id (hex).
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// The storage options it was opened with (upstream's names).
    #[getter]
    fn options(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &Value::Object(self.inner.options().clone()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Repository(id={:?}, container={:?})",
            &self.id[..self.id.len().min(8)],
            self.inner.container()
        )
    }

    /// The snapshots, oldest first (of one ``backup_name`` or ``hostname`` when given). Those
    /// that cannot be read are left out with a warning (``Repository.check`` names them).
    #[pyo3(signature = (*, backup_name = None, hostname = None))]
    fn snapshots(
        &self,
        py: Python<'_>,
        backup_name: Option<String>,
        hostname: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        self.snapshots_impl(py, backup_name, hostname, false)
    }

    /// `snapshots`, awaitable.
    #[pyo3(signature = (*, backup_name = None, hostname = None))]
    fn snapshots_async(
        &self,
        py: Python<'_>,
        backup_name: Option<String>,
        hostname: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        self.snapshots_impl(py, backup_name, hostname, true)
    }

    /// Backs up ``path_to_backup`` as ``backup_name`` (upstream's backup options as keywords:
    /// ``mode``, ``max_level``, ``exclude``, ``compression``...); returns the result with
    /// upstream's metadata keys. ``progress`` is called about ten times a second with
    /// ``{"bytes", "total_bytes", "entries"}``; ``cancel`` (a ``CancelToken``) or Ctrl-C stops
    /// it, recording no snapshot, the repository valid.
    #[pyo3(signature = (path_to_backup = None, /, *, progress = None, cancel = None, **options))]
    fn backup(
        &self,
        py: Python<'_>,
        path_to_backup: Option<&Bound<'_, PyAny>>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let extra = path_extra("path_to_backup", path_to_backup)?;
        self.run(py, "backup", extra, options, progress, cancel, false, None)
    }

    /// `backup`, awaitable.
    #[pyo3(signature = (path_to_backup = None, /, *, progress = None, cancel = None, **options))]
    fn backup_async(
        &self,
        py: Python<'_>,
        path_to_backup: Option<&Bound<'_, PyAny>>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let extra = path_extra("path_to_backup", path_to_backup)?;
        self.run(py, "backup", extra, options, progress, cancel, true, None)
    }

    /// Restores the newest snapshot of ``backup_name`` (or the one at ``restore_from_date``,
    /// or ``snapshot=``) into ``restore_abs_path``. A restore that leaves damaged files behind
    /// raises ``IncompleteError(message, result)`` unless ``accept_partial``.
    #[pyo3(signature = (restore_abs_path = None, /, *, accept_partial = false, progress = None, cancel = None, **options))]
    #[allow(clippy::too_many_arguments)]
    fn restore(
        &self,
        py: Python<'_>,
        restore_abs_path: Option<&Bound<'_, PyAny>>,
        accept_partial: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let extra = path_extra("restore_abs_path", restore_abs_path)?;
        self.run(
            py,
            "restore",
            extra,
            options,
            progress,
            cancel,
            false,
            Some(accept_partial),
        )
    }

    /// `restore`, awaitable.
    #[pyo3(signature = (restore_abs_path = None, /, *, accept_partial = false, progress = None, cancel = None, **options))]
    #[allow(clippy::too_many_arguments)]
    fn restore_async(
        &self,
        py: Python<'_>,
        restore_abs_path: Option<&Bound<'_, PyAny>>,
        accept_partial: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        let extra = path_extra("restore_abs_path", restore_abs_path)?;
        self.run(
            py,
            "restore",
            extra,
            options,
            progress,
            cancel,
            true,
            Some(accept_partial),
        )
    }

    /// Forgets snapshots by upstream's retention options (``remove_older_than`` days,
    /// ``remove_from_date``, ``keep_last``, ``keep_daily``..., ``dry_run``), of one
    /// ``backup_name``/``hostname`` when given: upstream's ``admin`` action. Data is freed by
    /// ``prune``.
    #[pyo3(signature = (**options))]
    fn forget(&self, py: Python<'_>, options: Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>> {
        self.run(py, "admin", Map::new(), options, None, None, false, None)
    }

    /// `forget`, awaitable.
    #[pyo3(signature = (**options))]
    fn forget_async(
        &self,
        py: Python<'_>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Py<PyAny>> {
        self.run(py, "admin", Map::new(), options, None, None, true, None)
    }

    /// Removes the data no snapshot references; a pack more than ``max_unused`` unused
    /// (``"5%"`` by default, or a fraction such as ``0.05``; ``"100%"``: never repack) is
    /// repacked.
    #[pyo3(signature = (*, max_unused = None, dry_run = false, progress = None, cancel = None))]
    fn prune(
        &self,
        py: Python<'_>,
        max_unused: Option<&Bound<'_, PyAny>>,
        dry_run: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        self.prune_impl(py, max_unused, dry_run, progress, cancel, false)
    }

    /// `prune`, awaitable.
    #[pyo3(signature = (*, max_unused = None, dry_run = false, progress = None, cancel = None))]
    fn prune_async(
        &self,
        py: Python<'_>,
        max_unused: Option<&Bound<'_, PyAny>>,
        dry_run: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        self.prune_impl(py, max_unused, dry_run, progress, cancel, true)
    }

    /// Verifies the repository; ``read_data``: ``None`` (structure only), ``"all"``,
    /// ``"n/m"`` or ``"x%"``. Raises ``IncompleteError(message, report)`` when something is
    /// damaged.
    #[pyo3(signature = (*, read_data = None, progress = None, cancel = None))]
    fn check(
        &self,
        py: Python<'_>,
        read_data: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_impl(py, read_data, progress, cancel, false)
    }

    /// `check`, awaitable.
    #[pyo3(signature = (*, read_data = None, progress = None, cancel = None))]
    fn check_async(
        &self,
        py: Python<'_>,
        read_data: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        self.check_impl(py, read_data, progress, cancel, true)
    }

    /// Rebuilds the index from the packs' headers (not cancellable: Ctrl-C waits for it).
    #[pyo3(signature = (*, progress = None))]
    fn repair_index(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.repair_index_impl(py, progress, false)
    }

    /// `repair_index`, awaitable.
    #[pyo3(signature = (*, progress = None))]
    fn repair_index_async(
        &self,
        py: Python<'_>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        self.repair_index_impl(py, progress, true)
    }

    /// Copies snapshots (all, those of ``snapshots`` ids, of a ``backup_name`` or
    /// ``hostname``) into ``target``, another repository; what it has already is skipped.
    #[pyo3(signature = (target, /, *, snapshots = Vec::new(), backup_name = None, hostname = None, progress = None, cancel = None))]
    #[allow(clippy::too_many_arguments)]
    fn copy_to(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyRepository>,
        snapshots: Vec<String>,
        backup_name: Option<String>,
        hostname: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        self.copy_impl(
            py,
            target,
            snapshots,
            backup_name,
            hostname,
            progress,
            cancel,
            false,
        )
    }

    /// `copy_to`, awaitable.
    #[pyo3(signature = (target, /, *, snapshots = Vec::new(), backup_name = None, hostname = None, progress = None, cancel = None))]
    #[allow(clippy::too_many_arguments)]
    fn copy_to_async(
        &self,
        py: Python<'_>,
        target: &Bound<'_, PyRepository>,
        snapshots: Vec<String>,
        backup_name: Option<String>,
        hostname: Option<String>,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        self.copy_impl(
            py,
            target,
            snapshots,
            backup_name,
            hostname,
            progress,
            cancel,
            true,
        )
    }

    /// The keys: ``[{"id", "current", "created", "hostname", "username", "kdf"}]``;
    /// ``current`` is the one the passphrase opened, ``kdf`` its Argon2id costs.
    fn keys(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.lifecycle(py, Control::none(), false, |repo, _, _| async move {
            let keys = repo.keys().await?;
            let list = keys
                .iter()
                .map(|(id, k, current)| k.summary(id, *current))
                .collect();
            Ok(Reply::List(list))
        })
    }

    /// Adds a key for ``new_passphrase`` (the repository must be encrypted and opened with a
    /// passphrase); returns its id.
    fn add_key(&self, py: Python<'_>, new_passphrase: String) -> PyResult<Py<PyAny>> {
        let (current, new) = self.passphrases(new_passphrase)?;
        self.lifecycle(py, Control::none(), false, move |repo, ctx, _| async move {
            let id = repo
                .add_key(&current, &new, KdfParams::default(), &ctx.actor)
                .await?;
            Ok(Reply::Doc(Value::from(id.to_hex()), None))
        })
    }

    /// Replaces the key the passphrase opened by one for ``new_passphrase``; returns the new
    /// key's id. Open the repository again with the new passphrase.
    fn change_passphrase(&self, py: Python<'_>, new_passphrase: String) -> PyResult<Py<PyAny>> {
        let (current, new) = self.passphrases(new_passphrase)?;
        self.lifecycle(py, Control::none(), false, move |repo, ctx, _| async move {
            let id = repo
                .change_passphrase(&current, &new, KdfParams::default(), &ctx.actor)
                .await?;
            Ok(Reply::Doc(Value::from(id.to_hex()), None))
        })
    }

    /// Removes the key ``id`` (an id or a unique prefix; never the one in use); returns its id.
    fn remove_key(&self, py: Python<'_>, id: String) -> PyResult<Py<PyAny>> {
        self.lifecycle(py, Control::none(), false, move |repo, _, _| async move {
            let id = repo.remove_key(&id).await?;
            Ok(Reply::Doc(Value::from(id.to_hex()), None))
        })
    }
}

impl PyRepository {
    /// The current passphrase (given or read from `encrypt_pass_file`) and the new one.
    fn passphrases(&self, new: String) -> PyResult<(Passphrase, Passphrase)> {
        let current = self.inner.passphrase().map_err(to_py)?.ok_or_else(|| {
            to_py(Error::bad_input(
                "passphrase",
                "the repository was opened without a passphrase (it is not encrypted)",
            ))
        })?;
        Ok((current, Passphrase::new(new).map_err(to_py)?))
    }
}

/// `{name: path}` when a path was given.
fn path_extra(name: &str, path: Option<&Bound<'_, PyAny>>) -> PyResult<Map<String, Value>> {
    let mut m = Map::new();
    if let Some(p) = path {
        m.insert(name.into(), fspath(p)?.into());
    }
    Ok(m)
}

/// One snapshot, read-only: its listing fields as attributes, everything as `metadata`.
#[pyclass(name = "Snapshot", module = "freezer_py", frozen)]
#[derive(Debug)]
pub(crate) struct Snapshot {
    doc: Map<String, Value>,
}

impl Snapshot {
    fn new(id: Id, s: &freezer_core::repo::snapshot::Snapshot) -> Self {
        let mut doc = match serde_json::to_value(s) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Ok(Value::Object(summary)) = serde_json::to_value(s.summary(id)) {
            for (k, v) in summary {
                doc.entry(k).or_insert(v);
            }
        }
        doc.insert("id".into(), Value::from(id.to_hex()));
        Snapshot { doc }
    }

    fn str_of(&self, key: &str) -> String {
        self.doc
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn u64_of(&self, key: &str) -> u64 {
        self.doc
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_default()
    }
}

#[pymethods]
impl Snapshot {
    /// Its id (hex).
    #[getter]
    fn id(&self) -> String {
        self.str_of("id")
    }
    /// Its host.
    #[getter]
    fn hostname(&self) -> String {
        self.str_of("hostname")
    }
    /// Its backup name.
    #[getter]
    fn backup_name(&self) -> String {
        self.str_of("backup_name")
    }
    /// Its level (0: a full backup).
    #[getter]
    fn level(&self) -> u64 {
        self.u64_of("level")
    }
    /// When it was taken, RFC 3339.
    #[getter]
    fn time(&self) -> String {
        self.str_of("time")
    }
    /// Upstream's integer epoch.
    #[getter]
    fn time_stamp(&self) -> i64 {
        self.doc
            .get("time_stamp")
            .and_then(Value::as_i64)
            .unwrap_or_default()
    }
    /// What was backed up.
    #[getter]
    fn path_to_backup(&self) -> String {
        self.str_of("path_to_backup")
    }
    /// Its mode (`fs`, `stdin`, `mysql`...).
    #[getter]
    fn mode(&self) -> String {
        self.str_of("mode")
    }
    /// The snapshot it trusted, if any.
    #[getter]
    fn parent(&self) -> Option<String> {
        self.doc
            .get("parent")
            .and_then(Value::as_str)
            .map(str::to_string)
    }
    /// Files it holds.
    #[getter]
    fn files(&self) -> u64 {
        self.u64_of("files")
    }
    /// Bytes of file content it holds.
    #[getter]
    fn size(&self) -> u64 {
        self.u64_of("size")
    }
    /// Bytes its backup added to the repository, as stored.
    #[getter]
    fn added(&self) -> u64 {
        self.u64_of("added")
    }
    /// Everything the snapshot records, as a dict (`stats`, `excludes`, `tree`...).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        json_to_py(py, &Value::Object(self.doc.clone()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Snapshot(id={:?}, backup_name={:?}, hostname={:?}, level={}, time={:?})",
            &self.id()[..self.id().len().min(8)],
            self.backup_name(),
            self.hostname(),
            self.level(),
            self.time()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Snapshot>()
            .is_ok_and(|o| o.get().doc.get("id") == self.doc.get("id"))
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.id().hash(&mut h);
        h.finish()
    }
}

/// An upstream job document (``job_actions``, each a ``freezer_action`` with ``max_retries``,
/// ``mandatory``...; ``action_defaults``), checked when made: a malformed document, a misspelt
/// or wrongly typed field raises ``BadInputError`` naming it.
#[pyclass(name = "Job", module = "freezer_py", frozen)]
#[derive(Debug)]
pub(crate) struct Job {
    text: String,
    allow_unknown_options: bool,
    job_id: Option<String>,
    description: Option<String>,
    actions: usize,
}

#[pymethods]
impl Job {
    #[new]
    #[pyo3(signature = (document, /, *, allow_unknown_options = false))]
    fn new(
        py: Python<'_>,
        document: &Bound<'_, PyAny>,
        allow_unknown_options: bool,
    ) -> PyResult<Self> {
        let text = crate::document_text(py, document, "job")?;
        let job = CoreJob::from_json(&text).map_err(to_py)?;
        job.validate_with(allow_unknown_options).map_err(to_py)?;
        Ok(Job {
            job_id: job.job_id().map(str::to_string),
            description: job.description.clone(),
            actions: job.job_actions.len(),
            text,
            allow_unknown_options,
        })
    }

    /// The job's id, when the document has one.
    #[getter]
    fn job_id(&self) -> Option<String> {
        self.job_id.clone()
    }

    /// Its description, when it has one.
    #[getter]
    fn description(&self) -> Option<String> {
        self.description.clone()
    }

    /// The document, as a dict.
    #[getter]
    fn document(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(py
            .import("json")?
            .call_method1("loads", (self.text.as_str(),))?
            .unbind())
    }

    fn __len__(&self) -> usize {
        self.actions
    }

    fn __repr__(&self) -> String {
        format!("Job(job_id={:?}, actions={})", self.job_id, self.actions)
    }

    /// Runs the job: one result dict per action, as ``run_job`` returns.
    #[pyo3(signature = (*, allow_exec = true, progress = None, cancel = None, stdin = None, stdout = None))]
    fn run(
        &self,
        py: Python<'_>,
        allow_exec: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
        stdin: Option<&Bound<'_, PyAny>>,
        stdout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let control = Control::new(py, progress, cancel)?;
        crate::run_job_work(
            py,
            control,
            false,
            self.text.clone(),
            self.allow_unknown_options,
            allow_exec,
            stdin,
            stdout,
        )
    }

    /// `run`, awaitable.
    #[pyo3(signature = (*, allow_exec = true, progress = None, cancel = None))]
    fn run_async(
        &self,
        py: Python<'_>,
        allow_exec: bool,
        progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, PyCancelToken>>,
    ) -> PyResult<Py<PyAny>> {
        let control = Control::new(py, progress, cancel)?;
        crate::run_job_work(
            py,
            control,
            true,
            self.text.clone(),
            self.allow_unknown_options,
            allow_exec,
            None,
            None,
        )
    }
}

"""freezer-rs for Python: OpenStack Freezer's backup and restore, with upstream's option names.

Every call releases the GIL and runs on one runtime per process. Ctrl-C, a ``CancelToken`` or a
``progress`` callable that raises stops a running call at its next check; the repository stays
valid, and the call raises ``KeyboardInterrupt``, ``CancelledError`` or the callable's exception.
Each long call has an ``_async`` twin returning an awaitable of the running asyncio loop;
cancelling it cancels the work.
"""
import os
from typing import Any, Awaitable, Callable, Mapping, Protocol, TypedDict

__version__: str

class Readable(Protocol):
    """What ``stdin=`` takes besides a file descriptor: a binary file object."""
    def read(self, n: int, /) -> bytes: ...

class Writable(Protocol):
    """What ``stdout=`` takes besides a file descriptor; ``write`` returning ``None`` counts
    as all written."""
    def write(self, b: bytes, /) -> int | None: ...

class ProgressReport(TypedDict):
    """What a ``progress`` callable receives, about ten times a second."""
    bytes: int
    total_bytes: int | None
    entries: int

Progress = Callable[[ProgressReport], object]
Path = str | os.PathLike[str]

class FreezerError(Exception):
    """Base of every freezer_py error."""

class NotFoundError(FreezerError, FileNotFoundError):
    """A repository, snapshot, key or path does not exist."""

class AlreadyExistsError(FreezerError, FileExistsError):
    """Something to create exists already (a repository where init was asked)."""

class WrongKeyError(FreezerError, PermissionError):
    """No key of the repository opens with the passphrase, or the storage refused access."""

class CorruptError(FreezerError):
    """Stored data is damaged."""

class BadInputError(FreezerError, ValueError):
    """An option, document or argument is invalid; nothing ran."""

class TransientError(FreezerError, ConnectionError):
    """The storage failed in a way that may pass (a dropped connection, a timeout): retry."""

class LockedError(FreezerError):
    """Another operation holds the repository's lock (a prune, a backup)."""

class NoSpaceError(FreezerError, OSError):
    """The storage or the restore target is full."""

class CancelledError(FreezerError):
    """The operation was cancelled (a CancelToken, an asyncio cancel); the repository is valid."""

class IncompleteError(FreezerError):
    """The operation ran but did not do everything: a restore that left damaged files, a check
    that found damage. ``args[1]``, when present, is the result dict."""

class CancelToken:
    """Cancels the calls it is given to (``cancel=``), from any thread."""
    def __init__(self) -> None: ...
    def cancel(self) -> None:
        """Asks every call holding this token to stop."""
    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called."""

class Storage:
    """Where a repository lives: the CLI's URLs (``/srv/backups``, ``s3://bucket/node1?endpoint=URL``,
    ``swift://container/prefix``, ``ssh://user@host/path``, ``ftps://user@host/path``) or
    upstream's options (``storage="s3", container="bucket/node1", endpoint=...``). Unknown option
    names raise ``BadInputError`` naming the closest known one."""
    def __init__(self, url: Path | None = None, /, **options: Any) -> None: ...
    @property
    def options(self) -> dict[str, Any]:
        """The options, by upstream's names."""
    @property
    def kind(self) -> str:
        """``local``, ``s3``, ``swift``, ``ssh``, ``ftp`` or ``ftps``."""

class Snapshot:
    """One snapshot, read-only."""
    @property
    def id(self) -> str: ...
    @property
    def hostname(self) -> str: ...
    @property
    def backup_name(self) -> str: ...
    @property
    def level(self) -> int: ...
    @property
    def time(self) -> str:
        """When it was taken, RFC 3339."""
    @property
    def time_stamp(self) -> int:
        """Upstream's integer epoch."""
    @property
    def path_to_backup(self) -> str: ...
    @property
    def mode(self) -> str: ...
    @property
    def parent(self) -> str | None: ...
    @property
    def files(self) -> int: ...
    @property
    def size(self) -> int:
        """Bytes of file content it holds."""
    @property
    def added(self) -> int:
        """Bytes its backup added to the repository, as stored."""
    @property
    def metadata(self) -> dict[str, Any]:
        """Everything it records (``stats``, ``excludes``, ``tree``...)."""

class Repository:
    """A repository, made by ``Repository.init`` or ``Repository.open``. Each method opens it
    afresh and takes upstream's option names as keyword arguments."""
    @classmethod
    def init(cls, location: Storage | Path | None = None, /, *, passphrase: str | None = None,
             pack_size: int | None = None, kdf_memory: int | None = None,
             kdf_iterations: int | None = None, kdf_parallelism: int | None = None,
             **options: Any) -> Repository:
        """Creates a repository, encrypted with ``passphrase`` (or the first line of
        ``encrypt_pass_file=``), with packs of ``pack_size`` MiB (1 to 512, default 8) and the
        key's Argon2id costs (``kdf_memory`` MiB, default 32; ``kdf_iterations``, default 3;
        ``kdf_parallelism``, default 1). ``AlreadyExistsError`` where one is; ``BadInputError``
        where other files are."""
    @classmethod
    def init_async(cls, location: Storage | Path | None = None, /, *,
                   passphrase: str | None = None, pack_size: int | None = None,
                   kdf_memory: int | None = None, kdf_iterations: int | None = None,
                   kdf_parallelism: int | None = None,
                   **options: Any) -> Awaitable[Repository]: ...
    @classmethod
    def open(cls, location: Storage | Path | None = None, /, *, passphrase: str | None = None,
             **options: Any) -> Repository:
        """Opens a repository: ``NotFoundError`` where none is, ``WrongKeyError`` for a wrong
        passphrase."""
    @classmethod
    def open_async(cls, location: Storage | Path | None = None, /, *,
                   passphrase: str | None = None, **options: Any) -> Awaitable[Repository]: ...
    @property
    def id(self) -> str: ...
    @property
    def options(self) -> dict[str, Any]: ...
    def snapshots(self, *, backup_name: str | None = None,
                  hostname: str | None = None) -> list[Snapshot]:
        """Oldest first; unreadable ones are left out with a warning."""
    def snapshots_async(self, *, backup_name: str | None = None,
                        hostname: str | None = None) -> Awaitable[list[Snapshot]]: ...
    def backup(self, path_to_backup: Path | None = None, /, *, progress: Progress | None = None,
               cancel: CancelToken | None = None, **options: Any) -> dict[str, Any]:
        """Backs up ``path_to_backup`` as ``backup_name=``; the result holds upstream's metadata
        keys (``curr_backup_level``, ``fs_real_path``, ``client_os``...)."""
    def backup_async(self, path_to_backup: Path | None = None, /, *,
                     progress: Progress | None = None, cancel: CancelToken | None = None,
                     **options: Any) -> Awaitable[dict[str, Any]]: ...
    def restore(self, restore_abs_path: Path | None = None, /, *, accept_partial: bool = False,
                progress: Progress | None = None, cancel: CancelToken | None = None,
                **options: Any) -> dict[str, Any]:
        """Restores the newest snapshot of ``backup_name=`` (or the one at
        ``restore_from_date=``). Damaged files left behind raise ``IncompleteError(message,
        result)`` unless ``accept_partial``."""
    def restore_async(self, restore_abs_path: Path | None = None, /, *,
                      accept_partial: bool = False, progress: Progress | None = None,
                      cancel: CancelToken | None = None,
                      **options: Any) -> Awaitable[dict[str, Any]]: ...
    def forget(self, **options: Any) -> dict[str, Any]:
        """Upstream's ``admin`` action: ``remove_older_than``, ``remove_from_date``,
        ``keep_last``, ``keep_daily``..., ``dry_run``; of one ``backup_name`` when given."""
    def forget_async(self, **options: Any) -> Awaitable[dict[str, Any]]: ...
    def prune(self, *, max_unused: str | float | None = None, dry_run: bool = False,
              progress: Progress | None = None,
              cancel: CancelToken | None = None) -> dict[str, Any]:
        """Removes data no snapshot references; repacks packs more than ``max_unused``
        (``"5%"``, ``0.05``) unused."""
    def prune_async(self, *, max_unused: str | float | None = None, dry_run: bool = False,
                    progress: Progress | None = None,
                    cancel: CancelToken | None = None) -> Awaitable[dict[str, Any]]: ...
    def check(self, *, read_data: str | None = None, progress: Progress | None = None,
              cancel: CancelToken | None = None) -> dict[str, Any]:
        """``read_data``: ``None``, ``"all"``, ``"n/m"``, ``"x%"``. Damage raises
        ``IncompleteError(message, report)``."""
    def check_async(self, *, read_data: str | None = None, progress: Progress | None = None,
                    cancel: CancelToken | None = None) -> Awaitable[dict[str, Any]]: ...
    def repair_index(self, *, progress: Progress | None = None) -> dict[str, Any]: ...
    def repair_index_async(self, *,
                           progress: Progress | None = None) -> Awaitable[dict[str, Any]]: ...
    def copy_to(self, target: Repository, /, *, snapshots: list[str] = ...,
                backup_name: str | None = None, hostname: str | None = None,
                progress: Progress | None = None,
                cancel: CancelToken | None = None) -> dict[str, Any]: ...
    def copy_to_async(self, target: Repository, /, *, snapshots: list[str] = ...,
                      backup_name: str | None = None, hostname: str | None = None,
                      progress: Progress | None = None,
                      cancel: CancelToken | None = None) -> Awaitable[dict[str, Any]]: ...
    def keys(self) -> list[dict[str, Any]]:
        """``[{"id", "current", "created", "hostname", "username", "kdf": {"algorithm",
        "memory_kib", "iterations", "parallelism"}}]``."""
    def add_key(self, new_passphrase: str) -> str: ...
    def change_passphrase(self, new_passphrase: str) -> str: ...
    def remove_key(self, id: str) -> str: ...

class Job:
    """An upstream job document, checked when made (``BadInputError`` names a bad field)."""
    def __init__(self, document: Mapping[str, Any] | str, /, *,
                 allow_unknown_options: bool = False) -> None: ...
    @property
    def job_id(self) -> str | None: ...
    @property
    def description(self) -> str | None: ...
    @property
    def document(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...
    def run(self, *, allow_exec: bool = True, progress: Progress | None = None,
            cancel: CancelToken | None = None, stdin: int | Readable | None = None,
            stdout: int | Writable | None = None) -> list[dict[str, Any]]:
        """One result dict per action, as ``run_job``."""
    def run_async(self, *, allow_exec: bool = True, progress: Progress | None = None,
                  cancel: CancelToken | None = None) -> Awaitable[list[dict[str, Any]]]: ...

def version() -> str:
    """The version of freezer-rs."""

def init(container: Path | None = None, encrypt_pass_file: Path | None = None, *,
         passphrase: str | None = None, pack_size: int | None = None,
         kdf_memory: int | None = None, kdf_iterations: int | None = None,
         kdf_parallelism: int | None = None, **options: Any) -> dict[str, Any]:
    """Creates a repository in ``container`` (a folder or a storage URL), with
    ``Repository.init``'s ``pack_size`` and key costs; returns ``{"id", "created",
    "existing"}``."""

def run_action(options: Mapping[str, Any] | str,
               allow_unknown_options: bool = False, *,
               stdin: int | Readable | None = None,
               stdout: int | Writable | None = None,
               progress: Progress | None = None,
               cancel: CancelToken | None = None) -> dict[str, Any]:
    """Runs one ``freezer_action`` (``backup``, ``restore``, ``info``, ``admin``, and the
    extensions ``check`` and ``prune``) given upstream's option names, as a dict or a JSON
    string; returns the result, with upstream's metadata keys for a backup
    (``curr_backup_level``, ``fs_real_path``, ``client_os``..., the document whole as
    ``backup_metadata``; ``metadata_out`` writes it to a file). A backup into a place that holds
    nothing creates the repository there (``created_repository``); a place holding other files
    raises ``BadInputError``. An unknown option name raises ``BadInputError`` naming the closest
    known one; with ``allow_unknown_options`` it is named in ``warnings``. An action that did not
    complete everything raises ``IncompleteError(message, result)``.

    ``stdin`` is what a backup in mode ``stdin`` reads to its end, ``stdout`` where a restore
    to ``-`` writes: an int file descriptor (duplicated, never closed) or a binary file object.
    A stream the action would not use raises ``BadInputError`` before anything runs."""

def run_action_async(options: Mapping[str, Any] | str,
                     allow_unknown_options: bool = False, *,
                     progress: Progress | None = None,
                     cancel: CancelToken | None = None) -> Awaitable[dict[str, Any]]: ...

def run_job(job: Mapping[str, Any] | str, *, allow_unknown_options: bool = False,
            allow_exec: bool = True,
            stdin: int | Readable | None = None,
            stdout: int | Writable | None = None,
            progress: Progress | None = None,
            cancel: CancelToken | None = None) -> list[dict[str, Any]]:
    """Runs a job document (upstream's: ``job_actions``, each a ``freezer_action`` with
    ``max_retries``, ``max_retries_interval`` and ``mandatory``; ``action_defaults``...).
    Returns one dict per action: the outcome's fields or ``error``, with ``attempts``,
    ``complete``, ``cancelled`` and, for a backup, ``backup_metadata``. A malformed document
    raises ``BadInputError`` naming the field, before any action runs."""

def run_job_async(job: Mapping[str, Any] | str, *, allow_unknown_options: bool = False,
                  allow_exec: bool = True, progress: Progress | None = None,
                  cancel: CancelToken | None = None) -> Awaitable[list[dict[str, Any]]]: ...

def check(options: Mapping[str, Any] | str, read_data: str | None = None, *,
          progress: Progress | None = None,
          cancel: CancelToken | None = None) -> dict[str, Any]:
    """``Repository.check`` of the repository the storage options name."""

def prune(options: Mapping[str, Any] | str, max_unused: str | float | None = None,
          dry_run: bool = False, *, progress: Progress | None = None,
          cancel: CancelToken | None = None) -> dict[str, Any]:
    """``Repository.prune`` of the repository the storage options name."""

def repair_index(options: Mapping[str, Any] | str, *,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Rebuilds the repository's index from its packs."""

def repair_config(options: Mapping[str, Any] | str, *,
                  passphrase: str | None = None) -> dict[str, Any]:
    """Restores a lost or damaged config (and its copies) from a copy, another storage of the
    repository, or the key the passphrase opens; never overwrites an intact config."""

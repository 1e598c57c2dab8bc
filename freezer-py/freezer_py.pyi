"""freezer-rs for Python: OpenStack Freezer's backup and restore, with upstream's option names."""
from typing import Any, Mapping, Protocol

class Readable(Protocol):
    """What ``stdin=`` takes besides a file descriptor: a binary file object."""
    def read(self, n: int, /) -> bytes: ...

class Writable(Protocol):
    """What ``stdout=`` takes besides a file descriptor; ``write`` returning ``None`` counts
    as all written."""
    def write(self, b: bytes, /) -> int | None: ...

class FreezerError(Exception):
    """Base of every freezer_py error."""

class NotFoundError(FreezerError, FileNotFoundError):
    """A repository, snapshot or path does not exist."""

class WrongKeyError(FreezerError, PermissionError):
    """No key of the repository opens with the passphrase."""

class CorruptError(FreezerError):
    """Stored data is damaged."""

class BadInputError(FreezerError, ValueError):
    """An option or document is invalid."""

class IncompleteError(FreezerError):
    """The action ran but did not complete everything; ``args[1]`` is the result dict."""

def version() -> str:
    """The version of freezer-rs."""

def init(container: str, encrypt_pass_file: str | None = None) -> dict[str, Any]:
    """Creates a repository in ``container`` (a folder); encrypted when ``encrypt_pass_file``
    names a file whose first line is the passphrase."""

def run_action(options: Mapping[str, Any] | str,
               allow_unknown_options: bool = False, *,
               stdin: int | Readable | None = None,
               stdout: int | Writable | None = None) -> dict[str, Any]:
    """Runs one ``freezer_action`` (``backup``, ``restore``, ``info``, ``admin``, and the
    extensions ``check`` and ``prune``) given upstream's option names, as a dict or a JSON
    string; returns the result. A backup into a place that holds nothing creates the
    repository there (listed in ``created_repository``); a place holding other files raises
    ``BadInputError``. An option name this release does not know (``encrypt_pas_file``)
    raises ``BadInputError`` naming the closest known one, before anything runs; with
    ``allow_unknown_options`` it is ignored and named in the result's ``warnings``. The GIL
    is released while it runs.

    ``stdin`` is what a backup in mode ``stdin`` reads to its end, ``stdout`` where a restore
    to ``-`` writes: an int file descriptor (duplicated, never closed) or a binary file object
    (``io.BytesIO``, ``open(path, "rb")``, anything with ``read(n)`` / ``write(b)``). An object
    whose descriptor loses nothing (a raw file, a seekable file with nothing buffered) is read
    through it; an output object with a descriptor is flushed and then written through it;
    others are called from the library's threads, each call taking the GIL. Without them, mode
    ``stdin`` and a restore to ``-`` raise ``BadInputError``. An exception from the object's
    ``read``/``write`` fails the action with a ``FreezerError`` naming the stream (a backup then
    records no snapshot); an invalid descriptor or object raises ``ValueError``, and a stream the
    action would not use (``stdin`` for a backup in another mode, ``stdout`` for anything but a
    restore to ``-``) raises ``BadInputError``, before anything runs."""

def run_job(job: Mapping[str, Any] | str, *, allow_unknown_options: bool = False,
            allow_exec: bool = True,
            stdin: int | Readable | None = None,
            stdout: int | Writable | None = None) -> list[dict[str, Any]]:
    """Runs a job document (upstream's: ``job_actions``, each a ``freezer_action`` with
    ``max_retries``, ``max_retries_interval`` and ``mandatory``; ``action_defaults``...), as a
    dict or a JSON string. Returns one dict per action: the outcome's fields or ``error``, with
    ``attempts``, ``complete``, ``cancelled`` and, for a backup, ``backup_metadata`` (upstream's
    metadata document). A malformed document or a misspelt or wrongly typed field raises
    ``BadInputError`` naming the field, before any action runs. ``exec`` actions run their
    ``command`` without a shell; ``allow_exec=False`` refuses them. The GIL is released while
    it runs; Ctrl-C cancels the running action (it stops within seconds, the repository
    valid) and then raises ``KeyboardInterrupt``. ``stdin`` and ``stdout`` are as
    ``run_action``'s: the first backup in mode ``stdin`` reads ``stdin``, the first restore to
    ``-`` writes ``stdout``; a later one reports that the stream was used. A stream that no
    action of the job would use raises ``BadInputError`` before any action runs."""

def check(options: Mapping[str, Any] | str, read_data: str | None = None) -> dict[str, Any]:
    """Verifies the repository the storage options name (``container``, ``storage``,
    ``encrypt_pass_file``...); ``read_data`` is ``None``, ``"all"``, ``"n/m"`` or ``"x%"``.
    Raises ``IncompleteError(message, report)`` when something is damaged."""

def prune(options: Mapping[str, Any] | str, max_unused: float = 0.05,
          dry_run: bool = False) -> dict[str, Any]:
    """Removes the data no snapshot references; repacks packs more than ``max_unused``
    (a fraction) unused."""

def repair_index(options: Mapping[str, Any] | str) -> dict[str, Any]:
    """Rebuilds the repository's index from its packs."""

def repair_config(options: Mapping[str, Any] | str) -> dict[str, Any]:
    """Restores a lost or damaged config (and its copies) from a copy, another storage of the
    repository, or the key the passphrase opens; never overwrites an intact config."""

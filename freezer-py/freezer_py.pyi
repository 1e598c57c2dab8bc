"""freezer-rs for Python: OpenStack Freezer's backup and restore, with upstream's option names."""
from typing import Any, Mapping

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
               allow_unknown_options: bool = False) -> dict[str, Any]:
    """Runs one ``freezer_action`` (``backup``, ``restore``, ``info``, ``admin``, and the
    extensions ``check`` and ``prune``) given upstream's option names, as a dict or a JSON
    string; returns the result. A backup into a place that holds nothing creates the
    repository there (listed in ``created_repository``); a place holding other files raises
    ``BadInputError``. An option name this release does not know (``encrypt_pas_file``)
    raises ``BadInputError`` naming the closest known one, before anything runs; with
    ``allow_unknown_options`` it is ignored and named in the result's ``warnings``. The GIL
    is released while it runs."""

def run_job(job: Mapping[str, Any] | str, *, allow_unknown_options: bool = False,
            allow_exec: bool = True) -> list[dict[str, Any]]:
    """Runs a job document (upstream's: ``job_actions``, each a ``freezer_action`` with
    ``max_retries``, ``max_retries_interval`` and ``mandatory``; ``action_defaults``...), as a
    dict or a JSON string. Returns one dict per action: the outcome's fields or ``error``, with
    ``attempts``, ``complete``, ``cancelled`` and, for a backup, ``backup_metadata`` (upstream's
    metadata document). A malformed document or a misspelt or wrongly typed field raises
    ``BadInputError`` naming the field, before any action runs. ``exec`` actions run their
    ``command`` without a shell; ``allow_exec=False`` refuses them. The GIL is released while
    it runs; Ctrl-C cancels the running action (it stops within seconds, the repository
    valid) and then raises ``KeyboardInterrupt``."""

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

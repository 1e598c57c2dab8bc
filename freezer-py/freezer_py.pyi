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

def run_action(options: Mapping[str, Any] | str) -> dict[str, Any]:
    """Runs one ``freezer_action`` (``backup`` or ``restore``) given upstream's option names,
    as a dict or a JSON string; returns the result. The GIL is released while it runs."""

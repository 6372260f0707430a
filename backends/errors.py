"""Error family shared by every layer.

Every error a user can cause or meet (bad input, bad configuration, an unreachable
server, a malformed query) is a :class:`StorageError` whose message is one line that
names the problem. The CLI turns these into a one-line message and an exit code in
one place; library callers catch the family or the builtin each one also derives from.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class: a problem the user can understand from one line."""

    exit_code = 2


class ValidationError(StorageError, ValueError):
    """A record or argument that does not fit the canonical schema."""


class ConfigError(StorageError):
    """Invalid or inconsistent settings (environment, .env, CLI options)."""


class NotFoundError(StorageError, LookupError):
    """The thing asked for does not exist."""

    exit_code = 1


class QueryError(StorageError):
    """A search or SQL query that cannot run as written."""


class BackendUnavailable(StorageError, ConnectionError):
    """A server or file that cannot be reached or opened."""


class IntegrityError(StorageError):
    """Stored bytes that do not match what was written (checksum, row count, schema)."""


class LockedError(StorageError):
    """Another job holds the lock this operation needs."""

    exit_code = 3


class UnsupportedOperation(StorageError, NotImplementedError):
    """The backend does not offer this capability."""


def redact_dsn(text: str) -> str:
    """Remove passwords from any DSN/URL found in ``text`` (``user:secret@`` -> ``user:***@``)."""
    import re

    text = re.sub(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@", r"\g<pre>***@", text)
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\"[^\"]*\"|\S+)", r"\1***", text)

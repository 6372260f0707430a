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


MAX_REDACT_CHARS = 1 << 20  # longer text is not scanned: it is replaced by a note of its length
_SECRET_KEYS = ("password", "passwd", "pwd")
_KEY_END = set(" \t\r\n\f\v&;,)")


def redact_dsn(text: str) -> str:
    """Remove passwords from any DSN/URL found in ``text``, in time linear in its length.

    ``scheme://user:secret@host``, the same without a scheme (``user:secret@host``) and
    ``password=secret`` (libpq keywords, URL query parameters, quoted values too) become
    ``user:***@host`` and ``password=***``. Text longer than :data:`MAX_REDACT_CHARS` is
    not shown at all (no sane message is that long, and a cut could split a secret).
    """
    if len(text) > MAX_REDACT_CHARS:
        return f"<{len(text)} characters, not shown>"
    return _redact_keys("".join(_redact_userinfo(t) for t in _tokens(text)))


def _tokens(text: str) -> list[str]:
    """``text`` split into words and the whitespace between them (joined back unchanged)."""
    out: list[str] = []
    start = 0
    space = None
    for i, ch in enumerate(text):
        s = ch.isspace()
        if s is not space and i > start:
            out.append(text[start:i])
            start = i
        space = s
    out.append(text[start:])
    return out


def _redact_userinfo(token: str) -> str:
    """``[scheme://]user:secret@rest`` -> ``[scheme://]user:***@rest`` (the last ``@`` ends it)."""
    at = token.rfind("@")
    if at < 0:
        return token
    scheme = token.find("://")
    begin = scheme + 3 if 0 <= scheme < at else 0
    colon = token.find(":", begin, at)
    if colon < 0:
        return token
    return f"{token[: colon + 1]}***{token[at:]}"


def _redact_keys(text: str) -> str:
    """``password=secret`` / ``password = 'a secret'`` -> ``password=***`` (one pass)."""
    lower = text.lower()
    out: list[str] = []
    pos = 0  # text before pos is already in out
    i = 0
    n = len(text)
    nxt = {k: lower.find(k) for k in _SECRET_KEYS}  # next occurrence of each key (-1: none left)
    while True:
        for k, at in nxt.items():
            if 0 <= at < i:  # each key's search only ever moves forward: linear in all
                nxt[k] = lower.find(k, i)
        hits = [(at, k) for k, at in nxt.items() if at >= 0]
        if not hits:
            break
        j, key = min(hits)
        k = j + len(key)
        while k < n and text[k] in " \t":
            k += 1
        if k >= n or text[k] != "=":
            i = j + len(key)
            continue
        k += 1
        while k < n and text[k] in " \t":
            k += 1
        if k < n and text[k] in "'\"":
            close = text.find(text[k], k + 1)
            end = n if close < 0 else close + 1
        else:
            end = k
            while end < n and text[end] not in _KEY_END:
                end += 1
        out.append(text[pos:k])
        out.append("***")
        pos = i = end
    out.append(text[pos:])
    return "".join(out)

"""Read legacy run files robustly: every record comes back parsed or as a :class:`Rejection`.

Nothing here raises on bad input. A damaged line (invalid JSON, a truncated last line,
bytes that are not UTF-8, a line over the size limit) becomes one ``Rejection`` naming
the file and line; a file that cannot be read at all (a directory or FIFO where a file
is expected, a broken symbolic link, no permission) becomes one ``Rejection`` naming the
file. The caller decides what a record means (see :mod:`magsag.ingest.legacy_mapping`).

JSON Lines are parsed with orjson when it is installed (faster than the standard
library). orjson turns integers beyond 64 bits into
floats, silently; a line holding a run of 19 or more digits is therefore parsed with the
standard library, which keeps such integers exact. Values that JSON cannot hold
(``NaN``, ``Infinity``) are refused by both paths.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from pathlib import Path
from typing import Any

try:  # pragma: no cover - exercised whichever way the environment is
    import orjson

    _fast_loads = orjson.loads
    _FAST_ERRORS: tuple[type[BaseException], ...] = (orjson.JSONDecodeError,)

    def _fast_dumps(value: Any) -> str:
        return orjson.dumps(value).decode()

    _FAST_DUMP_ERRORS: tuple[type[BaseException], ...] = (orjson.JSONEncodeError,)
except ImportError:  # pragma: no cover
    orjson = None  # type: ignore[assignment]
    _fast_loads = json.loads
    _FAST_ERRORS = (ValueError,)

    def _fast_dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)

    _FAST_DUMP_ERRORS = (ValueError, TypeError)


DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
MAX_TS_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_BOM = b"\xef\xbb\xbf"
_DIGITS = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
_LONG_INT = b"0" * 19


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record (or a whole file) that was not imported, and why."""

    path: str
    where: int | str | None
    reason: str

    def __str__(self) -> str:
        if self.where is None:
            return f"{self.path}: {self.reason}"
        return f"{self.path}:{self.where}: {self.reason}"


class BadValue(ValueError):
    """A field that does not have the type or range the legacy format gives it."""


# --------------------------------------------------------------------- JSON values


def loads_line(raw: bytes) -> Any:
    """Parse one JSON text (bytes). Raises ValueError (incl. RecursionError-free messages)."""
    if _LONG_INT in raw.translate(_DIGITS):
        return _exact_loads(raw)
    return _fast_loads(raw)


def _exact_loads(raw: bytes | str) -> Any:
    return json.loads(raw, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def dumps_payload(value: Any) -> str:
    """Compact JSON text of a parsed value; raises BadValue for what no tier can store."""
    try:
        text = _fast_dumps(value)
    except _FAST_DUMP_ERRORS:
        # Integers beyond 64 bits (kept exact by the standard-library path) or deep nesting.
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except RecursionError:
            raise BadValue("nested too deeply") from None
        except ValueError:
            raise BadValue("contains a non-finite number (NaN or Infinity)") from None
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    if "\\u0000" in text:
        raise BadValue("contains a NUL character (\\u0000), which the stores refuse")
    return text


def describe_json_error(raw: bytes, exc: BaseException, *, last_line: bool) -> str:
    """A short reason for a line that did not parse."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as uexc:
        return f"not valid UTF-8 (byte 0x{raw[uexc.start]:02x} at column {uexc.start + 1})"
    if isinstance(exc, RecursionError):
        reason = "invalid JSON: nested too deeply"
    else:
        msg = getattr(exc, "msg", None) or str(exc).split(":", 1)[0]
        msg = msg.split(", ", 1)[0]  # the parser's own words, without the detail later orjson releases add
        pos = getattr(exc, "pos", None)
        reason = f"invalid JSON: {msg}" + (f" at column {pos + 1}" if isinstance(pos, int) else "")
    if last_line:
        return f"truncated last line (no newline at end of file); {reason}"
    return reason


# ------------------------------------------------------------------------ scalars


def epoch_us(value: Any, name: str = "timestamp") -> int:
    """Float/int epoch seconds, or an ISO-8601 string, -> integer microseconds (UTC).

    An ISO string without a zone is UTC: the legacy logger wrote ``datetime.utcnow()``.
    """
    if isinstance(value, float):
        if not (0.0 <= value <= MAX_TS_SECONDS):
            raise BadValue(f"{name} {value!r} is out of range" if math.isfinite(value) else f"{name} is not finite")
        return round(value * 1_000_000)
    if isinstance(value, int) and not isinstance(value, bool):
        if not (0 <= value <= MAX_TS_SECONDS):
            raise BadValue(f"{name} {value} is out of range")
        return value * 1_000_000
    if isinstance(value, str):
        return iso_us(value, name)
    if value is None:
        raise BadValue(f"missing {name}")
    raise BadValue(f"{name} must be a number (epoch seconds) or an ISO-8601 string, got {_kind(value)}")


def iso_us(value: Any, name: str = "ts") -> int:
    if not isinstance(value, str):
        if value is None:
            raise BadValue(f"missing {name}")
        raise BadValue(f"{name} must be an ISO-8601 string, got {_kind(value)}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(f"{name} is not an ISO-8601 timestamp: {_clip(value, 40)!r}") from None
    if dt.tzinfo is None or dt.tzinfo.utcoffset(dt) is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if us < 0:
        raise BadValue(f"{name} {_clip(value, 40)!r} is before 1970")
    return us


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def kind(value: Any) -> str:
    return _kind(value)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def line_key(raw: bytes) -> str:
    """A short stable digest of a record's bytes (whitespace at either end ignored)."""
    return blake2b(raw.strip(), digest_size=12).hexdigest()


# ------------------------------------------------------------------------ files


def entry_problem(entry: os.DirEntry[str]) -> str | None:
    """Why a directory entry cannot be read as a file, or None when it can."""
    try:
        if entry.is_file():
            return None
        if entry.is_dir():
            return "a directory"
        if entry.is_symlink():
            try:
                os.stat(entry.path)
            except OSError:
                return "broken symbolic link"
        return "not a regular file (FIFO, socket or device)"
    except OSError as exc:
        return exc.strerror or str(exc)


def open_regular(path: Path, rejections: list[Rejection], *, checked: bool = False) -> Any | None:
    """Open ``path`` for binary reading if it is a readable regular file.

    Returns None when the file does not exist (any legacy file may be missing) or when it
    cannot be read, in which case one file-level Rejection is added. ``checked`` skips the
    type check when the caller already made it (from a directory listing).
    """
    if not checked:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if os.path.islink(path):
                rejections.append(Rejection(str(path), None, "cannot read: broken symbolic link"))
            return None
        except OSError as exc:
            rejections.append(Rejection(str(path), None, f"cannot read: {exc.strerror or exc}"))
            return None
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (FIFO, socket or device)"
            rejections.append(Rejection(str(path), None, f"cannot read: {what}"))
            return None
    try:
        return open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        rejections.append(Rejection(str(path), None, f"cannot read: {exc.strerror or exc}"))
        return None


@dataclass(slots=True)
class RawLine:
    no: int
    raw: bytes
    obj: Any


def read_jsonl(
    path: Path, rejections: list[Rejection], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, *, checked: bool = False
) -> Iterator[RawLine]:
    """Yield each parsed line of a JSON Lines file; add a Rejection for each bad one.

    Blank lines are skipped. A line longer than ``max_line_bytes`` is skipped without
    being held in memory whole. A UTF-8 byte-order mark at the start is ignored.
    """
    fh = open_regular(path, rejections, checked=checked)
    if fh is None:
        return
    where = str(path)
    with fh:
        no = 0
        limit = max_line_bytes + 1
        try:
            while True:
                raw = fh.readline(limit)
                if not raw:
                    return
                no += 1
                if len(raw) == limit and raw[-1] != 10:
                    size = len(raw)
                    while raw and raw[-1] != 10:
                        raw = fh.readline(1 << 20)
                        size += len(raw)
                    rejections.append(
                        Rejection(where, no, f"line is {size:,} bytes, over the limit of {max_line_bytes:,} bytes")
                    )
                    continue
                if no == 1 and raw.startswith(_BOM):
                    raw = raw[3:]
                try:
                    obj = loads_line(raw)
                except (*_FAST_ERRORS, ValueError, RecursionError) as exc:
                    if not raw.strip():
                        continue
                    last = raw[-1] != 10
                    rejections.append(Rejection(where, no, describe_json_error(raw, exc, last_line=last)))
                    continue
                yield RawLine(no, raw, obj)
        except OSError as exc:
            rejections.append(Rejection(where, no + 1, f"read error: {exc.strerror or exc}"))


def read_json_document(path: Path, rejections: list[Rejection], *, checked: bool = False) -> tuple[bool, Any]:
    """Parse a whole-file JSON document. Returns (found, value); value is None when unusable."""
    fh = open_regular(path, rejections, checked=checked)
    if fh is None:
        return (os.path.lexists(path), None)
    where = str(path)
    with fh:
        try:
            data = fh.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as exc:
            rejections.append(Rejection(where, None, f"read error: {exc.strerror or exc}"))
            return (True, None)
    if len(data) > MAX_DOCUMENT_BYTES:
        rejections.append(Rejection(where, None, f"file is over the limit of {MAX_DOCUMENT_BYTES:,} bytes"))
        return (True, None)
    if data.startswith(_BOM):
        data = data[3:]
    if not data.strip():
        return (True, None)  # an empty file: nothing to import, nothing wrong
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        rejections.append(Rejection(where, line, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})"))
        return (True, None)
    try:
        return (True, _exact_loads(text))
    except json.JSONDecodeError as exc:
        trunc = "; the file looks truncated" if exc.pos >= len(text.rstrip()) else ""
        rejections.append(Rejection(where, exc.lineno, f"invalid JSON: {exc.msg} at column {exc.colno}{trunc}"))
    except RecursionError:
        rejections.append(Rejection(where, 1, "invalid JSON: nested too deeply"))
    except ValueError as exc:
        rejections.append(Rejection(where, None, f"invalid JSON: {exc}"))
    return (True, None)

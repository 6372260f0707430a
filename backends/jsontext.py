"""JSON text in and out, by orjson, for every data path of the package.

orjson writes compact UTF-8 (what the stores keep) faster than the standard library and
reads JSON text or bytes. Where its behaviour differs from ``json``, it is handled here
once:

* Integers beyond 64 bits: orjson refuses to write them (and reads them as floats). A
  value holding one is written by the standard library instead, which keeps it exact.
* Non-string keys are written as strings, like ``json`` does (``OPT_NON_STR_KEYS``).
* With a ``default``, dates and dataclasses go to it, as with ``json``.
* NaN and infinities: orjson writes ``null``; callers that must refuse them check
  (the canonical schema's ``dump_json`` does).

Where the standard library stays on purpose, because its exact output or input rules are
required: the text of run tags (``["a", "b"]``, with ``json``'s separators: every tier
stores and compares that exact text, so old and new rows must match); the CLI's CSV cells
holding lists or maps (the same text); and, in the legacy importer, the reader's exact big
integers and refusal of ``NaN`` constants and the ``ensure_ascii`` text hashed into the
cost ledger's record ids (which must not change).

orjson is imported on first use, so importing the package's error classes needs nothing
but Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_lib: Any = None
_OPTS: dict[str, int] = {}


def _orjson() -> Any:
    global _lib
    if _lib is None:
        import orjson

        _OPTS.update(
            base=orjson.OPT_NON_STR_KEYS,
            passthrough=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS,
            sort=orjson.OPT_SORT_KEYS,
            indent=orjson.OPT_INDENT_2,
        )
        _lib = orjson
    return _lib


def _options(default: Callable[[Any], Any] | None, extra: int = 0) -> int:
    return _OPTS["base"] | extra | (_OPTS["passthrough"] if default is not None else 0)


def dumpb(value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON bytes of ``value`` (NaN and infinities: orjson writes null)."""
    oj = _lib or _orjson()
    try:
        return oj.dumps(value, default=default, option=_options(default, _OPTS["sort"] if sort_keys else 0))
    except oj.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        text = json.dumps(
            value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys, default=default, allow_nan=False
        )
        return text.encode()


def dumps(value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON text of ``value`` (UTF-8, not ASCII-escaped)."""
    return dumpb(value, sort_keys=sort_keys, default=default).decode()


def pretty(value: Any, *, default: Callable[[Any], Any] | None = None) -> str:
    """JSON text indented by two spaces (for people)."""
    oj = _lib or _orjson()
    try:
        return oj.dumps(value, default=default, option=_options(default, _OPTS["indent"])).decode()
    except oj.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, indent=2, default=default)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """The value of JSON text or bytes; raises ``ValueError`` (``orjson.JSONDecodeError``) when malformed."""
    return (_lib or _orjson()).loads(text)


def tags_text(tags: list[str]) -> str:
    """The canonical text of a run's tags: ``["a", "b"]`` (the standard library's, kept exactly)."""
    return json.dumps(tags, ensure_ascii=False)

"""JSON text in and out, by orjson, for every data path of the package.

orjson writes compact UTF-8 (what the stores keep) several times faster than the standard
library and reads JSON text or bytes. Two behaviours differ from ``json``, and are handled
here once:

* Integers beyond 64 bits: orjson refuses to write them (and reads them as floats). A
  value holding one is written by the standard library instead, which keeps it exact.
  Readers that must keep such integers exact (the legacy importer) use ``json`` on
  purpose; see ``magsag/ingest/legacy_reader.py``.
* Non-string keys: written as strings, like ``json`` does (``OPT_NON_STR_KEYS``).

Where the standard library stays on purpose: ``ensure_ascii=True`` output that feeds a
hash of record content (``magsag/ingest/legacy_costs.py``), and ``parse_constant`` /
exact big integers in the legacy reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

_BASE = orjson.OPT_NON_STR_KEYS
# With a ``default``, dates and dataclasses go to it as they would with ``json`` (not orjson's own forms).
_PASS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _options(default: Callable[[Any], Any] | None, extra: int = 0) -> int:
    return _BASE | extra | (_PASS if default is not None else 0)


def dumpb(value: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact UTF-8 JSON bytes of ``value`` (NaN and infinities: orjson writes null)."""
    opts = _options(default, orjson.OPT_SORT_KEYS if sort_keys else 0)
    try:
        return orjson.dumps(value, default=default, option=opts)
    except orjson.JSONEncodeError as exc:
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
    try:
        return orjson.dumps(value, default=default, option=_options(default, orjson.OPT_INDENT_2)).decode()
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise
        return json.dumps(value, ensure_ascii=False, indent=2, default=default)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """The value of JSON text or bytes; raises ``ValueError`` (``orjson.JSONDecodeError``) when malformed."""
    return orjson.loads(text)


DecodeError = orjson.JSONDecodeError
EncodeError = orjson.JSONEncodeError

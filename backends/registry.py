"""Find a backend class by name: built-in, entry point, or dotted path.

Third-party backends register under the ``magsag.storage.backends`` entry-point group
(or are named by a dotted path such as ``mypkg.store:MyBackend``); nothing here imports
them until they are asked for.
"""

from __future__ import annotations

import importlib
import re
from importlib.metadata import entry_points

from magsag.backends.base import StorageBackend
from magsag.backends.errors import ConfigError

ENTRY_POINT_GROUP = "magsag.storage.backends"
MAX_DOTTED = 256
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = re.compile(rf"{_IDENT}(?:\.{_IDENT})*(?::{_IDENT}(?:\.{_IDENT})*)?")
BUILTIN = {
    "sqlite": "magsag.backends.sqlite.store:SQLiteStorageBackend",
    "postgres": "magsag.backends.postgres.store:PostgresStorageBackend",
    "timescale": "magsag.backends.postgres.store:PostgresStorageBackend",
}


def _load(target: str, name: str) -> type[StorageBackend]:
    module_name, _, attr = target.partition(":")
    if not attr:
        module_name, _, attr = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise ConfigError(f"backend {name!r}: cannot import {module_name} ({exc})") from None
    except AttributeError:
        raise ConfigError(f"backend {name!r}: {module_name} has no {attr}") from None
    if not (isinstance(obj, type) and issubclass(obj, StorageBackend)):
        raise ConfigError(f"backend {name!r}: {target} is not a StorageBackend subclass")
    return obj


def known_backends() -> list[str]:
    names = set(BUILTIN)
    names.update(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    return sorted(names)


def resolve_backend_class(name: str) -> type[StorageBackend]:
    """``sqlite``/``postgres``/``timescale``, an entry-point name (``clickhouse`` is one), or ``pkg.module:Class``."""
    key = (name or "").strip()
    if key.lower() in BUILTIN:
        return _load(BUILTIN[key.lower()], key)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == key:
            return _load(ep.value, key)
    if ":" in key or "." in key:
        if len(key) > MAX_DOTTED or not _DOTTED.fullmatch(key):
            shown = repr(key) if len(key) <= 80 else f"{key[:60]!r}... ({len(key)} characters)"
            raise ConfigError(f"backend {shown} is not a dotted path like pkg.module:Class (at most {MAX_DOTTED})")
        return _load(key, key)
    raise ConfigError(f"unknown backend {name!r} (known: {', '.join(known_backends())}, or a dotted path)")

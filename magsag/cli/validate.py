"""Checks of option values at the door, before a command touches anything.

Each check raises :class:`~magsag.backends.errors.ConfigError` (exit 2) with one line
that names the option.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from magsag.backends.errors import ConfigError
from magsag.lakehouse.settings import StorageSettings


def _resolved(path: Path | str) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output(output: Path, settings: StorageSettings, option: str = "--output") -> None:
    """Refuse an output file that is the hot store, one of its companions, or inside the lake.

    The SQLite store's companions are every file next to it whose name starts with the
    store's (``-wal``, ``-shm``, ``-journal``, ``.magsag-journal/``, ``.tier-lock``).
    Paths are compared after following symbolic links; an existing file is also compared
    by identity (a hard link to the store is the store).
    """
    out = _resolved(output)
    if settings.backend.strip().lower() == "sqlite":
        db = _resolved(settings.db_path)
        journal = db.with_name(db.name + ".magsag-journal")
        same = out.exists() and db.exists() and os.path.samefile(out, db)
        if same or (out.parent == db.parent and out.name.startswith(db.name)) or _inside(out, journal):
            raise ConfigError(f"{option}: {output} is the hot store {settings.db_path} or one of its files; refused")
    url = settings.lake_url.strip()
    if "://" not in url or url.lower().startswith(("file://", "local://")):
        lake = _resolved(url.split("://", 1)[-1])
        if _inside(out, lake):
            raise ConfigError(f"{option}: {output} is inside the lake {lake}; write the result elsewhere")


def check_id(value: str | None, option: str) -> str | None:
    """An id option (``--run-id``): at most :data:`~magsag.backends.schema.MAX_ID_LEN` characters."""
    from magsag.backends.schema import MAX_ID_LEN

    if value is not None and len(value) > MAX_ID_LEN:
        raise ConfigError(f"{option}: {len(value)} characters, longer than any id (at most {MAX_ID_LEN})")
    return value


WORKERS_PER_CORE = 4  # --workers above this many per core only thrash
MIN_EVERY_SECONDS = 1.0
MAX_EVERY_SECONDS = 366 * 86400.0


def cores() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_workers(value: int | None, option: str = "--workers") -> int | None:
    """A process count: 0 .. :data:`WORKERS_PER_CORE` x the cores."""
    if value is None:
        return None
    top = WORKERS_PER_CORE * cores()
    if not 0 <= value <= top:
        raise ConfigError(
            f"{option}: {value} is out of range 0..{top} ({WORKERS_PER_CORE} per core, {cores()} cores here)"
        )
    return value


def check_every(seconds: float, text: str, option: str = "--every") -> float:
    """A job interval: at least 1 s, at most 366 days."""
    if not MIN_EVERY_SECONDS <= seconds <= MAX_EVERY_SECONDS:
        raise ConfigError(f"{option}: {text!r} is out of range (from 1s to 366d)")
    return seconds


MAX_INT_OPTION = 1_000_000_000  # no count, limit or size option of a command is larger
MAX_FLOAT_OPTION = 1e9
MIN_WHEN = datetime(1900, 1, 1, tzinfo=UTC)
MAX_WHEN = datetime(9999, 1, 1, tzinfo=UTC)


def _option_names() -> dict[str, str]:
    """Parameter name -> how the user spells it (``limit`` -> ``--limit``), from click."""
    import click

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    out = {}
    for p in ctx.command.params:
        if p.name:
            out[p.name] = max(p.opts, key=len) if p.opts else p.name
    return out


def check_numbers(kwargs: dict[str, Any]) -> None:
    """Every number a command was given is finite and within sane bounds.

    Integers beyond :data:`MAX_INT_OPTION` (SQLite, DuckDB and timedelta overflow long
    before a user means them) and floats that are infinite, NaN or huge are refused with
    the option's name, before the command does anything.
    """
    names: dict[str, str] | None = None
    for key, value in kwargs.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, int):
            bad = abs(value) > MAX_INT_OPTION
            bound = f"{MAX_INT_OPTION:,}"
        else:
            bad = not math.isfinite(value) or abs(value) > MAX_FLOAT_OPTION
            bound = f"{MAX_FLOAT_OPTION:g}"
        if bad:
            names = names if names is not None else _option_names()
            option = names.get(key, "--" + key.replace("_", "-"))
            raise ConfigError(f"{option}: {value!r} is out of range (a finite number up to {bound})")


def check_when(value: datetime, text: str, option: str) -> datetime:
    """A time option within 1900-01-01 .. 9999-01-01 (UTC)."""
    if not MIN_WHEN <= value <= MAX_WHEN:
        raise ConfigError(f"{option}: {text!r} is out of range (1900-01-01 .. 9999-01-01)")
    return value

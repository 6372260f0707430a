"""What every ``magsag data`` command shares: options, error handling, output.

Commands stay thin: open the store, call one library function, print. Errors are turned
into one line on stderr and an exit code here, in :func:`command`, and nowhere else:
0 ok, 1 not found / no results, 2 usage or configuration error, 3 locked by another job.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from magsag.backends import jsontext
from magsag.backends.durations import is_duration, parse_duration
from magsag.backends.errors import ConfigError, StorageError, redact_dsn
from magsag.backends.schema import utc_now
from magsag.lakehouse.settings import StorageSettings, load_settings

T = TypeVar("T")

# Piped output is not cut at 80 columns: scripts and logs get whole lines.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False)

# ----------------------------------------------------------------- options
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend", help="Hot store: sqlite, postgres, timescale (default: MAGSAG_STORAGE_BACKEND or sqlite)."
    ),
]
DbPathOpt = Annotated[
    Path | None, typer.Option("--db-path", help="SQLite file (default: MAGSAG_STORAGE_DB_PATH or .magsag/storage.db).")
]
DsnOpt = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL DSN (default: MAGSAG_STORAGE_DSN).")]
LakeOpt = Annotated[
    str | None,
    typer.Option("--lake", help="Lake root: a folder or s3://bucket/prefix (default: MAGSAG_STORAGE_LAKE_URL)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Start: ISO date/time (UTC unless an offset is given) or age like 7d, 12h."),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End (exclusive): ISO date/time or age like 1d.")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Only this agent slug.")]


def settings_from(
    backend: str | None = None, db_path: Path | None = None, dsn: str | None = None, **more: Any
) -> StorageSettings:
    """Settings from environment/.env with the command's options on top."""
    return load_settings(backend=backend, db_path=db_path, dsn=dsn, **more)


def parse_when(text: str | None, option: str, *, now: datetime | None = None) -> datetime | None:
    """``2025-10-23``, ``2025-10-23T08:00``, ``...+02:00``, or an age (``7d``, ``12h``, ``30m``)."""
    from magsag.cli.validate import check_when

    if text is None or text == "":
        return None
    if is_duration(text):
        delta = parse_duration(text, option)
        try:
            return check_when((now or utc_now()) - delta, text, option)
        except OverflowError:
            raise ConfigError(f"{option}: {text!r} reaches back before year 1") from None
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(raw)
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except ValueError:
        raise ConfigError(
            f"{option}: cannot read {text!r} as a date/time (use 2025-10-23, 2025-10-23T08:00 or 7d)"
        ) from None
    except OverflowError:
        raise ConfigError(f"{option}: {text!r} is out of range (1900-01-01 .. 9999-01-01)") from None
    return check_when(value, text, option)


def parse_day(text: str, option: str) -> date:
    try:
        if not text.isascii():
            raise ValueError(text)
        return date.fromisoformat(text.strip().removeprefix("dt="))
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is not a day (use YYYY-MM-DD)") from None


# ------------------------------------------------------------- error handling
def fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {redact_dsn(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def command(fn: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command: library errors -> one line on stderr + exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        from magsag.cli.validate import check_numbers

        try:
            check_numbers(kwargs)  # every numeric option in range, before anything runs
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except StorageError as exc:
            raise fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except (OSError, ValueError) as exc:
            raise fail(_describe(exc), 2) from None
        except Exception as exc:
            if os.environ.get("MAGSAG_DEBUG"):
                raise
            raise fail(f"internal error: {_describe(exc)} (set MAGSAG_DEBUG=1 for a traceback)", 70) from None

    return wrapper


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ------------------------------------------------------------------- output
def print_json(value: Any) -> None:
    sys.stdout.write(jsontext.pretty(value, default=str) + "\n")
    sys.stdout.flush()


def _cell(value: Any, width: int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = jsontext.dumps(value)
    elif isinstance(value, str) and len(value) == 32 and value[10] == "T" and value.endswith("+00:00"):
        text = value[:10] + " " + value[11:23]  # ISO UTC timestamp -> compact, millisecond precision
    elif isinstance(value, float):
        text = f"{value:.6g}"
    else:
        text = str(value)
    if width and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def print_table(
    rows: Sequence[dict[str, Any]],
    columns: Iterable[str],
    *,
    title: str | None = None,
    widths: dict[str, int] | None = None,
) -> None:
    cols = list(columns)
    widths = widths or {}
    if not rows:
        err_console.print(f"{title or 'no rows'}" if title else "no rows")
        return
    table = Table(title=title, show_lines=False, header_style="bold", expand=False)
    for c in cols:
        table.add_column(c, overflow="fold", max_width=widths.get(c))
    for row in rows:
        table.add_row(*(_cell(row.get(c), widths.get(c)) for c in cols))
    console.print(table)


def print_kv(pairs: dict[str, Any], *, title: str | None = None) -> None:
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for k, v in pairs.items():
        table.add_row(k, _cell(v, None))
    console.print(table)

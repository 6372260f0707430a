"""What every ``magsag data`` command shares: options, error handling, output.

Commands stay thin: open the store, call one library function, print. Errors are turned
into one line on stderr and an exit code here, in :func:`command`, and nowhere else:
0 ok, 1 not found / no results, 2 usage or configuration error, 3 locked by another job,
70 unexpected internal error (EXIT_INTERNAL), 130 interrupted (docs/cli.md lists them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from magsag.backends.durations import is_duration, parse_duration
from magsag.backends.errors import ConfigError, StorageError, redact_dsn
from magsag.backends.schema import utc_now

# the output helpers, re-exported for the command modules (magsag/cli/render.py)
from magsag.cli.render import console, err_console, error, print_json, print_kv, print_table, say  # noqa: F401
from magsag.lakehouse.settings import SettingsWarning, StorageSettings, load_settings

T = TypeVar("T")
EXIT_INTERNAL = 70  # sysexits EX_SOFTWARE: an exception outside the StorageError family (documented)

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
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="table, json, jsonl, csv or tsv (parquet where noted); --json is --format json."),
]
OutputOpt = Annotated[Path | None, typer.Option("--output", help="Write the result to this file instead of stdout.")]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Start: ISO date/time (UTC unless an offset is given) or age like 7d, 12h."),
]
UntilOpt = Annotated[str | None, typer.Option("--until", help="End (exclusive): ISO date/time or age like 1d.")]
AgentOpt = Annotated[str | None, typer.Option("--agent", help="Only this agent slug.")]


def settings_from(
    backend: str | None = None, db_path: Path | None = None, dsn: str | None = None, **more: Any
) -> StorageSettings:
    """Settings from environment/.env with the command's options on top.

    A ``MAGSAG_*`` variable no setting reads is named on stderr once, with the closest valid key.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SettingsWarning)
        settings = load_settings(backend=backend, db_path=db_path, dsn=dsn, **more)
    for w in caught:
        text = str(w.message)
        if issubclass(w.category, SettingsWarning) and text not in _warned:
            _warned.add(text)
            say(("warning:", "yellow"), " ", text, err=True)
        elif not issubclass(w.category, SettingsWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return settings


_warned: set[str] = set()


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
    error(redact_dsn(message))
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
            raise fail(
                f"internal error: {_describe(exc)} (set MAGSAG_DEBUG=1 for a traceback)", EXIT_INTERNAL
            ) from None

    return wrapper


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


GRACE_S = 1.5  # after Ctrl-C, how long the cancelled command may take to clean up


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` with a Ctrl-C that always ends the command within :data:`GRACE_S`.

    The first SIGINT cancels the command's task (its ``finally`` blocks close stores and
    stop workers); if it has not finished :data:`GRACE_S` later, or on a second SIGINT,
    the process exits at once with 130. Nothing is half-written either way: every write
    is a transaction of the store (SQLite WAL, PostgreSQL) or a staged lake file committed
    by its manifest entry last, and worker processes end when their pipes close. A command
    with its own SIGINT handler (tier's graceful stop) keeps it.
    """
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return asyncio.run(coro)
    loop = asyncio.new_event_loop()
    task = loop.create_task(coro)
    interrupted = threading.Event()

    def hard_exit() -> None:
        with contextlib.suppress(Exception):
            error("interrupted")
            sys.stderr.flush()
        os._exit(130)

    def on_sigint(signum: int, frame: Any) -> None:
        if interrupted.is_set():
            hard_exit()
        interrupted.set()
        loop.call_soon_threadsafe(task.cancel)
        timer = threading.Timer(GRACE_S, hard_exit)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGINT, on_sigint)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in rest:
                t.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

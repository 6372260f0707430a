"""Streaming committed events: what every hot store's ``stream_events`` shares.

A stream yields events in commit order, each with a ``cursor``: an opaque string that
names its position. ``stream_events(..., cursor=c)`` resumes strictly after ``c``, so a
consumer that reconnects with the last cursor it received misses nothing and sees
nothing twice. Each store defines what the position is (SQLite: the ``events.seq``
rowid, assigned under SQLite's write lock, so commit order; PostgreSQL: the writing
transaction's id and ``seq``, read only below the oldest transaction still running, see
:mod:`magsag.backends.postgres.stream`).

The consumer loop (:func:`follow_stream`) is the same for every store: read a page after the
cursor; if the page is short, wait for a wake-up or the poll interval, whichever comes
first, and read again. Wake-ups only shorten the wait: nothing is ever read from a
notification, so a lost one costs at most one poll interval, never an event.

:class:`WakeHub` delivers wake-ups from any thread (the SQLite writer thread, an asyncpg
listener callback) to consumers on any event loop, with at most one pending call per
consumer however many commits happen meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from magsag.backends.errors import ValidationError
from magsag.backends.schema import MAX_ID_LEN, MAX_TYPE_LEN, coerce_datetime, normalize_level, to_us

PAGE_ROWS = 1000


@dataclass(frozen=True)
class StreamFilter:
    """The filters of one stream (``level`` normalized, ``since`` in microseconds)."""

    run_id: str | None = None
    agent_slug: str | None = None
    event_type: str | None = None
    level: str | None = None
    since_us: int | None = None

    def conditions(self, mark: Callable[[int], str], col: Callable[[str], str]) -> tuple[list[str], list[Any]]:
        """SQL conditions and their parameters; ``mark(i)`` spells the i-th parameter
        (1-based, counted from the first of these), ``col(name)`` a column reference."""
        where: list[str] = []
        params: list[Any] = []
        for name, value, op in (
            ("run_id", self.run_id, "="),
            ("agent_slug", self.agent_slug, "="),
            ("type", self.event_type, "="),
            ("level", self.level, "="),
            ("ts", self.since_us, ">="),
        ):
            if value is not None:
                params.append(value)
                where.append(f"{col(name)} {op} {mark(len(params))}")
        return where, params


def _text(value: Any, name: str, max_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > max_len:
        raise ValidationError(f"{name} must be a non-empty string of at most {max_len} characters")
    return value


def stream_filter(
    run_id: str | None = None,
    agent_slug: str | None = None,
    event_type: str | None = None,
    level: str | None = None,
    since: datetime | str | None = None,
) -> StreamFilter:
    """Validate ``stream_events``' filters (one-line :class:`ValidationError` on bad input)."""
    start = coerce_datetime(since, "since", required=False)
    return StreamFilter(
        run_id=_text(run_id, "run_id", MAX_ID_LEN),
        agent_slug=_text(agent_slug, "agent_slug", MAX_ID_LEN),
        event_type=_text(event_type, "event_type", MAX_TYPE_LEN),
        level=normalize_level(level) if level is not None else None,
        since_us=to_us(start) if start is not None else None,
    )


def cursor_body(cursor: str | None, prefix: str, store: str) -> str | None:
    """The part after ``prefix`` of a cursor this store made, else a ValidationError."""
    if cursor is None:
        return None
    if not isinstance(cursor, str) or not cursor.startswith(prefix) or len(cursor) > 100_000:
        raise ValidationError(f"cursor {str(cursor)[:40]!r} is not a {store} stream cursor")
    return cursor[len(prefix) :]


# ------------------------------------------------------------------- wake-ups


class Subscription:
    """One consumer's wake-up: an asyncio event set (at most once per arming) from any thread."""

    __slots__ = ("_armed", "_event", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._event = asyncio.Event()
        self._armed = False

    def arm(self) -> None:
        """Call before reading: a commit from now on wakes the next :meth:`wait`."""
        self._event.clear()
        self._armed = True

    def fire(self) -> None:
        if self._armed:
            self._armed = False
            with contextlib.suppress(RuntimeError):  # the consumer's loop is closed
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        """Wait for a wake-up or ``timeout`` seconds; True if woken."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class WakeHub:
    """Consumers subscribe; :meth:`notify` (any thread) wakes each armed one."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._snapshot: tuple[Subscription, ...] = ()

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
            self._snapshot = tuple(self._subs)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)
            self._snapshot = tuple(self._subs)

    @property
    def consumers(self) -> int:
        return len(self._snapshot)

    def notify(self) -> None:
        for sub in self._snapshot:
            sub.fire()


# ------------------------------------------------------------- the consumer loop

# read_page(position, rows) -> (records with their "cursor", position after them, more): ``more`` is
# True to read again at once, False to wait for a wake-up or the poll interval, or a number of
# seconds to look again sooner than the poll interval (rows seen but not readable yet).
PageReader = Callable[[Any, int], Awaitable[tuple[list[dict[str, Any]], Any, bool | float]]]


async def follow_stream(
    hub: WakeHub,
    start: Callable[[], Awaitable[Any]],
    read_page: PageReader,
    poll_interval: float,
    *,
    before_wait: Callable[[], Awaitable[None]] | None = None,
    page_rows: int = PAGE_ROWS,
    forever: bool = True,
) -> AsyncIterator[dict[str, Any]]:
    """Yield records from ``start()``'s position on, forever (see the module docstring);
    with ``forever=False``, until the first short page (caught up).

    The subscription is taken before the start position is read, so a commit between
    the two is never slept through. ``before_wait`` runs before each wait (PostgreSQL
    uses it to make sure its listener is connected).
    """
    sub = hub.subscribe()
    try:
        sub.arm()
        position = await start()
        while True:
            sub.arm()
            records, position, more = await read_page(position, page_rows)
            for rec in records:
                yield rec
            if more is True:
                continue
            if not forever and more is False:
                return  # caught up (rows committed but held back are waited for, below)
            if before_wait is not None:
                await before_wait()
            await sub.wait(min(poll_interval, more) if more is not False else poll_interval)
    finally:
        hub.unsubscribe(sub)

"""``stream_events`` on the SQLite hot store: the commit sequence, woken by the writer.

**Order.** ``events.seq`` is an ``AUTOINCREMENT`` rowid assigned inside the writing
transaction, and SQLite lets one write transaction run at a time (every process takes
``BEGIN IMMEDIATE``), so a row with a larger ``seq`` is always committed after one with a
smaller: ``seq`` order is commit order, across processes too. Numbers are never reused
(tiering's table rebuild keeps them and the high-water mark), so a cursor ``s:<seq>``
stays meaningful after deletes. A reader that sees the high-water mark ``h`` of
``sqlite_sequence`` also sees every row with ``seq <= h``.

**Waking.** The writer thread of this process calls :meth:`SQLiteStream.committed`
after every commit, which wakes the consumers of this backend at once. Writers in other
processes (or another backend object on the same file) are noticed by polling: a short
page read every :attr:`~magsag.backends.sqlite.store.SQLiteStorageBackend.stream_poll_s`
seconds (0.25 s by default), a primary-key range probe that costs microseconds when
nothing is new.

**Reads.** One page is ``seq`` in ``(cursor, min(h, cursor + WINDOW)]`` with the filters,
by primary key (filter columns are written ``+col`` so SQLite never walks a filter's
index instead), so a filter that matches little still advances the cursor by at most
:data:`WINDOW` rows per read, and a read never scans more than that.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from magsag.backends.errors import ValidationError
from magsag.backends.schema import event_record
from magsag.backends.sqlite import schema as ddl
from magsag.backends.stream import StreamFilter, WakeHub, cursor_body, follow_stream

if TYPE_CHECKING:
    from magsag.backends.sqlite.store import SQLiteStorageBackend

T = TypeVar("T")
PREFIX = "s:"
WINDOW = 50_000  # most rows one read scans past the cursor


def make_cursor(seq: int) -> str:
    return f"{PREFIX}{seq}"


def parse_cursor(cursor: str | None) -> int | None:
    body = cursor_body(cursor, PREFIX, "SQLite")
    if body is None:
        return None
    if not body.isdigit():
        raise ValidationError(f"cursor {cursor!r} is not a SQLite stream cursor")
    return int(body)


def _high_water(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row else 0


class SQLiteStream:
    """The stream side of one SQLite backend: its wake-up hub and its page reads."""

    def __init__(self, backend: SQLiteStorageBackend):
        self.backend = backend
        self.hub = WakeHub()

    async def _read_committed(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A reader-pool read that does not first wait for this process's pending appends
        (``backend.read`` does): the stream reads what is committed and is woken for the rest."""
        backend = self.backend
        backend._require()
        return await asyncio.get_running_loop().run_in_executor(backend._pool, lambda: fn(backend._reader()))

    def committed(self) -> None:
        """Called by the writer thread after each commit (cheap when nobody listens)."""
        if self.hub.consumers:
            self.hub.notify()

    def events(self, flt: StreamFilter, cursor: str | None, *, follow: bool = True) -> AsyncIterator[dict[str, Any]]:
        after = parse_cursor(cursor)
        where, params = flt.conditions(lambda i: "?", lambda name: f"+e.{name}")
        extra = "".join(f" AND {w}" for w in where)
        sql = (
            f"SELECT {ddl.EVENT_SELECT}, e.seq FROM events e WHERE e.seq > ? AND e.seq <= ?{extra} "
            "ORDER BY e.seq LIMIT ?"
        )

        async def start() -> int:
            if after is not None:
                return after
            if flt.since_us is None:
                return await self.backend.read(_high_water)

            def first_since(c: sqlite3.Connection) -> int:
                hi = _high_water(c)
                row = c.execute("SELECT min(seq) FROM events WHERE ts >= ?", (flt.since_us,)).fetchone()
                return hi if row is None or row[0] is None else min(hi, int(row[0]) - 1)

            return await self.backend.read(first_since)

        async def read_page(position: int, rows: int) -> tuple[list[dict[str, Any]], int, bool | float]:
            def page(c: sqlite3.Connection) -> tuple[list[Any], int]:
                hi = _high_water(c)
                return c.execute(sql, [position, min(hi, position + WINDOW), *params, rows]).fetchall(), hi

            found, hi = await self._read_committed(page)
            out = []
            for r in found:
                rec = event_record(r[:-1])
                rec["cursor"] = make_cursor(r[-1])
                out.append(rec)
            if len(found) == rows:
                return out, int(found[-1][-1]), True
            scanned = min(hi, position + WINDOW)
            return out, max(position, scanned), scanned < hi

        return follow_stream(self.hub, start, read_page, self.backend.stream_poll_s, forever=follow)

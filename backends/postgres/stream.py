"""``stream_events`` on the PostgreSQL hot store: LISTEN/NOTIFY to wake, ``(tx, seq)`` to read.

**Why not ``seq`` alone.** ``seq`` comes from a sequence when a row is built, not when its
transaction commits: ``seq = 10`` can become visible after ``seq = 11`` was read, so a
cursor on ``seq`` would step over it for good (see :mod:`magsag.backends.postgres.tiering`
for the same problem in tiering).

**The position.** Every row records ``tx``, its transaction's 64-bit id (schema v3,
``pg_current_xact_id()``). A read takes one snapshot and, in the same statement, its
``xmin``: the oldest transaction still running anywhere on the server. Every transaction
below ``xmin`` has ended, so its rows are final; every row still to come has
``tx >= xmin``. A page is therefore the rows after the cursor in ``(tx, seq)`` order with
``tx < xmin``, and a short page moves the cursor to "every ``tx`` below ``xmin``". Nothing is
skipped, nothing comes twice, and the order is the same for every reader (transaction
id, then ``seq``: commit order up to transactions that overlapped, whose rows come by
transaction).

**The start.** ``since`` starts at the first row with ``ts >= since`` in that order (or at
``xmin``, whichever is lower). With neither ``since`` nor a cursor the stream starts at
``xmin`` of a first snapshot and skips the rows that snapshot already saw
(``pg_visible_in_snapshot``; the snapshot travels in the cursor until the stream has
passed it), so only events committed after the call come.

**Waking.** Schema v3's statement trigger sends ``NOTIFY magsag_events, '<schema>'`` at
the commit of every insert, from any client. One connection per backend ``LISTEN``\\s and
wakes this backend's consumers. Notifications only wake: every consumer also reads
every :attr:`~magsag.backends.postgres.store.PostgresStorageBackend.stream_poll_s`
seconds (1 s by default), and a lost listener connection is reconnected on the next
wait, so a dropped notification costs at most one poll interval.

**The floor.** A write transaction left open anywhere on the server holds ``xmin`` back:
events committed after it wait (they are not lost) until it ends. Keep write
transactions short; ``idle_in_transaction_session_timeout`` bounds forgotten ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import ValidationError
from magsag.backends.postgres.schema import STREAM_CHANNEL
from magsag.backends.schema import EVENT_COLUMNS, event_record
from magsag.backends.stream import StreamFilter, WakeHub, cursor_body, follow_stream

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend

log = logging.getLogger(__name__)

PREFIX = "p:"
MAX_SEQ = 2**63 - 1
LISTEN_RETRY_S = 5.0
HELD_RETRY_S = 0.02
_CURSOR = re.compile(r"^(\d{1,20})\.(\d{1,19})(?:~(\d{1,20}:\d{1,20}:[\d,]*))?$")
_COLS = ", ".join(f"e.{c}" for c in EVENT_COLUMNS)


class Position:
    """``(tx, seq)``: everything at or before it was read; ``skip`` a start snapshot's text."""

    __slots__ = ("seq", "skip", "skip_xmax", "tx")

    def __init__(self, tx: int, seq: int, skip: str | None = None):
        self.tx, self.seq = tx, seq
        self.skip = skip
        self.skip_xmax = int(skip.split(":")[1]) if skip else 0
        if self.skip is not None and tx >= self.skip_xmax:
            self.skip = None  # every row after this position is newer than the snapshot

    def cursor(self) -> str:
        tail = f"~{self.skip}" if self.skip is not None else ""
        return f"{PREFIX}{self.tx}.{self.seq}{tail}"

    def after(self, tx: int, seq: int) -> Position:
        return Position(tx, seq, self.skip)

    def key(self) -> tuple[int, int]:
        return self.tx, self.seq


def parse_cursor(cursor: str | None) -> Position | None:
    body = cursor_body(cursor, PREFIX, "PostgreSQL")
    if body is None:
        return None
    m = _CURSOR.match(body)
    if m is None:
        raise ValidationError(f"cursor {cursor[:40]!r} is not a PostgreSQL stream cursor")  # type: ignore[index]
    return Position(int(m.group(1)), int(m.group(2)), m.group(3))


class PostgresStream:
    """The stream side of one PostgreSQL backend: the listener, the hub, the page reads."""

    def __init__(self, backend: PostgresStorageBackend):
        self.backend = backend
        self.hub = WakeHub()
        self._conn: Any = None
        self._retry_at = 0.0
        self.notifications = 0  # received for this schema (tests and the benchmark read it)

    # ---------------------------------------------------------------- listener
    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self.backend.schema:
            self.notifications += 1
            self.hub.notify()

    def _on_lost(self, conn: Any) -> None:
        if conn is self._conn:
            self._conn = None

    async def ensure_listener(self) -> None:
        """Connect and LISTEN if not listening (at most every few seconds after a failure)."""
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return
        self._conn = None
        if time.monotonic() < self._retry_at:
            return
        import asyncpg

        try:
            conn = await asyncpg.connect(
                self.backend._dsn,
                timeout=self.backend.connect_timeout,
                server_settings={"application_name": "magsag-stream"},
            )
            await conn.add_listener(STREAM_CHANNEL, self._on_notify)
            conn.add_termination_listener(self._on_lost)
        except Exception as exc:  # polling carries on; try again later
            self._retry_at = time.monotonic() + LISTEN_RETRY_S
            log.info("magsag postgres stream: cannot LISTEN (%s); polling only", type(exc).__name__)
            return
        self._conn = conn
        self.hub.notify()  # read once more: something may have committed while nobody listened

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=5)

    # ---------------------------------------------------------------- reading
    def events(self, flt: StreamFilter, cursor: str | None, *, follow: bool = True) -> AsyncIterator[dict[str, Any]]:
        given = parse_cursor(cursor)
        s = self.backend.schema
        where, params = flt.conditions(lambda i: f"${i + 4}", lambda name: f"e.{name}")
        extra = "".join(f" AND {w}" for w in where)
        page_sql = (
            "WITH h AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS x) "
            "SELECT h.x::text AS horizon, "
            f"EXISTS (SELECT 1 FROM {s}.events w WHERE w.tx >= h.x AND (w.tx, w.seq) > ($1::text::xid8, $2::bigint)) "
            "AS held, r.* FROM h LEFT JOIN LATERAL ("
            f"SELECT {_COLS}, e.tx::text AS tx_id, e.seq FROM {s}.events e "
            "WHERE (e.tx, e.seq) > ($1::text::xid8, $2::bigint) AND e.tx < h.x "
            f"AND ($3::text IS NULL OR NOT pg_visible_in_snapshot(e.tx, $3::text::pg_snapshot)){extra} "
            "ORDER BY e.tx, e.seq LIMIT $4) r ON true"
        )

        async def start() -> Position:
            if given is not None:
                return given
            if flt.since_us is None:
                row = await self.backend._read(
                    lambda c: c.fetchrow(
                        "SELECT pg_current_snapshot()::text AS snap, pg_snapshot_xmin(pg_current_snapshot())::text AS x"
                    ),
                    "starting a stream",
                )
                return Position(int(row["x"]) - 1, MAX_SEQ, row["snap"])
            row = await self.backend._read(
                lambda c: c.fetchrow(
                    "SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x, f.tx::text AS tx, f.seq "
                    f"FROM (SELECT 1) one LEFT JOIN (SELECT tx, seq FROM (SELECT tx, seq FROM {s}.events "
                    "WHERE ts >= $1 OFFSET 0) a ORDER BY tx, seq LIMIT 1) f ON true",
                    flt.since_us,
                ),
                "starting a stream",
            )
            at_horizon = (int(row["x"]) - 1, MAX_SEQ)
            if row["tx"] is None:
                return Position(*at_horizon)
            return Position(*min((int(row["tx"]), int(row["seq"]) - 1), at_horizon))

        async def read_page(position: Position, rows: int) -> tuple[list[dict[str, Any]], Position, bool | float]:
            args = [str(position.tx), position.seq, position.skip, rows, *params]
            found = await self.backend._read(lambda c: c.fetch(page_sql, *args), "reading the event stream")
            out = []
            last = position
            for r in found:
                if r["event_id"] is None:  # the LEFT JOIN's empty row: nothing new
                    continue
                values = tuple(r)
                last = position.after(int(r["tx_id"]), int(r["seq"]))
                rec = event_record(values[2 : 2 + len(EVENT_COLUMNS)])
                rec["cursor"] = last.cursor()
                out.append(rec)
            if len(out) == rows:
                return out, last, True
            horizon = int(found[0]["horizon"]) - 1 if found else position.tx
            if (horizon, MAX_SEQ) > last.key():
                last = position.after(horizon, MAX_SEQ)
            # Committed rows held back by an older transaction still running: look again soon
            # (its commit may notify before these rows' own NOTIFY is read).
            return out, last, HELD_RETRY_S if found and found[0]["held"] else False

        return follow_stream(
            self.hub, start, read_page, self.backend.stream_poll_s, before_wait=self.ensure_listener, forever=follow
        )

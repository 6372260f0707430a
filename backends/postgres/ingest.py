"""Writing events into PostgreSQL: binary COPY for batches, group commit for single appends.

* :func:`copy_events` streams a batch with binary ``COPY`` in one transaction. A batch
  holding an already-stored ``event_id`` makes the COPY fail on the unique key; the batch
  then goes through a temporary staging table and ``INSERT ... ON CONFLICT DO NOTHING``,
  which stores only the new rows. :class:`CopyPath` remembers that, so a reload keeps
  using the staging path until a batch comes back clean.
* :class:`GroupCommit` serves one-at-a-time ``append_event`` calls. Each call is one
  prepared statement and one commit when it is alone; calls that arrive while a commit is
  in flight (16 agents logging at once) are written together by the next statement and
  share its commit. Every call still returns only once its own event is committed.
* Unknown runs are created in the same transaction as their first events (status
  ``running``, started at the earliest event), in ``run_id`` order so that concurrent
  writers never deadlock on each other's new runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from magsag.backends.postgres.schema import EVENT_COLUMN_LIST
from magsag.backends.schema import EVENT_COLUMNS, Event

_STAGE_DDL = (
    "CREATE TEMP TABLE magsag_stage (event_id text, ts timestamptz, run_id text, agent_slug text, type text, "
    "level text, msg text, payload jsonb, span_id text, parent_span_id text, contract_id text, "
    "contract_version text, artifact_uri text) ON COMMIT DROP"
)
# unnest() argument types of a group insert: payload travels as text and is cast once.
_ARRAY_TYPES = ("text", "timestamptz", *("text",) * (len(EVENT_COLUMNS) - 2))


# Runs first seen among the rows a statement's ``ev`` CTE inserted: running, started at
# their earliest new event (the agent of that event), created in run_id order.
_RUNS_OF_NEW_EVENTS = (
    "run AS (INSERT INTO {schema}.runs (run_id, agent_slug, status, started_at) "
    "SELECT DISTINCT ON (run_id) run_id, agent_slug, 'running', ts FROM ev ORDER BY run_id, ts "
    "ON CONFLICT (run_id) DO NOTHING) "
)


def command_count(status: str) -> int:
    """Rows of a command tag such as ``COPY 500`` or ``INSERT 0 500``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


async def create_runs(conn: Any, schema: str, events: list[Event]) -> None:
    """Create the unknown runs of a batch (status running, started at their first event)."""
    firsts: dict[str, tuple[str, int]] = {}
    for e in events:
        known = firsts.get(e.run_id)
        if known is None or e.ts_us < known[1]:
            firsts[e.run_id] = (e.agent_slug, e.ts_us)
    ids = sorted(firsts)
    await conn.execute(
        f"INSERT INTO {schema}.runs (run_id, agent_slug, status, started_at) "
        "SELECT r, a, 'running', t FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(r, a, t) "
        "ORDER BY r ON CONFLICT (run_id) DO NOTHING",
        ids,
        [firsts[r][0] for r in ids],
        [firsts[r][1] for r in ids],
    )


class CopyPath:
    """Which path the next batch takes: COPY (fast) or staging table (after duplicates)."""

    def __init__(self) -> None:
        self.dedupe = False

    async def copy_events(self, conn: Any, schema: str, events: list[Event]) -> int:
        """Store a batch in one transaction; return how many events were new."""
        import asyncpg

        rows = [e.row() for e in events]
        if not self.dedupe:
            try:
                async with conn.transaction():
                    status = await conn.copy_records_to_table(
                        "events", records=rows, columns=EVENT_COLUMNS, schema_name=schema
                    )
                    await create_runs(conn, schema, events)
                return command_count(status)
            except asyncpg.UniqueViolationError:
                self.dedupe = True
        async with conn.transaction():
            await conn.execute(_STAGE_DDL)
            await conn.copy_records_to_table("magsag_stage", records=rows, columns=EVENT_COLUMNS)
            inserted = await conn.fetchval(
                f"WITH ev AS (INSERT INTO {schema}.events ({EVENT_COLUMN_LIST}) SELECT {EVENT_COLUMN_LIST} "
                "FROM magsag_stage ORDER BY ctid ON CONFLICT DO NOTHING RETURNING run_id, agent_slug, ts), "
                + _RUNS_OF_NEW_EVENTS.format(schema=schema)
                + "SELECT count(*) FROM ev"
            )
        self.dedupe = inserted < len(rows)
        return inserted


def _single_sql(schema: str) -> str:
    placeholders = ", ".join(f"${i}" for i in range(1, len(EVENT_COLUMNS) + 1))
    return (
        f"WITH ev AS (INSERT INTO {schema}.events ({EVENT_COLUMN_LIST}) VALUES ({placeholders}) "
        "ON CONFLICT DO NOTHING RETURNING run_id, agent_slug, ts), "
        f"run AS (INSERT INTO {schema}.runs (run_id, agent_slug, status, started_at) "
        "SELECT run_id, agent_slug, 'running', ts FROM ev ON CONFLICT (run_id) DO NOTHING) "
        "SELECT count(*) FROM ev"
    )


def _group_sql(schema: str) -> str:
    arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(_ARRAY_TYPES, start=1))
    select = ", ".join("payload::jsonb" if c == "payload" else c for c in EVENT_COLUMNS)
    return (
        f"WITH src AS (SELECT * FROM unnest({arrays}) WITH ORDINALITY AS u({EVENT_COLUMN_LIST}, n)), "
        f"ev AS (INSERT INTO {schema}.events ({EVENT_COLUMN_LIST}) SELECT {select} FROM src ORDER BY n "
        "ON CONFLICT DO NOTHING RETURNING event_id, run_id, agent_slug, ts), "
        + _RUNS_OF_NEW_EVENTS.format(schema=schema)
        + "SELECT event_id FROM ev"
    )


async def insert_events(conn: Any, schema: str, events: list[Event]) -> list[int]:
    """Insert a few events with one prepared statement; 1 per event newly stored, else 0."""
    if len(events) == 1:
        return [await conn.fetchval(_single_sql(schema), *events[0].row())]
    columns = [list(col) for col in zip(*(e.row() for e in events), strict=True)]
    new = {r["event_id"] for r in await conn.fetch(_group_sql(schema), *columns)}
    out = []
    for e in events:
        out.append(1 if e.event_id in new else 0)
        new.discard(e.event_id)  # the same id twice in one group is stored once
    return out


Writer = Callable[[list[Event]], Awaitable[list[int]]]


class GroupCommit:
    """Coalesce concurrent single appends: one statement and one commit per group.

    Up to ``max_inflight`` groups are written at once (on different pooled connections),
    so a group fills while the previous one waits for its commit to reach the disk.
    """

    def __init__(self, write: Writer, *, max_inflight: int = 4, max_group: int = 1000):
        self._write = write
        self._max_inflight = max(1, max_inflight)
        self._max_group = max_group
        self._queue: list[tuple[Event, asyncio.Future[int]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def append(self, event: Event) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((event, fut))
        # A drain task that returned is done() at once, before its done-callback runs.
        if sum(not t.done() for t in self._tasks) < self._max_inflight:
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await fut

    async def _drain(self) -> None:
        while self._queue:
            group = self._queue[: self._max_group]
            del self._queue[: self._max_group]
            try:
                results = await self._write([e for e, _ in group])
            except BaseException as exc:  # handed to every caller of the group
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, fut), result in zip(group, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    async def wait_idle(self) -> None:
        while self._tasks:
            with contextlib.suppress(BaseException):
                await asyncio.gather(*self._tasks, return_exceptions=True)

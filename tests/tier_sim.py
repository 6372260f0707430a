"""Test helper: move chosen rows from a hot store into a lake, as tiering would.

Rows are written to the lake first (Parquet + manifest through tests/lake_builder.py),
then deleted from the hot store, in that order, exactly like the tiering job. The
choice of rows is free (a SQL condition per table), so tests can tier half of a day, a
whole day, or every other event of one run ("split" runs), which the day-based job
never does but readers must handle.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from magsag.backends.base import StorageBackend
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS
from magsag.lakehouse.objstore import Lake
from magsag.lakehouse.tiered_backend import TieredBackend, unwrap

from tests.lake_builder import write_lake

_jobs = itertools.count(1)


def _kind(hot: StorageBackend) -> str:
    return "postgres" if type(hot).__module__.startswith("magsag.backends.postgres.store") else "sqlite"


async def move_rows(
    backend: StorageBackend,
    lake: Lake,
    events_where: str | None = None,
    runs_where: str | None = None,
    *,
    files_per_day: int = 1,
) -> tuple[int, int]:
    """Move hot rows matching the conditions (SQL over the hot tables) to the lake."""
    hot = unwrap(backend)
    kind = _kind(hot)
    ev_cols, run_cols = ", ".join(EVENT_COLUMNS), ", ".join(RUN_COLUMNS)
    if kind == "sqlite":

        def read(c: Any) -> tuple[list[Any], list[Any]]:
            ev = c.execute(f"SELECT {ev_cols} FROM events WHERE {events_where}").fetchall() if events_where else []
            rn = c.execute(f"SELECT {run_cols} FROM runs WHERE {runs_where}").fetchall() if runs_where else []
            return ev, rn

        events, runs = await hot.read(read)  # type: ignore[attr-defined]
    else:
        s = hot.schema  # type: ignore[attr-defined]
        ev_sel = ev_cols.replace("payload", "payload::text")
        run_sel = run_cols.replace("metrics", "metrics::text")

        async def read_pg(c: Any) -> tuple[list[Any], list[Any]]:
            ev = await c.fetch(f"SELECT {ev_sel} FROM {s}.events WHERE {events_where}") if events_where else []
            rn = await c.fetch(f"SELECT {run_sel} FROM {s}.runs WHERE {runs_where}") if runs_where else []
            return [tuple(r) for r in ev], [tuple(r) for r in rn]

        events, runs = await hot.read(read_pg)  # type: ignore[attr-defined]
    if not events and not runs:
        return 0, 0
    write_lake(lake, events, runs, files_per_day=files_per_day, job_id=f"sim{next(_jobs)}")
    ev_ids = [e[0] for e in events]
    run_ids = [r[0] for r in runs]
    if kind == "sqlite":

        def delete(c: Any) -> None:
            for chunk in range(0, len(ev_ids), 500):
                ids = ev_ids[chunk : chunk + 500]
                marks = ", ".join("?" * len(ids))
                if hot.enable_fts:  # type: ignore[attr-defined]
                    c.execute(
                        "INSERT INTO events_fts (events_fts, rowid, msg) SELECT 'delete', seq, msg FROM events "
                        f"WHERE event_id IN ({marks}) AND msg IS NOT NULL",
                        ids,
                    )
                c.execute(f"DELETE FROM events WHERE event_id IN ({marks})", ids)
            for chunk in range(0, len(run_ids), 500):
                ids = run_ids[chunk : chunk + 500]
                c.execute(f"DELETE FROM runs WHERE run_id IN ({', '.join('?' * len(ids))})", ids)

        await hot.write(delete)  # type: ignore[attr-defined]
    else:

        async def delete_pg(c: Any) -> None:
            await c.execute(f"DELETE FROM {s}.events WHERE event_id = ANY($1::text[])", ev_ids)
            await c.execute(f"DELETE FROM {s}.runs WHERE run_id = ANY($1::text[])", run_ids)

        await hot.read(delete_pg)  # type: ignore[attr-defined]
    return len(events), len(runs)


def every_other_event() -> str:
    """Half the events of every run (alternating by id: every run is split)."""
    return "substr(event_id, length(event_id), 1) IN ('0','2','4','6','8','a','c','e')"


def terminal_runs() -> str:
    return "status <> 'running'"


class HalfTiered:
    """Mixin for the contract suite: before every read, tier half of what is new.

    Every other event (by id) and every finished run move to the lake, so runs are split
    across tiers and the same contract tests run against hot + lake. ``paused`` turns it
    off (tests of hot retention).
    """

    paused = False

    async def _tier_now(self) -> None:
        if self.paused:
            return
        lock = self.__dict__.setdefault("_tier_lock", asyncio.Lock())
        async with lock:
            await move_rows(self, self.lake, every_other_event(), terminal_runs())  # type: ignore[arg-type,attr-defined]

    async def get_run(self, run_id: str) -> Any:
        await self._tier_now()
        return await super().get_run(run_id)  # type: ignore[misc]

    async def get_events(self, run_id: str, event_type: Any = None, level: Any = None, limit: Any = None) -> Any:
        await self._tier_now()
        async for e in super().get_events(run_id, event_type, level, limit):  # type: ignore[misc]
            yield e

    async def list_runs(
        self,
        agent_slug: Any = None,
        status: Any = None,
        since: Any = None,
        until: Any = None,
        limit: int = 100,
        offset: int = 0,
    ) -> Any:
        await self._tier_now()
        return await super().list_runs(agent_slug, status, since, until, limit, offset)  # type: ignore[misc]

    async def search_text(
        self,
        query: str,
        agent_slug: Any = None,
        since: Any = None,
        limit: int = 100,
        *,
        raw: bool = False,
        until: Any = None,
    ) -> Any:
        await self._tier_now()
        return await super().search_text(query, agent_slug, since, limit, raw=raw, until=until)  # type: ignore[misc]

    async def query_metrics(
        self, metric_name: str, agent_slug: Any = None, since: Any = None, until: Any = None, aggregation: str = "avg"
    ) -> Any:
        await self._tier_now()
        return await super().query_metrics(metric_name, agent_slug, since, until, aggregation)  # type: ignore[misc]


class HalfTieredBackend(HalfTiered, TieredBackend):
    """A tiered backend whose reads first tier half of the new data (see :class:`HalfTiered`)."""


def kind_of(backend: StorageBackend) -> str:
    """'sqlite' or 'postgres': the SQL dialect conditions for :func:`move_rows` are written in."""
    return _kind(unwrap(backend))


def ts_before(column: str, us: int, kind: str) -> str:
    """``column < us`` (integer microseconds) in the hot store's dialect."""
    if kind == "sqlite":
        return f"{column} < {int(us)}"
    return f"{column} < timestamptz '1970-01-01 00:00:00+00' + {int(us)} * interval '1 microsecond'"

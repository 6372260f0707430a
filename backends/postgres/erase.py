"""Erasing from the PostgreSQL hot store (see backends/erase.py).

The tombstone ledger and the erase jobs are two tables of the store's schema, created by
the first erase with two guards: on the partitioned ``events`` an ``AFTER INSERT`` statement
trigger deletes, in the same statement, the new rows (its transition table) of tombstoned
ids; on ``runs`` a ``BEFORE INSERT`` row trigger drops them (``create_run`` then raises).
COPY, the idempotent staging insert and group-committed single appends all pass through
them. A store never erased pays nothing.

A purge deletes the tombstoned events (their ``msg_tsv`` and GIN entries go with the rows)
and runs in one transaction, then :meth:`PostgresEraser.scrub` runs ``VACUUM`` on the
day partitions it touched and on ``runs``: the dead tuples are pruned and their index
entries removed, so no SQL, index or full-text search can reach them. ``VACUUM`` does not
rewrite the files: until new rows reuse the space, the bytes may remain in the data files
and in WAL segments not yet recycled (``VACUUM FULL`` rewrites a partition under an
exclusive lock; the operator's choice, see docs/governance.md).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from magsag.backends.erase import (
    ERASE_JOBS,
    EVENT,
    RUN,
    TOMBSTONES,
    EraseRequest,
    HotEraser,
    HotSelection,
    PendingJob,
)
from magsag.backends.schema import iso_from_us, to_us, utc_now

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend


class PostgresEraser(HotEraser):
    backend: PostgresStorageBackend

    @property
    def s(self) -> str:
        return self.backend.schema

    def _tomb_events(self) -> str:
        s = self.s
        return (
            f"(run_id IN (SELECT id FROM {s}.{TOMBSTONES} WHERE kind = 'run') "
            f"OR event_id IN (SELECT id FROM {s}.{TOMBSTONES} WHERE kind = 'event'))"
        )

    async def _has_ledger(self, c: Any) -> bool:
        return bool(await c.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{self.s}.{ERASE_JOBS}"))

    # --------------------------------------------------------------- reading
    async def select(self, req: EraseRequest) -> HotSelection:
        s = self.s
        where: list[str] = []
        params: list[Any] = []

        def p(v: Any) -> str:
            params.append(v)
            return f"${len(params)}"

        col = "ts" if req.event_level else "started_at"
        if req.event_level:
            m = p(req.matching)
            where.append(f"(strpos(msg, {m}) > 0 OR strpos(payload::text, {m}) > 0)")
        if req.agent:
            where.append(f"agent_slug = {p(req.agent)}")
        if req.since:
            where.append(f"{col} >= {p(req.since_us)}")
        if req.until:
            where.append(f"{col} < {p(req.until_us)}")
        if req.run_ids:
            where.append(f"run_id = ANY({p(list(req.run_ids))}::text[])")
        cond = " AND ".join(where) or "true"

        async def go(c: Any) -> HotSelection:
            out = HotSelection()
            if req.event_level:
                out.event_ids = {r[0] for r in await c.fetch(f"SELECT event_id FROM {s}.events WHERE {cond}", *params)}
            else:
                out.run_ids = {r[0] for r in await c.fetch(f"SELECT run_id FROM {s}.runs WHERE {cond}", *params)}
                if req.run_ids:
                    rows = await c.fetch(
                        f"SELECT DISTINCT run_id FROM {s}.events WHERE run_id = ANY($1::text[])", list(req.run_ids)
                    )
                    out.run_ids |= {r[0] for r in rows}
            return out

        return await self.backend._read(go, "selecting what to erase")

    async def parents(self, run_ids: set[str]) -> dict[str, str]:
        if not run_ids:
            return {}

        async def go(c: Any) -> dict[str, str]:
            rows = await c.fetch(
                f"SELECT run_id, parent_run_id FROM {self.s}.runs WHERE parent_run_id = ANY($1::text[])",
                sorted(run_ids),
            )
            return {r[0]: r[1] for r in rows}

        return await self.backend._read(go, "finding delegated runs")

    async def count(self, run_ids: set[str], event_ids: set[str]) -> tuple[int, int]:
        async def go(c: Any) -> tuple[int, int]:
            ev = await c.fetchval(
                f"SELECT count(*) FROM {self.s}.events WHERE run_id = ANY($1::text[]) OR event_id = ANY($2::text[])",
                sorted(run_ids),
                sorted(event_ids),
            )
            rn = await c.fetchval(f"SELECT count(*) FROM {self.s}.runs WHERE run_id = ANY($1::text[])", sorted(run_ids))
            return int(ev), int(rn)

        return await self.backend._read(go, "counting what to erase")

    async def pending(self) -> list[PendingJob]:
        async def go(c: Any) -> list[PendingJob]:
            if not await self._has_ledger(c):
                return []
            rows = await c.fetch(
                f"SELECT job_id, state, plan FROM {self.s}.{ERASE_JOBS} "
                "WHERE state <> 'done' ORDER BY created_at, job_id"
            )
            return [PendingJob(r[0], r[1], json.loads(r[2])) for r in rows]

        return await self.backend._read(go, "reading erase jobs")

    async def tombstones(self) -> tuple[set[str], set[str]]:
        async def go(c: Any) -> tuple[set[str], set[str]]:
            if not await self._has_ledger(c):
                return set(), set()
            runs, events = set(), set()
            for r in await c.fetch(f"SELECT kind, id FROM {self.s}.{TOMBSTONES}"):
                (runs if r[0] == RUN else events).add(r[1])
            return runs, events

        return await self.backend._read(go, "reading tombstones")

    async def ledger(self, limit: int = 1000) -> list[dict[str, Any]]:
        async def go(c: Any) -> list[dict[str, Any]]:
            if not await self._has_ledger(c):
                return []
            rows = await c.fetch(
                f"SELECT kind, id, erased_at, job FROM {self.s}.{TOMBSTONES} ORDER BY erased_at DESC, id LIMIT $1",
                limit,
            )
            return [{"kind": r[0], "id": r[1], "erased_at": iso_from_us(r[2]), "job": r[3]} for r in rows]

        return await self.backend._read(go, "reading tombstones")

    async def expire(
        self,
        *,
        before_us: int,
        type_: str | None,
        level: str | None,
        agent: str | None,
        runs: bool,
        dry_run: bool,
    ) -> tuple[int, int]:
        s = self.s
        where, params = ["ts < $1"], [before_us]
        for col, val in (("type", type_), ("level", level), ("agent_slug", agent)):
            if val is not None:
                params.append(val)
                where.append(f"{col} = ${len(params)}")
        cond = " AND ".join(where)
        run_cond = f"started_at < $1 AND NOT EXISTS (SELECT 1 FROM {s}.events e WHERE e.run_id = r.run_id)"
        run_params: list[Any] = [before_us]
        if agent is not None:
            run_cond += " AND agent_slug = $2"
            run_params.append(agent)

        async def go(c: Any) -> tuple[int, int]:
            if dry_run:
                ev = await c.fetchval(f"SELECT count(*) FROM {s}.events WHERE {cond}", *params)
                return int(ev), 0
            async with c.transaction():
                ev = await c.execute(f"DELETE FROM {s}.events WHERE {cond}", *params)
                rn = await c.execute(f"DELETE FROM {s}.runs r WHERE {run_cond}", *run_params) if runs else "DELETE 0"
            return int(ev.split()[-1]), int(rn.split()[-1])

        return await self.backend._write(go, "applying retention")

    # --------------------------------------------------------------- writing
    async def record(
        self, job_id: str, request: dict[str, Any], plan: dict[str, Any], run_ids: set[str], event_ids: set[str]
    ) -> None:
        s = self.s
        now = to_us(utc_now())  # the pool's timestamptz codec takes integer microseconds
        ddl = [
            f"CREATE TABLE IF NOT EXISTS {s}.{TOMBSTONES} (kind text NOT NULL, id text NOT NULL, "
            "erased_at timestamptz NOT NULL, job text NOT NULL, PRIMARY KEY (kind, id))",
            f"CREATE TABLE IF NOT EXISTS {s}.{ERASE_JOBS} (job_id text PRIMARY KEY, created_at timestamptz NOT NULL, "
            "state text NOT NULL, request jsonb NOT NULL, plan text NOT NULL, finished_at timestamptz)",
            # Events: one statement-level check per INSERT/COPY over its transition table (a row
            # trigger slows COPY several times more; the cost is in docs/governance.md). A late
            # copy is inserted and deleted in the same statement: no other session ever sees it.
            f"""CREATE OR REPLACE FUNCTION {s}.magsag_events_tombstoned() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                DELETE FROM {s}.events e USING magsag_new n, {s}.{TOMBSTONES} t
                 WHERE e.ts = n.ts AND e.event_id = n.event_id
                   AND ((t.kind = 'run' AND t.id = n.run_id) OR (t.kind = 'event' AND t.id = n.event_id));
                RETURN NULL;
            END $$""",
            f"""CREATE OR REPLACE FUNCTION {s}.magsag_run_tombstoned() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF EXISTS (SELECT 1 FROM {s}.{TOMBSTONES} WHERE kind = 'run' AND id = NEW.run_id) THEN
                    RETURN NULL;
                END IF;
                RETURN NEW;
            END $$""",
            f"DROP TRIGGER IF EXISTS magsag_tombstoned ON {s}.events",
            f"CREATE TRIGGER magsag_tombstoned AFTER INSERT ON {s}.events REFERENCING NEW TABLE AS magsag_new "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.magsag_events_tombstoned()",
            f"DROP TRIGGER IF EXISTS magsag_tombstoned ON {s}.runs",
            f"CREATE TRIGGER magsag_tombstoned BEFORE INSERT ON {s}.runs "
            f"FOR EACH ROW EXECUTE FUNCTION {s}.magsag_run_tombstoned()",
        ]

        async def go(c: Any) -> None:
            async with c.transaction():
                await c.execute(f"SELECT pg_advisory_xact_lock(hashtext('{s}.magsag_erase_ddl'))")
                for stmt in ddl:
                    await c.execute(stmt)
                await c.execute(
                    f"INSERT INTO {s}.{ERASE_JOBS} (job_id, created_at, state, request, plan) "
                    "VALUES ($1, $2, 'recorded', $3::jsonb, $4) ON CONFLICT DO NOTHING",
                    job_id,
                    now,
                    json.dumps(request),
                    json.dumps(plan),
                )
                rows = [(RUN, r, now, job_id) for r in sorted(run_ids)] + [
                    (EVENT, e, now, job_id) for e in sorted(event_ids)
                ]
                await c.executemany(
                    f"INSERT INTO {s}.{TOMBSTONES} (kind, id, erased_at, job) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT DO NOTHING",
                    rows,
                )

        await self.backend._write(go, "recording the erase")

    async def set_state(self, job_id: str, state: str) -> None:
        async def go(c: Any) -> None:
            await c.execute(
                f"UPDATE {self.s}.{ERASE_JOBS} SET state = $1, "
                "finished_at = CASE WHEN $1 = 'done' THEN $2::timestamptz END WHERE job_id = $3",
                state,
                to_us(utc_now()),
                job_id,
            )

        await self.backend._write(go, "updating the erase job")

    async def purge(self) -> tuple[int, int]:
        s = self.s

        async def go(c: Any) -> tuple[int, int]:
            if not await self._has_ledger(c):
                return 0, 0
            async with c.transaction():
                parts = await c.fetch(
                    f"DELETE FROM {s}.events WHERE {self._tomb_events()} RETURNING tableoid::regclass::text AS part"
                )
                runs = await c.execute(
                    f"DELETE FROM {s}.runs WHERE run_id IN (SELECT id FROM {s}.{TOMBSTONES} WHERE kind = 'run')"
                )
            self._touched = sorted({r[0] for r in parts})
            return len(parts), int(runs.split()[-1])

        return await self.backend._write(go, "erasing rows")

    async def scrub(self) -> dict[str, Any]:
        s = self.s
        touched = list(getattr(self, "_touched", []) or [])

        async def go(c: Any) -> dict[str, Any]:
            if not touched:  # a rerun: vacuum every partition (cheap when nothing is dead)
                rows = await c.fetch(
                    "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = $1::regclass",
                    f"{s}.events",
                )
                tables = [r[0] for r in rows] or [f"{s}.events"]
            else:
                tables = touched
            for t in [*tables, f"{s}.runs"]:
                await c.execute(f"VACUUM (ANALYZE) {t}")
            return {"vacuumed": len(tables) + 1}

        return await self.backend._write(go, "vacuuming erased rows")

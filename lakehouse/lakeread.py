"""Reads of the lake for the tier-aware API: one run, its events, runs, search, metric samples.

Each read takes the partitions its time filter allows from a :class:`LakeSnapshot`
(pruning in Python, so local folders and S3 behave alike) and runs one DuckDB query over
those files. Rows come back in the hot stores' row shape (canonical column order,
times as integer microseconds, JSON as text), so the same record helpers apply.

A file that disappears between the snapshot and the read (a compaction finishing) makes
the read retry once with a fresh snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from magsag.backends import jsontext
from magsag.backends.base import equal_conditions
from magsag.backends.duckdb_ext import new_connection
from magsag.backends.duckdb_sql import bind, sql_list
from magsag.backends.errors import BackendUnavailable, QueryError, StorageError, redact_dsn
from magsag.backends.retry import retrying
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, coerce_datetime, day_of_us, to_us
from magsag.lakehouse import search
from magsag.lakehouse.duckdb_lake import attach_lake, lake_extensions
from magsag.lakehouse.lakecheck import diagnose
from magsag.lakehouse.lakefiles import LakeSnapshot, SnapshotReader
from magsag.lakehouse.objstore import Lake

if TYPE_CHECKING:
    import duckdb

T = TypeVar("T")

EVENT_SELECT = ", ".join("epoch_us(ts) AS ts" if c == "ts" else c for c in EVENT_COLUMNS)
RUN_SELECT = ", ".join(f"epoch_us({c}) AS {c}" if c in ("started_at", "ended_at") else c for c in RUN_COLUMNS)
_MISSING = ("No files found", "No such file", "not found", "does not exist", "404")


def _day(value: Any, name: str) -> date | None:
    if value is None:
        return None
    return day_of_us(to_us(coerce_datetime(value, name)))  # type: ignore[arg-type]


def time_filters(col: str, since: Any, until: Any) -> tuple[list[str], list[Any]]:
    where, params = [], []
    if since is not None:
        where.append(f"{col} >= make_timestamp(?::BIGINT)::TIMESTAMPTZ")
        params.append(to_us(coerce_datetime(since, "since")))  # type: ignore[arg-type]
    if until is not None:
        where.append(f"{col} < make_timestamp(?::BIGINT)::TIMESTAMPTZ")
        params.append(to_us(coerce_datetime(until, "until")))  # type: ignore[arg-type]
    return where, params


def day_range(since: Any, until: Any) -> tuple[date | None, date | None]:
    """Partition days a [since, until) filter can touch (until's own day only if after midnight)."""
    lo = _day(since, "since")
    hi = None
    if until is not None:
        u = to_us(coerce_datetime(until, "until"))  # type: ignore[arg-type]
        hi = day_of_us(u - 1)
    return lo, hi


class LakeReader:
    """A DuckDB connection over one lake, shared by the reads of a tiered backend."""

    def __init__(self, lake: Lake, reader: SnapshotReader | None = None):
        self.lake = lake
        self.snapshots = reader or SnapshotReader(lake)
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._con is None:
                con = new_connection(extensions=lake_extensions(self.lake))
                attach_lake(con, self.lake)
                self._con = con
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def _query(self, build: Callable[[LakeSnapshot], tuple[str, list[Any]] | None]) -> list[tuple[Any, ...]]:
        """Run the query ``build(snapshot)`` makes (None: nothing to read); retry once on a vanished file."""

        def once() -> list[tuple[Any, ...]]:
            snap = self.snapshots.snapshot()  # a fresh snapshot on each try
            built = build(snap)
            if built is None:
                return []
            sql, params = built
            cur = self._cursor()
            try:
                return cur.execute(bind(sql, params)).fetchall()
            except Exception as exc:
                # a damaged file? name it rather than the engine's symptom
                diagnose(self.lake, [f for fs in snap.files.values() for f in fs if f.uri in sql], exc)
                raise
            finally:
                cur.close()

        def vanished(exc: BaseException) -> bool:  # compaction replaced a file of the snapshot
            return any(m in self._reason(exc) for m in _MISSING)

        try:
            return retrying(vanished, attempts=2, first=0.0)(once)
        except StorageError:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"cannot read the lake at {self.lake.url}: {self._reason(exc)}") from None

    def _reason(self, exc: BaseException) -> str:
        text = str(exc).strip()
        return scrub(self.lake, text.splitlines()[0] if text else type(exc).__name__)

    # ----------------------------------------------------------------- reads
    @staticmethod
    def _source(uris: list[str]) -> str:
        return f"read_parquet({sql_list(uris)}, hive_partitioning = true)"

    def run(self, run_id: str) -> tuple[Any, ...] | None:
        def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
            uris = [f.uri for f in snap.of("runs")]
            if not uris:
                return None
            return f"SELECT {RUN_SELECT} FROM {self._source(uris)} WHERE run_id = ? LIMIT 1", [run_id]

        rows = self._query(build)
        return _run_row(rows[0]) if rows else None

    def runs_by_id(self, run_ids: list[str]) -> list[tuple[Any, ...]]:
        """The lake's records of ``run_ids`` (those it holds), in hot row shape."""
        if not run_ids:
            return []

        def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
            uris = [f.uri for f in snap.of("runs")]
            if not uris:
                return None
            return f"SELECT {RUN_SELECT} FROM {self._source(uris)} WHERE list_contains({sql_list(run_ids)}, run_id)", []

        return [_run_row(r) for r in self._query(build)]

    def events(
        self,
        run_id: str,
        event_type: str | None = None,
        level: str | None = None,
        limit: int | None = None,
        days: tuple[date | None, date | None] = (None, None),
    ) -> list[tuple[Any, ...]]:
        where: list[str] = []
        params: list[Any] = []
        equal_conditions(where, params, run_id=run_id, type=event_type, level=level.lower() if level else level)
        tail = " LIMIT ?" if limit is not None else ""

        def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
            uris = [f.uri for f in snap.of("events", *days)]
            if not uris:
                return None
            sql = f"SELECT {EVENT_SELECT} FROM {self._source(uris)} WHERE {' AND '.join(where)} ORDER BY ts, event_id"
            return sql + tail, [*params, *([limit] if limit is not None else [])]

        return self._query(build)

    def runs(
        self,
        agent_slug: str | None,
        status: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        where, params = time_filters("started_at", since, until)
        equal_conditions(where, params, agent_slug=agent_slug, status=status)
        cond = " WHERE " + " AND ".join(where) if where else ""

        def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
            uris = [f.uri for f in snap.of("runs", *day_range(since, until))]
            if not uris:
                return None
            sql = f"SELECT {RUN_SELECT} FROM {self._source(uris)}{cond} ORDER BY started_at DESC, run_id DESC LIMIT ?"
            return sql, [*params, limit]

        return [_run_row(r) for r in self._query(build)]

    def search(
        self,
        query: search.LakeQuery,
        agent_slug: str | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[tuple[Any, ...]]:
        """Rows in EVENT_COLUMNS order + the score, best first."""
        where, params = time_filters("ts", since, until)
        equal_conditions(where, params, agent_slug=agent_slug)

        def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
            uris = [f.uri for f in snap.of("events", *day_range(since, until))]
            if not uris:
                return None
            sql = search.search_sql(query, self._source(uris), where, EVENT_SELECT)
            return sql, [*params, limit]

        try:
            return self._query(build)
        except BackendUnavailable as exc:
            if "Parser Error" in str(exc) or "Binder Error" in str(exc):
                raise QueryError(f"cannot search the lake: {exc}") from None
            raise

    def metric_samples(
        self, metric_name: str, agent_slug: str | None, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, float]]:
        where, params = time_filters("ts", since, until)
        where += [
            "type = 'metric'",
            "(payload ->> 'name') = ?",
            "json_type(payload, '$.value') IN ('BIGINT', 'UBIGINT', 'DOUBLE')",
        ]
        params.append(metric_name)
        equal_conditions(where, params, agent_slug=agent_slug)

        def build(snap: LakeSnapshot) -> tuple[str, list[Any]] | None:
            uris = [f.uri for f in snap.of("events", *day_range(since, until))]
            if not uris:
                return None
            sql = (
                f"SELECT event_id, CAST(payload ->> 'value' AS DOUBLE) FROM {self._source(uris)} "
                f"WHERE {' AND '.join(where)}"
            )
            return sql, params

        return [(r[0], float(r[1])) for r in self._query(build)]


def is_placeholder(run: dict[str, Any]) -> bool:
    """A run record a hot store made for an event of an unknown run (no parent, metrics, tags).

    When the lake holds a record of the same run (a late event of a tiered run), the lake's
    record is the run: the placeholder knows nothing of its status, metrics or parent.
    """
    return (
        run.get("status") == "running"
        and not run.get("parent_run_id")
        and not run.get("metrics")
        and not run.get("tags")
    )


def resolve_placeholders(reader: LakeReader, hot_runs: list[dict[str, Any]]) -> set[str]:
    """Ids of the placeholders among ``hot_runs`` whose run the lake holds (so the lake's
    record, filtered like the lake's rows, stands for them)."""
    ids = [r["run_id"] for r in hot_runs if is_placeholder(r)]
    return {row[0] for row in reader.runs_by_id(ids)}


def scrub(lake: Lake, text: str) -> str:
    """An engine's error message without the lake's credentials."""
    if lake.s3 is not None:
        for secret in lake.s3.known_secrets():
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
    return redact_dsn(text)


def _run_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Lake run row -> hot row shape (tags as JSON text)."""
    out = list(row)
    i = RUN_COLUMNS.index("tags")
    out[i] = jsontext.tags_text(list(out[i] or []))
    return tuple(out)

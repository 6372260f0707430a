"""``clickhouse``: a read-only StorageBackend over the tables ``magsag data load clickhouse`` fills.

Selected like any backend (``--backend clickhouse`` or ``MAGSAG_STORAGE_BACKEND=clickhouse``;
the registry names it by a dotted path, so ``backends/`` never imports this module). It
answers ``list_runs``, ``get_run``, ``get_events``, ``search_text`` and ``query_metrics``
from ClickHouse (chDB or a server, see :mod:`magsag.lakehouse.clickhouse.engines`); its
capabilities say it cannot append, and every write raises
:class:`~magsag.backends.errors.UnsupportedOperation`: data arrives only through the lake.

Search: by default the query's words must all be tokens of ``msg`` (case-insensitive,
served by the ``tokenbf_v1`` index); results are ranked by how often the words occur.
``raw=True`` takes an RE2 regular expression instead (a malformed one raises
:class:`~magsag.backends.errors.QueryError`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from magsag.backends.base import StorageBackend, StorageCapabilities, check_aggregation, check_limit
from magsag.backends.errors import BackendUnavailable, QueryError, UnsupportedOperation
from magsag.backends.schema import Event, coerce_datetime, event_record, normalize_status, run_record, to_us
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import Engine, open_engine
from magsag.lakehouse.clickhouse.schema import ensure_schema

if TYPE_CHECKING:
    from magsag.lakehouse.settings import StorageSettings

T = TypeVar("T")
PAGE = 5000
MAX_WORDS = 32
# hasToken's notion of a token: ASCII letters and digits, and any non-ASCII character.
_TOKEN = re.compile(r"[0-9A-Za-z\u0080-\U0010FFFF]+")
_READ_ONLY = (
    "the clickhouse backend is read-only: it serves what `magsag data load clickhouse` loaded from the lake; "
    "write to the hot store (MAGSAG_STORAGE_BACKEND=sqlite or postgres)"
)


def search_tokens(query: str) -> list[str]:
    """User text -> the lower-case tokens ClickHouse's ``hasToken`` accepts (no operators)."""
    seen: dict[str, None] = {}
    for t in _TOKEN.findall(query or ""):
        seen.setdefault(t.lower(), None)
    return list(seen)[:MAX_WORDS]


def _us(value: Any, name: str) -> int | None:
    if value is None:
        return None
    return to_us(coerce_datetime(value, name))  # type: ignore[arg-type]


class ClickHouseBackend(StorageBackend):
    """Read-only backend over ClickHouse tables loaded from the lake."""

    name: ClassVar[str] = "clickhouse"

    def __init__(self, settings: StorageSettings | None = None, *, engine: Engine | None = None):
        if settings is None and engine is None:
            from magsag.lakehouse.settings import load_settings

            settings = load_settings()
        self.settings = settings
        self._engine = engine
        self._owns_engine = engine is None

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> ClickHouseBackend:
        return cls(settings)

    # ------------------------------------------------------------ lifecycle
    async def initialize(self) -> None:
        def go() -> Engine:
            engine = self._engine or open_engine(self.settings)  # type: ignore[arg-type]
            try:
                ensure_schema(engine, self.settings.clickhouse_ttl_days if self.settings else None)
            except BaseException:
                if self._owns_engine:
                    engine.close()
                raise
            return engine

        self._engine = await asyncio.to_thread(go)

    async def close(self) -> None:
        if self._engine is not None and self._owns_engine:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.close)

    @property
    def capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(get_run=True, list_runs=True, query_metrics=True, search_text=True)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise BackendUnavailable("the clickhouse backend is not initialized (await initialize() first)")
        return self._engine

    @property
    def database(self) -> str:
        return self.engine.database

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        engine = self.engine
        return await self._call(lambda: engine.rows(query, params))

    # --------------------------------------------------------------- writes
    async def _append_validated(self, events: list[Event]) -> int:
        raise UnsupportedOperation(_READ_ONLY)

    async def create_run(
        self,
        run_id: str,
        agent_slug: str,
        parent_run_id: str | None = None,
        started_at: datetime | None = None,
        status: str = "running",
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        raise UnsupportedOperation(_READ_ONLY)

    async def update_run(
        self,
        run_id: str,
        status: str | None = None,
        ended_at: datetime | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        raise UnsupportedOperation(_READ_ONLY)

    async def vacuum(
        self,
        hot_days: int = 7,
        max_disk_mb: float | None = None,
        dry_run: bool = False,
        *,
        now: datetime | None = None,
        keep_days: Iterable[Any] | None = None,
    ) -> dict[str, Any]:
        raise UnsupportedOperation(
            "the clickhouse backend does not vacuum: set MAGSAG_CLICKHOUSE_TTL_DAYS and run "
            "`magsag data clickhouse init`, or drop partitions in ClickHouse"
        )

    # ---------------------------------------------------------------- reads
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = await self._rows(sql.get_run(self.database), {"run_id": run_id})
        return run_record(rows[0]) if rows else None

    async def list_runs(
        self,
        agent_slug: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        check_limit(limit)
        check_limit(offset, "offset")
        where = sql.Where().window("started_at", agent_slug, _us(since, "since"), _us(until, "until"))
        if status is not None:
            where.add("status = {status:String}", status=normalize_status(status))
        params = {**where.params, "limit": limit, "offset": offset}
        return [run_record(r) for r in await self._rows(sql.list_runs(self.database, where), params)]

    async def get_events(  # type: ignore[override]
        self,
        run_id: str,
        event_type: str | None = None,
        level: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        check_limit(limit)
        where = sql.Where().add("run_id = {run_id:String}", run_id=run_id)
        if event_type is not None:
            where.add("type = {type:String}", type=event_type)
        if level is not None:
            where.add("level = {level:String}", level=level.lower())
        query = sql.events_page(self.database, where)
        remaining = limit
        cursor: tuple[int, str] = (-(2**62), "")
        while remaining is None or remaining > 0:
            page = PAGE if remaining is None else min(PAGE, remaining)
            params = {**where.params, "after_ts": cursor[0], "after_id": cursor[1], "page": page}
            rows = await self._rows(query, params)
            for r in rows:
                yield event_record(r)
            if len(rows) < page:
                return
            cursor = (rows[-1][1], rows[-1][0])
            if remaining is not None:
                remaining -= len(rows)

    async def search_text(
        self,
        query: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        *,
        raw: bool = False,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        check_limit(limit)
        if not isinstance(query, str):
            raise QueryError("the search query must be text")
        where = sql.Where().window("ts", agent_slug, _us(since, "since"), _us(until, "until"))
        if raw:
            if not query.strip():
                return []
            where.add("match(ifNull(msg, ''), {pattern:String})", pattern=query)
            text = sql.search_regex(self.database, where)
        else:
            words = search_tokens(query)
            if not words:
                return []
            for i, w in enumerate(words):
                where.add(sql.word_condition(i), **{f"w{i}": w})
            text = sql.search_words(self.database, where, len(words))
        try:
            rows = await self._rows(text, {**where.params, "limit": limit})
        except QueryError as exc:
            if raw and str(exc).startswith("malformed"):
                m = re.search(r", error: (.*?)(?:\. Look at|$)", str(exc))
                reason = m.group(1) if m else str(exc).split(": ", 1)[-1]
                raise QueryError(
                    f"malformed regular expression {query!r} ({reason[:160]}); "
                    "search without --raw to match the words as typed"
                ) from None
            raise
        out = []
        for r in rows:
            rec = event_record(r[:-1])
            rec["score"] = float(r[-1])
            out.append(rec)
        return out

    async def query_metrics(
        self,
        metric_name: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        aggregation: str = "avg",
    ) -> dict[str, Any]:
        check_aggregation(aggregation)
        where = sql.Where().window("ts", agent_slug, _us(since, "since"), _us(until, "until"))
        sql.metric_conditions(where, metric_name)
        rows = await self._rows(sql.query_metrics(self.database, where, aggregation), where.params)
        value, count = rows[0] if rows else (None, 0)
        count = int(count or 0)
        if aggregation == "count":
            value = count
        elif count == 0:
            value = None
        return {"metric": metric_name, "aggregation": aggregation, "value": value, "count": count}

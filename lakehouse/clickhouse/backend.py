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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from magsag.backends.base import StorageBackend, StorageCapabilities, Window
from magsag.backends.errors import BackendUnavailable, QueryError, UnsupportedOperation
from magsag.backends.schema import Event, Run, event_record, run_record
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import Engine, open_engine
from magsag.lakehouse.clickhouse.schema import ensure_schema

if TYPE_CHECKING:
    from magsag.lakehouse.settings import StorageSettings

T = TypeVar("T")
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


class ClickHouseBackend(StorageBackend):
    """Read-only backend over ClickHouse tables loaded from the lake."""

    name: ClassVar[str] = "clickhouse"
    events_page_size: ClassVar[int] = 5000

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

    async def _create_run(self, run: Run, explicit_start: bool) -> dict[str, Any]:
        raise UnsupportedOperation(_READ_ONLY)

    async def _update_run(self, run_id: str, *args: Any) -> dict[str, Any]:
        raise UnsupportedOperation(_READ_ONLY)

    async def _vacuum(self, *args: Any) -> dict[str, Any]:
        raise UnsupportedOperation(
            "the clickhouse backend does not vacuum: set MAGSAG_CLICKHOUSE_TTL_DAYS and run "
            "`magsag data clickhouse init`, or drop partitions in ClickHouse"
        )

    # ---------------------------------------------------------------- reads
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = await self._rows(sql.get_run(self.database), {"run_id": run_id})
        return run_record(rows[0]) if rows else None

    async def _list_runs(self, window: Window, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        where = sql.Where().window("started_at", window.agent_slug, window.since_us, window.until_us)
        if status is not None:
            where.add("status = {status:String}", status=status)
        params = {**where.params, "limit": limit, "offset": offset}
        return [run_record(r) for r in await self._rows(sql.list_runs(self.database, where), params)]

    async def _events_page(
        self, run_id: str, event_type: str | None, level: str | None, after: Any, n: int
    ) -> tuple[list[tuple[Any, ...]], Any]:
        where = sql.Where().add("run_id = {run_id:String}", run_id=run_id)
        if event_type is not None:
            where.add("type = {type:String}", type=event_type)
        if level is not None:
            where.add("level = {level:String}", level=level)
        ts, event_id = after or (-(2**62), "")
        params = {**where.params, "after_ts": ts, "after_id": event_id, "page": n}
        rows = await self._rows(sql.events_page(self.database, where), params)
        return rows, ((rows[-1][1], rows[-1][0]) if rows else after)

    async def _search_text(self, query: str, window: Window, limit: int, raw: bool) -> list[dict[str, Any]]:
        where = sql.Where().window("ts", window.agent_slug, window.since_us, window.until_us)
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

    async def _query_metrics(self, metric_name: str, window: Window, aggregation: str) -> tuple[Any, int]:
        where = sql.Where().window("ts", window.agent_slug, window.since_us, window.until_us)
        sql.metric_conditions(where, metric_name)
        rows = await self._rows(sql.query_metrics(self.database, where, aggregation), where.params)
        return rows[0] if rows else (None, 0)

"""The hot-store contract: one abstract ``StorageBackend`` that every backend implements.

Every method is async. Parameter names are part of the documented API
(``magsag.storage``); a signature test keeps every backend in line with this class.
Records come back as dicts keyed by the canonical field names (see
:mod:`magsag.backends.schema`): timestamps as ISO-8601 strings, ``payload``/``metrics`` as
dicts, ``tags`` as a list.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import aclosing
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from magsag.backends import instrument, jsontext
from magsag.backends.errors import QueryError, UnsupportedOperation, ValidationError
from magsag.backends.schema import (
    RUNNING,
    TERMINAL_STATUSES,
    Event,
    Run,
    coerce_datetime,
    event_record,
    event_row,
    from_us,
    hot_cutoff,
    json_object_text,
    normalize_status,
    to_us,
    utc_now,
)

AGGREGATIONS = ("avg", "sum", "min", "max", "count", "p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class StorageCapabilities:
    """What a backend can do; callers check these instead of catching errors."""

    append_event: bool = False
    get_run: bool = False
    list_runs: bool = False
    query_metrics: bool = False
    search_text: bool = False
    vector_search: bool = False
    archive_artifacts: bool = False
    lifecycle_policy: bool = False
    streaming: bool = False
    # optional store capabilities the layers above ask for (see magsag.backends.capabilities)
    tiering: bool = False
    metric_samples: bool = False
    day_stats: bool = False
    duckdb_source: bool = False
    activity: bool = False
    finished_runs: bool = False
    export_state: bool = False

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


#: What a full hot store (SQLite, PostgreSQL) declares: the whole contract and every
#: optional capability of :mod:`magsag.backends.capabilities`.
HOT_STORE = StorageCapabilities(
    append_event=True,
    get_run=True,
    list_runs=True,
    query_metrics=True,
    search_text=True,
    lifecycle_policy=True,
    streaming=True,
    tiering=True,
    metric_samples=True,
    day_stats=True,
    duckdb_source=True,
    activity=True,
    finished_runs=True,
    export_state=True,
)


class StorageBackend(abc.ABC):
    """Abstract hot store. Subclasses set ``name`` and implement the abstract methods."""

    name: ClassVar[str] = "abstract"

    # ------------------------------------------------------------ lifecycle
    @abc.abstractmethod
    async def initialize(self) -> None:
        """Open connections and create or upgrade the schema (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and release every connection."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> StorageCapabilities: ...

    async def __aenter__(self) -> StorageBackend:
        await self.initialize()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---------------------------------------------------------------- writes
    async def append_event(
        self,
        run_id: str,
        agent_slug: str,
        event_type: str,
        timestamp: datetime,
        level: str | None = None,
        message: str | None = None,
        payload: dict[str, Any] | None = None,
        span_id: str | None = None,
        parent_span_id: str | None = None,
        contract_id: str | None = None,
        contract_version: str | None = None,
        artifact_uri: str | None = None,
    ) -> str:
        """Append one event (creating its run if unknown); return its ``event_id``.

        The call returns once the event is durable: it survives a crash of this process.
        """
        row = event_row(
            run_id,
            agent_slug,
            event_type,
            timestamp,
            level,
            message,
            payload,
            span_id,
            parent_span_id,
            contract_id,
            contract_version,
            artifact_uri,
        )
        hook = instrument.sink
        if hook is None:
            await self._append_row(row)
            return row[0]
        started = time.perf_counter()
        await self._append_row(row)
        hook.appended(self.name, "event", (row[4],), 1, time.perf_counter() - started)
        return row[0]

    async def _append_row(self, row: tuple[Any, ...]) -> None:
        """Write one validated event row (:data:`~magsag.backends.schema.EVENT_COLUMNS` order).

        ``append_event``'s path; a backend with a faster single-event path overrides it.
        """
        await self._append_validated([Event(*row)])

    async def append_events(self, events: Iterable[Event | Mapping[str, Any]]) -> int:
        """Append many events in one transaction (the fast path); return how many were new.

        Each item is an :class:`~magsag.backends.schema.Event` or a dict with the record names
        (``ts``/``type``/``msg``) or the ``append_event`` names. Every item is validated
        before anything is written: one bad item writes nothing. Events whose
        ``event_id`` is already stored are skipped, so reloads are idempotent.
        """
        batch = []
        for i, item in enumerate(events):
            try:
                batch.append(Event.from_mapping(item))
            except ValidationError as exc:
                raise ValidationError(f"event #{i}: {exc}") from None
        if not batch:
            return 0
        hook = instrument.sink
        if hook is None:
            return await self._append_validated(batch)
        started = time.perf_counter()
        new = await self._append_validated(batch)
        hook.appended(self.name, "batch", instrument.event_types(batch), new, time.perf_counter() - started)
        return new

    @abc.abstractmethod
    async def _append_validated(self, events: list[Event]) -> int:
        """Write already-validated events; return the number newly stored."""

    async def create_run(
        self,
        run_id: str,
        agent_slug: str,
        parent_run_id: str | None = None,
        started_at: datetime | None = None,
        status: str = "running",
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Create a run, or update the given fields of an existing one; return it."""
        run = Run.create(run_id, agent_slug, parent_run_id, started_at, status, tags)
        return await self._create_run(run, started_at is not None)

    @abc.abstractmethod
    async def _create_run(self, run: Run, explicit_start: bool) -> dict[str, Any]:
        """Insert ``run`` or update a stored one (its ``started_at`` only if ``explicit_start``;
        a stored ``parent_run_id`` is kept when the new one is None); return the stored run."""

    async def upsert_runs(self, runs: Iterable[Run | Mapping[str, Any]]) -> int:
        """Write whole run records (insert or replace every field); return how many.

        The bulk path for importers and generators. Backends write the validated batch in
        one statement (``_upsert_runs``); the default calls ``create_run``/``update_run``
        per run.
        """
        batch = [Run.from_mapping(r) for r in runs]
        if not batch:
            return 0
        return await self._upsert_runs(batch)

    async def _upsert_runs(self, batch: list[Run]) -> int:
        for run in batch:
            await self.create_run(
                run.run_id,
                run.agent_slug,
                parent_run_id=run.parent_run_id,
                started_at=from_us(run.started_at_us),
                status=run.status,
                tags=list(run.tags),
            )
            await self.update_run(
                run.run_id,
                status=run.status,
                ended_at=from_us(run.ended_at_us) if run.ended_at_us is not None else None,
                metrics=jsontext.loads(run.metrics),
            )
        return len(batch)

    async def update_run(
        self,
        run_id: str,
        status: str | None = None,
        ended_at: datetime | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Update a run; ``metrics`` are merged into the stored ones (new keys win).

        Setting a terminal status without ``ended_at`` records now as the end time.
        Raises :class:`~magsag.backends.errors.NotFoundError` for an unknown run.
        """
        if status is not None:
            normalize_status(status)
        ended = coerce_datetime(ended_at, "ended_at", required=False)
        ended_us = to_us(ended) if ended else None
        if ended_us is None and status in TERMINAL_STATUSES:
            ended_us = to_us(utc_now())
        patch = json_object_text(metrics, "metrics") if metrics is not None else None
        return await self._update_run(run_id, status, ended_us, patch, status == RUNNING and ended is None)

    @abc.abstractmethod
    async def _update_run(
        self, run_id: str, status: str | None, ended_us: int | None, metrics_patch: str | None, clear_end: bool
    ) -> dict[str, Any]:
        """Set ``status`` (None: keep), ``ended_at`` (None: keep; ``clear_end``: set NULL), merge
        the JSON object text ``metrics_patch`` into ``metrics``; NotFoundError for an unknown run."""

    # ----------------------------------------------------------------- reads
    @abc.abstractmethod
    async def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    async def list_runs(
        self,
        agent_slug: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Runs newest first (by ``started_at``); ``since``/``until`` bound ``started_at``."""
        check_limit(limit)
        check_limit(offset, "offset")
        if status is not None:
            normalize_status(status)
        window = Window.of(agent_slug, since, until)
        return await self._list_runs(window, status, limit, offset)

    @abc.abstractmethod
    async def _list_runs(self, window: Window, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        """``list_runs`` with validated arguments (``window`` bounds ``started_at``)."""

    async def get_events(
        self,
        run_id: str,
        event_type: str | None = None,
        level: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The run's events, oldest first, as an async iterator (``async for``)."""
        check_limit(limit)
        async with aclosing(self._events(run_id, event_type, level.lower() if level else level, limit)) as events:
            async for e in events:
                yield e

    async def _events(
        self, run_id: str, event_type: str | None, level: str | None, limit: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """``get_events`` with validated arguments: pages of ``_events_page`` until short."""
        remaining = limit
        after: Any = None
        page_size = self.events_page_size
        while remaining is None or remaining > 0:
            n = page_size if remaining is None else min(page_size, remaining)
            rows, after = await self._events_page(run_id, event_type, level, after, n)
            for r in rows:
                yield event_record(r)
            if len(rows) < n:
                return
            if remaining is not None:
                remaining -= len(rows)

    #: rows per ``_events_page`` call of ``get_events``
    events_page_size: ClassVar[int] = 1000

    @abc.abstractmethod
    async def _events_page(
        self, run_id: str, event_type: str | None, level: str | None, after: Any, n: int
    ) -> tuple[list[tuple[Any, ...]], Any]:
        """Up to ``n`` event rows (:data:`~magsag.backends.schema.EVENT_COLUMNS` order) of the
        run after the position ``after`` (None: from the start), by (ts, commit order); and
        the position of the last row returned (opaque, passed back as ``after``)."""

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
        """Full-text search over ``msg``, best match first.

        By default ``query`` is taken as plain words (all must appear; punctuation and
        operators are ignored), so no user input can raise a syntax error. With
        ``raw=True`` the backend's own query syntax is passed through and a malformed
        query raises :class:`~magsag.backends.errors.QueryError`.
        """
        check_limit(limit)
        if not isinstance(query, str):
            raise QueryError("the search query must be text")
        return await self._search_text(query, Window.of(agent_slug, since, until), limit, raw)

    @abc.abstractmethod
    async def _search_text(self, query: str, window: Window, limit: int, raw: bool) -> list[dict[str, Any]]:
        """``search_text`` with validated arguments (``window`` bounds ``ts``)."""

    async def query_metrics(
        self,
        metric_name: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        aggregation: str = "avg",
    ) -> dict[str, Any]:
        """Aggregate ``metric`` events named ``metric_name``.

        Returns ``{"metric", "aggregation", "value", "count"}``; ``value`` is None when no
        sample matches. Aggregations: avg, sum, min, max, count, p50, p90, p95, p99.
        """
        check_aggregation(aggregation)
        value, count = await self._query_metrics(metric_name, Window.of(agent_slug, since, until), aggregation)
        count = int(count or 0)
        if aggregation == "count":
            value = count
        elif count == 0 or value is None:
            value = None
        else:
            value = float(value)
        return {"metric": metric_name, "aggregation": aggregation, "value": value, "count": count}

    @abc.abstractmethod
    async def _query_metrics(self, metric_name: str, window: Window, aggregation: str) -> tuple[Any, int]:
        """(value, number of numeric samples) of a validated aggregation over ``window`` (``ts``)."""

    def stream_events(
        self,
        run_id: str | None = None,
        agent_slug: str | None = None,
        event_type: str | None = None,
        level: str | None = None,
        since: datetime | None = None,
        *,
        cursor: str | None = None,
        follow: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events as they are committed, in commit order, forever (``async for``; break to stop).

        Each event carries ``cursor``; pass the last one received as ``cursor=`` to resume
        exactly after it (nothing missed, nothing twice). Without ``cursor`` the stream
        starts at the end of the store (only new events), or with ``since`` at the first
        stored event whose ``ts`` is at or after it: past events are replayed from the hot
        store, then new ones follow. ``since`` also filters: every event yielded has
        ``ts >= since``. With ``follow=False`` the stream ends once it has caught up with
        what was committed when it got there (a replay, like ``tail`` without ``-f``).
        Backends without ``capabilities.streaming`` raise
        :class:`~magsag.backends.errors.UnsupportedOperation`. See :mod:`magsag.backends.stream`.
        """
        if not self.capabilities.streaming:
            raise UnsupportedOperation(
                f"the {self.name} backend cannot stream events (capabilities.streaming is false)"
            )
        from magsag.backends.stream import stream_filter

        return self._stream_events(stream_filter(run_id, agent_slug, event_type, level, since), cursor, follow)

    def _stream_events(self, flt: Any, cursor: str | None, follow: bool) -> AsyncIterator[dict[str, Any]]:
        """``stream_events`` with a validated :class:`~magsag.backends.stream.StreamFilter`."""
        raise UnsupportedOperation(f"the {self.name} backend cannot stream events (capabilities.streaming is false)")

    # ------------------------------------------------------- semantic search
    async def search_similar(
        self,
        text: str | None = None,
        event_id: str | None = None,
        run_id: str | None = None,
        agent_slug: str | None = None,
        event_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Events whose meaning is nearest ``text`` (or the event ``event_id``), best first.

        Each event carries ``score`` (cosine similarity, 1 is identical). Filters narrow the
        candidates; ``event_id`` itself is left out. Only events embedded already are found
        (``magsag data embed``). Raises :class:`~magsag.backends.errors.UnsupportedOperation`
        when ``capabilities.vector_search`` is false, saying why. See docs/search.md.
        """
        from magsag.backends import semantic

        embedder = await semantic.embedder()
        tiers = [await semantic.hot_tier(self, embedder)]
        return await semantic.search_similar(
            self,
            tiers,
            embedder,
            text=text,
            event_id=event_id,
            run_id=run_id,
            agent_slug=agent_slug,
            event_type=event_type,
            since=since,
            until=until,
            limit=limit,
        )

    async def similar_runs(self, run_id: str, limit: int = 10) -> list[dict[str, Any]]:
        """Runs that failed (or ran) the way ``run_id`` did, best first, each with ``score``,
        ``match_event_id`` and ``match_msg`` (its event nearest the run's vector)."""
        from magsag.backends import semantic

        embedder = await semantic.embedder()
        tiers = [await semantic.hot_tier(self, embedder)]
        return await semantic.similar_runs(self, tiers, embedder, run_id, limit)

    # ------------------------------------------------------------ retention
    async def vacuum(
        self,
        hot_days: int = 7,
        max_disk_mb: float | None = None,
        dry_run: bool = False,
        *,
        now: datetime | None = None,
        keep_days: Iterable[Any] | None = None,
    ) -> dict[str, Any]:
        """Delete runs and events older than the cutoff (UTC midnight minus ``hot_days``).

        Returns ``dry_run``, ``cutoff`` and ``runs_to_delete``/``events_to_delete`` (dry
        run) or ``runs_deleted``/``events_deleted``. Runs still ``running`` and their
        events are kept. ``max_disk_mb`` deletes further whole days, oldest first, until
        the store fits. ``keep_days`` (dates) are never deleted (used when archiving is
        required and those days are not archived yet).
        """
        hot_cutoff(hot_days, now)  # validates hot_days
        return await self._vacuum(hot_days, max_disk_mb, dry_run, now, keep_dates(keep_days))

    @abc.abstractmethod
    async def _vacuum(
        self, hot_days: int, max_disk_mb: float | None, dry_run: bool, now: datetime | None, keep: list[date]
    ) -> dict[str, Any]:
        """``vacuum`` with validated arguments (``keep``: sorted distinct dates)."""

    # ------------------------------------------------ backends written before _impl
    #: each store-specific part, and the methods whose override makes it unnecessary
    _COVERED_BY: ClassVar[dict[str, tuple[str, ...]]] = {
        "_create_run": ("create_run",),
        "_update_run": ("update_run",),
        "_list_runs": ("list_runs",),
        "_events_page": ("get_events", "_events"),
        "_search_text": ("search_text",),
        "_query_metrics": ("query_metrics",),
        "_vacuum": ("vacuum",),
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A backend that overrides the public method itself (as backends written before
        # the validate-once split do) needs no store-specific part for it.
        super().__init_subclass__(**kwargs)
        for impl, covering in StorageBackend._COVERED_BY.items():
            still_abstract = getattr(getattr(cls, impl, None), "__isabstractmethod__", False)
            if still_abstract and any(name in cls.__dict__ for name in covering):
                setattr(cls, impl, _not_used(covering[0]))


def _not_used(public: str) -> Any:
    async def impl(self: StorageBackend, *args: Any) -> Any:
        raise UnsupportedOperation(f"the {self.name} backend implements {public} itself")

    return impl


@dataclass(frozen=True)
class Window:
    """The agent and [since, until) bounds every read shares, validated; times as µs."""

    agent_slug: str | None = None
    since_us: int | None = None
    until_us: int | None = None

    @classmethod
    def of(cls, agent_slug: str | None, since: Any, until: Any) -> Window:
        lo = coerce_datetime(since, "since", required=False)
        hi = coerce_datetime(until, "until", required=False)
        return cls(agent_slug, to_us(lo) if lo else None, to_us(hi) if hi else None)

    @property
    def since(self) -> datetime | None:
        return from_us(self.since_us) if self.since_us is not None else None

    @property
    def until(self) -> datetime | None:
        return from_us(self.until_us) if self.until_us is not None else None


def equal_conditions(where: list[str], params: list[Any], prefix: str = "", **columns: Any) -> None:
    """Append ``{prefix}{column} = ?`` and its value for each column whose value is not None
    (the qmark filters the SQLite store and the lake's DuckDB reads share)."""
    for column, value in columns.items():
        if value is not None:
            where.append(f"{prefix}{column} = ?")
            params.append(value)


def keep_dates(keep_days: Iterable[Any] | None) -> list[date]:
    """``keep_days`` of ``vacuum`` as sorted distinct dates (datetimes, dates or YYYY-MM-DD)."""
    out = set()
    for d in keep_days or ():
        if isinstance(d, datetime):
            out.add(d.date())
        elif isinstance(d, date):
            out.add(d)
        else:
            try:
                out.add(date.fromisoformat(str(d)))
            except ValueError:
                raise ValidationError(f"keep_days: {d!r} is not a date (YYYY-MM-DD)") from None
    return sorted(out)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def aggregate(aggregation: str, values: list[float]) -> tuple[float | int | None, int]:
    """(value, count) of a validated aggregation over samples, as ``query_metrics`` returns it."""
    if aggregation == "count" or not values:
        return len(values), len(values)
    if aggregation.startswith("p"):
        return percentile(values, int(aggregation[1:]) / 100), len(values)
    fn = {"avg": lambda v: sum(v) / len(v), "sum": sum, "min": min, "max": max}[aggregation]
    return fn(values), len(values)


def check_aggregation(aggregation: str) -> str:
    if aggregation not in AGGREGATIONS:
        raise ValidationError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {aggregation!r}")
    return aggregation


def check_limit(limit: int | None, name: str = "limit") -> int | None:
    if limit is None:
        return None
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValidationError(f"{name} must be a non-negative integer, got {limit!r}")
    return limit

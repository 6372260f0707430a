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
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, ClassVar

from magsag.backends import instrument, jsontext
from magsag.backends.errors import UnsupportedOperation, ValidationError
from magsag.backends.schema import Event, Run, event_row, from_us

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

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)


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

    @abc.abstractmethod
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

    async def upsert_runs(self, runs: Iterable[Run | Mapping[str, Any]]) -> int:
        """Write whole run records (insert or replace every field); return how many.

        The bulk path for importers and generators. The default implementation calls
        ``create_run``/``update_run`` per run; backends override it with one statement.
        """
        batch = [Run.from_mapping(r) for r in runs]
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

    @abc.abstractmethod
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

    # ----------------------------------------------------------------- reads
    @abc.abstractmethod
    async def get_run(self, run_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
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

    @abc.abstractmethod
    def get_events(
        self,
        run_id: str,
        event_type: str | None = None,
        level: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The run's events, oldest first, as an async iterator (``async for``)."""

    @abc.abstractmethod
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

    @abc.abstractmethod
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
    @abc.abstractmethod
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

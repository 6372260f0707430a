"""Erasing runs from a hot store: the request, the tombstone ledger, one interface per store.

An erase (``magsag data delete``, :func:`magsag.storage.delete_runs`) selects either
**whole runs** (by id, with their delegated child runs; by agent; by the time they
started) or, with ``matching``, **single events** whose message or payload text contains
a string (a leaked secret). What it erases is first written to the store's *tombstone
ledger* (``magsag_tombstones``: kind ``run`` or ``event``, the id, when, which job; no
content) together with the job's plan (``magsag_erase_jobs``), in one transaction.
From then on a trigger on ``events`` and ``runs`` drops any insert of a tombstoned id
(late copies, journal replays, imports of old archives), and every tier is purged of the
tombstoned ids, idempotently, so a job killed at any step is finished by the next run.

Each hot store implements :class:`HotEraser` (``backends/sqlite/erase.py``,
``backends/postgres/erase.py``); :func:`hot_eraser` finds it. The lake, archive and
ClickHouse side lives in ``lakehouse/erase.py``.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import UnsupportedOperation, ValidationError
from magsag.backends.schema import to_us

if TYPE_CHECKING:
    from magsag.backends.base import StorageBackend

RUN = "run"
EVENT = "event"
TOMBSTONES = "magsag_tombstones"
ERASE_JOBS = "magsag_erase_jobs"
MAX_IDS = 100_000  # ids one request may name


@dataclass(frozen=True)
class EraseRequest:
    """What to erase. Run-level unless ``matching`` is given (then event-level).

    ``run_ids`` (with their delegated child runs unless ``children`` is False), ``agent``
    and ``since``/``until`` (``until`` exclusive; runs by ``started_at``, events by ``ts``)
    are combined with AND. ``matching`` selects the events whose ``msg`` or stored JSON
    ``payload`` text contains it (case-sensitive), within the other filters.
    """

    run_ids: tuple[str, ...] = ()
    children: bool = True
    agent: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    matching: str | None = None

    def __post_init__(self) -> None:
        if not (self.run_ids or self.agent or self.since or self.until or self.matching):
            raise ValidationError("nothing selected: give run ids, --agent, --since/--until or --matching")
        if len(self.run_ids) > MAX_IDS:
            raise ValidationError(f"at most {MAX_IDS} run ids per request")
        if any(not isinstance(r, str) or not r.strip() for r in self.run_ids):
            raise ValidationError("run ids must be non-empty strings")
        if self.matching is not None and len(self.matching) < 3:
            raise ValidationError("--matching needs at least 3 characters (it erases every event containing it)")
        if self.since and self.until and self.until <= self.since:
            raise ValidationError("--until must be after --since")

    @property
    def event_level(self) -> bool:
        return self.matching is not None

    @property
    def since_us(self) -> int | None:
        return to_us(self.since) if self.since else None

    @property
    def until_us(self) -> int | None:
        return to_us(self.until) if self.until else None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run_ids"] = list(self.run_ids)
        d["since"] = self.since.isoformat() if self.since else None
        d["until"] = self.until.isoformat() if self.until else None
        d["matching"] = None if self.matching is None else "<redacted>"  # never stored: it is the secret
        return d


@dataclass
class HotSelection:
    """What a request selects in the hot store, and how many rows that is."""

    run_ids: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    events: int = 0
    runs: int = 0


@dataclass
class PendingJob:
    job_id: str
    state: str
    plan: dict[str, Any]


class HotEraser(abc.ABC):
    """A hot store's part of an erase; every method is idempotent."""

    def __init__(self, backend: StorageBackend) -> None:
        self.backend = backend

    @abc.abstractmethod
    async def select(self, req: EraseRequest) -> HotSelection:
        """Run ids (run-level) or event ids (event-level) the request selects here."""

    @abc.abstractmethod
    async def parents(self, run_ids: set[str]) -> dict[str, str]:
        """child run id -> parent run id, for the hot runs whose parent is in ``run_ids``."""

    @abc.abstractmethod
    async def count(self, run_ids: set[str], event_ids: set[str]) -> tuple[int, int]:
        """(events, runs) the hot store holds of these ids."""

    @abc.abstractmethod
    async def record(
        self, job_id: str, request: dict[str, Any], plan: dict[str, Any], run_ids: set[str], event_ids: set[str]
    ) -> None:
        """One transaction: the job, its tombstones, the guard triggers."""

    @abc.abstractmethod
    async def pending(self) -> list[PendingJob]:
        """Jobs recorded but not finished, oldest first."""

    @abc.abstractmethod
    async def set_state(self, job_id: str, state: str) -> None: ...

    @abc.abstractmethod
    async def tombstones(self) -> tuple[set[str], set[str]]:
        """(run ids, event ids) of every tombstone."""

    @abc.abstractmethod
    async def purge(self) -> tuple[int, int]:
        """Delete every tombstoned row (events with their full-text entries, runs); (events, runs)."""

    @abc.abstractmethod
    async def scrub(self) -> dict[str, Any]:
        """Make deleted bytes unreadable (SQLite: checkpoint; PostgreSQL: VACUUM)."""

    @abc.abstractmethod
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
        """Retention: delete events older than ``before_us`` matching the filters (and with
        ``runs``, run records started before it that no event refers to any more)."""

    @abc.abstractmethod
    async def ledger(self, limit: int = 1000) -> list[dict[str, Any]]:
        """Recent tombstones (kind, id, erased_at, job) newest first."""


def hot_eraser(backend: StorageBackend) -> HotEraser:
    """The :class:`HotEraser` of a hot store (unwraps a tiered backend)."""
    inner = getattr(backend, "hot", backend)
    name = getattr(inner, "name", "")
    if name == "sqlite":
        from magsag.backends.sqlite.erase import SQLiteEraser

        return SQLiteEraser(inner)
    if name in ("postgres", "timescale"):
        from magsag.backends.postgres.erase import PostgresEraser

        return PostgresEraser(inner)
    raise UnsupportedOperation(f"the {name or type(inner).__name__} store does not support erasing")

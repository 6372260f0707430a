"""Optional store capabilities: what the lake layer and the front may ask of a hot store.

The contract (:class:`~magsag.backends.base.StorageBackend`) is what every backend does.
Beyond it, the layers above ask a hot store for a few things only some stores can give
(the way ibis backends declare what they support): each is a flag on
:class:`~magsag.backends.base.StorageCapabilities` plus the methods of one Protocol below,
implemented by the store class itself. Callers check the flag (:func:`require` gives the
one-line refusal) and never ask which module or class a store came from; the SQL of each
store stays in its own package (``backends/sqlite/``, ``backends/postgres/``).

==================  ======================================================================
flag                methods (Protocol)
==================  ======================================================================
``tiering``         ``tier_source()`` (:class:`Tierable`): the store's ``TierSource``
``metric_samples``  ``metric_samples(...)`` (:class:`MetricSamples`): numeric samples
``day_stats``       ``stats()``, ``day_stats()`` (:class:`DayStats`): totals, rows per day
``duckdb_source``   ``duckdb_source(con, alias, mode)`` (:class:`DuckDBSource`): the store
                    read by a DuckDB query connection (views over hot + lake)
``activity``        ``activity(since_us, buckets)`` (:class:`ActivityReader`): GROUP BYs
``finished_runs``   ``finished_runs(...)`` (:class:`FinishedRuns`): keyset over ended runs
``export_state``    ``read_export_state``/``save_export_state``/``export_states`` (:class:`ExportState`)
==================  ======================================================================

A custom backend declares none of them and still works: tiering, ``data stats`` per day,
the query views' hot branch, ``/metrics`` activity and the OTLP watermark then refuse or
degrade with a message naming the missing capability.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from magsag.backends.errors import UnsupportedOperation
from magsag.backends.schema import US_PER_DAY, day_of_us, iso_from_us, to_us

if TYPE_CHECKING:
    import duckdb
    from magsag.backends.base import StorageBackend

#: The optional capabilities, flag name -> the methods a store declaring it implements.
OPTIONAL: dict[str, tuple[str, ...]] = {
    "tiering": ("tier_source",),
    "metric_samples": ("metric_samples",),
    "day_stats": ("stats", "day_stats"),
    "duckdb_source": ("duckdb_source", "duckdb_extensions", "duckdb_exclusive_key"),
    "activity": ("activity",),
    "finished_runs": ("finished_runs",),
    "export_state": ("read_export_state", "save_export_state", "export_states"),
}

#: (ended_at µs, run_id): the keyset position of a finished run.
RunKey = tuple[int, str]


def has(store: StorageBackend, capability: str) -> bool:
    """Whether ``store`` declares ``capability`` (a flag of its ``capabilities``)."""
    return bool(getattr(store.capabilities, capability, False))


def require(store: StorageBackend, capability: str, purpose: str) -> None:
    """Raise a one-line :class:`UnsupportedOperation` unless ``store`` declares ``capability``."""
    if not has(store, capability):
        raise UnsupportedOperation(
            f"{purpose} needs a hot store with the {capability!r} capability; "
            f"the {store.name} backend does not declare it (see docs/api.md, custom backends)"
        )


@runtime_checkable
class Tierable(Protocol):
    def tier_source(self) -> Any:
        """The store's :class:`~magsag.backends.tiering.protocol.TierSource`."""


@runtime_checkable
class MetricSamples(Protocol):
    async def metric_samples(
        self, metric_name: str, agent_slug: str | None, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, float]]:
        """(event_id, value) of every ``metric`` event named ``metric_name`` with a numeric
        value, ``since <= ts < until`` (bounds validated, UTC)."""


@runtime_checkable
class DayStats(Protocol):
    async def stats(self) -> dict[str, Any]:
        """Totals: ``events``, ``runs``, ``bytes``, ``oldest``, ``newest`` (and store details)."""

    async def day_stats(self) -> list[dict[str, Any]]:
        """Per UTC day, oldest first: ``dt`` (YYYY-MM-DD), ``events``, ``runs``, ``oldest``,
        ``newest`` and, where a day has its own storage, ``bytes``."""


@dataclass(frozen=True)
class HotSource:
    """How a DuckDB connection reads the hot store: a SELECT per dataset (canonical columns + ``dt``)."""

    kind: str | None  # the store's name, or None (no hot store to read)
    events: str
    runs: str
    oldest_event_day: date | None = None
    oldest_run_day: date | None = None
    mode: str = "attach"  # "attach": read at query time; "snapshot": rows read at connect
    #: the source as a snapshot read now (``refresh`` of a snapshot; giving up an attachment)
    reread: Callable[[duckdb.DuckDBPyConnection], HotSource] | None = None
    #: an attached source that must be given up when this process opens the store itself
    exclusive_key: str | None = None


@runtime_checkable
class DuckDBSource(Protocol):
    #: DuckDB extensions the connection must load before ``duckdb_source`` runs
    duckdb_extensions: Sequence[str]

    def duckdb_source(self, con: duckdb.DuckDBPyConnection, alias: str, mode: str = "auto") -> HotSource | None:
        """Make the store readable on ``con`` (attached as ``alias``, read-only) without
        opening it for writing; None when it holds nothing yet. ``mode``: ``auto``,
        ``attach`` (read at query time) or ``snapshot`` (rows read now)."""

    def duckdb_exclusive_key(self) -> str | None:
        """What attached readers in this process must give up (switch to snapshots)
        before the store opens itself; None when attaching never conflicts."""


@runtime_checkable
class ActivityReader(Protocol):
    async def activity(self, since_us: int, buckets: Sequence[float]) -> list[list[tuple[Any, ...]]]:
        """Four row lists: runs by (agent, status); runs ended since ``since_us`` by
        (agent, status); their (agent, model, runs, tokens, cost_usd); numeric-latency MCP
        calls since ``since_us`` by (server, tool, status, calls, seconds, per-bucket
        cumulative counts for ``buckets`` in seconds)."""


@dataclass(frozen=True)
class RunSelection:
    """Which finished runs: ``since <= started_at < until`` (until exclusive), agent, status, ids."""

    since: datetime | None = None
    until: datetime | None = None
    agent: str | None = None
    status: str | None = None
    run_ids: tuple[str, ...] = ()

    def where(self, ph: Callable[[int], str], after: RunKey) -> tuple[list[str], list[Any]]:
        """Conditions (plain SQL over the run columns, times as µs) and parameters after
        ``after``; ``ph(i)`` renders the i-th placeholder (1-based) of the engine."""
        params: list[Any] = []

        def p(value: Any) -> str:
            params.append(value)
            return ph(len(params))

        where = [
            "status <> 'running'",
            "ended_at IS NOT NULL",
            f"(ended_at > {p(after[0])} OR (ended_at = {p(after[0])} AND run_id > {p(after[1])}))",
        ]
        if self.since is not None:
            where.append(f"started_at >= {p(to_us(self.since))}")
        if self.until is not None:
            where.append(f"started_at < {p(to_us(self.until))}")
        if self.agent is not None:
            where.append(f"agent_slug = {p(self.agent)}")
        if self.status is not None:
            where.append(f"status = {p(self.status)}")
        if self.run_ids:
            where.append(f"run_id IN ({', '.join(p(r) for r in self.run_ids)})")
        return where, params


@runtime_checkable
class FinishedRuns(Protocol):
    async def finished_runs(self, sel: RunSelection, after: RunKey, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` finished runs (status not running, ``ended_at`` set) after ``after``
        in (``ended_at``, ``run_id``) order."""


@runtime_checkable
class ExportState(Protocol):
    async def read_export_state(self, destination: str) -> tuple[RunKey, int] | None:
        """An export destination's watermark and run count, or None when new."""

    async def save_export_state(self, destination: str, key: RunKey, runs: int, updated_at_us: int) -> None:
        """Store the destination's watermark (insert or replace)."""

    async def export_states(self) -> list[tuple[str, RunKey, int]]:
        """Every destination's (name, watermark, run count), by name."""


def merge_days(ev: list[Any], rn: list[Any], sizes: dict[str, int]) -> list[dict[str, Any]]:
    """Per-day rows from (day, events, min ts, max ts) and (day, runs); ``sizes`` by day."""
    days: dict[str, dict[str, Any]] = {}
    for d, n, lo, hi in ev:
        key = day_of_us(int(d) * US_PER_DAY).isoformat()
        days[key] = {"events": int(n), "runs": 0, "oldest": iso_from_us(int(lo)), "newest": iso_from_us(int(hi))}
    for d, n in rn:
        days.setdefault(day_of_us(int(d) * US_PER_DAY).isoformat(), {"events": 0, "runs": 0})["runs"] = int(n)
    out = []
    for key in sorted(days):
        row = {"dt": key, **days[key]}
        if key in sizes:
            row["bytes"] = sizes[key]
        out.append(row)
    return out


def declared(store: StorageBackend) -> list[str]:
    """The optional capabilities ``store`` declares."""
    return [name for name in OPTIONAL if has(store, name)]

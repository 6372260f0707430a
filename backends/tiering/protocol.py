"""What a hot store offers the tiering job: :class:`TierSource`, a backend-neutral protocol.

The tiering job (``lakehouse/tiering/job.py``) moves complete UTC days out of a hot store into
a Parquet lake (``mode="move"``: ``magsag data tier``, ``magsag data archive --delete``) or
copies them to another destination (``mode="copy"``: ``magsag data archive``). Each hot
store implements this protocol once (``backends/sqlite/tiering.py``,
``backends/postgres/tiering.py``); the job never touches a store's tables itself.

Exactly once rests on a **ledger of claims** kept in the hot store (one row per
destination, day and attempt) and on the lake's manifest (a file is committed when its
manifest entry exists). One claim moves through::

    claim_day()          state "claimed": the selection is frozen (see below), the planned
                         file names are recorded
    export_events()      the job writes the selection to staging files and publishes them
    export_runs()        (commit = manifest entry); nothing in the hot store changes
    mark_exported()      state "exported": every planned file is committed (or was empty)
    delete_claims()      move mode only: delete exactly the selection (the job hands over
                         every exported claim of the run at once; delete_claimed() is one),
                         then record the deletion in the claim
    finish_claim()       state "done"

The guards of these state changes (only forward, refusals, repeats) are one state machine
for every store, :mod:`magsag.backends.tiering.ledger`; :class:`~magsag.backends.tiering.base.BaseTierSource`
implements the protocol's ledger side once, and a store adds its SQL.

A process killed at any instant leaves the claim in "claimed" or "exported";
:meth:`TierSource.unfinished_claims` hands it to the next job, which finishes it (publishes
what is missing, deletes what is left) before it plans new work.

**The selection of a claim** is fixed when the claim is made and never grows: the events
of the claim's UTC day ``[day 00:00, day+1 00:00)`` that were stored before the claim
(rows appended later never join it, even with an old timestamp: they are late data for
the next job), minus the events of runs that were ``running`` at claim time (those stay
hot until their run ends), minus the rows a finished claim to the same destination already
covered (copy mode leaves them in the hot store), plus the events of the claim's
``orphan_runs``. The claim's runs are the runs that started that day and were terminal
(succeeded, failed, canceled) at claim time, minus runs a finished claim to the same
destination already holds. Each backend records whatever it needs to re-create exactly
this selection later (SQLite: the highest ``events.seq`` and the excluded run ids); the
job treats it as opaque (:attr:`Claim.snapshot`). Because rows of the selection can only
disappear (retention), never appear, exporting it twice yields the same rows (or fewer),
and deleting it never deletes a row the lake does not hold.

**Placeholder runs.** A backend creates a ``running`` placeholder run for events of an
unknown run. When events arrive late for a run whose record is already in the lake, that
placeholder would keep them hot forever. The job asks :meth:`TierSource.running_runs` for
running runs that started before the cutoff, looks each up in the destination, and passes
those already there as ``orphan_runs``: their events join the selection, their
placeholder rows are not exported (the lake has the real record) and are deleted once no
hot event refers to them (move mode).

All methods are coroutines; ``export_events`` is an async iterator. Errors are
:class:`~magsag.backends.errors.StorageError` subclasses with one-line messages; a held lock is
:class:`~magsag.backends.errors.LockedError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from magsag.backends.errors import UnsupportedOperation

if TYPE_CHECKING:
    import pyarrow as pa
    from magsag.backends.base import StorageBackend

MOVE, COPY = "move", "copy"
MODES = (MOVE, COPY)
CLAIMED, EXPORTED, DONE = "claimed", "exported", "done"
STATES = (CLAIMED, EXPORTED, DONE)
EVENTS, RUNS = "events", "runs"

# Sort order of every exported dataset (files compress and prune well, and a rerun writes
# byte-identical files for the same selection).
EVENT_SORT = ("agent_slug", "run_id", "ts", "event_id")
RUN_SORT = ("agent_slug", "started_at", "run_id")


@dataclass(frozen=True)
class TierDay:
    """One complete UTC day before the cutoff, as the hot store holds it now.

    ``events``/``runs`` count what a claim made now would select (for ``dest``);
    ``held_events``/``held_runs`` what stays hot because its run is still running.
    ``hot_bytes`` estimates what the selected rows occupy in the hot store (for the
    compression ratio in reports; indexes included, proportional to row counts).
    """

    day: date
    events: int
    runs: int
    held_events: int = 0
    held_runs: int = 0
    hot_bytes: int = 0

    @property
    def movable(self) -> bool:
        return self.events > 0 or self.runs > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "events": self.events,
            "runs": self.runs,
            "held_events": self.held_events,
            "held_runs": self.held_runs,
            "hot_bytes": self.hot_bytes,
        }


@dataclass(frozen=True)
class Claim:
    """One ledger row: a day claimed for a destination by one job attempt.

    ``batch_id`` is unique and is also the lake job id of the claim's files, so every
    file a claim writes has a name no other claim uses. ``files`` maps a dataset
    (``"events"``, ``"runs"``) to the planned lake path relative to the root.
    ``snapshot`` is the backend's own description of the frozen selection (JSON-able).
    ``info`` is free JSON the job keeps with the claim (staged files, counts, timings).
    """

    batch_id: str
    dest: str
    day: date
    mode: str
    state: str
    files: dict[str, str]
    run_ids: tuple[str, ...] = ()
    orphan_runs: tuple[str, ...] = ()
    event_rows: int | None = None
    run_rows: int | None = None
    snapshot: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    finished_at: datetime | None = None

    def with_changes(self, **changes: Any) -> Claim:
        from dataclasses import replace

        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "dest": self.dest,
            "day": self.day.isoformat(),
            "mode": self.mode,
            "state": self.state,
            "files": dict(self.files),
            "runs": len(self.run_ids),
            "orphan_runs": list(self.orphan_runs),
            "event_rows": self.event_rows,
            "run_rows": self.run_rows,
        }


@dataclass(frozen=True)
class RunningRun:
    """A hot run still ``running`` that started before the cutoff (maybe a placeholder)."""

    run_id: str
    agent_slug: str
    started_at_us: int
    placeholder: bool  # no parent, no metrics, no tags: what a backend auto-creates


@runtime_checkable
class TierSource(Protocol):
    """The tiering side of a hot store. See the module docstring for the claim life cycle."""

    backend: StorageBackend

    def job_lock(self, *, wait: bool = True, timeout: float | None = None) -> AbstractAsyncContextManager[None]:
        """Hold the store's tiering lock for the duration of ``async with``.

        One tiering job (tier or archive, any destination) runs per hot store at a time.
        With ``wait=True`` the call waits until the lock is free (at most ``timeout``
        seconds if given); with ``wait=False``, or when the timeout passes, it raises
        :class:`~magsag.backends.errors.LockedError` naming who holds it when known. The lock
        is released when the block exits and also when the process dies (kill -9):
        SQLite uses an OS file lock next to the database, PostgreSQL a session advisory
        lock.
        """
        ...

    async def tierable_days(
        self, cutoff: datetime, *, dest: str, orphan_runs: Iterable[str] = (), mode: str = MOVE
    ) -> list[TierDay]:
        """Every complete UTC day before ``cutoff`` (a UTC midnight, see
        :func:`magsag.backends.schema.hot_cutoff`) on which the hot store holds any event or any
        run start, oldest first, with the counts a claim for ``dest`` in ``mode`` would
        select now (copy mode leaves out what finished claims to ``dest`` hold).
        Read-only: a dry run calls only this."""
        ...

    async def running_runs(self, before: datetime) -> list[RunningRun]:
        """Runs with status ``running`` that started before ``before`` (oldest first)."""
        ...

    async def claim_day(
        self,
        *,
        batch_id: str,
        dest: str,
        day: date,
        mode: str,
        files: dict[str, str],
        orphan_runs: Iterable[str] = (),
        info: dict[str, Any] | None = None,
    ) -> Claim | None:
        """Freeze the day's selection and record the claim (state ``claimed``) in one
        transaction; return it. Returns None, recording nothing, when the day already has
        an unfinished claim (any destination: one day is never being moved to two places
        at once) or when the selection is empty. ``info`` starts the claim's info."""
        ...

    def export_events(self, claim: Claim, *, batch_rows: int = 65_536) -> AsyncIterator[pa.RecordBatch]:
        """The claim's selected events as record batches of the canonical
        :func:`~magsag.backends.schema.event_arrow_schema` (``ts`` as ``timestamp[us, UTC]``),
        sorted by :data:`EVENT_SORT`, at most ``batch_rows`` rows each. Memory stays
        bounded whatever the day's size. Read-only; may be called again after a crash."""
        ...

    async def export_runs(self, claim: Claim) -> pa.Table:
        """The claim's runs (current values, canonical :func:`~magsag.backends.schema.run_arrow_schema`),
        sorted by :data:`RUN_SORT`. Orphan placeholders are never exported. Read-only."""
        ...

    async def mark_exported(
        self, claim: Claim, *, rows: Mapping[str, int], info: dict[str, Any] | None = None
    ) -> Claim:
        """Record that every planned file of the claim is committed in the destination
        (or had no rows): ``rows`` maps each planned dataset (every key of
        ``claim.files``, no other) to the rows its committed file holds, 0 when it had
        none. State ``exported``, the counts written, ``info`` merged into the claim's
        info. Only from ``claimed``; a repeat with the same counts changes nothing (a
        done claim stays done), with other counts it is refused."""
        ...

    async def update_info(self, claim: Claim, info: dict[str, Any]) -> Claim:
        """Merge ``info`` into the claim's info (e.g. a staged file, so a rerun can resume
        its publish). Does not change the state. The ledger's own keys (``deleted``) are
        refused."""
        ...

    async def delete_claimed(
        self, claim: Claim, *, chunk_rows: int = 50_000, on_chunk: Callable[[int], None] | None = None
    ) -> dict[str, int]:
        """Move mode, state ``exported`` as stored in the ledger (the caller's copy is not
        trusted): delete exactly the claim's selection from the hot
        store (events with their full-text index entries, then the claim's runs, then
        orphan placeholders no hot event refers to any more). Runs in transactions of at
        most ``chunk_rows`` events, so concurrent appends keep flowing and memory stays
        bounded. Idempotent (a rerun deletes what is left). Never deletes a row outside
        the selection. ``on_chunk`` is called after each committed chunk with the number
        of events it deleted. Returns ``{"events": n, "runs": m}`` deleted by this call,
        and adds it to the claim's ``info["deleted"]`` in the ledger (what lets a move claim
        finish)."""
        ...

    async def delete_claims(
        self, claims: Sequence[Claim], *, chunk_rows: int = 50_000, on_chunk: Callable[[int], None] | None = None
    ) -> dict[str, dict[str, int]]:
        """:meth:`delete_claimed` for several claims at once, keyed by batch id. A backend
        may delete them together more cheaply than one by one (SQLite rebuilds its table
        when they select a large share of it); the guarantees are those of
        :meth:`delete_claimed`, each step one transaction."""
        ...

    async def finish_claim(self, claim: Claim, *, info: dict[str, Any] | None = None) -> Claim:
        """State ``done`` (the claim then counts as covering its selection for
        :meth:`unarchived_days`); ``finished_at`` and ``info`` written. Only from
        ``exported``, and for a move only once its selection was deleted
        (:meth:`delete_claimed`); a repeat on a done claim changes nothing (``finished_at``
        is written once)."""
        ...

    async def unfinished_claims(self, dest: str | None = None) -> list[Claim]:
        """Claims in state ``claimed`` or ``exported`` (for ``dest``, or all), oldest first."""
        ...

    async def claims(self, dest: str | None = None, day: date | None = None) -> list[Claim]:
        """Every claim (all states), filtered by destination and/or day, oldest first."""
        ...

    async def unarchived_days(self, days: Iterable[date], *, dest: str | None = None) -> list[date]:
        """Of ``days``, those on which the hot store holds an event (of a run that is not
        running) or a terminal run that no ``done`` claim to ``dest`` (to any destination
        when None) covers. The vacuum guard refuses to delete these days."""
        ...

    async def close(self) -> None:
        """Release what the source opened for tiering (the job calls it at the end)."""
        ...


def tier_source(backend: StorageBackend) -> TierSource:
    """The :class:`TierSource` of a hot store: its ``tier_source()`` (the ``tiering`` capability)."""
    own = getattr(backend, "tier_source", None)
    if not callable(own):
        raise UnsupportedOperation(
            f"the {backend.name} hot store does not support tiering (it declares no 'tiering' capability)"
        )
    try:
        return own()
    except ImportError as exc:
        raise UnsupportedOperation(f"tiering from the {backend.name} hot store is not available here: {exc}") from None

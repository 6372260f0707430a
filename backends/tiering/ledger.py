"""The claim ledger's state machine, written once for every hot store.

A hot store keeps one ledger row per claim (``tier_batches``: one destination, one UTC day,
one job attempt). This module decides every change of such a row; the store only
supplies the SQL (:class:`LedgerSQL`: SQLite's in ``backends/sqlite/tier_ledger.py``,
PostgreSQL's in ``backends/postgres/tier_ledger.py``). A claim moves forward only::

    claimed ──mark_exported──▶ exported ──finish──▶ done
                                   └── record_deleted (move mode: the selection left the hot store)

=================  ===============  ===========================================================
transition         from (stored)    guard, and what a repeat does
=================  ===============  ===========================================================
``mark_exported``  claimed          a row count for exactly the planned datasets (every
                                    planned file committed, or had no rows); writes the state,
                                    ``event_rows``/``run_rows`` and the info.
                                    From exported/done: no change when the counts agree,
                                    refused when they differ. Never moves a claim back.
``record_deleted`` exported         move mode only; adds the counts to ``info["deleted"]``.
                                    From done: no change. From claimed: refused.
``finish``         exported         copy mode, or move mode once ``record_deleted`` ran;
                                    writes the state, ``finished_at`` and the info.
                                    From done: no change (``finished_at`` is written once).
                                    From claimed: refused.
``update_info``    any              merges the caller's info; the ledger's own keys
                                    (``deleted``) are refused.
=================  ===============  ===========================================================

Every transition reads the **stored** row (never the caller's copy, which may be stale),
decides with the pure functions below (:func:`exported`, :func:`deleted`, :func:`finished`,
:func:`with_info`), and writes with :meth:`LedgerSQL.put`: a compare-and-set on the stored
state, so two writers can never both move one claim. A refusal raises
:class:`~magsag.backends.errors.StorageError` naming the claim and its state, and writes
nothing.

The bookkeeping every store shares lives here too: batch ids (:func:`check_id`,
:func:`batch_id_for`: a claim's id is its job attempt's id plus the day, and is also the
lake job id of its files), the checks of a claim request (:func:`check_mode`,
:func:`check_files`), which stored claims may be deleted (:meth:`Ledger.deletable`), which
finished claims cover a day for a destination (:meth:`Ledger.covering`: copy mode skips
their rows), whether a selection is worth a claim (:func:`worth_claiming`), and the JSON
of ledger columns (:func:`dumps`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

import orjson
from magsag.backends.errors import StorageError, ValidationError
from magsag.backends.schema import US_PER_DAY, to_us, utc_now
from magsag.backends.tiering.protocol import CLAIMED, DONE, EVENTS, EXPORTED, MODES, MOVE, RUNS, Claim

DELETED = "deleted"  # info key the ledger owns: what deletes of a move claim removed so far
LEDGER_KEYS = frozenset({DELETED})
DATASETS = (EVENTS, RUNS)
_ID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ID_MAX = 80


# ----------------------------------------------------------------- checks


def check_id(batch_id: Any) -> str:
    """A batch id: 1-80 characters of ``[A-Za-z0-9_.-]`` (it names lake files and is
    embedded in SQL text), else :class:`ValidationError`."""
    if not isinstance(batch_id, str) or not batch_id or len(batch_id) > _ID_MAX or not set(batch_id) <= _ID_OK:
        raise ValidationError(f"invalid tier batch id {batch_id!r}")
    return batch_id


def batch_id_for(job_id: str, day: date) -> str:
    """The id of job attempt ``job_id``'s claim of ``day``: ``<job id>-YYYYMMDD``."""
    return check_id(f"{job_id}-{day:%Y%m%d}")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValidationError(f"tier mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def check_files(files: Mapping[str, str]) -> dict[str, str]:
    """A claim's planned files: dataset (``events``, ``runs``) to a lake path."""
    bad = [k for k, v in files.items() if k not in DATASETS or not isinstance(v, str) or not v]
    if bad:
        raise ValidationError(f"planned tier files must map {' or '.join(DATASETS)} to a lake path; got {bad[0]!r}")
    return dict(files)


def check_rows(claim: Claim, rows: Mapping[str, int]) -> dict[str, int]:
    """The row counts of ``mark_exported``: one per planned dataset, whole and not negative."""
    for dataset, n in rows.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValidationError(f"row count of {dataset!r} must be a whole number >= 0; got {n!r}")
    missing = sorted(set(claim.files) - set(rows))
    extra = sorted(set(rows) - set(claim.files))
    if missing or extra:
        what = f"no row count for planned {', '.join(missing)}" if missing else f"{', '.join(extra)} not planned"
        raise StorageError(f"tier claim {claim.batch_id}: {what}; not marked exported")
    return dict(rows)


def claim_info(info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The info a new claim starts with (the caller's; the ledger's own keys refused)."""
    own = LEDGER_KEYS & set(info or {})
    if own:
        raise ValidationError(f"tier claim info key {sorted(own)[0]!r} belongs to the ledger")
    return dict(info or {})


def complete_days_before(cutoff: datetime) -> int:
    """``cutoff`` in microseconds, cut down to a UTC midnight (only complete days tier)."""
    cut = to_us(cutoff)
    return cut - cut % US_PER_DAY


def worth_claiming(selected_events: int, run_ids: Sequence[str]) -> bool:
    """A claim is recorded only when its selection holds an event or a run."""
    return selected_events > 0 or bool(run_ids)


def sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def day_list(days: Iterable[date | str]) -> list[date]:
    return sorted({d if isinstance(d, date) else date.fromisoformat(str(d)) for d in days})


def dumps(value: Any) -> str:
    """Compact JSON (sorted keys) for ledger columns."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()


# ------------------------------------------------------------ transitions


def _refuse(claim: Claim, what: str) -> StorageError:
    return StorageError(f"tier claim {claim.batch_id} is {claim.state}: {what}")


def exported(stored: Claim, rows: Mapping[str, int], info: Mapping[str, Any] | None) -> Claim | None:
    """``mark_exported`` of the stored claim: the claim to write, or None for no change."""
    counts = check_rows(stored, rows)
    events, runs = counts.get(EVENTS, 0), counts.get(RUNS, 0)
    if stored.state != CLAIMED:
        if (stored.event_rows or 0, stored.run_rows or 0) != (events, runs):
            raise _refuse(
                stored,
                f"it was exported with {stored.event_rows} events and {stored.run_rows} runs, "
                f"not {events} and {runs}; nothing changed",
            )
        return None
    return stored.with_changes(state=EXPORTED, event_rows=events, run_rows=runs, info=_merged(stored, info))


def deleted(stored: Claim, counts: Mapping[str, int]) -> Claim | None:
    """``record_deleted``: what the deletes of a move claim removed, added up over attempts."""
    check_deletable(stored)
    if stored.state == DONE:
        return None
    before = stored.info.get(DELETED) or {}
    total = {k: int(before.get(k) or 0) + int(counts.get(k) or 0) for k in ("events", "runs")}
    return stored.with_changes(info={**stored.info, DELETED: total})


def finished(stored: Claim, at: datetime, info: Mapping[str, Any] | None) -> Claim | None:
    """``finish``: state done, ``finished_at`` written once; None when already done."""
    if stored.state == DONE:
        return None
    if stored.state != EXPORTED:
        raise _refuse(stored, "not exported yet; not finished")
    if stored.mode == MOVE and DELETED not in stored.info:
        raise _refuse(stored, "a move whose selection was not deleted yet; not finished")
    return stored.with_changes(state=DONE, finished_at=at, info=_merged(stored, info))


def with_info(stored: Claim, info: Mapping[str, Any] | None) -> Claim | None:
    if not info:
        return None
    return stored.with_changes(info=_merged(stored, info))


def check_deletable(claim: Claim) -> Claim:
    """A claim whose selection may leave the hot store: a move, exported (or done: a repeat)."""
    if claim.mode != MOVE:
        raise StorageError(f"tier claim {claim.batch_id} is a copy; its rows stay in the hot store")
    if claim.state not in (EXPORTED, DONE):
        raise _refuse(claim, "not exported; nothing deleted")
    return claim


def _merged(stored: Claim, info: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**stored.info, **claim_info(info)}


# ------------------------------------------------------------- the ledger


class LedgerSQL(Protocol):
    """The SQL half of a hot store's ledger; :class:`Ledger` decides, this reads and writes."""

    where: str  # "the ledger of <what>" for messages

    async def select(
        self, *, dest: str | None = None, day: date | None = None, batch_ids: Sequence[str] | None = None
    ) -> list[Claim]:
        """The claims matching every filter given, oldest first (``created_at``, ``batch_id``)."""
        ...

    async def put(self, stored: Claim, new: Claim) -> Claim | None:
        """In one statement: write ``new``'s state, row counts, ``finished_at`` and info to
        the row of ``stored.batch_id`` if its state is still ``stored.state``; return the
        row as stored after, or None (the row moved on or is gone)."""
        ...


class Ledger:
    """A hot store's claims, changed only through the transitions of this module."""

    def __init__(self, sql: LedgerSQL, *, clock: Callable[[], datetime] = utc_now):
        self.sql = sql
        self.clock = clock

    async def claims(self, dest: str | None = None, day: date | None = None) -> list[Claim]:
        return await self.sql.select(dest=dest, day=day)

    async def unfinished(self, dest: str | None = None) -> list[Claim]:
        return [c for c in await self.claims(dest) if c.state != DONE]

    async def holder(self, day: date) -> Claim | None:
        """The unfinished claim (any destination) that holds ``day``, if one does."""
        return next((c for c in await self.claims(day=day) if c.state != DONE), None)

    async def covering(self, dest: str, day: date | None = None) -> dict[date, tuple[str, ...]]:
        """Per day, the finished claims to ``dest`` (their rows are in ``dest``; copy mode
        skips them)."""
        out: dict[date, list[str]] = {}
        for c in await self.claims(dest, day):
            if c.state == DONE:
                out.setdefault(c.day, []).append(c.batch_id)
        return {d: tuple(sorted(ids)) for d, ids in out.items()}

    async def stored(self, claims: Sequence[Claim]) -> list[Claim]:
        """The stored rows of ``claims``, in their order; a claim not in the ledger is an error."""
        ids = [check_id(c.batch_id) for c in claims]
        found = {c.batch_id: c for c in await self.sql.select(batch_ids=ids)} if ids else {}
        missing = [i for i in ids if i not in found]
        if missing:
            raise StorageError(f"tier claim {missing[0]} is not in {self.sql.where}")
        return [found[i] for i in ids]

    async def deletable(self, claims: Sequence[Claim]) -> list[Claim]:
        """The stored rows of ``claims``, each a move that is exported (or done)."""
        return [check_deletable(c) for c in await self.stored(claims)]

    async def mark_exported(
        self, claim: Claim, rows: Mapping[str, int], info: Mapping[str, Any] | None = None
    ) -> Claim:
        return await self._change(claim, lambda c: exported(c, rows, info))

    async def record_deleted(self, claim: Claim, counts: Mapping[str, int]) -> Claim:
        return await self._change(claim, lambda c: deleted(c, counts))

    async def finish(self, claim: Claim, info: Mapping[str, Any] | None = None) -> Claim:
        return await self._change(claim, lambda c: finished(c, self.clock(), info))

    async def update_info(self, claim: Claim, info: Mapping[str, Any]) -> Claim:
        return await self._change(claim, lambda c: with_info(c, info))

    async def _change(self, claim: Claim, step: Callable[[Claim], Claim | None]) -> Claim:
        """Read the stored claim, decide, compare-and-set; again if it moved meanwhile."""
        for _ in range(3):
            (stored,) = await self.stored([claim])
            new = step(stored)
            if new is None:
                return stored
            written = await self.sql.put(stored, new)
            if written is not None:
                return written
        raise StorageError(f"tier claim {claim.batch_id} kept changing while being updated; try again")

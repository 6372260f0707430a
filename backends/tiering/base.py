"""The half of every :class:`~magsag.backends.tiering.protocol.TierSource` written once.

:class:`BaseTierSource` implements the protocol's public methods: it checks the arguments,
keeps the claims in step through the :class:`~magsag.backends.tiering.ledger.Ledger` state
machine, and calls the store for what only the store can do. A hot store subclasses it and
supplies:

* ``self.ledger``: a :class:`~magsag.backends.tiering.ledger.Ledger` over its
  :class:`~magsag.backends.tiering.ledger.LedgerSQL`;
* the protocol methods that are the store's own: ``job_lock``, ``running_runs``,
  ``export_events``, ``export_runs``, ``close``;
* the hooks below (``_tierable_days``, ``_claim_day``, ``_delete_claimed``, optionally
  ``_delete_claims``, ``_unarchived_days``), which get checked, normalized arguments.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from magsag.backends.tiering.ledger import (
    Ledger,
    check_files,
    check_id,
    check_mode,
    claim_info,
    complete_days_before,
    day_list,
    sorted_unique,
)
from magsag.backends.tiering.protocol import COPY, MOVE, Claim, RunningRun, TierDay

if TYPE_CHECKING:
    import pyarrow as pa

Deleted = dict[str, int]
OnChunk = Callable[[int], None] | None
T = TypeVar("T")
_END: Any = object()


async def drain_in_thread(gen: Generator[T, None, None]) -> AsyncIterator[T]:
    """Iterate a blocking generator from async code: each item is fetched in a worker
    thread (the event loop keeps running), and the generator is closed in one too, also
    when the consumer stops early."""
    try:
        while True:
            item = await asyncio.to_thread(next, gen, _END)
            if item is _END:
                return
            yield item
    finally:
        await asyncio.to_thread(gen.close)


@dataclass(frozen=True)
class ClaimRequest:
    """A checked :meth:`BaseTierSource.claim_day` call, for the store's ``_claim_day``.

    ``covered_by``: in copy mode, the finished claims of the day to the same destination
    (their rows are there already: the new claim skips them). ``created_at``: the ledger
    clock's time of the claim.
    """

    batch_id: str
    dest: str
    day: date
    mode: str
    files: dict[str, str]
    orphan_runs: tuple[str, ...]
    covered_by: tuple[str, ...]
    info: dict[str, Any]
    created_at: datetime


class BaseTierSource(abc.ABC):
    """See the module docstring; the protocol documents every public method."""

    backend: Any
    ledger: Ledger

    # ------------------------------------------------------------ the store's own
    @abc.abstractmethod
    def job_lock(self, *, wait: bool = True, timeout: float | None = None) -> AbstractAsyncContextManager[None]: ...

    @abc.abstractmethod
    async def running_runs(self, before: datetime) -> list[RunningRun]: ...

    @abc.abstractmethod
    def export_events(self, claim: Claim, *, batch_rows: int = 65_536) -> AsyncIterator[pa.RecordBatch]: ...

    @abc.abstractmethod
    async def export_runs(self, claim: Claim) -> pa.Table: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _tierable_days(
        self, cut_us: int, *, orphans: tuple[str, ...], covered: Mapping[date, tuple[str, ...]]
    ) -> list[TierDay]:
        """:meth:`tierable_days` with the cutoff at a midnight (µs); ``covered``: copy mode's
        finished claims per day (empty in move mode)."""

    @abc.abstractmethod
    async def _claim_day(self, req: ClaimRequest) -> Claim | None:
        """In the store's transaction(s): None if an unfinished claim holds the day; else
        freeze the selection, record the claim, and drop it again (None) unless
        :func:`~magsag.backends.tiering.ledger.worth_claiming`."""

    @abc.abstractmethod
    async def _delete_claimed(self, claim: Claim, chunk_rows: int, on_chunk: OnChunk) -> Deleted:
        """Delete one stored, deletable claim's selection (its runs and orphans too)."""

    async def _delete_claims(self, claims: Sequence[Claim], chunk_rows: int, on_chunk: OnChunk) -> dict[str, Deleted]:
        """Delete several stored, deletable claims; one after the other unless the store
        knows better."""
        return {c.batch_id: await self._delete_claimed(c, chunk_rows, on_chunk) for c in claims}

    @abc.abstractmethod
    async def _unarchived_days(self, days: list[date], dest: str | None) -> list[date]: ...

    # ------------------------------------------------------------ the protocol
    async def tierable_days(
        self, cutoff: datetime, *, dest: str, orphan_runs: Iterable[str] = (), mode: str = MOVE
    ) -> list[TierDay]:
        check_mode(mode)
        covered = await self.ledger.covering(dest) if mode == COPY else {}
        return await self._tierable_days(
            complete_days_before(cutoff), orphans=sorted_unique(orphan_runs), covered=covered
        )

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
        req = ClaimRequest(
            batch_id=check_id(batch_id),
            dest=dest,
            day=day,
            mode=check_mode(mode),
            files=check_files(files),
            orphan_runs=sorted_unique(orphan_runs),
            covered_by=(),
            info=claim_info(info),
            created_at=self.ledger.clock(),
        )
        if await self.ledger.holder(day) is not None:
            return None
        if mode == COPY:
            covered = (await self.ledger.covering(dest, day)).get(day, ())
            req = replace(req, covered_by=covered)
        return await self._claim_day(req)

    async def mark_exported(
        self, claim: Claim, *, rows: Mapping[str, int], info: dict[str, Any] | None = None
    ) -> Claim:
        return await self.ledger.mark_exported(claim, rows, info)

    async def update_info(self, claim: Claim, info: dict[str, Any]) -> Claim:
        return await self.ledger.update_info(claim, info)

    async def delete_claimed(
        self, claim: Claim, *, chunk_rows: int = 50_000, on_chunk: Callable[[int], None] | None = None
    ) -> dict[str, int]:
        (stored,) = await self.ledger.deletable([claim])
        out = await self._delete_claimed(stored, max(1, int(chunk_rows)), on_chunk)
        await self.ledger.record_deleted(stored, out)
        return out

    async def delete_claims(
        self, claims: Sequence[Claim], *, chunk_rows: int = 50_000, on_chunk: Callable[[int], None] | None = None
    ) -> dict[str, dict[str, int]]:
        stored = await self.ledger.deletable(claims)
        if not stored:
            return {}
        out = await self._delete_claims(stored, max(1, int(chunk_rows)), on_chunk)
        for c in stored:
            await self.ledger.record_deleted(c, out[c.batch_id])
        return out

    async def finish_claim(self, claim: Claim, *, info: dict[str, Any] | None = None) -> Claim:
        return await self.ledger.finish(claim, info)

    async def unfinished_claims(self, dest: str | None = None) -> list[Claim]:
        return await self.ledger.unfinished(dest)

    async def claims(self, dest: str | None = None, day: date | None = None) -> list[Claim]:
        return await self.ledger.claims(dest, day)

    async def unarchived_days(self, days: Iterable[date], *, dest: str | None = None) -> list[date]:
        return await self._unarchived_days(day_list(days), dest)

"""The tiering job: complete UTC days older than the hot window go to the lake, exactly once.

``magsag data tier`` (move to the configured lake) and ``magsag data archive DEST``
(copy to another destination, or move with ``--delete``) both run :func:`run_tier`:

1. take the hot store's tiering lock (wait, or fail fast with
   :class:`~magsag.backends.errors.LockedError`);
2. commit every claim an interrupted job left for this destination
   (:func:`~magsag.lakehouse.tiering.commit.commit_claim` resumes at whatever step it stopped);
3. find orphan placeholder runs (:func:`~magsag.lakehouse.tiering.destination.find_orphans`)
   and plan: every complete UTC day before the cutoff
   (:func:`~magsag.backends.schema.hot_cutoff`) that holds something to move;
4. per day, oldest first: claim it (the hot store freezes the selection), export events and
   runs into sorted Parquet files, verify them from the store and commit them (manifest
   entries), mark the claim exported;
5. move mode: delete exactly the selections of every committed claim from the hot store,
   all at once, then finish the claims (:func:`~magsag.lakehouse.tiering.settle.settle_claims`);
6. report days, rows, bytes, the lake/hot size ratio and seconds.

Exactly once: a row leaves the hot store only after the file holding it is committed, and
a committed file is never written twice (its name is the claim's, and a rerun checks the
manifest first). Killed at any instant, the next run finishes the interrupted claim, so
every event ends up in exactly one of hot store and lake. Rows that are in the lake and
the hot store at once (re-inserted after tiering) are not written again; move mode then
deletes them from the hot store.

**Late data** for a day already tiered is a new selection on the next run, written as a
new file of the same partition (``part-<new batch>-0000.parquet``).

**Placeholder runs** of runs already in the destination (*orphans*) are tiered too; see
:mod:`magsag.lakehouse.tiering.destination`.

Fault injection for the crash tests: every step boundary is a
:func:`~magsag.lakehouse.faults.fault_point` in scope ``tier`` (``MAGSAG_LAKE_FAULT=tier:k`` exits
hard at the k-th), including the points inside :func:`~magsag.lakehouse.lakewriter.publish`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import LockedError
from magsag.backends.schema import hot_cutoff
from magsag.backends.tiering.ledger import batch_id_for, check_mode
from magsag.backends.tiering.protocol import DONE, MOVE, Claim, TierDay, tier_source
from magsag.lakehouse.faults import fault_point, fault_scope
from magsag.lakehouse.lakestore import check_writable
from magsag.lakehouse.layout import new_job_id
from magsag.lakehouse.objstore import Lake, check_persistent
from magsag.lakehouse.tiering.commit import ClaimContext, commit_claim, planned_files
from magsag.lakehouse.tiering.destination import dest_key, find_orphans
from magsag.lakehouse.tiering.report import DayResult, TierProgress, TierReport
from magsag.lakehouse.tiering.settle import settle_claims

if TYPE_CHECKING:
    from magsag.backends.base import StorageBackend


async def run_tier(
    storage: StorageBackend,
    lake: Lake,
    *,
    hot_days: int,
    mode: str = MOVE,
    dry_run: bool = False,
    wait: bool = True,
    lock_timeout: float | None = None,
    progress: TierProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    now: datetime | None = None,
    job_prefix: str = "tier",
    batch_rows: int = 32_768,
    delete_chunk_rows: int = 20_000,
) -> TierReport:
    """Move (or copy) every complete UTC day older than ``hot_days`` to ``lake``.

    See the module docstring. ``dry_run`` only plans: nothing is locked, claimed, written
    or deleted. ``should_stop`` is polled between steps; when it returns True the job
    stops cleanly (an unfinished claim is finished by the next run) and the report says
    ``stopped``. Errors are :class:`~magsag.backends.errors.StorageError` subclasses.
    """
    check_mode(mode)
    if mode == MOVE:
        check_persistent(lake)  # rows leave the hot store only for a place that keeps them
    started = time.monotonic()
    cutoff = hot_cutoff(hot_days, now)
    src = tier_source(storage)
    dest = dest_key(lake)
    report = TierReport(mode=mode, dest=dest, cutoff=cutoff.isoformat(), job_id=new_job_id(job_prefix), dry_run=dry_run)
    progress = progress or TierProgress()
    stop = should_stop or (lambda: False)
    try:
        if dry_run:
            report.unfinished = len(await src.unfinished_claims(dest))
            report.orphan_runs = await find_orphans(src, lake, cutoff)
            report.planned = await src.tierable_days(cutoff, dest=dest, orphan_runs=report.orphan_runs, mode=mode)
            return report
        ctx = ClaimContext(
            src=src, lake=lake, progress=progress, batch_rows=batch_rows, delete_chunk_rows=delete_chunk_rows
        )
        async with contextlib.AsyncExitStack() as stack:
            if not await _lock(stack, src, wait=wait, timeout=lock_timeout, stop=stop, progress=progress):
                report.stopped = True
                return report
            with fault_scope("tier"):
                fault_point("tier.locked")
                await asyncio.to_thread(check_writable, lake, report.job_id)  # before any claim
                await _run(ctx, report, cutoff, stop)
    finally:
        await src.close()
        report.seconds = time.monotonic() - started
    return report


async def _lock(
    stack: contextlib.AsyncExitStack,
    src: Any,
    *,
    wait: bool,
    timeout: float | None,
    stop: Callable[[], bool],
    progress: TierProgress,
) -> bool:
    """Take the job lock into ``stack``; False when asked to stop while waiting for it.

    Waits in slices of a second so a stop request (SIGTERM) is noticed while queued.
    """
    if not wait:
        await stack.enter_async_context(src.job_lock(wait=False))
        return True
    deadline = None if timeout is None else time.monotonic() + timeout
    told = False
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await stack.enter_async_context(src.job_lock(wait=True, timeout=1.0 if left is None else min(1.0, left)))
            return True
        except LockedError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if not told:
                progress.waiting(f"waiting: {exc}")
                told = True
            if stop():
                return False


async def _run(ctx: ClaimContext, report: TierReport, cutoff: datetime, stop: Callable[[], bool]) -> None:
    """Commit every claim (unfinished ones first), then settle them all at once.

    The hot store deletes once for the whole job (SQLite may then rebuild its table instead
    of deleting day by day). When the lake fails part way, the days already committed
    still settle before the error is raised.
    """
    committed: list[tuple[Claim, DayResult]] = []
    try:
        await _commit_all(ctx, report, cutoff, stop, committed)
    except BaseException:
        if committed:
            with contextlib.suppress(Exception):
                report.days.extend(await settle_claims(ctx, committed))
        raise
    if committed:
        report.days.extend(await settle_claims(ctx, committed))


async def _commit_all(
    ctx: ClaimContext,
    report: TierReport,
    cutoff: datetime,
    stop: Callable[[], bool],
    committed: list[tuple[Claim, DayResult]],
) -> None:
    src, lake = ctx.src, ctx.lake
    for claim in await src.unfinished_claims(report.dest):
        if stop():
            report.stopped = True
            return
        ctx.progress.day(claim.day, "recover")
        committed.append(await commit_claim(ctx, claim, recovered=True))
        ctx.progress.day_done(claim.day)
    orphans = await find_orphans(src, lake, cutoff)
    report.orphan_runs = orphans
    report.planned = await src.tierable_days(cutoff, dest=report.dest, orphan_runs=orphans, mode=report.mode)
    todo = [d for d in report.planned if d.movable]
    ctx.progress.plan(len(todo), sum(d.events for d in todo), sum(d.hot_bytes for d in todo))
    fault_point("tier.planned")
    for d in todo:
        if stop():
            report.stopped = True
            return
        done = await _claim_and_commit(ctx, report, d, orphans)
        if done is not None:
            committed.append(done)


async def _claim_and_commit(
    ctx: ClaimContext, report: TierReport, d: TierDay, orphans: list[str]
) -> tuple[Claim, DayResult] | None:
    """Claim day ``d`` and commit its files; None when there was nothing to claim."""
    src = ctx.src
    ctx.progress.day(d.day, "claim")
    batch_id = batch_id_for(report.job_id, d.day)
    claim = await src.claim_day(
        batch_id=batch_id,
        dest=report.dest,
        day=d.day,
        mode=report.mode,
        files=planned_files(d.day, batch_id),
        orphan_runs=orphans,
        info={"job_id": report.job_id, "hot_bytes": d.hot_bytes},
    )
    fault_point("tier.claimed")
    if claim is None:
        report.skipped[d.day.isoformat()] = await _why_not_claimed(ctx, d.day)
        ctx.progress.day_done(d.day)
        return None
    done = await commit_claim(ctx, claim)
    ctx.progress.day_done(d.day)  # the days bar advances as each day commits
    return done


async def _why_not_claimed(ctx: ClaimContext, day: date) -> str:
    for c in await ctx.src.claims(day=day):
        if c.state != DONE:
            return f"an unfinished {c.mode} claim to {c.dest} holds this day (run that job again to finish it)"
    return "nothing left to move"

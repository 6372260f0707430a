"""Settling committed claims: the hot store's side of a tiering job, once per run.

:func:`settle_claims` takes every claim the job committed (state ``exported``, files in
the destination) and brings it to ``done``:

1. move mode: delete exactly the claims' selections from the hot store, all claims handed
   over at once (:meth:`~magsag.backends.tiering.protocol.TierSource.delete_claims`: SQLite
   then rebuilds its table once instead of deleting day by day when that is cheaper), which
   also records each deletion in the ledger;
2. finish each claim (``done``, with the day's result in its info).

Both steps are idempotent: a claim killed between them is ``exported`` in the ledger, and
the next run settles it again (deleting whatever is left, usually nothing). The ledger
refuses to finish a move claim whose deletion was not recorded.
"""

from __future__ import annotations

from magsag.backends.tiering.protocol import DONE, EXPORTED, MOVE, Claim
from magsag.lakehouse.faults import fault_point
from magsag.lakehouse.tiering.commit import ClaimContext
from magsag.lakehouse.tiering.report import DayResult


async def settle_claims(ctx: ClaimContext, items: list[tuple[Claim, DayResult]]) -> list[DayResult]:
    """Delete the selections of the committed move claims in ``items``, then finish every
    claim; return the day results with the deleted counts filled in."""
    moving = [c for c, _ in items if c.state == EXPORTED and c.mode == MOVE]
    deleted: dict[str, dict[str, int]] = {}
    if moving:
        for c in moving:
            ctx.progress.day(c.day, "delete")
        deleted = await ctx.src.delete_claims(
            moving, chunk_rows=ctx.delete_chunk_rows, on_chunk=lambda n: fault_point("tier.delete_chunk")
        )
        fault_point("tier.deleted")
    out = []
    for claim, res in items:
        done = deleted.get(claim.batch_id)
        if done is not None:
            res.deleted_events, res.deleted_runs = done["events"], done["runs"]
        if claim.state != DONE:
            result = {k: v for k, v in res.as_dict().items() if k not in ("files", "batch_id")}
            claim = await ctx.src.finish_claim(claim, info={"result": result})
            fault_point("tier.done")
        out.append(res)
    return out

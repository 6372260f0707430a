"""What the tiering job asks of its destination besides writing to it: the name the ledger
gives it (:func:`dest_key`) and which running placeholder runs it already holds
(:func:`find_orphans`).

**Placeholder runs.** A hot store creates a ``running`` placeholder run for events of an
unknown run, for example late events of a run that was already tiered. Such a run would
never end, keeping its events hot forever. Before planning, the job looks up the running
placeholder runs (no parent, metrics, tags) that started before the cutoff in the
destination's committed runs files; those found are *orphans*: their events are tiered
like any others, the placeholder is not exported (the lake has the run's real record) and
is deleted once no hot event refers to it. A running run that is not a placeholder keeps
its events hot until it ends, even if an earlier record of it is in the lake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from magsag.backends.tiering.protocol import RUNS, TierSource
from magsag.lakehouse import manifest
from magsag.lakehouse.objstore import Lake, retry


def dest_key(lake: Lake) -> str:
    """How the ledger names a destination: the lake's absolute path or ``s3://bucket/prefix``."""
    return lake.uri().rstrip("/")


async def find_orphans(src: TierSource, lake: Lake, cutoff: datetime) -> list[str]:
    """Running placeholder runs (started before ``cutoff``) whose record is already in the lake."""
    candidates = {r.run_id for r in await src.running_runs(cutoff) if r.placeholder}
    if not candidates:
        return []
    return sorted(await asyncio.to_thread(runs_in_lake, lake, candidates))


def runs_in_lake(lake: Lake, run_ids: Iterable[str]) -> set[str]:
    """Which of ``run_ids`` a committed runs file of the lake holds."""
    wanted = pa.array(sorted(set(run_ids)), pa.string())
    entries = retry(lake, "reading the runs manifest", manifest.live_entries, lake, RUNS)
    found: set[str] = set()
    for e in entries:

        def read(path: str = e.path) -> pa.Table:
            with lake.fs.open(lake.path(path), "rb") as f:
                return pq.read_table(f, columns=["run_id"])

        col = retry(lake, f"reading run ids of {e.path}", read).column("run_id")
        found.update(col.filter(pc.is_in(col, value_set=wanted)).to_pylist())
        if len(found) == len(wanted):
            break
    return found

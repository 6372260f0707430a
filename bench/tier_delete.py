"""Where a tiering move's hot-store delete goes on SQLite: rebuild vs chunks, step by step.

    python3 bench/tier_delete.py [--events 1000000] [--way rebuild|chunks|both] [--cache-kib 16384]

Uses the store ``bench/tier.py`` caches (built on first use), copies it, claims every day
the tier job would move (7 hot days) and marks the claims exported without writing a lake:
only the delete is timed. ``rebuild`` runs :func:`magsag.backends.sqlite.tier_delete.rebuild_without`
in the writer's transaction with every statement timed (copy of the kept rows, the drop,
each index, the full-text rebuild), then the commit and checkpoint; ``chunks`` deletes claim
by claim in chunks of 20,000 events (the daily run's way). The baseline is the other way
over the same rows. Prints seconds, events/s and the process's peak RSS; ``--cache-kib``
sets the writer's page cache during the delete (the job uses 16 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import save  # noqa: E402


class _TimedConnection:
    """A sqlite3 connection whose statements are timed (for the rebuild's steps)."""

    def __init__(self, conn: Any, steps: list[tuple[str, float]]) -> None:
        self._conn, self._steps = conn, steps

    def execute(self, sql: str, *args: Any) -> Any:
        t0 = time.monotonic()
        cur = self._conn.execute(sql, *args)
        self._steps.append((" ".join(sql.split())[:60], time.monotonic() - t0))
        return cur


def child(db: str, way: str, cache_kib: int) -> dict[str, Any]:
    from magsag.backends.allocator import lean_process
    from magsag.backends.schema import hot_cutoff
    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.backends.sqlite.tier_delete import delete_runs, rebuild_without
    from magsag.backends.sqlite.tiering import SQLiteTierSource
    from tier import HOT_DAYS, _end

    lean_process()

    async def go() -> dict[str, Any]:
        async with SQLiteStorageBackend(db) as b:
            src = SQLiteTierSource(b)
            days = [d for d in await src.tierable_days(hot_cutoff(HOT_DAYS, _end()), dest="bench") if d.movable]
            claims = []
            for d in days:
                c = await src.claim_day(
                    batch_id=f"bench-{d.day:%Y%m%d}", dest="bench", day=d.day, mode="move", files={}
                )
                if c is not None:
                    claims.append(await src.mark_exported(c, rows={}))
            await b.write(lambda c: c.execute(f"PRAGMA cache_size = -{int(cache_kib)}"))
            steps: list[tuple[str, float]] = []
            t0 = time.monotonic()
            if way == "rebuild":

                def op(c: Any) -> int:
                    counts = rebuild_without(_TimedConnection(c, steps), claims, fts=b.enable_fts)
                    for cl in claims:
                        delete_runs(c, cl)
                    return sum(counts.values())

                events = await b.write(op)
                t1 = time.monotonic()
                await src._checkpoint()
                steps.append(("commit and checkpoint", time.monotonic() - t1))
            else:
                events = 0
                for cl in claims:
                    events += (await src.delete_claimed(cl, chunk_rows=20_000))["events"]
            seconds = time.monotonic() - t0
            await src.close()
            return {"events": events, "seconds": seconds, "steps": steps}

    out = asyncio.run(go())
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], argv[2], int(argv[3]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="demo events in the store (default 1,000,000)")
    p.add_argument("--way", choices=("rebuild", "chunks", "both"), default="both")
    p.add_argument("--cache-kib", type=int, default=16_384, help="writer page cache during the delete")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    from tier import OUT, setup_sqlite

    meta = setup_sqlite(args.events)
    results: dict[str, Any] = {}
    for way in ("rebuild", "chunks") if args.way == "both" else (args.way,):
        db = OUT / f"tier-delete-{way}.db"
        shutil.copyfile(meta["db"], db)
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", str(db), way, str(args.cache_kib)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[way] = json.loads(proc.stdout.strip().splitlines()[-1])
        finally:
            for f in OUT.glob(f"tier-delete-{way}.db*"):
                f.unlink() if f.is_file() else shutil.rmtree(f)
    save("tier-delete", {"events": meta["events"], "db_bytes": meta["db_bytes"], **results})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"$ python3 bench/tier_delete.py {' '.join(argv)}")
    print(f"store: {meta['events']:,} events, {meta['db_bytes'] / 1e6:,.0f} MB; writer cache {args.cache_kib:,} KiB")
    for way, r in results.items():
        rate = r["events"] / max(r["seconds"], 1e-9)
        print(
            f"{way:8} {r['events']:>12,} events deleted in {r['seconds']:8.2f} s  {rate:>10,.0f} events/s  "
            f"peak RSS {r['peak_rss_mb']} MB"
        )
        for name, s in r["steps"]:
            if s >= 0.05:
                print(f"    {s:8.2f} s  {name}")
        if r["steps"]:
            rest = r["seconds"] - sum(s for _, s in r["steps"])
            print(f"    {rest:8.2f} s  the rest: counts, the claims' runs, the commit")
    if len(results) == 2:
        ratio = results["chunks"]["seconds"] / max(results["rebuild"]["seconds"], 1e-9)
        print(f"rebuild is {ratio:.1f}x faster than chunks")
    return 0


if __name__ == "__main__":
    sys.exit(main())

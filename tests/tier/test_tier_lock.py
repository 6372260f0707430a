"""Two jobs at once, and appends while a job runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import timedelta

import pytest
from magsag.backends.errors import LockedError
from magsag.backends.schema import Event, from_us
from magsag.backends.tiering.protocol import tier_source
from magsag.lakehouse.tiering.job import run_tier

from tests.lake_fixtures import LakeCase
from tests.tier.helpers import END, HOT_DAYS, HotCase, day_us, lake_events, old, run_tier_process

pytestmark = pytest.mark.asyncio


async def test_held_lock_fails_fast_or_waits(hot: HotCase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from magsag.lakehouse.objstore import open_lake

    lake = open_lake(str(tmp_path / "lake"))
    src = tier_source(hot.backend)
    async with src.job_lock():
        with pytest.raises(LockedError, match="another tiering job holds the lock"):
            await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END, wait=False)
        t0 = time.monotonic()
        with pytest.raises(LockedError):
            await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END, lock_timeout=0.5)
        assert time.monotonic() - t0 >= 0.5
        # another process: --no-wait exits 3 at once with one line naming the holder
        proc = run_tier_process({**hot.env, "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake")}, "--no-wait")
        assert proc.returncode == 3 and "holds the lock" in proc.stderr and "pid" in proc.stderr
        assert lake_events(lake) == []

        async def release_soon() -> None:
            await asyncio.sleep(0.6)

        waiter = asyncio.create_task(run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END))
        await release_soon()
        assert not waiter.done()  # still waiting for the lock
    rep = await waiter  # the lock was released: the waiting job did the work
    assert rep.events > 0
    await src.close()


async def test_two_jobs_at_once(hot: HotCase, lake_case: LakeCase) -> None:
    original = await hot.event_rows()
    env = {**hot.env, **lake_case.env}
    a, b = await asyncio.gather(
        asyncio.to_thread(run_tier_process, env), asyncio.to_thread(run_tier_process, env, "--no-wait")
    )
    assert a.returncode == 0, a.stderr
    assert b.returncode in (0, 3), b.stderr  # fails fast only if it met the other one's lock
    reports = [json.loads(p.stdout) for p in (a, b) if p.returncode == 0]
    assert sum(r["events"] for r in reports) == len(old(original))  # the work was done once
    lake_rows = lake_events(lake_case.lake)
    assert Counter(lake_rows) + Counter(await hot.event_rows()) == Counter(original)
    assert len(set(lake_rows)) == len(lake_rows)


async def test_appends_while_tiering_are_not_lost(hot: HotCase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """New and late events keep arriving (group-committed between the job's delete chunks)."""
    from magsag.lakehouse.objstore import open_lake

    lake = open_lake(str(tmp_path / "lake"))
    original = await hot.event_rows()
    appended: list[Event] = []
    stop = asyncio.Event()

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            ts = from_us(day_us(i % 5) + i)  # today and the old days, tiered ones included
            batch = [
                Event.create(f"sag-live{i % 7:04d}", "kb-search-sag", "log", ts + timedelta(seconds=j), message="live")
                for j in range(5)
            ]
            await hot.backend.append_events(batch)
            appended.extend(batch)
            await hot.backend.append_event(f"sag-live{i % 7:04d}", "kb-search-sag", "metric", ts, message="one")
            appended.append(Event.create(f"sag-live{i % 7:04d}", "kb-search-sag", "metric", ts, message="one"))
            i += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    rep = await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END, delete_chunk_rows=7)
    stop.set()
    await task
    assert rep.events > 0 and len(appended) > 0
    # single appends got fresh ids: compare by everything but the id for those
    hot_rows, lake_rows = await hot.event_rows(), lake_events(lake)
    assert not {r[0] for r in hot_rows} & {r[0] for r in lake_rows}
    want = Counter(r[1:] for r in original) + Counter(e.row()[1:] for e in appended)
    assert Counter(r[1:] for r in hot_rows) + Counter(r[1:] for r in lake_rows) == want
    # the late ones are picked up by the next run (the live runs are `running`: end them)
    for n in range(7):
        await hot.backend.update_run(f"sag-live{n:04d}", status="succeeded")
    await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END)
    hot_rows, lake_rows = await hot.event_rows(), lake_events(lake)
    assert Counter(r[1:] for r in hot_rows) + Counter(r[1:] for r in lake_rows) == want
    assert all(r[1] >= day_us(1) - 12 * 3600 * 1_000_000 for r in hot_rows)  # nothing old left hot


async def test_stop_while_waiting_for_the_lock(hot: HotCase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.tiering.report import TierProgress

    class Said(TierProgress):
        def __init__(self) -> None:
            self.messages: list[str] = []

        def waiting(self, message: str) -> None:
            self.messages.append(message)

    said, stop = Said(), asyncio.Event()
    src = tier_source(hot.backend)
    async with src.job_lock():
        job = asyncio.create_task(
            run_tier(
                hot.backend,
                open_lake(str(tmp_path / "lake")),
                hot_days=HOT_DAYS,
                now=END,
                progress=said,
                should_stop=stop.is_set,
            )
        )
        await asyncio.sleep(1.5)
        assert not job.done()
        stop.set()  # what SIGTERM does in the CLI
        rep = await asyncio.wait_for(job, 10)
    assert rep.stopped and rep.days == []
    assert len(said.messages) == 1 and said.messages[0].startswith("waiting: another tiering job holds the lock")
    await src.close()


_HOLD_LOCK = """
import asyncio, sys
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.backends.tiering.protocol import tier_source

async def main() -> None:
    backend = SQLiteStorageBackend(sys.argv[1])
    await backend.initialize()
    async with tier_source(backend).job_lock(wait=False):
        print("locked", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_the_sqlite_lock_names_its_holder_and_dies_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys

    from magsag.backends.sqlite.store import SQLiteStorageBackend

    db = tmp_path / "hot.db"
    backend = SQLiteStorageBackend(db)
    await backend.initialize()
    src = tier_source(backend)
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError, match=rf"holds the lock of .*hot\.db \(pid {proc.pid} on "):
            async with src.job_lock(wait=False):
                pass
        proc.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs in the holder
        proc.wait(30)
        async with src.job_lock(wait=False):  # the kernel released its lock
            pass
    finally:
        proc.kill()
        proc.wait(30)
        await src.close()
        await backend.close()

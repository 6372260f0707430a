"""Kill the tiering job at every step, rerun it, and check nothing was lost or duplicated.

The job runs in a child process (a forkserver that imported everything once, so each run
starts in a fraction of a second) with ``MAGSAG_LAKE_FAULT=tier:k``: it exits hard
(``os._exit``, like kill -9: no cleanup, no finally) at its k-th step boundary, for
k = 1, 2, ... until a run finishes without reaching k. After each crash a normal run must
finish the work: the multiset of events in hot store + lake equals the original, no event
is in both, every claim is done, and no uncommitted or staged file is left for a plain
glob to see.

The sweep runs for both export engines: ``duckdb`` (the default: DuckDB scans the hot store
through its extension) on local disk and S3, and ``native`` (the store's own driver:
SQLite's reader, asyncpg for PostgreSQL) on local disk (the engine only changes how rows
leave the hot store; the lake's side is the same). Sweeps are marked ``slow``
(``-m "not slow"`` skips them) and cut in parts, each a test of its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from magsag.backends.schema import hot_cutoff, to_us
from magsag.backends.tiering.protocol import tier_source
from magsag.lakehouse.compact import uncommitted_files
from magsag.lakehouse.faults import FAULT_EXIT_CODE
from magsag.lakehouse.lakewriter import staged_jobs
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.job import run_tier

from tests.lake_fixtures import LakeCase, open_test_lake
from tests.tier.helpers import END, HOT_DAYS, ROOT, HotCase, lake_events, lake_runs

pytestmark = pytest.mark.asyncio
MAX_STEPS = 200
PARALLEL = 2
PARTS = 8  # a sweep is cut in this many tests (test_crash_at_every_step_then_rerun)
_PRELOAD = [
    "magsag.lakehouse.tiering.job",
    "magsag.lakehouse.settings",
    "magsag.storage",
    "magsag.backends.sqlite.store",
    "magsag.backends.sqlite.tiering",
]


def _tier_in_child(env: dict[str, str], hot_days: int, now: str) -> None:
    """Runs in a child process: settings from ``env``, like the CLI's."""
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.settings import load_settings
    from magsag.lakehouse.tiering.job import run_tier

    from magsag import lakehouse
    from magsag.storage import open_storage

    assert lakehouse.__file__.startswith(str(ROOT)), lakehouse.__file__
    for key in [k for k in os.environ if k.startswith(("MAGSAG_STORAGE_", "MAGSAG_LAKE_FAULT", "MAGSAG_TIER_"))]:
        del os.environ[key]
    os.environ.update(env)
    settings = load_settings()

    async def go() -> None:
        async with open_storage(settings) as storage:
            lake = open_lake(settings.lake_url, settings)
            await run_tier(storage, lake, hot_days=hot_days, now=datetime.fromisoformat(now))

    asyncio.run(go())


def _noop() -> None:
    pass


@pytest.fixture(scope="module")
def tier_children() -> Any:
    """A forkserver with the job imported: each crash run is a fresh process in ~0.1 s."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    try:
        warm = ctx.Process(target=_noop)
        warm.start()
        warm.join(60)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    return ctx


# MAGSAG_TIER_EXPORT_ENGINE per sweep: "duckdb" is the default of both hot stores; "sqlite"
# selects the native engine of each (SQLite's reader, asyncpg for PostgreSQL).
ENGINES = {"duckdb": "duckdb", "native": "sqlite"}


@pytest.fixture(params=sorted(ENGINES))
def export_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The engine of the crashed children and of the recovery run in this process."""
    monkeypatch.setenv("MAGSAG_TIER_EXPORT_ENGINE", ENGINES[request.param])
    return ENGINES[request.param]


def _start(ctx: Any, env: dict[str, str], hot_days: int) -> Any:
    proc = ctx.Process(target=_tier_in_child, args=(env, hot_days, END.isoformat()))
    proc.start()
    return proc


async def _run_child(ctx: Any, env: dict[str, str], hot_days: int = HOT_DAYS) -> int:
    proc = _start(ctx, env, hot_days)
    await asyncio.to_thread(proc.join, 180)
    return proc.exitcode


async def _check_finished(
    hot: HotCase, lake: Any, events: list[tuple], runs: list[tuple], where: str, hot_days: int = HOT_DAYS
) -> None:
    cutoff = to_us(hot_cutoff(hot_days, END))
    hot_rows, lake_rows = await hot.event_rows(), lake_events(lake)
    assert Counter(hot_rows) + Counter(lake_rows) == Counter(events), where
    assert not set(hot_rows) & set(lake_rows), where
    assert Counter(lake_rows) == Counter(r for r in events if r[1] < cutoff), where
    assert lake_rows, where
    assert Counter(await hot.run_rows()) + Counter(lake_runs(lake)) == Counter(runs), where
    assert all(c.state == "done" for c in await tier_source(hot.backend).claims()), where
    assert uncommitted_files(lake) == [], where
    assert staged_jobs(lake) == [], where


def _fresh_lake(lake_case: LakeCase, k: int) -> tuple[Any, dict[str, str]]:
    if lake_case.kind == "local":
        env = {"MAGSAG_STORAGE_LAKE_URL": f"{lake_case.url}-{k}"}
    else:
        assert lake_case.server is not None
        env = lake_case.server.env(lake_case.server.fresh_url())
    lake, _ = open_test_lake(env)
    return lake, env


def _steps(hot_days: int, part: int) -> range:
    """The fault points of one part of a sweep: ``MIN_STEPS`` split in ``PARTS - 1`` ranges that
    must all crash, then the last part, from ``MIN_STEPS + 1`` on until the job finishes."""
    # The job passes about 16 fault points per tierable day (4 - hot_days of them here), a
    # few more for PostgreSQL and S3: the first parts must crash at every one of these.
    least = 16 * (4 - hot_days) - 2
    if part == PARTS - 1:
        return range(least + 1, MAX_STEPS)
    bounds = [1 + least * i // (PARTS - 1) for i in range(PARTS)]
    return range(bounds[part], bounds[part + 1])


@pytest.mark.slow
@pytest.mark.parametrize("part", range(PARTS))
async def test_crash_at_every_step_then_rerun(
    hot_factory: Any, lake_case: LakeCase, tier_children: Any, export_engine: str, part: int
) -> None:
    # Two tierable days locally (every step of a day, and of the next after a finished one);
    # one on S3 (the same steps, slower each). Two crash runs at a time: one per core. The
    # sweep is cut in PARTS tests (each well under the per-test timeout, spread over workers):
    # the first parts must crash at every k, the last one runs on until the job finishes.
    if lake_case.kind != "local" and export_engine != "duckdb":
        pytest.skip("the native export engine is swept on local disk; S3 is swept with the default engine")
    hot_days = 2 if lake_case.kind == "local" else 3
    steps = _steps(hot_days, part)
    last = part == PARTS - 1
    finished = False
    for first in range(steps.start, steps.stop, PARALLEL):
        cases = []
        for k in range(first, min(first + PARALLEL, steps.stop)):
            hot = await hot_factory()
            lake, env = _fresh_lake(lake_case, k)
            cases.append((k, hot, await hot.event_rows(), await hot.run_rows(), lake, env))
        codes = await asyncio.gather(
            *(
                _run_child(
                    tier_children,
                    {**hot.env, **env, "MAGSAG_LAKE_FAULT": f"tier:{k}", "MAGSAG_TIER_EXPORT_ENGINE": export_engine},
                    hot_days,
                )
                for k, hot, _, _, _, env in cases
            )
        )
        for (k, hot, events, runs, lake, env), code in zip(cases, codes, strict=True):
            if code == 0:
                assert last, f"the job finished at step {k}: it has fewer steps than every step of every day"
                finished = True
            else:
                assert code == FAULT_EXIT_CODE, f"the tier child failed (exit {code}) at step {k}"
                # nothing is lost even before the rerun: every event is hot or committed
                assert Counter(await hot.event_rows()) + Counter(lake_events(lake)) >= Counter(events), k
                settings = open_test_lake(env)[1]
                await run_tier(hot.backend, open_lake(settings.lake_url, settings), hot_days=hot_days, now=END)
            await _check_finished(hot, lake, events, runs, f"after a crash at step {k}", hot_days)
            await hot.close()
        if finished:
            break
    assert finished or not last, "the job never finished"


@pytest.mark.parametrize(("first", "second"), [(6, 2), (9, 3), (12, 4), (16, 5)])
async def test_crash_during_recovery(
    hot_factory: Any, lake_case: LakeCase, tier_children: Any, first: int, second: int
) -> None:
    """A crash while finishing an earlier crash's claim is finished by the run after."""
    if lake_case.kind != "local":
        pytest.skip("covered on local disk; the steps are the same on S3")
    hot = await hot_factory()
    events, runs = await hot.event_rows(), await hot.run_rows()
    lake, env = _fresh_lake(lake_case, first * 100 + second)
    base = {**hot.env, **env}
    assert await _run_child(tier_children, {**base, "MAGSAG_LAKE_FAULT": f"tier:{first}"}) == FAULT_EXIT_CODE
    assert await _run_child(tier_children, {**base, "MAGSAG_LAKE_FAULT": f"tier:{second}"}) == FAULT_EXIT_CODE
    assert await _run_child(tier_children, base) == 0
    await _check_finished(hot, lake, events, runs, f"crashes at {first} then {second}")
    await hot.close()

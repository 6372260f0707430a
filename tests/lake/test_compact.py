"""Compaction: one sorted file per partition, atomic for manifest readers, safe to kill at any step."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from magsag.lakehouse import compact, lakewriter, layout, manifest
from magsag.lakehouse.faults import FAULT_ENV, FAULT_EXIT_CODE

from tests.lake import data
from tests.lake_fixtures import LakeCase, open_test_lake


@pytest.fixture(scope="module")
def demo() -> tuple[list, list]:
    return data.demo(days=2, runs_per_day=10, seed=11)


def _three_files(lake: Any, events: list, job: str = "tier1") -> tuple[date, Counter]:
    """The busiest day as 3 files whose rows interleave (each file sorted, the day not)."""
    day, rows = data.busiest_day(events)
    for seq in range(3):
        data.write_file(lake, "events", day, rows[seq::3], job, seq)
    return day, Counter(rows)


def _glob_rows(lake: Any, day: date) -> Counter:
    con = data.duckdb_for(lake)
    glob = lake.uri(layout.data_glob("events"))
    t = con.execute(f"SELECT * EXCLUDE (dt) FROM read_parquet('{glob}', hive_partitioning = true) WHERE dt = ?", [day])
    table = t.arrow()
    table = table.read_all() if hasattr(table, "read_all") else table
    return Counter(data.to_rows("events", table))


def _assert_compacted(lake: Any, day: date, original: Counter) -> manifest.ManifestEntry:
    entries = manifest.read_entries(lake, "events", day)
    assert len(entries) == 1, [e.path for e in entries]
    (entry,) = entries
    assert lakewriter.list_files(lake, layout.partition_dir("events", day)) == [entry.path]
    assert data.live_rows(lake, "events", day) == original
    table = data.read_file(lake, entry.path)
    assert table.equals(table.sort_by([(c, "ascending") for c in lakewriter.SORT_KEYS["events"]]))
    assert lakewriter.list_files(lake, layout.STAGING_DIR) == []
    return entry


def test_compaction_merges_a_partition_into_one_sorted_file(lake, demo) -> None:
    events, _ = demo
    day, original = _three_files(lake, events)
    old = [e.path for e in manifest.live_entries(lake, "events", day)]
    assert compact.small_file_partitions(lake) == [
        {"dataset": "events", "dt": day.isoformat(), "files": 3, "small_files": 3, "rows": sum(original.values()),
         "bytes": sum(e.bytes for e in manifest.live_entries(lake, "events", day))}
    ]  # fmt: skip

    report = compact.compact_partition(lake, "events", day, job_id="tier-run-7")
    assert report["status"] == "compacted"
    assert (report["files_before"], report["files_after"], report["merged_files"]) == (3, 1, 3)
    assert report["rows"] == sum(original.values())
    entry = _assert_compacted(lake, day, original)
    assert entry.path == report["path"] and entry.job_id == "tier-run-7"
    assert sorted(entry.replaces) == sorted(old)
    assert _glob_rows(lake, day) == original  # plain glob readers see the merged file only
    assert compact.small_file_partitions(lake) == []

    # the old names still lead to the rows: committed_entry/read_keys follow the merge
    assert lakewriter.committed_entry(lake, old[0]) == entry
    assert lakewriter.read_keys(lake, old[0]).num_rows == entry.rows

    # nothing left to merge
    assert compact.compact_partition(lake, "events", day)["status"] == "skipped"

    # late data, then a second compaction: the chain of replaced names is kept
    extra = data.write_file(lake, "events", day, list(original)[:5], "tier2", 0)  # the same rows again: kept twice
    report = compact.compact_partition(lake, "events", day)
    assert report["status"] == "compacted" and report["merged_files"] == 2
    second = _assert_compacted(lake, day, original + Counter(list(original)[:5]))
    assert set(second.replaces) >= {*old, entry.path, extra.path}
    assert lakewriter.committed_entry(lake, old[1]) == second


def test_compaction_skips_single_and_big_files(lake, demo) -> None:
    events, _ = demo
    day, rows = data.busiest_day(events)
    data.write_file(lake, "events", day, rows, "tier1", 0)
    assert compact.compact_partition(lake, "events", day)["status"] == "skipped"
    data.write_file(lake, "events", day, rows[:3], "tier2", 0)
    # the big file is left alone; a single small one has nothing to merge with
    big_only = compact.compact_partition(lake, "events", day, target_rows=len(rows))
    assert big_only["status"] == "skipped" and big_only["files_after"] == 2
    assert compact.small_file_partitions(lake, target_rows=len(rows)) == []
    data.write_file(lake, "events", day, rows[3:6], "tier3", 0)
    report = compact.compact_partition(lake, "events", day, target_rows=len(rows))
    assert report["status"] == "compacted" and report["merged_files"] == 2 and report["files_after"] == 2
    assert data.live_rows(lake, "events", day) == Counter(rows) + Counter(rows[:6])


def test_runs_compact_and_leftovers_are_listed(lake, demo) -> None:
    _, runs = demo
    day, rows = max(data.by_day(runs, 4).items(), key=lambda kv: len(kv[1]))
    data.write_file(lake, "runs", day, rows[::2], "tier1", 0)
    data.write_file(lake, "runs", day, rows[1::2], "tier1", 1)
    # an uncommitted file of a crashed job: listed, not merged, not deleted
    orphan = layout.data_path("runs", day, "crashed", 0)
    lake.fs.pipe_file(lake.path(orphan), b"half a file")
    assert compact.uncommitted_files(lake) == [orphan]
    report = compact.compact_partition(lake, "runs", day)
    assert report["status"] == "compacted"
    assert data.live_rows(lake, "runs", day) == Counter(rows)
    assert compact.uncommitted_files(lake, "runs") == [orphan]


def _compact_in_child(env: dict[str, str], dataset: str, day: str) -> None:
    """Runs in a child process: the settings come from ``env``, like the CLI's."""
    from magsag.lakehouse.compact import compact_partition
    from magsag.lakehouse.objstore import open_lake
    from magsag.lakehouse.settings import load_settings

    from magsag import lakehouse

    assert lakehouse.__file__.startswith(env["MAGSAG_TEST_ROOT"]), lakehouse.__file__
    os.environ.update(env)
    s = load_settings()
    compact_partition(open_lake(s.lake_url, s), dataset, date.fromisoformat(day))


ROOT = str(Path(__file__).resolve().parents[2])
_PRELOAD = [
    "magsag.lakehouse.compact",
    "magsag.lakehouse.settings",
    "duckdb",
    "pyarrow.parquet",
    "s3fs",
    "tests.lake.test_compact",
]


def _noop() -> None:
    pass


@pytest.fixture(scope="module")
def child_processes() -> Any:
    """A forkserver that imported everything once: each crash run is a fresh process in ~0.1 s.

    Python 3.11's forkserver ignores the parent's sys.path when it preloads, so it gets
    this checkout on PYTHONPATH (not whatever the editable install points at).
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, old) if p)
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


# The sweep's fault points, cut in parts (each a test, well under the per-test timeout):
# compaction has at least 10 steps (start, 3 publish steps, published, 3 x (file, entry)
# deletions), so every k of the first parts must crash; the last runs on until it finishes.
SWEEP_PARTS = [(1, 4), (4, 7), (7, 10), (10, 40)]


@pytest.mark.slow
@pytest.mark.parametrize("steps", SWEEP_PARTS, ids=lambda r: f"k{r[0]}-{r[1] - 1}")
def test_compaction_killed_at_every_step_loses_and_duplicates_nothing(
    lake_case: LakeCase, demo, child_processes, steps: tuple[int, int]
) -> None:
    events, _ = demo
    last = steps == SWEEP_PARTS[-1]
    for k in range(*steps):
        env = {**lake_case.env, "MAGSAG_STORAGE_LAKE_URL": f"{lake_case.url}/k{k}"}
        lake, _ = open_test_lake(env)
        day, original = _three_files(lake, events)
        child_env = {**env, FAULT_ENV: f"compact:{k}", "MAGSAG_TEST_ROOT": ROOT}
        proc = child_processes.Process(target=_compact_in_child, args=(child_env, "events", day.isoformat()))
        proc.start()
        proc.join(180)
        if proc.exitcode == 0:
            assert last, f"compaction finished at step {k}: it has fewer steps than it should"
            _assert_compacted(lake, day, original)
            assert _glob_rows(lake, day) == original
            return
        assert proc.exitcode == FAULT_EXIT_CODE, f"the compaction child failed (exit {proc.exitcode}) at step {k}"
        # at the crash, manifest readers see every row exactly once (old files or the new one)
        assert data.live_rows(lake, "events", day) == original, f"inconsistent after a crash at step {k}"
        if k % 2:
            compact.recover(lake)
            assert data.live_rows(lake, "events", day) == original
        report = compact.compact_partition(lake, "events", day)
        assert report["status"] in ("compacted", "skipped")
        _assert_compacted(lake, day, original)
        assert _glob_rows(lake, day) == original
    assert not last, "compaction never finished"

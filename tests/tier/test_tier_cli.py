"""``magsag data tier|archive|compact|report``: the user's view (exit codes, one-line errors)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli_helpers import magsag
from tests.lake_fixtures import LakeCase
from tests.tier.helpers import ROOT


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {"MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"), "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake")}
    res = magsag("data", "demo", "--days", "10", "--runs-per-day", "3", "--json", env=env)
    assert res.code == 0, res.err
    return env


def test_demo_tier_report(demo_env: dict[str, str]) -> None:
    dry = magsag("data", "tier", "--dry-run", "--json", env=demo_env)
    assert dry.code == 0, dry.err
    plan = dry.json()
    assert plan["dry_run"] and plan["days"] >= 2 and plan["events"] > 0
    res = magsag("data", "tier", "--json", env=demo_env)
    assert res.code == 0, res.err
    rep = res.json()
    assert rep["days"] == plan["days"] and rep["events"] == plan["events"] and 0 < rep["ratio"] < 1
    again = magsag("data", "tier", "--json", env=demo_env).json()
    assert again["days"] == 0
    summary = magsag("data", "report", "--days", "0", "--json", env=demo_env)
    assert summary.code == 0, summary.err
    data = summary.json()
    assert data["rows"] == rep["events"] and data["days"] == rep["days"]
    assert {"agent_slug", "cost_usd", "error_rate"} <= set(data["summary"][0])
    table = magsag("data", "report", env=demo_env)
    assert table.code == 0 and "error_rate" in table.out


def test_tier_table_output(demo_env: dict[str, str]) -> None:
    res = magsag("data", "tier", env=demo_env)
    assert res.code == 0, res.err
    assert "days moved" in res.out and "lake / hot" in res.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--hot-days", "abc"), "--hot-days"),
        (("--hot-days", "-3"), "--hot-days"),
        (("--every", "soon"), "--every"),
        (("--lake", "foo://bar"), "foo"),
    ],
)
def test_bad_input_is_one_line_exit_2(demo_env: dict[str, str], args: tuple[str, ...], needle: str) -> None:
    res = magsag("data", "tier", *args, env=demo_env)
    assert res.code == 2
    assert needle in one_line(res.err)


def test_unreachable_s3_is_one_line_and_changes_nothing(demo_env: dict[str, str]) -> None:
    before = magsag("data", "init", "--json", env=demo_env).json()["events"]
    env = {
        **demo_env,
        "MAGSAG_STORAGE_LAKE_URL": "s3://nowhere/lake",
        "MAGSAG_STORAGE_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "MAGSAG_STORAGE_S3_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": "very-secret-value",
        "MAGSAG_STORAGE_S3_RETRIES": "0",
    }
    res = magsag("data", "tier", env=env)
    assert res.code == 2
    line = one_line(res.err)
    assert "unreachable" in line and "very-secret-value" not in res.err + res.out
    assert magsag("data", "init", "--json", env=demo_env).json()["events"] == before


def test_report_on_empty_lake_exits_1(tmp_path: Path) -> None:
    res = magsag("data", "report", env={"MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "empty")})
    assert res.code == 1 and "no data" in one_line(res.err)


def test_archive_needs_a_destination(demo_env: dict[str, str]) -> None:
    res = magsag("data", "archive", env=demo_env)
    assert res.code == 2 and "DEST" in one_line(res.err)


def test_archive_copy_then_delete(demo_env: dict[str, str], tmp_path: Path) -> None:
    dest = str(tmp_path / "archive")
    res = magsag("data", "archive", dest, "--since", "5", "--json", env=demo_env)
    assert res.code == 0, res.err
    first = res.json()
    assert first["mode"] == "copy" and first["days"] >= 4 and first["deleted_events"] == 0
    # a wider window with --delete: the days archived already are not written again, but
    # their rows now leave the hot store; the newer days are moved
    moved = magsag("data", "archive", dest, "--since", "3", "--delete", "--json", env=demo_env).json()
    assert moved["mode"] == "move" and moved["deleted_events"] == first["events"] + moved["events"]
    assert sum(r["duplicates"] for r in moved["results"]) == first["events"]


def test_compact_merges_late_files(demo_env: dict[str, str]) -> None:
    import asyncio
    from collections import Counter

    from magsag.backends.schema import Event, hot_cutoff
    from magsag.backends.sqlite.store import SQLiteStorageBackend
    from magsag.lakehouse.objstore import open_lake

    from tests.tier.helpers import lake_events

    assert magsag("data", "tier", env=demo_env).code == 0
    lake = open_lake(demo_env["MAGSAG_STORAGE_LAKE_URL"])
    before = Counter(lake_events(lake))
    day = hot_cutoff(9)

    async def late() -> None:
        async with SQLiteStorageBackend(demo_env["MAGSAG_STORAGE_DB_PATH"]) as b:
            await b.append_events([Event.create("sag-late0003", "kb-search-sag", "log", day, message="late")])
            await b.update_run("sag-late0003", status="succeeded")

    asyncio.run(late())
    assert magsag("data", "tier", env=demo_env).code == 0
    after_tier = Counter(lake_events(lake))
    assert sum(after_tier.values()) == sum(before.values()) + 1
    comp = magsag("data", "compact", "--partition", day.date().isoformat(), "--json", env=demo_env)
    assert comp.code == 0, comp.err
    merged = [r for r in comp.json() if r["status"] == "compacted"]
    assert {r["dataset"] for r in merged} == {"events", "runs"}  # the late run started that day too
    assert merged[0]["files_before"] == 2 and merged[0]["files_after"] == 1
    assert Counter(lake_events(lake)) == after_tier
    bad = magsag("data", "compact", "--partition", "yesterday", env=demo_env)
    assert bad.code == 2 and "--partition" in one_line(bad.err)


def test_no_wait_exits_3_when_locked(demo_env: dict[str, str]) -> None:
    import fcntl

    lock = Path(demo_env["MAGSAG_STORAGE_DB_PATH"] + ".tier-lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        res = magsag("data", "tier", "--no-wait", env=demo_env)
        assert res.code == 3 and "lock" in one_line(res.err)
    finally:
        os.close(fd)
    assert magsag("data", "tier", "--no-wait", env=demo_env).code == 0


def test_every_stops_cleanly_on_sigterm(demo_env: dict[str, str]) -> None:
    env = {**os.environ, **demo_env, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "tier", "--every", "1h", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        out = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # the first run's report (indented JSON)
            out += line
            if line.rstrip("\n") == "}" or not line:
                break
        assert json.loads(out)["days"] >= 2
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in err


def test_s3_tier_cli(demo_env: dict[str, str], lake_case: LakeCase) -> None:
    env = {**demo_env, **lake_case.env}
    res = magsag("data", "tier", "--json", env=env)
    assert res.code == 0, res.err
    assert res.json()["days"] >= 2
    summary = magsag("data", "report", "--json", env=env)
    assert summary.code == 0 and summary.json()["rows"] == res.json()["events"]

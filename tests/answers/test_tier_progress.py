"""Issue 13, item 18: the days bar advances as each day commits, bytes read in human units,
and ``tier --every`` puts a UTC timestamp before every log line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from types import SimpleNamespace

from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.job import run_tier
from magsag.lakehouse.tiering.report import TierProgress

from magsag.cli.lake import _AmountColumn, _human
from magsag.storage import open_storage
from tests.cli_helpers import magsag
from tests.clock import PINNED_NOW_ISO

ROOT = Path(__file__).resolve().parents[2]


class Recorder(TierProgress):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def day(self, day: date, step: str) -> None:
        self.calls.append(("step", f"{day} {step}"))

    def day_done(self, day: date) -> None:
        self.calls.append(("done", str(day)))


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
    }


async def test_each_committed_day_advances_the_days_bar(tmp_path: Path) -> None:
    env = _env(tmp_path)
    demo = await asyncio.to_thread(magsag, "data", "demo", "--days", "5", "--runs-per-day", "2", "--json", env=env)
    assert demo.code == 0
    rec = Recorder()
    async with open_storage(db_path=env["MAGSAG_STORAGE_DB_PATH"], lake_url=env["MAGSAG_STORAGE_LAKE_URL"]) as s:
        report = await run_tier(s, open_lake(env["MAGSAG_STORAGE_LAKE_URL"]), hot_days=2, progress=rec)
    moved = [d.day.isoformat() for d in report.days]
    assert len(moved) >= 2
    done = [v for k, v in rec.calls if k == "done"]
    assert done == moved, (done, moved)
    for day in moved:  # done right after that day's own steps, before the next day's
        i = rec.calls.index(("done", day))
        assert str(rec.calls[i - 1][1]).startswith(day)


def test_bytes_in_human_units() -> None:
    col = _AmountColumn()
    assert str(col.render(SimpleNamespace(completed=1_234_567, fields={"unit": "bytes"}))) == "1.2 MB"
    assert str(col.render(SimpleNamespace(completed=1_234_567, fields={"unit": ""}))) == "1,234,567"
    assert _human(999) == "999 B" and _human(12_300_000_000) == "12.3 GB"


def test_every_log_lines_start_with_a_timestamp(tmp_path: Path) -> None:
    env = {**os.environ, **_env(tmp_path), "PYTHONPATH": str(ROOT)}
    assert magsag("data", "demo", "--days", "5", "--runs-per-day", "2", "--json", env=_env(tmp_path)).code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "tier", "--every", "1h", "--hot-days", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        line = ""
        while time.monotonic() < deadline and not line:
            line = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stamp = PINNED_NOW_ISO.replace(".000", "")
    assert line.startswith(f"{stamp} tier: ") and " days, " in line and "kB" in line, line
    assert proc.returncode == 0
    assert any(ln.startswith(f"{stamp} stopped") for ln in err.splitlines()), err

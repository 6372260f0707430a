"""Issue 13, item 11: one Ctrl-C (SIGINT to the parent) stops `migrate` — worker processes
included — promptly with exit 130 and one line, no traceback; a rerun finishes the import
and nothing is stored twice or half."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli_helpers import magsag
from tests.legacy_trees import T0, new_format_run

ROOT = Path(__file__).resolve().parents[2]
RUNS = 3000


def test_one_sigint_stops_migrate(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    for i in range(RUNS):
        new_format_run(agents, f"mag-{i:08x}", "offer-mag", t=T0 + i)
    db = tmp_path / "hot.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MAGSAG_STORAGE_DB_PATH": str(db)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "migrate", str(agents), "--workers", "1"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not db.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)  # well into the import: workers parsing, batches being written
        assert proc.poll() is None, "the import ended before the signal; make the tree larger"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)  # it hung for minutes before (issue 13)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert err.strip() == "error: interrupted", err[-2000:]
    rerun = magsag("data", "migrate", str(agents), "--db-path", str(db), "--json")
    assert rerun.code == 0, rerun.err
    counts = magsag(
        "data", "sql", "SELECT count(*) AS n, count(DISTINCT event_id) AS d, count(DISTINCT run_id) AS r FROM events",
        "--db-path", str(db), "--json",
    ).json()[0]  # fmt: skip
    assert counts["n"] == counts["d"] == RUNS * 6 and counts["r"] == RUNS

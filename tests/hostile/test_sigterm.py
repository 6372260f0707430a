"""Item 6 (signal part): a signalled tier job ends, with exit 130, even mid-step (issue 14).

The job waits for the tiering lock another process holds; one SIGTERM ends it (between
steps, or cut short after magsag.cli.lake.STOP_GRACE_S), nothing moved.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from filelock import FileLock

from tests.hostile.conftest import World


@pytest.mark.timeout(300)
@pytest.mark.parametrize("args", [("tier", "--hot-days", "1"), ("tier", "--hot-days", "1", "--every", "1h")])
def test_one_sigterm_ends_a_waiting_tier_job(world: World, args: tuple[str, ...]) -> None:
    before_files, before_hot = world.files(), world.hot_events()
    lock = FileLock(str(world.db) + ".tier-lock")
    with lock:
        proc = subprocess.Popen(
            [sys.executable, "-m", "magsag", "data", *args],
            env={**os.environ, **world.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)  # let it reach the lock (no assertion on time: only that one signal ends it)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 0), err
    assert "Traceback" not in err
    assert world.hot_events() == before_hot
    assert world.files() == before_files


@pytest.mark.timeout(300)
def test_a_step_that_never_looks_at_the_signal_is_cut_short() -> None:
    code = (
        "import sys, time\n"
        "from magsag.cli.lake import _stop_on_signals\n"
        "with _stop_on_signals():\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(600)  # a step that never checks the stop event\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)  # without the cut it would sleep 600 s
    assert proc.returncode == 130, err
    assert "stopped mid-step" in err and "Traceback" not in err

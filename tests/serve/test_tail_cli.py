"""magsag data tail: the newest events, JSON lines, filters, --follow across processes, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.cli_helpers import magsag
from tests.serve.helpers import GUARD_S, seed_rows


async def _seed(db: Path, since_now: bool = False) -> None:
    from datetime import timedelta

    from magsag.backends.schema import utc_now
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    runs, events = seed_rows()
    async with SQLiteStorageBackend(db_path=db) as store:
        await store.upsert_runs(runs)
        await store.append_events(events)
        if since_now:
            for i in range(3):
                await store.append_event("now", "a", "log", utc_now() - timedelta(minutes=5), message=f"recent {i}")


def test_tail_prints_the_last_lines_and_json(tmp_path: Path) -> None:
    db = tmp_path / "hot.db"
    asyncio.run(_seed(db))
    res = magsag("data", "tail", "--db-path", str(db), "--since", "2025-10-01", "-n", "3")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert len(lines) == 3 and "ten days ago" in lines[-1]  # commit order, not time order
    res = magsag(
        "data", "tail", "--db-path", str(db), "--since", "2025-10-01", "--json", "--level", "error", "-n", "50"
    )
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert rows and all(r["level"] == "error" for r in rows) and all(r["cursor"].startswith("s:") for r in rows)
    msg = magsag("data", "tail", "--db-path", str(db), "--level", "loud")
    assert msg.code == 2 and "level must be one of" in msg.err


def test_tail_message_text_is_not_markup(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from magsag.backends.sqlite.store import SQLiteStorageBackend

    async def go() -> None:
        async with SQLiteStorageBackend(db_path=tmp_path / "hot.db") as store:
            await store.append_event("r", "a", "log", datetime(2025, 10, 23, tzinfo=UTC), message="[bold]not bold[/] x")

    asyncio.run(go())
    res = magsag("data", "tail", "--db-path", str(tmp_path / "hot.db"), "--since", "2025-10-01")
    assert "[bold]not bold[/] x" in res.out


def test_tail_follow_sees_another_process_and_ctrl_c_exits_130(tmp_path: Path) -> None:
    db = tmp_path / "hot.db"
    asyncio.run(_seed(db, since_now=True))
    proc = subprocess.Popen(
        [sys.executable, "-m", "magsag", "data", "tail", "-f", "--db-path", str(db), "--json", "-n", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    first = [json.loads(proc.stdout.readline()) for _ in range(2)]
    assert [e["msg"] for e in first] == ["recent 1", "recent 2"]
    writer = (
        "import asyncio, sys\n"
        "from magsag.backends.schema import utc_now\n"
        "from magsag.backends.sqlite.store import SQLiteStorageBackend\n"
        "async def main():\n"
        "    async with SQLiteStorageBackend(db_path=sys.argv[1]) as b:\n"
        "        await b.append_event('live', 'agent', 'log', utc_now(), level='error', message='written elsewhere')\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(db)], check=True, timeout=GUARD_S)
    live = json.loads(proc.stdout.readline())
    assert live["msg"] == "written elsewhere" and live["level"] == "error"
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(GUARD_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 130, err
    assert "Traceback" not in err

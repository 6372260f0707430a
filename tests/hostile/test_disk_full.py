"""Item 6 (writer part): a SQLite error inside the writer (a full disk) fails every waiting
caller with one line, ``disk full: <path>``; nobody waits forever (issue 14).

The store lives on a 1 MB tmpfs mounted in a private mount namespace (root + unshare).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime, timedelta
    from magsag.backends.errors import StorageError
    from magsag.backends.sqlite.store import SQLiteStorageBackend

    async def main(path):
        t0 = datetime(2026, 3, 1, tzinfo=UTC)
        async with SQLiteStorageBackend(path, enable_fts=False) as s:
            errors = []
            for i in range(400):
                batch = [
                    {"run_id": f"r{i}", "agent_slug": "a", "type": "log", "ts": t0 + timedelta(seconds=i * 100 + j),
                     "msg": "x" * 2000}
                    for j in range(50)
                ]
                try:
                    await asyncio.wait_for(s.append_events(batch), 120)
                except StorageError as exc:
                    errors.append(str(exc))
                    break
            # single appends and reads keep answering (the failed rows are not lost silently)
            for k in range(3):
                try:
                    await asyncio.wait_for(
                        s.append_event("late", "a", "log", t0, message="y" * 50000), 120)
                except StorageError as exc:
                    errors.append(str(exc))
            print("\\n".join(errors))

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.timeout(600)
def test_a_full_disk_fails_the_callers_in_one_line(tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a small tmpfs")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("mount namespaces are not allowed here")
    mnt = tmp_path / "small"
    mnt.mkdir()
    (tmp_path / "script.py").write_text(SCRIPT)
    db = mnt / "store.db"
    cmd = f"mount -t tmpfs -o size=1m tmpfs {mnt} && exec {sys.executable} {tmp_path / 'script.py'} {db}"
    res = subprocess.run(["unshare", "-m", "sh", "-c", cmd], capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if ln.strip()]
    assert lines, res.stdout + res.stderr
    assert lines[0] == f"disk full: {db}", lines
    assert "no such savepoint" not in res.stdout + res.stderr

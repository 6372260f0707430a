"""``MAGSAG_STORAGE_PG_ACK=journal``: PostgreSQL single appends acknowledged from a local crash
journal survive kill -9 of the writer (the next open replays them) and are read back by
their own writer at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from magsag.backends.postgres.store import PostgresStorageBackend

from tests.conftest import make_postgres
from tests.tier.helpers import ROOT

pytestmark = pytest.mark.postgres


def test_acknowledged_appends_survive_kill_9(tmp_path: Path) -> None:
    backend, env, cleanup = make_postgres(tmp_path)
    journal = tmp_path / "pg-journal"
    env = {**env, "MAGSAG_STORAGE_PG_ACK": "journal", "MAGSAG_STORAGE_PG_JOURNAL_DIR": str(journal)}
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAGSAG_STORAGE_")}
    pp = os.pathsep.join(p for p in (str(ROOT), base.get("PYTHONPATH", "")) if p)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "tests.governance.pg_journal_writer", "3000"],
            env={**base, **env, "PYTHONPATH": pp},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert res.returncode == -9, res.stderr
        acked = [x for x in res.stdout.split("\n") if len(x) == 36]
        assert len(acked) == 3000

        async def check() -> None:
            plain = PostgresStorageBackend(env["MAGSAG_STORAGE_DSN"], schema=backend.schema)
            await plain.initialize()
            s = plain.schema
            before = await plain.read(lambda c: c.fetchval(f"SELECT count(*) FROM {s}.events"))
            await plain.close()
            assert before < len(acked)  # the rows were only journaled when the process died
            reopened = PostgresStorageBackend(
                env["MAGSAG_STORAGE_DSN"], schema=backend.schema, ack="journal", journal_dir=journal
            )
            await reopened.initialize()  # replays the dead process's journal
            try:
                ids = await reopened.read(lambda c: c.fetch(f"SELECT event_id FROM {s}.events"))
                assert {r[0] for r in ids} == set(acked)
                # its own appends: read back at once
                eid = await reopened.append_event("run-pgj2", "pgj-agent", "log", datetime(2026, 3, 10, tzinfo=UTC))
                assert [e["event_id"] async for e in reopened.get_events("run-pgj2")] == [eid]
            finally:
                await reopened.close()
            assert not list(journal.glob("*.jsonl"))  # closed cleanly: nothing left to replay

        asyncio.run(check())
    finally:
        if cleanup is not None:
            asyncio.run(cleanup())

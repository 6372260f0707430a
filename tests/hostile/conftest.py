"""Fixtures of the hostile-input suite (issue 14): a small real store and lake to attack.

``world`` is a folder laid out like a user's project: the SQLite hot store at
``.magsag/storage.db`` and the lake at ``lake/``, loaded by ``magsag data demo`` and
tiered once (older days in the lake, the newest ones hot). It is built once per session
and copied for each test, so every test may damage its own copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_helpers import magsag

NOW = "2026-03-10T18:00:00Z"


@dataclass
class World:
    root: Path
    db: Path
    lake: Path
    env: dict[str, str]

    def files(self) -> dict[str, str]:
        """Every file under the root (store, lake, anything else) -> sha256 of its bytes.

        The hot store's -wal/-shm come and go with readers; they are left out (the rows
        are compared by :meth:`hot_events`).
        """
        out = {}
        for dirpath, _, names in os.walk(self.root):
            for n in names:
                p = Path(dirpath) / n
                rel = str(p.relative_to(self.root))
                if rel.startswith(".magsag/"):
                    continue
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        return out

    def hot_events(self) -> Counter:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return Counter(con.execute("SELECT event_id, run_id, ts, type, msg FROM events").fetchall())
        finally:
            con.close()


def one_line(err: str) -> str:
    """The single non-blank line of ``err`` (fails on a traceback or several lines)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="session")
def _world_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile-world")
    env = _env(root)
    res = magsag("data", "demo", "--days", "6", "--runs-per-day", "4", "--json", env=env)
    assert res.code == 0, res.err
    res = magsag("data", "tier", "--hot-days", "2", "--json", env=env)
    assert res.code == 0, res.err
    assert res.json()["days"] >= 2
    return root


def _env(root: Path) -> dict[str, str]:
    return {
        "MAGSAG_NOW": NOW,
        "MAGSAG_STORAGE_BACKEND": "sqlite",
        "MAGSAG_STORAGE_DB_PATH": str(root / ".magsag" / "storage.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(root / "lake"),
    }


@pytest.fixture
def world(_world_template: Path, tmp_path: Path) -> World:
    root = tmp_path / "project"
    shutil.copytree(_world_template, root)
    return World(root, root / ".magsag" / "storage.db", root / "lake", _env(root))

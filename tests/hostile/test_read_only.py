"""Items 15 and 14: read commands create nothing, and work on a store they cannot write
(a read-only mount) (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line

READS = [
    ("query", "--json"),
    ("search", "start", "--json"),
    ("stats", "--json"),
    ("tier", "--dry-run", "--json"),
    ("vacuum", "--dry-run", "--json"),
]


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("args", READS, ids=lambda a: a[0])
def test_read_commands_on_a_missing_or_garbage_store_create_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    before = _listing(tmp_path)
    env = {"MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake")}

    res = magsag("data", *args, "--db-path", str(tmp_path / "store" / "none.db"), env=env)
    assert res.code == 1, res.out + res.err
    assert one_line(res.err) == f"error: no store at {tmp_path / 'store' / 'none.db'} (run magsag data init)"

    res = magsag("data", *args, "--db-path", str(tmp_path / "garbage.db"), env=env)
    assert res.code == 2, res.out + res.err
    assert "garbage.db" in one_line(res.err)
    assert _listing(tmp_path) == before


def _read_only_mount(src: Path, dst: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``src`` bind-mounted read-only at ``dst`` (a private mount namespace)."""
    script = f'mount --bind -o ro {src} {dst} && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *argv], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.timeout(600)
def test_read_commands_work_on_a_read_only_store(world: World, tmp_path: Path) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a read-only bind mount")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode:
        pytest.skip("mount namespaces are not allowed here")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MAGSAG_STORAGE_")},
        "MAGSAG_NOW": world.env["MAGSAG_NOW"],
        "MAGSAG_STORAGE_DB_PATH": str(mnt / ".magsag" / "storage.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(mnt / "lake"),
    }
    before = world.files()
    for args in READS:
        expected = magsag("data", *args, env=world.env)
        assert expected.code == 0, expected.err
        res = _read_only_mount(world.root, mnt, [sys.executable, "-m", "magsag", "data", *args], env)
        assert res.returncode == 0, (args, res.stderr)
        got = json.loads(res.stdout)
        if args[0] == "stats":
            got["lake"].pop("url", None)
            want = expected.json()
            want["lake"].pop("url", None)
            assert got["hot"]["events"] == want["hot"]["events"] and got["lake"] == want["lake"]
        elif args[0] in ("tier", "vacuum"):
            keys = ("days", "events", "runs_to_delete", "events_to_delete")
            assert {k: got.get(k) for k in keys} == {k: expected.json().get(k) for k in keys}
        else:
            assert got == expected.json()
    assert world.files() == before


def test_without_a_hot_store_the_lake_alone_is_read(world: World, tmp_path: Path) -> None:
    env = {**world.env, "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "absent" / "none.db")}
    before = _listing(tmp_path)
    res = magsag("data", "query", "--limit", "1000", "--json", env=env)
    assert res.code == 0, res.err
    assert len(res.json()) == len(pq.read_table(world.lake / "runs"))
    assert _listing(tmp_path) == before

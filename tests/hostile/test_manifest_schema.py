"""Item 11: every manifest entry goes through one schema; a bad one is named (issue 14).

Also a fuzz test (the issue's Proof): hypothesis over entry contents; whatever an entry
holds, readers and compaction exit 0 or 2 in one line, and no file changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from magsag.lakehouse import manifest
from magsag.lakehouse.objstore import open_lake

from tests.cli_helpers import magsag
from tests.hostile.conftest import World, one_line

COMMANDS = [
    ("query", "--limit", "1000"),
    ("search", "start"),
    ("stats",),
    ("tier", "--hot-days", "1"),
    ("compact",),
    ("sql", "SELECT count(*) FROM events"),
]


def _victim(world: World) -> tuple[Path, dict]:
    lake = open_lake(str(world.lake))
    entry = manifest.live_entries(lake, "events")[0]
    return world.lake / manifest.layout.manifest_path(entry.path), json.loads(entry.to_json())


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2, 3]",
        "null",
        "__drop_rows__",
        '__set__{"rows": "12"}',
        '__set__{"rows": -1}',
        '__set__{"replaces": "abc"}',
        '__set__{"checksum": "md5:x"}',
    ],
)
def test_a_bad_entry_is_named_by_every_command(world: World, content: str) -> None:
    path, good = _victim(world)
    if content == "__drop_rows__":
        content = json.dumps({k: v for k, v in good.items() if k != "rows"})
    elif content.startswith("__set__"):
        content = json.dumps({**good, **json.loads(content[7:])})
    path.write_text(content)
    before_files, before_hot = world.files(), world.hot_events()
    for args in COMMANDS:
        if args[0] == "tier":
            continue  # tier reads only the partitions it writes: checked below
        res = magsag("data", *args, env=world.env)
        assert res.code == 2, (args, res.out, res.err)
        line = one_line(res.err)
        assert str(path) in line and "manifest entry" in line, (args, line)
    assert world.files() == before_files and world.hot_events() == before_hot
    res = magsag("data", "tier", "--hot-days", "0", env=world.env)
    assert res.code in (0, 2)
    if res.code:
        assert str(path) in one_line(res.err)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
_path_like = st.sampled_from(
    [
        "events/dt=2026-03-04/../../../.magsag/storage.db",
        "/etc/hostname",
        "events/dt=2026-03-04/x.parquet",
        "runs/dt=2026-03-04/x.parquet",
        "events/dt=2026-03-04/sub/x.parquet",
        "../victim.txt",
    ]
)


@pytest.mark.timeout(600)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    field=st.sampled_from(["path", "replaces", "rows", "bytes", "dataset", "dt", "checksum", "min_ts", "format"]),
    value=st.one_of(_json, _path_like, st.lists(_path_like, max_size=2)),
    command=st.sampled_from(COMMANDS),
)
def test_fuzz_manifest_entry_contents(world: World, field: str, value: object, command: tuple[str, ...]) -> None:
    path, good = _victim(world)
    original = path.read_bytes()
    (world.root / "victim.txt").write_text("keep")
    try:
        path.write_text(json.dumps({**good, field: value}))
        before_files, before_hot = world.files(), world.hot_events()
        res = magsag("data", *command, env=world.env)
        assert res.code in (0, 1, 2, 3), (res.out, res.err)
        assert "Traceback" not in res.out + res.err
        if res.code:
            one_line(res.err)
        if command[0] not in ("tier", "compact") or res.code:
            assert world.files() == before_files
        assert (world.root / "victim.txt").read_text() == "keep"
        if command[0] != "tier":
            assert world.hot_events() == before_hot
    finally:
        path.write_bytes(original)

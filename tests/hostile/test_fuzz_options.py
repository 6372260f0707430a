"""The issue's Proof: a fuzz test (hypothesis) over CLI option values.

Whatever value an option gets, the command exits 0, 1, 2, 3 or 130, never with a
traceback or an internal error, creates or deletes no file outside the store and the
lake, and the events (hot + lake, as a multiset) are unchanged.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from magsag.lakehouse import manifest
from magsag.lakehouse.objstore import open_lake

from tests.cli_helpers import magsag
from tests.hostile.conftest import World

# (command words, option): every option that takes a value a user types
OPTIONS = [
    (("query",), "--limit"),
    (("query",), "--since"),
    (("query",), "--until"),
    (("query",), "--run-id"),
    (("query",), "--status"),
    (("search", "start"), "--limit"),
    (("search", "start"), "--since"),
    (("search", "start"), "--until"),
    (("tier", "--dry-run"), "--hot-days"),
    (("vacuum", "--dry-run"), "--hot-days"),
    (("vacuum", "--dry-run"), "--max-disk-mb"),
    (("report",), "--days"),
    (("compact",), "--partition"),
    (("sql", "SELECT 1"), "--max-rows"),
    (("tail",), "--lines"),
    (("tail",), "--since"),
    (("migrate", "--dry-run"), "--max-line-mb"),
]

_numbers = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["inf", "-inf", "nan", "1e20", "1e-300", "0", "-0", "0x10", "1_000", " 7 ", "٧", "²", "７", "7d"]),
)
_times = st.one_of(
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31T23:59:59-14:00",
            "99999999999d",
            "2026-02-30",
            "2026-03-04T25:00",
            "٢٠٢٦-01-01",
            "1970-01-01T00:00:00+23:59",
            "7d",
            "0s",
            "",
        ]
    ),
    st.dates().map(lambda d: d.isoformat()),
)
_text = st.text(max_size=40)
VALUES = st.one_of(_numbers, _times, _text)


def _events(world: World) -> Counter:
    con = sqlite3.connect(f"file:{world.db}?mode=ro", uri=True)
    try:
        out = Counter(r[0] for r in con.execute("SELECT event_id FROM events"))
    finally:
        con.close()
    lake = open_lake(str(world.lake))
    for e in manifest.live_entries(lake, "events"):
        out.update(pq.read_table(world.lake / e.path, columns=["event_id"]).column(0).to_pylist())
    return out


def _outside(root: Path) -> set[str]:
    """Every path under the root but the store's folder and the lake."""
    out = set()
    for dirpath, dirs, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in (".magsag", "lake"):
            continue
        out.update(os.path.join(rel, n) for n in names + dirs)
    return out


@pytest.mark.timeout(900)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(OPTIONS), value=VALUES)
def test_fuzz_cli_option_values(world: World, case: tuple[tuple[str, ...], str], value: str) -> None:
    words, option = case
    before_events, before_outside = _events(world), _outside(world.root)
    res = magsag("data", *words, f"{option}={value}", env=world.env)
    shown = res.out + res.err
    assert res.code in (0, 1, 2, 3, 130), (words, option, value, shown)
    assert "Traceback" not in shown and "internal error" not in shown, (words, option, value, shown)
    assert _events(world) == before_events
    assert _outside(world.root) == before_outside

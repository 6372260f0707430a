"""Retention rules: the syntax, ``retention show``, and ``apply`` over hot store and lake.

``apply`` runs on every hot store kind and lake kind: a whole expired day leaves the
manifest and the lake's files, a day where only some rows expire is rewritten, and
every row no rule expires is still there (the lake is read by plain glob, so a
leftover file would show). "now" is pinned with MAGSAG_NOW.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.errors import ConfigError
from magsag.backends.schema import to_us
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.backends.tiering.protocol import MOVE
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.retention import Rule, apply_retention, parse_rules
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.tiering.job import run_tier

from magsag.ingest.demo import load_demo
from tests.cli_helpers import magsag
from tests.lake_fixtures import LakeCase
from tests.tier.helpers import END, HOT_DAYS, HotCase, lake_events, lake_runs

RULES = "tier:lake=3d; type:mcp.call=2d"
LAKE_CUT = to_us(END - timedelta(days=3))  # 2026-03-07T12:00Z
MCP_CUT = to_us(END - timedelta(days=2))


def test_rule_syntax(tmp_path: Path) -> None:
    rules = parse_rules("level:debug=7d; type:mcp.call&agent:x-sag=90d\n*=400d; tier:hot=2w")
    assert [r.describe() for r in rules] == ["level:debug=7d", "type:mcp.call&agent:x-sag=90d", "*=400d", "tier:hot=2w"]
    assert rules[2] == Rule(keep=timedelta(days=400), keep_text="400d")
    assert rules[3].applies_to("hot") and not rules[3].applies_to("lake") and rules[2].applies_to("clickhouse")
    toml = tmp_path / "ret.toml"
    toml.write_text('[[rule]]\nlevel = "debug"\nkeep = "7d"\n\n[[rule]]\ntier = "lake"\nkeep = "400d"\n')
    assert [r.describe() for r in parse_rules(str(toml))] == ["level:debug=7d", "tier:lake=400d"]
    for bad, text in (
        ("level=7d", "is not key:value"),
        ("level:debug", "expected FILTERS=AGE"),
        ("tier:cold=7d", "tier must be one of"),
        ("type:a&type:b=1d", "type given twice"),
        ("*=seven", "retention rule 1"),
        (str(tmp_path / "missing.toml"), "does not exist"),
    ):
        with pytest.raises(ConfigError, match=text):
            parse_rules(bad)


def test_show_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MAGSAG_NOW": END.isoformat(), "MAGSAG_STORAGE_RETENTION": RULES}
    res = magsag("data", "retention", "show", "--json", env=env)
    assert res.code == 0, res.err
    got = res.json()["rules"]
    assert [(r["rule"], r["delete_before"]) for r in got] == [
        ("tier:lake=3d", "2026-03-07T12:00:00Z"),
        ("type:mcp.call=2d", "2026-03-08T12:00:00Z"),
    ]
    bad = magsag("data", "retention", "show", "--rules", "level=7d", env=env)
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1 and "is not key:value" in bad.err


def _expired(row: tuple[Any, ...]) -> bool:
    ts, type_ = row[1], row[4]
    return ts < LAKE_CUT or (type_ == "mcp.call" and ts < MCP_CUT)


@pytest.mark.asyncio
async def test_apply_everywhere(hot: HotCase, lake_case: LakeCase, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGSAG_NOW", END.isoformat())
    lake = lake_case.lake
    await load_demo(hot.backend, days=2, runs_per_day=2, seed=5, end=END - timedelta(days=3))  # older days
    await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END, mode=MOVE)
    settings = load_settings(**{"lake_url": lake_case.url}, **_s3(lake_case))
    before = Counter(lake_events(lake))
    hot_before = Counter(await hot.event_rows())
    days_before = {e.dt for e in manifest.live_entries(lake, layout.EVENTS)}
    assert min(days_before) < "2026-03-07"  # a whole day to drop
    want = Counter({r: n for r, n in before.items() if not _expired(r)})
    assert want != before

    rules = parse_rules(RULES)
    dry = await apply_retention(hot.backend, settings, rules, dry_run=True)
    assert Counter(lake_events(lake)) == before
    assert dry.lakes[0]["events"] == sum((before - want).values())

    rep = await apply_retention(hot.backend, settings, rules)
    assert Counter(lake_events(lake)) == want
    assert rep.lakes[0]["events"] == sum((before - want).values())
    dropped = {d.split("/")[1] for d in rep.lakes[0]["dropped_days"] if d.startswith("events/")}
    assert dropped and all(d < "2026-03-07" for d in dropped)
    live_days = {e.dt for e in manifest.live_entries(lake, layout.EVENTS)}
    assert not dropped & live_days
    # no file of a dropped or rewritten day is left for a plain glob
    files = {p[len(lake.root) :].lstrip("/") for p in lake.fs.find(lake.root) if p.endswith(".parquet")}
    live = {e.path for ds in layout.DATASETS for e in manifest.live_entries(lake, ds)}
    assert files == live
    # runs that started in a dropped day are gone from the lake
    assert all(r[4] >= to_us(END - timedelta(days=4)) - 86_400_000_000 for r in lake_runs(lake))
    # the hot store holds only days newer than every cutoff: untouched
    assert Counter(await hot.event_rows()) == hot_before
    # again: nothing left to do
    again = await apply_retention(hot.backend, settings, rules)
    assert again.lakes[0]["events"] == 0 and Counter(lake_events(lake)) == want


@pytest.mark.asyncio
async def test_hot_rules(hot: HotCase, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAGSAG_NOW", END.isoformat())
    settings = load_settings(lake_url=str(tmp_path / "lake"))
    rows = await hot.event_rows()
    cut = to_us(END - timedelta(hours=30))
    expected = Counter(r for r in rows if not (r[4] == "mcp.call" and r[1] < cut))
    assert expected != Counter(rows)
    rep = await apply_retention(hot.backend, settings, parse_rules("type:mcp.call&tier:hot=30h"))
    assert Counter(await hot.event_rows()) == expected
    assert rep.hot["events"] == len(rows) - sum(expected.values())


def test_tier_job_applies_rules(tmp_path: Path) -> None:
    async def make() -> None:
        b = SQLiteStorageBackend(db_path=tmp_path / "hot.db")
        await b.initialize()
        await load_demo(b, days=5, runs_per_day=2, seed=5, end=END)
        await b.close()

    asyncio.run(make())
    env = {
        "MAGSAG_NOW": END.isoformat(),
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake"),
        "MAGSAG_STORAGE_HOT_DAYS": "1",
        "MAGSAG_STORAGE_RETENTION": "tier:lake=3d",
    }
    res = magsag("data", "tier", "--json", env=env)
    assert res.code == 0, res.err
    rows = lake_events(open_lake(str(tmp_path / "lake")))
    assert rows and min(r[1] for r in rows) >= LAKE_CUT


def _s3(lake_case: LakeCase) -> dict[str, Any]:
    s = lake_case.settings
    return {
        k: getattr(s, k)
        for k in ("s3_endpoint_url", "s3_region", "s3_access_key_id", "s3_secret_access_key")
        if getattr(s, k, None) is not None
    }

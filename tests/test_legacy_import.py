"""Importing legacy trees into a real SQLite store: counts, idempotence, growth, dry run, strict, costs."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.errors import ConfigError, NotFoundError
from magsag.backends.sqlite.store import SQLiteStorageBackend

from magsag.ingest import ImportReport, import_legacy
from magsag.ingest.legacy import LegacyImporter
from tests.legacy_trees import T0, jsonl, log_line, new_format_run, old_format_run, sample_tree, write_run

SAMPLE_RUNS = ("mag-3f9a1c07", "sag-0b1d2e30", "sag-0b1d2e31")


@pytest.fixture
async def store(tmp_path):
    backend = SQLiteStorageBackend(db_path=tmp_path / "store" / "hot.db")
    await backend.initialize()
    yield backend
    await backend.close()


async def all_events(store, run_id: str, **kw: Any) -> list[dict[str, Any]]:
    return [e async for e in store.get_events(run_id, **kw)]


async def counts(store) -> tuple[int, int]:
    stats = await store.stats()
    return stats["runs"], stats["events"]


def comparable(report: ImportReport) -> dict[str, Any]:
    d = report.to_dict()
    for key in ("seconds", "events_per_second", "dry_run", "written"):
        d.pop(key)
    d["events"].pop("written")
    return d


def damaged_tree(root: Path) -> Path:
    """Newer and older runs plus one run with every kind of damage; returns ``root/agents``."""
    agents = root / "agents"
    new_format_run(agents, "mag-00000001", "orchestrator")
    new_format_run(agents, "sag-00000002", "advisor", parent="mag-00000001", outcome="error", t=T0 + 1)
    old_format_run(agents, "run-0123456789ab", "old-agent", t=T0 + 2)
    bad = "mag-0badf00d"
    write_run(
        agents,
        bad,
        logs=[
            log_line(bad, "start", T0 + 3, {"slug": "damaged"}),
            b"{not json\n",
            b'{"run_id": "mag-0badf00d", "event": "x", "timestamp": 1795687280, "data": {"k": "\xff"}}\n',
            log_line(bad, "retry", "not-a-time", {}),
            {"run_id": bad, "event": "retry", "data": {}},
            log_line(bad, "engine.event", T0 + 4, {"big": "y" * (10 * 1024 * 1024)}),
            b'{"run_id": "mag-0badf00d", "event": "end", "timesta',
        ],
        mcp=[],
    )
    (agents / bad / "mcp_calls.jsonl").write_bytes(b"")  # empty file
    (agents / bad / "metrics.json").mkdir()  # unreadable: a directory
    (agents / "empty-run").mkdir()  # nothing at all: skipped
    (agents / "README.txt").write_text("not a run")  # stray file: skipped
    (agents / ".DS_Store").write_text("hidden: ignored")
    return agents


DAMAGED_REJECTIONS = 6  # 5 bad log lines + 1 unreadable metrics.json


# ----------------------------------------------------------------- the sample


async def test_sample_imports_exactly_and_maps_runs(tmp_path, store):
    runs = sample_tree(tmp_path)
    report = await import_legacy(store, runs / "agents", costs=[runs])
    assert report.ok and report.rejected == 0
    assert (report.runs_found, report.runs_imported, report.runs_present, report.runs_skipped) == (3, 3, 0, 0)
    assert dict(report.events_by_type) == {"log": 9, "delegation": 4, "metric": 9, "mcp.call": 2, "cost": 3}
    assert report.duplicates == 3  # the same 3 cost records are in costs.jsonl and costs.db
    assert report.events_written == report.events_new == 27
    assert await counts(store) == (3, 27)

    mag = await store.get_run("mag-3f9a1c07")
    assert mag["agent_slug"] == "offer-orchestrator-mag" and mag["status"] == "succeeded"
    assert mag["parent_run_id"] is None and "legacy" in mag["tags"]
    assert mag["started_at"] == "2026-11-26T10:01:13.284596+00:00"
    assert mag["ended_at"] == "2026-11-26T10:01:13.291899+00:00"
    assert mag["metrics"]["cost_usd"] == 0.0042 and mag["metrics"]["token_count"] == 1312
    assert mag["metrics"]["duration_ms"] == 3400
    ok, failed = await store.get_run("sag-0b1d2e30"), await store.get_run("sag-0b1d2e31")
    assert (ok["status"], ok["parent_run_id"]) == ("succeeded", "mag-3f9a1c07")
    assert (failed["status"], failed["parent_run_id"]) == ("failed", "mag-3f9a1c07")

    (cost,) = await all_events(store, "sag-0b1d2e30", event_type="cost")
    assert cost["agent_slug"] == "compensation-advisor-sag" and cost["ts"] == "2026-11-26T10:01:13.288726+00:00"
    assert cost["payload"] == {
        "model": "unknown",
        "input_tokens": 1312,
        "output_tokens": 0,
        "total_tokens": 1312,
        "cost_usd": 0.0042,
        "step": "sag",
        "metadata": {"stage": "sag"},
    }
    assert cost["msg"] == "cost $0.0042 unknown 1312 tokens (step sag)"

    # what users do next: search, metrics, and joining cost with runs
    hits = await store.search_text("RateLimitError")
    assert {h["run_id"] for h in hits} == {"mag-3f9a1c07", "sag-0b1d2e31"}
    agg = await store.query_metrics("duration_ms", aggregation="sum")
    assert (agg["value"], agg["count"]) == (3400 + 800 + 2300, 3)

    def cost_by_status(c: sqlite3.Connection) -> list[tuple[str, float]]:
        return c.execute(
            "SELECT r.status, round(sum(json_extract(e.payload, '$.cost_usd')), 6) FROM events e "
            "JOIN runs r USING (run_id) WHERE e.type = 'cost' GROUP BY r.status ORDER BY 1"
        ).fetchall()

    assert await store.read(cost_by_status) == [("failed", 0.0), ("succeeded", 0.0084)]


async def test_second_import_inserts_nothing(tmp_path, store):
    runs = sample_tree(tmp_path)
    await import_legacy(store, runs / "agents", costs=[runs])
    before = await counts(store)
    again = await import_legacy(store, runs / "agents", costs=[runs])
    assert again.ok and again.events_new == 0 and again.events_written == 0
    assert (again.runs_imported, again.runs_present) == (0, 3)
    assert again.events_present == 27
    assert await counts(store) == before


# -------------------------------------------------------------- damaged trees


async def test_damaged_tree_imports_all_good_data_and_reports_the_rest(tmp_path, store):
    agents = damaged_tree(tmp_path)
    report = await import_legacy(store, agents)
    assert not report.ok
    assert report.rejected == DAMAGED_REJECTIONS == len(report.rejections)
    bad = agents / "mag-0badf00d"
    assert {str(r) for r in report.rejections} == {
        f"{bad / 'logs.jsonl'}:2: invalid JSON: unexpected character at column 2",
        f"{bad / 'logs.jsonl'}:3: not valid UTF-8 (byte 0xff at column 82)",
        f"{bad / 'logs.jsonl'}:4: timestamp is not an ISO-8601 timestamp: 'not-a-time'",
        f"{bad / 'logs.jsonl'}:5: missing timestamp",
        f"{bad / 'logs.jsonl'}:7: truncated last line (no newline at end of file); "
        "invalid JSON: unexpected end of data at column 52",
        f"{bad / 'metrics.json'}: cannot read: a directory",
    }
    assert (report.runs_found, report.runs_imported, report.runs_skipped) == (6, 4, 2)
    assert sorted(report.skipped) == [
        (str(agents / "README.txt"), "not a run folder"),
        (str(agents / "empty-run"), "no records"),
    ]
    # new: 3 logs + 2 metrics + 1 mcp each; the failed SAG the same; old: 2 logs + 3 metrics; bad: 2 logs
    assert dict(report.events_by_type) == {"log": 3 + 3 + 2 + 2, "metric": 2 + 2 + 3, "mcp.call": 2}
    assert await counts(store) == (4, 19)
    big = [e for e in await all_events(store, "mag-0badf00d") if e["msg"].startswith("engine.event")]
    assert len(big[0]["payload"]["big"]) == 10 * 1024 * 1024
    assert (await store.get_run("mag-0badf00d"))["status"] == "running"  # its end line was truncated
    assert (await store.get_run("sag-00000002"))["status"] == "failed"
    old = await store.get_run("run-0123456789ab")
    assert (old["agent_slug"], old["status"], old["metrics"]["token_count"]) == ("old-agent", "succeeded", 42)


async def test_strict_writes_nothing_when_anything_is_rejected(tmp_path, store):
    agents = damaged_tree(tmp_path)
    report = await import_legacy(store, agents, strict=True)
    assert report.aborted == f"--strict: {DAMAGED_REJECTIONS} record(s) rejected, nothing written"
    assert not report.ok and not report.written and report.rejected == DAMAGED_REJECTIONS
    assert await counts(store) == (0, 0)

    clean = tmp_path / "clean"
    new_format_run(clean, "mag-00000001", "orchestrator")
    ok = await import_legacy(store, clean, strict=True)
    assert ok.ok and ok.written and ok.events_written == 6
    assert await counts(store) == (1, 6)


async def test_damage_in_one_run_does_not_block_others_in_the_same_batch(tmp_path, store):
    agents = damaged_tree(tmp_path)
    report = await import_legacy(store, agents, batch_size=3)
    assert report.events_written == 19 and await counts(store) == (4, 19)


# ------------------------------------------------------ idempotence and growth


async def test_a_run_folder_that_grew_imports_only_the_new_lines(tmp_path, store):
    agents = tmp_path / "agents"
    run_id = "sag-1234abcd"
    d = write_run(
        agents,
        run_id,
        logs=[log_line(run_id, "start", T0, {"slug": "advisor", "parent_run_id": "mag-1"})],
        mcp=[{"run_id": run_id, "timestamp": T0 + 0.5, "server_id": "pg", "tool": "q", "status": "success"}],
    )
    first = await import_legacy(store, agents)
    assert first.events_new == 2 and (await store.get_run(run_id))["status"] == "running"

    with open(d / "logs.jsonl", "ab") as fh:  # the agent kept going
        fh.write(jsonl([log_line(run_id, "retry", T0 + 1, {"attempt": 1}), log_line(run_id, "end", T0 + 2, {})]))
    with open(d / "mcp_calls.jsonl", "ab") as fh:
        fh.write(jsonl([{"run_id": run_id, "timestamp": T0 + 1.5, "server_id": "pg", "tool": "q", "status": "error"}]))

    dry = await import_legacy(store, agents, dry_run=True)
    real = await import_legacy(store, agents)
    assert comparable(dry) == comparable(real)
    assert dict(real.events_by_type) == {"log": 2, "mcp.call": 1}
    assert (real.events_present, real.runs_imported, real.events_written) == (2, 1, 3)
    run = await store.get_run(run_id)
    assert run["status"] == "succeeded" and run["ended_at"] == "2026-11-26T10:01:15.250000+00:00"
    assert run["parent_run_id"] == "mag-1"
    levels = [(e["type"], e["level"]) for e in await all_events(store, run_id)]
    assert levels == [("log", "info"), ("mcp.call", "info"), ("log", "warning"), ("mcp.call", "error"), ("log", "info")]


async def test_fixing_a_truncated_last_line_imports_it_on_the_next_run(tmp_path, store):
    agents = tmp_path / "agents"
    rid = "mag-feedbeef"
    good = jsonl([log_line(rid, "start", T0, {}), log_line(rid, "end", T0 + 1, {"status": "success"})])
    d = write_run(agents, rid, logs=[good[:-10]])  # crash mid-write
    first = await import_legacy(store, agents)
    assert first.rejected == 1 and first.events_written == 1
    (d / "logs.jsonl").write_bytes(good)
    second = await import_legacy(store, agents)
    assert second.ok and second.events_written == 1 and second.events_present == 1
    assert (await store.get_run(rid))["status"] == "succeeded"


async def test_dry_run_writes_nothing_and_reports_exactly_what_a_real_run_adds(tmp_path, store):
    agents = damaged_tree(tmp_path)
    shutil.copytree(sample_tree(tmp_path) / "agents", agents, dirs_exist_ok=True)
    await import_legacy(store, agents / ".." / "agents", costs=[])  # some of it is stored already
    new_format_run(agents, "mag-00000099", "later", t=T0 + 50)  # a new run ...
    with open(agents / "mag-3f9a1c07" / "logs.jsonl", "ab") as fh:  # ... and a grown one
        fh.write(jsonl([log_line("mag-3f9a1c07", "resume", T0 + 60, {"from": "checkpoint"})]))
    costs = sample_tree(tmp_path / "c")
    before = await counts(store)
    stored_run = await store.get_run("mag-3f9a1c07")

    dry = await import_legacy(store, agents, costs=[costs], dry_run=True)
    assert await counts(store) == before and await store.get_run("mag-3f9a1c07") == stored_run
    assert dry.events_written == 0 and not dry.written
    real = await import_legacy(store, agents, costs=[costs])
    assert comparable(dry) == comparable(real)
    assert real.events_written == dry.events_new == 6 + 1 + 3
    assert await counts(store) == (before[0] + 1, before[1] + real.events_written)
    assert (await store.get_run("mag-3f9a1c07"))["status"] == "succeeded"  # resume after end: still done


async def test_parsing_in_worker_processes_gives_the_same_result(tmp_path):
    agents = damaged_tree(tmp_path)
    reports = []
    for workers in (0, 2):
        backend = SQLiteStorageBackend(db_path=tmp_path / f"w{workers}.db")
        await backend.initialize()
        try:
            importer = LegacyImporter(backend, workers=workers, min_runs_for_workers=0, batch_size=5)
            reports.append(comparable(await importer.run(agents)))
            events = await backend.read(lambda c: c.execute("SELECT * FROM events ORDER BY event_id").fetchall())
            reports.append([e[1:] for e in events])  # all but the local sequence number
        finally:
            await backend.close()
    assert reports[0] == reports[2] and reports[1] == reports[3]


async def test_existing_run_metrics_and_tags_are_kept(tmp_path, store):
    agents = tmp_path / "agents"
    new_format_run(agents, "mag-00000001", "orchestrator")
    await store.create_run("mag-00000001", "orchestrator", tags=["team-a"])
    await store.update_run("mag-00000001", metrics={"reviewed": True})
    await import_legacy(store, agents)
    run = await store.get_run("mag-00000001")
    assert run["tags"] == ["team-a", "legacy"]
    assert run["metrics"]["reviewed"] is True and run["metrics"]["cost_usd"] == 0.01


# ------------------------------------------------------------------ cost ledger


async def test_cost_ledger_alone_attaches_costs_to_runs_and_records_runs_known_only_from_it(tmp_path, store):
    runs = sample_tree(tmp_path)
    with open(runs / "costs" / "costs.jsonl", "ab") as fh:
        fh.write(
            jsonl(
                [
                    {"timestamp": "2026-11-26T10:05:00+00:00", "model": "m", "cost_usd": 0.5, "run_id": "sag-gone1"},
                    {"timestamp": "2026-11-26T10:06:00", "model": "m", "cost_usd": 0.25, "run_id": None},
                    {"timestamp": "2026-11-26T10:07:00+00:00", "model": "m", "cost_usd": "free", "run_id": "x"},
                ]
            )
        )
    report = await import_legacy(store, None, costs=[runs / "costs" / "costs.jsonl", runs / "costs.db"])
    assert [str(r) for r in report.rejections] == [
        f"{runs / 'costs' / 'costs.jsonl'}:6: cost_usd must be a number, got a string"
    ]
    assert report.events_by_type == {"cost": 5} and report.duplicates == 3 and report.cost_runs_created == 5
    gone = await store.get_run("sag-gone1")
    assert (gone["status"], gone["agent_slug"], gone["tags"]) == ("succeeded", "unknown", ["legacy", "costs-only"])
    assert gone["metrics"]["cost_usd"] == 0.5
    (unattributed,) = await all_events(store, "costs-unattributed")
    assert unattributed["ts"] == "2026-11-26T10:06:00.000000+00:00" and unattributed["payload"]["cost_usd"] == 0.25

    # importing the run folders afterwards completes those runs without touching the costs
    after = await import_legacy(store, runs / "agents", costs=[runs])
    assert "cost" not in after.events_by_type and (after.events_new, after.events_present) == (24, 5)
    completed = await store.get_run("sag-0b1d2e31")
    assert (completed["status"], completed["tags"]) == ("failed", ["legacy"])
    assert len(await all_events(store, "sag-0b1d2e30", event_type="cost")) == 1


async def test_damaged_cost_db_is_one_rejection(tmp_path, store):
    (tmp_path / "costs.db").write_bytes(b"this is not a database at all" * 10)
    report = await import_legacy(store, None, costs=[tmp_path / "costs.db"])
    assert report.rejected == 1 and "cannot read as SQLite" in str(report.rejections[0])
    (tmp_path / "other.db").unlink(missing_ok=True)
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.commit()
    report = await import_legacy(store, None, costs=[tmp_path / "other.db"])
    assert [str(r) for r in report.rejections] == [f"{tmp_path / 'other.db'}: no table cost_records"]


# ------------------------------------------------------------------ bad usage


async def test_missing_source_or_ledger_is_a_clear_error(tmp_path, store):
    with pytest.raises(NotFoundError, match=r"legacy runs folder .* does not exist"):
        await import_legacy(store, tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        await import_legacy(store, tmp_path / "file")
    with pytest.raises(NotFoundError, match="no cost ledger at"):
        await import_legacy(store, None, costs=[tmp_path / "nope"])
    with pytest.raises(ConfigError, match="batch size"):
        LegacyImporter(store, batch_size=0)


async def test_report_json_is_serializable(tmp_path, store):
    report = await import_legacy(store, damaged_tree(tmp_path), dry_run=True)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["rejected"] == DAMAGED_REJECTIONS and data["runs"]["skipped"] == 2
    assert data["events"]["by_type"] == {"log": 10, "mcp.call": 2, "metric": 7}


async def test_unchanged_run_folders_are_not_read_again_unless_rescan(tmp_path, store):
    runs = sample_tree(tmp_path)
    await import_legacy(store, runs / "agents")
    logs = runs / "agents" / "sag-0b1d2e30" / "logs.jsonl"
    st = logs.stat()
    logs.write_bytes(b"x" * st.st_size)  # same size, same time: looks unchanged
    os.utime(logs, ns=(st.st_atime_ns, st.st_mtime_ns))

    quick = await import_legacy(store, runs / "agents")
    assert quick.ok and (quick.runs_present, quick.events_present, quick.events_new) == (3, 24, 0)
    full = await import_legacy(store, runs / "agents", rescan=True)
    assert full.rejected == 1 and str(full.rejections[0]).startswith(f"{logs}:1: truncated last line")


async def test_a_touched_run_folder_is_read_again_and_found_present(tmp_path, store):
    runs = sample_tree(tmp_path)
    await import_legacy(store, runs / "agents")
    stored = await store.get_run("mag-3f9a1c07")
    os.utime(runs / "agents" / "mag-3f9a1c07" / "logs.jsonl", ns=(1, 1_000_000_000))
    touched = await import_legacy(store, runs / "agents")
    assert (touched.runs_imported, touched.runs_present, touched.events_new) == (0, 3, 0)
    after = await store.get_run("mag-3f9a1c07")
    assert after["metrics"]["legacy_import"]["files"]["logs.jsonl"][1] == 1_000_000_000
    assert {k: v for k, v in after.items() if k != "metrics"} == {k: v for k, v in stored.items() if k != "metrics"}


@pytest.mark.parametrize("python", ["/nonexistent/python3", "/bin/true"])
async def test_parser_workers_that_cannot_start_or_die_fall_back_to_parsing_here(tmp_path, store, monkeypatch, python):
    import magsag.ingest.legacy_worker as worker

    agents = damaged_tree(tmp_path)
    expected = comparable(await import_legacy(store, agents, dry_run=True, workers=0))
    monkeypatch.setattr(worker.sys, "executable", python)
    importer = LegacyImporter(store, workers=2, min_runs_for_workers=0)
    assert comparable(await importer.run(agents, dry_run=True)) == expected

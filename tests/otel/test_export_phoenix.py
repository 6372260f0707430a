"""Round trip through a real OTLP backend: the store's runs exported to Arize Phoenix and
read back through Phoenix's REST API, run by run; exporting again adds nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from magsag.backends.schema import to_us

from magsag.ingest import import_legacy
from magsag.ingest.demo import load_demo
from magsag.otel import ids
from magsag.otel.export import export_otel
from magsag.otel.select import Selection
from magsag.storage import open_storage
from tests.otel.conftest import Phoenix, iso_us

pytestmark = [pytest.mark.phoenix, pytest.mark.xdist_group("phoenix")]

END = datetime(2026, 3, 1, tzinfo=UTC)
LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy-runs" / ".runs"


def _us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


async def _expected(storage: Any) -> dict[str, dict[str, Any]]:
    """Span id -> what Phoenix must hold, worked out from the store's records."""
    runs = {r["run_id"]: r for r in await storage.list_runs(limit=100_000)}
    events = {rid: [e async for e in storage.get_events(rid)] for rid in runs}
    out: dict[str, dict[str, Any]] = {}

    def root_of(rid: str) -> str:
        while runs[rid]["parent_run_id"] in runs:
            rid = runs[rid]["parent_run_id"]
        return runs[rid]["parent_run_id"] or rid

    for rid, run in runs.items():
        if run["status"] == "running":
            continue
        trace = ids.trace_id_for_run(root_of(rid))
        span = ids.run_span_id(rid)
        parent = None
        if run["parent_run_id"]:
            starts = [
                e
                for e in events[run["parent_run_id"]]
                if e["type"] == "delegation" and e["payload"].get("run_id") == rid
            ]
            parent = ids.event_span_id(starts[0]["event_id"]) if starts else ids.run_span_id(run["parent_run_id"])
        errors = [e for e in events[rid] if e["level"] == "error"]
        out[span] = {
            "run": rid,
            "trace": trace,
            "parent": parent,
            "name": f"invoke_agent {run['agent_slug']}",
            "kind": "AGENT",
            "start": _us(run["started_at"]),
            "end": _us(run["ended_at"]),
            "status": {"succeeded": "OK", "failed": "ERROR", "canceled": "UNSET"}[run["status"]],
            "message": (errors[-1]["payload"].get("error") or errors[-1]["msg"]) if run["status"] == "failed" else "",
            "attrs": {
                "gen_ai.agent.name": run["agent_slug"],
                "magsag.run_id": rid,
                **({"llm.cost.total": run["metrics"]["cost_usd"]} if "cost_usd" in run["metrics"] else {}),
                **({"llm.token_count.total": run["metrics"]["tokens"]} if "tokens" in run["metrics"] else {}),
            },
            "events": sum(1 for e in events[rid] if _on_run_span(e)),
        }
        for e in events[rid]:
            if e["type"] != "mcp.call":
                continue
            p = e["payload"]
            start = _us(e["ts"])
            failed = p["status"] == "error"
            out[ids.event_span_id(e["event_id"])] = {
                "run": rid,
                "trace": trace,
                "parent": span,
                "name": f"tools/call {p['tool']}",
                "kind": "TOOL",
                "start": start,
                "end": start + round(p["latency_ms"] * 1000),
                "status": "ERROR" if failed else "OK",
                "message": p.get("error", "") if failed else "",
                "attrs": {"gen_ai.tool.name": p["tool"], "magsag.mcp.server_id": p["server_id"]},
                "events": 0,
            }
    return out


def _on_run_span(e: dict[str, Any]) -> bool:
    """Events that become span events of the run's span (delegations go on their own span)."""
    if e["type"] in ("metric", "mcp.call"):
        return False
    return e["type"] != "delegation" or not (e["payload"].get("run_id") or e["payload"].get("task_id"))


def _check(phoenix_spans: list[dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    by_id = {s["context"]["span_id"]: s for s in phoenix_spans}
    assert len(by_id) == len(phoenix_spans), "Phoenix holds a span twice"
    for sid, want in expected.items():
        got = by_id.get(sid)
        assert got is not None, f"run {want['run']}: span {want['name']} ({sid}) missing in Phoenix"
        where = f"run {want['run']} span {want['name']}"
        assert got["context"]["trace_id"] == want["trace"], where
        assert got["parent_id"] == want["parent"], where
        assert got["name"] == want["name"], where
        assert got["span_kind"] == want["kind"], where  # Phoenix keeps openinference.span.kind here
        assert iso_us(got["start_time"]) == want["start"], where
        assert iso_us(got["end_time"]) == want["end"], where
        assert got["status_code"] == want["status"], where
        assert (got["status_message"] or "") == want["message"], where
        for k, v in want["attrs"].items():
            assert got["attributes"].get(k) == v, f"{where}: {k}"
        assert len(got["events"]) == want["events"], where
    # Delegated runs hang under a delegation span of their parent, in the parent's trace.
    for s in phoenix_spans:
        if s["parent_id"]:
            parent = by_id.get(s["parent_id"])
            assert parent is not None, f"{s['name']}: parent {s['parent_id']} not exported"
            assert parent["context"]["trace_id"] == s["context"]["trace_id"]


async def test_demo_and_legacy_round_trip_through_phoenix(phoenix: Phoenix, tmp_path: Path) -> None:
    async with open_storage(db_path=tmp_path / "s.db", lake_url=str(tmp_path / "lake")) as storage:
        await load_demo(storage, days=2, runs_per_day=6, end=END)
        await import_legacy(storage, LEGACY / "agents", costs=[LEGACY])
        expected = await _expected(storage)
        rep = await export_otel(storage, phoenix.otlp, project="roundtrip", batch_runs=7)
        assert rep.spans >= len(expected) and rep.batches > 1
        spans = phoenix.wait_spans("roundtrip", rep.spans)
        assert len(spans) == rep.spans
        _check(spans, expected)
        # The legacy MAG: two delegations, the second failed with the rate limit error.
        legacy = [s for s in spans if s["attributes"].get("magsag.run_id") == "mag-3f9a1c07"]
        delegations = [
            s for s in spans if s["name"].startswith("delegate ") and s["parent_id"] == ids.run_span_id("mag-3f9a1c07")
        ]
        assert len(legacy) == 1 and len(delegations) == 2
        assert sorted(d["status_code"] for d in delegations) == ["ERROR", "OK"]
        sag = next(s for s in spans if s["attributes"].get("magsag.run_id") == "sag-0b1d2e30")
        assert sag["attributes"]["gen_ai.usage.input_tokens"] == 1312  # from the cost ledger
        assert sag["attributes"]["llm.cost.total"] == 0.0042

        # Exporting again: same ids, so Phoenix still holds one copy of each span. A new run
        # sent afterwards shows when Phoenix has processed everything before it.
        again = await export_otel(storage, phoenix.otlp, project="roundtrip", batch_runs=50)
        assert again.spans == rep.spans
        await storage.create_run("sentinel-1", "sentinel", started_at=END, status="running")
        await storage.update_run("sentinel-1", status="succeeded", ended_at=END)
        last = await export_otel(
            storage, phoenix.otlp, project="roundtrip", selection=Selection(run_ids=("sentinel-1",))
        )
        assert last.spans == 1
        spans = phoenix.wait_spans("roundtrip", rep.spans + 1)
        assert len(spans) == rep.spans + 1
        assert len({s["context"]["span_id"] for s in spans}) == len(spans)

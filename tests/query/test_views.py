"""The views' shape (what docs/query.md promises) and the cost ledger view."""

from __future__ import annotations

import json
from pathlib import Path

from magsag.lakehouse import query
from magsag.lakehouse.settings import load_settings

from tests.cli_helpers import magsag

DOCUMENTED = {
    "events": "event_id ts run_id agent_slug type level msg payload span_id parent_span_id contract_id "
    "contract_version artifact_uri dt tier",
    "runs": "run_id agent_slug parent_run_id status started_at ended_at metrics tags dt tier",
    "lake_events": "event_id ts run_id agent_slug type level msg payload span_id parent_span_id contract_id "
    "contract_version artifact_uri dt",
    "hot_runs": "run_id agent_slug parent_run_id status started_at ended_at metrics tags dt",
    "mcp_calls": "event_id ts dt tier run_id agent_slug span_id level msg server_id tool status latency_ms "
    "transport error",
    "metrics": "event_id ts dt tier run_id agent_slug name value unit model",
    "costs": "event_id ts dt tier run_id agent_slug model input_tokens output_tokens total_tokens cost_usd step",
    "run_summary": "run_id agent_slug parent_run_id status started_at ended_at dt tier duration_s cost_usd tokens "
    "total_cost_usd total_tokens model tags",
}


def test_views_have_the_documented_columns(store: dict[str, str]) -> None:
    settings = load_settings(db_path=store["MAGSAG_STORAGE_DB_PATH"], lake_url=store["MAGSAG_STORAGE_LAKE_URL"])
    con = query.connect(settings)
    try:
        for view, cols in DOCUMENTED.items():
            got = [r[0] for r in con.sql(f"DESCRIBE {view}").fetchall()]
            assert got == cols.split(), view
        types = dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE events)").fetchall())
        assert types["ts"] == "TIMESTAMP WITH TIME ZONE" and types["dt"] == "DATE"
        assert dict(con.sql("SELECT column_name, column_type FROM (DESCRIBE runs)").fetchall())["tags"] == "VARCHAR[]"
        assert "costs" in (Path(__file__).resolve().parents[2] / "docs" / "query.md").read_text()
    finally:
        query.close(con)


def test_costs_view_holds_the_imported_ledger(tmp_path: Path) -> None:
    ledger = tmp_path / "costs.jsonl"
    rows = [
        {
            "timestamp": f"2026-04-0{d}T10:00:00",
            "model": "gpt-4.1-mini",
            "input_tokens": 100 * d,
            "output_tokens": 10,
            "total_tokens": 100 * d + 10,
            "cost_usd": 0.01 * d,
            "run_id": f"mag-0000000{d}",
            "agent": "offer-mag",
            "step": "draft",
        }
        for d in range(1, 4)
    ]
    ledger.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {"MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"), "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "lake")}
    res = magsag("data", "migrate", "--costs", str(ledger), "--no-runs", "--json", env=env)
    assert res.code == 0, res.err
    out = magsag(
        "data",
        "sql",
        "SELECT run_id, model, input_tokens, total_tokens, cost_usd, step, tier FROM costs ORDER BY ts",
        "--format",
        "json",
        env=env,
    )
    assert out.code == 0, out.err
    got = out.json()
    assert [r["run_id"] for r in got] == ["mag-00000001", "mag-00000002", "mag-00000003"]
    assert got[1]["input_tokens"] == 200 and got[2]["cost_usd"] == 0.03 and got[0]["step"] == "draft"
    assert {r["tier"] for r in got} == {"hot"}

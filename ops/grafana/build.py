"""Write the Grafana dashboards of ops/grafana/dashboards/ from the panel lists below.

    python3 ops/grafana/build.py          # rewrite the JSON files
    python3 ops/grafana/build.py --check  # exit 1 if a file differs (tests/serve run it)

Every PromQL expression here is executed against a real Prometheus by
tests/serve/test_prometheus.py, template variables set to match everything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}

Panel = tuple[str, str, list[tuple[str, str]], str]  # (title, kind, [(expr, legend)], unit)

DASHBOARDS: dict[str, dict[str, Any]] = {
    "magsag-storage-health": {
        "title": "MAGSAG — storage health",
        "variables": [("backend", "magsag_hot_events", "backend")],
        "panels": [
            ("Hot store size", "timeseries", [('magsag_hot_size_bytes{backend=~"$backend"}', "{{backend}}")], "bytes"),
            (
                "Hot store rows",
                "timeseries",
                [
                    ('magsag_hot_events{backend=~"$backend"}', "events {{backend}}"),
                    ('magsag_hot_runs{backend=~"$backend"}', "runs {{backend}}"),
                ],
                "short",
            ),
            ("Tier lag (days past the hot window)", "stat", [('magsag_tier_lag_days{backend=~"$backend"}', "")], "d"),
            (
                "Oldest hot event age",
                "stat",
                [('time() - magsag_hot_oldest_event_timestamp_seconds{backend=~"$backend"}', "")],
                "s",
            ),
            (
                "Events ingested / s (by type)",
                "timeseries",
                [
                    (
                        'sum by (type) (rate(magsag_events_ingested_total{backend=~"$backend"}[$__rate_interval]))',
                        "{{type}}",
                    )
                ],
                "ops",
            ),
            (
                "Append latency p99",
                "timeseries",
                [
                    (
                        "histogram_quantile(0.99, sum by (le, op) "
                        '(rate(magsag_append_duration_seconds_bucket{backend=~"$backend"}[$__rate_interval])))',
                        "{{op}}",
                    )
                ],
                "s",
            ),
            (
                "Last tiering job",
                "stat",
                [
                    ("magsag_tier_job_last_failed", "failed (1 = yes)"),
                    ("magsag_tier_job_last_duration_seconds", "seconds"),
                    ("magsag_tier_job_last_bytes", "bytes"),
                ],
                "short",
            ),
            ("Unfinished tier claims", "stat", [('magsag_tier_unfinished_claims{backend=~"$backend"}', "")], "short"),
            ("Lake size", "timeseries", [("magsag_lake_size_bytes", "{{dataset}}")], "bytes"),
            (
                "Lake files and partitions",
                "timeseries",
                [("magsag_lake_files", "files {{dataset}}"), ("magsag_lake_partitions", "partitions {{dataset}}")],
                "short",
            ),
            ("Small-file partitions", "stat", [("sum(magsag_lake_small_file_partitions)", "")], "short"),
            ("Collector errors", "timeseries", [("increase(magsag_collector_errors_total[5m])", "{{part}}")], "short"),
        ],
    },
    "magsag-agent-activity": {
        "title": "MAGSAG — agent activity",
        "variables": [("agent", "magsag_runs", "agent")],
        "panels": [
            (
                "Runs by status",
                "timeseries",
                [('sum by (status) (magsag_runs{agent=~"$agent"})', "{{status}}")],
                "short",
            ),
            ("Running now", "stat", [('sum(magsag_runs{agent=~"$agent",status="running"})', "")], "short"),
            (
                "Error rate by agent (runs ended in the window)",
                "timeseries",
                [('magsag:agent_error_ratio:window{agent=~"$agent"}', "{{agent}}")],
                "percentunit",
            ),
            (
                "Runs ended in the window",
                "timeseries",
                [('sum by (agent, status) (magsag_runs_ended_window{agent=~"$agent"})', "{{agent}} {{status}}")],
                "short",
            ),
            (
                "MCP call latency p95",
                "timeseries",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, server) (magsag_mcp_call_duration_seconds_bucket))",
                        "{{server}}",
                    )
                ],
                "s",
            ),
            (
                "MCP calls by status",
                "timeseries",
                [("sum by (server, status) (magsag_mcp_calls_window)", "{{server}} {{status}}")],
                "short",
            ),
        ],
    },
    "magsag-cost": {
        "title": "MAGSAG — cost",
        "variables": [("agent", "magsag_agent_cost_usd_window", "agent")],
        "panels": [
            (
                "Cost in the window by agent (USD)",
                "timeseries",
                [('sum by (agent) (magsag_agent_cost_usd_window{agent=~"$agent"})', "{{agent}}")],
                "currencyUSD",
            ),
            (
                "Cost in the window by model (USD)",
                "timeseries",
                [('sum by (model) (magsag_agent_cost_usd_window{agent=~"$agent"})', "{{model}}")],
                "currencyUSD",
            ),
            (
                "Tokens in the window by agent and model",
                "timeseries",
                [('sum by (agent, model) (magsag_agent_tokens_window{agent=~"$agent"})', "{{agent}} {{model}}")],
                "short",
            ),
            (
                "Total cost in the window",
                "stat",
                [('sum(magsag_agent_cost_usd_window{agent=~"$agent"})', "")],
                "currencyUSD",
            ),
        ],
    },
}


def panel(i: int, p: Panel) -> dict[str, Any]:
    title, kind, targets, unit = p
    return {
        "id": i + 1,
        "title": title,
        "type": kind,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12 if kind == "timeseries" else 6, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(65 + k), "datasource": DS, "expr": expr, "legendFormat": legend}
            for k, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, spec: dict[str, Any]) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus", "hide": 0}
    ]
    for name, metric, label in spec["variables"]:
        variables.append(
            {
                "name": name,
                "type": "query",
                "datasource": DS,
                "query": {"query": f"label_values({metric}, {label})", "refId": "var"},
                "definition": f"label_values({metric}, {label})",
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "current": {"text": "All", "value": "$__all"},
                "refresh": 2,
            }
        )
    return {
        "uid": uid,
        "title": spec["title"],
        "tags": ["magsag"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": variables},
        "panels": [panel(i, p) for i, p in enumerate(spec["panels"])],
    }


def render() -> dict[Path, str]:
    return {HERE / f"{uid}.json": json.dumps(dashboard(uid, spec), indent=2) + "\n" for uid, spec in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [p.name for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"out of date (run python3 ops/grafana/build.py): {', '.join(stale)}", file=sys.stderr)
            return 1
        return 0
    HERE.mkdir(parents=True, exist_ok=True)
    for p, text in files.items():
        p.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

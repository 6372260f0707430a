"""A real Prometheus (Debian's 2.42) scraping `magsag data serve` and a tiering job.

Every PromQL expression of the Grafana dashboards must return data (template variables
set to match everything), the rules must pass `promtool check rules`, and every alert is
driven into firing: a tiering job that fails, a hot store lagging past its window, a
hot store above its size limit, an agent failing most of its runs. The rules are loaded
as shipped, except that each `for:` becomes 0s (a test cannot wait the production delays).

The module starts one Prometheus on a free loopback port with its own temporary TSDB,
scraping every second; names, ports and folders are per worker (xdist-safe).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.serve.helpers import GUARD_S, NOW, ServerThread, free_port, seed_rows, write_seed_lake

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "magsag-rules.yml"
DASHBOARDS = sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json"))
TOKEN = "scrape-token-for-tests"
ALERTS = ("MagsagTierJobFailed", "MagsagTierLagging", "MagsagHotStoreTooLarge", "MagsagAgentErrorRateHigh")


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        msg = f"{name} is not installed (apt-get install -y prometheus)"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI must provide it)")
        pytest.skip(msg)
    return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


class Prom:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> list[Any]:
        out = _get(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert out["status"] == "success", out
        return out["data"]["result"]

    def label_values(self, label: str, metric: str) -> list[str]:
        q = urllib.parse.urlencode({"match[]": metric})
        return _get(f"{self.url}/api/v1/label/{label}/values?{q}")["data"]

    def firing(self) -> set[str]:
        alerts = _get(f"{self.url}/api/v1/alerts")["data"]["alerts"]
        return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}

    def wait(self, what: str, check: Any) -> Any:
        deadline = time.monotonic() + GUARD_S
        while True:
            try:
                value = check()
            except OSError:  # not listening yet
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus never had {what}")
            time.sleep(0.5)


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    prometheus = _binary("prometheus")
    tmp = tmp_path_factory.mktemp("prom")
    from magsag.lakehouse.settings import load_settings

    from magsag.serve import ServeConfig, create_app

    db, lake = tmp / "hot.db", tmp / "lake"
    write_seed_lake(lake)
    settings = load_settings(backend="sqlite", db_path=db, lake_url=str(lake), hot_days=7)
    app = create_app(
        settings,
        ServeConfig(token=TOKEN, metrics_ttl_s=1.0, hot_size_limit_bytes=1024),
        clock=lambda: NOW,
    )
    server = ServerThread(app)
    tier_port, prom_port = free_port(), free_port()
    rules = re.sub(r"for: \d+[smh]", "for: 0s", RULES.read_text())
    (tmp / "rules.yml").write_text(rules)
    (tmp / "prometheus.yml").write_text(
        f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [{tmp / "rules.yml"}]
scrape_configs:
  - job_name: magsag-serve
    authorization: {{credentials: {TOKEN}}}
    static_configs: [{{targets: ["127.0.0.1:{server.port}"]}}]
  - job_name: magsag-tier
    static_configs: [{{targets: ["127.0.0.1:{tier_port}"]}}]
"""
    )
    (tmp / "not-a-folder").write_text("a file where the lake should be: the tiering job fails")
    with server:
        _seed(db)
        tier = subprocess.Popen(
            [sys.executable, "-m", "magsag", "data", "tier", "--every", "1s", "--metrics-port", str(tier_port),
             "--db-path", str(db), "--json"],
            env={**os.environ, "MAGSAG_STORAGE_LAKE_URL": str(tmp / "not-a-folder" / "lake")},  # the configured lake
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            p = Prom(f"http://127.0.0.1:{prom_port}")
            p.wait("a scrape of serve", lambda: p.query('up{job="magsag-serve"} == 1'))
            p.wait("a scrape of the tier job", lambda: p.query('up{job="magsag-tier"} == 1'))
            yield p
        finally:
            for child in (proc, tier):
                child.terminate()
                try:
                    child.wait(GUARD_S)
                except subprocess.TimeoutExpired:
                    child.kill()
            log.close()


def _seed(db: Path) -> None:
    """Write the seed rows through a store in this process (the append counters see them)."""
    import asyncio

    from magsag.backends.sqlite.store import SQLiteStorageBackend

    async def go() -> None:
        runs, events = seed_rows()
        async with SQLiteStorageBackend(db_path=db) as store:
            await store.upsert_runs(runs)
            await store.append_events(events[:-3])
            for e in events[-3:]:
                await store.append_event(e.run_id, e.agent_slug, e.type, _dt(e.ts_us), message=e.msg)

    asyncio.run(go())


def _dt(us: int) -> Any:
    from magsag.backends.schema import from_us

    return from_us(us)


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{path.stem}: {panel['title']}", target["expr"]))
    return out


def fill(expr: str) -> str:
    """Template variables as Grafana fills them with 'All' (match-all) and a short rate window."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__range", "5m")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def test_promtool_check_rules() -> None:
    promtool = _binary("promtool")
    res = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_dashboards_are_built_from_ops_grafana_build() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "ops/grafana/build.py"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert len(DASHBOARDS) == 3


def test_every_dashboard_query_returns_data(prom: Prom) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    missing = set(exprs)
    deadline = time.monotonic() + GUARD_S
    while missing and time.monotonic() < deadline:
        for title, expr in sorted(missing):
            if prom.query(fill(expr)):
                missing.discard((title, expr))
        time.sleep(0.5)
    assert not missing, f"queries without data: {missing}"


def test_template_variables_have_values(prom: Prom) -> None:
    for path in DASHBOARDS:
        for var in json.loads(path.read_text())["templating"]["list"]:
            if var["type"] != "query":
                continue
            metric, label = re.match(r"label_values\((\w+), (\w+)\)", var["definition"]).groups()  # type: ignore[union-attr]
            assert prom.wait(f"values of {label}", lambda m=metric, lb=label: prom.label_values(lb, m))


def test_recording_rules_compute(prom: Prom) -> None:
    ratios = prom.wait("the error ratio", lambda: prom.query("magsag:agent_error_ratio:window"))
    by_agent = {r["metric"]["agent"]: float(r["value"][1]) for r in ratios}
    assert by_agent["flaky-sag"] == pytest.approx(6 / 7)
    assert by_agent["advisor-sag"] == 0
    p95 = prom.wait("MCP p95", lambda: prom.query('magsag:mcp_call_duration_seconds:p95{server="web"}'))
    assert 0.5 < float(p95[0]["value"][1]) <= 1.0


def test_every_alert_fires_when_its_condition_holds(prom: Prom) -> None:
    firing = prom.wait("all alerts firing", lambda: set(ALERTS) <= prom.firing() and prom.firing())
    assert set(ALERTS) <= firing
    lag = prom.query("magsag_tier_lag_days")
    assert float(lag[0]["value"][1]) == 3  # ten days old, hot window 7 days (pinned now)
    alerts = _get(f"{prom.url}/api/v1/alerts")["data"]["alerts"]
    flaky = [a for a in alerts if a["labels"]["alertname"] == "MagsagAgentErrorRateHigh"]
    assert {a["labels"]["agent"] for a in flaky} == {"flaky-sag"}

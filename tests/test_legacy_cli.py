"""``magsag data migrate`` and ``ops/scripts/migrate_to_storage.py``: reports and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from magsag.cli import app
from tests.legacy_trees import T0, log_line, new_format_run, sample_tree, write_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def runner(monkeypatch, tmp_path):
    for var in list(os.environ):
        if var.startswith("MAGSAG_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)  # no stray .env, default paths inside the test folder
    return CliRunner()


def migrate(runner: CliRunner, *args: str):
    return runner.invoke(app, ["data", "migrate", *args])


def test_migrate_sample_prints_summary_and_exits_0(runner, tmp_path):
    runs = sample_tree(tmp_path)
    db = tmp_path / "hot.db"
    result = migrate(runner, str(runs / "agents"), "--costs", str(runs), "--db-path", str(db))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for line in (
        "runs imported",
        "runs already present",
        "runs skipped",
        "events: cost",
        "events: delegation",
        "events: log",
        "events: mcp.call",
        "events: metric",
        "lines rejected",
        "seconds",
        "events/s",
    ):
        assert line in out
    rows = {
        cells[0].strip(): cells[1].strip()
        for raw in out.splitlines()
        if (cells := [c for c in raw.strip("│┃ ").split("│")]) and len(cells) == 2
    }
    assert rows["runs imported"] == "3" and rows["events: log"] == "9" and rows["lines rejected"] == "0"
    assert rows["events new (total)"] == "27"

    again = migrate(runner, str(runs / "agents"), "--costs", str(runs), "--db-path", str(db), "--json")
    assert again.exit_code == 0
    report = json.loads(again.stdout)
    assert report["runs"] == {
        "found": 3,
        "imported": 0,
        "already_present": 3,
        "skipped": 0,
        "created_from_costs": 0,
    }
    assert report["events"]["new"] == 0 and report["events"]["already_present"] == 27

    listed = runner.invoke(app, ["data", "query", "--db-path", str(db), "--json"])
    assert {r["run_id"]: r["status"] for r in json.loads(listed.stdout)} == {
        "mag-3f9a1c07": "succeeded",
        "sag-0b1d2e30": "succeeded",
        "sag-0b1d2e31": "failed",
    }


def damaged(tmp_path: Path, n_bad: int) -> Path:
    agents = tmp_path / "agents"
    new_format_run(agents, "mag-00000001", "orchestrator")
    rid = "sag-00000002"
    write_run(agents, rid, logs=[log_line(rid, "start", T0, {}), *([b"{oops\n"] * n_bad)])
    return agents


def test_rejections_are_listed_as_path_line_reason_counted_and_exit_1(runner, tmp_path):
    agents = damaged(tmp_path, 25)
    db = tmp_path / "hot.db"
    result = migrate(runner, str(agents), "--db-path", str(db), "--show-rejections", "3")
    assert result.exit_code == 1
    path = agents / "sag-00000002" / "logs.jsonl"
    listed = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert listed == [f"{path}:{n}: invalid JSON: unexpected character at column 2" for n in (2, 3, 4)]
    assert "... and 22 more rejected" in result.stderr
    assert "lines rejected" in result.stdout and "25" in result.stdout
    # the good data went in all the same
    runs = json.loads(runner.invoke(app, ["data", "query", "--db-path", str(db), "--json"]).stdout)
    assert sorted(r["run_id"] for r in runs) == ["mag-00000001", "sag-00000002"]


def test_strict_fails_with_exit_1_and_writes_nothing(runner, tmp_path):
    agents = damaged(tmp_path, 1)
    db = tmp_path / "hot.db"
    result = migrate(runner, str(agents), "--db-path", str(db), "--strict", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["aborted"] == "--strict: 1 record(s) rejected, nothing written" and report["written"] is False
    assert report["rejections"] == [
        f"{agents / 'sag-00000002' / 'logs.jsonl'}:2: invalid JSON: unexpected character at column 2"
    ]
    empty = runner.invoke(app, ["data", "query", "--db-path", str(db), "--json"])
    assert json.loads(empty.stdout) == [] and empty.exit_code == 1

    human = migrate(runner, str(agents), "--db-path", str(db), "--strict")
    assert human.exit_code == 1
    assert "error: --strict: 1 record(s) rejected, nothing written" in human.stderr


def test_dry_run_reports_and_writes_nothing(runner, tmp_path):
    runs = sample_tree(tmp_path)
    db = tmp_path / "hot.db"
    dry = migrate(runner, str(runs / "agents"), "--db-path", str(db), "--dry-run", "--json")
    assert dry.exit_code == 0
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True and planned["written"] is False and planned["events"]["new"] == 24
    assert not db.exists()  # issue 13 item 9: a dry run creates no store
    default = migrate(runner, str(runs / "agents"), "--dry-run", "--json")  # default store .magsag/storage.db
    assert default.exit_code == 0 and json.loads(default.stdout)["events"]["new"] == 24
    assert not (tmp_path / ".magsag").exists()
    missing = runner.invoke(app, ["data", "query", "--db-path", str(db), "--json"])
    assert missing.exit_code == 1 and "no store at" in missing.stderr and not db.exists()  # issue 14 item 15
    real = json.loads(migrate(runner, str(runs / "agents"), "--db-path", str(db), "--json").stdout)
    assert real["events"]["by_type"] == planned["events"]["by_type"] and real["events"]["written"] == 24
    assert (
        "dry run (nothing written)" in migrate(runner, str(runs / "agents"), "--db-path", str(db), "--dry-run").stdout
    )


def test_default_source_comes_from_magsag_runs_base_dir(runner, tmp_path, monkeypatch):
    runs = sample_tree(tmp_path)
    monkeypatch.setenv("MAGSAG_RUNS_BASE_DIR", str(runs / "agents"))
    result = migrate(runner, "--db-path", str(tmp_path / "hot.db"), "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["source"] == str(runs / "agents")


def test_default_source_is_runs_agents_in_the_current_folder(runner, tmp_path):
    sample_tree(tmp_path)  # tmp_path is the current folder: .runs/agents exists
    result = migrate(runner, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["source"] == ".runs/agents" and report["runs"]["imported"] == 3
    assert (tmp_path / ".magsag" / "storage.db").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["nope"], 1, "error: legacy runs folder nope does not exist"),
        (["--costs", "missing.jsonl", "--no-runs"], 1, "error: no cost ledger at missing.jsonl"),
        (["--no-runs"], 2, "--no-runs needs --costs"),
        (["--max-line-mb", "0"], 2, "--max-line-mb"),
        (["--backend", "nosuch"], 2, "error: MAGSAG_STORAGE_BACKEND: unknown backend 'nosuch'"),
    ],
)
def test_usage_and_config_errors_are_one_line_with_exit_codes(runner, tmp_path, args, code, message):
    result = migrate(runner, *args, "--db-path", str(tmp_path / "hot.db"))
    assert result.exit_code == code, result.output
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output


def test_help_explains_the_command(runner):
    result = migrate(runner, "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for word in ("SOURCE", "--costs", "--dry-run", "--strict", "--json", "path:line: reason", "Exit code 0"):
        assert word in text


def test_ops_script_is_a_thin_wrapper(tmp_path):
    runs = sample_tree(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAGSAG_")}
    env.pop("PYTHONPATH", None)  # the script finds the package next to itself
    script = REPO / "ops" / "scripts" / "migrate_to_storage.py"
    cmd = [sys.executable, str(script), "--source", str(runs / "agents"), "--backend", "sqlite"]
    cmd += ["--db-path", str(tmp_path / "ops.db"), "--costs", str(runs), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["events"]["new"] == 27
    dry = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert dry.returncode == 0 and json.loads(dry.stdout)["events"]["new"] == 0

    bad = damaged(tmp_path / "bad", 1)
    failed = subprocess.run(
        [sys.executable, str(script), "--source", str(bad), "--db-path", str(tmp_path / "ops.db")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert failed.returncode == 1 and f"{bad / 'sag-00000002' / 'logs.jsonl'}:2: invalid JSON" in failed.stderr

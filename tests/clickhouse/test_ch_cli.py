"""`magsag data clickhouse init|status`, `magsag data load clickhouse`, `--backend clickhouse`:
exit codes, reports, and one-line errors."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from magsag.lakehouse import manifest
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.objstore import Lake

from tests.cli_helpers import Result, magsag
from tests.clickhouse_helpers import NO_REMOTE, REMOTE_URL, ch_env, ch_settings, new_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(local_lake: Lake) -> dict[str, str]:
    """A fresh chDB database and the local demo lake, selected by environment variables."""
    return {**ch_env("chdb", new_database()), "MAGSAG_STORAGE_LAKE_URL": local_lake.url}


def n_parts(lake: Lake) -> int:
    return sum(len(manifest.partitions(lake, ds)) for ds in ("events", "runs"))


def one_line_error(res: Result, needle: str) -> None:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.err
    assert "Traceback" not in res.err + res.out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_init_load_status(env: dict[str, str], local_lake: Lake) -> None:
    res = magsag("data", "clickhouse", "init", env=env)
    assert res.code == 0 and "ready" in res.out and "events, runs, load_ledger, schema_info" in res.out
    res = magsag("data", "clickhouse", "init", "--json", env=env)
    assert res.code == 0 and res.json()["created"] == [] and res.json()["schema_version"] == sql.SCHEMA_VERSION

    n = n_parts(local_lake)
    res = magsag("data", "load", "clickhouse", env=env)
    assert res.code == 0, res.err
    assert f"loaded {n} partitions" in res.out and "server-side" in res.out and "verified" in res.out
    res = magsag("data", "load", "clickhouse", env=env)
    assert res.code == 0 and "loaded 0 partitions" in res.out and f"{n} current" in res.out

    res = magsag("data", "clickhouse", "status", "--json", env=env)
    ledger = res.json()
    assert res.code == 0 and len(ledger) == n
    assert sum(r["rows"] for r in ledger if r["dataset"] == "events") == sum(
        e.rows for es in manifest.partitions(local_lake, "events").values() for e in es
    )


def test_empty_lake_loads_nothing(env: dict[str, str], tmp_path: Path) -> None:
    res = magsag("data", "load", "clickhouse", "--lake", str(tmp_path / "nothing-here"), env=env)
    assert res.code == 0 and "loaded 0 partitions" in res.out and "has no committed partitions" in res.err


def test_dry_run_and_json_report(env: dict[str, str], local_lake: Lake) -> None:
    res = magsag("data", "load", "clickhouse", "--dry-run", "--json", env=env)
    assert res.code == 0
    report = res.json()
    assert report["dry_run"] is True and report["loaded_partitions"] == 0
    assert {p["action"] for p in report["partitions"]} == {"new"}
    res = magsag("data", "load", "clickhouse", "--dry-run", env=env)
    assert res.code == 0 and "dry run: would load" in res.out and "plan:" in res.out
    assert magsag("data", "clickhouse", "status", "--json", env=env).json() == []

    day = min(manifest.partitions(local_lake, "events")).isoformat()
    res = magsag(
        "data", "load", "clickhouse", "--partition", f"dt={day}", "--dataset", "events", "--client-side", "--json",
        env=env,
    )  # fmt: skip
    report = res.json()
    assert res.code == 0 and report["mode"] == "client" and [p["dt"] for p in report["partitions"]] == [day]


def test_s3_lake_from_the_command_line(s3_lake: Lake, s3_env: dict[str, str]) -> None:
    env = {**ch_env("chdb", new_database()), **s3_env}
    res = magsag("data", "load", "clickhouse", "--json", env=env)
    assert res.code == 0 and res.json()["mode"] == "server", res.err
    assert res.json()["loaded_partitions"] == n_parts(s3_lake)
    assert s3_env["MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY"] not in res.out + res.err


def test_query_and_search_against_clickhouse(env: dict[str, str]) -> None:
    assert magsag("data", "load", "clickhouse", env=env).code == 0
    res = magsag("data", "query", "--backend", "clickhouse", "--limit", "3", "--json", env=env)
    runs = res.json()
    assert res.code == 0 and len(runs) == 3
    assert runs == sorted(runs, key=lambda r: r["started_at"], reverse=True)
    res = magsag("data", "query", "--backend", "clickhouse", "--run-id", runs[0]["run_id"], "--json", env=env)
    assert res.code == 0 and res.json()["run"] == runs[0] and res.json()["events"]
    res = magsag("data", "search", "rate limit", "--backend", "clickhouse", "--json", env=env)
    hits = res.json()
    assert res.code == 0 and hits and all("rate limit" in h["msg"].lower() for h in hits)
    res = magsag("data", "search", "nosuchwordanywhere", "--backend", "clickhouse", env=env)
    assert res.code == 1
    res = magsag("data", "search", "(unclosed", "--raw", "--backend", "clickhouse", env=env)
    one_line_error(res, "malformed regular expression")


def test_writes_through_clickhouse_are_refused(env: dict[str, str]) -> None:
    res = magsag("data", "demo", "--days", "1", "--runs-per-day", "1", "--backend", "clickhouse", env=env)
    one_line_error(res, "read-only")
    res = magsag("data", "vacuum", "--backend", "clickhouse", env=env)
    one_line_error(res, "does not vacuum")


def test_unreachable_server_is_one_line_without_the_password(env: dict[str, str]) -> None:
    port = closed_port()
    bad = {
        **env,
        "MAGSAG_CLICKHOUSE_URL": f"http://analyst:url-secret@127.0.0.1:{port}",
        "MAGSAG_CLICKHOUSE_PASSWORD": "hunter2",
    }
    for args in (
        ("data", "clickhouse", "init"),
        ("data", "load", "clickhouse"),
        ("data", "query", "--backend", "clickhouse"),
    ):
        res = magsag(*args, env=bad)
        one_line_error(res, f"ClickHouse server http://127.0.0.1:{port} is unreachable (connection refused)")
        assert "hunter2" not in res.err and "url-secret" not in res.err


def test_schema_mismatch_stops_the_load(env: dict[str, str]) -> None:
    from magsag.lakehouse.clickhouse.engines import open_engine

    assert magsag("data", "clickhouse", "init", env=env).code == 0
    with open_engine(ch_settings("chdb", env["MAGSAG_CLICKHOUSE_DATABASE"])) as engine:
        engine.command(f"ALTER TABLE {sql.table(engine.database, 'runs')} MODIFY COLUMN status String")
    res = magsag("data", "load", "clickhouse", env=env)
    one_line_error(res, "column status is String, expected LowCardinality(String)")
    one_line_error(magsag("data", "clickhouse", "init", env=env), "column status is String")


def test_verification_failure_exits_2_and_keeps_the_ledger(env: dict[str, str], local_lake: Lake) -> None:
    entry = next(iter(manifest.partitions(local_lake, "runs").values()))[0]
    manifest.write_entry(local_lake, dataclasses.replace(entry, rows=entry.rows + 1))
    res = magsag("data", "load", "clickhouse", "--dataset", "runs", env=env)
    one_line_error(res, "ledger not updated")
    assert magsag("data", "clickhouse", "status", "--json", env=env).json() == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--dataset", "metrics"), "--dataset: 'metrics' is not events or runs"),
        (("--partition", "2025-13-01"), "--partition: '2025-13-01' is not a day"),
        (("--since", "last tuesday"), "--since: cannot read 'last tuesday'"),
    ],
)
def test_bad_options(env: dict[str, str], args: tuple[str, ...], needle: str) -> None:
    one_line_error(magsag("data", "load", "clickhouse", *args, env=env), needle)


def test_bad_clickhouse_settings_name_the_variable(env: dict[str, str]) -> None:
    res = magsag("data", "clickhouse", "init", env={**env, "MAGSAG_CLICKHOUSE_DATABASE": "no-dashes"})
    one_line_error(res, "MAGSAG_CLICKHOUSE_DATABASE")
    res = magsag("data", "clickhouse", "init", env={**env, "MAGSAG_CLICKHOUSE_URL": "tcp://host:9000"})
    one_line_error(res, "MAGSAG_CLICKHOUSE_URL: value error, must be an http:// or https:// url")


def test_auth_failure_is_one_line(env: dict[str, str]) -> None:
    if not REMOTE_URL:
        pytest.skip(NO_REMOTE)
    bad = {**env, "MAGSAG_CLICKHOUSE_URL": REMOTE_URL, "MAGSAG_CLICKHOUSE_PASSWORD": "definitely-wrong-password"}
    res = magsag("data", "clickhouse", "init", env=bad)
    one_line_error(res, "authentication failed")
    assert "definitely-wrong-password" not in res.err


def test_default_chdb_folder_in_a_real_process(tmp_path: Path, local_lake: Lake) -> None:
    """No URL and no path set: chDB in .magsag/clickhouse of the working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAGSAG_STORAGE_", "MAGSAG_CLICKHOUSE_"))}
    env.update({"PYTHONPATH": str(ROOT), "MAGSAG_STORAGE_LAKE_URL": local_lake.url})
    cwd = tmp_path / "work"
    cwd.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "magsag", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )

    res = run("data", "load", "clickhouse")
    assert res.returncode == 0 and "loaded" in res.stdout, res.stderr
    assert (cwd / ".magsag" / "clickhouse").is_dir()
    res = run("data", "search", "error", "--backend", "clickhouse", "--limit", "2", "--json")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr

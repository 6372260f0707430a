"""Issue 13, item 19: `magsag data doctor` — one line per check, exit 1 if any fails."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import magsag


def test_a_healthy_setup(tmp_path: Path) -> None:
    env = {"MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db"), "MAGSAG_STORAGE_S3_SECRET_ACCESS_KEY": "supersecret"}
    assert magsag("data", "demo", "--days", "2", "--runs-per-day", "2", "--json", env=env).code == 0
    res = magsag("data", "doctor", "--lake", str(tmp_path / "lake"), "--json", env=env)
    assert res.code == 0, res.out + res.err
    report = res.json()
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] and checks["hot store"]["status"] == "ok" and "schema v" in checks["hot store"]["detail"]
    assert "FTS on" in checks["hot store"]["detail"] and checks["lake"]["status"] == "ok"
    assert checks["duckdb sqlite_scanner"]["status"] == "ok" and checks["clickhouse"]["status"] == "skip"
    sources = {s["setting"]: s for s in report["settings"]}
    assert sources["db_path"]["from"] == "environment MAGSAG_STORAGE_DB_PATH"
    assert sources["lake_url"]["from"] == "command-line option" and sources["hot_days"]["from"] == "default"
    assert sources["s3_secret_access_key"]["value"] == "***" and "supersecret" not in res.out
    human = magsag("data", "doctor", "--lake", str(tmp_path / "lake"), env=env)
    lines = [ln for ln in human.out.splitlines() if ln.startswith(("ok ", "FAIL", "skip"))]
    assert len(lines) == len(report["checks"]) and human.code == 0


def test_failures_exit_1_and_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("x")
    env = {
        "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "missing" / "hot.db"),
        "MAGSAG_STORAGE_LAKE_URL": str(tmp_path / "not-a-folder" / "lake"),
    }
    res = magsag("data", "doctor", env=env)
    assert res.code == 1
    fails = [ln for ln in res.out.splitlines() if ln.startswith("FAIL")]
    assert any("hot store" in ln and "magsag data init" in ln for ln in fails)
    assert any(" lake " in ln for ln in fails)
    assert not (tmp_path / "missing").exists()

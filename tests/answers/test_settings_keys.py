"""Issue 13, item 16: a misspelled MAGSAG_* key (environment or .env) is reported with the closest valid key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from magsag.lakehouse.settings import SettingsWarning, known_keys, load_settings, unknown_keys

from tests.cli_helpers import magsag

ROOT = Path(__file__).resolve().parents[2]


def test_misspelled_environment_key_is_named_with_the_closest(tmp_path: Path) -> None:
    env = {"MAGSAG_STORAGE_HOTDAYS": "3", "MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")}
    res = magsag("data", "init", "--json", env=env)
    assert res.code == 0
    assert (
        "warning: MAGSAG_STORAGE_HOTDAYS (environment) is not a MAGSAG setting; did you mean MAGSAG_STORAGE_HOT_DAYS?"
        in res.err
    )
    clean = magsag("data", "init", "--json", env={"MAGSAG_STORAGE_DB_PATH": str(tmp_path / "hot.db")})
    assert "warning" not in clean.err


def test_misspelled_dotenv_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MAGSAG_STORAGE_LAKEURL=./elsewhere\nMAGSAG_STORAGE_HOT_DAYS=2\n")
    assert unknown_keys(environ={}) == [("MAGSAG_STORAGE_LAKEURL", ".env", "MAGSAG_STORAGE_LAKE_URL")]
    with pytest.warns(SettingsWarning, match="MAGSAG_STORAGE_LAKE_URL"):
        assert load_settings().hot_days == 2


def test_every_key_the_code_and_docs_name_is_known() -> None:
    """A new MAGSAG_* variable read anywhere must join known_keys(), or users setting it are warned."""
    names: set[str] = set()
    for folder in ("backends", "lakehouse", "magsag", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".md"):
                names.update(re.findall(r"\bMAGSAG_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    names.update(re.findall(r"\bMAGSAG_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / "README.md").read_text(encoding="utf-8")))
    prefixes = {"MAGSAG_STORAGE", "MAGSAG_CLICKHOUSE", "MAGSAG_STORAGE_S3", "MAGSAG_STORAGE_CLICKHOUSE"}
    unknown = sorted(n for n in names - known_keys() - prefixes if not n.startswith("MAGSAG_TEST_"))
    assert not unknown, unknown

"""Settings: environment, .env, validation naming the variable, custom backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from magsag.backends.errors import ConfigError
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.lakehouse.settings import backend_from_settings, load_settings

from magsag.storage import get_storage_backend


def test_defaults() -> None:
    s = load_settings()
    assert s.backend == "sqlite" and s.db_path == Path(".magsag/storage.db") and s.hot_days == 7
    assert s.enable_fts is None and s.archive_enabled is False and s.lake_url == "./lake"


def test_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("MAGSAG_STORAGE_HOT_DAYS=3\nMAGSAG_STORAGE_DB_PATH=from-dotenv.db\n")
    s = load_settings()
    assert s.hot_days == 3 and s.db_path == Path("from-dotenv.db")
    monkeypatch.setenv("MAGSAG_STORAGE_HOT_DAYS", "9")
    assert load_settings().hot_days == 9  # the environment wins over .env
    assert load_settings(hot_days=1).hot_days == 1  # explicit overrides win over both


def test_dsn_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAGSAG_STORAGE_DSN", "postgresql://app:hunter2@db:5432/x")
    s = load_settings()
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.describe())
    assert s.dsn_value() == "postgresql://app:hunter2@db:5432/x"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("MAGSAG_STORAGE_HOT_DAYS", "seven"),
        ("MAGSAG_STORAGE_ARCHIVE_ENABLED", "perhaps"),
        ("MAGSAG_STORAGE_PG_POOL_MAX", "0"),
        ("MAGSAG_STORAGE_LAKE_URL", " "),
    ],
)
def test_invalid_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=var):
        load_settings()


def test_unknown_backend() -> None:
    with pytest.raises(ConfigError, match="MAGSAG_STORAGE_BACKEND: unknown backend 'cassandra'"):
        backend_from_settings(load_settings(backend="cassandra"))


class AuditedSQLite(SQLiteStorageBackend):
    """A custom backend, as docs/api.md shows: subclass and select it by dotted path."""

    name = "audited"

    @classmethod
    def from_settings(cls, settings):  # type: ignore[no-untyped-def]
        return cls(db_path=settings.db_path)


async def test_custom_backend_by_dotted_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAGSAG_STORAGE_BACKEND", "tests.test_settings:AuditedSQLite")
    monkeypatch.setenv("MAGSAG_STORAGE_DB_PATH", str(tmp_path / "custom.db"))
    storage = await get_storage_backend()
    try:
        # The documented API wraps the hot store so reads also see the lake; `.hot` is the store itself.
        assert isinstance(storage.hot, AuditedSQLite) and storage.name == "audited"  # type: ignore[attr-defined]
        assert await storage.list_runs() == []
    finally:
        await storage.close()


def test_dotted_path_errors() -> None:
    with pytest.raises(ConfigError, match="cannot import"):
        backend_from_settings(load_settings(backend="no_such_pkg.mod:Thing"))
    with pytest.raises(ConfigError, match="not a StorageBackend"):
        backend_from_settings(load_settings(backend="pathlib:Path"))

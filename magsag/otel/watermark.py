"""The continuous export's watermark, kept in the hot store beside the data.

One row per destination in ``otel_export_state``: the key (``ended_at`` µs, ``run_id``)
of the last run the destination accepted. It moves only after a batch was accepted, so
an unreachable endpoint leaves it where it was and the next attempt resends that batch
(the ids are deterministic: a backend that upserts by id keeps one copy).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from magsag.backends.base import StorageBackend
from magsag.backends.errors import UnsupportedOperation
from magsag.backends.schema import to_us, utc_now
from magsag.lakehouse.tiered_backend import unwrap
from magsag.otel.select import START, Key, hot_kind

TABLE = "otel_export_state"
_DDL = (
    "CREATE TABLE IF NOT EXISTS {t} (destination TEXT PRIMARY KEY, ended_at_us BIGINT NOT NULL, "
    "run_id TEXT NOT NULL, runs BIGINT NOT NULL DEFAULT 0, updated_at_us BIGINT NOT NULL)"
)


def destination_key(endpoint: str, project: str) -> str:
    """The endpoint without credentials, query or fragment, plus the project."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", "")) + f"#{project}"


def _table(hot: StorageBackend) -> str:
    return f"{hot.schema}.{TABLE}" if hot_kind(hot) == "postgres" else TABLE  # type: ignore[attr-defined]


async def read(storage: StorageBackend, destination: str) -> tuple[Key, int]:
    """The destination's watermark and how many runs it has taken (``START``, 0 when new)."""
    hot = unwrap(storage)
    kind = hot_kind(hot)
    t = _table(hot)
    if kind == "sqlite":

        def q(c: Any) -> Any:
            c.execute(_DDL.format(t=t))
            return c.execute(
                f"SELECT ended_at_us, run_id, runs FROM {t} WHERE destination = ?", [destination]
            ).fetchone()

        row = await hot.write(q)  # type: ignore[attr-defined]
    elif kind == "postgres":

        async def pq(c: Any) -> Any:
            await c.execute(_DDL.format(t=t))
            return await c.fetchrow(f"SELECT ended_at_us, run_id, runs FROM {t} WHERE destination = $1", destination)

        row = await hot.read(pq)  # type: ignore[attr-defined]
    else:
        raise UnsupportedOperation(
            f"the continuous export keeps its watermark in a SQLite or PostgreSQL hot store, not {hot.name!r}"
        )
    if row is None:
        return START, 0
    return (int(row[0]), str(row[1])), int(row[2])


async def save(storage: StorageBackend, destination: str, key: Key, runs: int) -> None:
    hot = unwrap(storage)
    t = _table(hot)
    now = to_us(utc_now())
    if hot_kind(hot) == "sqlite":
        sql = (
            f"INSERT INTO {t} (destination, ended_at_us, run_id, runs, updated_at_us) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (destination) DO UPDATE SET ended_at_us = excluded.ended_at_us, run_id = excluded.run_id, "
            "runs = excluded.runs, updated_at_us = excluded.updated_at_us"
        )
        await hot.write(lambda c: c.execute(sql, [destination, key[0], key[1], runs, now]))  # type: ignore[attr-defined]
        return
    sql = (
        f"INSERT INTO {t} (destination, ended_at_us, run_id, runs, updated_at_us) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (destination) DO UPDATE SET ended_at_us = excluded.ended_at_us, run_id = excluded.run_id, "
        "runs = excluded.runs, updated_at_us = excluded.updated_at_us"
    )

    async def pq(c: Any) -> None:
        await c.execute(sql, destination, key[0], key[1], runs, now)

    await hot.read(pq)  # type: ignore[attr-defined]

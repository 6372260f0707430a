"""The continuous export's watermark, kept in the hot store beside the data.

One row per destination in the store's export state (its ``export_state`` capability;
``otel_export_state`` in SQLite and PostgreSQL): the key (``ended_at`` µs, ``run_id``)
of the last run the destination accepted. It moves only after a batch was accepted, so
an unreachable endpoint leaves it where it was and the next attempt resends that batch
(the ids are deterministic: a backend that upserts by id keeps one copy).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from magsag.backends.base import StorageBackend
from magsag.backends.capabilities import has, require
from magsag.backends.schema import to_us, utc_now
from magsag.lakehouse.tiered_backend import unwrap
from magsag.otel.select import START, Key


def destination_key(endpoint: str, project: str) -> str:
    """The endpoint without credentials, query or fragment, plus the project."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", "")) + f"#{project}"


async def read(storage: StorageBackend, destination: str) -> tuple[Key, int]:
    """The destination's watermark and how many runs it has taken (``START``, 0 when new)."""
    hot = unwrap(storage)
    require(hot, "export_state", "the continuous export (its watermark lives in the hot store)")
    found = await hot.read_export_state(destination)  # type: ignore[attr-defined]
    return found if found is not None else (START, 0)


async def save(storage: StorageBackend, destination: str, key: Key, runs: int) -> None:
    hot = unwrap(storage)
    require(hot, "export_state", "the continuous export (its watermark lives in the hot store)")
    await hot.save_export_state(destination, key, runs, to_us(utc_now()))  # type: ignore[attr-defined]


async def destinations(storage: StorageBackend) -> list[tuple[str, Key, int]]:
    """Every destination's (key, watermark, runs taken); ``[]`` before any export or when
    the store keeps no export state."""
    hot = unwrap(storage)
    if not has(hot, "export_state"):
        return []
    return list(await hot.export_states())  # type: ignore[attr-defined]

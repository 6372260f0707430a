"""The archive guard of ``vacuum``: retention that keeps every day not archived yet.

With ``MAGSAG_STORAGE_ARCHIVE_ENABLED=true`` (docs/operations.md, "The vacuum guard"),
:func:`guarded_vacuum` asks the hot store's :class:`~magsag.backends.tiering.protocol.TierSource`
which of the days vacuum would delete are not covered by finished tiering claims
(:meth:`~magsag.backends.tiering.protocol.TierSource.unarchived_days`) and keeps those.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from magsag.backends.tiering.protocol import tier_source
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.tiering.destination import dest_key

if TYPE_CHECKING:
    from magsag.backends.base import StorageBackend
    from magsag.lakehouse.settings import StorageSettings


async def guarded_vacuum(
    storage: StorageBackend,
    settings: StorageSettings,
    *,
    hot_days: int | None = None,
    max_disk_mb: float | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """``vacuum`` that, with ``archive_enabled``, keeps every day not archived yet.

    A day counts as archived when finished claims to ``MAGSAG_STORAGE_ARCHIVE_DESTINATION``
    (to any destination, the lake included, when that is unset) cover every row vacuum
    would delete from it. Kept days are listed in ``refused_days``.
    """
    hot_days = settings.hot_days if hot_days is None else hot_days
    if not settings.archive_enabled:
        return await storage.vacuum(hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=dry_run, now=now)
    dest = dest_key(open_lake(settings.archive_destination, settings)) if settings.archive_destination else None
    plan = await storage.vacuum(hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=True, now=now)
    src = tier_source(storage)
    try:
        days = [date.fromisoformat(str(d)[:10]) for d in plan.get("days") or []]
        refused = await src.unarchived_days(days, dest=dest)
    finally:
        await src.close()
    result = await storage.vacuum(
        hot_days=hot_days, max_disk_mb=max_disk_mb, dry_run=dry_run, now=now, keep_days=refused
    )
    result["refused_days"] = [d.isoformat() for d in refused]
    result["archive_destination"] = dest
    return result

"""A custom backend (named by dotted path) whose reads raise an unexpected exception."""

from __future__ import annotations

from typing import Any

from magsag.backends.sqlite.store import SQLiteStorageBackend


class BoomBackend(SQLiteStorageBackend):
    @classmethod
    def from_settings(cls, settings: Any) -> BoomBackend:
        return cls(db_path=settings.db_path)

    async def list_runs(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise RuntimeError("the custom store fell over")

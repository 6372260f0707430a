"""``magsag.storage.backends.sqlite.SQLiteStorageBackend`` (defined in :mod:`magsag.backends.sqlite.store`)."""

from magsag.backends.sqlite.store import SQLiteStorageBackend

__all__ = ["SQLiteStorageBackend"]

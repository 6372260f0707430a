"""``magsag.storage.backends.sqlite.SQLiteStorageBackend`` (defined in :mod:`backends.sqlite`)."""

from backends.sqlite import SQLiteStorageBackend

__all__ = ["SQLiteStorageBackend"]

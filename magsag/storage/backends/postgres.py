"""``magsag.storage.backends.postgres.PostgresStorageBackend`` (defined in :mod:`backends.postgres`)."""

from backends.postgres import PostgresStorageBackend

__all__ = ["PostgresStorageBackend"]

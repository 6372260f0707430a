"""``magsag.storage.backends.postgres.PostgresStorageBackend`` (defined in :mod:`magsag.backends.postgres.store`)."""

from magsag.backends.postgres.store import PostgresStorageBackend

__all__ = ["PostgresStorageBackend"]

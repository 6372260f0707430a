"""``from magsag.storage.base import StorageBackend, StorageCapabilities`` (defined in :mod:`backends.base`)."""

from backends.base import StorageBackend, StorageCapabilities

__all__ = ["StorageBackend", "StorageCapabilities"]

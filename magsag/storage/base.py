"""``from magsag.storage.base import StorageBackend, StorageCapabilities`` (defined in :mod:`magsag.backends.base`)."""

from magsag.backends.base import StorageBackend, StorageCapabilities

__all__ = ["StorageBackend", "StorageCapabilities"]

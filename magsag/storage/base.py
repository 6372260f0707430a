"""``from magsag.storage.base import StorageBackend, StorageCapabilities`` (defined in :mod:`magsag.backends.base`)."""

from magsag.backends.base import HOT_STORE, StorageBackend, StorageCapabilities, Window

__all__ = ["HOT_STORE", "StorageBackend", "StorageCapabilities", "Window"]

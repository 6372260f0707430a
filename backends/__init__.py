"""Hot stores behind one contract (``StorageBackend``) and the canonical schema they share."""

from magsag.backends.base import StorageBackend, StorageCapabilities
from magsag.backends.errors import StorageError

__all__ = ["StorageBackend", "StorageCapabilities", "StorageError"]

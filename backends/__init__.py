"""Hot stores behind one contract (``StorageBackend``) and the canonical schema they share."""

from backends.base import StorageBackend, StorageCapabilities
from backends.errors import StorageError

__all__ = ["StorageBackend", "StorageCapabilities", "StorageError"]

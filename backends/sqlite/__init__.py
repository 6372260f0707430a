"""The SQLite hot store: the zero-config default (WAL, FTS5, one writer thread, reader pool).

Modules: ``store`` (the :class:`SQLiteStorageBackend`), ``writer`` (its single writer
thread), ``schema`` (DDL, migrations, FTS5), ``tiering`` (its ``TierSource``),
``tier_ledger`` (the ledger's SQL), ``tier_delete`` (deleting tiered rows),
``export_worker`` (reading days out through DuckDB in a child process).
"""

from magsag.backends.sqlite.store import SQLiteStorageBackend

__all__ = ["SQLiteStorageBackend"]

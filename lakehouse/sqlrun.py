"""Running one untrusted query with bounds: rows, time, memory, threads, Ctrl-C.

``data sql`` runs whatever SELECT a user types (``SELECT * FROM range(1e11)``, a
recursive CTE that never ends). :func:`bounded` runs it on a worker thread and streams
the result in record batches, stopping once ``max_rows`` rows are in hand; the calling
thread waits and interrupts the connection (DuckDB's ``interrupt()``) when the statement
timeout passes or Ctrl-C arrives. :func:`limit_resources` sets the connection's
``memory_limit`` (spilling to a private temporary folder beyond it) and ``threads``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import QueryError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

BATCH_ROWS = 65_536


def limit_resources(con: duckdb.DuckDBPyConnection, *, memory_limit: str | None, threads: int | None) -> None:
    """Cap what one query may take from the machine (before the configuration is locked)."""
    from magsag.backends.duckdb_sql import sql_string

    if memory_limit:
        con.execute(f"SET memory_limit = {sql_string(memory_limit)}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")


def bounded(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    max_rows: int | None = None,
    timeout: float | None = None,
) -> tuple[pa.Table, bool]:
    """``(result, truncated)``: at most ``max_rows`` rows (all when None) of ``sql``.

    Raises :class:`QueryError` when ``timeout`` seconds pass (the statement is
    interrupted); Ctrl-C interrupts it too and raises KeyboardInterrupt.
    """
    import pyarrow as pa

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            reader = con.execute(sql).to_arrow_reader(BATCH_ROWS)
            batches: list[pa.RecordBatch] = []
            n = 0
            for batch in reader:
                batches.append(batch)
                n += batch.num_rows
                if max_rows is not None and n > max_rows:
                    box["truncated"] = True
                    break
            table = pa.Table.from_batches(batches, schema=reader.schema)
            box["table"] = table.slice(0, max_rows) if max_rows is not None else table
        except BaseException as exc:
            box["error"] = exc

    worker = threading.Thread(target=work, name="magsag-sql", daemon=True)
    deadline = None if not timeout else time.monotonic() + timeout
    worker.start()
    try:
        while worker.is_alive():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                con.interrupt()
                worker.join(10)
                raise QueryError(
                    f"the query ran longer than {timeout:g} s and was stopped "
                    "(MAGSAG_STORAGE_SQL_TIMEOUT_S sets the limit)"
                )
            worker.join(0.1 if left is None else min(0.1, left))
    except KeyboardInterrupt:
        con.interrupt()
        worker.join(10)
        raise
    if "error" in box:
        raise box["error"]
    return box["table"], bool(box.get("truncated"))

"""Rows of the canonical schema to Arrow, and back: the exchange format between tiers.

Hot stores hold timestamps as integer microseconds and JSON as text; these helpers turn
row tuples in :data:`~magsag.backends.schema.EVENT_COLUMNS` / :data:`~magsag.backends.schema.RUN_COLUMNS`
order into Arrow tables of the canonical schemas (and the reverse for reloads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from magsag.backends import jsontext
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, event_arrow_schema, run_arrow_schema

if TYPE_CHECKING:
    import pyarrow as pa

_EVENT_TS = EVENT_COLUMNS.index("ts")
_RUN_TS = (RUN_COLUMNS.index("started_at"), RUN_COLUMNS.index("ended_at"))
_RUN_TAGS = RUN_COLUMNS.index("tags")


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def events_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Event rows (``ts`` as int microseconds, payload as JSON text) as a canonical Arrow table."""
    import pyarrow as pa

    schema = event_arrow_schema()
    cols = _columns(rows, len(EVENT_COLUMNS))
    arrays = []
    for i, f in enumerate(schema):
        if i == _EVENT_TS:
            arrays.append(pa.array(cols[i], pa.int64()).cast(f.type))
        else:
            arrays.append(pa.array(cols[i], f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def runs_table(rows: Sequence[Sequence[Any]]) -> pa.Table:
    """Run rows (times as int microseconds, metrics JSON text, tags JSON text or list)."""
    import pyarrow as pa

    schema = run_arrow_schema()
    cols = _columns(rows, len(RUN_COLUMNS))
    arrays = []
    for i, f in enumerate(schema):
        values = cols[i]
        if i in _RUN_TS:
            arrays.append(pa.array(values, pa.int64()).cast(f.type))
        elif i == _RUN_TAGS:
            arrays.append(pa.array([jsontext.loads(v) if isinstance(v, str) else v for v in values], f.type))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def event_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """The reverse of :func:`events_table`: row tuples with ``ts`` as int microseconds."""
    import pyarrow as pa

    table = table.select(list(EVENT_COLUMNS))
    cols = []
    for i, name in enumerate(EVENT_COLUMNS):
        col = table.column(name)
        cols.append(col.cast(pa.int64()).to_pylist() if i == _EVENT_TS else col.to_pylist())
    return list(zip(*cols, strict=True))


def run_rows(table: pa.Table) -> list[tuple[Any, ...]]:
    """The reverse of :func:`runs_table`: times as int microseconds, tags as JSON text."""
    import pyarrow as pa

    table = table.select(list(RUN_COLUMNS))
    cols = []
    for i, name in enumerate(RUN_COLUMNS):
        col = table.column(name)
        if i in _RUN_TS:
            cols.append(col.cast(pa.int64()).to_pylist())
        elif i == _RUN_TAGS:
            cols.append([jsontext.tags_text(v or []) for v in col.to_pylist()])
        else:
            cols.append(col.to_pylist())
    return list(zip(*cols, strict=True))

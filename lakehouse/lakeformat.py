"""The lake's file format: sort order, Parquet settings, canonical input, staged-file records.

See docs/lake.md. :func:`conform` turns any Arrow batch with the canonical column names
into the canonical schema (or says why it cannot); :func:`parquet_options` are the
writer settings of every lake file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from magsag.backends import jsontext
from magsag.backends.errors import ValidationError
from magsag.backends.schema import event_arrow_schema, run_arrow_schema
from magsag.lakehouse import layout

# The order rows are written in (the tiering export and compaction both use it): files
# compress and prune well when the rows of one agent and one run sit together.
SORT_KEYS: dict[str, tuple[str, ...]] = {
    layout.EVENTS: ("agent_slug", "run_id", "ts", "event_id"),
    layout.RUNS: ("agent_slug", "started_at", "run_id"),
}
TS_COLUMN = {layout.EVENTS: "ts", layout.RUNS: "started_at"}
KEY_COLUMNS: dict[str, tuple[str, ...]] = {layout.EVENTS: ("event_id", "ts"), layout.RUNS: ("run_id",)}
# Nearly unique columns gain nothing from a dictionary (zstd does better on them).
_NO_DICTIONARY = {
    layout.EVENTS: {"event_id", "ts", "payload"},
    layout.RUNS: {"run_id", "started_at", "ended_at", "metrics"},
}


def arrow_schema(dataset: str) -> pa.Schema:
    return event_arrow_schema() if layout.check_dataset(dataset) == layout.EVENTS else run_arrow_schema()


# Events files may end with one more column: each event's vector (docs/search.md). Its model
# and dimension are recorded in the file's key-value metadata under EMBEDDING_META.
EMBEDDING = "embedding"
EMBEDDING_META = b"magsag.embedding"


def with_embedding(schema: pa.Schema, model: str, dim: int) -> pa.Schema:
    """``schema`` + a nullable ``embedding`` column (``fixed_size_list<float32>[dim]``) and its metadata."""
    meta = dict(schema.metadata or {})
    meta[EMBEDDING_META] = jsontext.dumps({"model": model, "dim": int(dim)}).encode()
    return schema.append(pa.field(EMBEDDING, pa.list_(pa.float32(), int(dim)))).with_metadata(meta)


def embedding_info(schema: pa.Schema) -> tuple[str, int] | None:
    """(model, dim) of a file's ``embedding`` column, or None when it has none."""
    raw = (schema.metadata or {}).get(EMBEDDING_META)
    if raw is None or EMBEDDING not in schema.names:
        return None
    d = jsontext.loads(raw)
    return str(d["model"]), int(d["dim"])


def parquet_options(dataset: str) -> dict[str, Any]:
    """Keyword arguments of ``pq.ParquetWriter`` for a dataset's files."""
    schema = arrow_schema(dataset)
    return {
        "compression": "zstd",
        "use_dictionary": [n for n in schema.names if n not in _NO_DICTIONARY[dataset]],
        "write_statistics": True,
        "sorting_columns": [pq.SortingColumn(schema.get_field_index(c)) for c in SORT_KEYS[dataset]],
        "store_schema": True,
        # list items keep Arrow's name ("item"): files read back with exactly the canonical
        # schema; every engine reads the 3-level list either way (Parquet's compatibility rules)
        "use_compliant_nested_type": False,
    }


@dataclass(frozen=True)
class StagedFile:
    """A file a writer finished: where it is staged, where it goes, what it holds."""

    dataset: str
    day: date
    job_id: str
    seq: int
    staging_rel: str  # lake-relative path, under layout.staging_dir(job_id)
    final_rel: str  # layout.data_path(dataset, day, job_id, seq)
    rows: int
    bytes: int
    checksum: str  # "sha256:<hex>" of the bytes written
    min_ts: str | None  # ISO UTC of ts (events) / started_at (runs)
    max_ts: str | None

    def to_json(self) -> str:
        """For a job ledger: :meth:`from_json` gives the same record back."""
        d = asdict(self)
        d["day"] = self.day.isoformat()
        return jsontext.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StagedFile:
        d = jsontext.loads(text)
        d["day"] = date.fromisoformat(d["day"])
        return cls(**d)


# ---------------------------------------------------------------- checking stored files


def _same_kind(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a stored column of type ``got`` holds what the canonical ``want`` means."""
    if got.equals(want):
        return True
    t = pa.types
    if t.is_string(want) or t.is_large_string(want):
        return t.is_string(got) or t.is_large_string(got)
    if t.is_timestamp(want):
        return t.is_timestamp(got) and (got.tz is None) == (want.tz is None)
    if t.is_integer(want):
        return t.is_integer(got)
    if t.is_floating(want):
        return t.is_floating(got)
    if t.is_list(want) or t.is_large_list(want):
        return (t.is_list(got) or t.is_large_list(got)) and _same_kind(got.value_type, want.value_type)
    return False


def schema_problem(schema: pa.Schema, dataset: str) -> str | None:
    """What keeps a stored file's ``schema`` from being a ``dataset`` file (None: nothing).

    Every canonical column must be there with its type (string widths, timestamp units,
    integer widths and list field names may differ); a missing column would read as
    NULLs and a retyped one as garbage.
    """
    for f in arrow_schema(dataset):
        i = schema.get_field_index(f.name)
        if i < 0:
            return f"lacks the canonical column {f.name}"
        got = schema.field(i).type
        if not _same_kind(got, f.type):
            return f"has column {f.name} as {got}, expected {f.type}"
    return None


# ---------------------------------------------------------------- conforming input


def _parse_tags(col: pa.ChunkedArray | pa.Array, target: pa.DataType) -> pa.Array:
    values = col.to_pylist()
    try:
        return pa.array([jsontext.loads(v) if isinstance(v, str) else v for v in values], target)
    except (ValueError, pa.ArrowException):
        raise ValidationError("runs column tags: not a JSON list of strings") from None


def conform(data: pa.RecordBatch | pa.Table, dataset: str, schema: pa.Schema | None = None) -> pa.Table:
    """``data`` as a table of the dataset's canonical schema (columns picked by name, cast).

    ``schema``: the canonical schema with an ``embedding`` column (:func:`with_embedding`).
    Raises :class:`ValidationError` for unknown columns, missing required columns, values
    that do not cast, or nulls in a required column.
    """
    schema = schema or arrow_schema(dataset)
    table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
    if not isinstance(table, pa.Table):
        raise ValidationError(f"expected an Arrow RecordBatch or Table, got {type(data).__name__}")
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise ValidationError(f"{dataset} data has columns not in the canonical schema: {', '.join(extra)}")
    arrays = []
    for f in schema:
        if f.name not in table.column_names:
            if not f.nullable:
                raise ValidationError(f"{dataset} data lacks the required column {f.name}")
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type != f.type:
            if f.name == "tags" and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                col = _parse_tags(col, f.type)
            else:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                    first = str(exc).splitlines()[0]
                    raise ValidationError(
                        f"{dataset} column {f.name}: cannot cast {col.type} to {f.type} ({first})"
                    ) from None
        if not f.nullable and col.null_count:
            raise ValidationError(f"{dataset} column {f.name} has {col.null_count} null values")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)

"""Writing the lake: one Parquet file per (dataset, day, job, seq), staged, verified, committed.

A :class:`PartitionWriter` streams sorted Arrow batches of one day into a Parquet file
(canonical schema, zstd, dictionary encoding for the repetitive columns, statistics,
row groups sized for scans) while hashing the bytes, then puts the file in the job's
staging area (``_magsag/staging/<job>/...``, never read by anyone). :func:`publish`
reads the staged object back from the store, checks its sha256 and the row count in
its footer against what the writer recorded, moves it to its final name and writes the
manifest entry, which is the commit point. Every step can be repeated: a crash at any
instant leaves a state :func:`publish` (or :func:`discard_staging`) finishes.

Memory stays bounded: a writer holds at most one row group of rows; verification
streams the object in chunks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backends.errors import IntegrityError, NotFoundError, StorageError, ValidationError
from backends.schema import US_PER_DAY, day_start_us, event_arrow_schema, iso_from_us, run_arrow_schema
from lakehouse import layout, manifest
from lakehouse.faults import fault_point
from lakehouse.manifest import ManifestEntry
from lakehouse.objstore import Lake, retry

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
ROW_GROUP_ROWS = 122_880
MAX_BUFFER_BYTES = 96 << 20  # a row group is cut early when its rows hold more than this
UPLOAD_CHUNK = 16 << 20  # multipart part size; files over twice this are sent in parts
_TAIL = 1 << 20  # bytes kept from the end of a read-back to parse the Parquet footer
_READ_CHUNK = 8 << 20


def arrow_schema(dataset: str) -> pa.Schema:
    return event_arrow_schema() if layout.check_dataset(dataset) == layout.EVENTS else run_arrow_schema()


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
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StagedFile:
        d = json.loads(text)
        d["day"] = date.fromisoformat(d["day"])
        return cls(**d)


# ---------------------------------------------------------------- conforming input


def _parse_tags(col: pa.ChunkedArray | pa.Array, target: pa.DataType) -> pa.Array:
    values = col.to_pylist()
    try:
        return pa.array([json.loads(v) if isinstance(v, str) else v for v in values], target)
    except (ValueError, pa.ArrowException):
        raise ValidationError("runs column tags: not a JSON list of strings") from None


def conform(data: pa.RecordBatch | pa.Table, dataset: str) -> pa.Table:
    """``data`` as a table of the dataset's canonical schema (columns picked by name, cast).

    Raises :class:`ValidationError` for unknown columns, missing required columns, values
    that do not cast, or nulls in a required column.
    """
    schema = arrow_schema(dataset)
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


# ------------------------------------------------------------------------ writing


class _HashingSink(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f: io.BufferedWriter) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:  # type: ignore[override]
        mv = memoryview(b)
        self.sha.update(mv)
        self.size += mv.nbytes
        self._f.write(mv)
        return mv.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()


class _Progress:
    """An fsspec callback forwarding uploaded byte counts."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        from fsspec.callbacks import Callback

        outer = fn

        class _CB(Callback):
            def relative_update(self, inc: int = 1) -> None:
                super().relative_update(inc)
                outer(inc)

        self.callback = _CB()


class PartitionWriter:
    """Stream one day of a dataset into one staged Parquet file.

    ``write()`` takes batches already in :data:`SORT_KEYS` order; ``finish()`` closes the
    file, puts it into the staging area and returns the :class:`StagedFile` to
    :func:`publish`; ``abort()`` removes everything it wrote. As a context manager, an
    exception (or leaving the block without ``finish()``) aborts.

    ``progress`` (optional) is called with the number of bytes each upload step sent.
    """

    def __init__(
        self,
        lake: Lake,
        dataset: str,
        day: date,
        job_id: str,
        seq: int = 0,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.lake, self.dataset, self.day, self.job_id, self.seq = lake, layout.check_dataset(dataset), day, job_id, seq
        self.final_rel = layout.data_path(dataset, day, job_id, seq)
        self.staging_rel = f"{layout.staging_dir(job_id)}/{self.final_rel}"
        self.row_group_rows = max(1, int(row_group_rows))
        self._progress = progress
        self._lo = day_start_us(day)
        self._hi = self._lo + US_PER_DAY
        self._ts = TS_COLUMN[dataset]
        self._schema = arrow_schema(dataset)
        self._buf: list[pa.Table] = []
        self._buf_rows = 0
        self._buf_bytes = 0
        self.rows = 0
        self._min: int | None = None
        self._max: int | None = None
        self._state = "open"
        self._uploaded = False
        if lake.is_local:
            self._tmp = lake.path(self.staging_rel) + ".tmp"
            os.makedirs(os.path.dirname(self._tmp), exist_ok=True)
        else:
            fd, self._tmp = tempfile.mkstemp(prefix=f"magsag-{job_id}-", suffix=".parquet")
            os.close(fd)
        try:
            self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish/abort
            self._sink = _HashingSink(self._file)
            self._writer = pq.ParquetWriter(self._sink, self._schema, **parquet_options(dataset))
        except OSError as exc:
            self._cleanup_local()
            raise StorageError(f"cannot write a temporary file for {self.final_rel}: {exc.strerror or exc}") from exc

    # context manager
    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or self._state != "finished":
            self.abort()

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if self._state != "open":
            raise StorageError(f"writer of {self.final_rel} is {self._state}; cannot write")
        table = conform(data, self.dataset)
        if table.num_rows == 0:
            return
        mm = pc.min_max(table.column(self._ts).cast(pa.int64()))
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo < self._lo or hi >= self._hi:
            bad = lo if lo < self._lo else hi
            raise ValidationError(
                f"{self.dataset} row with {self._ts} {iso_from_us(bad)} does not belong in partition "
                f"dt={self.day.isoformat()}"
            )
        self._min = lo if self._min is None else min(self._min, lo)
        self._max = hi if self._max is None else max(self._max, hi)
        self.rows += table.num_rows
        self._buf.append(table)
        self._buf_rows += table.num_rows
        self._buf_bytes += table.nbytes
        if self._buf_rows >= self.row_group_rows or self._buf_bytes >= MAX_BUFFER_BYTES:
            self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        if not self._buf:
            return
        table = pa.concat_tables(self._buf)
        n = table.num_rows if final else (table.num_rows // self.row_group_rows) * self.row_group_rows
        if n == 0:  # cut early: the buffered rows are big
            n = table.num_rows
        self._writer.write_table(table.slice(0, n), row_group_size=self.row_group_rows)
        rest = table.slice(n)
        self._buf = [rest] if rest.num_rows else []
        self._buf_rows = rest.num_rows
        self._buf_bytes = rest.nbytes if rest.num_rows else 0

    def finish(self) -> StagedFile:
        """Close the file, put it into the staging area, and describe it."""
        if self._state != "open":
            raise StorageError(f"writer of {self.final_rel} is {self._state}; cannot finish")
        try:
            self._flush(final=True)
            self._writer.close()
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write {self.final_rel}: {exc.strerror or exc}") from exc
        except BaseException:
            self.abort()
            raise
        staged = StagedFile(
            dataset=self.dataset,
            day=self.day,
            job_id=self.job_id,
            seq=self.seq,
            staging_rel=self.staging_rel,
            final_rel=self.final_rel,
            rows=self.rows,
            bytes=self._sink.size,
            checksum="sha256:" + self._sink.sha.hexdigest(),
            min_ts=iso_from_us(self._min),
            max_ts=iso_from_us(self._max),
        )
        try:
            self._upload()
        except BaseException:
            self.abort()
            raise
        self._state = "finished"
        return staged

    def _upload(self) -> None:
        target = self.lake.path(self.staging_rel)
        if self.lake.is_local:
            os.replace(self._tmp, target)
            self._uploaded = True
            return
        kwargs: dict[str, Any] = {}
        if self.lake.protocol == "s3":
            kwargs["chunksize"] = UPLOAD_CHUNK
        if self._progress is not None:
            kwargs["callback"] = _Progress(self._progress).callback
        self._uploaded = True  # a failed upload may leave a partial object: abort removes it
        retry(self.lake, f"uploading {self.staging_rel}", self.lake.fs.put_file, self._tmp, target, **kwargs)
        self._cleanup_local()

    def _cleanup_local(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def abort(self) -> None:
        """Remove the temporary and the staged file; never raises."""
        if self._state == "aborted":
            return
        self._state = "aborted"
        for close in (getattr(self, "_writer", None), getattr(self, "_file", None)):
            try:
                if close is not None:
                    close.close()
            except Exception:
                pass
        self._cleanup_local()
        if self._uploaded:
            try:
                if self.lake.is_local:
                    os.unlink(self.lake.path(self.staging_rel))
                else:
                    self.lake.fs.rm_file(self.lake.path(self.staging_rel))
            except Exception:
                pass
        self._buf = []


# ---------------------------------------------------------------------- publishing


@dataclass(frozen=True)
class _ReadBack:
    size: int
    checksum: str
    rows: int | None


def _read_back(lake: Lake, rel: str) -> _ReadBack:
    """sha256, size and footer row count of a stored object, streamed from the store."""

    def read() -> _ReadBack:
        sha = hashlib.sha256()
        size = 0
        tail = b""
        with lake.fs.open(lake.path(rel), "rb", block_size=_READ_CHUNK) as f:
            while block := f.read(_READ_CHUNK):
                sha.update(block)
                size += len(block)
                tail = (tail + block)[-_TAIL:]
        return _ReadBack(size, "sha256:" + sha.hexdigest(), _footer_rows(lake, rel, tail))

    return retry(lake, f"reading back {rel}", read)


def _footer_rows(lake: Lake, rel: str, tail: bytes) -> int | None:
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        return None
    footer = int.from_bytes(tail[-8:-4], "little")
    try:
        if footer + 8 <= len(tail):
            return pq.read_metadata(pa.BufferReader(tail[-(footer + 8) :])).num_rows
        with lake.fs.open(lake.path(rel), "rb") as f:
            return pq.read_metadata(f).num_rows
    except (pa.ArrowException, OSError):
        return None


def _check(lake: Lake, rel: str, staged: StagedFile, what: str) -> None:
    """Raise IntegrityError unless the object at ``rel`` is exactly what ``staged`` records."""
    got = _read_back(lake, rel)
    if got.size != staged.bytes or got.checksum != staged.checksum:
        raise IntegrityError(
            f"{what} {rel} does not match what job {staged.job_id} wrote "
            f"({got.size} bytes sha256 {got.checksum[7:19]}..., expected {staged.bytes} bytes "
            f"sha256 {staged.checksum[7:19]}...); nothing committed"
        )
    if got.rows != staged.rows:
        raise IntegrityError(
            f"{what} {rel} holds {got.rows} rows by its Parquet footer, expected {staged.rows}; nothing committed"
        )


def _exists(lake: Lake, rel: str) -> bool:
    path = lake.path(rel)
    if lake.is_local:
        return os.path.exists(path)
    lake.fs.invalidate_cache(path)
    return bool(retry(lake, f"checking {rel}", lake.fs.exists, path))


def _move(lake: Lake, src: str, dst: str, size: int) -> None:
    """Put ``src`` at ``dst``: an atomic rename on local disk, a server-side copy elsewhere."""
    if lake.is_local:
        os.makedirs(os.path.dirname(lake.path(dst)), exist_ok=True)
        try:
            os.replace(lake.path(src), lake.path(dst))
        except OSError as exc:
            raise StorageError(f"cannot move {src} to {dst}: {exc.strerror or exc}") from exc
        return
    retry(lake, f"copying {src} to {dst}", lake.fs.cp_file, lake.path(src), lake.path(dst))
    lake.fs.invalidate_cache(lake.path(dst))
    info = retry(lake, f"checking {dst}", lake.fs.info, lake.path(dst))
    if int(info.get("size", -1)) != size:
        raise IntegrityError(f"copy of {src} to {dst} has {info.get('size')} bytes, expected {size}; nothing committed")


def _remove(lake: Lake, rel: str) -> bool:
    """Delete one object; True if it existed. Missing is fine."""
    path = lake.path(rel)
    if lake.is_local:
        try:
            os.unlink(path)
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete {rel}: {exc.strerror or exc}") from exc
    try:
        retry(lake, f"deleting {rel}", lake.fs.rm_file, path)
    except NotFoundError:
        return False
    lake.fs.invalidate_cache(path)
    return True


def _prune_local_dirs(lake: Lake, rel: str, stop: str) -> None:
    """Remove empty local folders from ``rel``'s parent up to (and including) ``stop``."""
    if not lake.is_local:
        return
    d = os.path.dirname(lake.path(rel))
    top = lake.path(stop)
    while d.startswith(top):
        try:
            os.rmdir(d)
        except OSError:
            return
        d = os.path.dirname(d)


def _read_entry(lake: Lake, rel: str) -> ManifestEntry | None:
    path = lake.path(layout.manifest_path(rel))
    if not lake.is_local:
        lake.fs.invalidate_cache(path)
    try:
        raw = retry(lake, f"reading the manifest entry of {rel}", lake.fs.cat_file, path)
    except NotFoundError:
        return None
    return ManifestEntry.from_json(raw)


def _discard_staged(lake: Lake, staged: StagedFile) -> None:
    _remove(lake, staged.staging_rel)
    _prune_local_dirs(lake, staged.staging_rel, layout.staging_dir(staged.job_id))


def publish(
    lake: Lake, staged: StagedFile, *, replaces: Iterable[str] = (), job_id: str | None = None
) -> ManifestEntry:
    """Verify a staged file from the store, move it to its final name, commit its entry.

    The manifest entry is the commit point; the staged copy is deleted after it.
    Idempotent and resumable: an existing entry is returned as is; a final file without
    an entry (a crash after the move) is verified against ``staged`` and committed, or
    replaced by the staged file when it is some other leftover. Raises
    :class:`IntegrityError` when the stored bytes or rows differ from what was written;
    nothing is committed then.

    ``replaces`` (compaction) lists the files the new one supersedes; ``job_id`` is
    recorded in the entry instead of ``staged.job_id`` when given.
    """
    existing = _read_entry(lake, staged.final_rel)
    if existing is None:  # committed, then merged away by a compaction before this rerun?
        existing = _replaced_by(lake, staged.final_rel)
    if existing is not None:
        _discard_staged(lake, staged)
        return existing
    if _exists(lake, staged.final_rel):
        try:
            _check(lake, staged.final_rel, staged, "data file")
        except IntegrityError:
            if not _exists(lake, staged.staging_rel):
                raise
            _check(lake, staged.staging_rel, staged, "staged file")  # an old leftover: replace it
            _move(lake, staged.staging_rel, staged.final_rel, staged.bytes)
    else:
        if not _exists(lake, staged.staging_rel):
            raise NotFoundError(
                f"staged file {staged.staging_rel} of job {staged.job_id} is missing and "
                f"{staged.final_rel} was never committed; write the partition again"
            )
        _check(lake, staged.staging_rel, staged, "staged file")
        fault_point("publish.verified")
        _move(lake, staged.staging_rel, staged.final_rel, staged.bytes)
    fault_point("publish.moved")
    entry = ManifestEntry(
        dataset=staged.dataset,
        dt=staged.day.isoformat(),
        path=staged.final_rel,
        rows=staged.rows,
        bytes=staged.bytes,
        min_ts=staged.min_ts,
        max_ts=staged.max_ts,
        checksum=staged.checksum,
        job_id=job_id or staged.job_id,
        committed_at=manifest.now_iso(),
        replaces=tuple(replaces),
    )
    retry(lake, f"committing {staged.final_rel}", manifest.write_entry, lake, entry)
    fault_point("publish.committed")
    _discard_staged(lake, staged)
    return entry


def committed_entry(lake: Lake, rel: str) -> ManifestEntry | None:
    """The entry that holds ``rel``'s rows now, or None if ``rel`` was never committed.

    That is ``rel``'s own entry, or, once compaction merged ``rel`` away, the live entry
    of the merged file (whose ``replaces`` names ``rel``).
    """
    own = _read_entry(lake, rel)
    return _replaced_by(lake, rel) or own


def _replaced_by(lake: Lake, rel: str) -> ManifestEntry | None:
    dataset, day = layout.parse_partition(rel)
    entries = retry(lake, f"reading the manifest of {layout.partition_dir(dataset, day)}", _entries, lake, dataset, day)
    live = manifest.live(entries)
    return next((e for e in live if rel in e.replaces), None)


def _entries(lake: Lake, dataset: str, day: date) -> list[ManifestEntry]:
    if not lake.is_local:
        lake.fs.invalidate_cache(lake.path(layout.manifest_dir(dataset, day)))
    return manifest.read_entries(lake, dataset, day)


def list_files(lake: Lake, rel: str) -> list[str]:
    """Lake-relative paths of every file (not folder) under ``rel``; [] if there is none."""
    base = lake.path(rel)
    if not lake.is_local:
        lake.fs.invalidate_cache(base)
    try:
        found = retry(lake, f"listing {rel}", lake.fs.find, base, detail=True)
    except NotFoundError:
        return []
    prefix = lake.root.rstrip("/") + "/"
    out = []
    for path, info in found.items():
        if info.get("type") != "file" or not path.startswith(prefix):
            continue  # object stores may list empty "folders" too
        out.append(path[len(prefix) :])
    return sorted(out)


def discard_staging(lake: Lake, job_id: str) -> int:
    """Delete everything a job left in the staging area; return how many files."""
    rel = layout.staging_dir(job_id)
    n = sum(_remove(lake, f) for f in list_files(lake, rel))
    if lake.is_local:
        shutil.rmtree(lake.path(rel), ignore_errors=True)
    return n


def staged_jobs(lake: Lake) -> list[str]:
    """Job ids that have files in the staging area (leftovers of unfinished jobs)."""
    skip = len(layout.STAGING_DIR) + 1
    return sorted({f[skip:].split("/", 1)[0] for f in list_files(lake, layout.STAGING_DIR)})


def read_keys(lake: Lake, rel: str) -> pa.Table:
    """The keys a committed file holds: ``event_id, ts`` for events, ``run_id`` for runs.

    Follows compaction: when ``rel`` was merged into another file, the keys of that file
    (a superset) are returned. Raises :class:`NotFoundError` if ``rel`` was never committed.
    """
    dataset, _ = layout.parse_partition(rel)
    entry = committed_entry(lake, rel)
    if entry is None:
        raise NotFoundError(f"{rel} is not committed to lake {lake.uri()}")
    cols = list(KEY_COLUMNS[dataset])

    def read() -> pa.Table:
        with lake.fs.open(lake.path(entry.path), "rb") as f:
            return pq.read_table(f, columns=cols)

    return retry(lake, f"reading keys of {entry.path}", read)

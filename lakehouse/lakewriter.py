"""Writing the lake: one Parquet file per (dataset, day, job, seq), staged, verified, committed.

A :class:`PartitionWriter` streams sorted Arrow batches of one day into a Parquet file
(the settings of lakehouse/lakeformat.py) while hashing the bytes, then puts the file in
the job's staging area (``_magsag/staging/<job>/...``, never read by anyone).
:func:`publish` reads the staged object back from the store, checks its sha256 and the
row count in its footer against what the writer recorded, moves it to its final name and
writes the manifest entry, which is the commit point. Every step can be repeated: a crash
at any instant leaves a state :func:`publish` (or :func:`discard_staging`) finishes.

Memory stays bounded: a writer holds at most one row group of rows; verification
streams the object in chunks. Job ids must be unique per run: a file name is never reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from magsag.backends.errors import IntegrityError, NotFoundError, StorageError, ValidationError
from magsag.backends.schema import US_PER_DAY, day_start_us, iso_from_us
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.faults import fault_point
from magsag.lakehouse.lakeformat import (
    KEY_COLUMNS,
    SORT_KEYS,
    TS_COLUMN,
    StagedFile,
    arrow_schema,
    conform,
    parquet_options,
    with_embedding,
)
from magsag.lakehouse.lakestore import (
    discard_staging,
    exists,
    list_files,
    move,
    partition_entries,
    prune_local_dirs,
    read_back,
    read_entry,
    remove,
    staged_jobs,
)
from magsag.lakehouse.manifest import ManifestEntry
from magsag.lakehouse.objstore import Lake, retry

__all__ = [
    "KEY_COLUMNS",
    "MAX_BUFFER_BYTES",
    "ROW_GROUP_ROWS",
    "SORT_KEYS",
    "TS_COLUMN",
    "UPLOAD_CHUNK",
    "PartitionWriter",
    "StagedFile",
    "arrow_schema",
    "committed_entry",
    "conform",
    "discard_staging",
    "list_files",
    "parquet_options",
    "publish",
    "read_keys",
    "staged_jobs",
]

ROW_GROUP_ROWS = 122_880
MAX_BUFFER_BYTES = 96 << 20  # a row group is cut early when its rows hold more than this
UPLOAD_CHUNK = 16 << 20  # multipart part size; files over twice this are sent in parts


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
        embedding: tuple[str, int] | None = None,
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
        if embedding is not None:  # (model, dim): events files with each event's vector (docs/search.md)
            self._schema = with_embedding(self._schema, *embedding)
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
        table = conform(data, self.dataset, self._schema)
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


def _check(lake: Lake, rel: str, staged: StagedFile, what: str) -> None:
    """Raise IntegrityError unless the object at ``rel`` is exactly what ``staged`` records."""
    got = read_back(lake, rel)
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


def _discard_staged(lake: Lake, staged: StagedFile) -> None:
    remove(lake, staged.staging_rel)
    prune_local_dirs(lake, staged.staging_rel, layout.staging_dir(staged.job_id))


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
    existing = read_entry(lake, staged.final_rel)
    if existing is None:  # committed, then merged away by a compaction before this rerun?
        existing = _replaced_by(lake, staged.final_rel)
    if existing is not None:
        _discard_staged(lake, staged)
        return existing
    if exists(lake, staged.final_rel):
        try:
            _check(lake, staged.final_rel, staged, "data file")
        except IntegrityError:
            if not exists(lake, staged.staging_rel):
                raise
            _check(lake, staged.staging_rel, staged, "staged file")  # an old leftover: replace it
            move(lake, staged.staging_rel, staged.final_rel, staged.bytes)
    else:
        if not exists(lake, staged.staging_rel):
            raise NotFoundError(
                f"staged file {staged.staging_rel} of job {staged.job_id} is missing and "
                f"{staged.final_rel} was never committed; write the partition again"
            )
        _check(lake, staged.staging_rel, staged, "staged file")
        fault_point("publish.verified")
        move(lake, staged.staging_rel, staged.final_rel, staged.bytes)
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
    own = read_entry(lake, rel)
    return _replaced_by(lake, rel) or own


def _replaced_by(lake: Lake, rel: str) -> ManifestEntry | None:
    dataset, day = layout.parse_partition(rel)
    live = manifest.live(partition_entries(lake, dataset, day))
    return next((e for e in live if rel in e.replaces), None)


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

"""Store operations of the lake, each retried and mapped to one-line errors (lakehouse/objstore.py).

Reading an object back for verification (size, sha256, Parquet footer rows in one
streamed pass), existence checks, the atomic move into place, deletes, manifest entry
reads, listings that ignore the empty "folders" some object stores report, and the
staging area of jobs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
from magsag.backends.errors import IntegrityError, NotFoundError, StorageError
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.lakeformat import schema_problem
from magsag.lakehouse.manifest import ManifestEntry
from magsag.lakehouse.objstore import Lake, retry

_TAIL = 1 << 20  # bytes kept from the end of a read-back to parse the Parquet footer
_READ_CHUNK = 8 << 20


@dataclass(frozen=True)
class ReadBack:
    size: int
    checksum: str
    rows: int | None


def read_back(lake: Lake, rel: str) -> ReadBack:
    """sha256, size and footer row count of a stored object, streamed from the store."""

    def read() -> ReadBack:
        sha = hashlib.sha256()
        size = 0
        tail = b""
        with lake.fs.open(lake.path(rel), "rb", block_size=_READ_CHUNK) as f:
            while block := f.read(_READ_CHUNK):
                sha.update(block)
                size += len(block)
                tail = (tail + block)[-_TAIL:]
        return ReadBack(size, "sha256:" + sha.hexdigest(), _footer_rows(lake, rel, tail))

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


def check_schema(lake: Lake, rel: str, dataset: str) -> None:
    """Raise :class:`IntegrityError` naming ``rel`` unless its footer has the canonical schema."""

    def read() -> pa.Schema | str:
        with lake.fs.open(lake.path(rel), "rb") as f:
            try:
                return pq.read_schema(f)
            except pa.ArrowException as exc:  # the bytes, not the store: not retried
                return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    schema = retry(lake, f"reading the schema of {rel}", read)
    if isinstance(schema, str):
        raise IntegrityError(f"lake file {rel} is not readable Parquet ({schema}); {REFUSED}")
    problem = schema_problem(schema, dataset)
    if problem:
        raise IntegrityError(f"lake file {rel} {problem}; {REFUSED}")


REFUSED = "refused, nothing changed (restore the file, or run `magsag data compact --repair`)"


def exists(lake: Lake, rel: str) -> bool:
    path = lake.path(rel)
    if lake.is_local:
        return os.path.exists(path)
    lake.fs.invalidate_cache(path)
    return bool(retry(lake, f"checking {rel}", lake.fs.exists, path))


def move(lake: Lake, src: str, dst: str, size: int) -> None:
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


def remove(lake: Lake, rel: str) -> bool:
    """Delete one object; True if it existed. Missing is fine.

    Only ever inside the lake root: ``rel`` must be a normalised relative path
    (:func:`~magsag.lakehouse.layout.check_rel`) and, on local disk, its folder must
    resolve (symbolic links followed) to a folder under the root.
    """
    try:
        layout.check_rel(rel)
    except ValueError as exc:
        raise IntegrityError(f"refusing to delete from lake {lake.uri()}: {exc}") from None
    path = lake.path(rel)
    if lake.is_local:
        root = os.path.realpath(lake.root)
        if not os.path.realpath(os.path.dirname(path)).startswith(root + os.sep):
            raise IntegrityError(f"refusing to delete {rel}: its folder leads outside lake {lake.uri()}")
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


def prune_local_dirs(lake: Lake, rel: str, stop: str) -> None:
    """Remove empty local folders from ``rel``'s parent up to (and including) ``stop``."""
    if not lake.is_local:
        return
    d = os.path.dirname(lake.path(rel))
    top = lake.path(stop)
    while d == top or d.startswith(top + os.sep):
        try:
            os.rmdir(d)
        except OSError:
            return
        d = os.path.dirname(d)


def read_entry(lake: Lake, rel: str) -> ManifestEntry | None:
    path = lake.path(layout.manifest_path(rel))
    if not lake.is_local:
        lake.fs.invalidate_cache(path)
    try:
        raw = retry(lake, f"reading the manifest entry of {rel}", lake.fs.cat_file, path)
    except NotFoundError:
        return None
    return ManifestEntry.from_json(raw, manifest.entry_source(lake, path))


def partition_entries(lake: Lake, dataset: str, day: date) -> list[ManifestEntry]:
    """Every manifest entry of one partition (replaced ones included), read fresh."""
    if not lake.is_local:
        lake.fs.invalidate_cache(lake.path(layout.manifest_dir(dataset, day)))
    where = layout.partition_dir(dataset, day)
    return retry(lake, f"reading the manifest of {where}", manifest.read_entries, lake, dataset, day)


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
    n = sum(remove(lake, f) for f in list_files(lake, rel))
    if lake.is_local:
        shutil.rmtree(lake.path(rel), ignore_errors=True)
    return n


def check_writable(lake: Lake, job_id: str) -> None:
    """Write one small object in the job's staging area and remove it again.

    A job calls this before it claims anything in the hot store: a lake it cannot write
    to (no credentials, a missing bucket or folder, no permission) then fails with one
    line and leaves no claim behind to hold its days.
    """
    rel = f"{layout.staging_dir(job_id)}/probe"
    path = lake.path(rel)

    def put() -> None:
        if lake.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        with lake.fs.open(path, "wb") as f:
            f.write(b"magsag write probe")

    retry(lake, f"writing {rel}", put)
    discard_staging(lake, job_id)


def staged_jobs(lake: Lake) -> list[str]:
    """Job ids that have files in the staging area (leftovers of unfinished jobs)."""
    skip = len(layout.STAGING_DIR) + 1
    return sorted({f[skip:].split("/", 1)[0] for f in list_files(lake, layout.STAGING_DIR)})

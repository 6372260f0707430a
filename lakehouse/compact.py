"""Compaction: merge a partition's small files into one, atomically; finish interrupted merges.

``compact_partition`` merges the live files of one partition that hold fewer than
``target_rows`` rows into one file, rows re-sorted in :data:`~magsag.lakehouse.lakewriter.SORT_KEYS`
order (DuckDB sorts with bounded memory, spilling to a temporary folder). The merged
file is published like any other, with a manifest entry whose ``replaces`` lists the
files it supersedes: that single entry write is the commit. Only then are the old files
and their entries deleted.

Readers going through the manifest see the old files or the new one, never both or
neither. A plain glob may briefly see both while the old files are being deleted.

Crash safety: the merged file's name comes from the fingerprint of its inputs, so a
rerun after a crash rebuilds (or finds) the same file; :func:`recover_partition`, run
first by every compaction, deletes what a committed merge replaced and drops uncommitted
merge leftovers. Killed at any instant, a rerun loses and duplicates no row among live
entries. Compactions of one partition must not run concurrently (the CLI holds the tier
lock); a concurrent change of the inputs is detected before the commit.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from magsag.backends.errors import IntegrityError, LockedError, NotFoundError
from magsag.backends.schema import utc_now
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.faults import fault_point, fault_scope
from magsag.lakehouse.lakeformat import EMBEDDING, SORT_KEYS, StagedFile, embedding_info
from magsag.lakehouse.lakestore import check_schema, discard_staging, partition_entries, remove, staged_jobs
from magsag.lakehouse.lakewriter import PartitionWriter, publish
from magsag.lakehouse.manifest import ManifestEntry
from magsag.lakehouse.objstore import Lake, retry, store_errors

log = logging.getLogger(__name__)

DEFAULT_TARGET_ROWS = 1_000_000  # files with at least this many rows are left alone
COMPACT_PREFIX = "compact-"
DEFAULT_MEMORY_LIMIT = "512MB"
ORPHAN_GRACE = timedelta(hours=24)  # uncommitted files younger than this may belong to a running job


def compaction_job(entries: list[ManifestEntry]) -> str:
    """Deterministic job id of the merge of ``entries`` (names its output and staging)."""
    return COMPACT_PREFIX + manifest.fingerprint(entries)[:16]


def _is_compaction_output(rel: str) -> bool:
    return rel.rsplit("/", 1)[-1].startswith(f"part-{COMPACT_PREFIX}")


def _job_of(rel: str) -> str:
    """``compact-<fp>`` from ``.../part-compact-<fp>-0000.parquet``."""
    return rel.rsplit("/", 1)[-1].removeprefix("part-").rsplit("-", 1)[0]


def _data_files(lake: Lake, dataset: str, day: date) -> list[str]:
    base = lake.path(layout.partition_dir(dataset, day))
    if not lake.is_local:
        lake.fs.invalidate_cache(base)
    try:
        found = retry(lake, f"listing {layout.partition_dir(dataset, day)}", lake.fs.ls, base, detail=False)
    except NotFoundError:
        return []
    rels = [p[len(lake.root) :].lstrip("/") if p.startswith(lake.root) else p for p in found]
    return sorted(r for r in rels if r.endswith(".parquet"))


def recover_partition(lake: Lake, dataset: str, day: date) -> dict[str, int]:
    """Finish or undo an interrupted compaction of one partition.

    Deletes the files (then the entries) that a committed merge replaced, the staging
    leftovers of committed merges, and merged files that were never committed.
    """
    removed_files = removed_entries = orphans = 0
    entries = partition_entries(lake, dataset, day)
    live = manifest.live(entries)
    live_paths = {e.path for e in live}
    for e in sorted(entries, key=lambda e: e.path):
        if e.path in live_paths:
            continue
        removed_files += remove(lake, e.path)
        fault_point("compact.removed_file")
        removed_entries += remove(lake, layout.manifest_path(e.path))
        fault_point("compact.removed_entry")
    committed = {e.path for e in entries}
    for rel in _data_files(lake, dataset, day):
        if rel not in committed and _is_compaction_output(rel):
            orphans += remove(lake, rel)
            fault_point("compact.removed_orphan")
    for e in live:
        if e.replaces and _is_compaction_output(e.path):
            discard_staging(lake, _job_of(e.path))
    return {"removed_files": removed_files, "removed_entries": removed_entries, "orphans": orphans}


def recover(lake: Lake, dataset: str | None = None) -> dict[str, int]:
    """:func:`recover_partition` for every partition, and drop staged merges never published."""
    totals = {"partitions": 0, "removed_files": 0, "removed_entries": 0, "orphans": 0, "staging": 0}
    for ds in (dataset,) if dataset else layout.DATASETS:
        days: set[date] = set()
        for rel in (layout.manifest_dir(ds), layout.check_dataset(ds)):
            base = lake.path(rel)
            if not lake.is_local:
                lake.fs.invalidate_cache(base)
            try:
                found = retry(lake, f"listing {rel}", lake.fs.ls, base, detail=False)
            except NotFoundError:
                continue
            for p in found:
                name = p.rstrip("/").rsplit("/", 1)[-1]
                if name.startswith("dt="):
                    try:
                        days.add(date.fromisoformat(name[3:]))
                    except ValueError:
                        continue
        for day in sorted(days):
            out = recover_partition(lake, ds, day)
            totals["partitions"] += 1
            for k, v in out.items():
                totals[k] += v
    for job in staged_jobs(lake):
        if job.startswith(COMPACT_PREFIX):
            totals["staging"] += discard_staging(lake, job)
    return totals


def _local_inputs(lake: Lake, entries: list[ManifestEntry], tmp: str) -> list[str]:
    """Paths DuckDB can read: the files themselves on local disk, downloaded copies otherwise."""
    if lake.is_local:
        return [lake.path(e.path) for e in entries]
    out = []
    for i, e in enumerate(entries):
        local = os.path.join(tmp, f"in-{i:05d}.parquet")
        retry(lake, f"downloading {e.path}", lake.fs.get_file, lake.path(e.path), local)
        out.append(local)
    return out


def has_embedding(paths: list[str]) -> bool:
    import pyarrow.parquet as pq

    return any(EMBEDDING in pq.read_schema(p).names for p in paths)


def merged_embedding(paths: list[str]) -> tuple[str, int] | None:
    """The one (model, dim) of the inputs' vectors; None if none has them, or two models differ."""
    import pyarrow.parquet as pq

    found = {info for p in paths if (info := embedding_info(pq.read_schema(p))) is not None}
    if len(found) > 1:
        log.warning("compaction drops vectors of mixed models %s; re-embed to restore them", sorted(found))
    return found.pop() if len(found) == 1 else None


def _merge(
    lake: Lake, dataset: str, day: date, entries: list[ManifestEntry], job: str, memory_limit: str
) -> StagedFile:
    import duckdb

    tmp = tempfile.mkdtemp(prefix="magsag-compact-")
    try:
        paths = _local_inputs(lake, entries, tmp)
        con = duckdb.connect(
            config={
                "threads": 2,
                "memory_limit": memory_limit,
                "temp_directory": os.path.join(tmp, "spill"),
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
            }
        )
        try:
            con.execute("SET TimeZone = 'UTC'")
            order = ", ".join(f'"{c}"' for c in SORT_KEYS[dataset])
            files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            embedding = merged_embedding(paths)  # vectors are kept (docs/search.md)
            cols = "* EXCLUDE (embedding)" if embedding is None and has_embedding(paths) else "*"
            reader = con.execute(
                f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false, union_by_name = true) "
                f"ORDER BY {order}"
            ).to_arrow_reader(65_536)
            with PartitionWriter(lake, dataset, day, job, embedding=embedding) as writer:
                for batch in reader:
                    writer.write(batch)
                return writer.finish()
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compact_partition(
    lake: Lake,
    dataset: str,
    day: date,
    *,
    job_id: str | None = None,
    target_rows: int = DEFAULT_TARGET_ROWS,
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
) -> dict[str, Any]:
    """Merge the partition's live files with fewer than ``target_rows`` rows into one file.

    Returns a report: ``status`` (``compacted`` or ``skipped``), files and rows before
    and after, the merged ``path``, and what recovery cleaned up first. ``job_id`` is
    recorded in the merged file's entry (default: the merge's own deterministic id).
    """
    layout.check_dataset(dataset)
    started = time.monotonic()
    with fault_scope("compact"):
        recovered = recover_partition(lake, dataset, day)
        live = manifest.live(partition_entries(lake, dataset, day))
        small = [e for e in live if e.rows < target_rows]
        report: dict[str, Any] = {
            "dataset": dataset,
            "dt": day.isoformat(),
            "status": "skipped",
            "files_before": len(live),
            "files_after": len(live),
            "merged_files": 0,
            "rows": sum(e.rows for e in live),
            "bytes_before": sum(e.bytes for e in live),
            "bytes_after": sum(e.bytes for e in live),
            "path": None,
            "recovered": recovered,
        }
        if len(small) < 2:
            report["seconds"] = round(time.monotonic() - started, 3)
            return report
        for e in small:  # a file missing a column would merge as NULLs and be deleted
            check_schema(lake, e.path, dataset)
        job = compaction_job(small)
        discard_staging(lake, job)
        fault_point("compact.start")
        with store_errors(lake, f"merging {layout.partition_dir(dataset, day)}"):
            staged = _merge(lake, dataset, day, small, job, memory_limit)
        fault_point("compact.staged")
        expected = sum(e.rows for e in small)
        if staged.rows != expected:
            discard_staging(lake, job)
            raise IntegrityError(
                f"merge of {layout.partition_dir(dataset, day)} read {staged.rows} rows, "
                f"the manifest lists {expected}; nothing committed"
            )
        now_live = {e.path for e in manifest.live(partition_entries(lake, dataset, day))}
        if any(e.path not in now_live for e in small):
            discard_staging(lake, job)
            raise LockedError(
                f"{layout.partition_dir(dataset, day)} changed while it was being compacted "
                "(another compaction?); nothing committed, run it again"
            )
        # The merged entry replaces the inputs and, transitively, what they replaced, so
        # committed_entry() can follow a file through several compactions.
        replaces = sorted({e.path for e in small} | {p for e in small for p in e.replaces})
        entry = publish(lake, staged, replaces=replaces, job_id=job_id)
        fault_point("compact.published")
        recover_partition(lake, dataset, day)
    after = manifest.live(partition_entries(lake, dataset, day))
    report.update(
        status="compacted",
        files_after=len(after),
        merged_files=len(small),
        bytes_after=sum(e.bytes for e in after),
        path=entry.path,
        seconds=round(time.monotonic() - started, 3),
    )
    return report


def small_file_partitions(
    lake: Lake, dataset: str | None = None, *, target_rows: int = DEFAULT_TARGET_ROWS, min_files: int = 2
) -> list[dict[str, Any]]:
    """Partitions with at least ``min_files`` live files under ``target_rows`` rows (compaction candidates)."""
    out = []
    for ds in (dataset,) if dataset else layout.DATASETS:
        if not lake.is_local:
            lake.fs.invalidate_cache(lake.path(layout.manifest_dir(ds)))
        parts = retry(lake, f"reading the {ds} manifest", manifest.partitions, lake, ds)
        for day, entries in parts.items():
            small = [e for e in entries if e.rows < target_rows]
            if len(small) >= max(2, min_files):
                out.append(
                    {
                        "dataset": ds,
                        "dt": day.isoformat(),
                        "files": len(entries),
                        "small_files": len(small),
                        "rows": sum(e.rows for e in entries),
                        "bytes": sum(e.bytes for e in entries),
                    }
                )
    return out


def uncommitted_files(lake: Lake, dataset: str | None = None) -> list[str]:
    """Data files of the layout without any manifest entry (leftovers of a crashed job; plain globs see them)."""
    out = []
    for ds in (dataset,) if dataset else layout.DATASETS:
        pattern = lake.path(layout.data_glob(ds))
        if not lake.is_local:
            lake.fs.invalidate_cache(lake.path(ds))
            lake.fs.invalidate_cache(lake.path(layout.manifest_dir(ds)))
        found = retry(lake, f"listing {ds} files", lake.fs.glob, pattern)
        committed = {e.path for e in retry(lake, f"reading the {ds} manifest", manifest.read_entries, lake, ds)}
        for p in sorted(found):
            rel = p[len(lake.root) :].lstrip("/") if p.startswith(lake.root) else p
            try:
                layout.check_data_path(rel)
            except ValueError:
                continue
            if rel not in committed:
                out.append(rel)
    return out


def _modified(info: dict[str, Any]) -> datetime | None:
    """When a listed object was last written (None: the store does not say)."""
    value = info.get("mtime", info.get("LastModified", info.get("last_modified")))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return None


def remove_orphans(lake: Lake, *, grace: timedelta = ORPHAN_GRACE, partition: date | None = None) -> list[str]:
    """Delete data files no manifest entry names that were last written more than ``grace`` ago.

    Such a file is a leftover of a crashed job (or a stray copy): readers that go through
    the manifest never see it, plain globs would count it twice. A file younger than
    ``grace`` may be a job's file between its move and its commit, and is kept. Only a
    lake with a manifest is cleaned (a lake without one is all plain files), and only
    files of the layout (``events|runs/dt=YYYY-MM-DD/<name>.parquet``). Returns what was
    deleted.
    """
    now = utc_now()
    removed = []
    for ds in layout.DATASETS:
        entries = retry(lake, f"reading the {ds} manifest", manifest.read_entries, lake, ds)
        if not entries:
            continue
        committed = {e.path for e in entries} | {p for e in entries for p in e.replaces}
        for rel in uncommitted_files(lake, ds):
            if rel in committed or (partition is not None and layout.check_data_path(rel)[1] != partition):
                continue
            info = retry(lake, f"checking {rel}", lake.fs.info, lake.path(rel))
            when = _modified(info)
            if when is None or now - when < grace:
                continue
            if remove(lake, rel):
                removed.append(rel)
    return removed


def compact_lake(
    lake: Lake, *, partition: date | None = None, job_id: str | None = None, orphan_grace: timedelta = ORPHAN_GRACE
) -> list[dict[str, Any]]:
    """Merge the small files of every partition holding more than one (or of ``partition``),
    after removing uncommitted files older than ``orphan_grace`` (:func:`remove_orphans`)."""
    remove_orphans(lake, grace=orphan_grace, partition=partition)
    out = []
    for p in small_file_partitions(lake):
        day = date.fromisoformat(p["dt"])
        if partition is not None and day != partition:
            continue
        out.append(compact_partition(lake, p["dataset"], day, job_id=job_id))
    return out

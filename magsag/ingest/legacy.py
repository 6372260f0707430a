"""Import legacy ``.runs/agents`` folders (and the cost ledger) into any StorageBackend.

>>> report = await import_legacy(storage, Path(".runs/agents"), costs=[Path(".runs")])  # doctest: +SKIP

Guarantees (see docs/migration.md):

* **Idempotent and incremental.** Event ids are derived from the source records, and
  before writing the importer asks the store which of a run's ids it already holds
  (through the generic ``get_run``/``get_events`` API, so every backend works). A second
  import writes nothing; a run folder that grew writes only its new records.
* **Damage is reported, never fatal.** Each rejected line or file is a
  :class:`~magsag.ingest.legacy_reader.Rejection` (``path:line: reason``); good records
  of the same file and run are still imported.
* **Dry run is exact.** ``dry_run=True`` runs the same code up to the write and
  reports what a real import would add. ``strict=True`` validates everything first and
  writes nothing when anything was rejected.
* **Fast.** Events go to ``append_events`` in large batches; for large imports, worker
  processes parse the next run folders while the store writes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magsag.backends.base import StorageBackend
from magsag.backends.errors import ConfigError, NotFoundError
from magsag.backends.schema import SUCCEEDED, Event, from_us, iso_from_us
from magsag.ingest.legacy_costs import CostRecords, cost_row, cost_sources, read_ledgers
from magsag.ingest.legacy_fields import LEGACY_TAG, UNKNOWN_AGENT, ParsedRun, Row, valid_id
from magsag.ingest.legacy_mapping import parse_run
from magsag.ingest.legacy_messages import COST
from magsag.ingest.legacy_reader import DEFAULT_MAX_LINE_BYTES, Rejection
from magsag.ingest.legacy_report import ImportReport
from magsag.ingest.legacy_worker import Item, ParserPool

DEFAULT_BATCH = 50_000
DEFAULT_KEEP_REJECTIONS = 1000
COSTS_ONLY_TAG = "costs-only"
_LOOKUP_CONCURRENCY = 64
MIN_RUNS_FOR_WORKERS = 200  # below this, starting worker processes costs more than it saves
_CHUNK_RUNS = 50
_CHUNKS_AHEAD = 3
_MAX_CHUNKS_AHEAD = 64

Progress = Callable[[int, int], None]


def default_workers() -> int:
    """Parser processes: one per core beyond the one the store's writer uses (at most 4)."""
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@dataclass
class _RunWrite:
    run_id: str
    slug: str
    parent_run_id: str | None
    status: str
    started_us: int
    ended_us: int | None
    metrics: dict[str, Any]
    tags: list[str]


class LegacyImporter:
    """One import of legacy run folders and cost-ledger files into ``backend``.

    ``workers`` parser processes read and map run folders while the store writes
    (None: :func:`default_workers`; 0: parse in this process). Small imports always parse
    in this process. A run folder whose files have the same sizes and modification times
    as at its last clean import is not read again, unless ``rescan`` is set.
    """

    def __init__(
        self,
        backend: StorageBackend,
        *,
        batch_size: int = DEFAULT_BATCH,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        keep_rejections: int = DEFAULT_KEEP_REJECTIONS,
        workers: int | None = None,
        progress: Progress | None = None,
        min_runs_for_workers: int = MIN_RUNS_FOR_WORKERS,
        rescan: bool = False,
    ):
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        if max_line_bytes < 1:
            raise ConfigError(f"the line size limit must be at least 1 byte, got {max_line_bytes}")
        if workers is not None and workers < 0:
            raise ConfigError(f"workers must be 0 or more, got {workers}")
        self.backend = backend
        self.batch_size = batch_size
        self.max_line_bytes = max_line_bytes
        self.keep_rejections = keep_rejections
        self.workers = default_workers() if workers is None else workers
        self.min_runs_for_workers = min_runs_for_workers
        self.rescan = rescan
        self.progress = progress

    async def run(
        self,
        source: Path | None,
        costs: Sequence[Path] = (),
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> ImportReport:
        entries = scan_source(source) if source is not None else []
        ledgers = _ledger_files(costs)
        if strict:
            report = await _Pass(self, source, entries, ledgers, dry_run=True, strict=True).execute()
            if not report.ok:
                report.aborted = f"--strict: {report.rejected} record(s) rejected, nothing written"
                report.dry_run = dry_run
                return report
            if dry_run:
                return report
        return await _Pass(self, source, entries, ledgers, dry_run=dry_run, strict=strict).execute()


async def import_legacy(
    backend: StorageBackend,
    source: Path | str | None,
    *,
    costs: Iterable[Path | str] = (),
    dry_run: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    workers: int | None = None,
    rescan: bool = False,
) -> ImportReport:
    """Import the run folders under ``source`` and the cost ledgers ``costs`` (see module doc)."""
    importer = LegacyImporter(
        backend,
        batch_size=batch_size,
        max_line_bytes=max_line_bytes,
        workers=workers,
        progress=progress,
        rescan=rescan,
    )
    return await importer.run(
        Path(source) if source is not None else None, [Path(c) for c in costs], dry_run=dry_run, strict=strict
    )


def scan_source(source: Path) -> list[tuple[str, Path | None, str | None]]:
    """(run id, folder, None) for each run folder; (name, None, reason) for entries that are not.

    Hidden entries (``.DS_Store``, ``.tmp``) are ignored. Raises NotFoundError / ConfigError
    when ``source`` itself is unusable.
    """
    if not source.exists():
        raise NotFoundError(f"legacy runs folder {source} does not exist (set MAGSAG_RUNS_BASE_DIR or pass SOURCE)")
    if not source.is_dir():
        raise ConfigError(f"legacy runs source {source} is not a folder")
    try:
        with os.scandir(source) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise ConfigError(f"cannot list {source}: {exc.strerror or exc}") from None
    out: list[tuple[str, Path | None, str | None]] = []
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            out.append((str(source / name), None, "not a run folder"))
        elif valid_id(name) is None:
            out.append((str(source / name), None, "folder name is not a usable run id"))
        else:
            out.append((name, source / name, None))
    return out


def _ledger_files(costs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in costs:
        found = cost_sources(path)
        if not found:
            raise NotFoundError(f"no cost ledger at {path} (expected costs.jsonl or costs.db)")
        files.extend(p for p in found if p not in files)
    return files


class _Pass:
    """One pass over the input: parse, compare with the store, and (unless dry) write."""

    def __init__(
        self,
        importer: LegacyImporter,
        source: Path | None,
        entries: list[tuple[str, Path | None, str | None]],
        ledgers: list[Path],
        *,
        dry_run: bool,
        strict: bool,
    ):
        self.imp = importer
        self.backend = importer.backend
        self.entries = entries
        self.ledgers = ledgers
        self.dry_run = dry_run
        self.report = ImportReport(
            source=str(source) if source is not None else None,
            costs=[str(p) for p in ledgers],
            dry_run=dry_run,
            strict=strict,
        )
        self.existing: dict[str, dict[str, Any]] = {}
        self.slugs: dict[str, str] = {}
        self.batch: list[Event] = []
        self.run_writes: list[_RunWrite] = []

    # ------------------------------------------------------------------ driver
    async def execute(self) -> ImportReport:
        started = time.perf_counter()
        report = self.report
        report.runs_found = len(self.entries)
        for name, path, reason in self.entries:
            if path is None:
                self._skip(name, reason or "not a run folder")
        cost_records = read_ledgers(self.ledgers, self.imp.max_line_bytes, self._reject)
        run_ids = [run_id for run_id, path, _ in self.entries if path is not None]
        await self._load_existing(run_ids + sorted(cost_records))
        runs = [(str(path), run_id, self._fingerprint(run_id)) for run_id, path, _ in self.entries if path is not None]
        done = 0
        parsed_runs = self._parsed(runs)
        try:
            async for parsed in parsed_runs:
                await self._take_run(parsed)
                done += 1
                if self.imp.progress is not None:
                    self.imp.progress(done, len(runs))
        finally:
            await parsed_runs.aclose()  # stops the worker processes, also on errors
        await self._take_costs(cost_records)
        await self._flush()
        report.seconds = time.perf_counter() - started
        return report

    def _fingerprint(self, run_id: str) -> dict[str, list[int]] | None:
        """The fingerprint stored by the last import of this run, if it may be trusted:
        the import saw no damage, and --rescan was not asked for."""
        if self.imp.rescan or run_id not in self.existing:
            return None
        ledger = (self.existing[run_id].get("metrics") or {}).get("legacy_import")
        if not isinstance(ledger, dict) or ledger.get("rejected") != 0 or not isinstance(ledger.get("files"), dict):
            return None
        return ledger["files"]

    async def _parsed(self, runs: list[Item]) -> AsyncIterator[ParsedRun]:
        """Parsed runs, in order; by worker processes for large imports.

        While this coroutine waits for a write, the workers parse the next chunks, so
        parsing and writing overlap (see :mod:`magsag.ingest.legacy_worker`).
        """
        max_line = self.imp.max_line_bytes
        pool = None
        if self.imp.workers > 0 and len(runs) >= self.imp.min_runs_for_workers:
            pool = ParserPool(self.imp.workers, max_line)
            if not await pool.start():
                pool = None
        if pool is None:
            for path, run_id, known in runs:
                yield parse_run(path, run_id, max_line, known)
            return
        chunks = [runs[i : i + _CHUNK_RUNS] for i in range(0, len(runs), _CHUNK_RUNS)]
        pending: deque[asyncio.Future[list[ParsedRun]]] = deque()
        # Keep enough chunks in flight to cover more than one write batch, so the workers
        # never idle while this process waits for the store.
        least = _CHUNKS_AHEAD * self.imp.workers
        ahead, rows_seen, chunks_seen = least, 0, 0
        try:
            for i in range(len(chunks)):
                while len(pending) < ahead and i + len(pending) < len(chunks):
                    pending.append(asyncio.ensure_future(pool.parse(chunks[i + len(pending)])))
                parsed_chunk = await pending.popleft()
                rows_seen += sum(len(p.rows) for p in parsed_chunk)
                chunks_seen += 1
                per_chunk = max(1, rows_seen // chunks_seen)
                ahead = min(_MAX_CHUNKS_AHEAD, max(least, 2 * self.imp.batch_size // per_chunk))
                for parsed in parsed_chunk:
                    yield parsed
        finally:
            for fut in pending:
                fut.cancel()
            await pool.close()

    # ------------------------------------------------------------------ store
    async def _load_existing(self, run_ids: list[str]) -> None:
        """Fetch the stored record of every run this import touches (one lookup per run)."""
        unique = list(dict.fromkeys(run_ids))
        step = _LOOKUP_CONCURRENCY * 16
        for i in range(0, len(unique), step):
            chunk = unique[i : i + step]
            found = await asyncio.gather(*(self.backend.get_run(r) for r in chunk))
            for run_id, rec in zip(chunk, found, strict=True):
                if rec is not None:
                    self.existing[run_id] = rec

    async def _stored_ids(self, run_id: str, event_type: str | None = None) -> set[str]:
        if run_id not in self.existing:
            return set()  # appending to an unknown run creates it: no run, no events
        return {e["event_id"] async for e in self.backend.get_events(run_id, event_type=event_type)}

    # ------------------------------------------------------------------- runs
    def _reject(self, rejections: Iterable[Rejection]) -> None:
        for r in rejections:
            self.report.rejected += 1
            if len(self.report.rejections) < self.imp.keep_rejections:
                self.report.rejections.append(r)

    def _skip(self, name: str, reason: str) -> None:
        self.report.runs_skipped += 1
        if len(self.report.skipped) < self.imp.keep_rejections:
            self.report.skipped.append((name, reason))

    async def _take_run(self, run: ParsedRun) -> None:
        report = self.report
        self._reject(run.rejections)
        report.duplicates += run.duplicates
        if run.unchanged:  # same files as at the last import: everything is stored already
            ledger = self.existing[run.run_id]["metrics"]["legacy_import"]
            report.runs_present += 1
            report.events_present += sum(n for n in (ledger.get("records") or {}).values() if isinstance(n, int))
            self.slugs[run.run_id] = self.existing[run.run_id]["agent_slug"]
            return
        if not run.importable:
            bad = len(run.rejections)
            self._skip(run.path, f"no valid records ({bad} rejected)" if bad else "no records")
            return
        self.slugs[run.run_id] = run.slug
        stored = await self._stored_ids(run.run_id)
        rows = [r for r in run.rows if r[0] not in stored] if stored else run.rows
        report.events_present += len(run.rows) - len(rows)
        assert run.started_us is not None
        write = _RunWrite(
            run.run_id, run.slug, run.parent_run_id, run.status, run.started_us, run.ended_us, run.metrics, []
        )
        changed, fingerprint_changed = self._run_changed(write)
        if rows or changed:
            report.runs_imported += 1
        else:
            report.runs_present += 1
        if changed or fingerprint_changed:
            self.run_writes.append(write)
        self._add(rows)
        if len(self.batch) >= self.imp.batch_size:
            await self._flush()

    def _add(self, rows: list[Row]) -> None:
        by_type = self.report.events_by_type
        batch = self.batch
        for r in rows:
            by_type[r[4]] += 1
            batch.append(Event(*r))

    def _run_changed(self, w: _RunWrite) -> tuple[bool, bool]:
        """Fill ``w.tags``; tell whether the stored run differs from what the files say, and
        whether only the files' fingerprint (sizes, modification times) changed."""
        old = self.existing.get(w.run_id)
        old_tags = list(old.get("tags") or []) if old else []
        tags = [t for t in old_tags if t != COSTS_ONLY_TAG]  # the run folder is here now
        if LEGACY_TAG not in tags:
            tags.append(LEGACY_TAG)
        w.tags = tags
        if old is None:
            return True, True
        stored = old.get("metrics") or {}
        new_ledger, old_ledger = w.metrics.get("legacy_import") or {}, stored.get("legacy_import") or {}
        changed = (
            old.get("agent_slug") != w.slug
            or (w.parent_run_id is not None and old.get("parent_run_id") != w.parent_run_id)
            or old.get("status") != w.status
            or old.get("started_at") != iso_from_us(w.started_us)
            or old.get("ended_at") != iso_from_us(w.ended_us)
            or any(stored.get(k) != v for k, v in w.metrics.items() if k != "legacy_import")
            or _without_files(new_ledger) != _without_files(old_ledger)
            or tags != old_tags
        )
        return changed, new_ledger.get("files") != old_ledger.get("files")

    # ------------------------------------------------------------------ costs
    async def _take_costs(self, by_run: CostRecords) -> None:
        report = self.report
        for run_id in sorted(by_run):
            stored = await self._stored_ids(run_id, COST)
            fallback = self.slugs.get(run_id) or (self.existing.get(run_id) or {}).get("agent_slug")
            seen: set[str] = set()
            rows: list[Row] = []
            cost = 0.0
            for agent, ts_us, payload in by_run[run_id]:
                row = cost_row(run_id, agent or fallback or UNKNOWN_AGENT, ts_us, payload)
                if row[0] in seen:
                    report.duplicates += 1
                    continue
                seen.add(row[0])
                if row[0] in stored:
                    report.events_present += 1
                    continue
                rows.append(row)
                if isinstance(payload.get("cost_usd"), (int, float)):
                    cost += payload["cost_usd"]
            if not rows:
                continue
            self._add(rows)
            if run_id not in self.slugs and run_id not in self.existing:
                # Known only from the ledger (its folder is gone): the ledger records finished
                # LLM calls, so the run is recorded as finished, tagged so it can be told apart.
                times = [r[1] for r in rows]
                report.cost_runs_created += 1
                self.run_writes.append(
                    _RunWrite(
                        run_id,
                        rows[0][3],
                        None,
                        SUCCEEDED,
                        min(times),
                        max(times),
                        {"cost_usd": round(cost, 10), "legacy_import": {"records": {"costs": len(rows)}}},
                        [LEGACY_TAG, COSTS_ONLY_TAG],
                    )
                )
            if len(self.batch) >= self.imp.batch_size:
                await self._flush()

    # ------------------------------------------------------------------ writes
    async def _flush(self) -> None:
        """Write the pending batch: events first (one ``append_events`` call), then run records.

        The write is awaited here, not overlapped with parsing in this thread: a CPU-bound
        thread starves SQLite's writer thread of the GIL. Overlap comes from the worker
        processes instead (see :meth:`_parsed`).
        """
        events, runs = self.batch, self.run_writes
        self.batch, self.run_writes = [], []
        if self.dry_run or not (events or runs):
            return
        if events:
            self.report.events_written += await self.backend.append_events(events)
        if runs:
            await self.backend.upsert_runs([self._run_record(w) for w in runs])

    def _run_record(self, w: _RunWrite) -> dict[str, Any]:
        """The whole run record to store: what the files say, merged over what is stored
        (metrics keys and tags the files do not mention are kept)."""
        old = self.existing.get(w.run_id) or {}
        return {
            "run_id": w.run_id,
            "agent_slug": w.slug,
            "parent_run_id": w.parent_run_id or old.get("parent_run_id"),
            "status": w.status,
            "started_at": from_us(w.started_us),
            "ended_at": from_us(w.ended_us) if w.ended_us is not None else None,
            "metrics": {**(old.get("metrics") or {}), **w.metrics},
            "tags": w.tags,
        }


def _without_files(ledger: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ledger.items() if k != "files"}

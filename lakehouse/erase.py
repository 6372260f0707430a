"""Erase runs or events everywhere: hot store, lake, archive destinations, ClickHouse.

:func:`erase` (``magsag data delete``, :func:`magsag.storage.delete_runs`) holds the
tiering lock (no tier, archive or compaction job writes meanwhile) and:

1. finishes every erase job an earlier, interrupted run left (steps 4-7 below);
2. plans: what the request selects in the hot store and in every lake it knows (the
   configured lake and every archive destination recorded in the claim ledger), the
   delegated child runs (``parent_run_id``, followed through every tier), and which
   partitions of which lake hold those rows;
3. records the job and its tombstones in the hot store, in one transaction (the commit
   point: from here on the store refuses the erased ids, and a rerun finishes the job);
4. purges the hot store and scrubs it (backends/*/erase.py);
5. rewrites each affected lake partition: the live files' rows minus every tombstoned id,
   sorted, written as one new file whose manifest entry ``replaces`` the old ones (the
   commit: readers through the manifest see old or new, never neither), then the old
   files and entries are deleted (compaction's recovery does this part);
6. deletes the ids in ClickHouse (``ALTER TABLE ... DELETE`` with ``mutations_sync``: the
   parts are rewritten) when a ClickHouse store exists;
7. marks the job done.

Each step is idempotent and repeats against *all* tombstones, so a process killed at any
instant (``MAGSAG_LAKE_FAULT=erase:<k>`` in the tests) is finished by running the delete
again, with or without arguments (``--resume``). ``dry_run`` plans and counts, per tier,
and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from magsag.backends.base import StorageBackend
from magsag.backends.erase import EraseRequest, HotEraser, hot_eraser
from magsag.backends.errors import IntegrityError, LockedError
from magsag.backends.schema import utc_now
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.faults import fault_point, fault_scope
from magsag.lakehouse.lakeformat import SORT_KEYS
from magsag.lakehouse.lakestore import discard_staging, partition_entries, remove
from magsag.lakehouse.lakewriter import PartitionWriter, publish
from magsag.lakehouse.manifest import ManifestEntry
from magsag.lakehouse.objstore import Lake, open_lake, retry, store_errors
from magsag.lakehouse.settings import StorageSettings
from magsag.lakehouse.tiering.destination import dest_key

ERASE_PREFIX = "erase-"
MEMORY_LIMIT = "512MB"
_CH_CHUNK = 2000


# ------------------------------------------------------------------ report


@dataclass
class EraseReport:
    job_ids: list[str] = field(default_factory=list)
    dry_run: bool = False
    resumed: list[str] = field(default_factory=list)
    runs: int = 0  # ids tombstoned by this request (run-level)
    events: int = 0  # ids tombstoned by this request (event-level)
    hot: dict[str, int] = field(default_factory=lambda: {"events": 0, "runs": 0})
    lakes: list[dict[str, Any]] = field(default_factory=list)  # per destination
    clickhouse: dict[str, Any] | None = None
    run_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_ids": self.job_ids,
            "dry_run": self.dry_run,
            "resumed": self.resumed,
            "selected_runs": self.runs,
            "selected_events": self.events,
            "hot": self.hot,
            "lakes": self.lakes,
            "clickhouse": self.clickhouse,
            "run_ids": self.run_ids[:100],
        }

    def tiers(self) -> list[dict[str, Any]]:
        """One row per tier: what was (or, dry run, would be) erased."""
        rows = [{"tier": "hot", "where": "hot store", **self.hot, "partitions": None}]
        for lk in self.lakes:
            rows.append(
                {
                    "tier": lk["role"],
                    "where": lk["dest"],
                    "events": lk["events"],
                    "runs": lk["runs"],
                    "partitions": len(lk["partitions"]),
                }
            )
        if self.clickhouse is not None:
            rows.append({"tier": "clickhouse", "where": self.clickhouse.get("where"), **self.clickhouse["rows"]})
        return rows


# ------------------------------------------------------------ lake reading


def _read(lake: Lake, entry: ManifestEntry, columns: list[str]) -> pa.Table:
    def go() -> pa.Table:
        with lake.fs.open(lake.path(entry.path), "rb") as f:
            return pq.read_table(f, columns=columns)

    return retry(lake, f"reading {entry.path}", go)


def _live(lake: Lake, dataset: str) -> list[ManifestEntry]:
    if not lake.is_local:
        lake.fs.invalidate_cache(lake.path(layout.manifest_dir(dataset)))
    return retry(lake, f"reading the {dataset} manifest", manifest.live_entries, lake, dataset)


def _in_range(day: date, req: EraseRequest) -> bool:
    if req.since and day < req.since.date():
        return False
    return not (req.until and day > req.until.date())


def _ts_us(col: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.cast(col, pa.int64())


def select_in_lake(lake: Lake, req: EraseRequest) -> tuple[set[str], set[str]]:
    """(run ids, event ids) the request selects among the lake's live rows."""
    runs: set[str] = set()
    events: set[str] = set()
    wanted = pa.array(sorted(req.run_ids), pa.string()) if req.run_ids else None
    if req.event_level:
        for e in _live(lake, layout.EVENTS):
            if not _in_range(e.day, req):
                continue
            t = _read(lake, e, ["event_id", "run_id", "agent_slug", "ts", "msg", "payload"])
            mask = pc.or_(
                pc.fill_null(pc.match_substring(t["msg"], req.matching), False),
                pc.fill_null(pc.match_substring(t["payload"], req.matching), False),
            )
            mask = _common_filters(t, mask, req, wanted, "ts")
            events.update(t.filter(mask)["event_id"].to_pylist())
        return runs, events
    for e in _live(lake, layout.RUNS):
        if not _in_range(e.day, req):
            continue
        t = _read(lake, e, ["run_id", "agent_slug", "started_at"])
        mask = _common_filters(t, pa.chunked_array([pa.array([True] * t.num_rows)]), req, wanted, "started_at")
        runs.update(t.filter(mask)["run_id"].to_pylist())
    return runs, events


def _common_filters(t: pa.Table, mask: Any, req: EraseRequest, wanted: pa.Array | None, ts_col: str) -> Any:
    if req.agent:
        mask = pc.and_(mask, pc.equal(t["agent_slug"], req.agent))
    if req.since_us is not None:
        mask = pc.and_(mask, pc.greater_equal(_ts_us(t[ts_col]), req.since_us))
    if req.until_us is not None:
        mask = pc.and_(mask, pc.less(_ts_us(t[ts_col]), req.until_us))
    if wanted is not None:
        mask = pc.and_(mask, pc.is_in(t["run_id"], value_set=wanted))
    return mask


def lake_parents(lake: Lake) -> dict[str, str]:
    """child run id -> parent run id over the lake's live runs."""
    out: dict[str, str] = {}
    for e in _live(lake, layout.RUNS):
        t = _read(lake, e, ["run_id", "parent_run_id"])
        t = t.filter(pc.is_valid(t["parent_run_id"]))
        out.update(zip(t["run_id"].to_pylist(), t["parent_run_id"].to_pylist(), strict=True))
    return out


def _hit_mask(t: pa.Table, dataset: str, runs: pa.Array, events: pa.Array) -> Any:
    mask = pc.is_in(t["run_id"], value_set=runs)
    if dataset == layout.EVENTS:
        mask = pc.or_(mask, pc.is_in(t["event_id"], value_set=events))
    return mask


def lake_hits(lake: Lake, run_ids: set[str], event_ids: set[str]) -> dict[tuple[str, str], int]:
    """(dataset, day) -> rows of these ids in the lake's live files."""
    out: dict[tuple[str, str], int] = {}
    if not run_ids and not event_ids:
        return out
    runs = pa.array(sorted(run_ids), pa.string())
    events = pa.array(sorted(event_ids), pa.string())
    for dataset in layout.DATASETS:
        cols = ["run_id", "event_id"] if dataset == layout.EVENTS else ["run_id"]
        for e in _live(lake, dataset):
            n = pc.sum(pc.cast(_hit_mask(_read(lake, e, cols), dataset, runs, events), pa.int64())).as_py() or 0
            if n:
                out[(dataset, e.dt)] = out.get((dataset, e.dt), 0) + n
    return out


# ------------------------------------------------------------ lake rewrite


def _recover(lake: Lake, dataset: str, day: date) -> None:
    from magsag.lakehouse.compact import recover_partition

    recover_partition(lake, dataset, day)


def _erase_outputs(lake: Lake, dataset: str, day: date) -> list[str]:
    from magsag.lakehouse.lakestore import list_files

    return [
        f
        for f in list_files(lake, layout.partition_dir(dataset, day))
        if f.rsplit("/", 1)[-1].startswith(f"part-{ERASE_PREFIX}") and f.endswith(".parquet")
    ]


def rewrite_partition(lake: Lake, dataset: str, day: date, run_ids: set[str], event_ids: set[str]) -> dict[str, Any]:
    """Rewrite one partition without the given ids (see :func:`rewrite_without`)."""
    tables = {
        "erase_runs": pa.table({"id": pa.array(sorted(run_ids), pa.string())}),
        "erase_events": pa.table({"id": pa.array(sorted(event_ids), pa.string())}),
    }
    cond = "run_id IN (SELECT id FROM erase_runs)"
    if dataset == layout.EVENTS:
        cond += " OR event_id IN (SELECT id FROM erase_events)"
    return rewrite_without(lake, dataset, day, cond, tables)


def rewrite_without(
    lake: Lake, dataset: str, day: date, drop_sql: str, tables: dict[str, pa.Table] | None = None
) -> dict[str, Any]:
    """Rewrite one partition without the rows matching ``drop_sql`` (DuckDB SQL over the
    canonical columns; ``tables`` are registered for it); resumable, a no-op when none match.

    The new file's job id is derived from the live files it replaces and the condition, so
    a rerun after a crash writes (or finds) the same file. Its entry ``replaces`` every live
    file (and what they replaced); the old files and entries are deleted after that commit.
    """
    with fault_scope("erase"):
        _recover(lake, dataset, day)
        live = manifest.live(partition_entries(lake, dataset, day))
        out: dict[str, Any] = {"dataset": dataset, "dt": day.isoformat(), "erased_rows": 0, "rewritten": False}
        if live:
            fp = hashlib.sha256((manifest.fingerprint(live) + drop_sql).encode()).hexdigest()[:16]
            job = ERASE_PREFIX + fp
            discard_staging(lake, job)
            with store_errors(lake, f"rewriting {layout.partition_dir(dataset, day)}"):
                hits, staged = _filter_into(lake, dataset, day, live, job, drop_sql, tables or {})
            out["erased_rows"] = hits
            if staged is not None:
                fault_point("erase.staged")
                total = sum(e.rows for e in live)
                if staged.rows != total - hits:
                    discard_staging(lake, job)
                    raise IntegrityError(
                        f"rewrite of {layout.partition_dir(dataset, day)} kept {staged.rows} rows, expected "
                        f"{total - hits}; nothing committed"
                    )
                now_live = {e.path for e in manifest.live(partition_entries(lake, dataset, day))}
                if {e.path for e in live} != now_live:
                    discard_staging(lake, job)
                    raise LockedError(f"{layout.partition_dir(dataset, day)} changed during the rewrite; run it again")
                replaces = sorted({e.path for e in live} | {p for e in live for p in e.replaces})
                entry = publish(lake, staged, replaces=replaces)
                fault_point("erase.published")
                _recover(lake, dataset, day)
                discard_staging(lake, job)
                out.update(rewritten=True, path=entry.path, rows_after=entry.rows)
        committed = {e.path for e in partition_entries(lake, dataset, day)}
        for rel in _erase_outputs(lake, dataset, day):  # a crashed rewrite's file never committed
            if rel not in committed:
                remove(lake, rel)
    return out


def _filter_into(
    lake: Lake, dataset: str, day: date, live: list[ManifestEntry], job: str, drop_sql: str, tables: dict[str, pa.Table]
) -> tuple[int, Any]:
    """(rows matching ``drop_sql``, the staged file without them, or None when none match)."""
    from magsag.backends.duckdb_ext import new_connection

    tmp = tempfile.mkdtemp(prefix="magsag-erase-")
    try:
        paths = []
        for i, e in enumerate(live):
            if lake.is_local:
                paths.append(lake.path(e.path))
            else:
                local = os.path.join(tmp, f"in-{i:05d}.parquet")
                retry(lake, f"downloading {e.path}", lake.fs.get_file, lake.path(e.path), local)
                paths.append(local)
        con = new_connection(threads=2, config={"memory_limit": MEMORY_LIMIT, "temp_directory": f"{tmp}/spill"})
        try:
            for name, table in tables.items():
                con.register(name, table)
            files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
            src = f"read_parquet([{files}], hive_partitioning = false, union_by_name = true)"
            hits = int(con.execute(f"SELECT count(*) FROM {src} WHERE ({drop_sql})").fetchone()[0])
            if not hits:
                return 0, None
            fault_point("erase.start_partition")
            order = ", ".join(f'"{c}"' for c in SORT_KEYS[dataset])
            reader = con.execute(
                f"SELECT * FROM {src} WHERE NOT coalesce(({drop_sql}), false) ORDER BY {order}"
            ).to_arrow_reader(65_536)
            with PartitionWriter(lake, dataset, day, job) as writer:
                for batch in reader:
                    writer.write(batch)
                return hits, writer.finish()
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------- ClickHouse


def _ch_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _clickhouse_configured(settings: StorageSettings) -> bool:
    return bool(settings.clickhouse_url) or Path(settings.clickhouse_path).is_dir()


def clickhouse_erase(
    settings: StorageSettings, run_ids: set[str], event_ids: set[str], *, dry_run: bool
) -> dict[str, Any] | None:
    """Count (and unless ``dry_run`` delete) the ids in ClickHouse; None when there is none."""
    if not _clickhouse_configured(settings) or not (run_ids or event_ids):
        return None
    from magsag.lakehouse.clickhouse import sql
    from magsag.lakehouse.clickhouse.engines import open_engine
    from magsag.lakehouse.clickhouse.schema import tables

    with open_engine(settings) as engine:
        present = tables(engine)
        out: dict[str, Any] = {"where": engine.describe(), "rows": {"events": 0, "runs": 0}}
        db = engine.database
        for dataset in (sql.EVENTS, sql.RUNS):
            if dataset not in present:
                continue
            conds = [f"run_id IN ({', '.join(map(_ch_str, c))})" for c in _chunks(sorted(run_ids))]
            if dataset == sql.EVENTS:
                conds += [f"event_id IN ({', '.join(map(_ch_str, c))})" for c in _chunks(sorted(event_ids))]
            for cond in conds:
                n = int(engine.value(f"SELECT count() FROM {db}.{dataset} WHERE {cond}") or 0)
                out["rows"][dataset] += n
                if n and not dry_run:
                    engine.command(f"ALTER TABLE {db}.{dataset} DELETE WHERE {cond} SETTINGS mutations_sync = 2")
        return out


def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(ids), _CH_CHUNK):
        yield ids[i : i + _CH_CHUNK]


# ---------------------------------------------------------------- the job


async def destinations(storage: StorageBackend, settings: StorageSettings, lake_url: str | None) -> list[Lake]:
    """The configured lake first, then every other destination the claim ledger names."""
    from magsag.backends.tiering.protocol import tier_source

    main = open_lake(lake_url or settings.lake_url, settings)
    out = [main]
    seen = {dest_key(main)}
    src = tier_source(getattr(storage, "hot", storage))
    try:
        claims = await src.claims()
    finally:
        await src.close()
    for c in claims:
        if c.dest not in seen:
            seen.add(c.dest)
            out.append(open_lake(c.dest, settings))
    return out


async def _expand_children(hot: HotEraser, lakes: list[Lake], roots: set[str]) -> set[str]:
    parent_maps = [await asyncio.to_thread(lake_parents, lk) for lk in lakes]
    found = set(roots)
    frontier = set(roots)
    while frontier:
        nxt = set((await hot.parents(frontier)).keys())
        for pm in parent_maps:
            nxt |= {child for child, parent in pm.items() if parent in frontier}
        frontier = nxt - found
        found |= frontier
    return found


def _job_id(request: dict[str, Any], run_ids: set[str], event_ids: set[str]) -> str:
    h = hashlib.sha256()
    for i in sorted(run_ids):
        h.update(b"r" + i.encode() + b"\0")
    for i in sorted(event_ids):
        h.update(b"e" + i.encode() + b"\0")
    return f"{ERASE_PREFIX}{utc_now():%Y%m%dT%H%M%SZ}-{h.hexdigest()[:10]}"


async def _apply(
    hot: HotEraser, lakes: dict[str, Lake], plan: dict[str, Any], settings: StorageSettings, report: EraseReport
) -> None:
    """Steps 4-6 for one recorded job (every step repeats safely)."""
    events, runs = await hot.purge()
    report.hot["events"] += events
    report.hot["runs"] += runs
    fault_point("erase.hot_purged")
    await hot.scrub()
    fault_point("erase.hot_scrubbed")
    tomb_runs, tomb_events = await hot.tombstones()
    for dest, parts in plan.get("lakes", {}).items():
        lake = lakes.get(dest) or open_lake(dest, settings)
        for key in parts:
            dataset, dt = key.split("/", 1)
            await asyncio.to_thread(rewrite_partition, lake, dataset, date.fromisoformat(dt), tomb_runs, tomb_events)
    fault_point("erase.lakes_done")
    if plan.get("clickhouse"):
        ch = await asyncio.to_thread(clickhouse_erase, settings, tomb_runs, tomb_events, dry_run=False)
        if ch is not None:
            report.clickhouse = ch
    fault_point("erase.clickhouse_done")


async def erase(
    storage: StorageBackend,
    settings: StorageSettings,
    request: EraseRequest | None,
    *,
    dry_run: bool = False,
    lake_url: str | None = None,
    wait: bool = True,
) -> EraseReport:
    """Erase what ``request`` selects from every tier (None: only finish interrupted jobs)."""
    from magsag.backends.tiering.protocol import tier_source

    hot = hot_eraser(storage)
    report = EraseReport(dry_run=dry_run)
    lake_list = await destinations(storage, settings, lake_url)
    lakes = {dest_key(lk): lk for lk in lake_list}
    src = tier_source(getattr(storage, "hot", storage))
    lock = contextlib.nullcontext() if dry_run else src.job_lock(wait=wait)
    try:
        async with _async_cm(lock), _fault_scope_async("erase"):
            if not dry_run:
                for job in await hot.pending():
                    await _apply(hot, lakes, job.plan, settings, report)
                    await hot.set_state(job.job_id, "done")
                    report.resumed.append(job.job_id)
            if request is None:
                return report
            await _plan_and_run(hot, lake_list, lakes, settings, request, report, dry_run=dry_run)
    finally:
        await src.close()
    return report


async def _plan_and_run(
    hot: HotEraser,
    lake_list: list[Lake],
    lakes: dict[str, Lake],
    settings: StorageSettings,
    req: EraseRequest,
    report: EraseReport,
    *,
    dry_run: bool,
) -> None:
    sel = await hot.select(req)
    run_ids, event_ids = set(sel.run_ids), set(sel.event_ids)
    only_ids = not req.event_level and req.run_ids and not (req.agent or req.since or req.until)
    if only_ids:
        run_ids |= set(req.run_ids)  # named runs are erased (and refused later) even if absent
    for lk in lake_list:
        r, e = await asyncio.to_thread(select_in_lake, lk, req)
        run_ids |= r
        event_ids |= e
    if run_ids and req.children:
        run_ids = await _expand_children(hot, lake_list, run_ids)
    report.runs, report.events = len(run_ids), len(event_ids)
    report.run_ids = sorted(run_ids)
    hot_events, hot_runs = await hot.count(run_ids, event_ids)
    plan: dict[str, Any] = {"lakes": {}, "clickhouse": False}
    for lk in lake_list:
        hits = await asyncio.to_thread(lake_hits, lk, run_ids, event_ids)
        key = dest_key(lk)
        plan["lakes"][key] = sorted(f"{ds}/{dt}" for ds, dt in hits)
        report.lakes.append(
            {
                "dest": lk.url,
                "role": "lake" if lk is lake_list[0] else "archive",
                "events": sum(n for (ds, _), n in hits.items() if ds == layout.EVENTS),
                "runs": sum(n for (ds, _), n in hits.items() if ds == layout.RUNS),
                "partitions": plan["lakes"][key],
            }
        )
    ch = await asyncio.to_thread(clickhouse_erase, settings, run_ids, event_ids, dry_run=True)
    plan["clickhouse"] = ch is not None
    report.clickhouse = ch
    report.hot = {"events": hot_events, "runs": hot_runs}
    if dry_run or not (run_ids or event_ids):
        return
    job_id = _job_id(req.as_dict(), run_ids, event_ids)
    await hot.record(job_id, req.as_dict(), plan, run_ids, event_ids)
    report.job_ids.append(job_id)
    fault_point("erase.recorded")
    report.hot = {"events": 0, "runs": 0}
    await _apply(hot, lakes, plan, settings, report)
    await hot.set_state(job_id, "done")
    if ch is not None and report.clickhouse is not None:
        report.clickhouse = ch  # the counts before the delete: what was erased


@contextlib.asynccontextmanager
async def _async_cm(cm: Any) -> Any:
    if hasattr(cm, "__aenter__"):
        async with cm:
            yield
    else:
        with cm:
            yield


@contextlib.asynccontextmanager
async def _fault_scope_async(name: str) -> Any:
    with fault_scope(name):
        yield

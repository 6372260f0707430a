"""Load lake partitions into ClickHouse, idempotently, with a ledger and a row-count check.

The protocol, per partition (one UTC day of ``events`` or ``runs``):

1. **plan** — the manifest's live files for the day give its rows and a
   :func:`~magsag.lakehouse.manifest.fingerprint`; the ledger table says what was loaded last.
   New or changed fingerprints are loaded, current ones skipped (``force`` reloads them).
2. **stage** — the day's files go into a private staging table with the target's exact
   structure: server-side (ClickHouse reads the Parquet itself with ``file()`` or ``s3()``)
   when the engine can reach the lake, else client-side (pyarrow reads, Arrow batches are
   pushed through the client).
3. **check** — the staging table must hold exactly the manifest's rows, all in that day;
   otherwise nothing is swapped and the load stops with :class:`VerificationError`.
4. **swap** — ``ALTER TABLE … REPLACE PARTITION … FROM staging`` replaces the day
   atomically (readers see the old day or the new one, never a mix or a gap), so loading a
   day twice leaves it exactly once.
5. **verify + ledger** — rows in the target's day must equal the manifest's; only then is
   a ledger row (dataset, day, fingerprint, rows, …) written. A crash before that point
   leaves the old ledger row, and the next run loads the day again.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import BackendUnavailable, StorageError
from magsag.backends.schema import event_arrow_schema, run_arrow_schema, utc_now
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import Engine, open_engine
from magsag.lakehouse.clickhouse.schema import ensure_schema, tables
from magsag.lakehouse.objstore import Lake, open_lake

if TYPE_CHECKING:
    from magsag.lakehouse.settings import StorageSettings

SERVER, CLIENT = "server", "client"
BATCH_ROWS = 131_072
Progress = Callable[[int, int, str], None]  # (rows done, rows total, what is loading)


class VerificationError(StorageError):
    """Rows in ClickHouse differ from the lake manifest's; the ledger was not updated."""


@dataclass
class PartitionPlan:
    dataset: str
    day: date
    entries: list[manifest.ManifestEntry] = field(repr=False)
    fingerprint: str
    rows: int
    bytes: int
    action: str  # new | changed | forced | current | expired
    loaded_rows: int | None = None

    @property
    def files(self) -> int:
        return len(self.entries)

    @property
    def to_load(self) -> bool:
        return self.action in ("new", "changed", "forced")

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dt": self.day.isoformat(),
            "action": self.action,
            "files": self.files,
            "rows": self.rows,
            "bytes": self.bytes,
            "loaded_rows": self.loaded_rows,
        }


@dataclass
class LoadReport:
    job_id: str
    engine: str
    database: str
    lake: str
    dry_run: bool
    mode: str | None = None  # server | client (of the loads done), None when nothing loaded
    fallback: str | None = None  # why the server could not read the lake itself
    partitions: list[dict[str, Any]] = field(default_factory=list)
    not_in_lake: list[str] = field(default_factory=list)  # ledger days the lake no longer has
    loaded_partitions: int = 0
    loaded_rows: int = 0
    skipped_partitions: int = 0
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.loaded_rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rows_per_s"] = round(self.rows_per_s, 1)
        d["seconds"] = round(self.seconds, 3)
        return d


# ------------------------------------------------------------------ ledger


def read_ledger(engine: Engine) -> dict[tuple[str, date], tuple[str, int, str]]:
    """(dataset, day) -> (fingerprint, rows, loaded_at) of the latest load of each partition."""
    out: dict[tuple[str, date], tuple[str, int, str]] = {}
    if sql.LEDGER not in tables(engine):
        return out  # nothing loaded yet (no init either)
    for dataset, day, fp, rows, loaded_at in engine.rows(sql.ledger_current(engine.database)):
        out[(dataset, date.fromisoformat(day))] = (fp, int(rows), loaded_at)
    return out


def _record(engine: Engine, p: PartitionPlan, mode: str, lake: Lake, job_id: str) -> None:
    engine.command(
        sql.ledger_insert(engine.database),
        {
            "dataset": p.dataset,
            "day": p.day.isoformat(),
            "fingerprint": p.fingerprint,
            "rows": p.rows,
            "files": p.files,
            "bytes": p.bytes,
            "mode": mode,
            "lake": lake.url,
            "job": job_id,
        },
    )


# -------------------------------------------------------------------- plan


def _lake_partitions(lake: Lake, dataset: str) -> dict[date, list[manifest.ManifestEntry]]:
    try:
        return manifest.partitions(lake, dataset)
    except StorageError:
        raise
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BackendUnavailable(f"cannot read the manifest of lake {lake.url}: {text}") from None


def plan_load(
    engine: Engine,
    lake: Lake,
    *,
    since: date | None = None,
    until: date | None = None,
    days: Iterable[date] | None = None,
    datasets: Iterable[str] = sql.DATASETS,
    force: bool = False,
    ttl_days: int | None = None,
    today: date | None = None,
) -> tuple[list[PartitionPlan], list[str]]:
    """What a load would do, per partition, and the ledger's days missing from the lake.

    ``since`` is inclusive, ``until`` exclusive; ``days`` restricts to those days.
    """
    ledger = read_ledger(engine)
    wanted = set(days) if days is not None else None
    today = today or utc_now().date()
    plans: list[PartitionPlan] = []
    seen: set[tuple[str, date]] = set()
    for dataset in datasets:
        for day, entries in _lake_partitions(lake, dataset).items():
            seen.add((dataset, day))
            if (since and day < since) or (until and day >= until) or (wanted is not None and day not in wanted):
                continue
            fp = manifest.fingerprint(entries)
            known = ledger.get((dataset, day))
            if ttl_days and day + timedelta(days=ttl_days + 1) <= today:
                action = "expired"
            elif known is None:
                action = "new"
            elif known[0] != fp:
                action = "changed"
            else:
                action = "forced" if force else "current"
            plans.append(
                PartitionPlan(
                    dataset=dataset,
                    day=day,
                    entries=entries,
                    fingerprint=fp,
                    rows=sum(e.rows for e in entries),
                    bytes=sum(e.bytes for e in entries),
                    action=action,
                    loaded_rows=known[1] if known else None,
                )
            )
    gone = [f"{ds}/dt={d.isoformat()}" for (ds, d) in sorted(ledger) if ds in datasets and (ds, d) not in seen]
    return plans, gone


# ----------------------------------------------------------------- sources


def _server_source(engine: Engine, lake: Lake, p: PartitionPlan, s3_endpoint: str | None) -> str | None:
    """SQL table function reading the partition's live files, or None if the engine cannot reach them."""
    rel_dir = layout.partition_dir(p.dataset, p.day)
    names = [e.path.rsplit("/", 1)[-1] for e in p.entries]
    if any(ch in lake.root for ch in "{}*?,'\\"):
        return None  # the path would be read as a glob
    if lake.is_local:
        return sql.file_source(lake.path(rel_dir), names, p.dataset) if engine.reads_local_files else None
    if lake.protocol == "s3" and lake.s3 is not None:
        endpoint = s3_endpoint or lake.s3.endpoint_url
        path = lake.path(rel_dir)
        if endpoint:
            base = f"{endpoint.rstrip('/')}/{path}"
        else:
            bucket, _, key = path.partition("/")
            base = f"https://{bucket}.s3.{lake.s3.region}.amazonaws.com/{key}"
        creds = lake.s3.credentials()
        if creds is None:
            return sql.s3_source(base, names, p.dataset, None, None)
        return sql.s3_source(base, names, p.dataset, creds.key, creds.secret, creds.token)
    return None


def load_schema(dataset: str) -> Any:
    """The Arrow schema of client-side loads: canonical, then the extra columns (events: ``embedding``)."""
    import pyarrow as pa

    schema = event_arrow_schema() if dataset == sql.EVENTS else run_arrow_schema()
    if sql.EXTRA_COLUMNS[dataset]:
        schema = schema.append(pa.field("embedding", pa.list_(pa.float32())))
    return schema


def _client_batches(lake: Lake, p: PartitionPlan, progress: Callable[[int], None]) -> Iterator[Any]:
    """Arrow batches of the partition's live files, in the canonical schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = load_schema(p.dataset)
    for e in p.entries:
        try:
            with lake.fs.open(lake.path(e.path), "rb") as f:
                pf = pq.ParquetFile(f)
                names = [n for n in schema.names if n in pf.schema_arrow.names]
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=names):
                    t = pa.Table.from_batches([batch])
                    if "embedding" in schema.names and "embedding" not in names:  # a file without vectors
                        t = t.append_column("embedding", pa.array([[]] * t.num_rows, pa.list_(pa.float32())))
                    t = t.select(schema.names).cast(schema)
                    for b in t.to_batches():
                        yield b
                        progress(b.num_rows)
        except (OSError, pa.ArrowInvalid) as exc:
            raise BackendUnavailable(f"cannot read {e.path} from lake {lake.url}: {exc}") from None


# -------------------------------------------------------------------- load


class _Loader:
    def __init__(self, engine: Engine, lake: Lake, job_id: str, progress: Progress | None, total: int):
        self.engine, self.lake, self.job_id = engine, lake, job_id
        self.progress = progress or (lambda done, total, what: None)
        self.total, self.done = total, 0
        self.stages: dict[str, str] = {}

    def stage(self, dataset: str) -> str:
        name = self.stages.get(dataset)
        db = self.engine.database
        if name is None:
            name = f"{sql.STAGE_PREFIX}{dataset}_{self.job_id}"
            self.engine.command(sql.drop_table(db, name))
            self.engine.command(sql.create_stage(db, name, dataset))
            self.stages[dataset] = name
        else:
            self.engine.command(sql.truncate(db, name))
        return name

    def drop_stages(self) -> None:
        for name in self.stages.values():
            with contextlib.suppress(StorageError):  # else left for the next run's cleanup
                self.engine.command(sql.drop_table(self.engine.database, name))

    def tick(self, rows: int, what: str) -> None:
        self.done += rows
        self.progress(self.done, self.total, what)

    def load(self, p: PartitionPlan, source: str | None) -> str:
        """Load one partition (server-side when ``source`` is given); return the mode used."""
        db, what = self.engine.database, f"{p.dataset}/dt={p.day.isoformat()}"
        stage = self.stage(p.dataset)
        if p.rows:
            if source is not None:
                self.engine.command(sql.insert_select(db, stage, p.dataset, source))
                self.tick(p.rows, what)
            else:
                schema = load_schema(p.dataset)
                batches = _client_batches(self.lake, p, lambda n: self.tick(n, what))
                self.engine.insert_arrow(stage, batches, schema)
        staged = {day: int(n) for day, n in self.engine.rows(sql.rows_by_day(db, stage, p.dataset))}
        expected = {p.day.isoformat(): p.rows} if p.rows else {}
        if staged != expected:
            raise VerificationError(
                f"{what}: the lake manifest lists {p.rows} rows in {p.files} files but {sum(staged.values())} rows "
                f"were read{_other_days(staged, p.day)}{_missing_hint(staged, p.rows)}; "
                "ClickHouse left unchanged, ledger not updated"
            )
        if p.rows:
            self.engine.command(sql.replace_partition(db, p.dataset, stage, p.day))
        else:
            self.engine.command(sql.drop_partition(db, p.dataset, p.day))
        now = int(self.engine.value(sql.rows_in_partition(db, p.dataset), {"day": p.day.isoformat()}) or 0)
        if now != p.rows:
            raise VerificationError(
                f"{what}: ClickHouse holds {now} rows after the load, the lake manifest {p.rows}; "
                "ledger not updated (the next load retries this partition)"
            )
        return SERVER if source is not None else CLIENT


def _other_days(staged: dict[str, int], day: date) -> str:
    others = sorted(d for d in staged if d != day.isoformat())
    outside = sum(staged[d] for d in others)
    return f" ({outside} rows outside the day, in {', '.join(others[:3])})" if others else ""


def _missing_hint(staged: dict[str, int], rows: int) -> str:
    return " (a listed file missing or truncated?)" if sum(staged.values()) < rows else ""


def _cleanup_stale_stages(engine: Engine) -> None:
    rows = engine.rows(sql.stale_stages(engine.database), {"hours": 24})
    for (name,) in rows:
        engine.command(sql.drop_table(engine.database, name))


def load_lake(
    engine: Engine,
    lake: Lake,
    *,
    since: date | None = None,
    until: date | None = None,
    days: Iterable[date] | None = None,
    datasets: Iterable[str] = sql.DATASETS,
    dry_run: bool = False,
    client_side: bool = False,
    force: bool = False,
    ttl_days: int | None = None,
    s3_endpoint_url: str | None = None,
    progress: Progress | None = None,
    on_plan: Callable[[list[PartitionPlan]], None] | None = None,
) -> LoadReport:
    """Load new and changed lake partitions into ClickHouse (see the module docstring)."""
    started = time.perf_counter()
    datasets = tuple(datasets)
    for ds in datasets:
        layout.check_dataset(ds)
    job_id = uuid.uuid4().hex[:12]
    report = LoadReport(job_id, engine.describe(), engine.database, lake.url, dry_run)
    ensure_schema(engine, ttl_days)
    plans, report.not_in_lake = plan_load(
        engine, lake, since=since, until=until, days=days, datasets=datasets, force=force, ttl_days=ttl_days
    )
    report.partitions = [p.summary() for p in plans]
    todo = [p for p in plans if p.to_load]
    report.skipped_partitions = len(plans) - len(todo)
    if on_plan is not None:
        on_plan(plans)
    if dry_run or not todo:
        report.seconds = time.perf_counter() - started
        return report

    _cleanup_stale_stages(engine)
    use_server = not client_side
    if use_server:
        use_server, report.fallback = _probe(engine, lake, todo, s3_endpoint_url)
    loader = _Loader(engine, lake, job_id, progress, sum(p.rows for p in todo))
    modes: set[str] = set()
    try:
        _load_all(loader, plans, report, modes, use_server, s3_endpoint_url)
    except StorageError as exc:
        text = str(exc)
        for secret in lake.s3.known_secrets() if lake.s3 else []:
            text = text.replace(secret, "***")  # the s3() statement carries the lake's credentials
        if text != str(exc):
            raise type(exc)(text) from None
        raise
    finally:
        loader.drop_stages()
        report.seconds = time.perf_counter() - started
        report.mode = "+".join(sorted(modes)) or None
    return report


def _load_all(
    loader: _Loader,
    plans: list[PartitionPlan],
    report: LoadReport,
    modes: set[str],
    use_server: bool,
    s3_endpoint_url: str | None,
) -> None:
    engine, lake = loader.engine, loader.lake
    for p, summary in zip(plans, report.partitions, strict=True):
        if not p.to_load:
            continue
        source = _server_source(engine, lake, p, s3_endpoint_url) if use_server else None
        mode = loader.load(p, source)
        _record(engine, p, mode, lake, loader.job_id)
        modes.add(mode)
        summary["loaded"] = True
        summary["mode"] = mode
        report.loaded_partitions += 1
        report.loaded_rows += p.rows


def _probe(engine: Engine, lake: Lake, todo: list[PartitionPlan], s3_endpoint: str | None) -> tuple[bool, str | None]:
    """Can the engine read the lake itself? (One file's Parquet footer, failing fast.)"""
    first = next((p for p in todo if p.entries), None)
    if first is None:
        return True, None
    one = PartitionPlan(first.dataset, first.day, first.entries[:1], "", 0, 0, "probe")
    source = _server_source(engine, lake, one, s3_endpoint)
    if source is None:
        where = "a local folder" if lake.is_local else f"a {lake.protocol}:// lake"
        return False, f"{engine.describe()} cannot read {where} itself"
    try:
        engine.rows(sql.probe_source(source))
    except StorageError as exc:
        text = str(exc)
        for secret in lake.s3.known_secrets() if lake.s3 else []:
            text = text.replace(secret, "***")
        text = text[:200]
        return False, f"{engine.describe()} cannot read the lake itself ({text})"
    return True, None


def load_from_settings(settings: StorageSettings, lake_url: str | None = None, **options: Any) -> LoadReport:
    """Open the configured lake and ClickHouse engine, :func:`load_lake`, close."""
    lake = open_lake(lake_url or settings.lake_url, settings)
    with open_engine(settings) as engine:
        return load_lake(
            engine,
            lake,
            ttl_days=settings.clickhouse_ttl_days,
            s3_endpoint_url=settings.clickhouse_s3_endpoint_url,
            **options,
        )

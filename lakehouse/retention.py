"""Retention policies: how long each kind of data is kept, per tier (docs/governance.md).

Rules come from ``MAGSAG_STORAGE_RETENTION``: either a small rule list, or the path of a
TOML file. The rule list is rules separated by ``;`` (or new lines), each
``FILTERS=AGE``::

    level:debug=7d; type:mcp.call=90d; tier:lake=400d; agent:scratch-sag&tier:hot=2d

``FILTERS`` is ``*`` or ``key:value`` pairs joined by ``&`` with the keys ``type``,
``level``, ``agent`` and ``tier`` (``hot``, ``lake``, ``clickhouse`` or ``all``, the
default); ``AGE`` a duration (``90s``, ``30m``, ``12h``, ``7d``, ``2w``). The TOML file
holds the same rules as tables::

    [[rule]]
    level = "debug"
    keep = "7d"

    [[rule]]
    tier = "lake"
    keep = "400d"

Every rule is a deletion rule on its own: the events it matches in its tier(s) whose
``ts`` is older than ``now - AGE`` are deleted; rules never extend one another. A rule
without ``type``/``level`` covers whole runs, so run records started before the cutoff
(of that agent, if given) go too. "now" is :func:`magsag.backends.schema.utc_now`.

Applying (:func:`apply_retention`, ``magsag data retention apply``, and the scheduled
``magsag data tier --every`` after each run) holds the tiering lock, then per tier:

* hot store: one ``DELETE`` per rule (``backends/*/erase.py`` helpers: the SQLite
  full-text entries first; PostgreSQL rows by ``ts``);
* lake and every archive destination: a day whose every row is expired under a
  whole-run rule is dropped as a manifest operation (its entries, then its files:
  O(files), no data read); a day where only some rows expire is rewritten through the
  erase path's partition rewrite (new file replacing the old ones in one manifest entry);
* ClickHouse: ``ALTER TABLE ... DELETE`` with the same conditions (the load ledger then
  reloads nothing back: the lake no longer has those rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from magsag.backends.base import StorageBackend
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.durations import parse_duration
from magsag.backends.errors import ConfigError
from magsag.backends.schema import US_PER_DAY, day_start_us, to_us, utc_now
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.erase import _clickhouse_configured, _live, destinations, rewrite_without
from magsag.lakehouse.faults import fault_point
from magsag.lakehouse.lakestore import list_files, partition_entries, prune_local_dirs, remove
from magsag.lakehouse.objstore import Lake
from magsag.lakehouse.settings import StorageSettings

TIERS = ("hot", "lake", "clickhouse")
KEYS = ("type", "level", "agent", "tier")


@dataclass(frozen=True)
class Rule:
    keep: timedelta
    keep_text: str
    type: str | None = None
    level: str | None = None
    agent: str | None = None
    tier: str = "all"

    @property
    def whole_runs(self) -> bool:
        """No type/level filter: whole runs expire (their records too)."""
        return self.type is None and self.level is None

    def applies_to(self, tier: str) -> bool:
        return self.tier in ("all", tier)

    def cutoff(self, now: datetime) -> datetime:
        return now - self.keep

    def describe(self) -> str:
        parts = [f"{k}:{getattr(self, k)}" for k in ("type", "level", "agent") if getattr(self, k)]
        if self.tier != "all":
            parts.append(f"tier:{self.tier}")
        return f"{'&'.join(parts) or '*'}={self.keep_text}"

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "rule": self.describe(),
            "type": self.type,
            "level": self.level,
            "agent": self.agent,
            "tier": self.tier,
            "keep": self.keep_text,
        }
        if now is not None:
            d["delete_before"] = self.cutoff(now).isoformat().replace("+00:00", "Z")
        return d


def _rule(fields: dict[str, Any], where: str) -> Rule:
    unknown = set(fields) - {*KEYS, "keep"}
    if unknown:
        raise ConfigError(f"retention {where}: unknown key {sorted(unknown)[0]!r} (use type, level, agent, tier, keep)")
    keep = fields.get("keep")
    if not isinstance(keep, str) or not keep.strip():
        raise ConfigError(f"retention {where}: needs an age to keep (like 7d)")
    age = parse_duration(keep.strip(), f"retention {where}")
    if age <= timedelta(0):
        raise ConfigError(f"retention {where}: the age must be positive")
    tier = str(fields.get("tier") or "all").strip()
    if tier not in (*TIERS, "all"):
        raise ConfigError(f"retention {where}: tier must be one of hot, lake, clickhouse, all (got {tier!r})")
    vals: dict[str, str | None] = {}
    for k in ("type", "level", "agent"):
        v = fields.get(k)
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(f"retention {where}: {k} must be a non-empty string")
        vals[k] = v.strip() if isinstance(v, str) else None
    return Rule(keep=age, keep_text=keep.strip(), tier=tier, **vals)


def parse_rules(text: str | None) -> list[Rule]:
    """Rules from the ``MAGSAG_STORAGE_RETENTION`` syntax, or from a TOML file it names."""
    if text is None or not text.strip():
        return []
    raw = text.strip()
    if raw.endswith(".toml") and "=" not in raw:
        return _toml_rules(Path(raw).expanduser())
    rules = []
    for i, item in enumerate(x.strip() for x in raw.replace("\n", ";").split(";")):
        if not item:
            continue
        where = f"rule {i + 1} ({item!r})"
        lhs, eq, rhs = item.rpartition("=")
        if not eq or not lhs.strip():
            raise ConfigError(f"retention {where}: expected FILTERS=AGE, like level:debug=7d or *=400d")
        fields: dict[str, Any] = {"keep": rhs}
        if lhs.strip() != "*":
            for part in lhs.split("&"):
                key, colon, value = part.strip().partition(":")
                if not colon or key not in KEYS:
                    raise ConfigError(f"retention {where}: {part.strip()!r} is not key:value with a key of {KEYS}")
                if key in fields:
                    raise ConfigError(f"retention {where}: {key} given twice")
                fields[key] = value
        rules.append(_rule(fields, where))
    return rules


def _toml_rules(path: Path) -> list[Rule]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"retention file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"retention file {path}: {str(exc).splitlines()[0]}") from None
    items = data.get("rule", [])
    if not isinstance(items, list) or set(data) - {"rule"}:
        raise ConfigError(f"retention file {path}: expected only [[rule]] tables")
    return [_rule(dict(item), f"file {path} rule {i + 1}") for i, item in enumerate(items)]


def rules_from_settings(settings: StorageSettings) -> list[Rule]:
    return parse_rules(getattr(settings, "retention", None))


# ------------------------------------------------------------------ SQL


def _duck_cond(rule: Rule, now: datetime, dataset: str) -> str | None:
    """DuckDB condition of the rows ``rule`` expires in a lake ``dataset`` (None: none)."""
    cut = rule.cutoff(now)
    lit = f"TIMESTAMPTZ {sql_string(cut.isoformat())}"
    if dataset == layout.RUNS:
        if not rule.whole_runs:
            return None
        parts = [f"started_at < {lit}"]
    else:
        parts = [f"ts < {lit}"]
        if rule.type:
            parts.append(f"type = {sql_string(rule.type)}")
        if rule.level:
            parts.append(f"level = {sql_string(rule.level)}")
    if rule.agent:
        parts.append(f"agent_slug = {sql_string(rule.agent)}")
    return "(" + " AND ".join(parts) + ")"


def _ch_cond(rule: Rule, now: datetime, dataset: str) -> str | None:
    from magsag.lakehouse.erase import _ch_str

    cut = rule.cutoff(now).strftime("%Y-%m-%d %H:%M:%S.%f")
    if dataset == layout.RUNS:
        if not rule.whole_runs:
            return None
        parts = [f"started_at < toDateTime64({_ch_str(cut)}, 6, 'UTC')"]
    else:
        parts = [f"ts < toDateTime64({_ch_str(cut)}, 6, 'UTC')"]
        if rule.type:
            parts.append(f"type = {_ch_str(rule.type)}")
        if rule.level:
            parts.append(f"level = {_ch_str(rule.level)}")
    if rule.agent:
        parts.append(f"agent_slug = {_ch_str(rule.agent)}")
    return "(" + " AND ".join(parts) + ")"


# ---------------------------------------------------------------- report


@dataclass
class RetentionReport:
    now: str
    dry_run: bool
    rules: list[dict[str, Any]]
    hot: dict[str, int] = field(default_factory=lambda: {"events": 0, "runs": 0})
    lakes: list[dict[str, Any]] = field(default_factory=list)
    clickhouse: dict[str, int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "dry_run": self.dry_run,
            "rules": self.rules,
            "hot": self.hot,
            "lakes": self.lakes,
            "clickhouse": self.clickhouse,
        }


# ------------------------------------------------------------------ lake


def _partition_days(lake: Lake, dataset: str) -> set[date]:
    """Days with manifest entries or data files (a half-dropped day still shows)."""
    days = {e.day for e in _live(lake, dataset)}
    for rel in list_files(lake, dataset):
        try:
            days.add(layout.parse_partition(rel)[1])
        except ValueError:
            continue
    return days


def drop_day(lake: Lake, dataset: str, day: date) -> int:
    """Drop a whole partition: its manifest entries first (readers stop seeing it), then its files."""
    entries = partition_entries(lake, dataset, day)
    for e in entries:
        remove(lake, layout.manifest_path(e.path))
        fault_point("retention.removed_entry")
    files = list_files(lake, layout.partition_dir(dataset, day))
    for rel in files:
        remove(lake, rel)
        prune_local_dirs(lake, rel, dataset)
    return len(files)


def apply_lake(lake: Lake, rules: list[Rule], now: datetime, *, dry_run: bool) -> dict[str, Any]:
    """The lake's part: whole days dropped, partial days rewritten; counts per dataset."""
    out: dict[str, Any] = {"dest": lake.url, "dropped_days": [], "rewritten": [], "events": 0, "runs": 0}
    lake_rules = [r for r in rules if r.applies_to("lake")]
    if not lake_rules:
        return out
    for dataset in layout.DATASETS:
        conds = [c for r in lake_rules if (c := _duck_cond(r, now, dataset))]
        if not conds:
            continue
        whole = [r for r in lake_rules if r.whole_runs and not r.agent]
        live_by_day: dict[date, list[Any]] = {}
        for e in _live(lake, dataset):
            live_by_day.setdefault(e.day, []).append(e)
        for day in sorted(_partition_days(lake, dataset)):
            day_end = day_start_us(day) + US_PER_DAY
            entries = live_by_day.get(day, [])
            rows = sum(e.rows for e in entries)
            if any(day_end <= to_us(r.cutoff(now)) for r in whole):
                out["dropped_days"].append(f"{dataset}/{day.isoformat()}")
                out[dataset] += rows
                if not dry_run:
                    drop_day(lake, dataset, day)
                continue
            if not entries or day_start_us(day) >= max(to_us(r.cutoff(now)) for r in lake_rules):
                continue  # nothing in this day is old enough for any rule
            drop_sql = " OR ".join(conds)
            if dry_run:
                n = _count(lake, entries, drop_sql)
            else:
                n = rewrite_without(lake, dataset, day, drop_sql)["erased_rows"]
            if n:
                out["rewritten"].append(f"{dataset}/{day.isoformat()}")
                out[dataset] += n
    return out


def _count(lake: Lake, entries: list[Any], drop_sql: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from magsag.backends.duckdb_ext import new_connection

    con = new_connection(threads=1)
    try:
        n = 0
        for e in entries:
            with lake.fs.open(lake.path(e.path), "rb") as f:
                t = pq.read_table(f)
            con.register("t", pa.Table.from_batches(t.to_batches(), t.schema))
            n += int(con.execute(f"SELECT count(*) FROM t WHERE {drop_sql}").fetchone()[0])
            con.unregister("t")
        return n
    finally:
        con.close()


# ------------------------------------------------------------------- hot


async def apply_hot(storage: StorageBackend, rules: list[Rule], now: datetime, *, dry_run: bool) -> dict[str, int]:
    from magsag.backends.erase import hot_eraser

    hot = hot_eraser(storage)
    total = {"events": 0, "runs": 0}
    for r in rules:
        if not r.applies_to("hot"):
            continue
        ev, rn = await hot.expire(
            before_us=to_us(r.cutoff(now)),
            type_=r.type,
            level=r.level,
            agent=r.agent,
            runs=r.whole_runs,
            dry_run=dry_run,
        )
        total["events"] += ev
        total["runs"] += rn
    return total


# ------------------------------------------------------------- ClickHouse


def apply_clickhouse(settings: StorageSettings, rules: list[Rule], now: datetime, *, dry_run: bool) -> Any:
    ch_rules = [r for r in rules if r.applies_to("clickhouse")]
    if not ch_rules or not _clickhouse_configured(settings):
        return None
    from magsag.lakehouse.clickhouse.engines import open_engine
    from magsag.lakehouse.clickhouse.schema import tables

    out = {"events": 0, "runs": 0}
    with open_engine(settings) as engine:
        present = tables(engine)
        for dataset in layout.DATASETS:
            if dataset not in present:
                continue
            conds = [c for r in ch_rules if (c := _ch_cond(r, now, dataset))]
            if not conds:
                continue
            cond = " OR ".join(conds)
            n = int(engine.value(f"SELECT count() FROM {engine.database}.{dataset} WHERE {cond}") or 0)
            out[dataset] += n
            if n and not dry_run:
                engine.command(
                    f"ALTER TABLE {engine.database}.{dataset} DELETE WHERE {cond} SETTINGS mutations_sync = 2"
                )
    return out


# ----------------------------------------------------------------- apply


async def apply_retention(
    storage: StorageBackend,
    settings: StorageSettings,
    rules: list[Rule] | None = None,
    *,
    dry_run: bool = False,
    lake_url: str | None = None,
    wait: bool = True,
    now: datetime | None = None,
) -> RetentionReport:
    """Apply the rules (default: from settings) to every tier; see the module docstring."""
    from magsag.backends.tiering.protocol import tier_source

    rules = rules_from_settings(settings) if rules is None else rules
    now = now or utc_now()
    report = RetentionReport(now=now.isoformat(), dry_run=dry_run, rules=[r.as_dict(now) for r in rules])
    if not rules:
        return report
    lakes = await destinations(storage, settings, lake_url)
    src = tier_source(getattr(storage, "hot", storage))
    lock = contextlib.nullcontext() if dry_run else src.job_lock(wait=wait)
    try:
        if hasattr(lock, "__aenter__"):
            await lock.__aenter__()
        try:
            report.hot = await apply_hot(storage, rules, now, dry_run=dry_run)
            for i, lake in enumerate(lakes):
                lk = await asyncio.to_thread(apply_lake, lake, rules, now, dry_run=dry_run)
                lk["role"] = "lake" if i == 0 else "archive"
                report.lakes.append(lk)
            report.clickhouse = await asyncio.to_thread(apply_clickhouse, settings, rules, now, dry_run=dry_run)
        finally:
            if hasattr(lock, "__aexit__"):
                await lock.__aexit__(None, None, None)
    finally:
        await src.close()
    return report


def manifest_days(lake: Lake, dataset: str) -> list[str]:
    """Live partition days of a dataset (for reports and tests)."""
    return sorted({e.dt for e in manifest.live_entries(lake, dataset)})

"""``/metrics``: the store's health and the agents' activity, computed at scrape time, cached.

:class:`LiveMetrics` is a prometheus-client custom collector. A scrape first awaits
:meth:`LiveMetrics.refresh`, which recomputes the parts whose cache is older than their
time-to-live (``hot``, ``tier`` and ``activity`` every ``ttl_s``; ``lake`` and
``clickhouse`` every ``slow_ttl_s``) and keeps the rest; ``collect()`` then only renders
cached numbers. Nothing here runs on an append (the per-append counters live in
:mod:`magsag.serve.instrument`). A part that fails keeps no stale numbers: its gauges
disappear and ``magsag_collector_errors_total{part}`` counts the failure.

Labels are bounded: agents (top :data:`MAX_AGENTS` by runs, the rest ``other``), models,
MCP servers/tools (top :data:`MAX_TOOLS`), statuses, datasets. Run ids never become labels.

Everything that depends on "now" takes it from ``clock`` (tests pin it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric

from magsag.backends.schema import RUN_STATUSES, TERMINAL_STATUSES, hot_cutoff, to_us, utc_now
from magsag.lakehouse.settings import StorageSettings
from magsag.serve import activity

log = logging.getLogger(__name__)

MAX_AGENTS = 50
MAX_MODELS = 20
MAX_TOOLS = 100
PARTS = ("hot", "tier", "lake", "clickhouse", "export", "activity")
# pending runs counted per export destination, at most (a lower bound beyond it)
EXPORT_PENDING_CAP = 10_000


def _gauge(name: str, doc: str, labels: list[str], samples: list[tuple[list[str], float]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for values, v in samples:
        g.add_metric(values, v)
    return g


def top_labels(counts: dict[str, float], keep: int) -> Callable[[str], str]:
    """A label mapper keeping the ``keep`` largest keys and folding the rest into ``other``."""
    kept = {k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:keep]}
    return lambda k: k if k in kept else "other"


class LiveMetrics:
    """Custom collector over one open store (see the module docstring)."""

    def __init__(
        self,
        storage: Any,
        settings: StorageSettings,
        *,
        window_s: float = 3600.0,
        ttl_s: float = 15.0,
        slow_ttl_s: float = 60.0,
        clickhouse: bool = False,
        hot_size_limit_bytes: int | None = None,
        clock: Callable[[], datetime] = utc_now,
    ):
        self.storage, self.settings = storage, settings
        self.window_s, self.ttl_s, self.slow_ttl_s = window_s, ttl_s, slow_ttl_s
        self.clickhouse = clickhouse
        self.hot_size_limit_bytes = hot_size_limit_bytes
        self.clock = clock
        self._families: dict[str, list[Metric]] = {p: [] for p in PARTS}
        self._stamp: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._errors: dict[str, int] = defaultdict(int)
        self._lock = asyncio.Lock()

    # ---------------------------------------------------------------- refresh
    async def refresh(self) -> None:
        async with self._lock:  # concurrent scrapes share one computation
            for part in PARTS:
                ttl = self.slow_ttl_s if part in ("lake", "clickhouse", "export") else self.ttl_s
                if time.monotonic() - self._stamp.get(part, -1e18) < ttl:
                    continue
                started = time.monotonic()
                try:
                    self._families[part] = list(await getattr(self, f"_{part}")())
                except Exception as exc:
                    self._errors[part] += 1
                    self._families[part] = []
                    log.warning(
                        "magsag serve: %s metrics failed: %s", part, str(exc).splitlines()[0] if str(exc) else exc
                    )
                self._stamp[part] = time.monotonic()
                self._seconds[part] = time.monotonic() - started

    def collect(self) -> Iterator[Metric]:
        for part in PARTS:
            yield from self._families[part]
        errors = CounterMetricFamily(
            "magsag_collector_errors", "Failed computations of a part of /metrics.", labels=["part"]
        )
        took = GaugeMetricFamily(
            "magsag_collector_duration_seconds", "Time the last computation of a part took.", labels=["part"]
        )
        for part in PARTS:
            errors.add_metric([part], self._errors[part])
            if part in self._seconds:
                took.add_metric([part], self._seconds[part])
        yield errors
        yield took
        yield _gauge(
            "magsag_activity_window_seconds",
            "Trailing window of the magsag_*_window metrics.",
            [],
            [([], self.window_s)],
        )

    # ------------------------------------------------------------------ parts
    @property
    def _backend(self) -> str:
        return str(getattr(self.storage, "name", "unknown"))

    async def _hot(self) -> list[Metric]:
        stats = getattr(self.storage, "stats", None)
        info = await stats() if stats is not None else {}
        b = [self._backend]
        out = [
            _gauge("magsag_hot_events", "Events in the hot store.", ["backend"], [(b, info.get("events") or 0)]),
            _gauge("magsag_hot_runs", "Runs in the hot store.", ["backend"], [(b, info.get("runs") or 0)]),
            _gauge("magsag_hot_size_bytes", "Bytes the hot store takes.", ["backend"], [(b, info.get("bytes") or 0)]),
        ]
        if self.hot_size_limit_bytes is not None:
            out.append(
                _gauge(
                    "magsag_hot_size_limit_bytes",
                    "The size the hot store should stay under (serve --hot-size-limit-mb).",
                    ["backend"],
                    [(b, self.hot_size_limit_bytes)],
                )
            )
        out += await _embed_gauges(self.storage, b)
        if info.get("oldest"):
            oldest = datetime.fromisoformat(info["oldest"]).timestamp()
            out.append(
                _gauge(
                    "magsag_hot_oldest_event_timestamp_seconds",
                    "Timestamp of the oldest event still in the hot store.",
                    ["backend"],
                    [(b, oldest)],
                )
            )
        return out

    async def _tier(self) -> list[Metric]:
        from magsag.backends.tiering.protocol import tier_source
        from magsag.lakehouse.objstore import open_lake
        from magsag.lakehouse.tiering.destination import dest_key

        now = self.clock()
        cutoff = hot_cutoff(self.settings.hot_days, now)
        dest = dest_key(open_lake(self.settings.lake_url, self.settings))
        src = tier_source(self.storage)
        try:
            days = [d for d in await src.tierable_days(cutoff, dest=dest) if d.movable]
            unfinished = await src.unfinished_claims()
            claims = await src.claims(dest)
        finally:
            await src.close()
        b = [self._backend]
        lag = (cutoff.date() - min(d.day for d in days)).days if days else 0
        finished = [c.finished_at.timestamp() for c in claims if c.finished_at is not None]
        out = [
            _gauge(
                "magsag_tier_lag_days",
                "Days past the hot window still in the hot store (0: tiering is up to date).",
                ["backend"],
                [(b, lag)],
            ),
            _gauge(
                "magsag_tier_pending_events",
                "Events older than the hot window that tiering would move now.",
                ["backend"],
                [(b, sum(d.events for d in days))],
            ),
            _gauge(
                "magsag_tier_unfinished_claims",
                "Tiering claims left unfinished (a job died; the next run finishes them).",
                ["backend"],
                [(b, len(unfinished))],
            ),
            _gauge(
                "magsag_hot_window_days",
                "The configured hot window (MAGSAG_STORAGE_HOT_DAYS).",
                [],
                [([], self.settings.hot_days)],
            ),
        ]
        if finished:
            out.append(
                _gauge(
                    "magsag_tier_last_commit_timestamp_seconds",
                    "When the newest tiering claim into the lake finished (from the hot store's ledger).",
                    ["backend"],
                    [(b, max(finished))],
                )
            )
        return out

    async def _lake(self) -> list[Metric]:
        from magsag.lakehouse.objstore import open_lake
        from magsag.lakehouse.stats import lake_stats

        lake = open_lake(self.settings.lake_url, self.settings)
        info = await asyncio.to_thread(lake_stats, lake, footers=False)
        rows: dict[str, list[tuple[list[str], float]]] = defaultdict(list)
        for dataset, d in (info.get("datasets") or {}).items():
            rows["bytes"].append(([dataset], d["bytes"]))
            rows["files"].append(([dataset], d["files"]))
            rows["rows"].append(([dataset], d["rows"]))
            rows["partitions"].append(([dataset], len(d["partitions"])))
            rows["small"].append(([dataset], len(d["flagged"])))
        return [
            _gauge("magsag_lake_size_bytes", "Bytes of live Parquet files in the lake.", ["dataset"], rows["bytes"]),
            _gauge("magsag_lake_files", "Live Parquet files in the lake.", ["dataset"], rows["files"]),
            _gauge("magsag_lake_rows", "Rows in the lake.", ["dataset"], rows["rows"]),
            _gauge("magsag_lake_partitions", "Day partitions in the lake.", ["dataset"], rows["partitions"]),
            _gauge(
                "magsag_lake_small_file_partitions",
                "Partitions flagged for compaction (many small files; `magsag data compact`).",
                ["dataset"],
                rows["small"],
            ),
        ]

    async def _clickhouse(self) -> list[Metric]:
        if not self.clickhouse:
            return []
        from magsag.lakehouse.clickhouse.engines import open_engine
        from magsag.lakehouse.clickhouse.load import plan_load
        from magsag.lakehouse.objstore import open_lake

        today = self.clock().date()

        def plan() -> list[Any]:
            lake = open_lake(self.settings.lake_url, self.settings)
            with open_engine(self.settings) as engine:
                plans, _gone = plan_load(engine, lake, ttl_days=self.settings.clickhouse_ttl_days, today=today)
            return plans

        plans = await asyncio.to_thread(plan)
        pending: dict[str, list[Any]] = defaultdict(list)
        for p in plans:
            pending.setdefault(p.dataset, [])
            if p.action in ("new", "changed"):
                pending[p.dataset].append(p)
        return [
            _gauge(
                "magsag_clickhouse_pending_partitions",
                "Lake partitions new or changed since ClickHouse last loaded them (its load ledger).",
                ["dataset"],
                [([ds], len(ps)) for ds, ps in pending.items()],
            ),
            _gauge(
                "magsag_clickhouse_load_lag_days",
                "Age in days of the oldest lake partition waiting to be loaded into ClickHouse (0: none).",
                ["dataset"],
                [([ds], max(((today - p.day).days for p in ps), default=0)) for ds, ps in pending.items()],
            ),
        ]

    async def _export(self) -> list[Metric]:
        """The continuous OTLP export's watermark per destination (``magsag data export otel``)."""
        from magsag.otel.select import Selection, finished_runs
        from magsag.otel.watermark import destinations

        marks, pending, lag = [], [], []
        now_s = self.clock().timestamp()
        for dest, key, _runs in await destinations(self.storage):
            waiting = await finished_runs(self.storage, Selection(), key, EXPORT_PENDING_CAP)
            marks.append(([dest], key[0] / 1e6))
            pending.append(([dest], float(len(waiting))))
            oldest = waiting[0]["ended_at"] if waiting else None
            lag.append(([dest], max(0.0, now_s - _epoch_s(oldest)) if oldest is not None else 0.0))
        return [
            _gauge(
                "magsag_otel_export_watermark_timestamp_seconds",
                "End time of the last run the destination accepted.",
                ["destination"],
                marks,
            ),
            _gauge(
                "magsag_otel_export_pending_runs",
                f"Finished runs not yet exported to the destination (counted up to {EXPORT_PENDING_CAP}).",
                ["destination"],
                pending,
            ),
            _gauge(
                "magsag_otel_export_lag_seconds",
                "How long the oldest finished run not yet exported has waited (0 when none waits).",
                ["destination"],
                lag,
            ),
        ]

    async def _activity(self) -> list[Metric]:
        now = self.clock()
        data = await activity.read(self.storage, to_us(now - timedelta(seconds=self.window_s)))
        agent_of = top_labels(_sum_by(data.runs, 0), MAX_AGENTS)
        model_of = top_labels(_sum_by({k: v[0] for k, v in data.costs.items()}, 1), MAX_MODELS)
        tools = top_labels({f"{s}\0{t}": v[0] for (s, t, _st), v in data.mcp.items()}, MAX_TOOLS)

        def tool_of(server: str, tool: str) -> tuple[str, str]:
            label = tools(f"{server}\0{tool}")
            return ("other", "other") if label == "other" else (server, tool)

        # Every status of every agent, zeros included: "running now" reads 0, not "no data".
        zeros = {(agent, status): 0 for agent, _s in data.runs for status in RUN_STATUSES}
        runs = _fold({**zeros, **data.runs}, lambda k: (agent_of(k[0]), k[1]))
        ended_zeros = {(agent, status): 0 for agent, _s in data.ended for status in TERMINAL_STATUSES}
        ended = _fold({**ended_zeros, **data.ended}, lambda k: (agent_of(k[0]), k[1]))
        tokens = _fold({k: v[1] for k, v in data.costs.items()}, lambda k: (agent_of(k[0]), model_of(k[1])))
        cost = _fold({k: v[2] for k, v in data.costs.items()}, lambda k: (agent_of(k[0]), model_of(k[1])))
        calls = _fold({k: v[0] for k, v in data.mcp.items()}, lambda k: (*tool_of(k[0], k[1]), k[2]))
        merged: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * (len(activity.BUCKETS_S) + 2))
        for (server, tool, _status), (n, total, buckets) in data.mcp.items():
            acc = merged[tool_of(server, tool)]
            acc[0] += n
            acc[1] += total
            for i, b in enumerate(buckets):
                acc[2 + i] += b
        hist = GaugeHistogramMetricFamily(
            "magsag_mcp_call_duration_seconds",
            "Latency of MCP calls (mcp.call events) in the trailing window, by server and tool.",
            labels=["server", "tool"],
        )
        for (server, tool), acc in sorted(merged.items()):
            buckets = [(str(le), acc[2 + i]) for i, le in enumerate(activity.BUCKETS_S)] + [("+Inf", acc[0])]
            hist.add_metric([server, tool], buckets, acc[1])
        return [
            _gauge("magsag_runs", "Runs in the hot store by agent and status.", ["agent", "status"], runs),
            _gauge(
                "magsag_runs_ended_window",
                "Runs that ended in the trailing window (magsag_activity_window_seconds), by agent and status.",
                ["agent", "status"],
                ended,
            ),
            _gauge(
                "magsag_agent_tokens_window",
                "Tokens of runs that ended in the trailing window (run metrics), by agent and model.",
                ["agent", "model"],
                tokens,
            ),
            _gauge(
                "magsag_agent_cost_usd_window",
                "Cost in USD of runs that ended in the trailing window (run metrics), by agent and model.",
                ["agent", "model"],
                cost,
            ),
            _gauge(
                "magsag_mcp_calls_window",
                "MCP calls in the trailing window by server, tool and status.",
                ["server", "tool", "status"],
                calls,
            ),
            hist,
        ]


async def _embed_gauges(storage: Any, b: list[str]) -> list[Metric]:
    """The embed job's backlog and stored vectors, once the store holds vectors (docs/search.md)."""
    from magsag.backends.errors import UnsupportedOperation
    from magsag.backends.vectors import vector_store

    try:
        store = vector_store(storage)
    except UnsupportedOperation:
        return []
    ok, _ = await store.available()
    if not ok or await store.stored_info() is None:
        return []
    return [
        _gauge(
            "magsag_embed_backlog_events",
            "Hot events without a vector yet (magsag data embed catches up).",
            ["backend"],
            [(b, await store.backlog())],
        ),
        _gauge("magsag_embed_vectors", "Event vectors in the hot store.", ["backend"], [(b, await store.count())]),
    ]


def _sum_by(counts: dict[tuple[str, ...], float], index: int) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for key, n in counts.items():
        out[key[index]] += n
    return out


def _fold(counts: dict[Any, float], mapper: Callable[[Any], tuple[str, ...]]) -> list[tuple[list[str], float]]:
    """Sum ``counts`` under their mapped label values (folding rare ones into ``other``)."""
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for key, n in counts.items():
        out[mapper(key)] += n
    return [(list(k), v) for k, v in sorted(out.items())]


def _epoch_s(value: Any) -> float:
    """Seconds since the epoch of a run's ``ended_at`` (datetime or ISO text)."""
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()

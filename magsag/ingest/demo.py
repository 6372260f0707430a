"""Realistic synthetic agent activity for demos, notebooks, tests and benchmarks.

A MAG (main agent) run decomposes its work into tasks and delegates each to a SAG
(sub-agent) run; SAGs call MCP tools with realistic latencies, spend tokens and money on
models, retry on rate limits, sometimes fail with real-looking errors, and write
artifacts. Each of the ``days`` days before ``end`` gets ``runs_per_day`` MAG runs; the
newest ones are still ``running`` at ``end``. ``end`` defaults to today's UTC midnight
(:func:`demo_end`), so the window only moves once a day. Everything is a function of
``seed``, ``days`` and ``end``: the same call gives the same runs, events and event ids,
so loading it twice stores nothing twice.

Cost and tokens follow the one rollup rule of the storage layer (docs/query.md, "Cost and
tokens: one rule"): ``cost_usd`` and ``tokens`` (run metrics and metric events) are what a
run itself spent; a MAG also records ``total_cost_usd``/``total_tokens``, its own spend plus
its delegates', which is never added to ``cost_usd``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from magsag.backends import jsontext
from magsag.backends.base import StorageBackend
from magsag.backends.schema import (
    ARTIFACT,
    DELEGATION,
    LOG,
    MCP_CALL,
    METRIC,
    US_PER_DAY,
    Event,
    Run,
    _format_uuid,
    _uuid7_int,
    iso_from_us,
    to_us,
    utc_now,
)

MAGS = ("offer-orchestrator-mag", "research-mag", "support-triage-mag", "release-manager-mag")
SAGS = {
    "offer-orchestrator-mag": ("compensation-advisor-sag", "policy-checker-sag", "letter-writer-sag"),
    "research-mag": ("web-research-sag", "summarizer-sag", "citation-checker-sag"),
    "support-triage-mag": ("ticket-classifier-sag", "kb-search-sag", "reply-drafter-sag"),
    "release-manager-mag": ("code-review-sag", "changelog-sag", "sql-analyst-sag"),
}
TOOLS = {
    "compensation-advisor-sag": (("pg", "query"), ("salary-bands", "lookup")),
    "policy-checker-sag": (("filesystem", "read_file"), ("policy-db", "search")),
    "letter-writer-sag": (("templates", "render"), ("filesystem", "write_file")),
    "web-research-sag": (("web", "fetch"), ("web", "search")),
    "summarizer-sag": (("filesystem", "read_file"),),
    "citation-checker-sag": (("web", "fetch"), ("crossref", "lookup")),
    "ticket-classifier-sag": (("jira", "get_issue"), ("jira", "search")),
    "kb-search-sag": (("confluence", "search"), ("vector-db", "query")),
    "reply-drafter-sag": (("slack", "post_message"), ("templates", "render")),
    "code-review-sag": (("github", "get_pull_request"), ("github", "list_files")),
    "changelog-sag": (("github", "search_issues"), ("filesystem", "write_file")),
    "sql-analyst-sag": (("pg", "query"), ("pg", "explain")),
}
TOOL_LATENCY_MS = {"web": 420.0, "github": 260.0, "pg": 35.0, "vector-db": 60.0, "slack": 180.0, "jira": 240.0}
MODELS = (("gpt-4.1-mini", 0.0008), ("claude-sonnet-4", 0.009), ("gemini-2.5-flash", 0.0006))
ERRORS = (
    ("RateLimitError", "RateLimitError: 429 Too Many Requests, rate limit exceeded at model provider"),
    ("TimeoutError", "TimeoutError: MCP tool call timed out after 30s"),
    ("ConnectionError", "ConnectionError: connection reset by peer while calling tool"),
    ("ContractViolation", "ContractViolation: output missing required field 'summary'"),
    ("ToolError", "ToolError: upstream returned 502 Bad Gateway"),
)
TASKS = ("analyze", "draft", "verify", "lookup", "summarize", "classify")


@dataclass
class DemoBatch:
    """One MAG run with its SAG runs and all their events."""

    runs: list[Run] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class _Ids:
    """Deterministic, time-ordered event ids: UUIDv7 bits from (ts, seed, counter)."""

    def __init__(self, seed: int):
        self.node = random.Random(f"node-{seed}").getrandbits(30)
        self.n = 0

    def __call__(self, ts_us: int) -> str:
        self.n += 1
        return _format_uuid(_uuid7_int(ts_us // 1000, self.n, (self.node << 32) | (self.n & 0xFFFFFFFF)))


class _RunWriter:
    """Collects the events of one run (span, agent and contract filled in)."""

    def __init__(self, gen: DemoGenerator, run_id: str, agent: str, span: str, parent_span: str | None):
        self.gen, self.run_id, self.agent, self.span, self.parent_span = gen, run_id, agent, span, parent_span
        self.events: list[Event] = []

    def emit(
        self,
        ts_us: int,
        type_: str,
        msg: str,
        payload: dict[str, Any],
        *,
        level: str = "info",
        span: str | None = None,
        parent_span: str | None = None,
        contract: tuple[str, str] | None = None,
        artifact_uri: str | None = None,
    ) -> None:
        self.events.append(
            Event(
                event_id=self.gen.ids(ts_us),
                ts_us=ts_us,
                run_id=self.run_id,
                agent_slug=self.agent,
                type=type_,
                level=level,
                msg=msg,
                payload=jsontext.dumps(payload),
                span_id=span or self.span,
                parent_span_id=parent_span if span else self.parent_span,
                contract_id=contract[0] if contract else None,
                contract_version=contract[1] if contract else None,
                artifact_uri=artifact_uri,
            )
        )


def demo_end(now: datetime | None = None) -> datetime:
    """The default end of the demo window: UTC midnight of ``now`` (default: ``utc_now()``)."""
    now = (now or utc_now()).astimezone(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


class DemoGenerator:
    """Iterate :class:`DemoBatch` objects in time order."""

    def __init__(self, days: int = 30, runs_per_day: int = 40, seed: int = 7, end: datetime | None = None):
        if days < 1:
            raise ValueError("days must be >= 1")
        if runs_per_day < 1:
            raise ValueError("runs_per_day must be >= 1")
        self.days, self.runs_per_day, self.seed = days, runs_per_day, seed
        end = demo_end() if end is None else end.replace(second=0, microsecond=0)
        self.end_us = to_us(end)
        self.start_us = self.end_us - days * US_PER_DAY
        self.rng = random.Random(seed)
        self.ids = _Ids(seed)

    def _hex(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def __iter__(self) -> Iterator[DemoBatch]:
        # runs_per_day runs in every day of the window, at random times of that day
        starts = sorted(
            self.start_us + day * US_PER_DAY + int(self.rng.random() * US_PER_DAY)
            for day in range(self.days)
            for _ in range(self.runs_per_day)
        )
        for start in starts:
            yield self._mag_run(start)

    # ---------------------------------------------------------------- runs
    def _mag_run(self, t: int) -> DemoBatch:
        rng = self.rng
        batch = DemoBatch()
        mag = rng.choice(MAGS)
        run_id = f"mag-{self._hex(8)}"
        w = _RunWriter(self, run_id, mag, f"span-{self._hex(16)}", None)
        n_tasks = rng.choice((1, 2, 2, 3, 3, 4))
        tasks = [f"t{i + 1}" for i in range(n_tasks)]
        w.emit(t, LOG, f"start {mag}: {n_tasks} task plan", {"agent": mag, "slug": mag, "tasks": n_tasks})
        t += rng.randint(2_000, 40_000)
        w.emit(t, LOG, f"decomposition into {n_tasks} tasks", {"tasks": n_tasks, "task_ids": tasks})
        contract = (f"{mag.removesuffix('-mag')}.result", rng.choice(("1.0.0", "1.1.0", "2.0.0")))
        ok = 0
        model, price = rng.choice(MODELS)  # the MAG's own planning call
        own_tokens = rng.randint(300, 2500)
        own_cost = own_tokens / 1000 * price
        cost = own_cost  # own spend + the delegates' (the rollup)
        tokens = own_tokens
        for task_id in tasks:
            sag = rng.choice(SAGS[mag])
            sag_id = f"sag-{self._hex(8)}"
            t += rng.randint(1_000, 20_000)
            w.emit(
                t,
                DELEGATION,
                f"delegation_start {task_id} to {sag}",
                {"sag": sag, "task_id": task_id, "run_id": sag_id},
                contract=contract,
            )
            sag_run, sag_events, t_end, success, s_cost, s_tokens = self._sag_run(
                sag_id, sag, run_id, w.span, task_id, t + rng.randint(500, 5_000)
            )
            batch.runs.append(sag_run)
            batch.events.extend(sag_events)
            if t_end is None or t_end + 60_000_000 >= self.end_us:  # still running: the MAG waits for it
                return self._still_running(batch, w, run_id, mag)
            t = t_end + rng.randint(1_000, 10_000)
            cost += s_cost
            tokens += s_tokens
            if success:
                ok += 1
                w.emit(
                    t, DELEGATION, f"delegation_complete {task_id} succeeded", {"task_id": task_id, "status": "success"}
                )
            else:
                w.emit(
                    t,
                    DELEGATION,
                    f"delegation_failure {task_id} failed",
                    {"task_id": task_id, "error": "sub-agent failed"},
                    level="error",
                )
        t += rng.randint(1_000, 50_000)
        if t + 1_000_000 >= self.end_us:
            return self._still_running(batch, w, run_id, mag)
        w.emit(t, LOG, f"aggregation of {ok} results, {n_tasks - ok} failed", {"results": ok, "failed": n_tasks - ok})
        status = "succeeded" if ok else "failed"
        if ok == 0:
            w.emit(t + 10, DELEGATION, "all_delegations_failed", {"tasks": n_tasks}, level="error")
        elif rng.random() < 0.01:
            status = "canceled"
        duration_ms = (t - w.events[0].ts_us) // 1000
        metrics = {
            "duration_ms": duration_ms,
            "tokens": own_tokens,
            "cost_usd": round(own_cost, 6),
            "total_tokens": tokens,
            "total_cost_usd": round(cost, 6),
            "model": model,
        }
        for name in ("duration_ms", "tokens", "cost_usd", "total_tokens", "total_cost_usd"):
            t += 50
            value = metrics[name]
            w.emit(t, METRIC, f"metric {name}={value}", {"name": name, "value": value, "unit": _unit(name)})
        t += 100
        end_msg = f"end {status} in {duration_ms} ms" if status != "failed" else "end failed: all delegations failed"
        w.emit(t, LOG, end_msg, {"status": status, "duration_ms": duration_ms}, level="error" if ok == 0 else "info")
        metrics["tasks"] = n_tasks
        batch.runs.insert(0, self._run(run_id, mag, None, w.events[0].ts_us, t, status, metrics, ["demo", mag]))
        batch.events[:0] = w.events
        return batch

    def _sag_run(
        self, run_id: str, sag: str, parent: str, parent_span: str, task_id: str, t: int
    ) -> tuple[Run, list[Event], int | None, bool, float, int]:
        rng = self.rng
        w = _RunWriter(self, run_id, sag, f"span-{self._hex(16)}", parent_span)
        start = t
        w.emit(t, LOG, f"start {sag} for {task_id}", {"slug": sag, "parent_run_id": parent, "task_id": task_id})
        model, price = rng.choice(MODELS)
        tokens = 0
        cost = 0.0
        failed: tuple[str, str] | None = None
        for step in range(rng.randint(1, 4)):
            server, tool = rng.choice(TOOLS[sag])
            t += rng.randint(5_000, 400_000)
            if t >= self.end_us:
                return self._run(run_id, sag, parent, start, None, "running", {}, []), w.events, None, False, 0.0, 0
            latency = int(rng.lognormvariate(math.log(TOOL_LATENCY_MS.get(server, 90.0)), 0.6))
            error = rng.random() < 0.03
            status = "error" if error else "success"
            call_span = f"span-{self._hex(16)}"
            payload: dict[str, Any] = {
                "server_id": server,
                "tool": tool,
                "status": status,
                "latency_ms": latency,
                "transport": "stdio" if server in ("filesystem", "pg") else "http",
                "arguments": {"step": step, "task": rng.choice(TASKS)},
            }
            if error:
                payload["error"] = "upstream returned 502 Bad Gateway"
            msg = f"{server}.{tool} {'failed' if error else 'ok'} in {latency} ms"
            w.emit(t, MCP_CALL, msg, payload, level="error" if error else "info", span=call_span, parent_span=w.span)
            t += latency * 1000
            in_tok, out_tok = rng.randint(200, 4000), rng.randint(50, 1200)
            tokens += in_tok + out_tok
            cost += (in_tok + out_tok) / 1000 * price
            if rng.random() < 0.06:
                t += rng.randint(100_000, 2_000_000)
                w.emit(
                    t,
                    LOG,
                    "retry attempt 1 after rate limit (RateLimitError: 429)",
                    {"attempt": 1, "error": "RateLimitError: 429"},
                    level="warning",
                )
                if rng.random() < 0.35:
                    failed = ERRORS[0]
                    break
            if rng.random() < 0.025:
                failed = rng.choice(ERRORS[1:])
                break
        t += rng.randint(10_000, 300_000)
        if t + 1_000_000 >= self.end_us:
            return self._run(run_id, sag, parent, start, None, "running", {}, []), w.events, None, False, 0.0, 0
        if failed is None and rng.random() < 0.4:
            name = rng.choice(("report.md", "summary.json", "draft.txt", "diff.patch"))
            uri = f"s3://magsag-artifacts/{run_id}/{name}"
            w.emit(
                t,
                ARTIFACT,
                f"artifact {name} written",
                {"name": name, "bytes": rng.randint(300, 90_000)},
                artifact_uri=uri,
            )
        for name, value in (
            ("tokens", tokens),
            ("cost_usd", round(cost, 6)),
            ("model_latency_ms", rng.randint(300, 9000)),
        ):
            t += 20
            w.emit(
                t, METRIC, f"metric {name}={value}", {"name": name, "value": value, "model": model, "unit": _unit(name)}
            )
        t += 50
        duration_ms = (t - start) // 1000
        w.emit(
            t, METRIC, f"metric duration_ms={duration_ms}", {"name": "duration_ms", "value": duration_ms, "unit": "ms"}
        )
        if failed is not None:
            w.emit(t + 10, LOG, f"error {failed[1]}", {"error": failed[1], "type": failed[0]}, level="error")
            status = "failed"
        else:
            w.emit(t + 10, LOG, f"end succeeded in {duration_ms} ms", {"status": "success", "duration_ms": duration_ms})
            status = "succeeded"
        metrics = {"duration_ms": duration_ms, "tokens": tokens, "cost_usd": round(cost, 6), "model": model}
        run = self._run(run_id, sag, parent, start, t + 10, status, metrics, ["demo", sag])
        return run, w.events, t + 10, failed is None, cost, tokens

    def _still_running(self, batch: DemoBatch, w: _RunWriter, run_id: str, mag: str) -> DemoBatch:
        batch.runs.insert(0, self._run(run_id, mag, None, w.events[0].ts_us, None, "running", {}, ["demo", mag]))
        batch.events[:0] = w.events
        return batch

    @staticmethod
    def _run(
        run_id: str,
        agent: str,
        parent: str | None,
        start: int,
        end: int | None,
        status: str,
        metrics: dict[str, Any],
        tags: list[str],
    ) -> Run:
        return Run(run_id, agent, parent, status, start, end, jsontext.dumps(metrics), tuple(tags))


def _unit(name: str) -> str:
    return {"cost_usd": "usd", "total_cost_usd": "usd", "tokens": "tokens", "total_tokens": "tokens"}.get(name, "ms")


@dataclass
class DemoSummary:
    runs: int = 0
    events: int = 0
    new_events: int = 0
    first: str | None = None
    last: str | None = None


async def load_demo(
    backend: StorageBackend,
    *,
    days: int = 30,
    runs_per_day: int = 40,
    seed: int = 7,
    end: datetime | None = None,
    batch_events: int = 20_000,
    progress: Any = None,
) -> DemoSummary:
    """Generate demo activity and write it through ``backend`` in large batches.

    ``progress`` (optional) is called with the number of MAG runs written so far.
    """
    gen = DemoGenerator(days=days, runs_per_day=runs_per_day, seed=seed, end=end)
    summary = DemoSummary()
    runs: list[Run] = []
    events: list[Event] = []
    done = 0

    async def flush() -> None:
        if events:
            summary.new_events += await backend.append_events(events)
            summary.events += len(events)
        if runs:
            await backend.upsert_runs(runs)
            summary.runs += len(runs)
        events.clear()
        runs.clear()

    for batch in gen:
        runs.extend(batch.runs)
        events.extend(batch.events)
        done += 1
        if len(events) >= batch_events:
            await flush()
            if progress is not None:
                progress(done)
    await flush()
    if progress is not None:
        progress(done)
    summary.first = iso_from_us(gen.start_us)
    summary.last = iso_from_us(gen.end_us)
    return summary

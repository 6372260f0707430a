"""The StorageBackend contract: every hot store passes this suite unchanged."""

from __future__ import annotations

import asyncio
import inspect
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from magsag.backends import capabilities
from magsag.backends.base import StorageBackend, StorageCapabilities
from magsag.backends.capabilities import OPTIONAL
from magsag.backends.errors import NotFoundError, QueryError, UnsupportedOperation, ValidationError
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS
from magsag.lakehouse.tiered_backend import unwrap

T0 = datetime(2025, 10, 23, 8, 0, 0, tzinfo=UTC)


def at(seconds: float = 0, *, days: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds, days=days)


async def events_of(backend: StorageBackend, run_id: str, **kw: Any) -> list[dict[str, Any]]:
    return [e async for e in backend.get_events(run_id, **kw)]


# ------------------------------------------------------------------ shape


def test_capabilities_and_signatures(backend: StorageBackend) -> None:
    caps = backend.capabilities
    assert isinstance(caps, StorageCapabilities)
    assert set(caps.as_dict()) == {
        "append_event",
        "get_run",
        "list_runs",
        "query_metrics",
        "search_text",
        "vector_search",
        "archive_artifacts",
        "lifecycle_policy",
        "streaming",
        *OPTIONAL,
    }
    assert all(isinstance(v, bool) for v in caps.as_dict().values())
    for name in (
        "initialize",
        "close",
        "append_event",
        "append_events",
        "create_run",
        "update_run",
        "get_run",
        "list_runs",
        "get_events",
        "search_text",
        "query_metrics",
        "vacuum",
    ):
        base = inspect.signature(getattr(StorageBackend, name))
        mine = inspect.signature(getattr(type(backend), name))
        assert list(mine.parameters)[: len(base.parameters)] == list(base.parameters), name
        for pname, p in base.parameters.items():
            assert mine.parameters[pname].default == p.default, f"{name}({pname})"
    assert not inspect.iscoroutinefunction(type(backend).get_events)


def test_declared_capabilities_are_implemented(backend: StorageBackend) -> None:
    """Each optional capability a store declares has its methods, and each it implements is declared."""
    store = unwrap(backend)
    cls = type(store)
    for flag, methods in OPTIONAL.items():
        present = [m for m in methods if hasattr(cls, m)]
        if capabilities.has(store, flag):
            assert present == list(methods), f"{cls.__name__} declares {flag} without {set(methods) - set(present)}"
        elif flag != "day_stats":  # stats() alone is a hot-only extra, not the capability
            assert not present, f"{cls.__name__} implements {present} but does not declare {flag}"
    if capabilities.has(store, "duckdb_source"):
        assert all(isinstance(e, str) for e in store.duckdb_extensions)  # type: ignore[attr-defined]


async def test_capabilities_answer(backend: StorageBackend) -> None:
    """The declared capabilities answer over the same data the contract methods see."""
    store = unwrap(backend)
    metric = {"run_id": "cap-1", "agent_slug": "a", "type": "metric"}
    await backend.append_events(
        [
            {**metric, "ts": at(1), "payload": {"name": "m", "value": 2}},
            {**metric, "ts": at(2), "payload": {"name": "m", "value": 4}},
            {**metric, "ts": at(3), "payload": {"name": "m", "value": "x"}},
        ]
    )
    await backend.update_run("cap-1", status="succeeded", ended_at=at(10))
    if capabilities.has(store, "metric_samples"):
        samples = await store.metric_samples("m", None, None, None)  # type: ignore[attr-defined]
        assert sorted(v for _, v in samples) == [2.0, 4.0]
        assert await store.metric_samples("m", "other-agent", None, None) == []  # type: ignore[attr-defined]
    else:
        with pytest.raises(UnsupportedOperation, match="metric_samples"):
            capabilities.require(store, "metric_samples", "test")
    if capabilities.has(store, "day_stats"):
        (day,) = await store.day_stats()  # type: ignore[attr-defined]
        assert (day["dt"], day["events"], day["runs"]) == ("2025-10-23", 3, 1)
    if capabilities.has(store, "finished_runs"):
        sel = capabilities.RunSelection(agent="a")
        (run,) = await store.finished_runs(sel, (-(2**53), ""), 10)  # type: ignore[attr-defined]
        assert run["run_id"] == "cap-1"
    if capabilities.has(store, "export_state"):
        assert await store.read_export_state("dest") is None  # type: ignore[attr-defined]
        await store.save_export_state("dest", (5, "cap-1"), 1, 7)  # type: ignore[attr-defined]
        assert await store.read_export_state("dest") == ((5, "cap-1"), 1)  # type: ignore[attr-defined]
    if capabilities.has(store, "activity"):
        runs, ended, _costs, _mcp = await store.activity(0, (0.1, 1.0))  # type: ignore[attr-defined]
        assert [tuple(r) for r in runs] == [("a", "succeeded", 1)]
        assert [tuple(r) for r in ended] == [("a", "succeeded", 1)]


async def test_records_have_canonical_keys(backend: StorageBackend) -> None:
    await backend.append_event("mag-a1b2c3d4", "offer-mag", "log", at(), message="hi")
    run = await backend.get_run("mag-a1b2c3d4")
    assert run is not None and set(run) == set(RUN_COLUMNS)
    (event,) = await events_of(backend, "mag-a1b2c3d4")
    assert set(EVENT_COLUMNS) <= set(event)


# ----------------------------------------------------------------- events


async def test_append_event_round_trip(backend: StorageBackend) -> None:
    eid = await backend.append_event(
        "mag-a1b2c3d4",
        "offer-orchestrator-mag",
        "mcp.call",
        at(1.25),
        level="WARNING",
        message="pg.query slow: 1200 ms",
        payload={"server_id": "pg", "latency_ms": 1200, "nested": {"ok": True, "list": [1, 2.5, None]}, "ü": "ß"},
        span_id="span-1",
        parent_span_id="span-0",
        contract_id="offer.v2",
        contract_version="2.1.0",
        artifact_uri="s3://bucket/a.md",
    )
    (e,) = await events_of(backend, "mag-a1b2c3d4")
    assert e["event_id"] == eid
    assert e["ts"] == "2025-10-23T08:00:01.250000+00:00"
    assert e["type"] == "mcp.call" and e["level"] == "warning" and e["agent_slug"] == "offer-orchestrator-mag"
    assert e["msg"] == "pg.query slow: 1200 ms"
    assert e["payload"] == {
        "server_id": "pg",
        "latency_ms": 1200,
        "nested": {"ok": True, "list": [1, 2.5, None]},
        "ü": "ß",
    }
    assert (e["span_id"], e["parent_span_id"]) == ("span-1", "span-0")
    assert (e["contract_id"], e["contract_version"], e["artifact_uri"]) == ("offer.v2", "2.1.0", "s3://bucket/a.md")


async def test_defaults_and_timezone_normalization(backend: StorageBackend) -> None:
    plus2 = datetime(2025, 10, 23, 10, 0, 0, 123456, tzinfo=UTC).astimezone(
        __import__("datetime").timezone(timedelta(hours=2))
    )
    await backend.append_event("r1", "a", "log", plus2)
    (e,) = await events_of(backend, "r1")
    assert e["ts"] == "2025-10-23T10:00:00.123456+00:00"
    assert e["level"] == "info" and e["payload"] == {} and e["msg"] is None


async def test_unknown_run_is_created_by_first_event(backend: StorageBackend) -> None:
    await backend.append_event("sag-0b1d2e30", "compensation-advisor-sag", "log", at(5))
    run = await backend.get_run("sag-0b1d2e30")
    assert run is not None
    assert run["agent_slug"] == "compensation-advisor-sag" and run["status"] == "running"
    assert run["started_at"] == at(5).isoformat(timespec="microseconds")


async def test_get_events_order_filters_limit(backend: StorageBackend) -> None:
    for i in [3, 1, 2, 0, 4]:
        await backend.append_event(
            "r", "a", "metric" if i % 2 else "log", at(i), level="error" if i == 4 else None, message=f"m{i}"
        )
    await backend.append_event("other", "a", "log", at(0))
    assert [e["msg"] for e in await events_of(backend, "r")] == ["m0", "m1", "m2", "m3", "m4"]
    assert [e["msg"] for e in await events_of(backend, "r", event_type="metric")] == ["m1", "m3"]
    assert [e["msg"] for e in await events_of(backend, "r", level="error")] == ["m4"]
    assert [e["msg"] for e in await events_of(backend, "r", limit=2)] == ["m0", "m1"]
    assert await events_of(backend, "missing") == []


async def test_get_events_streams_many(backend: StorageBackend) -> None:
    n = 2500
    await backend.append_events(
        [{"run_id": "big", "agent_slug": "a", "type": "log", "ts": at(i / 1000), "msg": f"e{i}"} for i in range(n)]
    )
    seen = [e["msg"] async for e in backend.get_events("big")]
    assert seen == [f"e{i}" for i in range(n)]


async def test_append_events_batch_is_idempotent(backend: StorageBackend) -> None:
    batch = [
        {"run_id": "r", "agent_slug": "a", "type": "log", "ts": at(i), "msg": f"m{i}", "event_id": f"0190-{i}"}
        for i in range(5)
    ]
    assert await backend.append_events(batch) == 5
    assert await backend.append_events(batch) == 0
    assert await backend.append_events([*batch, {**batch[0], "event_id": "0190-new", "ts": at(9)}]) == 1
    assert len(await events_of(backend, "r")) == 6


async def test_append_events_accepts_parameter_names(backend: StorageBackend) -> None:
    n = await backend.append_events(
        [
            {
                "run_id": "r",
                "agent_slug": "a",
                "event_type": "delegation",
                "timestamp": at(),
                "message": "delegation_start t1",
                "payload": {"task_id": "t1"},
            }
        ]
    )
    assert n == 1
    (e,) = await events_of(backend, "r")
    assert e["type"] == "delegation" and e["payload"] == {"task_id": "t1"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"timestamp": datetime(2025, 1, 1)}, "naive"),
        ({"run_id": ""}, "run_id"),
        ({"run_id": "   "}, "run_id"),
        ({"agent_slug": ""}, "agent_slug"),
        ({"event_type": ""}, "event_type"),
        ({"payload": [1, 2]}, "payload"),
        ({"payload": "not json"}, "payload"),
        ({"payload": {"x": math.nan}}, "non-finite"),
        ({"payload": {"x": math.inf}}, "non-finite"),
        ({"payload": {"x": object()}}, "payload"),
        ({"payload": {1: "a"}}, "key"),
        ({"level": "loud"}, "level"),
        ({"message": "nul\x00byte"}, "NUL"),
        ({"timestamp": "yesterday"}, "timestamp"),
    ],
)
async def test_validation_at_the_door(backend: StorageBackend, kwargs: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"run_id": "r", "agent_slug": "a", "event_type": "log", "timestamp": at()}
    args.update(kwargs)
    with pytest.raises(ValidationError, match=needle):
        await backend.append_event(**args)
    good = {"run_id": "ok", "agent_slug": "a", "event_type": "log", "timestamp": at()}
    with pytest.raises(ValidationError, match="event #1"):
        await backend.append_events([good, args])
    assert await events_of(backend, "ok") == []
    assert await backend.get_run("r") is None and await backend.get_run("ok") is None


# ------------------------------------------------------------------- runs


async def test_create_and_update_run(backend: StorageBackend) -> None:
    run = await backend.create_run("mag-1", "offer-mag", started_at=at(), tags=["prod", "eu"])
    assert run["status"] == "running" and run["tags"] == ["prod", "eu"] and run["parent_run_id"] is None
    await backend.create_run("sag-1", "advisor-sag", parent_run_id="mag-1", started_at=at(1))
    assert (await backend.get_run("sag-1"))["parent_run_id"] == "mag-1"  # type: ignore[index]

    await backend.update_run("mag-1", metrics={"cost_usd": 0.004, "tokens": 10})
    done = await backend.update_run("mag-1", status="succeeded", ended_at=at(60), metrics={"tokens": 12})
    assert done["status"] == "succeeded" and done["ended_at"] == at(60).isoformat(timespec="microseconds")
    assert done["metrics"] == {"cost_usd": 0.004, "tokens": 12}

    failed = await backend.update_run("sag-1", status="failed")
    assert failed["ended_at"] is not None  # a terminal status records an end time

    with pytest.raises(NotFoundError):
        await backend.update_run("nope", status="failed")
    with pytest.raises(ValidationError):
        await backend.update_run("mag-1", status="exploded")
    with pytest.raises(ValidationError):
        await backend.create_run("x", "a", started_at=datetime(2025, 1, 1))
    assert await backend.get_run("nope") is None


async def test_create_run_after_auto_created_run_keeps_start(backend: StorageBackend) -> None:
    await backend.append_event("sag-2", "advisor-sag", "log", at(3))
    run = await backend.create_run("sag-2", "advisor-sag", parent_run_id="mag-9")
    assert run["parent_run_id"] == "mag-9" and run["started_at"] == at(3).isoformat(timespec="microseconds")


async def test_list_runs_newest_first_with_filters(backend: StorageBackend) -> None:
    for i in range(6):
        await backend.create_run(f"run-{i}", "mag" if i % 2 == 0 else "sag", started_at=at(days=i))
    await backend.update_run("run-4", status="failed")
    runs = await backend.list_runs()
    assert [r["run_id"] for r in runs] == [f"run-{i}" for i in (5, 4, 3, 2, 1, 0)]
    assert [r["run_id"] for r in await backend.list_runs(agent_slug="mag")] == ["run-4", "run-2", "run-0"]
    assert [r["run_id"] for r in await backend.list_runs(status="failed")] == ["run-4"]
    assert [r["run_id"] for r in await backend.list_runs(since=at(days=2), until=at(days=4))] == ["run-3", "run-2"]
    assert [r["run_id"] for r in await backend.list_runs(limit=2, offset=1)] == ["run-4", "run-3"]
    assert await backend.list_runs(agent_slug="nobody") == []
    with pytest.raises(ValidationError):
        await backend.list_runs(status="bogus")


# ----------------------------------------------------------------- search


async def _seed_search(backend: StorageBackend) -> None:
    rows = [
        ("r1", "mag", "error rate limit exceeded: 429 Too Many Requests", 0),
        ("r1", "mag", "retry after rate limit", 1),
        ("r2", "sag", "tool call failed with error: connection reset", 2),
        ("r2", "sag", "all good, finished", 3),
        ("r3", "sag", "Error error ERROR limit", 4),
    ]
    await backend.append_events(
        [{"run_id": r, "agent_slug": a, "type": "log", "ts": at(days=d), "msg": m} for r, a, m, d in rows]
    )


async def test_search_words_and_filters(backend: StorageBackend) -> None:
    await _seed_search(backend)
    hits = await backend.search_text("error")
    assert {h["msg"] for h in hits} == {
        "error rate limit exceeded: 429 Too Many Requests",
        "tool call failed with error: connection reset",
        "Error error ERROR limit",
    }
    assert set(EVENT_COLUMNS) <= set(hits[0])
    assert [h["msg"] for h in await backend.search_text("rate limit")] != []
    assert {h["run_id"] for h in await backend.search_text("rate limit")} == {"r1"}
    assert {h["run_id"] for h in await backend.search_text("error", agent_slug="sag")} == {"r2", "r3"}
    assert {h["run_id"] for h in await backend.search_text("error", since=at(days=3))} == {"r3"}
    assert len(await backend.search_text("error", limit=1)) == 1
    assert await backend.search_text("nomatchword") == []


async def test_search_ranks_better_matches_first(backend: StorageBackend) -> None:
    await _seed_search(backend)
    hits = await backend.search_text("error limit")
    assert hits[0]["msg"] == "Error error ERROR limit"


@pytest.mark.parametrize(
    "hostile",
    [
        "error rate limit",
        '"unterminated',
        "a AND (",
        "OR",
        "NOT",
        "*",
        "NEAR(",
        "msg:error",
        "-error",
        "'; DROP TABLE events; --",
        "",
        "   ",
        "((((",
        "error^2 ~ !@#$%",
        "日本語 エラー",
        "\\",
    ],
)
async def test_search_never_raises_on_user_text(backend: StorageBackend, hostile: str) -> None:
    await _seed_search(backend)
    assert isinstance(await backend.search_text(hostile), list)
    assert await backend.get_run("r1") is not None  # nothing was harmed


async def test_search_raw_mode(backend: StorageBackend) -> None:
    await _seed_search(backend)
    assert await backend.search_text("error", raw=True)
    with pytest.raises(QueryError, match="malformed"):
        await backend.search_text('"unterminated AND (', raw=True)


# ---------------------------------------------------------------- metrics


async def test_query_metrics(backend: StorageBackend) -> None:
    vals = [10, 20, 30, 40, 100]
    await backend.append_events(
        [
            {
                "run_id": f"r{i}",
                "agent_slug": "mag" if i < 3 else "sag",
                "type": "metric",
                "ts": at(days=i),
                "payload": {"name": "latency_ms", "value": v},
            }
            for i, v in enumerate(vals)
        ]
        + [
            {
                "run_id": "x",
                "agent_slug": "mag",
                "type": "metric",
                "ts": at(),
                "payload": {"name": "tokens", "value": 5},
            }
        ]
        + [
            {
                "run_id": "x",
                "agent_slug": "mag",
                "type": "log",
                "ts": at(),
                "payload": {"name": "latency_ms", "value": 9},
            }
        ]
    )
    q = backend.query_metrics
    assert (await q("latency_ms"))["value"] == pytest.approx(40)
    assert (await q("latency_ms", aggregation="sum"))["value"] == pytest.approx(200)
    assert (await q("latency_ms", aggregation="min"))["value"] == pytest.approx(10)
    assert (await q("latency_ms", aggregation="max"))["value"] == pytest.approx(100)
    assert (await q("latency_ms", aggregation="count"))["value"] == 5
    assert (await q("latency_ms", aggregation="p50"))["value"] == pytest.approx(30)
    assert (await q("latency_ms", aggregation="p95"))["value"] == pytest.approx(88)
    assert (await q("latency_ms", agent_slug="mag"))["value"] == pytest.approx(20)
    assert (await q("latency_ms", since=at(days=3)))["count"] == 2
    assert (await q("latency_ms", until=at(days=1)))["count"] == 1
    res = await q("nothing")
    assert res["value"] is None and res["count"] == 0
    assert set(res) >= {"metric", "aggregation", "value", "count"}
    with pytest.raises(ValidationError):
        await q("latency_ms", aggregation="median-ish")


# ----------------------------------------------------------------- vacuum


@pytest.mark.hot_store
@pytest.mark.parametrize(
    ("now", "hot_days", "cutoff"),
    [
        (datetime(2025, 10, 23, 15, 30, tzinfo=UTC), 7, "2025-10-16T00:00:00"),
        (datetime(2025, 3, 3, 0, 0, 1, tzinfo=UTC), 3, "2025-02-28T00:00:00"),  # month end, non-leap
        (datetime(2024, 3, 1, 12, 0, tzinfo=UTC), 1, "2024-02-29T00:00:00"),  # leap day
        (datetime(2025, 1, 3, 10, 0, tzinfo=UTC), 7, "2024-12-27T00:00:00"),  # year boundary
        (datetime(2025, 1, 1, 0, 0, tzinfo=UTC), 0, "2025-01-01T00:00:00"),
    ],
)
async def test_vacuum_cutoff_across_boundaries(
    backend: StorageBackend, now: datetime, hot_days: int, cutoff: str
) -> None:
    c = datetime.fromisoformat(cutoff + "+00:00")
    one_us = timedelta(microseconds=1)
    await backend.create_run("old", "a", started_at=c - timedelta(days=2), status="succeeded")
    await backend.update_run("old", status="succeeded", ended_at=c - one_us)
    await backend.create_run("new", "a", started_at=c, status="succeeded")
    await backend.append_events(
        [
            {"run_id": "old", "agent_slug": "a", "type": "log", "ts": c - one_us, "msg": "just before"},
            {"run_id": "old", "agent_slug": "a", "type": "log", "ts": c - timedelta(days=2), "msg": "older"},
            {"run_id": "new", "agent_slug": "a", "type": "log", "ts": c, "msg": "at cutoff"},
        ]
    )
    dry = await backend.vacuum(hot_days=hot_days, dry_run=True, now=now)
    assert dry["dry_run"] is True and dry["cutoff"].startswith(cutoff)
    assert (dry["runs_to_delete"], dry["events_to_delete"]) == (1, 2)
    assert len(await events_of(backend, "old")) == 2  # dry run deletes nothing
    res = await backend.vacuum(hot_days=hot_days, now=now)
    assert res["dry_run"] is False and (res["runs_deleted"], res["events_deleted"]) == (1, 2)
    assert await backend.get_run("old") is None and await events_of(backend, "old") == []
    assert [e["msg"] for e in await events_of(backend, "new")] == ["at cutoff"]
    assert (await backend.vacuum(hot_days=hot_days, now=now))["events_deleted"] == 0


@pytest.mark.hot_store
async def test_vacuum_keeps_running_runs(backend: StorageBackend) -> None:
    now = datetime(2025, 11, 1, tzinfo=UTC)
    await backend.append_event("live", "a", "log", now - timedelta(days=30), message="still going")
    res = await backend.vacuum(hot_days=7, now=now)
    assert res["events_deleted"] == 0 and res["runs_deleted"] == 0
    assert await backend.get_run("live") is not None


@pytest.mark.hot_store
async def test_vacuum_keep_days(backend: StorageBackend) -> None:
    now = datetime(2025, 11, 1, tzinfo=UTC)
    await backend.create_run("r", "a", started_at=now - timedelta(days=20), status="succeeded")
    await backend.update_run("r", status="succeeded", ended_at=now - timedelta(days=19))
    await backend.append_events(
        [
            {"run_id": "r", "agent_slug": "a", "type": "log", "ts": now - timedelta(days=20), "msg": "kept"},
            {"run_id": "r", "agent_slug": "a", "type": "log", "ts": now - timedelta(days=19), "msg": "gone"},
        ]
    )
    keep = (now - timedelta(days=20)).date()
    res = await backend.vacuum(hot_days=7, now=now, keep_days=[keep])
    assert res["events_deleted"] == 1 and res["runs_deleted"] == 0
    assert [e["msg"] for e in await events_of(backend, "r")] == ["kept"]


# ------------------------------------------------------------ concurrency


@pytest.mark.hot_store
async def test_concurrent_writers_and_readers(backend: StorageBackend) -> None:
    writers, per_writer = 16, 60
    stop = asyncio.Event()
    reads = 0

    async def writer(k: int) -> None:
        for i in range(per_writer):
            await backend.append_event(f"run-{k}", "agent", "log", at(i), message=f"w{k} e{i} error")
            if i % 20 == 0:
                await backend.append_events(
                    [{"run_id": f"batch-{k}", "agent_slug": "a", "type": "log", "ts": at(i, days=1), "msg": f"b{i}"}]
                )

    async def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            await backend.list_runs(limit=5)
            await backend.search_text("error", limit=5)
            async for _ in backend.get_events("run-0", limit=10):
                pass
            reads += 1

    readers = [asyncio.create_task(reader()) for _ in range(4)]
    await asyncio.gather(*(writer(k) for k in range(writers)))
    stop.set()
    await asyncio.gather(*readers)
    assert reads > 0
    for k in range(writers):
        got = await events_of(backend, f"run-{k}")
        assert [e["msg"] for e in got] == [f"w{k} e{i} error" for i in range(per_writer)]
        assert len(await events_of(backend, f"batch-{k}")) == 3
    assert len(await backend.search_text("error", limit=10_000)) == writers * per_writer


# -------------------------------------------------------- documented example


async def test_documented_api_example(backend_case: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    backend = backend_case.backend
    await backend.create_run("mag-a1b2c3d4", "offer-orchestrator-mag", started_at=at())
    await backend.append_event("mag-a1b2c3d4", "offer-orchestrator-mag", "log", at(1), message="error: rate limit")
    for key, value in backend_case.env.items():
        monkeypatch.setenv(key, value)

    # --- verbatim from the documented API (README / docs/api.md) ---
    from magsag.storage import get_storage_backend

    storage = await get_storage_backend()
    runs = await storage.list_runs(limit=10)
    run = await storage.get_run("mag-a1b2c3d4")
    async for event in storage.get_events("mag-a1b2c3d4"):
        print(event)
    results = await storage.search_text("error", limit=100)
    await storage.close()
    # ----------------------------------------------------------------

    assert [r["run_id"] for r in runs] == ["mag-a1b2c3d4"]
    assert run is not None and run["agent_slug"] == "offer-orchestrator-mag"
    assert "error: rate limit" in capsys.readouterr().out
    assert [r["msg"] for r in results] == ["error: rate limit"]

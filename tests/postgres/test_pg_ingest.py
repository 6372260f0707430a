"""Ingest into PostgreSQL: COPY batches, idempotence by event_id, single appends, runs."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import pytest
from magsag.backends.errors import ValidationError
from magsag.backends.schema import Event

from tests.clock import PINNED_NOW

pytestmark = pytest.mark.postgres

NOW = PINNED_NOW


def uid(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def events(run_id: str, n: int, *, start: datetime | None = None, agent: str = "planner") -> list[Event]:
    start = start or NOW - timedelta(hours=1)
    return [
        Event.create(
            run_id,
            agent,
            "log" if i % 3 else "mcp.call",
            start + timedelta(milliseconds=10 * i),
            message=f"step {i} of {run_id}",
            payload={"i": i, "tool": "github.search", "nested": {"ok": i % 2 == 0}},
        )
        for i in range(n)
    ]


async def stored(admin, schema: str, run_id: str) -> int:
    return await admin.fetchval(f"SELECT count(*) FROM {schema}.events WHERE run_id = $1", run_id)


async def test_batch_reload_is_idempotent(backend, admin) -> None:
    run = uid("run")
    batch = events(run, 500)
    assert await backend.append_events(batch) == 500
    assert await backend.append_events(batch) == 0
    assert await backend.append_events(list(reversed(batch))) == 0
    assert await stored(admin, backend.schema, run) == 500


async def test_batch_with_some_stored_ids_inserts_only_the_new_ones(backend, admin) -> None:
    run = uid("run")
    batch = events(run, 500)
    assert await backend.append_events(batch[:300]) == 300
    assert await backend.append_events(batch) == 200
    assert await stored(admin, backend.schema, run) == 500
    # the next clean batch is stored in full (whichever path it takes)
    more = events(run, 100, start=NOW - timedelta(minutes=30))
    assert await backend.append_events(more) == 100
    assert await stored(admin, backend.schema, run) == 600
    ids = [e["event_id"] async for e in backend.get_events(run)]
    assert len(ids) == len(set(ids)) == 600


async def test_duplicates_inside_one_batch_are_stored_once(backend, admin) -> None:
    run = uid("run")
    batch = events(run, 10)
    assert await backend.append_events(batch + batch[:4]) == 10
    assert await stored(admin, backend.schema, run) == 10


async def test_single_append_is_idempotent_by_event_id(backend, admin) -> None:
    run = uid("run")
    item = {
        "event_id": "0190f0e0-0000-7000-8000-00000000abcd",
        "run_id": run,
        "agent_slug": "planner",
        "type": "log",
        "ts": NOW.isoformat(),
        "msg": "hello",
    }
    assert await backend.append_events([item]) == 1
    assert await backend.append_events([item]) == 0
    assert await stored(admin, backend.schema, run) == 1


async def test_append_event_creates_the_run_at_its_first_event(backend) -> None:
    run = uid("run")
    t1 = NOW - timedelta(minutes=5)
    event_id = await backend.append_event(run, "planner", "log", t1, message="first")
    assert len(event_id) == 36
    rec = await backend.get_run(run)
    assert rec["status"] == "running"
    assert rec["agent_slug"] == "planner"
    assert rec["started_at"] == t1.isoformat(timespec="microseconds")

    run2 = uid("run")
    batch = events(run2, 5, start=NOW - timedelta(minutes=3))
    await backend.append_events(list(reversed(batch)))
    rec2 = await backend.get_run(run2)
    assert rec2["started_at"] == datetime.fromtimestamp(batch[0].ts_us / 1e6, UTC).isoformat(timespec="microseconds")


async def test_events_of_an_existing_run_leave_it_alone(backend) -> None:
    run = uid("run")
    created = await backend.create_run(run, "planner", started_at=NOW - timedelta(days=1), tags=["x"])
    await backend.update_run(run, status="succeeded")
    await backend.append_events(events(run, 3))
    await backend.append_event(run, "planner", "log", NOW, message="late")
    rec = await backend.get_run(run)
    assert rec["status"] == "succeeded"
    assert rec["started_at"] == created["started_at"]
    assert rec["tags"] == ["x"]


async def test_same_timestamp_events_keep_their_append_order(make_backend) -> None:
    backend = await make_backend(pool_min=4, pool_max=4)
    run = uid("run")
    ts = NOW - timedelta(minutes=1)
    ids = [await backend.append_event(run, "planner", "log", ts, message=f"m{i}") for i in range(20)]
    batch = [Event.create(run, "planner", "log", ts, message=f"b{i}", event_id=f"zz-{9 - i}") for i in range(10)]
    await backend.append_events(batch)
    got = [e async for e in backend.get_events(run)]
    assert [e["event_id"] for e in got[:20]] == ids
    assert [e["msg"] for e in got[20:]] == [f"b{i}" for i in range(10)]


async def test_one_bad_item_writes_nothing(backend, admin) -> None:
    run = uid("run")
    good = [{"run_id": run, "agent_slug": "a", "type": "log", "ts": NOW.isoformat(), "msg": "ok"}] * 3
    bad = {"run_id": run, "agent_slug": "a", "type": "log", "ts": "2025-01-01T00:00:00", "msg": "naive"}
    with pytest.raises(ValidationError, match=r"event #3: timestamp is a naive datetime"):
        await backend.append_events([*good, bad])
    assert await stored(admin, backend.schema, run) == 0
    assert await backend.get_run(run) is None


async def test_payload_and_text_round_trip(backend) -> None:
    run = uid("run")
    payload = {
        "unicode": "héllo 東京 🚀",
        "big": 2**62,
        "float": 0.1,
        "neg": -3.5,
        "list": [1, "two", None, True],
        "nested": {"deep": {"deeper": [{"k": "v"}]}},
        "quote": 'it\'s "quoted" \\ back',
    }
    await backend.append_event(run, "planner", "mcp.call", NOW, message="ünïcode 'msg'", payload=payload)
    [rec] = [e async for e in backend.get_events(run)]
    assert rec["payload"] == payload
    assert rec["msg"] == "ünïcode 'msg'"
    assert rec["type"] == "mcp.call"
    assert rec["ts"] == NOW.isoformat(timespec="microseconds")


async def test_concurrent_writers_and_readers(make_backend, admin) -> None:
    backend = await make_backend(pool_max=6)
    run = uid("run")

    async def single(task: int) -> None:
        for i in range(25):
            await backend.append_event(run, f"sag-{task}", "log", NOW, message=f"t{task} e{i}")

    async def batch(task: int) -> None:
        await backend.append_events(events(f"{run}-b{task}", 250))

    async def reader() -> int:
        seen = 0
        for _ in range(10):
            seen += len(await backend.list_runs(limit=5))
            await backend.search_text("step")
        return seen

    results = await asyncio.gather(*(single(t) for t in range(16)), *(batch(t) for t in range(4)), reader(), reader())
    assert all(r is None for r in results[:20])
    assert await stored(admin, backend.schema, run) == 16 * 25
    total = await admin.fetchval(f"SELECT count(*) FROM {backend.schema}.events WHERE run_id LIKE $1", f"{run}-b%")
    assert total == 1000


async def test_upsert_runs_inserts_and_replaces_whole_records(backend) -> None:
    run = uid("run")
    first = {"run_id": run, "agent_slug": "planner", "started_at": NOW - timedelta(hours=2), "tags": ["a", "b"]}
    assert await backend.upsert_runs([first]) == 1
    assert (await backend.get_run(run))["tags"] == ["a", "b"]
    final = {
        **first,
        "status": "failed",
        "ended_at": NOW,
        "metrics": {"tokens": 12, "cost_usd": 0.5},
        "tags": [],
        "parent_run_id": "mag-1",
    }
    assert await backend.upsert_runs([final, final]) == 2
    rec = await backend.get_run(run)
    assert (rec["status"], rec["parent_run_id"], rec["tags"]) == ("failed", "mag-1", [])
    assert rec["metrics"] == {"tokens": 12, "cost_usd": 0.5}
    assert rec["ended_at"] == NOW.isoformat(timespec="microseconds")
    assert await backend.upsert_runs([]) == 0


async def test_demo_activity_loads_once(make_backend, admin) -> None:
    from magsag.ingest.demo import load_demo

    backend = await make_backend("demo")
    first = await load_demo(backend, days=3, runs_per_day=4, seed=11, end=NOW)
    assert first.new_events == first.events > 50
    again = await load_demo(backend, days=3, runs_per_day=4, seed=11, end=NOW)
    assert again.new_events == 0
    assert await admin.fetchval(f"SELECT count(*) FROM {backend.schema}.events") == first.events
    runs = await backend.list_runs(limit=1000)
    assert len(runs) == first.runs
    assert {r["status"] for r in runs} <= {"running", "succeeded", "failed", "canceled"}
    assert (await backend.query_metrics("tokens", aggregation="count"))["count"] > 0


async def test_concurrent_single_appends_share_commits_but_each_counts(backend, admin) -> None:
    run = uid("run")
    ts = NOW - timedelta(seconds=30)
    item = {"event_id": f"dup-{run}", "run_id": run, "agent_slug": "a", "type": "log", "ts": ts, "msg": "same"}
    counts = await asyncio.gather(*(backend.append_events([item]) for _ in range(12)))
    assert sorted(counts) == [0] * 11 + [1]
    ids = await asyncio.gather(
        *(
            backend.append_event(run, f"sag-{i % 4}", "log", ts + timedelta(microseconds=i), message=str(i))
            for i in range(200)
        )
    )
    assert len(set(ids)) == 200
    assert await stored(admin, backend.schema, run) == 201
    assert [e["msg"] async for e in backend.get_events(run)] == ["same", *map(str, range(200))]


async def test_a_batch_with_stored_ids_still_creates_the_runs_of_its_new_events(backend) -> None:
    old_run, new_run = uid("run"), uid("run")
    stored_batch = events(old_run, 20)
    await backend.append_events(stored_batch)
    fresh = events(new_run, 5, start=NOW - timedelta(minutes=20), agent="coder")
    assert await backend.append_events([*stored_batch, *reversed(fresh)]) == 5
    rec = await backend.get_run(new_run)
    assert (rec["status"], rec["agent_slug"]) == ("running", "coder")
    assert rec["started_at"] == datetime.fromtimestamp(fresh[0].ts_us / 1e6, UTC).isoformat(timespec="microseconds")

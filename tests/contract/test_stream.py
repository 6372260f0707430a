"""The stream_events contract: commit order, resumable cursors, replay then live, filters.

Every backend with ``capabilities.streaming`` passes this suite unchanged; the others
must refuse with UnsupportedOperation. Waits are bounded by generous hang guards only:
nothing here asserts how fast an event arrives (bench/stream.py measures that).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from magsag.backends.base import StorageBackend
from magsag.backends.errors import UnsupportedOperation, ValidationError
from magsag.backends.schema import EVENT_COLUMNS

T0 = datetime(2025, 10, 23, 8, 0, 0, tzinfo=UTC)
GUARD_S = 60  # a hang guard, not a latency target


def at(seconds: float = 0) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def take(events: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The next ``n`` events of a stream (then the stream is closed)."""
    out: list[dict[str, Any]] = []

    async def go() -> None:
        async for e in events:
            out.append(e)
            if len(out) == n:
                return

    try:
        await asyncio.wait_for(go(), GUARD_S)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return out


def streaming(backend: StorageBackend) -> None:
    if not backend.capabilities.streaming:
        with pytest.raises(UnsupportedOperation):
            backend.stream_events()
        pytest.skip(f"{backend.name}: no streaming (refuses with UnsupportedOperation, as the contract says)")


def test_stream_signature(backend: StorageBackend) -> None:
    base = inspect.signature(StorageBackend.stream_events)
    mine = inspect.signature(type(backend).stream_events)
    assert list(mine.parameters) == list(base.parameters)
    for name, p in base.parameters.items():
        assert mine.parameters[name].default == p.default and mine.parameters[name].kind == p.kind, name
    assert not inspect.iscoroutinefunction(type(backend).stream_events)


async def test_since_replays_in_commit_order_then_follows_live(backend: StorageBackend) -> None:
    streaming(backend)
    # Commit order differs from timestamp order on purpose: the stream follows commits.
    await backend.append_event("r1", "mag", "log", at(30), message="first committed")
    await backend.append_events(
        [
            {"run_id": "r1", "agent_slug": "mag", "type": "log", "ts": at(10), "msg": "batch a"},
            {"run_id": "r2", "agent_slug": "sag", "type": "metric", "ts": at(20), "msg": "batch b"},
        ]
    )
    await backend.append_event("r1", "mag", "log", at(-3600), message="before since")
    stream = backend.stream_events(since=at(0))
    got = asyncio.ensure_future(take(stream, 5))
    await backend.append_event("r3", "mag", "log", at(40), message="live 1")
    await backend.append_events([{"run_id": "r3", "agent_slug": "mag", "type": "log", "ts": at(5), "msg": "live 2"}])
    events = await got
    assert [e["msg"] for e in events] == ["first committed", "batch a", "batch b", "live 1", "live 2"]
    assert set(EVENT_COLUMNS) <= set(events[0]) and events[0]["ts"] == at(30).isoformat(timespec="microseconds")
    assert len({e["cursor"] for e in events}) == 5 and all(isinstance(e["cursor"], str) for e in events)


async def test_cursor_resumes_exactly_after(backend: StorageBackend) -> None:
    streaming(backend)
    await backend.append_events(
        [{"run_id": "r", "agent_slug": "a", "type": "log", "ts": at(i), "msg": f"m{i}"} for i in range(6)]
    )
    first = await take(backend.stream_events(since=at(0)), 3)
    assert [e["msg"] for e in first] == ["m0", "m1", "m2"]
    resumed = backend.stream_events(cursor=first[-1]["cursor"])
    got = asyncio.ensure_future(take(resumed, 4))
    await backend.append_event("r", "a", "log", at(99), message="after reconnect")
    assert [e["msg"] for e in await got] == ["m3", "m4", "m5", "after reconnect"]
    # Resuming from a later cursor, with a filter, skips what was already seen.
    again = await take(backend.stream_events(cursor=first[0]["cursor"], since=at(2)), 2)
    assert [e["msg"] for e in again] == ["m2", "m3"]


async def test_without_since_only_new_events(backend: StorageBackend) -> None:
    streaming(backend)
    await backend.append_event("r", "a", "log", at(0), message="old")
    stream = backend.stream_events(run_id="r")
    seen: list[str] = []
    done = asyncio.Event()

    async def consume() -> None:
        async for e in stream:
            seen.append(e["msg"])
            if e["msg"] == "last":
                done.set()
                return

    task = asyncio.create_task(consume())
    try:
        # The stream starts when first iterated: probe until it has started, then write.
        probes = 0
        while not seen:
            await backend.append_event("r", "a", "log", at(1 + probes), message=f"probe {probes}")
            probes += 1
            await asyncio.sleep(0.05)
            assert probes < GUARD_S * 20, "the stream never started"
        for i in range(5):
            await backend.append_event("r", "a", "log", at(100 + i), message=f"new {i}")
        await backend.append_event("r", "a", "log", at(200), message="last")
        await asyncio.wait_for(done.wait(), GUARD_S)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "old" not in seen
    first_probe = int(seen[0].split()[1])
    probes_seen = [m for m in seen if m.startswith("probe")]
    assert probes_seen == [f"probe {i}" for i in range(first_probe, probes)]
    assert seen[len(probes_seen) :] == [f"new {i}" for i in range(5)] + ["last"]


async def test_filters(backend: StorageBackend) -> None:
    streaming(backend)
    rows = [
        ("r1", "mag", "log", "info", "a"),
        ("r1", "mag", "mcp.call", "error", "b"),
        ("r2", "sag", "log", "error", "c"),
        ("r2", "sag", "metric", "info", "d"),
        ("r1", "mag", "log", "warning", "e"),
    ]
    await backend.append_events(
        [
            {"run_id": r, "agent_slug": a, "type": t, "level": lv, "ts": at(i), "msg": m}
            for i, (r, a, t, lv, m) in enumerate(rows)
        ]
        + [{"run_id": "r9", "agent_slug": "zzz", "type": "zzz", "level": "critical", "ts": at(60), "msg": "end"}]
    )

    async def msgs(n: int, **kw: Any) -> list[str]:
        return [e["msg"] for e in await take(backend.stream_events(since=at(0), **kw), n)]

    assert await msgs(3, run_id="r1") == ["a", "b", "e"]
    assert await msgs(2, agent_slug="sag") == ["c", "d"]
    assert await msgs(2, event_type="log", run_id="r1") == ["a", "e"]
    assert await msgs(2, level="ERROR") == ["b", "c"]
    assert await msgs(1, level="warn") == ["e"]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"level": "loud"}, "level"),
        ({"since": datetime(2025, 1, 1)}, "naive"),
        ({"since": "yesterday"}, "since"),
        ({"run_id": ""}, "run_id"),
        ({"agent_slug": 7}, "agent_slug"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "s:notanumber"}, "cursor"),
        ({"cursor": "p:1.2~x"}, "cursor"),
    ],
)
def test_bad_arguments_are_refused_at_the_call(backend: StorageBackend, kwargs: dict[str, Any], needle: str) -> None:
    if not backend.capabilities.streaming:
        pytest.skip("no streaming")
    with pytest.raises(ValidationError, match=needle):
        backend.stream_events(**kwargs)


async def test_many_events_and_concurrent_writers_arrive_once_in_order(backend: StorageBackend) -> None:
    streaming(backend)
    writers, per_writer = 8, 40
    stream = backend.stream_events(since=at(0))
    got = asyncio.ensure_future(take(stream, writers * per_writer + 1500))

    async def writer(k: int) -> None:
        for i in range(per_writer):
            await backend.append_event(f"w{k}", "a", "log", at(i), message=f"w{k} {i}")

    await asyncio.gather(*(writer(k) for k in range(writers)))
    await backend.append_events(
        [
            {
                "run_id": "bulk",
                "agent_slug": "a",
                "type": "log",
                "ts": at(
                    1,
                ),
                "msg": f"b{i}",
            }
            for i in range(1500)
        ]
    )
    events = await got
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)  # nothing twice
    for k in range(writers):  # each writer's own appends in the order it made them
        assert [e["msg"] for e in events if e["run_id"] == f"w{k}"] == [f"w{k} {i}" for i in range(per_writer)]
    assert [e["msg"] for e in events if e["run_id"] == "bulk"] == [f"b{i}" for i in range(1500)]
    # Resuming from any cursor yields exactly the rest (spot checks).
    for cut in (0, 137, len(events) - 2):
        rest = await take(backend.stream_events(cursor=events[cut]["cursor"]), 1)
        assert rest[0]["event_id"] == ids[cut + 1]


async def test_follow_false_ends_once_caught_up(backend: StorageBackend) -> None:
    streaming(backend)
    await backend.append_events(
        [{"run_id": "r", "agent_slug": "a", "type": "log", "ts": at(i), "msg": f"m{i}"} for i in range(3)]
    )

    async def replay(**kw: Any) -> list[str]:
        return [e["msg"] async for e in backend.stream_events(follow=False, **kw)]

    assert await asyncio.wait_for(replay(since=at(1)), GUARD_S) == ["m1", "m2"]
    assert await asyncio.wait_for(replay(), GUARD_S) == []

"""PostgreSQL stream_events: transactions that commit out of sequence order, other writers,
dropped notifications, and a store upgraded from schema v2 (backends/postgres/stream.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from magsag.backends.schema import EVENT_COLUMNS, Event

from tests.contract.test_stream import GUARD_S, take

pytestmark = pytest.mark.postgres

T0 = datetime(2025, 10, 23, 8, tzinfo=UTC)


def raw_insert_sql(schema: str) -> str:
    marks = ", ".join(f"${i}" for i in range(1, len(EVENT_COLUMNS) + 1))
    return f"INSERT INTO {schema}.events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})"


def row(msg: str, seconds: float = 0) -> tuple[Any, ...]:
    return Event.create("raw", "other-writer", "log", T0 + timedelta(seconds=seconds), message=msg).row()


async def test_a_transaction_committing_late_is_not_skipped(make_backend: Any, admin: Any) -> None:
    backend = await make_backend("late")
    await backend.ensure_days([T0.date().toordinal() - datetime(1970, 1, 1).toordinal()])
    stream = backend.stream_events(since=T0)
    got = asyncio.ensure_future(take(stream, 2))
    slow = admin
    tx = slow.transaction()
    await tx.start()
    await slow.execute(raw_insert_sql(backend.schema), *row("takes its seq first, commits last"))
    # Another writer takes a larger seq and commits first.
    await backend.append_event("fast", "a", "log", T0 + timedelta(seconds=1), message="commits first")
    assert not got.done()
    await tx.commit()
    events = await asyncio.wait_for(got, GUARD_S)
    # A stream on seq alone would have read "commits first" and stepped over the other for good.
    assert [e["msg"] for e in events] == ["takes its seq first, commits last", "commits first"]


async def test_other_writers_wake_the_stream_and_dropped_notifications_lose_nothing(
    make_backend: Any, admin: Any
) -> None:
    backend = await make_backend("wake")
    backend.stream_poll_s = 0.2
    stream = backend.stream_events(since=T0)
    got = asyncio.ensure_future(take(stream, 3))
    await backend.append_event("r", "a", "log", T0, message="ours")
    while backend._stream._conn is None:  # the listener connects on the stream's first wait
        await asyncio.sleep(0.02)
    before = backend._stream.notifications
    await admin.execute(raw_insert_sql(backend.schema), *row("another client's insert", 1))
    # Notifications dropped: the trigger is off and the listening session is killed.
    await admin.execute(f"ALTER TABLE {backend.schema}.events DISABLE TRIGGER magsag_notify_events")
    await admin.execute("SELECT pg_terminate_backend($1)", backend._stream._conn.get_server_pid())
    await admin.execute(raw_insert_sql(backend.schema), *row("written while nobody is notified", 2))
    events = await asyncio.wait_for(got, GUARD_S)
    assert [e["msg"] for e in events] == ["ours", "another client's insert", "written while nobody is notified"]
    assert backend._stream.notifications > before  # the other client's commit did notify


async def test_a_v2_store_streams_its_old_rows_first(make_backend: Any, admin: Any, monkeypatch: Any) -> None:
    from magsag.backends.postgres import schema as postgres_schema

    monkeypatch.setattr(postgres_schema, "STEPS", {k: postgres_schema.STEPS[k] for k in (1, 2)})
    old = await make_backend("upgrade")
    await old.append_events(
        [
            {"run_id": "old", "agent_slug": "a", "type": "log", "ts": T0 + timedelta(seconds=i), "msg": f"old {i}"}
            for i in range(3)
        ]
    )
    await old.close()
    monkeypatch.undo()
    new = await make_backend("upgrade")
    assert new.schema_version == postgres_schema.PG_SCHEMA_VERSION
    zero = await admin.fetchval(f"SELECT count(*) FROM {new.schema}.events WHERE tx = '0'::xid8")
    assert zero == 3
    stream = new.stream_events(since=T0)
    got = asyncio.ensure_future(take(stream, 4))
    await new.append_event("new", "a", "log", T0, message="after the upgrade")
    assert [e["msg"] for e in await got] == ["old 0", "old 1", "old 2", "after the upgrade"]

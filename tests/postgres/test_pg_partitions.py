"""Day partitions: created ahead at init, on demand for late/early events, right bounds."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from magsag.backends.postgres.schema import partition_name
from magsag.backends.schema import Event

from tests.clock import PINNED_TODAY

pytestmark = pytest.mark.postgres

TODAY = PINNED_TODAY


async def partitions(admin, schema: str) -> dict[str, str]:
    """name -> bound expression, straight from pg_inherits."""
    rows = await admin.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
        f"{schema}.events",
    )
    return {r["relname"]: r["bound"] for r in rows}


def day_name(d: date) -> str:
    return "events_" + d.strftime("%Y%m%d")


async def test_partitions_are_created_ahead_at_init(make_backend, admin) -> None:
    backend = await make_backend("ahead", premake_days=3)
    found = await partitions(admin, backend.schema)
    expected = {day_name(TODAY + timedelta(days=k)) for k in range(-1, 4)}
    assert expected <= set(found)
    bound = found[day_name(TODAY)]
    start = TODAY.isoformat()
    end = (TODAY + timedelta(days=1)).isoformat()
    assert bound == f"FOR VALUES FROM ('{start} 00:00:00+00') TO ('{end} 00:00:00+00')"


async def test_late_and_early_events_get_partitions_on_demand(make_backend, admin) -> None:
    backend = await make_backend("demand", premake_days=2)
    late = [
        datetime(2019, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2020, 1, 1, 0, 0, 0, tzinfo=UTC),
        datetime(2020, 2, 29, 12, 0, tzinfo=UTC),
    ]
    early = datetime.combine(TODAY + timedelta(days=40), datetime.min.time(), tzinfo=UTC) + timedelta(hours=3)
    batch = [Event.create("run-late", "planner", "log", ts, message=str(ts)) for ts in late]
    assert await backend.append_events(batch) == 3
    await backend.append_event("run-early", "planner", "log", early, message="from the future")

    found = await partitions(admin, backend.schema)
    for name in ("events_20191231", "events_20200101", "events_20200229", day_name(early.date())):
        assert name in found
    # a new day at or after today also gets the following days ahead
    assert day_name(early.date() + timedelta(days=2)) in found
    # each row sits in the partition of its own UTC day (23:59:59.999999 vs 00:00:00)
    rows = await admin.fetch(f"SELECT tableoid::regclass::text AS part, msg FROM {backend.schema}.events")
    where = {r["msg"]: r["part"].rsplit(".", 1)[-1] for r in rows}
    assert where[str(late[0])] == "events_20191231"
    assert where[str(late[1])] == "events_20200101"
    assert where["from the future"] == day_name(early.date())


async def test_two_processes_creating_the_same_day(make_backend, admin) -> None:
    a = await make_backend("race")
    b = await make_backend("race")  # same schema, its own pool: as another process would
    day = datetime(2021, 6, 15, tzinfo=UTC)

    async def load(backend, tag: str) -> int:
        batch = [
            Event.create(f"run-{tag}", "planner", "log", day + timedelta(minutes=i), message=f"{tag} {i}")
            for i in range(50)
        ]
        return await backend.append_events(batch)

    assert await asyncio.gather(load(a, "a"), load(b, "b")) == [50, 50]
    found = await partitions(admin, a.schema)
    assert "events_20210615" in found
    assert await admin.fetchval(f"SELECT count(*) FROM {a.schema}.events_20210615") == 100


async def test_a_partition_dropped_elsewhere_is_recreated(make_backend, admin) -> None:
    a = await make_backend("stale")
    b = await make_backend("stale")
    old = datetime(2022, 3, 1, 8, 0, tzinfo=UTC)
    await a.append_event("run-1", "planner", "log", old, message="one")
    await b.update_run("run-1", status="succeeded")
    result = await b.vacuum(hot_days=30)
    assert "2022-03-01" in result["partitions_dropped"]
    assert "events_20220301" not in await partitions(admin, a.schema)
    # a still believes the day exists; its insert must recreate it, not fail
    await a.append_event("run-2", "planner", "log", old + timedelta(hours=1), message="two")
    await a.append_events([Event.create("run-3", "planner", "log", old + timedelta(hours=2), message="three")])
    assert "events_20220301" in await partitions(admin, a.schema)
    assert await admin.fetchval(f"SELECT count(*) FROM {a.schema}.events_20220301") == 2


async def test_day_partitions_are_easy_to_find(make_backend) -> None:
    backend = await make_backend("find")
    day = date(2023, 7, 4)
    await backend.append_event("run-x", "planner", "log", datetime(2023, 7, 4, 9, tzinfo=UTC), message="x")
    listed = await backend.day_partitions()
    days = [p["day"] for p in listed]
    assert days == sorted(days)
    entry = next(p for p in listed if p["day"] == "2023-07-04")
    assert entry["table"] == f"{backend.schema}.{partition_name(19542)}" == backend.partition_table(day)
    assert entry["bytes"] > 0
    assert backend.partition_table(date(1999, 1, 1)) is None

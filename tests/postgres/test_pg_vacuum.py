"""vacuum on PostgreSQL: whole day partitions dropped, DELETE only for partial days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from magsag.backends.errors import ValidationError
from magsag.backends.schema import Event

from tests.clock import PINNED_TODAY

pytestmark = pytest.mark.postgres

TODAY = PINNED_TODAY


def at(d: date, hour: int = 12) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=UTC)


async def partition_names(admin, schema: str) -> set[str]:
    rows = await admin.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass($1)",
        f"{schema}.events",
    )
    return {r["relname"] for r in rows}


async def run_on(backend, run_id: str, day: date, n: int, *, status: str | None = "succeeded") -> None:
    await backend.create_run(run_id, "planner", started_at=at(day, 1))
    await backend.append_events(
        [
            Event.create(run_id, "planner", "log", at(day, 2) + timedelta(seconds=i), message=f"{run_id} {i}")
            for i in range(n)
        ]
    )
    if status:
        await backend.update_run(run_id, status=status, ended_at=at(day, 3))


def name(d: date) -> str:
    return "events_" + d.strftime("%Y%m%d")


async def test_whole_old_days_are_dropped_as_partitions(make_backend, admin) -> None:
    b = await make_backend("drop")
    old1, old2, recent = TODAY - timedelta(days=12), TODAY - timedelta(days=10), TODAY - timedelta(days=1)
    await run_on(b, "run-old1", old1, 30)
    await run_on(b, "run-old2", old2, 20)
    await run_on(b, "run-recent", recent, 5)
    before = await partition_names(admin, b.schema)
    assert {name(old1), name(old2), name(recent)} <= before

    result = await b.vacuum(hot_days=7)

    assert result["dry_run"] is False
    assert result["events_deleted"] == 50
    assert result["runs_deleted"] == 2
    assert set(result["partitions_dropped"]) >= {old1.isoformat(), old2.isoformat()}
    assert result["days"] == [old1.isoformat(), old2.isoformat()]
    after = await partition_names(admin, b.schema)
    assert name(old1) not in after and name(old2) not in after
    assert name(recent) in after and name(TODAY) in after
    assert await b.get_run("run-old1") is None
    assert await b.get_run("run-recent") is not None
    assert await admin.fetchval(f"SELECT count(*) FROM {b.schema}.events") == 5


async def test_a_day_with_a_running_run_is_deleted_from_not_dropped(make_backend, admin) -> None:
    b = await make_backend("partial")
    old = TODAY - timedelta(days=9)
    await run_on(b, "run-done", old, 10)
    await run_on(b, "run-live", old, 4, status=None)  # still running
    result = await b.vacuum(hot_days=7)
    assert result["events_deleted"] == 10
    assert result["partitions_dropped"] == []
    assert name(old) in await partition_names(admin, b.schema)
    left = await admin.fetch(f"SELECT DISTINCT run_id FROM {b.schema}.{name(old)}")
    assert [r["run_id"] for r in left] == ["run-live"]
    assert (await b.get_run("run-live"))["status"] == "running"
    assert await b.get_run("run-done") is None


async def test_keep_days_are_left_alone(make_backend, admin) -> None:
    b = await make_backend("keep")
    d1, d2 = TODAY - timedelta(days=20), TODAY - timedelta(days=19)
    await run_on(b, "run-1", d1, 3)
    await run_on(b, "run-2", d2, 3)
    result = await b.vacuum(hot_days=7, keep_days=[d2.isoformat()])
    assert result["kept_days"] == [d2.isoformat()]
    assert result["events_deleted"] == 3
    names = await partition_names(admin, b.schema)
    assert name(d1) not in names and name(d2) in names
    assert await b.get_run("run-2") is not None
    with pytest.raises(ValidationError, match="keep_days"):
        await b.vacuum(keep_days=["not-a-day"])


async def test_dry_run_reports_and_changes_nothing(make_backend, admin) -> None:
    b = await make_backend("dry")
    old = TODAY - timedelta(days=15)
    await run_on(b, "run-1", old, 7)
    before = await partition_names(admin, b.schema)
    result = await b.vacuum(hot_days=7, dry_run=True)
    assert result["dry_run"] is True
    assert result["events_to_delete"] == 7
    assert result["runs_to_delete"] == 1
    assert old.isoformat() in result["partitions_to_drop"]
    assert await partition_names(admin, b.schema) == before
    assert await admin.fetchval(f"SELECT count(*) FROM {b.schema}.events") == 7


@pytest.mark.parametrize(
    ("now", "hot_days", "gone", "kept"),
    [
        (datetime(2026, 1, 2, 10, tzinfo=UTC), 3, date(2025, 12, 29), date(2025, 12, 30)),
        (datetime(2024, 3, 1, 0, 30, tzinfo=UTC), 1, date(2024, 2, 28), date(2024, 2, 29)),
    ],
)
async def test_cutoff_across_year_and_month_ends(make_backend, admin, now, hot_days, gone, kept) -> None:
    b = await make_backend(f"edge{now.year}")
    await b.create_run("run-a", "planner", started_at=at(gone, 0))
    await b.append_events(
        [
            Event.create(
                "run-a",
                "planner",
                "log",
                datetime.combine(kept, datetime.min.time(), UTC) - timedelta(microseconds=1),
                message="last of gone",
            ),
            Event.create(
                "run-a", "planner", "log", datetime.combine(kept, datetime.min.time(), UTC), message="first kept"
            ),
        ]
    )
    await b.update_run("run-a", status="failed", ended_at=at(kept, 1))
    result = await b.vacuum(hot_days=hot_days, now=now)
    assert result["cutoff"] == f"{kept.isoformat()}T00:00:00.000000+00:00"
    assert result["events_deleted"] == 1
    assert gone.isoformat() in result["partitions_dropped"]
    names = await partition_names(admin, b.schema)
    assert name(gone) not in names and name(kept) in names
    assert [e["msg"] async for e in b.get_events("run-a")] == ["first kept"]
    assert await b.get_run("run-a") is not None  # it ended after the cutoff


async def test_max_disk_mb_drops_oldest_days_first_but_never_today(make_backend, admin) -> None:
    b = await make_backend("disk")
    days = [TODAY - timedelta(days=k) for k in (6, 5, 4)]
    for i, d in enumerate(days):
        await run_on(b, f"run-{i}", d, 200)
    await run_on(b, "run-today", TODAY, 10)
    result = await b.vacuum(hot_days=30, max_disk_mb=0.001)
    assert result["cutoff"] == f"{TODAY.isoformat()}T00:00:00.000000+00:00"
    assert set(result["partitions_dropped"]) >= {d.isoformat() for d in days}
    names = await partition_names(admin, b.schema)
    assert name(TODAY) in names and not any(name(d) in names for d in days)
    assert await admin.fetchval(f"SELECT count(*) FROM {b.schema}.events") == 10


async def test_events_arriving_for_a_vacuumed_day_recreate_it(make_backend, admin) -> None:
    b = await make_backend("late")
    old = TODAY - timedelta(days=11)
    await run_on(b, "run-1", old, 3)
    await b.vacuum(hot_days=7)
    assert name(old) not in await partition_names(admin, b.schema)
    await b.append_event("run-2", "planner", "log", at(old, 5), message="straggler")
    assert name(old) in await partition_names(admin, b.schema)
    assert [e["msg"] async for e in b.get_events("run-2")] == ["straggler"]


async def test_drop_day_partition_for_tiering(make_backend, admin) -> None:
    b = await make_backend("tier")
    old = TODAY - timedelta(days=3)
    await run_on(b, "run-live", old, 6, status=None)
    assert await b.drop_day_partition(old) == 6  # whatever runs it holds
    assert name(old) not in await partition_names(admin, b.schema)
    assert await b.drop_day_partition(old) == 0

"""Loading lakes into ClickHouse: both paths identical, idempotent, ledger-driven, verified."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from magsag.backends.arrow import events_table
from magsag.backends.schema import Event, Run, day_of_us, event_record, run_record
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.clickhouse import sql
from magsag.lakehouse.clickhouse.engines import Engine
from magsag.lakehouse.clickhouse.load import VerificationError, load_lake, plan_load, read_ledger
from magsag.lakehouse.objstore import Lake, open_lake

from tests.clickhouse_helpers import fresh_engine
from tests.lake_builder import write_lake, write_table

Demo = tuple[list[Event], list[Run]]


def dump(engine: Engine, dataset: str) -> pa.Table:
    key = "event_id" if dataset == "events" else "run_id"
    return engine.arrow(f"SELECT * FROM {sql.table(engine.database, dataset)} ORDER BY {key}")


def records(engine: Engine, dataset: str) -> list[dict[str, Any]]:
    key = "event_id" if dataset == "events" else "run_id"
    rows = engine.rows(f"SELECT {sql.select_list(dataset)} FROM {sql.table(engine.database, dataset)} ORDER BY {key}")
    return [event_record(r) if dataset == "events" else run_record(r) for r in rows]


def expected(demo: Demo, dataset: str) -> list[dict[str, Any]]:
    events, runs = demo
    if dataset == "events":
        return [event_record(e.row()) for e in sorted(events, key=lambda e: e.event_id)]
    return [run_record(r.row()) for r in sorted(runs, key=lambda r: r.run_id)]


def counts(engine: Engine, dataset: str) -> dict[str, int]:
    return {d: int(n) for d, n in engine.rows(sql.rows_by_day(engine.database, dataset, dataset))}


def n_parts(lake: Lake) -> int:
    return sum(len(manifest.partitions(lake, ds)) for ds in ("events", "runs"))


def manifest_counts(lake: Lake, dataset: str) -> dict[str, int]:
    return {d.isoformat(): sum(e.rows for e in es) for d, es in manifest.partitions(lake, dataset).items()}


# ----------------------------------------------------------- both paths


def test_local_lake_server_side_and_client_side_give_identical_tables(
    engine_kind: str, local_lake: Lake, demo: Demo
) -> None:
    with fresh_engine(engine_kind) as server, fresh_engine(engine_kind) as client:
        a = load_lake(server, local_lake)
        b = load_lake(client, local_lake, client_side=True)
        assert b.mode == "client"
        if engine_kind == "chdb":
            assert a.mode == "server" and a.fallback is None
        else:  # a remote server cannot read this machine's folder
            assert a.mode == "client" and "cannot read a local folder" in (a.fallback or "")
        assert a.loaded_partitions == b.loaded_partitions == n_parts(local_lake)
        for dataset in ("events", "runs"):
            assert dump(server, dataset).equals(dump(client, dataset))
            assert records(server, dataset) == expected(demo, dataset)
            assert counts(server, dataset) == manifest_counts(local_lake, dataset)


def test_s3_lake_server_side_and_client_side_give_identical_tables(
    engine_kind: str, s3_lake: Lake, local_lake: Lake, demo: Demo
) -> None:
    with (
        fresh_engine(engine_kind) as server,
        fresh_engine(engine_kind) as client,
        fresh_engine(engine_kind) as local,
    ):
        a = load_lake(server, s3_lake)
        b = load_lake(client, s3_lake, client_side=True)
        load_lake(local, local_lake)
        if engine_kind == "chdb":
            assert a.mode == "server"  # chDB read the Parquet from SeaweedFS itself (s3())
        assert b.mode == "client"
        for dataset in ("events", "runs"):
            assert dump(server, dataset).equals(dump(client, dataset))
            assert dump(server, dataset).equals(dump(local, dataset))
        assert records(server, "events") == expected(demo, "events")


def test_server_that_cannot_reach_the_lake_falls_back_to_client_side(s3_lake: Lake) -> None:
    with fresh_engine("chdb") as engine:
        report = load_lake(engine, s3_lake, s3_endpoint_url="http://127.0.0.1:9")  # as if the server saw no S3
        assert report.mode == "client" and "cannot read the lake itself" in (report.fallback or "")
        assert report.loaded_partitions == n_parts(s3_lake)
        assert counts(engine, "events") == manifest_counts(s3_lake, "events")


def test_lake_on_another_fsspec_protocol_loads_client_side(demo: Demo) -> None:
    lake = open_lake("memory://ch-lake-test")
    write_lake(lake, *demo)
    try:
        with fresh_engine("chdb") as engine:
            report = load_lake(engine, lake)
            assert report.mode == "client" and report.fallback
            assert records(engine, "runs") == expected(demo, "runs")
    finally:
        lake.fs.rm(lake.root, recursive=True)


# ---------------------------------------------------------- idempotence


def test_reloading_a_partition_replaces_it(chdb: Engine, local_lake: Lake, demo: Demo) -> None:
    load_lake(chdb, local_lake)
    before = dump(chdb, "events")
    again = load_lake(chdb, local_lake, force=True)
    assert again.loaded_partitions == n_parts(local_lake)
    again = load_lake(chdb, local_lake, force=True, client_side=True)
    assert dump(chdb, "events").equals(before)  # nothing duplicated, nothing missing
    chdb.command(f"OPTIMIZE TABLE {sql.table(chdb.database, 'events')} FINAL")
    assert dump(chdb, "events").equals(before)
    assert counts(chdb, "events") == manifest_counts(local_lake, "events")
    assert sum(counts(chdb, "runs").values()) == len(demo[1])


def test_scheduled_run_loads_only_new_or_changed_partitions(chdb: Engine, local_lake: Lake, demo: Demo) -> None:
    first = load_lake(chdb, local_lake)
    n = n_parts(local_lake)
    assert first.loaded_partitions == n and first.skipped_partitions == 0
    ledger = read_ledger(chdb)
    assert len(ledger) == n and all(v[1] > 0 for v in ledger.values())

    second = load_lake(chdb, local_lake)
    assert second.loaded_partitions == 0 and second.skipped_partitions == n
    assert {p["action"] for p in second.partitions} == {"current"}

    # a late file for one day: only that partition is reloaded
    day = min(manifest.partitions(local_lake, "events"))
    late = [Event.create("late-run", "late-agent", "log", f"{day.isoformat()}T23:59:59Z", message="late error arrives")]
    write_table(local_lake, "events", day, events_table([e.row() for e in late]), job_id="late")
    plans, _ = plan_load(chdb, local_lake)
    assert {(p.dataset, p.day): p.action for p in plans if p.action != "current"} == {("events", day): "changed"}
    third = load_lake(chdb, local_lake)
    assert third.loaded_partitions == 1 and third.loaded_rows == manifest_counts(local_lake, "events")[day.isoformat()]
    assert counts(chdb, "events") == manifest_counts(local_lake, "events")
    assert records(chdb, "events") == sorted(
        expected(demo, "events") + [event_record(e.row()) for e in late], key=lambda r: r["event_id"]
    )
    after = read_ledger(chdb)
    for key, (fp, _rows, loaded_at) in ledger.items():
        if key == ("events", day):
            assert after[key][0] != fp and after[key][2] > loaded_at
        else:
            assert after[key] == (fp, _rows, loaded_at)  # untouched


def test_compaction_that_replaces_files_reloads_the_day(chdb: Engine, local_lake: Lake) -> None:
    load_lake(chdb, local_lake)
    before = dump(chdb, "events")
    day, entries = next(iter(manifest.partitions(local_lake, "events").items()))
    import pyarrow.parquet as pq

    merged = pa.concat_tables([pq.read_table(local_lake.fs.open(local_lake.path(e.path))) for e in entries])
    new = write_table(local_lake, "events", day, merged, job_id="compact")
    manifest.write_entry(local_lake, dataclasses.replace(new, replaces=tuple(e.path for e in entries)))
    report = load_lake(chdb, local_lake)
    assert [(p["dataset"], p["action"]) for p in report.partitions if p["action"] != "current"] == [
        ("events", "changed")
    ]
    assert dump(chdb, "events").equals(before)


def test_new_day_in_the_lake_is_new(chdb: Engine, local_lake: Lake, demo: Demo) -> None:
    load_lake(chdb, local_lake)
    last = max(manifest.partitions(local_lake, "events"))
    nxt = last + timedelta(days=1)
    e = Event.create("r-next", "a", "log", f"{nxt.isoformat()}T01:00:00Z", message="next day")
    write_lake(local_lake, [e], job_id="nextday")
    report = load_lake(chdb, local_lake)
    assert [(p["dt"], p["action"]) for p in report.partitions if p["action"] != "current"] == [(nxt.isoformat(), "new")]
    assert counts(chdb, "events")[nxt.isoformat()] == 1


# -------------------------------------------------------------- verification


def _corrupt_rows(lake: Lake, dataset: str, day: date, delta: int) -> None:
    entry = manifest.partitions(lake, dataset)[day][0]
    manifest.write_entry(lake, dataclasses.replace(entry, rows=entry.rows + delta))


def test_row_count_mismatch_stops_the_load_and_keeps_the_ledger(chdb: Engine, local_lake: Lake) -> None:
    load_lake(chdb, local_lake)
    before, ledger = dump(chdb, "events"), read_ledger(chdb)
    day = min(manifest.partitions(local_lake, "events"))
    _corrupt_rows(local_lake, "events", day, 5)
    for client_side in (False, True):
        with pytest.raises(VerificationError, match=f"events/dt={day.isoformat()}: the lake manifest lists") as err:
            load_lake(chdb, local_lake, client_side=client_side)
        assert "ledger not updated" in str(err.value) and "\n" not in str(err.value)
        assert dump(chdb, "events").equals(before)  # the day was not swapped
        assert read_ledger(chdb) == ledger
    plans, _ = plan_load(chdb, local_lake)
    assert [p.action for p in plans if p.dataset == "events" and p.day == day] == ["changed"]  # retried next time
    tables = chdb.rows(sql.tables_in_database(chdb.database))
    assert not [t for t in tables if t[0].startswith(sql.STAGE_PREFIX)]  # staging dropped


def test_rows_outside_the_partition_day_are_refused(chdb: Engine, tmp_path: Path) -> None:
    lake = open_lake(str(tmp_path / "bad"))
    d = date(2025, 10, 23)
    rows = [
        Event.create("r", "a", "log", "2025-10-23T10:00:00Z", message="in the day").row(),
        Event.create("r", "a", "log", "2025-10-24T10:00:00Z", message="next day").row(),
    ]
    # written by hand (the lake writer refuses such a file): a foreign or broken writer's partition
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(events_table(rows), buf)
    rel = layout.data_path("events", d, "wrongday")
    lake.fs.makedirs(lake.path(layout.partition_dir("events", d)), exist_ok=True)
    lake.fs.pipe_file(lake.path(rel), buf.getvalue())
    manifest.write_entry(
        lake,
        manifest.ManifestEntry(
            dataset="events",
            dt=d.isoformat(),
            path=rel,
            rows=2,
            bytes=len(buf.getvalue()),
            min_ts=None,
            max_ts=None,
            checksum=manifest.checksum_bytes(buf.getvalue()),
            job_id="wrongday",
            committed_at=manifest.now_iso(),
        ),
    )
    with pytest.raises(VerificationError, match=r"1 rows outside the day, in 2025-10-24"):
        load_lake(chdb, lake)
    assert counts(chdb, "events") == {}


def test_missing_data_file_is_one_line_error(chdb: Engine, local_lake: Lake) -> None:
    entry = next(iter(manifest.partitions(local_lake, "runs").values()))[0]
    local_lake.fs.rm(local_lake.path(entry.path))
    for client_side in (False, True):
        with pytest.raises(Exception, match=r"(?i)(cannot read|no such file|not exist|file)") as err:
            load_lake(chdb, local_lake, client_side=client_side, datasets=("runs",))
        assert "\n" not in str(err.value)
    assert ("runs", entry.day) not in read_ledger(chdb)


# ------------------------------------------------------------- selection


def test_dry_run_changes_nothing(chdb: Engine, local_lake: Lake) -> None:
    report = load_lake(chdb, local_lake, dry_run=True)
    assert report.dry_run and report.loaded_partitions == 0
    assert [p["action"] for p in report.partitions] == ["new"] * n_parts(local_lake)
    assert counts(chdb, "events") == {} and read_ledger(chdb) == {}


def test_since_until_and_partition_select_days(chdb: Engine, local_lake: Lake) -> None:
    days = sorted(manifest.partitions(local_lake, "events"))
    r = load_lake(chdb, local_lake, since=days[1], until=days[2], datasets=("events",))
    assert [p["dt"] for p in r.partitions] == [days[1].isoformat()]
    r = load_lake(chdb, local_lake, days=[days[0]])
    assert {(p["dataset"], p["dt"]) for p in r.partitions} == {
        ("events", days[0].isoformat()),
        ("runs", days[0].isoformat()),
    }
    assert set(counts(chdb, "events")) == {days[0].isoformat(), days[1].isoformat()}


def test_partitions_past_the_ttl_are_not_loaded(chdb: Engine, local_lake: Lake) -> None:
    last = max(manifest.partitions(local_lake, "events"))
    plans, _ = plan_load(chdb, local_lake, ttl_days=2, today=last)
    # a day is past a 2-day TTL once all its rows are: day + 1 + 2 <= today
    assert {(p.day, p.action) for p in plans} == {
        (p.day, "expired" if p.day + timedelta(days=3) <= last else "new") for p in plans
    }
    assert {p.action for p in plans} == {"new", "expired"}
    far = date(2099, 1, 1)
    plans, _ = plan_load(chdb, local_lake, ttl_days=2, today=far)
    assert {p.action for p in plans} == {"expired"}
    report = load_lake(chdb, local_lake, ttl_days=1)  # the demo days are long past a 1-day TTL
    assert report.loaded_partitions == 0 and {p["action"] for p in report.partitions} == {"expired"}


def test_ledger_days_gone_from_the_lake_are_reported(chdb: Engine, local_lake: Lake) -> None:
    load_lake(chdb, local_lake)
    day = min(manifest.partitions(local_lake, "runs"))
    local_lake.fs.rm(local_lake.path(layout.partition_dir("runs", day)), recursive=True)
    local_lake.fs.rm(local_lake.path(layout.manifest_dir("runs", day)), recursive=True)
    report = load_lake(chdb, local_lake)
    assert report.not_in_lake == [f"runs/dt={day.isoformat()}"]
    assert day.isoformat() in counts(chdb, "runs")  # kept: the lake is not ClickHouse's retention


def test_progress_reaches_the_total(chdb: Engine, local_lake: Lake, demo: Demo) -> None:
    for client_side in (False, True):
        seen: list[tuple[int, int, str]] = []
        load_lake(chdb, local_lake, force=True, client_side=client_side, progress=lambda *a, seen=seen: seen.append(a))
        assert seen[-1][0] == seen[-1][1] == len(demo[0]) + len(demo[1])
        assert {w.split("/")[0] for _, _, w in seen} == {"events", "runs"}


def test_day_of_every_loaded_row_is_its_partition(chdb: Engine, local_lake: Lake) -> None:
    load_lake(chdb, local_lake)
    rows = chdb.rows(
        f"SELECT _partition_id, toUnixTimestamp64Micro(ts) FROM {sql.table(chdb.database, 'events')} LIMIT 50"
    )
    assert rows and all(pid == day_of_us(us).strftime("%Y%m%d") for pid, us in rows)

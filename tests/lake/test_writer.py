"""PartitionWriter + publish on a local folder and a real S3 server (SeaweedFS)."""

from __future__ import annotations

from collections import Counter
from datetime import date

import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from magsag.backends.errors import IntegrityError, NotFoundError, StorageError, ValidationError
from magsag.backends.schema import EVENT_COLUMNS, RUN_COLUMNS, event_arrow_schema, iso_from_us, run_arrow_schema
from magsag.lakehouse import faults, lakestore, lakewriter, layout, manifest
from magsag.lakehouse.lakewriter import PartitionWriter, StagedFile, publish

from tests.lake import data


@pytest.fixture(scope="module")
def demo() -> tuple[list, list]:
    return data.demo(days=3, runs_per_day=12)


def _files(lake, rel: str) -> list[str]:
    return [f.rsplit("/", 1)[-1] for f in lakewriter.list_files(lake, rel)]


def test_round_trip_read_back_by_duckdb_polars_and_pyarrow(lake, demo) -> None:
    events, runs = demo
    written_events: Counter = Counter()
    for day, rows in data.by_day(events, 1).items():
        half = len(rows) // 2
        data.write_file(lake, "events", day, rows[:half], "job-a", 0)
        data.write_file(lake, "events", day, rows[half:], "job-a", 1)
        written_events.update(rows)
    for day, rows in data.by_day(runs, 4).items():
        data.write_file(lake, "runs", day, rows, "job-a", 0)
    assert sum(written_events.values()) == len(events)

    con = data.duckdb_for(lake)
    glob = lake.uri(layout.data_glob("events"))
    duck = con.execute(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").arrow()
    if isinstance(duck, pa.RecordBatchReader):
        duck = duck.read_all()
    assert "dt" in duck.column_names
    assert Counter(data.to_rows("events", duck)) == written_events
    first_day = min(data.by_day(events, 1))
    n = con.execute(
        f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true) WHERE dt = ?", [first_day]
    ).fetchone()[0]
    assert n == len(data.by_day(events, 1)[first_day])

    pol = pl.scan_parquet(glob, hive_partitioning=True, storage_options=lake.storage_options() or None).collect()
    assert Counter(data.to_rows("events", pol.to_arrow())) == written_events

    fs = None if lake.is_local else pa.fs.PyFileSystem(pa.fs.FSSpecHandler(lake.fs))
    arrow = pads.dataset(lake.path("events"), filesystem=fs, format="parquet", partitioning="hive").to_table()
    assert Counter(data.to_rows("events", arrow)) == written_events

    runs_glob = lake.uri(layout.data_glob("runs"))
    duck_runs = con.execute(f"SELECT * FROM read_parquet('{runs_glob}', hive_partitioning = true)").arrow()
    if isinstance(duck_runs, pa.RecordBatchReader):
        duck_runs = duck_runs.read_all()
    assert Counter(data.to_rows("runs", duck_runs)) == Counter(runs)
    # nothing left in staging, and every data file has its entry
    assert _files(lake, layout.STAGING_DIR) == []
    assert len(manifest.live_entries(lake, "events")) == 2 * len(data.by_day(events, 1))


def test_file_keeps_order_schema_and_parquet_settings(lake, demo) -> None:
    events, _ = demo
    day, rows = data.busiest_day(events)
    table = data.sorted_table("events", rows)
    with PartitionWriter(lake, "events", day, "job-b", row_group_rows=100) as w:
        for batch in table.to_batches(max_chunksize=37):
            w.write(batch)
        staged = w.finish()
    entry = publish(lake, staged)
    assert (entry.rows, entry.bytes, entry.checksum) == (staged.rows, staged.bytes, staged.checksum)
    assert entry.min_ts == iso_from_us(min(r[1] for r in rows))
    assert entry.max_ts == iso_from_us(max(r[1] for r in rows))
    assert entry.job_id == "job-b" and entry.dt == day.isoformat() and entry.replaces == ()

    back = data.read_file(lake, entry.path)
    assert back.schema.equals(event_arrow_schema(), check_metadata=True)
    assert back.schema.field("payload").metadata == {b"format": b"json"}
    assert back.equals(table), "rows come back in the order they were written"

    with lake.fs.open(lake.path(entry.path), "rb") as f:
        md = pq.ParquetFile(f).metadata
    assert md.num_rows == len(rows)
    assert md.num_row_groups == -(-len(rows) // 100)
    assert all(md.row_group(i).num_rows == 100 for i in range(md.num_row_groups - 1))
    rg = md.row_group(0)
    names = [rg.column(i).path_in_schema for i in range(rg.num_columns)]
    for i in range(rg.num_columns):
        col = rg.column(i)
        assert col.compression == "ZSTD"
        assert col.is_stats_set and col.statistics.null_count is not None
        if col.statistics.null_count < rg.num_rows:  # an all-null chunk has no min/max
            assert col.statistics.has_min_max, col.path_in_schema
    assert "RLE_DICTIONARY" in rg.column(names.index("agent_slug")).encodings
    assert "RLE_DICTIONARY" not in rg.column(names.index("event_id")).encodings
    sort_cols = [names[s.column_index] for s in rg.sorting_columns]
    assert sort_cols == list(lakewriter.SORT_KEYS["events"])


def test_runs_accept_tags_as_json_text_and_int_times(lake, demo) -> None:
    _, runs = demo
    day, rows = max(data.by_day(runs, 4).items(), key=lambda kv: len(kv[1]))
    cols = list(zip(*rows, strict=True))
    raw = pa.table(
        {
            name: pa.array(cols[i], pa.int64() if name in ("started_at", "ended_at") else pa.string())
            for i, name in enumerate(RUN_COLUMNS)
        }
    )  # tags as JSON text, times as int µs: what a hot store hands over
    with PartitionWriter(lake, "runs", day, "job-c") as w:
        w.write(raw)
        staged = w.finish()
    entry = publish(lake, staged)
    back = data.read_file(lake, entry.path)
    assert back.schema.equals(run_arrow_schema(), check_metadata=True)
    assert Counter(data.to_rows("runs", back)) == Counter(rows)
    keys = lakewriter.read_keys(lake, entry.path)
    assert keys.column_names == ["run_id"] and sorted(keys.column("run_id").to_pylist()) == sorted(r[0] for r in rows)


def test_writer_rejects_bad_input_and_leaves_nothing(lake, demo) -> None:
    events, _ = demo
    days = data.by_day(events, 1)
    day, other = list(days)[:2]
    good = data.sorted_table("events", days[day])
    w = PartitionWriter(lake, "events", day, "job-d")
    with pytest.raises(ValidationError, match=rf"does not belong in partition dt={day.isoformat()}"), w:
        w.write(good.slice(0, 10))
        w.write(data.sorted_table("events", days[other]))
    w = PartitionWriter(lake, "events", day, "job-d")
    with pytest.raises(ValidationError, match="not in the canonical schema: extra"), w:
        w.write(good.append_column("extra", pa.array([1] * good.num_rows)))
    w = PartitionWriter(lake, "events", day, "job-d")
    with pytest.raises(ValidationError, match="lacks the required column run_id"), w:
        w.write(good.drop_columns(["run_id"]))
    nulls = good.set_column(3, "agent_slug", pa.nulls(good.num_rows, pa.string()))
    with pytest.raises(ValidationError, match="agent_slug has"), PartitionWriter(lake, "events", day, "job-d") as w:
        w.write(nulls)
    with pytest.raises(ValidationError, match="cannot cast"), PartitionWriter(lake, "events", day, "job-d") as w:
        w.write(good.set_column(1, "ts", pa.array(["yesterday"] * good.num_rows)))
    with pytest.raises(RuntimeError), PartitionWriter(lake, "events", day, "job-d") as w:
        w.write(good)
        raise RuntimeError("the export broke")
    # a writer left without finish() removes its file too
    with PartitionWriter(lake, "events", day, "job-d") as w:
        w.write(good)
    assert _files(lake, layout.staging_dir("job-d")) == []
    assert _files(lake, "events") == []
    assert manifest.read_entries(lake, "events") == []


def test_publish_is_idempotent_and_resumes_after_the_move(lake, demo) -> None:
    events, _ = demo
    day, rows = data.busiest_day(events)
    table = data.sorted_table("events", rows)

    def stage(seq: int) -> StagedFile:
        with PartitionWriter(lake, "events", day, "job-e", seq) as w:
            w.write(table)
            return w.finish()

    staged = stage(0)
    first = publish(lake, staged)
    assert publish(lake, staged) == first  # again: same entry, nothing new
    assert lakewriter.committed_entry(lake, staged.final_rel) == first
    # a ledger can keep the staged record as JSON
    assert StagedFile.from_json(staged.to_json()) == staged

    # crash after the move, before the entry: the final file exists, no entry, no staged copy
    staged = stage(1)
    lakestore.move(lake, staged.staging_rel, staged.final_rel, staged.bytes)
    if not lake.is_local:
        lakestore.remove(lake, staged.staging_rel)
    assert lakewriter.committed_entry(lake, staged.final_rel) is None
    with pytest.raises(NotFoundError, match="not committed"):
        lakewriter.read_keys(lake, staged.final_rel)
    entry = publish(lake, staged)
    assert entry.path == staged.final_rel and entry.checksum == staged.checksum
    keys = lakewriter.read_keys(lake, staged.final_rel)
    assert keys.column_names == ["event_id", "ts"] and keys.num_rows == len(rows)
    assert _files(lake, layout.STAGING_DIR) == []

    # a staged file whose final name holds some other leftover: the staged file wins
    staged = stage(2)
    lake.fs.pipe_file(lake.path(staged.final_rel), b"not this")
    entry = publish(lake, staged)
    assert lakestore.read_back(lake, entry.path).checksum == staged.checksum
    assert len(manifest.live_entries(lake, "events", day)) == 3


def test_publish_catches_a_corrupted_staged_object(lake, demo) -> None:
    events, _ = demo
    day, rows = data.busiest_day(events)
    with PartitionWriter(lake, "events", day, "job-f") as w:
        w.write(data.sorted_table("events", rows))
        staged = w.finish()
    path = lake.path(staged.staging_rel)
    with lake.fs.open(path, "rb") as f:
        raw = bytearray(f.read())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte, same size
    lake.fs.pipe_file(path, bytes(raw))
    with pytest.raises(IntegrityError) as err:
        publish(lake, staged)
    msg = str(err.value)
    assert "\n" not in msg and staged.staging_rel in msg and "nothing committed" in msg
    assert lakewriter.committed_entry(lake, staged.final_rel) is None
    assert _files(lake, "events") == []
    # a staged file whose footer disagrees with the rows the writer counted
    wrong = StagedFile(**{**staged.__dict__, "rows": staged.rows + 1, "checksum": staged.checksum})
    lake.fs.pipe_file(path, bytes(raw))
    with pytest.raises(IntegrityError):
        publish(lake, wrong)
    assert lakewriter.discard_staging(lake, "job-f") == 1
    with pytest.raises(NotFoundError, match="missing"):
        publish(lake, staged)
    assert manifest.read_entries(lake, "events") == []


def test_fault_points_stop_publish_between_steps(lake, demo, monkeypatch) -> None:
    """In-process check of the hook the crash tests use (they run it in subprocesses)."""
    events, _ = demo
    day, rows = data.busiest_day(events)
    with PartitionWriter(lake, "events", day, "job-g") as w:
        w.write(data.sorted_table("events", rows))
        staged = w.finish()
    exits: list[int] = []

    class Stop(BaseException):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Stop

    monkeypatch.setattr(faults.os, "_exit", fake_exit)
    monkeypatch.setenv(faults.FAULT_ENV, "publish:2")
    faults.reset_faults()
    with pytest.raises(Stop):
        publish(lake, staged)
    assert exits == [faults.FAULT_EXIT_CODE]
    assert lakewriter.committed_entry(lake, staged.final_rel) is None  # moved, not committed
    monkeypatch.delenv(faults.FAULT_ENV)
    assert publish(lake, staged).rows == len(rows)


def test_empty_writer_and_unknown_dataset(lake) -> None:
    day = date(2026, 1, 1)
    with PartitionWriter(lake, "events", day, "job-h") as w:
        staged = w.finish()
    entry = publish(lake, staged)
    assert entry.rows == 0 and entry.min_ts is None
    assert data.read_file(lake, entry.path).schema.names == list(EVENT_COLUMNS)
    with pytest.raises(ValueError, match="unknown lake dataset"):
        PartitionWriter(lake, "metrics", day, "job-h")
    with pytest.raises(StorageError, match="finished"):
        w.write(data.sorted_table("events", []))

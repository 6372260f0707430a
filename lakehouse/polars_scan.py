"""Polars LazyFrames over the lake: :func:`scan_events` and :func:`scan_runs`.

>>> lf = scan_events(since="2025-10-01", until="2025-10-08")      # doctest: +SKIP
>>> lf.group_by("agent_slug").len().collect()                     # doctest: +SKIP

The frames read the lake's live files (the manifest's, or the plain glob without one)
with Hive partitioning, so a filter on ``dt`` prunes files; ``since``/``until`` choose
the partitions up front and filter the rows. S3 lakes get their ``storage_options``
from the settings. ``hot=True`` adds the hot store's rows (read once through DuckDB,
deduplicated like the ``events``/``runs`` views) and a ``tier`` column.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from magsag.backends.schema import event_arrow_schema, run_arrow_schema
from magsag.lakehouse.lakefiles import SnapshotReader
from magsag.lakehouse.lakeread import day_range
from magsag.lakehouse.objstore import Lake, open_lake

if TYPE_CHECKING:
    import polars as pl
    from magsag.lakehouse.settings import StorageSettings

_TIME = {"events": "ts", "runs": "started_at"}
_KEY = {"events": "event_id", "runs": "run_id"}


def _empty(dataset: str) -> pl.LazyFrame:
    import polars as pl

    schema = event_arrow_schema() if dataset == "events" else run_arrow_schema()
    frame = pl.from_arrow(schema.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy().with_columns(pl.lit(None, dtype=pl.Date).alias("dt"))


def _lake(settings: StorageSettings | None, lake_url: str | None) -> Lake:
    if settings is None and lake_url is None:
        from magsag.lakehouse.settings import load_settings

        settings = load_settings()
    return open_lake(lake_url or (settings.lake_url if settings else None), settings)


def _age(value: Any, name: str) -> Any:
    """An age (``7d``, ``12h``) counts back from now (``utc_now()``); anything else is kept."""
    from magsag.backends.durations import is_duration, parse_duration
    from magsag.backends.schema import utc_now

    if isinstance(value, str) and is_duration(value.strip()):
        return utc_now() - parse_duration(value.strip(), name)
    return value


def _scan(
    dataset: str,
    settings: StorageSettings | None,
    since: Any,
    until: Any,
    agent: str | None,
    lake_url: str | None,
    hot: bool,
) -> pl.LazyFrame:
    import polars as pl

    since, until = _age(since, "since"), _age(until, "until")
    lake = _lake(settings, lake_url)
    lo, hi = day_range(since, until)
    files = SnapshotReader(lake).snapshot([dataset]).of(dataset, lo, hi)
    if files:
        frame = pl.scan_parquet(
            [f.uri for f in files],
            hive_partitioning=True,
            storage_options=lake.storage_options() or None,
        )
    else:
        frame = _empty(dataset)
    frame = _filter(frame, dataset, since, until, agent)
    if not hot:
        return frame
    return _with_hot(frame.with_columns(pl.lit("lake").alias("tier")), dataset, settings, since, until, agent, lo)


def _filter(frame: pl.LazyFrame, dataset: str, since: Any, until: Any, agent: str | None) -> pl.LazyFrame:
    import polars as pl
    from magsag.backends.schema import coerce_datetime

    col = pl.col(_TIME[dataset])
    if since is not None:
        frame = frame.filter(col >= coerce_datetime(since, "since"))
    if until is not None:
        frame = frame.filter(col < coerce_datetime(until, "until"))
    if agent is not None:
        frame = frame.filter(pl.col("agent_slug") == agent)
    return frame


def _with_hot(
    lake_frame: pl.LazyFrame,
    dataset: str,
    settings: StorageSettings | None,
    since: Any,
    until: Any,
    agent: str | None,
    lo: date | None,
) -> pl.LazyFrame:
    """Lake rows the hot store does not also hold, plus the hot rows (read once via DuckDB)."""
    import polars as pl
    from magsag.lakehouse.query import close, connect

    con = connect(settings)
    try:
        hot_table = con.sql(f"SELECT * FROM hot_{dataset}").to_arrow_table()
    finally:
        close(con)
    hot = pl.from_arrow(hot_table)
    assert isinstance(hot, pl.DataFrame)
    hot_frame = _filter(hot.lazy(), dataset, since, until, agent).with_columns(pl.lit("hot").alias("tier"))
    key = _KEY[dataset]
    lake_only = lake_frame.join(hot_frame.select(key), on=key, how="anti")
    return pl.concat([hot_frame, lake_only], how="diagonal_relaxed")


def scan_events(
    settings: StorageSettings | None = None,
    since: Any = None,
    until: Any = None,
    *,
    agent: str | None = None,
    lake_url: str | None = None,
    hot: bool = False,
) -> pl.LazyFrame:
    """Events of the lake (``hot=True``: and of the hot store) as a LazyFrame; ``since``/``until``
    on ``ts`` (ISO, or an age like ``7d``)."""
    return _scan("events", settings, since, until, agent, lake_url, hot)


def scan_runs(
    settings: StorageSettings | None = None,
    since: Any = None,
    until: Any = None,
    *,
    agent: str | None = None,
    lake_url: str | None = None,
    hot: bool = False,
) -> pl.LazyFrame:
    """Runs of the lake (``hot=True``: and of the hot store); ``since``/``until`` on ``started_at``."""
    return _scan("runs", settings, since, until, agent, lake_url, hot)

"""The object store goes away in the middle of a job: clear error, hot store untouched for
every day not committed, and the next run resumes."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest
from magsag.backends.errors import BackendUnavailable, StorageError
from magsag.backends.schema import day_of_us
from magsag.backends.tiering.protocol import tier_source
from magsag.lakehouse.tiering.job import run_tier
from magsag.lakehouse.tiering.report import TierProgress

from tests.lake_fixtures import clear_fs_caches, open_test_lake
from tests.tier.helpers import END, HOT_DAYS, HotCase, lake_events, old

pytestmark = [pytest.mark.asyncio, pytest.mark.s3]


class KillAfterFirstDay(TierProgress):
    """Kills the server as the job starts on the second day (the first is committed)."""

    def __init__(self, server) -> None:  # type: ignore[no-untyped-def]
        self.server = server

    def day(self, day: date, step: str) -> None:
        if day == date(2026, 3, 7) and step == "claim":
            self.server.kill()


async def test_server_stopped_mid_job(hot: HotCase, s3_server_factory) -> None:  # type: ignore[no-untyped-def]
    server = s3_server_factory()
    url = server.fresh_url()
    lake, _ = open_test_lake(server.env(url, MAGSAG_STORAGE_S3_RETRIES="1"))
    original = await hot.event_rows()
    with pytest.raises(StorageError) as err:
        await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END, progress=KillAfterFirstDay(server))
    msg = str(err.value)
    assert isinstance(err.value, BackendUnavailable) and "unreachable" in msg and "\n" not in msg
    assert server.secret not in msg
    hot_rows = await hot.event_rows()
    first = date(2026, 3, 6)
    # the first day is committed and gone from the hot store; the others are all still hot
    assert not [r for r in hot_rows if day_of_us(r[1]) == first]
    assert Counter(r for r in original if day_of_us(r[1]) > first) == Counter(hot_rows)
    unfinished = await tier_source(hot.backend).unfinished_claims()
    assert [c.day for c in unfinished] == [date(2026, 3, 7)] and unfinished[0].state == "claimed"
    # the server comes back: the next run finishes the interrupted claim, then the rest
    server.start()
    clear_fs_caches()
    lake, _ = open_test_lake(server.env(url))
    rep = await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END)
    assert [(d.day, d.recovered) for d in rep.days] == [(date(2026, 3, 7), True), (date(2026, 3, 8), False)]
    lake_rows = lake_events(lake)
    assert Counter(lake_rows) == Counter(old(original))
    assert Counter(await hot.event_rows()) + Counter(lake_rows) == Counter(original)


async def test_bucket_missing_is_a_config_error(hot: HotCase, s3_server) -> None:  # type: ignore[no-untyped-def]
    lake, _ = open_test_lake(s3_server.env("s3://no-such-bucket/lake", MAGSAG_STORAGE_S3_RETRIES="0"))
    original = await hot.event_rows()
    with pytest.raises(StorageError, match="no-such-bucket"):
        await run_tier(hot.backend, lake, hot_days=HOT_DAYS, now=END)
    assert Counter(await hot.event_rows()) == Counter(original)

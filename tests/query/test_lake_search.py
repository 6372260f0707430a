"""Full-text search over the lake: the same tokens as the hot FTS, words or a raw subset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from magsag.backends.errors import QueryError
from magsag.backends.schema import Event
from magsag.backends.sqlite.store import SQLiteStorageBackend
from magsag.lakehouse import search
from magsag.lakehouse.tiered_backend import TieredBackend

from tests.lake_builder import write_lake

T0 = datetime(2026, 4, 1, 9, tzinfo=UTC)
MESSAGES = [
    "error rate limit exceeded: 429 Too Many Requests",
    "retry after rate limit",
    "tool call failed with error: connection reset",
    "all good, finished",
    "Error error ERROR limit",
    "Café déjà vu: mcp.call ok",
    "snake_case_name and timed out after 30s",
    "timeout while fetching",
]


@pytest.fixture
async def lake_only(tmp_path: Path) -> AsyncIterator[TieredBackend]:
    events = [
        Event.create(f"r{i % 3}", "sag" if i % 2 else "mag", "log", T0 + timedelta(hours=i), message=m)
        for i, m in enumerate(MESSAGES)
    ]
    write_lake(str(tmp_path / "lake"), events)
    storage = TieredBackend(SQLiteStorageBackend(tmp_path / "hot.db"), lake_url=str(tmp_path / "lake"))
    await storage.initialize()
    yield storage
    await storage.close()


async def _msgs(storage: TieredBackend, query: str, **kw: object) -> list[str]:
    return [h["msg"] for h in await storage.search_text(query, limit=100, **kw)]  # type: ignore[arg-type]


def test_tokens_fold_case_and_accents() -> None:
    assert search.tokens("Café déjà-vu: mcp.call ERROR_x 日本語 42") == [
        "cafe",
        "deja",
        "vu",
        "mcp",
        "call",
        "error",
        "x",
        "日本語",
        "42",
    ]
    assert search.words("rate RATE limit!") == ["rate", "limit"]
    assert search.words("'; -- *") == []


async def test_words_mode_matches_whole_tokens(lake_only: TieredBackend) -> None:
    assert set(await _msgs(lake_only, "error")) == {MESSAGES[0], MESSAGES[2], MESSAGES[4]}
    assert set(await _msgs(lake_only, "rate limit")) == {MESSAGES[0], MESSAGES[1]}
    assert await _msgs(lake_only, "time") == []  # whole tokens: "time" is not "timeout"
    assert await _msgs(lake_only, "cafe") == [MESSAGES[5]]  # accents removed, like SQLite
    assert await _msgs(lake_only, "MCP.CALL") == [MESSAGES[5]]
    assert await _msgs(lake_only, "snake case") == [MESSAGES[6]]
    assert (await _msgs(lake_only, "error limit"))[0] == MESSAGES[4]  # more occurrences rank first
    for hostile in ('"unterminated', "a AND (", "NEAR(", "'; DROP TABLE events; --", "", "((((", "\\"):
        assert isinstance(await lake_only.search_text(hostile), list)


async def test_filters_prune_and_apply(lake_only: TieredBackend) -> None:
    assert set(await _msgs(lake_only, "error", agent_slug="mag")) == {MESSAGES[0], MESSAGES[2], MESSAGES[4]} & {
        MESSAGES[i] for i in range(0, len(MESSAGES), 2)
    }
    late = await _msgs(lake_only, "error", since=T0 + timedelta(hours=3))
    assert late == [MESSAGES[4]]
    early = await _msgs(lake_only, "error", until=T0 + timedelta(hours=1))
    assert early == [MESSAGES[0]]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("rate AND limit", {0, 1}),
        ("rate limit", {0, 1}),
        ("rate & limit", {0, 1}),
        ("retry OR reset", {1, 2}),
        ("retry | reset", {1, 2}),
        ("limit NOT rate", {4}),
        ("limit -rate", {4}),
        ("limit & !rate", {4}),
        ('"rate limit"', {0, 1}),
        ('"limit rate"', set()),
        ("time*", {6, 7}),
        ("time:*", {6, 7}),
        ("(retry OR fetching) AND after", {1}),
        ("cafe", {5}),
    ],
)
def test_raw_mode_on_the_lake(lake_only: TieredBackend, raw: str, expected: set[int]) -> None:
    """Both hot dialects' operators work on the lake (FTS5's and to_tsquery's)."""
    from magsag.lakehouse.lakeread import LakeReader

    reader = LakeReader(lake_only.lake)  # type: ignore[arg-type]
    try:
        rows = reader.search(search.compile_query(raw, raw=True), None, None, None, 100)  # type: ignore[arg-type]
    finally:
        reader.close()
    assert {r[6] for r in rows} == {MESSAGES[i] for i in expected}


async def test_raw_mode_through_the_api(lake_only: TieredBackend) -> None:
    """FTS5 syntax passes the SQLite hot store and the lake alike."""
    assert set(await _msgs(lake_only, "retry OR reset", raw=True)) == {MESSAGES[1], MESSAGES[2]}
    assert set(await _msgs(lake_only, '"rate limit" NOT exceeded', raw=True)) == {MESSAGES[1]}
    assert set(await _msgs(lake_only, "time*", raw=True)) == {MESSAGES[6], MESSAGES[7]}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ('"unterminated AND (', "not closed"),
        ("rate AND", "ends too early"),
        ("(rate", "not closed"),
        ("rate )", "unexpected"),
        ("NEAR(rate limit)", "NEAR"),
        ("msg:error", "column filters"),
        ("OR", "unexpected"),
    ],
)
async def test_raw_mode_errors_are_one_line(lake_only: TieredBackend, raw: str, why: str) -> None:
    with pytest.raises(QueryError, match="malformed full-text query") as info:
        search.compile_query(raw, raw=True)
    assert why in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(QueryError):
        await lake_only.search_text(raw, raw=True)


def test_score_matches_the_sql_ranking() -> None:
    terms = ["error", "limit"]
    scores = [search.score(m, terms) for m in MESSAGES]
    assert max(range(len(MESSAGES)), key=lambda i: scores[i]) == 4
    assert search.score("nothing here", terms) == 0.0

"""Full-text search on PostgreSQL: ranking, word semantics, hostile input, raw syntax."""

from __future__ import annotations

from datetime import timedelta

import pytest
from magsag.backends.errors import QueryError
from magsag.backends.postgres.store import websearch_words
from magsag.backends.schema import Event

from tests.clock import PINNED_NOW

pytestmark = pytest.mark.postgres

T0 = PINNED_NOW - timedelta(hours=6)

MESSAGES = [
    # (agent, minutes after T0, message)
    ("planner", 0, "deploy failed: timeout"),
    ("planner", 1, "the tool call to the search service returned after a very long wait and finally hit a timeout"),
    ("coder", 2, "Rate-limit exceeded for github.search (HTTP 429)"),
    ("coder", 3, "rate only, no lim"),
    ("coder", 4, "error or timeout while calling mcp.call"),
    ("coder", 5, "error happened"),
    ("reviewer", 6, "foo_bar finished; see /var/log/agent.log"),
    ("reviewer", 7, "same text twice"),
    ("reviewer", 8, "same text twice"),
    ("reviewer", 9, "naïve café résumé 東京 report"),
    ("reviewer", 10, "user alice@example.com asked for v1.2.3"),
]


@pytest.fixture(scope="module")
def seeded() -> dict[str, bool]:
    return {}


@pytest.fixture
async def store(backend, seeded):
    if not seeded:
        batch = [
            Event.create("run-search", agent, "log", T0 + timedelta(minutes=m), message=msg)
            for agent, m, msg in MESSAGES
        ]
        await backend.append_events(batch)
        seeded["done"] = True
    return backend


def msgs(results) -> list[str]:
    return [r["msg"] for r in results]


async def test_better_matches_rank_first(store) -> None:
    results = await store.search_text("timeout")
    found = msgs(results)
    assert found.index("deploy failed: timeout") < found.index(MESSAGES[1][2])
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(s, float) and s > 0 for s in scores)


async def test_equal_scores_newest_first(store) -> None:
    results = await store.search_text("same text twice")
    assert msgs(results) == ["same text twice"] * 2
    assert results[0]["ts"] > results[1]["ts"]


async def test_all_words_are_required_and_operators_are_words(store) -> None:
    assert msgs(await store.search_text("rate limit")) == ["Rate-limit exceeded for github.search (HTTP 429)"]
    assert msgs(await store.search_text("error or timeout")) == ["error or timeout while calling mcp.call"]
    # "-timeout" is the word timeout here, not "without timeout"
    assert "error happened" not in msgs(await store.search_text("error -timeout"))
    assert msgs(await store.search_text("ERROR Happened")) == ["error happened"]


async def test_words_split_like_sqlite_unicode61(store) -> None:
    assert msgs(await store.search_text("github")) == ["Rate-limit exceeded for github.search (HTTP 429)"]
    assert msgs(await store.search_text("search 429")) == ["Rate-limit exceeded for github.search (HTTP 429)"]
    assert msgs(await store.search_text("mcp call")) == ["error or timeout while calling mcp.call"]
    assert msgs(await store.search_text("bar")) == ["foo_bar finished; see /var/log/agent.log"]
    assert msgs(await store.search_text("foo_bar")) == ["foo_bar finished; see /var/log/agent.log"]
    assert msgs(await store.search_text("log")) == ["foo_bar finished; see /var/log/agent.log"]
    assert msgs(await store.search_text("example")) == ["user alice@example.com asked for v1.2.3"]
    assert msgs(await store.search_text("東京")) == ["naïve café résumé 東京 report"]
    assert msgs(await store.search_text("CAFÉ")) == ["naïve café résumé 東京 report"]


HOSTILE = [
    "",
    "   ",
    '"',
    '"unterminated',
    "a AND (",
    "OR",
    "NOT",
    "-",
    "!",
    "&|!():*<->",
    "'; DROP TABLE events; --",
    "\\",
    "%_%",
    "timeout:*",
    "<b>timeout</b>",
    "𝕏 🚀 ﷽",
    "x" * 5000,
    "word " * 300,
    "\x00timeout",
]


@pytest.mark.parametrize("query", HOSTILE, ids=range(len(HOSTILE)))
async def test_hostile_input_never_raises_in_words_mode(store, query) -> None:
    results = await store.search_text(query)
    assert isinstance(results, list)


async def test_hostile_words_still_match_their_words(store) -> None:
    assert msgs(await store.search_text('"timeout: (deploy)!')) == ["deploy failed: timeout"]
    assert msgs(await store.search_text("'; DROP TABLE events; --")) == []


@pytest.mark.parametrize("query", ["a AND (", "timeout &", "(", "!", "a <-> ", "'unterminated", "a & (b", "\x00x"])
async def test_malformed_raw_queries_are_one_line_errors(store, query) -> None:
    with pytest.raises(QueryError) as info:
        await store.search_text(query, raw=True)
    text = str(info.value)
    assert "\n" not in text
    assert "malformed full-text query" in text


async def test_raw_mode_speaks_tsquery(store) -> None:
    assert "deploy failed: timeout" in msgs(await store.search_text("time:*", raw=True))
    assert msgs(await store.search_text("error & !timeout", raw=True)) == ["error happened"]
    assert msgs(await store.search_text("rate <-> limit", raw=True)) == [
        "Rate-limit exceeded for github.search (HTTP 429)"
    ]


async def test_filters_and_limit(store) -> None:
    assert msgs(await store.search_text("timeout", agent_slug="coder")) == ["error or timeout while calling mcp.call"]
    since = await store.search_text("timeout", since=T0 + timedelta(minutes=1))
    assert "deploy failed: timeout" not in msgs(since)
    until = await store.search_text("timeout", until=T0 + timedelta(minutes=1))
    assert msgs(until) == ["deploy failed: timeout"]
    assert len(await store.search_text("timeout", limit=1)) == 1
    assert await store.search_text("timeout", limit=0) == []


def test_websearch_words_quotes_every_word() -> None:
    assert websearch_words('error or "timeout"') == '"error" "or" "timeout"'
    assert websearch_words("mcp.call foo_bar") == '"mcp" "call" "foo bar"'
    assert websearch_words("-- !! ") is None

"""Every TierSource implementation matches the protocol: method names, parameters (names,
kinds, defaults) and async-ness, the way tests/contract checks StorageBackend.

The job calls the protocol's methods (``lakehouse/tiering/job.py``); a parameter the
protocol lacks (``tierable_days(..., mode=...)`` once) or one an implementation lacks is a
failure here, not at run time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
from magsag.backends.postgres.tiering import PostgresTierSource
from magsag.backends.sqlite.tiering import SQLiteTierSource
from magsag.backends.tiering.protocol import TierSource

IMPLEMENTATIONS = [SQLiteTierSource, PostgresTierSource]
METHODS = sorted(name for name, _ in inspect.getmembers(TierSource, inspect.isfunction) if not name.startswith("_"))


def kind(fn: Callable[..., Any]) -> str:
    """How a method is called: awaited, iterated with ``async for``, or plain (``job_lock``
    returns an async context manager: SQLite's is an ``@asynccontextmanager`` function)."""
    if inspect.iscoroutinefunction(fn):
        return "coroutine"
    if inspect.isasyncgenfunction(fn):
        return "async generator"
    return "plain"


def test_the_protocol_lists_what_the_job_calls() -> None:
    assert METHODS == [
        "claim_day",
        "claims",
        "close",
        "delete_claimed",
        "delete_claims",
        "export_events",
        "export_runs",
        "finish_claim",
        "job_lock",
        "mark_exported",
        "running_runs",
        "tierable_days",
        "unarchived_days",
        "unfinished_claims",
        "update_info",
    ]
    assert "backend" in TierSource.__annotations__


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", METHODS)
def test_implementation_matches_the_protocol(impl: type, name: str) -> None:
    proto = getattr(TierSource, name)
    mine = getattr(impl, name, None)
    assert callable(mine), f"{impl.__name__} has no {name}"
    want, got = inspect.signature(proto), inspect.signature(mine)
    assert [(p.name, p.kind) for p in got.parameters.values()] == [
        (p.name, p.kind) for p in want.parameters.values()
    ], f"{impl.__name__}.{name}{got} differs from TierSource.{name}{want}"
    for p in want.parameters.values():
        assert got.parameters[p.name].default == p.default, f"{impl.__name__}.{name}({p.name}) default"
    expected = "async generator" if name == "export_events" else kind(proto)
    assert kind(mine) == expected, f"{impl.__name__}.{name} is {kind(mine)}, the protocol wants {expected}"

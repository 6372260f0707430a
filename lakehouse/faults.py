"""Fault injection for crash tests: exit hard at the k-th step of an operation.

``MAGSAG_LAKE_FAULT=compact:3`` makes the process ``os._exit(FAULT_EXIT_CODE)`` at the
third fault point reached inside a compaction (points inside the publish it calls
count too); ``publish:2`` at the second point of any publish. Several specs may be
given, comma-separated. Tests run the operation in a subprocess for k = 1, 2, ... until
it finishes without hitting a point, so every step is covered without naming them.

Without the variable, :func:`fault_point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

FAULT_ENV = "MAGSAG_LAKE_FAULT"
FAULT_EXIT_CODE = 86

_scopes: ContextVar[tuple[str, ...]] = ContextVar("magsag_fault_scopes", default=())
_hits: Counter[str] = Counter()


@contextmanager
def fault_scope(name: str) -> Iterator[None]:
    """Points reached inside the block also count for scope ``name``."""
    token = _scopes.set((*_scopes.get(), name))
    try:
        yield
    finally:
        _scopes.reset(token)


def _parse(spec: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in spec.split(","):
        scope, _, k = item.strip().rpartition(":")
        if scope and k.isdigit():
            out[scope] = int(k)
    return out


def fault_point(name: str) -> None:
    """A step boundary named ``<scope>.<step>``; exits hard when a configured count is reached."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    wanted = _parse(spec)
    for scope in dict.fromkeys((name.split(".", 1)[0], *_scopes.get())):
        if scope not in wanted:
            continue
        _hits[scope] += 1
        if _hits[scope] == wanted[scope]:
            sys.stderr.write(f"fault injected at {name} ({scope}:{wanted[scope]})\n")
            sys.stderr.flush()
            os._exit(FAULT_EXIT_CODE)


def reset_faults() -> None:
    """Forget the counts (for in-process tests)."""
    _hits.clear()

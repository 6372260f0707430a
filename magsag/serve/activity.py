"""The agents' activity as a few GROUP BY queries on the hot store (its ``activity`` capability).

One read per scrape refresh (:class:`magsag.serve.metrics.LiveMetrics` caches it): runs
by agent and status; runs that ended in the trailing window by agent and status, with
their tokens and cost (the run record's ``metrics``) by model; MCP calls of the window by
server, tool and status with their latency already bucketed in SQL, so the answer is
bounded by the number of label values, never by the number of calls.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from magsag.backends.capabilities import has
from magsag.lakehouse.tiered_backend import unwrap

BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class Activity:
    runs: dict[tuple[str, str], int] = field(default_factory=dict)  # (agent, status) -> hot runs
    ended: dict[tuple[str, str], int] = field(default_factory=dict)  # (agent, status) -> ended in window
    costs: dict[tuple[str, str], tuple[int, float, float]] = field(
        default_factory=dict
    )  # (agent, model) -> runs, tokens, usd
    # (server, tool, status) -> (calls, sum of seconds, cumulative counts per BUCKETS_S)
    mcp: dict[tuple[str, str, str], tuple[int, float, list[int]]] = field(default_factory=dict)


async def read(storage: Any, since_us: int) -> Activity:
    """The activity of the hot store behind ``storage`` (runs: all hot; the rest: since ``since_us``).

    Empty when the store does not declare the ``activity`` capability.
    """
    hot = unwrap(storage)
    if not has(hot, "activity"):
        return Activity()
    results = await hot.activity(since_us, BUCKETS_S)
    runs, ended, costs, mcp = results
    out = Activity()
    out.runs = {(a, s): int(n) for a, s, n in runs}
    out.ended = {(a, s): int(n) for a, s, n in ended}
    merged: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for a, m, n, tok, usd in costs:
        acc = merged[(a, str(m))]
        acc[0] += int(n)
        acc[1] += float(tok or 0)
        acc[2] += float(usd or 0)
    out.costs = {k: (int(v[0]), v[1], v[2]) for k, v in merged.items()}
    out.mcp = {
        (str(r[0]), str(r[1]), str(r[2])): (int(r[3]), float(r[4] or 0), [int(x or 0) for x in r[5:]]) for r in mcp
    }
    return out

"""Issue 13, item 4: no test, notebook or code path reads the wall clock.

The code's one clock is ``magsag.backends.schema.utc_now()`` (``MAGSAG_NOW`` pins it) and
tests/conftest.py pins it for every test; ops/scripts/clock_proof.sh runs the tests that
read "now" under faketime at several hours and weekdays (docs/testing.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from magsag.backends.schema import NOW_ENV, utc_now

from tests.cli_helpers import magsag
from tests.clock import PINNED_NOW, PINNED_NOW_ISO

ROOT = Path(__file__).resolve().parents[2]
# Reading the real clock as a date: datetime.now()/utcnow()/today(), date.today(), time.time()/time_ns().
WALL_CLOCK = re.compile(r"\b(datetime\.(now|utcnow|today)\(|date\.today\(|time\.time(_ns)?\(\)|localtime\(|gmtime\()")
# Allowed: utc_now() itself; new event ids (UUIDv7 bits, not a date); a random seed; text in messages and docstrings.
ALLOWED = {
    ("backends/schema.py", "return datetime.now(UTC)"),
    ("backends/schema.py", "else time.time_ns() // 1_000_000"),
    ("backends/schema.py", "e.g. datetime.now(timezone.utc)"),
    ("magsag/ingest/legacy_reader.py", "the legacy logger wrote ``datetime.utcnow()``"),
    ("tests/clock.py", "``datetime.now()``, so no result"),
    ("tests/lake_fixtures.py", "random.Random(os.getpid() ^ time.time_ns())"),
}


def _sources() -> list[Path]:
    files = [p for d in ("backends", "lakehouse", "magsag", "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    return files + sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_test_runs_at_the_pinned_now() -> None:
    assert os.environ[NOW_ENV] == PINNED_NOW_ISO
    assert utc_now() == PINNED_NOW


def test_the_cli_reads_the_pinned_clock(tmp_path: Path) -> None:
    """A relative --since is counted back from MAGSAG_NOW, not from the machine's clock."""
    db = str(tmp_path / "hot.db")
    res = magsag("data", "demo", "--days", "2", "--runs-per-day", "3", "--db-path", db, "--json")
    assert res.code == 0, res.err
    assert res.json()["to"][:10] == PINNED_NOW.date().isoformat()


def test_nothing_reads_the_wall_clock() -> None:
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel == "tests/answers/test_clock.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "monotonic" in line or "perf_counter" in line:
                continue
            if WALL_CLOCK.search(line) and not any(rel == f and text in line for f, text in ALLOWED):
                found.append(f"{rel}:{n}: {line.strip()[:100]}")
    assert not found, "read the clock through magsag.backends.schema.utc_now():\n" + "\n".join(found)

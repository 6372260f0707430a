"""The one "now" of the test suite: ``tests/conftest.py`` pins ``MAGSAG_NOW`` to it for every test.

Code reads the clock only through ``magsag.backends.schema.utc_now()``, which honours
``MAGSAG_NOW``; tests build their data around :data:`PINNED_NOW` instead of
``datetime.now()``, so no result depends on the hour or the weekday a test runs at
(docs/testing.md shows how that is checked under ``faketime``). A test that needs another
"now" sets ``MAGSAG_NOW`` itself (``monkeypatch.setenv`` or the env of a CLI call).
"""

from __future__ import annotations

from datetime import UTC, datetime

# A Monday early morning: the hour and weekday an unpinned suite once failed at (issue 13, item 4).
PINNED_NOW = datetime(2026, 12, 7, 6, 20, tzinfo=UTC)
PINNED_NOW_ISO = PINNED_NOW.isoformat().replace("+00:00", "Z")
PINNED_TODAY = PINNED_NOW.date()

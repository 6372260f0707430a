"""A writer process for the Litestream test: single ``append_event`` calls through the public
API, one acknowledged event id per stdout line (printed after the call returned), until killed."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta

from magsag.storage import open_storage


async def main() -> None:
    base = datetime(2026, 3, 10, tzinfo=UTC)
    async with open_storage() as storage:
        i = 0
        while True:
            event_id = await storage.append_event(
                f"run-ls-{i // 50}", "ls-agent", "log", base + timedelta(milliseconds=i), message=f"acknowledged {i}"
            )
            sys.stdout.write(event_id + "\n")
            sys.stdout.flush()
            i += 1


if __name__ == "__main__":
    asyncio.run(main())

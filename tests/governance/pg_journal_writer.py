"""Writer for the PostgreSQL journal test: N single appends, each id printed once acknowledged,
then SIGKILL to itself (no close, no flush)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta

from magsag.storage import open_storage


async def main(n: int) -> None:
    base = datetime(2026, 3, 10, tzinfo=UTC)
    async with open_storage() as storage:
        for i in range(n):
            event_id = await storage.append_event(
                "run-pgj", "pgj-agent", "log", base + timedelta(milliseconds=i), message=f"journaled {i}"
            )
            sys.stdout.write(event_id + "\n")
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

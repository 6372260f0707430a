"""Run the tiering job in its own process (for the crash and lock tests).

``python -m tests.tier.tier_proc --now ISO --hot-days N [--mode move|copy] [--dest URL] [--no-wait]``:
hot store and lake from the ``MAGSAG_STORAGE_*`` environment. Prints the report as JSON;
exit 3 when the lock is held. Imports as little as it can: the crash tests start it often.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime

from magsag.backends.errors import LockedError
from magsag.lakehouse.objstore import open_lake
from magsag.lakehouse.settings import load_settings
from magsag.lakehouse.tiering.job import run_tier

from magsag.storage import open_storage


async def main(args: argparse.Namespace) -> int:
    settings = load_settings()
    lake = open_lake(args.dest or settings.lake_url, settings)
    async with open_storage(settings) as storage:
        try:
            report = await run_tier(
                storage,
                lake,
                hot_days=args.hot_days,
                mode=args.mode,
                now=datetime.fromisoformat(args.now),
                wait=not args.no_wait,
                lock_timeout=args.timeout,
            )
        except LockedError as exc:
            print(str(exc), file=sys.stderr)
            return 3
    print(json.dumps(report.as_dict(), default=str))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--now", required=True)
    p.add_argument("--hot-days", type=int, required=True)
    p.add_argument("--mode", default="move")
    p.add_argument("--dest")
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float)
    sys.exit(asyncio.run(main(p.parse_args())))

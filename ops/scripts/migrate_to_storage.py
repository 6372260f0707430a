#!/usr/bin/env python3
"""Import legacy ``.runs/agents`` data into the MAGSAG storage layer.

    python ops/scripts/migrate_to_storage.py --source .runs/agents [--dry-run]
        [--backend sqlite --db-path PATH | --dsn postgresql://...] [--costs .runs] [--strict] [--json]

A thin wrapper over ``magsag data migrate`` (same library, same report, same exit codes:
0 nothing rejected, 1 something rejected, 2 usage or configuration error). ``--dsn``
without ``--backend`` selects the PostgreSQL backend. Runs from a checkout without
installing the package.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="migrate_to_storage.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Settings not given here come from MAGSAG_STORAGE_* variables or .env.",
    )
    ap.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder of run folders (default: MAGSAG_RUNS_BASE_DIR or .runs/agents)",
    )
    ap.add_argument("--dry-run", action="store_true", help="write nothing; report what an import would add")
    ap.add_argument("--strict", action="store_true", help="if any line is rejected, write nothing")
    ap.add_argument("--costs", type=Path, action="append", default=[], help="cost ledger file or folder (repeatable)")
    ap.add_argument("--backend", default=None, help="sqlite, postgres, timescale, or a plugin (default: settings)")
    ap.add_argument("--db-path", type=Path, default=None, help="SQLite file of the hot store")
    ap.add_argument("--dsn", default=None, help="PostgreSQL DSN (implies --backend postgres)")
    ap.add_argument("--workers", type=int, default=None, help="parser processes (default: cores - 1; 0: none)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    return ap


def to_cli_args(args: argparse.Namespace) -> list[str]:
    """The equivalent ``magsag data migrate`` arguments."""
    out = ["data", "migrate"]
    if args.source is not None:
        out.append(str(args.source))
    for path in args.costs:
        out += ["--costs", str(path)]
    backend = args.backend or ("postgres" if args.dsn else None)
    for flag, value in (("--backend", backend), ("--db-path", args.db_path), ("--dsn", args.dsn)):
        if value is not None:
            out += [flag, str(value)]
    if args.workers is not None:
        out += ["--workers", str(args.workers)]
    for flag, on in (("--dry-run", args.dry_run), ("--strict", args.strict), ("--json", args.json)):
        if on:
            out.append(flag)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from magsag.cli import app

    try:
        app(to_cli_args(args), prog_name="migrate_to_storage.py", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

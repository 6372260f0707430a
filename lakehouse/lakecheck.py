"""Damaged lake files: finding the one behind an engine's error, and ``compact --repair``.

A committed file can be deleted, truncated, garbled or rewritten by hand. Readers then
get an engine error that names a symptom (``IOException``, a binder error on a missing
column) or, worse, skip the file. :func:`diagnose` turns such an error into one line
that names the file and the repair; :func:`repair_lake` is that repair: each live file
of a day is verified against its manifest entry (present, same size and sha256, a
readable footer with the entry's rows, the canonical schema) and a file that fails is
moved with its entry to ``_magsag/quarantine/`` (nothing is deleted), so the day's
manifest view is rebuilt from the files that still verify.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import IntegrityError, NotFoundError, StorageError
from magsag.lakehouse import layout, manifest
from magsag.lakehouse.lakestore import check_schema, exists, move, partition_entries, read_back, read_entry
from magsag.lakehouse.manifest import ManifestEntry
from magsag.lakehouse.objstore import Lake, retry

if TYPE_CHECKING:
    from magsag.lakehouse.lakefiles import LakeFile

REPAIR = "run `magsag data compact --repair` to set aside the files that fail verification"
QUARANTINE_DIR = f"{layout.META_DIR}/quarantine"
DIAGNOSE_FILES = 2000  # most footers read to find the damaged file behind one failed query
DIAGNOSE_BYTES = 512 << 20  # most bytes read back (sha256) to find a file garbled past its footer
# Engine errors no file can cause (a typo, a refusal, an interrupt): nothing is looked for.
_NOT_A_FILE = ("Parser Error", "Catalog Error", "Interrupt", "INTERRUPT", "Out of Memory", "data sql:")
# Errors a file's schema can cause: its footer is enough to find it.
_SCHEMA_ONLY = ("Binder Error",)


def verify_entry(lake: Lake, entry: ManifestEntry) -> str | None:
    """What is wrong with ``entry``'s file (None: it is exactly what the entry committed)."""
    if not exists(lake, entry.path):
        return "is missing"
    got = read_back(lake, entry.path)
    if got.size != entry.bytes or got.checksum != entry.checksum:
        return f"does not match its manifest entry ({got.size} bytes, expected {entry.bytes}; sha256 differs)"
    if got.rows != entry.rows:
        return f"holds {got.rows} rows by its footer, its entry says {entry.rows}"
    try:
        check_schema(lake, entry.path, entry.dataset)
    except IntegrityError as exc:
        return str(exc).split("; ", 1)[0].removeprefix(f"lake file {entry.path} ")
    return None


def diagnose(lake: Lake, files: list[LakeFile], exc: BaseException) -> None:
    """Raise :class:`IntegrityError` naming the damaged file behind the engine error ``exc``.

    Files the message names are verified in full first (bytes against the entry), then
    every file's footer (schema), then, for errors other than a binder error, the bytes
    of the other files up to :data:`DIAGNOSE_BYTES`. Returns (the caller re-raises
    ``exc``) for errors no file can cause, when no file is found at fault, or when a file
    vanished because a compaction replaced it (the caller reads again).
    """
    text = str(exc)
    if any(s in text for s in _NOT_A_FILE) or not files:
        return
    named = [f for f in files if f.uri in text or f.rel in text]
    rest = [f for f in files if f not in named]
    budget = 0 if any(s in text for s in _SCHEMA_ONLY) else DIAGNOSE_BYTES
    plan = [(f, True) for f in named] + [(f, False) for f in rest[:DIAGNOSE_FILES]]
    spent = sum(f.bytes or 0 for f in named)
    for f in rest:
        if spent + (f.bytes or 0) > budget:
            break
        spent += f.bytes or 0
        plan.append((f, True))
    for f, full in plan:
        try:
            entry = read_entry(lake, f.rel) if full else None
            if entry is not None:
                problem = verify_entry(lake, entry)
                if problem:
                    raise IntegrityError(f"lake file {f.rel} {problem}; {REPAIR}")
            else:
                check_schema(lake, f.rel, f.dataset)
        except NotFoundError:
            if read_entry(lake, f.rel) is None:
                return  # replaced by a compaction since the snapshot
            raise IntegrityError(f"committed lake file {f.rel} is missing; {REPAIR}") from None
        except IntegrityError as err:
            raise IntegrityError(f"{str(err).split('; ', 1)[0]}; {REPAIR}") from None


def _quarantine(lake: Lake, rel: str, stamp: str) -> str:
    target = f"{QUARANTINE_DIR}/{stamp}/{rel}"
    if exists(lake, rel):
        size = int(retry(lake, f"checking {rel}", lake.fs.info, lake.path(rel)).get("size", -1))
        move(lake, rel, target, size)
    return target


def repair_lake(lake: Lake, *, partition: date | None = None, stamp: str = "repair") -> list[dict[str, Any]]:
    """Verify every live file (of ``partition``, or all); set aside those that fail.

    Each failing file and its manifest entry move to ``_magsag/quarantine/<stamp>/``;
    the rows they held leave the lake's answers (they were unreadable or wrong already).
    Returns one record per file set aside: dataset, dt, path, rows, problem.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,80}", stamp):
        raise ValueError(f"invalid repair stamp {stamp!r}")
    out = []
    for ds in layout.DATASETS:
        days = sorted(manifest.partitions(lake, ds)) if partition is None else [partition]
        for day in days:
            for entry in manifest.live(partition_entries(lake, ds, day)):
                try:
                    problem = verify_entry(lake, entry)
                except StorageError as exc:
                    problem = f"cannot be read ({str(exc).splitlines()[0]})"
                if problem is None:
                    continue
                _quarantine(lake, entry.path, stamp)
                _quarantine(lake, layout.manifest_path(entry.path), stamp)
                out.append({"dataset": ds, "dt": entry.dt, "path": entry.path, "rows": entry.rows, "problem": problem})
    return out

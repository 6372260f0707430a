"""The cost ledger: ``costs.jsonl`` lines and ``costs.db`` rows -> ``cost`` event rows.

Cost records are stored as events of type ``cost`` attached to their run (see
docs/migration.md for why): one canonical schema in every tier, joined with runs on
``run_id``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from magsag.backends.schema import derived_event_id
from magsag.ingest.legacy_fields import UNATTRIBUTED_RUN, Row, opt_int, opt_number, opt_text, valid_id
from magsag.ingest.legacy_messages import COST, cost_message
from magsag.ingest.legacy_reader import BadValue, Rejection, dumps_payload, epoch_us, kind, read_jsonl

_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")

CostRecords = dict[str, list[tuple[str | None, int, dict[str, Any]]]]


def cost_sources(path: Path) -> list[Path]:
    """The cost-ledger files named by ``--costs PATH``.

    A file is taken as it is (SQLite by its header, else JSON Lines). A folder is searched
    for ``costs.jsonl``, ``costs/costs.jsonl`` and ``costs.db`` (the legacy layout is
    ``.runs/costs/costs.jsonl`` beside ``.runs/costs.db``; ``.runs`` or ``.runs/costs`` both
    work). Returns [] when nothing is found.
    """
    if path.is_dir():
        found = [path / "costs.jsonl", path / "costs" / "costs.jsonl", path / "costs.db"]
        if path.name == "costs":
            found.append(path.parent / "costs.db")
        return [p for p in found if os.path.lexists(p)]
    if os.path.lexists(path):
        return [path]
    return []


def is_sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


COST_COLUMNS = (
    "timestamp",
    "model",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "run_id",
    "step",
    "agent",
    "metadata",
)


def read_cost_db(path: Path, rejections: list[Rejection]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row id, record) from a ``cost_records`` SQLite table, read-only."""
    where = str(path)
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        rejections.append(Rejection(where, None, f"cannot open as SQLite: {exc}"))
        return
    try:
        try:
            cols = [r[1] for r in conn.execute("PRAGMA table_info(cost_records)").fetchall()]
        except sqlite3.DatabaseError as exc:
            rejections.append(Rejection(where, None, f"cannot read as SQLite: {exc}"))
            return
        if not cols:
            rejections.append(Rejection(where, None, "no table cost_records"))
            return
        wanted = [c for c in COST_COLUMNS if c in cols]
        extra = [c for c in cols if c not in COST_COLUMNS and c not in ("id", "created_at")]
        key = "id" if "id" in cols else "rowid"
        names = [*wanted, *extra]
        sql = f"SELECT {key}, {', '.join(_quote(c) for c in names)} FROM cost_records ORDER BY {key}"
        try:
            for row in conn.execute(sql):
                yield row[0], dict(zip(names, row[1:], strict=True))
        except sqlite3.DatabaseError as exc:
            rejections.append(Rejection(where, None, f"read error: {exc}"))
    finally:
        conn.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_COST_FIELDS = ("model", "input_tokens", "output_tokens", "total_tokens", "cost_usd", "step", "metadata")


def parse_cost(rec: Any) -> tuple[str, str | None, int, dict[str, Any]]:
    """Validate one cost-ledger record: (run_id, agent, ts_us, payload). Raises BadValue."""
    if not isinstance(rec, dict):
        raise BadValue(f"a cost record must be an object, got {kind(rec)}")
    ts_us = epoch_us(rec.get("timestamp"))
    run_id = rec.get("run_id")
    if run_id is None or run_id == "":
        run_id = UNATTRIBUTED_RUN
    elif valid_id(run_id) is None:
        raise BadValue(f"run_id must be a non-empty string, got {kind(run_id)}")
    agent = rec.get("agent")
    if agent is not None and valid_id(agent) is None:
        raise BadValue(f"agent must be a non-empty string, got {kind(agent)}")
    opt_text(rec.get("model"), "model")
    opt_text(rec.get("step"), "step")
    for name in ("input_tokens", "output_tokens", "total_tokens"):
        opt_int(rec, name)
    if rec.get("cost_usd") is None:
        raise BadValue("missing cost_usd")
    opt_number(rec, "cost_usd")
    metadata = rec.get("metadata")
    if isinstance(metadata, str):  # costs.db keeps metadata as JSON text
        with contextlib.suppress(ValueError):
            metadata = json.loads(metadata)
    payload = {name: (metadata if name == "metadata" else rec.get(name)) for name in _COST_FIELDS if name in rec}
    for name, value in rec.items():
        if name not in payload and name not in ("timestamp", "run_id", "agent"):
            payload[name] = value
    dumps_payload(payload)
    return run_id, agent, ts_us, payload


def cost_row(run_id: str, slug: str, ts_us: int, payload: dict[str, Any]) -> Row:
    """The ``cost`` event row of a ledger record. Its id hashes the record's content, so the
    same record found in both ``costs.jsonl`` and ``costs.db`` is stored once."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return (
        derived_event_id(ts_us, run_id, COST, canonical),
        ts_us,
        run_id,
        slug,
        COST,
        "info",
        cost_message(payload),
        dumps_payload(payload),
        None,
        None,
        None,
        None,
        None,
    )


def read_ledgers(paths: Iterable[Path], max_line_bytes: int, reject: Callable[[list[Rejection]], None]) -> CostRecords:
    """Valid cost records of every ledger file, grouped by run id: (agent, ts_us, payload).

    Rejections (bad lines or rows, unreadable files) are passed to ``reject``, per file.
    """
    by_run: CostRecords = {}
    for path in paths:
        rejections: list[Rejection] = []
        if is_sqlite_file(path) or path.suffix.lower() in _SQLITE_SUFFIXES:
            records: Iterable[tuple[int | str, Any]] = read_cost_db(path, rejections)
        else:
            records = ((line.no, line.obj) for line in read_jsonl(path, rejections, max_line_bytes))
        for where, rec in records:
            try:
                run_id, agent, ts_us, payload = parse_cost(rec)
            except BadValue as exc:
                rejections.append(Rejection(str(path), where, str(exc)))
                continue
            by_run.setdefault(run_id, []).append((agent, ts_us, payload))
        reject(rejections)
    return by_run

"""SQLite hot store: the zero-config default (WAL, FTS5, one writer thread, reader pool).

All writes go through one :class:`~magsag.backends.sqlite.writer.SQLiteWriter` (group commit,
crash journal); reads run in a small thread pool, each thread with its own connection,
so the event loop never blocks and concurrent readers and writers never meet
"database is locked".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from magsag.backends import jsontext
from magsag.backends.base import StorageBackend, StorageCapabilities, check_aggregation, check_limit
from magsag.backends.errors import BackendUnavailable, NotFoundError, QueryError
from magsag.backends.schema import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    RUNNING,
    TERMINAL_STATUSES,
    US_PER_DAY,
    Event,
    Run,
    coerce_datetime,
    day_of_us,
    day_start_us,
    event_record,
    hot_cutoff,
    iso_from_us,
    json_object_text,
    normalize_status,
    run_record,
    to_us,
    utc_now,
)
from magsag.backends.sqlite import schema as ddl
from magsag.backends.sqlite.stream import SQLiteStream
from magsag.backends.sqlite.writer import SQLiteWriter, orphan_journals, read_journal
from magsag.backends.stream import stream_filter

T = TypeVar("T")
_WORD = re.compile(r"\w+", re.UNICODE)
_FTS_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _fts_tokens(text: str) -> list[str]:
    """The tokens FTS5's ``unicode61 remove_diacritics 2`` sees: letters and digits, case
    and accents folded (the search without the index matches exactly these)."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    folded = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return _FTS_TOKEN.findall(unicodedata.normalize("NFC", folded))


_RUN_SELECT = ", ".join(RUN_COLUMNS)
_PAGE = 1000


def fts_words(query: str) -> str | None:
    """User text -> an FTS5 query of quoted words (all required); None if no words."""
    words = _WORD.findall(query or "")
    if not words:
        return None
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _chunk_rows(conn: sqlite3.Connection) -> int:
    """Rows per multi-row INSERT: 1024, or the largest power of two the bound-parameter
    limit of this SQLite allows (999 parameters before 3.32)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(EVENT_COLUMNS)
    return 1 << (min(1024, max(1, limit)).bit_length() - 1)


def insert_event_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int:
    """``INSERT OR IGNORE`` rows in :data:`EVENT_COLUMNS` order; return how many were new.

    Full chunks, then the rest in power-of-two pieces (at most ten statements), all from
    a fixed set of statements that the connection prepares once and keeps cached.
    """
    chunk = _chunk_rows(conn)
    inserted = i = 0
    n = len(rows)
    while i < n:
        k = n - i
        k = chunk if k >= chunk else 1 << (k.bit_length() - 1)
        # chain flattens in C: no bytecode per row while the app's thread waits for the GIL
        cur = conn.execute(ddl.event_insert_values(k), list(chain.from_iterable(rows[i : i + k])))
        inserted += max(cur.rowcount or 0, 0)
        i += k
    return inserted


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def write_event_rows(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], *, fts: bool) -> int:
    """Insert event rows (skipping known event_ids), create unknown runs, index new rows."""
    lo = _last_seq(conn)
    return _after_insert(conn, insert_event_rows(conn, rows), lo, fts=fts)


def write_event_json(conn: sqlite3.Connection, rows_json: str, *, fts: bool) -> int:
    """:func:`write_event_rows` for rows already encoded as one JSON array of arrays."""
    lo = _last_seq(conn)
    cur = conn.execute(ddl.EVENT_INSERT_JSON, (rows_json,))
    return _after_insert(conn, max(cur.rowcount or 0, 0), lo, fts=fts)


def _last_seq(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return row[0] if row else 0


def _after_insert(conn: sqlite3.Connection, inserted: int, lo: int, *, fts: bool) -> int:
    """Create the unknown runs of the events after ``seq`` ``lo`` and index their text."""
    if inserted:
        # A run seen for the first time starts as `running` at its earliest event
        # (SQLite takes agent_slug from the row holding min(ts)). NOT INDEXED keeps the
        # planner on the seq range: left alone it walks the whole (run_id, ts) index to
        # skip a sort, so every commit cost time in proportion to the table.
        conn.execute(
            "INSERT OR IGNORE INTO runs (run_id, agent_slug, status, started_at) "
            "SELECT run_id, agent_slug, 'running', min(ts) FROM events NOT INDEXED WHERE seq > ? GROUP BY run_id",
            (lo,),
        )
        if fts:
            conn.execute(
                "INSERT INTO events_fts (rowid, msg) SELECT seq, msg FROM events WHERE seq > ? AND msg IS NOT NULL",
                (lo,),
            )
    return inserted


class SQLiteStorageBackend(StorageBackend):
    """SQLite hot store. ``db_path`` is a file path; parents are created as needed."""

    name: ClassVar[str] = "sqlite"
    stream_poll_s: float = 0.25  # stream_events: how often other processes' commits are looked for

    def __init__(self, db_path: str | Path = ".magsag/storage.db", enable_fts: bool | None = None, readers: int = 4):
        """``enable_fts``: True/False creates or drops the full-text index and the store
        remembers that choice; None (the default) keeps what the store chose before (on for
        a new store)."""
        self.db_path = Path(db_path).expanduser()
        self._want_fts = enable_fts
        self.enable_fts = False
        self._readers = readers
        self._writer: SQLiteWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._stream = SQLiteStream(self)

    # ------------------------------------------------------------ lifecycle
    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open SQLite store {self.db_path}: {exc}") from None
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = OFF")
        if writer:
            # The writer's big sorts (index builds, the tiering rebuild of a large table) spill
            # to temporary files instead of growing the process by the size of the sort.
            conn.execute("PRAGMA temp_store = FILE")
            conn.execute("PRAGMA cache_size = -131072")  # 128 MB: index pages of big stores stay cached
        else:
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA mmap_size = 268435456")
        return conn

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect(writer=True)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendUnavailable(f"cannot switch {self.db_path} to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        ddl.migrate(conn)
        stored = conn.execute("SELECT value FROM magsag_meta WHERE key = 'fts'").fetchone()
        want = self._want_fts if self._want_fts is not None else (stored is None or stored[0] != "off")
        self.enable_fts = ddl.set_fts(conn, want)
        if self._want_fts is not None and (stored is None or stored[0] != ("on" if want else "off")):
            conn.execute(
                "INSERT INTO magsag_meta (key, value) VALUES ('fts', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                ("on" if want else "off",),
            )
        self._replay_orphans(conn)
        return conn

    def _replay_orphans(self, conn: sqlite3.Connection) -> None:
        for path in orphan_journals(self._journal_dir):
            rows = read_journal(path)
            if rows:
                conn.execute("BEGIN IMMEDIATE")
                write_event_rows(conn, rows, fts=self.enable_fts)
                conn.execute("COMMIT")
            path.unlink(missing_ok=True)

    @property
    def _journal_dir(self) -> Path:
        return self.db_path.with_name(self.db_path.name + ".magsag-journal")

    async def initialize(self) -> None:
        if self._writer is not None:
            return
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create the folder of {self.db_path}: {exc.strerror}") from None
        if self.db_path.exists() and self.db_path.is_dir():
            raise BackendUnavailable(f"SQLite store path {self.db_path} is a directory")
        writer = SQLiteWriter(
            self._open_writer,
            lambda conn, rows: write_event_rows(conn, rows, fts=self.enable_fts),
            self._journal_dir,
            lambda conn, text: write_event_json(conn, text, fts=self.enable_fts),
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, writer.start)
        except sqlite3.DatabaseError as exc:
            raise BackendUnavailable(f"cannot use {self.db_path} as a SQLite store: {exc}") from None
        writer.on_commit = self._stream.committed
        self._writer = writer
        self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="magsag-sqlite-read")

    async def close(self) -> None:
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        await writer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._conns_lock:
            for conn in self._reader_conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._reader_conns.clear()
        self._local = threading.local()

    @property
    def capabilities(self) -> StorageCapabilities:
        return StorageCapabilities(
            append_event=True,
            get_run=True,
            list_runs=True,
            query_metrics=True,
            search_text=True,
            vector_search=False,
            archive_artifacts=False,
            lifecycle_policy=True,
            streaming=True,
        )

    # ----------------------------------------------------------------- plumbing
    def _require(self) -> SQLiteWriter:
        if self._writer is None:
            raise RuntimeError("call initialize() (or use 'async with') before using the backend")
        return self._writer

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(writer=False)
            self._local.conn = conn
            with self._conns_lock:
                self._reader_conns.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        writer = self._require()
        await writer.barrier()
        return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(self._reader()))

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in the writer's transaction (used by tiering and tools)."""
        result = await self._require().call(fn)
        if isinstance(result, BaseException):
            raise result
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader connection after pending writes are committed."""
        return await self._read(fn)

    # ------------------------------------------------------------------ writes
    async def _append_row(self, row: tuple[Any, ...]) -> None:
        writer = self._require()
        if writer.journaling:
            # Durable once journaled; committed with the next group. If the writer has
            # fallen far behind, wait for it rather than let the backlog grow.
            if writer.append_journaled(row):
                await writer.barrier()
        else:
            await writer.write_rows([row])

    async def _append_validated(self, events: list[Event]) -> int:
        return await self._require().write_rows([e.row() for e in events])

    async def create_run(
        self,
        run_id: str,
        agent_slug: str,
        parent_run_id: str | None = None,
        started_at: datetime | None = None,
        status: str = "running",
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        run = Run.create(run_id, agent_slug, parent_run_id, started_at, status, tags)
        explicit_start = started_at is not None

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            conn.execute(
                "INSERT INTO runs (run_id, agent_slug, parent_run_id, status, started_at, tags) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
                "agent_slug = excluded.agent_slug, "
                "parent_run_id = coalesce(excluded.parent_run_id, runs.parent_run_id), "
                "status = excluded.status, "
                "started_at = CASE WHEN ? THEN excluded.started_at ELSE runs.started_at END, "
                "tags = excluded.tags",
                (
                    run.run_id,
                    run.agent_slug,
                    run.parent_run_id,
                    run.status,
                    run.started_at_us,
                    json.dumps(list(run.tags)),  # the stored tags text, unchanged (see jsontext)
                    explicit_start,
                ),
            )
            return _fetch_run(conn, run.run_id)  # type: ignore[return-value]

        return await self.write(op)

    async def upsert_runs(self, runs: Iterable[Run | Mapping[str, Any]]) -> int:
        rows = [Run.from_mapping(r).row() for r in runs]
        if not rows:
            return 0
        cols = ", ".join(RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[1:])
        sql = (
            f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates}"
        )
        return await self.write(lambda c: c.executemany(sql, rows).rowcount)

    async def update_run(
        self,
        run_id: str,
        status: str | None = None,
        ended_at: datetime | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if status is not None:
            normalize_status(status)
        ended = coerce_datetime(ended_at, "ended_at", required=False)
        ended_us = to_us(ended) if ended else None
        if ended_us is None and status in TERMINAL_STATUSES:
            ended_us = to_us(utc_now())
        patch = json_object_text(metrics, "metrics") if metrics is not None else None

        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT metrics, ended_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"run {run_id!r} not found")
            merged = row[0]
            if patch is not None:
                merged = jsontext.dumps({**jsontext.loads(row[0] or "{}"), **jsontext.loads(patch)})
            new_end = ended_us if ended_us is not None else row[1]
            if status == RUNNING and ended is None:
                new_end = None
            conn.execute(
                "UPDATE runs SET status = coalesce(?, status), ended_at = ?, metrics = ? WHERE run_id = ?",
                (status, new_end, merged, run_id),
            )
            return _fetch_run(conn, run_id)  # type: ignore[return-value]

        return await self.write(op)

    # ------------------------------------------------------------------- reads
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return await self._read(lambda c: _fetch_run(c, run_id))

    async def list_runs(
        self,
        agent_slug: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        check_limit(limit)
        check_limit(offset, "offset")
        if status is not None:
            normalize_status(status)
        where: list[str] = []
        params: list[Any] = []
        _filters(
            where, params, time_col="started_at", agent_col="agent_slug", agent=agent_slug, since=since, until=until
        )
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {_RUN_SELECT} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?"
        params += [limit, offset]
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [run_record(r) for r in rows]

    async def get_events(  # type: ignore[override]
        self,
        run_id: str,
        event_type: str | None = None,
        level: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        check_limit(limit)
        where, params = ["e.run_id = ?"], [run_id]
        if event_type is not None:
            where.append("e.type = ?")
            params.append(event_type)
        if level is not None:
            where.append("e.level = ?")
            params.append(level.lower())
        sql = (
            f"SELECT {ddl.EVENT_SELECT}, e.seq FROM events e WHERE {' AND '.join(where)} "
            "AND (e.ts > ? OR (e.ts = ? AND e.seq > ?)) ORDER BY e.ts, e.seq LIMIT ?"
        )
        remaining = limit
        cursor: tuple[int, int] = (-(2**62), -1)
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            args = [*params, cursor[0], cursor[0], cursor[1], page]
            rows = await self._read(lambda c, a=args: c.execute(sql, a).fetchall())
            for r in rows:
                yield event_record(r[:-1])
            if len(rows) < page:
                return
            cursor = (rows[-1][1], rows[-1][-1])
            if remaining is not None:
                remaining -= len(rows)

    def stream_events(
        self,
        run_id: str | None = None,
        agent_slug: str | None = None,
        event_type: str | None = None,
        level: str | None = None,
        since: datetime | None = None,
        *,
        cursor: str | None = None,
        follow: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        self._require()
        flt = stream_filter(run_id, agent_slug, event_type, level, since)
        return self._stream.events(flt, cursor, follow=follow)

    async def search_text(
        self,
        query: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        *,
        raw: bool = False,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        check_limit(limit)
        if not isinstance(query, str):
            raise QueryError("the search query must be text")
        filters: list[str] = []
        params: list[Any] = []
        _filters(filters, params, time_col="e.ts", agent_col="e.agent_slug", agent=agent_slug, since=since, until=until)
        extra = "".join(f" AND {f}" for f in filters)
        if self.enable_fts:
            match = query if raw else fts_words(query)
            if not match or not match.strip():
                return []
            sql = (
                f"SELECT {ddl.EVENT_SELECT}, bm25(events_fts) AS score FROM events_fts "
                f"JOIN events e ON e.seq = events_fts.rowid WHERE events_fts MATCH ?{extra} "
                "ORDER BY score, e.ts DESC LIMIT ?"
            )
            args = [match, *params, limit]
        else:
            # Without the index: the same whole-word semantics as FTS5's unicode61 tokenizer
            # (case and accents folded), LIKE only narrowing the candidates.
            words = list(dict.fromkeys(_fts_tokens(query)))
            if not words:
                return []
            likes = " AND ".join("e.msg LIKE ? ESCAPE '\\'" for _ in words)
            sql = f"SELECT {ddl.EVENT_SELECT}, 0.0 AS score FROM events e WHERE {likes}{extra} ORDER BY e.ts DESC"
            args = [*("%" + _like_escape(w) + "%" for w in words), *params]
            msg_at = EVENT_COLUMNS.index("msg")

        def run(c: sqlite3.Connection) -> list[Any]:
            try:
                if not self.enable_fts:
                    wanted = set(words)
                    out = []
                    for row in c.execute(sql, args):
                        if wanted <= set(_fts_tokens(row[msg_at] or "")):
                            out.append(row)
                            if len(out) >= limit:
                                break
                    return out
                return c.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:
                if raw:
                    raise QueryError(
                        f"malformed full-text query {query!r}: {exc}; search without --raw to match the words as typed"
                    ) from None
                raise

        rows = await self._read(run)
        out = []
        for r in rows:
            rec = event_record(r[:-1])
            rec["score"] = -float(r[-1])  # bm25 is lower-is-better; expose higher-is-better
            out.append(rec)
        return out

    async def query_metrics(
        self,
        metric_name: str,
        agent_slug: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        aggregation: str = "avg",
    ) -> dict[str, Any]:
        check_aggregation(aggregation)
        where = ["type = 'metric'", "json_extract(payload, '$.name') = ?"]
        params: list[Any] = [metric_name]
        _filters(where, params, time_col="ts", agent_col="agent_slug", agent=agent_slug, since=since, until=until)
        value_expr = "CAST(json_extract(payload, '$.value') AS REAL)"
        cond = " AND ".join(where) + " AND json_type(payload, '$.value') IN ('integer', 'real')"
        if aggregation.startswith("p"):
            rows = await self._read(
                lambda c: c.execute(f"SELECT {value_expr} FROM events WHERE {cond}", params).fetchall()
            )
            values = [r[0] for r in rows]
            value = _percentile(values, int(aggregation[1:]) / 100)
            count = len(values)
        else:
            fn = {"avg": "avg", "sum": "total", "min": "min", "max": "max", "count": "count"}[aggregation]
            value, count = await self._read(
                lambda c: c.execute(f"SELECT {fn}({value_expr}), count(*) FROM events WHERE {cond}", params).fetchone()
            )
            if count == 0 and aggregation != "count":
                value = None
        return {"metric": metric_name, "aggregation": aggregation, "value": value, "count": count}

    # --------------------------------------------------------------- retention
    async def vacuum(
        self,
        hot_days: int = 7,
        max_disk_mb: float | None = None,
        dry_run: bool = False,
        *,
        now: datetime | None = None,
        keep_days: Iterable[Any] | None = None,
    ) -> dict[str, Any]:
        cutoff = hot_cutoff(hot_days, now)
        cutoff_us = to_us(cutoff)
        keep = sorted({d if isinstance(d, date) else date.fromisoformat(str(d)) for d in (keep_days or ())})
        if max_disk_mb is not None:
            cutoff_us = max(cutoff_us, await self._read(lambda c: _disk_cutoff(c, cutoff_us, max_disk_mb, now)))
        keep_ranges = [(day_start_us(d), day_start_us(d) + US_PER_DAY) for d in keep]
        ev_where, run_where, params_ev, params_run = _vacuum_predicates(cutoff_us, keep_ranges)

        def count(c: sqlite3.Connection) -> tuple[int, int, list[str]]:
            days = c.execute(
                f"SELECT DISTINCT ts / {US_PER_DAY} FROM events WHERE {ev_where} ORDER BY 1", params_ev
            ).fetchall()
            n_ev = c.execute(f"SELECT count(*) FROM events WHERE {ev_where}", params_ev).fetchone()[0]
            n_run = c.execute(f"SELECT count(*) FROM runs WHERE {run_where}", params_run).fetchone()[0]
            return n_run, n_ev, [day_of_us(d[0] * US_PER_DAY).isoformat() for d in days]

        n_run, n_ev, days = await self._read(count)
        result: dict[str, Any] = {
            "dry_run": dry_run,
            "cutoff": iso_from_us(cutoff_us),
            "days": days,
            "kept_days": [d.isoformat() for d in keep],
        }
        if dry_run:
            result.update(runs_to_delete=n_run, events_to_delete=n_ev)
            return result
        runs_deleted = events_deleted = 0
        # One transaction per day keeps the writer responsive for live appends.
        bounds = [day_start_us(date.fromisoformat(d)) for d in days] or [None]
        for start in bounds:
            lo, hi = (start, start + US_PER_DAY) if start is not None else (None, None)
            events_deleted += await self.write(
                lambda c, lo=lo, hi=hi: _delete_events(c, ev_where, params_ev, lo, hi, self.enable_fts)
            )
        runs_deleted = await self.write(lambda c: c.execute(f"DELETE FROM runs WHERE {run_where}", params_run).rowcount)
        await self.write(lambda c: c.execute("PRAGMA incremental_vacuum"))
        result.update(runs_deleted=runs_deleted, events_deleted=events_deleted)
        return result

    # ------------------------------------------------------------------- misc
    async def stats(self) -> dict[str, Any]:
        """Row counts, time range and file size of the hot store."""

        def q(c: sqlite3.Connection) -> dict[str, Any]:
            n_ev, lo, hi = c.execute("SELECT count(*), min(ts), max(ts) FROM events").fetchone()
            n_run = c.execute("SELECT count(*) FROM runs").fetchone()[0]
            pages = c.execute("PRAGMA page_count").fetchone()[0]
            free = c.execute("PRAGMA freelist_count").fetchone()[0]
            size = c.execute("PRAGMA page_size").fetchone()[0]
            return {
                "backend": self.name,
                "path": str(self.db_path),
                "events": n_ev,
                "runs": n_run,
                "oldest": iso_from_us(lo),
                "newest": iso_from_us(hi),
                "bytes": (pages - free) * size,
                "fts": self.enable_fts,
            }

        return await self._read(q)


# ------------------------------------------------------------------ helpers


def _filters(
    where: list[str], params: list[Any], *, time_col: str, agent_col: str, agent: str | None, since: Any, until: Any
) -> None:
    """Append the agent / [since, until) conditions every read method shares."""
    if agent is not None:
        where.append(f"{agent_col} = ?")
        params.append(agent)
    if since is not None:
        where.append(f"{time_col} >= ?")
        params.append(to_us(coerce_datetime(since, "since")))  # type: ignore[arg-type]
    if until is not None:
        where.append(f"{time_col} < ?")
        params.append(to_us(coerce_datetime(until, "until")))  # type: ignore[arg-type]


def _like_escape(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _fetch_run(conn: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {_RUN_SELECT} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    return run_record(row) if row else None


def _vacuum_predicates(cutoff_us: int, keep_ranges: list[tuple[int, int]]) -> tuple[str, str, list[Any], list[Any]]:
    not_running = "run_id NOT IN (SELECT run_id FROM runs WHERE status = 'running')"
    ev = ["ts < ?", not_running]
    ev_params: list[Any] = [cutoff_us]
    run = ["status != 'running'", "started_at < ?", "(ended_at IS NULL OR ended_at < ?)"]
    run_params: list[Any] = [cutoff_us, cutoff_us]
    for lo, hi in keep_ranges:
        ev.append("NOT (ts >= ? AND ts < ?)")
        ev_params += [lo, hi]
        run.append("NOT (started_at >= ? AND started_at < ?)")
        run_params += [lo, hi]
    return " AND ".join(ev), " AND ".join(run), ev_params, run_params


def _delete_events(
    c: sqlite3.Connection, where: str, params: list[Any], lo: int | None, hi: int | None, fts: bool
) -> int:
    if lo is not None:
        where = f"ts >= ? AND ts < ? AND {where}"
        params = [lo, hi, *params]
    if fts:
        c.execute(
            f"INSERT INTO events_fts (events_fts, rowid, msg) SELECT 'delete', seq, msg FROM events "
            f"WHERE {where} AND msg IS NOT NULL",
            params,
        )
    return c.execute(f"DELETE FROM events WHERE {where}", params).rowcount


def _disk_cutoff(c: sqlite3.Connection, cutoff_us: int, max_disk_mb: float, now: datetime | None) -> int:
    """The cutoff that brings the store under ``max_disk_mb`` by dropping whole days, oldest first."""
    page = c.execute("PRAGMA page_size").fetchone()[0]
    used = (c.execute("PRAGMA page_count").fetchone()[0] - c.execute("PRAGMA freelist_count").fetchone()[0]) * page
    limit = max_disk_mb * 1024 * 1024
    if used <= limit:
        return cutoff_us
    total = c.execute("SELECT count(*) FROM events").fetchone()[0] or 1
    per_event = used / total
    days = c.execute(f"SELECT ts / {US_PER_DAY}, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
    today = to_us(hot_cutoff(0, now))
    remaining = used
    new_cutoff = cutoff_us
    for day, n in days:
        start = day * US_PER_DAY
        if start + US_PER_DAY > today:
            break
        if start + US_PER_DAY <= cutoff_us:
            remaining -= n * per_event
            continue
        if remaining <= limit:
            break
        remaining -= n * per_event
        new_cutoff = start + US_PER_DAY
    return new_cutoff

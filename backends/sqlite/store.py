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
import os
import re
import sqlite3
import threading
import unicodedata
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import date, datetime
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from magsag.backends import jsontext
from magsag.backends.base import HOT_STORE, StorageBackend, StorageCapabilities, Window, aggregate, equal_conditions
from magsag.backends.capabilities import HotSource, RunKey, RunSelection
from magsag.backends.errors import BackendUnavailable, NotFoundError, QueryError, UnsupportedOperation
from magsag.backends.schema import (
    EVENT_COLUMNS,
    RUN_COLUMNS,
    US_PER_DAY,
    Event,
    Run,
    day_of_us,
    day_start_us,
    event_record,
    hot_cutoff,
    iso_from_us,
    run_record,
    to_us,
)
from magsag.backends.sqlite import duckdb_source as duck
from magsag.backends.sqlite import extras
from magsag.backends.sqlite import schema as ddl
from magsag.backends.sqlite.stream import SQLiteStream
from magsag.backends.sqlite.writer import SQLiteWriter, orphan_journals, read_journal

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

    def __init__(
        self,
        db_path: str | Path = ".magsag/storage.db",
        enable_fts: bool | None = None,
        readers: int = 4,
        *,
        read_only: bool = False,
        ack: str = "journal",
        missing_ok: bool = False,
    ):
        """``enable_fts``: True/False creates or drops the full-text index and the store
        remembers that choice; None (the default) keeps what the store chose before (on for
        a new store)."""
        if ack not in ("journal", "commit"):
            raise ValueError(f"ack must be 'journal' or 'commit' (got {ack!r})")
        # "commit": a single append_event returns once its row is committed to SQLite (in the
        # WAL, so Litestream replicates it) instead of once it is in the crash journal.
        self.ack = ack
        self.db_path = Path(db_path).expanduser()
        # read_only: open an existing store for reading only; nothing is created (no file,
        # folder, WAL, journal or lock), nothing written, and a read-only mount works.
        self.read_only = read_only
        self._missing_ok = missing_ok  # read_only and no file: an empty store in memory (the lake alone)
        self._ro_uri: str | None = None
        self._keep: sqlite3.Connection | None = None  # holds the in-memory empty store open
        self._want_fts = enable_fts
        self.enable_fts = False
        self._readers = readers
        self._writer: SQLiteWriter | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._stream = SQLiteStream(self)

    @classmethod
    def from_settings(cls, settings: Any, *, read_only: bool = False, missing_ok: bool = False) -> SQLiteStorageBackend:
        return cls(
            db_path=settings.db_path,
            enable_fts=settings.enable_fts,
            read_only=read_only,
            missing_ok=missing_ok and read_only,
            ack=getattr(settings, "sqlite_ack", "journal"),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.db_path)!r})"

    @property
    def where(self) -> str:
        """The store's file."""
        return str(self.db_path)

    # ------------------------------------------------------------ lifecycle
    def open_connection(self) -> sqlite3.Connection:
        """A new plain connection to the store (read-only, creating nothing, when ``read_only``)."""
        if self._ro_uri is not None:
            return sqlite3.connect(self._ro_uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30)
        return sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        try:
            conn = self.open_connection()
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

    def _open_read_only(self) -> None:
        """Check the store for reading only (no file is created or changed)."""
        if not self.db_path.exists() and self._missing_ok:
            self._ro_uri = f"file:magsag-empty-{id(self)}?mode=memory&cache=shared"
            self._keep = sqlite3.connect(self._ro_uri, uri=True, isolation_level=None, check_same_thread=False)
            ddl.migrate(self._keep)
            return
        if not self.db_path.is_file():
            raise NotFoundError(f"no store at {self.db_path} (run magsag data init)")
        folder_writable = os.access(self.db_path.parent, os.W_OK) and os.access(self.db_path, os.W_OK)
        # On a read-only mount SQLite cannot make the WAL index: the file is read as immutable.
        mode = "mode=ro" if folder_writable else "mode=ro&immutable=1"
        self._ro_uri = f"{self.db_path.resolve().as_uri()}?{mode}"
        try:
            conn = self._connect(writer=False)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                self.enable_fts = ddl.has_table(conn, "events_fts")
                has_events = ddl.has_table(conn, "events")
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise BackendUnavailable(f"cannot use {self.db_path} as a SQLite store: {exc}") from None
        if not has_events:
            raise NotFoundError(f"no store at {self.db_path} (run magsag data init)")
        if version != ddl.SQLITE_SCHEMA_VERSION:
            raise BackendUnavailable(
                f"the store at {self.db_path} has schema version {version}, this magsag reads "
                f"{ddl.SQLITE_SCHEMA_VERSION} (run magsag data init to upgrade it)"
            )

    async def initialize(self) -> None:
        if self._writer is not None or self._pool is not None:
            return
        if self.read_only:
            await asyncio.get_running_loop().run_in_executor(None, self._open_read_only)
            self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="magsag-sqlite-read")
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
            self._journal_dir if self.ack == "journal" else None,
            lambda conn, text: write_event_json(conn, text, fts=self.enable_fts),
            name=str(self.db_path),
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, writer.start)
        except sqlite3.DatabaseError as exc:
            raise BackendUnavailable(f"cannot use {self.db_path} as a SQLite store: {exc}") from None
        writer.on_commit = self._stream.committed
        self._writer = writer
        self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="magsag-sqlite-read")

    async def close(self) -> None:
        if self._writer is None and self._pool is None:
            return
        writer, self._writer = self._writer, None
        if writer is not None:
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
        if self._keep is not None:
            self._keep.close()
            self._keep = None

    @property
    def capabilities(self) -> StorageCapabilities:
        # exact cosine over stored vectors (backends/sqlite/vectors.py)
        return replace(HOT_STORE, vector_search=_numpy_present())

    # ----------------------------------------------------------------- plumbing
    def _require(self) -> SQLiteWriter:
        if self._writer is None:
            if self.read_only:
                raise UnsupportedOperation(f"the store at {self.db_path} is open for reading only")
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
        if not (self.read_only and self._pool is not None):
            await self._require().barrier()
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

    async def _create_run(self, run: Run, explicit_start: bool) -> dict[str, Any]:
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
            rec = _fetch_run(conn, run.run_id)
            if rec is None:  # dropped by the erase guard (backends/sqlite/erase.py)
                raise NotFoundError(f"run {run.run_id!r} was erased; its id is refused (tombstone)")
            return rec

        return await self.write(op)

    async def _upsert_runs(self, batch: list[Run]) -> int:
        rows = [r.row() for r in batch]
        cols = ", ".join(RUN_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in RUN_COLUMNS[1:])
        sql = (
            f"INSERT INTO runs ({cols}) VALUES ({', '.join('?' * len(RUN_COLUMNS))}) "
            f"ON CONFLICT (run_id) DO UPDATE SET {updates}"
        )
        return await self.write(lambda c: c.executemany(sql, rows).rowcount)

    async def _update_run(
        self, run_id: str, status: str | None, ended_us: int | None, patch: str | None, clear_end: bool
    ) -> dict[str, Any]:
        def op(conn: sqlite3.Connection) -> dict[str, Any]:
            row = conn.execute("SELECT metrics, ended_at FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"run {run_id!r} not found")
            merged = row[0]
            if patch is not None:
                merged = jsontext.dumps({**jsontext.loads(row[0] or "{}"), **jsontext.loads(patch)})
            new_end = None if clear_end else ended_us if ended_us is not None else row[1]
            conn.execute(
                "UPDATE runs SET status = coalesce(?, status), ended_at = ?, metrics = ? WHERE run_id = ?",
                (status, new_end, merged, run_id),
            )
            return _fetch_run(conn, run_id)  # type: ignore[return-value]

        return await self.write(op)

    # ------------------------------------------------------------------- reads
    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return await self._read(lambda c: _fetch_run(c, run_id))

    async def _list_runs(self, window: Window, status: str | None, limit: int, offset: int) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        extras.window(where, params, window.agent_slug, window.since_us, window.until_us, "started_at")
        equal_conditions(where, params, status=status)
        sql = f"SELECT {_RUN_SELECT} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC, run_id DESC LIMIT ? OFFSET ?"
        params += [limit, offset]
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [run_record(r) for r in rows]

    async def _events_page(
        self, run_id: str, event_type: str | None, level: str | None, after: Any, n: int
    ) -> tuple[list[tuple[Any, ...]], Any]:
        where: list[str] = []
        params: list[Any] = []
        equal_conditions(where, params, "e.", run_id=run_id, type=event_type, level=level)
        ts, seq = after or (-(2**62), -1)
        sql = (
            f"SELECT {ddl.EVENT_SELECT}, e.seq FROM events e WHERE {' AND '.join(where)} "
            "AND (e.ts > ? OR (e.ts = ? AND e.seq > ?)) ORDER BY e.ts, e.seq LIMIT ?"
        )
        rows = await self._read(lambda c: c.execute(sql, [*params, ts, ts, seq, n]).fetchall())
        return [r[:-1] for r in rows], ((rows[-1][1], rows[-1][-1]) if rows else after)

    def _stream_events(self, flt: Any, cursor: str | None, follow: bool) -> AsyncIterator[dict[str, Any]]:
        self._require()
        return self._stream.events(flt, cursor, follow=follow)

    async def _search_text(self, query: str, window: Window, limit: int, raw: bool) -> list[dict[str, Any]]:
        filters: list[str] = []
        params: list[Any] = []
        extras.window(filters, params, window.agent_slug, window.since_us, window.until_us, "ts")
        extra = "".join(f" AND e.{f}" for f in filters)
        if self.enable_fts:
            match = query if raw else fts_words(query)
            if not match or not match.strip():
                return []
            if filters:
                sql = (
                    f"SELECT {ddl.EVENT_SELECT}, bm25(events_fts) AS score FROM events_fts "
                    f"JOIN events e ON e.seq = events_fts.rowid WHERE events_fts MATCH ?{extra} "
                    "ORDER BY score, e.ts DESC LIMIT ?"
                )
            else:
                # Unfiltered: rank inside FTS5 first, join only the best `limit` rows (faster when
                # matches are many, bench/search.py). Ties at the cut are taken newest-stored first (seq),
                # then the page is ordered by score, newest ts first (docs/search.md).
                sql = (
                    f"SELECT {ddl.EVENT_SELECT}, f.score FROM (SELECT rowid, bm25(events_fts) AS score "
                    "FROM events_fts WHERE events_fts MATCH ? ORDER BY score, rowid DESC LIMIT ?) f "
                    "JOIN events e ON e.seq = f.rowid ORDER BY f.score, e.ts DESC"
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

    async def _query_metrics(self, metric_name: str, window: Window, aggregation: str) -> tuple[Any, int]:
        cond, params = extras.metric_where(metric_name, window.agent_slug, window.since_us, window.until_us)
        if aggregation.startswith("p"):
            sql = f"SELECT {extras.METRIC_VALUE} FROM events WHERE {cond}"
            values = [r[0] for r in await self._read(lambda c: c.execute(sql, params).fetchall())]
            return aggregate(aggregation, values)
        fn = {"avg": "avg", "sum": "total", "min": "min", "max": "max", "count": "count"}[aggregation]
        sql = f"SELECT {fn}({extras.METRIC_VALUE}), count(*) FROM events WHERE {cond}"
        return await self._read(lambda c: c.execute(sql, params).fetchone())

    # --------------------------------------------------------------- retention
    async def _vacuum(
        self, hot_days: int, max_disk_mb: float | None, dry_run: bool, now: datetime | None, keep: list[date]
    ) -> dict[str, Any]:
        cutoff_us = to_us(hot_cutoff(hot_days, now))
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

    # ------------------------------------------------- optional capabilities
    def tier_source(self) -> Any:
        from magsag.backends.sqlite.tiering import SQLiteTierSource

        return SQLiteTierSource(self)

    async def metric_samples(
        self, metric_name: str, agent_slug: str | None, since: datetime | None, until: datetime | None
    ) -> list[tuple[str, float]]:
        w = Window.of(agent_slug, since, until)
        return await self._read(lambda c: extras.metric_samples(c, metric_name, w.agent_slug, w.since_us, w.until_us))

    async def day_stats(self) -> list[dict[str, Any]]:
        return await self._read(extras.day_stats)

    duckdb_extensions = duck.EXTENSIONS

    def duckdb_source(self, con: Any, alias: str, mode: str = "auto") -> HotSource | None:
        return duck.source(con, self.db_path, alias, mode)

    def duckdb_exclusive_key(self) -> str | None:
        return duck.exclusive_key(self.db_path)

    async def activity(self, since_us: int, buckets: Sequence[float]) -> list[list[tuple[Any, ...]]]:
        return await self._read(lambda c: extras.activity(c, since_us, buckets))

    async def finished_runs(self, sel: RunSelection, after: RunKey, limit: int) -> list[dict[str, Any]]:
        rows = await self._read(lambda c: extras.finished_runs(c, sel, after, limit))
        return [run_record(r) for r in rows]

    async def read_export_state(self, destination: str) -> tuple[RunKey, int] | None:
        return await self.write(lambda c: extras.read_export_state(c, destination))

    async def save_export_state(self, destination: str, key: RunKey, runs: int, updated_at_us: int) -> None:
        await self.write(lambda c: extras.save_export_state(c, destination, key, runs, updated_at_us))

    async def export_states(self) -> list[tuple[str, RunKey, int]]:
        return await self.write(extras.export_states)

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


def _numpy_present() -> bool:
    import importlib.util

    return importlib.util.find_spec("numpy") is not None


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

"""The one writer of a SQLite hot store: a thread, a queue, group commit and a journal.

Every write to the database goes through :class:`SQLiteWriter`: one connection owned by
one thread, so SQLite never answers "database is locked" to our own callers, and the
event loop never blocks on disk.

* **Group commit.** The thread drains everything queued and commits it in one
  transaction, then wakes all the waiters with a single call into each event loop.
  Sixteen tasks logging at once share one commit.
* **Crash journal.** A single ``append_event`` writes its row to an append-only journal
  file (one ``write(2)``, no fsync, the same durability SQLite's WAL gives with
  ``synchronous=NORMAL``: it survives a crash of this process) and returns; the thread
  moves journaled rows into SQLite in batches. The row's JSON text (written to the
  journal anyway) also goes into an in-memory list; only the first row of an empty list
  posts a token to the thread, which takes the whole list at once and hands it to
  SQLite as one JSON array (parsed in C with the GIL released, so the application's
  thread, busy appending, keeps running). A stream of single appends costs the thread
  one transaction per group (whatever arrived while the previous one committed), not
  one queue item per event. The thread does not linger: rows reach SQLite, and other
  connections, as soon as it is free. When ``MAX_PENDING_ROWS`` rows wait, appenders
  wait for the thread too (bounded memory, bounded replay). On open, journals left by
  dead processes are replayed (``INSERT OR IGNORE`` on ``event_id`` makes the replay
  idempotent). Reads first wait for everything already appended (``barrier``), so a
  caller always reads its own writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

RowWriter = Callable[[sqlite3.Connection, list[tuple[Any, ...]]], int]
JsonWriter = Callable[[sqlite3.Connection, str], int]  # rows as one JSON array of arrays
_STOP = object()
_JOURNAL = ("journal",)  # token: the journal's pending rows want moving into SQLite
_JOURNAL_TRUNCATE_BYTES = 8 * 1024 * 1024
_MAX_BATCH_ROWS = 50_000
MAX_PENDING_ROWS = 100_000


class _Waiter:
    """Resolves either an asyncio future (batched per loop) or a concurrent Future."""

    __slots__ = ("fut", "loop")

    def __init__(self, fut: asyncio.Future[Any] | Future[Any], loop: asyncio.AbstractEventLoop | None):
        self.fut = fut
        self.loop = loop


def _settle(fut: asyncio.Future[Any] | Future[Any], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


class Journal:
    """This process's append-only crash journal (one JSON array per line).

    ``pending`` holds the JSON (UTF-8 bytes) of every journaled row not yet taken by the writer
    thread, in journal order; ``lock`` guards the file position and the list together.
    """

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.lock = threading.Lock()
        self.generation = 0
        self.written = 0
        self.pending: list[bytes] = []

    def append(self, row: tuple[Any, ...]) -> int:
        """Write one row (one ``write(2)``); return how many rows are pending with it."""
        text = orjson.dumps(row)  # a validated row: strings, integers, None
        data = text + b"\n"
        with self.lock:
            os.write(self.fd, data)
            self.written += len(data)
            pending = self.pending
            pending.append(text)
            return len(pending)

    def take(self) -> tuple[list[bytes], tuple[int, int]]:
        """The pending rows and the journal position they reach; the list starts anew."""
        with self.lock:
            rows, self.pending = self.pending, []
            return rows, (self.generation, self.written)

    def maybe_truncate(self, committed: tuple[int, int]) -> None:
        with self.lock:
            if committed == (self.generation, self.written) and self.written > _JOURNAL_TRUNCATE_BYTES:
                os.ftruncate(self.fd, 0)
                self.generation += 1
                self.written = 0

    def close(self, *, remove: bool) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()


def json_array(rows: list[bytes]) -> str:
    """One JSON array (text, for SQLite's ``json_each``) of rows encoded as JSON bytes."""
    return (b"[" + b",".join(rows) + b"]").decode()


def orphan_journals(directory: Path) -> list[Path]:
    """Journal files no live writer holds (their process died before moving them)."""
    if fcntl is None or not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # alive: its owner holds the lock
        finally:
            os.close(fd)
        found.append(path)
    return found


def read_journal(path: Path) -> list[tuple[Any, ...]]:
    """Rows of a journal; a torn last line (crash mid-write) is skipped."""
    rows = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                value = orjson.loads(line)
            except ValueError:
                continue
            if isinstance(value, list):
                rows.append(tuple(value))
    return rows


class SQLiteWriter:
    """Owns the write connection and its thread. See the module docstring."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        write_rows: RowWriter,
        journal_dir: Path | None,
        write_json: JsonWriter | None = None,
        *,
        name: str = "the SQLite store",
    ):
        self._connect = connect
        self._name = name  # how errors name the store (its path)
        self._write_rows = write_rows
        self._write_json = write_json or (lambda conn, text: write_rows(conn, [tuple(r) for r in orjson.loads(text)]))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._journal = Journal(journal_dir) if (journal_dir is not None and fcntl is not None) else None
        self._enqueued = 0
        self._committed = 0
        self._count_lock = threading.Lock()
        self._failed_rows: list[bytes] = []  # journaled rows (JSON) of a failed transaction
        self._closed = False
        self._ready: Future[None] = Future()
        # Called by the thread after every commit (stream_events' wake-up, backends/sqlite/stream.py).
        self.on_commit: Callable[[], None] | None = None

    # ---------------------------------------------------------------- control
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="magsag-sqlite-writer", daemon=True)
        self._thread.start()
        self._ready.result()

    async def close(self) -> None:
        if self._closed:
            return
        await self.barrier()
        self._closed = True
        self._queue.put(_STOP)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self._journal is not None:
            self._journal.close(remove=not self._failed_rows and not self._journal.pending)

    @property
    def journaling(self) -> bool:
        return self._journal is not None

    # ----------------------------------------------------------------- submit
    def _put(self, item: tuple[Any, ...]) -> None:
        if self._closed:
            raise RuntimeError("the storage backend is closed")
        with self._count_lock:
            self._enqueued += 1
        self._queue.put(item)

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(conn)`` inside the writer's transaction (in a savepoint); return its result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._put(("call", fn, _Waiter(fut, loop)))
        return await fut

    def call_sync(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        fut: Future[Any] = Future()
        self._put(("call", fn, _Waiter(fut, None)))
        return fut.result()

    async def write_rows(self, rows: list[tuple[Any, ...]]) -> int:
        """Insert a batch of event rows in one transaction; return how many were new."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._put(("rows", rows, _Waiter(fut, loop)))
        return await fut

    def append_journaled(self, row: tuple[Any, ...]) -> bool:
        """Durably record one event row without waiting for the commit.

        Only for a writer that is ``journaling``. The first row of an empty pending list
        posts one token; the thread takes every row pending when it gets to it. Returns
        True when ``MAX_PENDING_ROWS`` rows wait: the caller should then ``barrier()``.
        """
        if self._closed:
            raise RuntimeError("the storage backend is closed")
        journal = self._journal
        assert journal is not None
        try:
            pending = journal.append(row)
        except OSError as exc:  # the crash journal sits next to the store, on its disk
            from magsag.backends.errors import StorageError

            if exc.errno == errno.ENOSPC:
                raise StorageError(f"disk full: {self._name}") from None
            raise StorageError(f"cannot journal a write to {self._name}: {exc.strerror or exc}") from None
        if pending == 1:
            self._put(_JOURNAL)
        return pending >= MAX_PENDING_ROWS

    async def barrier(self) -> None:
        """Wait until everything appended before this call is committed."""
        with self._count_lock:
            pending = self._enqueued != self._committed
        if pending and not self._closed:
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            self._put(("barrier", _Waiter(fut, loop)))
            await fut

    # ----------------------------------------------------------------- thread
    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                items = [first]
                stop = self._drain(items)
                self._process(conn, items)
                if stop:
                    return
        finally:
            conn.close()

    def _drain(self, items: list[tuple[Any, ...]]) -> bool:
        """Move whatever is queued into ``items`` (up to a batch); True if _STOP was met."""
        rows_seen = sum(len(item[1]) for item in items if item[0] == "rows")
        while rows_seen < _MAX_BATCH_ROWS:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                return False
            if nxt is _STOP:
                return True
            items.append(nxt)
            if nxt[0] == "rows":
                rows_seen += len(nxt[1])
        return False

    def _process(self, conn: sqlite3.Connection, items: list[tuple[Any, ...]]) -> None:
        results: list[tuple[_Waiter, Any]] = []
        loose: list[bytes] = self._failed_rows  # journaled rows moved by this transaction
        self._failed_rows = []
        journal_mark: tuple[int, int] | None = None
        committed = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            pending: list[bytes] = list(loose)  # journaled rows, written in journal order
            for item in items:
                kind = item[0]
                if kind == "journal":
                    assert self._journal is not None
                    taken, journal_mark = self._journal.take()
                    pending.extend(taken)
                    loose.extend(taken)
                    continue
                if pending:
                    self._write_json(conn, json_array(pending))
                    pending = []
                if kind == "rows":
                    rows, waiter = item[1], item[2]
                    results.append((waiter, self._savepoint(conn, lambda c, r=rows: self._write_rows(c, r))))
                elif kind == "call":
                    results.append((item[2], self._savepoint(conn, item[1])))
                else:  # barrier
                    results.append((item[1], None))
            if pending:
                self._write_json(conn, json_array(pending))
            conn.execute("COMMIT")
            committed = True
        except BaseException as exc:  # the whole transaction failed (disk full, busy, ...)
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = self._failure(exc)
            log.warning("magsag sqlite writer: transaction failed: %s", failure)
            self._failed_rows = loose  # journaled rows stay in the journal; retried next round
            results = [(w, r if isinstance(r, BaseException) else failure) for w, r in results]
            # Every waiter of this transaction hears of it, also those whose item was not
            # reached: none may wait for a commit that will not come.
            answered = {id(w) for w, _ in results}
            for item in items:
                waiter = item[1] if item[0] == "barrier" else item[2] if item[0] in ("rows", "call") else None
                if waiter is not None and id(waiter) not in answered:
                    results.append((waiter, failure))
            if loose:
                time.sleep(0.05)
        finally:
            with self._count_lock:
                self._committed += len(items)
        self._wake(results)
        if committed and self.on_commit is not None:
            self.on_commit()
        if journal_mark is not None and self._journal is not None and not self._failed_rows:
            self._journal.maybe_truncate(journal_mark)

    def _failure(self, exc: BaseException) -> BaseException:
        """A SQLite error of the writer as one line naming the store (disk full: its path)."""
        from magsag.backends.errors import BackendUnavailable, StorageError

        if not isinstance(exc, sqlite3.Error):
            return exc
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL" or "disk is full" in text:
            return StorageError(f"disk full: {self._name}")
        if "readonly" in text or "read-only" in text:
            return BackendUnavailable(f"cannot write {self._name}: {text}")
        return StorageError(f"writing {self._name} failed: {text}")

    def _savepoint(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn.execute("SAVEPOINT op")
        try:
            result = fn(conn)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back (disk full, I/O error): it failed
            try:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            except sqlite3.Error:
                raise exc from None
            return self._failure(exc)
        conn.execute("RELEASE op")
        return result

    @staticmethod
    def _wake(results: list[tuple[_Waiter, Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
        for waiter, result in results:
            if waiter.loop is None:
                _settle(waiter.fut, result)
            else:
                by_loop.setdefault(waiter.loop, []).append((waiter.fut, result))
        for loop, pairs in by_loop.items():

            def settle_all(pairs: list[tuple[Any, Any]] = pairs) -> None:
                for fut, result in pairs:
                    _settle(fut, result)

            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(settle_all)

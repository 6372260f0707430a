"""Journaled single appends for PostgreSQL (``MAGSAG_STORAGE_PG_ACK=journal``, opt-in).

By default a PostgreSQL ``append_event`` returns once its row is committed on the server
(group commit: one round trip and one commit per call when it is alone). With the
journal, it returns once the row is in this process's append-only crash journal on local
disk (one ``write(2)``, no fsync: the file format and guarantees of the SQLite store's
journal, backends/sqlite/writer.py): it survives a crash of the process, not of the
machine. A task on the event loop moves journaled rows to the server in batches with the
binary COPY path, whenever the application's task yields or ``MAX_PENDING`` rows wait
(then the appender waits for that batch). Reads wait for everything already appended, so
a caller reads its own writes. On open, journals that dead processes left in the same
folder are replayed (idempotent: stored event ids are skipped).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from magsag.backends.schema import Event
from magsag.backends.sqlite.writer import Journal, orphan_journals, read_journal

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend

log = logging.getLogger(__name__)
MAX_PENDING = 20_000
_REPLAY_CHUNK = 20_000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def default_dir(backend: PostgresStorageBackend) -> Path:
    """``.magsag/pg-journal/<host>_<port>_<database>_<schema>``."""
    i = backend._info
    name = _UNSAFE.sub("_", f"{i.host}_{i.port}_{i.database}_{backend.schema}")
    return Path(".magsag") / "pg-journal" / name


class JournaledAppends:
    """The journal of one backend and the task that drains it into PostgreSQL."""

    def __init__(self, backend: PostgresStorageBackend, directory: Path, max_pending: int = MAX_PENDING) -> None:
        self.backend = backend
        self.directory = Path(directory).expanduser()
        self.max_pending = max(1, int(max_pending))
        self.journal: Journal | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> int:
        """Replay orphan journals, then start this process's own; return the rows replayed."""
        replayed = 0
        for path in orphan_journals(self.directory):
            rows = read_journal(path)
            for i in range(0, len(rows), _REPLAY_CHUNK):
                chunk = [Event(*r) for r in rows[i : i + _REPLAY_CHUNK]]
                await self.backend._append_validated(chunk)
                replayed += len(chunk)
            path.unlink(missing_ok=True)
        self.journal = Journal(self.directory)
        return replayed

    @property
    def pending(self) -> int:
        return len(self.journal.pending) if self.journal else 0

    async def append(self, row: tuple[Any, ...]) -> None:
        assert self.journal is not None
        n = self.journal.append(row)
        if n == 1:
            self._start()
        elif n >= self.max_pending:
            await self.flush()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        journal = self.journal
        assert journal is not None
        delay = 0.05
        while journal.pending:
            rows, mark = journal.take()
            try:
                events = [Event(*orjson.loads(r)) for r in rows]
                await self.backend._append_validated(events)
            except asyncio.CancelledError:
                with journal.lock:
                    journal.pending[:0] = rows
                raise
            except Exception as exc:  # the server is away: keep the rows (they are journaled) and retry
                with journal.lock:
                    journal.pending[:0] = rows
                log.warning("magsag postgres journal: moving %d rows failed (%s); retrying", len(rows), exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            journal.maybe_truncate(mark)

    async def flush(self) -> None:
        """Wait until every row appended so far is committed on the server."""
        if self.journal is None:
            return
        while self.journal.pending or (self._task is not None and not self._task.done()):
            self._start()
            task = self._task
            assert task is not None
            await asyncio.shield(task)

    async def close(self, timeout: float = 30.0) -> None:
        """Move what is left (for at most ``timeout`` s; the rest stays journaled for the next open)."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.warning("magsag postgres journal: server unreachable at close; %d rows stay journaled", self.pending)
            if self._task is not None:
                self._task.cancel()
        if self.journal is not None:
            self.journal.close(remove=not self.journal.pending)
            self.journal = None

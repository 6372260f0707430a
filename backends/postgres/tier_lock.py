"""The tiering job lock of a PostgreSQL hot store: a session advisory lock on its own connection.

``pg_advisory_lock(hashtextextended(<key>, 0))`` on a dedicated connection (never a pooled
one) held for the whole job: ``pg_try_advisory_lock`` when failing fast, ``pg_advisory_lock``
under ``lock_timeout`` when waiting with a timeout. The server releases a session lock when
the session ends, so a holder killed with ``kill -9`` (its socket closes) never blocks the
next job. The connection is named ``magsag-tier pid=N host=H``; a refused job names the
holder from ``pg_stat_activity``. :meth:`AdvisoryJobLock.check` pings that session: a job
whose session is gone (server restart, ``pg_terminate_backend``) no longer holds the lock
and must stop before changing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from magsag.backends.errors import LockedError, StorageError
from magsag.backends.postgres.conn import connect_error, query_error, require_asyncpg

if TYPE_CHECKING:
    from magsag.backends.postgres.store import PostgresStorageBackend


class AdvisoryJobLock:
    """One advisory lock ``key`` of ``backend``'s database; ``what`` names it in messages."""

    def __init__(self, backend: PostgresStorageBackend, key: str, what: str):
        self.backend = backend
        self.key = key
        self.what = what
        self.conn: Any = None  # the holding session while held
        self._ping = asyncio.Lock()  # pings may come from concurrent steps: one at a time

    @asynccontextmanager
    async def hold(self, *, wait: bool = True, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the lock for the ``async with`` block (see :meth:`TierSource.job_lock`)."""
        asyncpg = require_asyncpg()
        b = self.backend
        b._require()
        name = f"magsag-tier pid={os.getpid()} host={socket.gethostname()}"[:63]
        try:
            conn = await asyncpg.connect(
                b._dsn,
                timeout=b.connect_timeout,
                server_settings={"application_name": name, "statement_timeout": "0", "lock_timeout": "0"},
            )
        except Exception as exc:
            raise connect_error(exc, b._info, b.connect_timeout) from None
        try:
            try:
                if not wait:
                    got = await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", self.key)
                else:
                    if timeout is not None:
                        await conn.execute(f"SET lock_timeout = {max(1, int(timeout * 1000))}")
                    try:
                        await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", self.key)
                        got = True
                    except asyncpg.LockNotAvailableError:
                        got = False
                    await conn.execute("SET lock_timeout = 0")
                if not got:
                    raise LockedError(
                        f"another tiering job holds the lock of {self.what} on {b.where}{await self._holder(conn)}"
                    )
            except StorageError:
                raise
            except Exception as exc:
                raise query_error(exc, "taking the tiering lock", b._info, 0) from None
            self.conn = conn
            try:
                yield
            finally:
                self.conn = None
                with contextlib.suppress(Exception):
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", self.key)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=5)

    async def _holder(self, conn: Any) -> str:
        """`` (held by <application_name>, connected since ...)`` when the holder is visible."""
        with contextlib.suppress(Exception):
            key = await conn.fetchval("SELECT hashtextextended($1, 0)", self.key)
            row = await conn.fetchrow(
                "SELECT a.application_name, a.backend_start::text AS since FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1 LIMIT 1",
                (key >> 32) & 0xFFFFFFFF,
                key & 0xFFFFFFFF,
            )
            if row is not None:
                who = row["application_name"] or "an unnamed session"
                return f" (held by {who}, connected since {row['since'][:19]})"
        return ""

    async def check(self) -> None:
        """While held: make sure the holding session is alive, else :class:`LockedError`."""
        conn = self.conn
        if conn is None:
            return
        try:
            async with self._ping:
                if conn.is_closed():
                    raise ConnectionError("closed")
                await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout=30)
        except Exception:
            raise LockedError(
                f"lost the tiering lock of {self.what} (its connection to {self.backend.where} ended); "
                "stopping: the next run finishes this work"
            ) from None

"""Parser worker processes for the legacy importer.

Parsing run folders is pure CPU work in Python. Done in the importing process it cannot
overlap with the store's writer thread: a busy thread holds the GIL and SQLite's writer,
which needs the GIL between rows, crawls beside a busy thread (``bench/migrate.py
--workers 0`` shows it). So large imports parse in separate interpreters started with
``python -m magsag.ingest.legacy_worker``: a fresh process (no ``fork`` of a threaded
process, no re-run of the caller's ``__main__``) that reads requests on stdin and answers
on stdout, each message an 8-byte length and a pickle.

A worker that fails to start or dies is not fatal: its chunks are parsed in the importing
process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
from collections import deque
from typing import Any, BinaryIO

from magsag.ingest.legacy_fields import ParsedRun
from magsag.ingest.legacy_mapping import parse_run

_HEADER = struct.Struct(">Q")


Item = tuple[str, str, dict[str, list[int]] | None]


def parse_chunk(items: list[Item], max_line_bytes: int) -> list[ParsedRun]:
    """Parse several run folders: ``items`` are (folder, run id, fingerprint of the last import)."""
    return [parse_run(path, run_id, max_line_bytes, known) for path, run_id, known in items]


# ------------------------------------------------------------------ the child


def _read_exact(fh: BinaryIO, n: int) -> bytes | None:
    data = fh.read(n)
    return data if data is not None and len(data) == n else None


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests until stdin closes."""
    while True:
        head = _read_exact(stdin, _HEADER.size)
        if head is None:
            return
        body = _read_exact(stdin, _HEADER.unpack(head)[0])
        if body is None:
            return
        try:
            items, max_line = pickle.loads(body)
            reply: tuple[str, Any] = ("ok", parse_chunk(items, max_line))
        except Exception as exc:  # a bug, not bad input: parse_run never raises on data
            reply = ("error", f"{type(exc).__name__}: {exc}")
        out = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(_HEADER.pack(len(out)))
        stdout.write(out)
        stdout.flush()


# ----------------------------------------------------------------- the parent


class WorkerFailed(Exception):
    pass


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.replies: deque[asyncio.Future[list[ParsedRun]]] = deque()
        self.reader = asyncio.ensure_future(self._read_loop())
        self.dead: str | None = None

    async def _read_loop(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                head = await stdout.readexactly(_HEADER.size)
                body = await stdout.readexactly(_HEADER.unpack(head)[0])
                status, value = pickle.loads(body)
                fut = self.replies.popleft()
                if status == "ok":
                    fut.set_result(value)
                else:
                    fut.set_exception(WorkerFailed(value))
        except (asyncio.IncompleteReadError, ConnectionError, pickle.UnpicklingError, IndexError) as exc:
            self._fail(f"parser worker stopped ({type(exc).__name__})")

    def _fail(self, why: str) -> None:
        self.dead = why
        while self.replies:
            fut = self.replies.popleft()
            if not fut.done():
                fut.set_exception(WorkerFailed(why))

    def submit(self, items: list[Item], max_line: int) -> asyncio.Future[list[ParsedRun]]:
        fut: asyncio.Future[list[ParsedRun]] = asyncio.get_running_loop().create_future()
        if self.dead is not None or self.proc.stdin is None:
            fut.set_exception(WorkerFailed(self.dead or "parser worker has no stdin"))
            return fut
        body = pickle.dumps((items, max_line), protocol=pickle.HIGHEST_PROTOCOL)
        self.replies.append(fut)
        try:
            self.proc.stdin.write(_HEADER.pack(len(body)) + body)
        except (ConnectionError, RuntimeError) as exc:
            self._fail(f"parser worker stopped ({type(exc).__name__})")
        return fut

    async def close(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


class ParserPool:
    """``n`` parser processes; :meth:`parse` sends one chunk to the next one (round robin)."""

    def __init__(self, n: int, max_line_bytes: int):
        self.n = n
        self.max_line = max_line_bytes
        self.workers: list[_Worker] = []
        self._next = 0

    async def start(self) -> bool:
        """Start the processes; False (and nothing running) if they cannot be started."""
        env = dict(os.environ)
        try:
            for _ in range(self.n):
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "magsag.ingest.legacy_worker",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,
                    env=env,
                )
                self.workers.append(_Worker(proc))
        except OSError:
            await self.close()
            return False
        return True

    async def parse(self, items: list[Item]) -> list[ParsedRun]:
        live = [w for w in self.workers if w.dead is None]
        if live:
            worker = live[self._next % len(live)]
            self._next += 1
            try:
                return await worker.submit(items, self.max_line)
            except WorkerFailed:
                pass
        return parse_chunk(items, self.max_line)  # no worker left: parse here

    async def close(self) -> None:
        workers, self.workers = self.workers, []
        for w in workers:
            await w.close()


if __name__ == "__main__":  # pragma: no cover - runs in the child process
    serve(sys.stdin.buffer, sys.stdout.buffer)

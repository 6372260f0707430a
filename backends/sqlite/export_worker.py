"""Export worker: DuckDB reads the SQLite hot store in a child process, Arrow over a pipe.

DuckDB's sqlite_scanner carries its own copy of the SQLite library. Two copies of SQLite
in one process do not see each other's POSIX locks, and closing a file in one copy drops
the locks of the other; on a WAL database that corrupts the shared-memory index (seen
here as a bus error). So DuckDB never opens the hot store inside the process that holds
the backend: :class:`ExportWorker` starts ``python -m magsag.backends.sqlite.export_worker`` once per
tiering job and sends it one query per claim; the child runs it (SQLite selects and sorts
the day inside ``sqlite_query``; DuckDB, under a memory limit, converts) and streams the
result back as an Arrow IPC stream.

Wire format, per request (one JSON line on the child's stdin): the child answers ``A``,
an Arrow IPC stream, then ``K`` (ok) or ``E`` + 4-byte length + message; or, when the
query fails before any row, ``E`` + length + message alone.
"""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from magsag.backends.duckdb_sql import sql_string
from magsag.backends.errors import StorageError

if TYPE_CHECKING:
    import pyarrow as pa


class ExportWorker:
    """A child process running DuckDB queries over one SQLite file; see the module docstring."""

    def __init__(self, db_path: str | Path, extension: str, *, memory_limit: str = "128MB", threads: int = 2):
        self.db_path = str(db_path)
        self.extension = extension
        self.memory_limit = memory_limit
        self.threads = threads
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            env = dict(os.environ)
            config = {"extension": self.extension, "memory_limit": self.memory_limit, "threads": self.threads}
            if self._stderr is None:
                self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept for the worker's lifetime
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "magsag.backends.sqlite.export_worker", orjson.dumps(config).decode()],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
            )
        return self._proc

    def batches(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Run ``sql`` (DuckDB SQL; the hot store is attached as ``hot``) and yield its batches."""
        import pyarrow as pa

        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        finished = False
        try:
            proc.stdin.write(orjson.dumps({"db": self.db_path, "sql": sql, "batch_rows": batch_rows}) + b"\n")
            proc.stdin.flush()
            head = proc.stdout.read(1)
            if head == b"E":
                finished = True
                raise StorageError(_message(proc.stdout))
            if head != b"A":
                raise StorageError(f"the export worker for {self.db_path} stopped unexpectedly{self._last_words()}")
            reader = pa.ipc.open_stream(proc.stdout)
            yield from reader
            tail = proc.stdout.read(1)
            finished = True
            if tail == b"E":
                raise StorageError(_message(proc.stdout))
            if tail != b"K":
                raise StorageError(f"the export worker for {self.db_path} stopped unexpectedly{self._last_words()}")
        except (BrokenPipeError, pa.ArrowInvalid, OSError) as exc:
            raise StorageError(f"the export worker for {self.db_path} failed: {exc}") from None
        finally:
            if not finished:  # abandoned mid-stream: the child may be blocked writing
                self.close()

    def _last_words(self) -> str:
        """The last line the child wrote to stderr (why it died), if any."""
        if self._stderr is None:
            return ""
        try:
            self._stderr.seek(0)
            lines = [ln for ln in self._stderr.read()[-4000:].decode("utf-8", "replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f": {lines[-1].strip()[:300]}" if lines else ""

    def close(self) -> None:
        if self._stderr is not None and self._proc is None:
            self._stderr.close()
            self._stderr = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for f in (proc.stdin, proc.stdout):
            if f is not None and not f.closed:
                f.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _message(stream: IO[bytes]) -> str:
    raw = stream.read(4)
    if len(raw) < 4:
        return "the export worker stopped unexpectedly"
    (n,) = struct.unpack(">I", raw)
    return stream.read(n).decode("utf-8", "replace")


# ---------------------------------------------------------------------- the child


def _serve(config: dict[str, Any]) -> None:
    import duckdb
    import pyarrow as pa
    from magsag.backends.allocator import lean_process
    from magsag.backends.duckdb_ext import new_connection

    lean_process()  # a streaming process: give freed memory back (backends/allocator.py)

    out = sys.stdout.buffer
    tmp = tempfile.mkdtemp(prefix="magsag-tier-")

    def error(msg: str) -> None:
        data = " ".join(msg.split())[:2000].encode()
        out.write(b"E" + struct.pack(">I", len(data)) + data)
        out.flush()

    settings = {"memory_limit": config["memory_limit"], "temp_directory": tmp}
    threads = int(config["threads"])
    loaded = None
    try:
        con = new_connection(threads, files=(config["extension"],), config=settings)
    except duckdb.Error as exc:
        loaded = f"cannot load the DuckDB sqlite_scanner extension: {str(exc).splitlines()[0]}"
        con = new_connection(threads, config=settings)
    try:
        for line in sys.stdin.buffer:
            req = orjson.loads(line)
            if loaded is not None:
                error(loaded)
                continue
            attached = started = False
            try:
                con.execute(f"ATTACH {sql_string(req['db'])} AS hot (TYPE sqlite, READ_ONLY)")
                attached = True
                reader = con.execute(req["sql"]).to_arrow_reader(int(req["batch_rows"]))
                out.write(b"A")
                started = True
                with pa.ipc.new_stream(out, reader.schema) as writer:
                    try:
                        for batch in reader:
                            writer.write_batch(batch)
                    except duckdb.Error as exc:
                        failure: str | None = str(exc)
                    else:
                        failure = None
                if failure is None:
                    out.write(b"K")
                    out.flush()
                else:
                    error(failure)
            except duckdb.Error as exc:
                if started:
                    raise  # the stream is broken; the parent sees the pipe close
                error(str(exc))
            finally:
                if attached:
                    con.execute("DETACH hot")
    finally:
        con.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(orjson.loads(sys.argv[1]))

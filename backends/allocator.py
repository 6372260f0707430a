"""Process-wide memory settings for long bulk jobs (``magsag data tier`` and ``archive``).

A tiering job streams gigabytes through short-lived Arrow buffers on several threads (the
event loop, ``asyncio.to_thread`` workers, SQLite's writer). Two allocator defaults then
keep memory the job no longer uses:

* glibc gives each thread that allocates its own arena (up to eight per core) and
  returns little of them to the system: capped at two arenas here (``mallopt``), the
  same setting as ``MALLOC_ARENA_MAX=2``;
* pyarrow's default pool (jemalloc or mimalloc) keeps freed pages for reuse: the job
  uses the system allocator instead (bench/tier.py runs the job this way).

:func:`lean_process` is called by the CLI's ``tier`` and ``archive`` commands, by the
SQLite export worker, and by ``bench/tier.py`` (which reports the peak RSS of the job
run that way); a library caller decides for its own process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def lean_process(arenas: int = 2) -> dict[str, bool]:
    """Cap glibc's malloc arenas and switch pyarrow to the system allocator; say which took."""
    done = {"malloc_arenas": False, "arrow_system_pool": False}
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            done["malloc_arenas"] = bool(libc.mallopt(M_ARENA_MAX, int(arenas)))
    with contextlib.suppress(Exception):  # an Arrow build without it keeps its default pool
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
        done["arrow_system_pool"] = True
    return done

"""Blocking access to the async store, for notebooks and scripts.

:class:`SyncStorage` runs an async :class:`~magsag.backends.base.StorageBackend` on a private
event loop in a background thread, so every method can be called without ``await``,
also inside Jupyter, whose own loop is already running (``asyncio.run`` would fail
there). Coroutine methods return their result; async iterators (``get_events``) return
a list.

>>> storage = SyncStorage(lambda: get_storage_backend())   # doctest: +SKIP
>>> storage.list_runs(limit=5)                              # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from magsag.backends.base import StorageBackend

T = TypeVar("T")


async def _collect(it: AsyncIterator[T]) -> list[T]:
    return [x async for x in it]


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, with or without a running loop here."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name="magsag-run-async")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class SyncStorage:
    """Every method of the wrapped store, blocking (see the module doc)."""

    def __init__(self, opener: Callable[[], Awaitable[StorageBackend]]):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="magsag-sync", daemon=True)
        self._thread.start()
        try:
            self.backend: StorageBackend = self._call(opener())
        except BaseException:
            self._stop()
            raise

    def _call(self, aw: Awaitable[T]) -> T:
        async def wrap() -> T:
            return await aw

        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "backend":
            raise AttributeError(name)
        attr = getattr(self.backend, name)
        if not callable(attr):
            return attr
        is_gen = inspect.isasyncgenfunction(attr)
        is_coro = inspect.iscoroutinefunction(attr)
        if not (is_gen or is_coro):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return self._call(_collect(result) if is_gen else result)

        return call

    def get_events(self, run_id: str, **kwargs: Any) -> list[dict[str, Any]]:
        """The run's events, oldest first, as a list."""
        return self._call(_collect(self.backend.get_events(run_id, **kwargs)))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self.backend.close())
        finally:
            self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def __enter__(self) -> SyncStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

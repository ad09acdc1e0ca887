"""Model work one request at a time: a single worker thread, fed in arrival order from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx, or 503 when busy) and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Worker:
    """Runs calls on one thread, one at a time, in the order they came; requests from several browsers wait their
    turn. ``scope()`` is entered around each call on that thread (torch's autocast and no-grad modes are per
    thread). More than ``max_pending`` calls waiting or running: a 503 :class:`RequestError` instead of a longer
    queue."""

    def __init__(
        self, scope: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext, max_pending: int = 32
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="titok-serve")
        self._scope, self.max_pending = scope, max_pending
        self.pending = 0  # changed on the event loop only

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` on the worker thread, after every call submitted before it."""
        if self.pending >= self.max_pending:
            raise RequestError(503, f"the server is busy ({self.pending} requests waiting); try again in a moment")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, function, args)
        finally:
            self.pending -= 1

    def _call(self, function: Callable[..., T], args: tuple) -> T:
        with self._scope():
            return function(*args)

    def close(self) -> None:
        """Stop taking calls; calls still waiting are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)

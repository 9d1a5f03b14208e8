"""Work handed off by listeners after they ack: tracked, logged, awaited at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskSet:
    """Keeps a strong reference to every background task until it ends (asyncio keeps weak ones).

    At most `limit` run at once: a burst of commands must not crowd out the next acks.
    """

    def __init__(self, limit: int = 8) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(limit)

    def spawn(self, work: Coroutine[Any, Any, None], name: str, *, urgent: bool = False) -> None:
        """Run `work` in the background (urgent work skips the queue); failures are logged."""
        task = asyncio.create_task(work if urgent else self._queued(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _queued(self, work: Coroutine[Any, Any, None]) -> None:
        """Wait for a free slot, then run `work`."""
        async with self._slots:
            await work

    def _done(self, task: asyncio.Task[None]) -> None:
        """Forget a finished task and log it if it failed."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("slack task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Wait for running tasks, then cancel what is left."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no task runs (tests use it to settle)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

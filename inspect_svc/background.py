"""One named background loop of the service: started with it, cancelled and awaited when it stops.

The model follower, the spool replayer and the notifier each run one loop for the service's lifetime;
this class owns that loop's task, so starting, stopping and reporting a crash are written once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

LoopFactory = Callable[[], Coroutine[Any, Any, None]]


class BackgroundLoop:
    """Owns the asyncio task that runs `loop()` until `stop()`.

    A loop that dies of an unexpected exception is logged once, with its traceback, as it dies: the
    service keeps running without it, so waiting for shutdown to hear of it would hide the failure.

    Args:
        name: the task's name, as logs and asyncio's task listings show it.
        loop: makes the coroutine to run; called once per `start()`.
    """

    def __init__(self, name: str, loop: LoopFactory) -> None:
        self.name = name
        self._make_loop = loop
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """The loop has started and has not ended yet."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop; one that was stopped (or died) may start again, a running one may not."""
        if self.running:
            raise RuntimeError(f"background loop {self.name} is already running")
        self._task = asyncio.create_task(self._make_loop(), name=self.name)
        self._task.add_done_callback(self._report_failure)

    async def stop(self) -> None:
        """Cancel the loop and wait until it has ended; nothing to do when it never started."""
        if self._task is None:
            return
        self._task.cancel()
        # `wait` neither raises the loop's own outcome (its cancellation, or an error already logged)
        # nor swallows a cancellation of the caller, which still propagates from here.
        await asyncio.wait([self._task])
        self._task = None

    def _report_failure(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()  # retrieving it also keeps asyncio from reporting it a second time
        if error is not None:
            log.error("background loop %s stopped on an unexpected error", self.name, exc_info=error)

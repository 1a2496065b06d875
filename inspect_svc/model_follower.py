"""Every replica serves the version the database marks active: a background task polls for it.

Activating a model through one replica's API swaps that replica at once and records the version in
the database; every other replica sees the new row at its next poll (`model_poll_s`), fetches the
bundle from the blob store when it lacks it, warms it beside the serving model and switches. While
the database is away the replica keeps serving what it serves; a version that cannot be loaded here
is retried with backoff, never by dropping the model that works.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from inspect_svc.background import BackgroundLoop
from inspect_svc.bundle import BundleError
from inspect_svc.engine.session import EngineError
from inspect_svc.model_manager import ModelManager
from inspect_svc.storage.blobstore import BlobStoreUnavailable
from inspect_svc.storage.db import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

# Errors after which the version the database names cannot be served here yet (not a database outage).
LOAD_ERRORS = (BundleError, EngineError, BlobStoreUnavailable)


@dataclass
class FollowState:
    """What the follower last learned, for /readyz and /models."""

    database_version: str | None = None  # the active version the database named at the last look
    error: str = ""  # why that version does not serve here, when it does not


class ActiveModelFollower:
    """Polls the database's active version and makes `models` serve it.

    Args:
        models: this replica's model manager.
        interval_s: seconds between two looks at the database.
        max_backoff_s: longest wait after repeated failures to load the active version.
    """

    def __init__(self, models: ModelManager, *, interval_s: float, max_backoff_s: float = 60.0) -> None:
        self.models = models
        self.interval_s = interval_s
        self.max_backoff_s = max_backoff_s
        self.state = FollowState()
        self._loop = BackgroundLoop("active-model-follower", self._run)

    @property
    def in_sync(self) -> bool:
        """This replica serves the version the database named at the last look (or none is named)."""
        wanted = self.state.database_version
        return wanted is None or wanted == self.models.active_version

    def start(self) -> None:
        if self.interval_s > 0:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def check_once(self) -> bool:
        """One look at the database (and a swap if needed); False when the active version failed to load.

        An unreachable database is not a failure here: the next look comes at the usual interval, so a
        replica catches up within one interval of the database's return.
        """
        try:
            active = await self.models.active_in_database()
            self.state.database_version = active.version if active else None
            if active is not None:
                await self.models.follow(active)
        except UNAVAILABLE_ERRORS as error:
            log.debug("active model not checked: database unreachable (%s)", type(error).__name__)
            return True
        except LOAD_ERRORS as error:
            error_text = f"{type(error).__name__}: {error}"
            if error_text != self.state.error:  # once per distinct cause, not once per poll
                log.error(
                    "cannot serve the active model here; the current one keeps serving (%s)", error_text
                )
            self.state.error = error_text
            return False
        self.state.error = ""
        return True

    async def _run(self) -> None:
        wait_s = self.interval_s
        while True:
            await asyncio.sleep(wait_s)
            loaded = await self.check_once()
            wait_s = self.interval_s if loaded else min(wait_s * 2, self.max_backoff_s)

"""Whether the service's own disk takes writes (blobs, spool, local indexes), with one log line per change.

A full or read-only data directory must not look like a bug (a 500 per frame, a log line per request) nor
like health (/readyz ok): writes that fail mark the disk unwritable, /readyz then reports it and probes it
again, and the first write that succeeds (a frame's, or the probe's) marks it writable again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# What a local write raises when the disk is full, read-only, over a size limit or failing.
LOCAL_WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error)

# Larger than one byte so that a file-size limit is hit too, small enough to fit in any free space.
PROBE_BYTES = 4096
PROBE_NAME = ".write-probe"


class WriteHealth:
    """Tracks local write failures and recoveries.

    Args:
        directories: where the service writes; the probe writes (and removes) a small file in each.
        on_failure: called once per failed write (a metric counter).
        probe_interval_s: while writable, /readyz probes at most this often.
    """

    def __init__(
        self,
        directories: Iterable[Path],
        *,
        on_failure: Callable[[], None] = lambda: None,
        probe_interval_s: float = 5.0,
    ) -> None:
        self.directories = list(directories)
        self.on_failure = on_failure
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._writable = True
        self._last_probe = float("-inf")

    @property
    def writable(self) -> bool:
        return self._writable

    def failed(self, error: BaseException) -> None:
        self.on_failure()
        with self._lock:
            was_writable, self._writable = self._writable, False
        if was_writable:
            log.error(
                "local storage refuses writes (%s: %s); answering 503 until it recovers",
                type(error).__name__,
                error,
            )

    def succeeded(self) -> None:
        with self._lock:
            was_writable, self._writable = self._writable, True
        if not was_writable:
            log.warning("local storage takes writes again")

    def check(self) -> bool:
        """Probe when unwritable, or when the last probe is older than the interval; returns `writable`."""
        if self._writable and time.monotonic() - self._last_probe < self.probe_interval_s:
            return True
        self._last_probe = time.monotonic()
        try:
            for directory in self.directories:
                _write_probe(directory)
        except LOCAL_WRITE_ERRORS as error:
            self.failed(error)
        else:
            self.succeeded()
        return self._writable


def _write_probe(directory: Path) -> None:
    path = directory / PROBE_NAME
    try:
        with open(path, "wb") as stream:
            stream.write(b"\0" * PROBE_BYTES)
            stream.flush()
            os.fsync(stream.fileno())
    finally:
        path.unlink(missing_ok=True)

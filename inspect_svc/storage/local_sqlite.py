"""Small SQLite files the service keeps on its own disk (the outage spool, the acknowledged-frame index,
the copy of camera keys): each must survive a power cut as soon as a write returns.

WAL with synchronous=FULL syncs the log on every commit; NORMAL would sync only at checkpoints, so the
last commits before a power cut could vanish although they had been answered.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: Path) -> sqlite3.Connection:
    """An autocommit connection to `path` (created with its folder), shared by threads under the caller's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection

"""Durable local index of the frames this service acknowledged: (camera_id, frame_id) -> the result given.

The database is where a repeated frame is normally recognised. While it is unreachable, a frame stored
before the outage (or spooled and already replayed) would otherwise look new and get a second answer;
this index, written before each answer, lets the service give the first one instead. It is bounded:
entries older than `max_age_s`, and the oldest beyond `max_items`, are pruned.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from inspect_svc.schemas import InspectionCreate
from inspect_svc.storage.local_sqlite import open_durable

# Pruning is one indexed DELETE; doing it every few hundred writes keeps it off the per-frame path.
PRUNE_EVERY = 256


class AcknowledgedFrames:
    """The first result acknowledged for each recent (camera_id, frame_id).

    Args:
        path: the index file; created with its folder when missing.
        max_age_s: forget frames acknowledged longer ago than this.
        max_items: keep at most this many frames (the newest).
    """

    def __init__(self, path: Path, *, max_age_s: float, max_items: int) -> None:
        self.path = path
        self.max_age_s = max_age_s
        self.max_items = max_items
        self._lock = threading.Lock()
        self._writes_since_prune = 0
        self._connection = open_durable(path)
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS acknowledged ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, camera_id TEXT NOT NULL, frame_id TEXT NOT NULL,"
            " record TEXT NOT NULL, acknowledged_at REAL NOT NULL, UNIQUE (camera_id, frame_id))"
        )
        self._connection.execute(
            "CREATE INDEX IF NOT EXISTS acknowledged_at ON acknowledged (acknowledged_at)"
        )
        self.prune()

    def remember(self, record: InspectionCreate) -> None:
        """Keep `record` as the answer for its frame; a frame already remembered keeps its first answer."""
        with self._lock:
            self._connection.execute(
                "INSERT OR IGNORE INTO acknowledged (camera_id, frame_id, record, acknowledged_at) VALUES (?, ?, ?, ?)",
                (record.camera_id, record.frame_id, record.model_dump_json(), time.time()),
            )
            self._writes_since_prune += 1
            if self._writes_since_prune >= PRUNE_EVERY:
                self._prune_locked()

    def find(self, camera_id: str, frame_id: str) -> InspectionCreate | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT record FROM acknowledged WHERE camera_id = ? AND frame_id = ? AND acknowledged_at >= ?",
                (camera_id, frame_id, time.time() - self.max_age_s),
            ).fetchone()
        return InspectionCreate.model_validate_json(row[0]) if row else None

    def count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM acknowledged").fetchone()[0])

    def prune(self) -> None:
        with self._lock:
            self._prune_locked()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def _prune_locked(self) -> None:
        self._writes_since_prune = 0
        self._connection.execute(
            "DELETE FROM acknowledged WHERE acknowledged_at < ?", (time.time() - self.max_age_s,)
        )
        self._connection.execute(
            "DELETE FROM acknowledged WHERE seq <= (SELECT seq FROM acknowledged ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (self.max_items,),
        )

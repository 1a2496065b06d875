"""Durable outage spool: finished results wait here while the database is unreachable.

The spool is its own small SQLite file (synchronous=FULL, so an acknowledged result survives a power
cut), independent of the main database. `SpoolReplayer` drains it into the database with backoff.
Replays are idempotent: the database ignores a (camera_id, frame_id) it already has, so a result
replayed twice, or spooled after a write that did land, is still stored exactly once.

A result the database refuses for a reason other than an outage (a constraint or data error) would
block the queue forever if retried; it is moved to the spool's `rejected` table instead, with the
error, where an operator can inspect it: nothing accepted is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import exc as sa_exc

from inspect_svc.background import BackgroundLoop
from inspect_svc.schemas import InspectionCreate
from inspect_svc.storage.local_sqlite import open_durable

log = logging.getLogger(__name__)


class SpoolFull(RuntimeError):
    """The spool holds `max_items` results; new ones cannot be accepted durably."""


class ResultSpool:
    """Results keyed by (camera_id, frame_id), in arrival order.

    Args:
        path: the spool file; created with its folder when missing.
        max_items: refuse new results beyond this many.
    """

    def __init__(self, path: Path, *, max_items: int) -> None:
        self.path = path
        self.max_items = max_items
        self._lock = threading.Lock()
        self._connection = open_durable(path)
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS spooled ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
            " camera_id TEXT NOT NULL, frame_id TEXT NOT NULL, record TEXT NOT NULL,"
            " UNIQUE (camera_id, frame_id))"
        )
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS rejected ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, camera_id TEXT NOT NULL,"
            " frame_id TEXT NOT NULL, record TEXT NOT NULL, error TEXT NOT NULL,"
            " rejected_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
        )

    def add(self, record: InspectionCreate) -> InspectionCreate:
        """Spool `record` durably; returns the record already spooled for the same frame, if any.

        Raises:
            SpoolFull: no room for another result.
        """
        with self._lock:
            existing = self._find_locked(record.camera_id, record.frame_id)
            if existing is not None:
                return existing
            if self._depth_locked() >= self.max_items:
                raise SpoolFull(f"the outage spool holds {self.max_items} results and is full")
            self._connection.execute(
                "INSERT INTO spooled (id, camera_id, frame_id, record) VALUES (?, ?, ?, ?)",
                (record.id, record.camera_id, record.frame_id, record.model_dump_json()),
            )
            return record

    def find(self, camera_id: str, frame_id: str) -> InspectionCreate | None:
        with self._lock:
            return self._find_locked(camera_id, frame_id)

    def get(self, inspection_id: str) -> InspectionCreate | None:
        with self._lock:
            row = self._connection.execute(
                "SELECT record FROM spooled WHERE id = ?", (inspection_id,)
            ).fetchone()
        return InspectionCreate.model_validate_json(row[0]) if row else None

    def oldest(self, limit: int) -> list[InspectionCreate]:
        with self._lock:
            rows = self._connection.execute(
                "SELECT record FROM spooled ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [InspectionCreate.model_validate_json(row[0]) for row in rows]

    def remove(self, inspection_id: str) -> None:
        with self._lock:
            self._connection.execute("DELETE FROM spooled WHERE id = ?", (inspection_id,))

    def reject(self, record: InspectionCreate, error: str) -> None:
        """Move `record` out of the replay queue into `rejected`, atomically, keeping `error` beside it."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.execute(
                    "INSERT OR REPLACE INTO rejected (id, camera_id, frame_id, record, error) VALUES (?, ?, ?, ?, ?)",
                    (record.id, record.camera_id, record.frame_id, record.model_dump_json(), error),
                )
                self._connection.execute("DELETE FROM spooled WHERE id = ?", (record.id,))
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def rejected(self) -> list[tuple[InspectionCreate, str]]:
        """Results the database refused, oldest first, each with its error."""
        with self._lock:
            rows = self._connection.execute("SELECT record, error FROM rejected ORDER BY seq").fetchall()
        return [(InspectionCreate.model_validate_json(record), error) for record, error in rows]

    def rejected_count(self) -> int:
        with self._lock:
            return int(self._connection.execute("SELECT COUNT(*) FROM rejected").fetchone()[0])

    def depth(self) -> int:
        with self._lock:
            return self._depth_locked()

    @property
    def is_full(self) -> bool:
        return self.depth() >= self.max_items

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def _find_locked(self, camera_id: str, frame_id: str) -> InspectionCreate | None:
        row = self._connection.execute(
            "SELECT record FROM spooled WHERE camera_id = ? AND frame_id = ?", (camera_id, frame_id)
        ).fetchone()
        return InspectionCreate.model_validate_json(row[0]) if row else None

    def _depth_locked(self) -> int:
        return int(self._connection.execute("SELECT COUNT(*) FROM spooled").fetchone()[0])


def is_database_outage(error: BaseException) -> bool:
    """True when retrying later may succeed (no connection), False when the database refused the data."""
    if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(
        error,
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.DisconnectionError,
            sa_exc.TimeoutError,
            ConnectionError,
            TimeoutError,
        ),
    )


class SpoolReplayer:
    """Background task that moves spooled results into the database, backing off while it is down.

    Args:
        spool: the spool to drain.
        store: writes one result to the database (idempotently) and raises while it is unreachable.
        min_backoff_s: first wait after a failure; doubles per failure up to `max_backoff_s`.
        max_backoff_s: longest wait between attempts.
        batch: results taken from the spool per pass.
        is_outage: tells an outage (back off, retry) from a refusal of one record (set it aside).
    """

    def __init__(
        self,
        spool: ResultSpool,
        store: Callable[[InspectionCreate], object],
        *,
        min_backoff_s: float = 0.2,
        max_backoff_s: float = 30.0,
        batch: int = 100,
        is_outage: Callable[[BaseException], bool] = is_database_outage,
    ) -> None:
        self.spool = spool
        self.is_outage = is_outage
        self.store = store
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.batch = batch
        self._wake = asyncio.Event()
        self._loop = BackgroundLoop("spool-replayer", self._run)

    def start(self) -> None:
        self._loop.start()

    def wake(self) -> None:
        """Something was spooled: start trying (the loop sleeps while the spool is empty)."""
        self._wake.set()

    async def stop(self) -> None:
        await self._loop.stop()

    async def drain_once(self) -> int:
        """Replay what is spooled now; returns how many results were moved. Raises if the database fails."""
        moved = 0
        while records := await asyncio.to_thread(self.spool.oldest, self.batch):
            for record in records:
                try:
                    await asyncio.to_thread(self.store, record)
                except Exception as error:
                    if self.is_outage(error):
                        raise
                    reason = f"{type(error).__name__}: {error}"
                    log.error("the database refused spooled result %s; set aside (%s)", record.id, reason)
                    await asyncio.to_thread(self.spool.reject, record, reason)
                    continue
                await asyncio.to_thread(self.spool.remove, record.id)
                moved += 1
        return moved

    async def _run(self) -> None:
        backoff = self.min_backoff_s
        while True:
            # Clear before looking, so a wake() between the look and the wait is not lost.
            self._wake.clear()
            if await asyncio.to_thread(self.spool.depth) == 0:
                await self._wake.wait()
            try:
                moved = await self.drain_once()
            except Exception as error:  # the database is still away: wait longer, then retry
                log.warning("spool replay failed (%s); retrying in %.1f s", type(error).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            if moved:
                log.info("replayed %d spooled results into the database", moved)
            backoff = self.min_backoff_s

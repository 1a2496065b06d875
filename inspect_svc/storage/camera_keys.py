"""Durable local copy of the cameras' key hashes and their state (active or disabled).

Keys are checked against the database; this copy is refreshed from every successful read and is used
only while the database is unreachable, so a service restarted during an outage still knows its
cameras, and still refuses the keys that were disabled before the outage began.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import ValidationError

from inspect_svc.schemas import CameraPublic
from inspect_svc.storage.local_sqlite import open_durable


class KnownCameraKeys:
    """api_key_hash -> camera, as the database last said.

    Args:
        path: the file; created with its folder when missing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._connection = open_durable(path)
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS camera_keys (api_key_hash TEXT PRIMARY KEY, camera TEXT NOT NULL)"
        )

    def replace_all(self, cameras: dict[str, CameraPublic]) -> bool:
        """Make the copy equal to `cameras` (every camera, disabled ones included); False when it already was."""
        wanted = {key_hash: camera.model_dump_json() for key_hash, camera in cameras.items()}
        with self._lock:
            if (
                dict(self._connection.execute("SELECT api_key_hash, camera FROM camera_keys").fetchall())
                == wanted
            ):
                return False  # nothing changed: no write, no fsync
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                self._connection.execute("DELETE FROM camera_keys")
                self._connection.executemany("INSERT INTO camera_keys VALUES (?, ?)", wanted.items())
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
            return True

    def remember(self, key_hash: str, camera: CameraPublic) -> None:
        """Record what the database said about one key (written only when it changed)."""
        encoded = camera.model_dump_json()
        with self._lock:
            row = self._connection.execute(
                "SELECT camera FROM camera_keys WHERE api_key_hash = ?", (key_hash,)
            ).fetchone()
            if row is None or row[0] != encoded:
                self._connection.execute(
                    "INSERT OR REPLACE INTO camera_keys VALUES (?, ?)", (key_hash, encoded)
                )

    def refuse(self, key_hash: str) -> None:
        """The database no longer accepts this key: a copy of it, if any, is marked disabled."""
        with self._lock:
            row = self._connection.execute(
                "SELECT camera FROM camera_keys WHERE api_key_hash = ?", (key_hash,)
            ).fetchone()
            camera = _decoded(row[0]) if row else None
            if camera is not None and camera.active:
                disabled = camera.model_copy(update={"active": False}).model_dump_json()
                self._connection.execute(
                    "UPDATE camera_keys SET camera = ? WHERE api_key_hash = ?", (disabled, key_hash)
                )

    def lookup(self, key_hash: str) -> CameraPublic | None:
        """The camera last known for this key (check `.active`); None when the key was never seen."""
        with self._lock:
            row = self._connection.execute(
                "SELECT camera FROM camera_keys WHERE api_key_hash = ?", (key_hash,)
            ).fetchone()
        return _decoded(row[0]) if row else None

    def close(self) -> None:
        with self._lock:
            self._connection.close()


def _decoded(encoded: str) -> CameraPublic | None:
    try:
        return CameraPublic.model_validate_json(encoded)
    except ValidationError:  # written by an older version with another camera schema: not trusted
        return None

"""The service's own durable files beside the spool: the acknowledged-frame index, the copy of camera
keys, the write-health tracker, and the synchronous=FULL promise of every SQLite file."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from inspect_svc.schemas import CameraPublic
from inspect_svc.storage import frame_index
from inspect_svc.storage.camera_keys import KnownCameraKeys
from inspect_svc.storage.db import make_engine
from inspect_svc.storage.frame_index import AcknowledgedFrames
from inspect_svc.storage.spool import ResultSpool
from inspect_svc.storage.write_health import WriteHealth
from tests.inspect_svc.storage.test_storage import record

SQLITE_SYNCHRONOUS_FULL = 2


def camera(name: str, *, active: bool = True) -> CameraPublic:
    return CameraPublic(
        name=name, line="line-a", active=active, created_at=datetime(2026, 1, 5, tzinfo=timezone.utc)
    )


def test_the_index_keeps_the_first_answer_of_a_frame_across_a_reopen(tmp_path) -> None:
    index = AcknowledgedFrames(tmp_path / "acknowledged.sqlite3", max_age_s=3600, max_items=10)
    first, second = record("f-1"), record("f-1")
    index.remember(first)
    index.remember(second)
    index.close()
    reopened = AcknowledgedFrames(tmp_path / "acknowledged.sqlite3", max_age_s=3600, max_items=10)
    assert reopened.find("cam-1", "f-1").id == first.id
    assert reopened.find("cam-1", "other") is None and reopened.find("cam-2", "f-1") is None


def test_the_index_forgets_the_oldest_frames_beyond_its_bounds(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(frame_index, "PRUNE_EVERY", 1)
    index = AcknowledgedFrames(tmp_path / "acknowledged.sqlite3", max_age_s=3600, max_items=3)
    for number in range(5):
        index.remember(record(f"f-{number}"))
    assert index.count() == 3
    assert [index.find("cam-1", f"f-{n}") is not None for n in range(5)] == [False, False, True, True, True]
    clock = iter([1_000.0, 1_000.0, 5_000.0, 5_000.0])
    monkeypatch.setattr(frame_index.time, "time", lambda: next(clock))
    aged = AcknowledgedFrames(tmp_path / "aged.sqlite3", max_age_s=3600, max_items=10)
    aged.remember(record("old"))  # acknowledged at t=1000 (the prune at open also read the clock)
    assert aged.find("cam-1", "old") is None  # looked up at t=5000: older than the window


def test_the_key_copy_follows_the_database_and_keeps_disabled_keys_refused(tmp_path) -> None:
    keys = KnownCameraKeys(tmp_path / "camera_keys.sqlite3")
    assert keys.replace_all({"h1": camera("cam-1"), "h2": camera("cam-2", active=False)}) is True
    assert keys.replace_all({"h1": camera("cam-1"), "h2": camera("cam-2", active=False)}) is False
    keys.refuse("h1")
    keys.refuse("never-seen")  # a random key is not recorded: the copy cannot be filled by guessing
    keys.remember("h3", camera("cam-3"))
    keys.close()
    reopened = KnownCameraKeys(tmp_path / "camera_keys.sqlite3")
    assert reopened.lookup("h1").active is False and reopened.lookup("h2").active is False
    assert reopened.lookup("h3").name == "cam-3" and reopened.lookup("never-seen") is None
    reopened.replace_all({"h3": camera("cam-3")})
    assert reopened.lookup("h1") is None


def test_write_health_logs_once_per_change_and_recovers_by_itself(tmp_path, caplog) -> None:
    data_dir = tmp_path / "var"
    data_dir.mkdir()
    failures: list[int] = []
    health = WriteHealth([data_dir], on_failure=lambda: failures.append(1), probe_interval_s=3600)
    assert health.check() is True
    data_dir.rmdir()
    data_dir.write_bytes(b"")  # a file where the folder was: every write under it fails, even for root
    with caplog.at_level(logging.INFO, logger="inspect_svc.storage.write_health"):
        health.failed(OSError(28, "No space left on device"))  # a frame's write failed
        assert [health.check() for _ in range(3)] == [False, False, False]  # probed at each check
        data_dir.unlink()
        data_dir.mkdir()
        assert [health.check() for _ in range(2)] == [True, True]
    assert len(failures) == 4  # every failed write is counted
    assert [record.levelname for record in caplog.records] == ["ERROR", "WARNING"]


def test_the_embedded_database_syncs_each_commit(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'inspect.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == SQLITE_SYNCHRONOUS_FULL
    engine.dispose()


@pytest.mark.parametrize(
    "opener",
    [
        lambda path: ResultSpool(path, max_items=1),
        lambda path: AcknowledgedFrames(path, max_age_s=1, max_items=1),
        lambda path: KnownCameraKeys(path),
    ],
)
def test_local_files_sync_each_commit(tmp_path, opener) -> None:
    store = opener(tmp_path / "local.sqlite3")
    assert store._connection.execute("PRAGMA synchronous").fetchone()[0] == SQLITE_SYNCHRONOUS_FULL
    store.close()

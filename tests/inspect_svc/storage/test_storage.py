"""Repositories, blob store and spool on real databases: every repository test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.orm import Session, sessionmaker

from inspect_svc.schemas import (
    CameraCreate,
    InspectionCreate,
    InspectionFilter,
    LineThresholds,
    Region,
    ReviewCreate,
    ThresholdsUsed,
    Timings,
    UserCreate,
)
from inspect_svc.security import hash_api_key, new_api_key
from inspect_svc.storage import migrations
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.blobstore import BlobNotFound, BlobStore
from inspect_svc.storage.db import make_engine, make_session_factory, session_scope
from inspect_svc.storage.spool import ResultSpool, SpoolFull

BASE_TIME = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(database_url)
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def record(
    frame_id: str, *, camera_id: str = "cam-1", minutes: int = 0, **overrides: object
) -> InspectionCreate:
    values: dict[str, object] = dict(
        id=str(uuid.uuid4()),
        camera_id=camera_id,
        frame_id=frame_id,
        line="line-a",
        model_version="m-1",
        threshold=ThresholdsUsed(pixel=0.5, image=0.6),
        verdict="defect",
        score=0.9,
        defect_area=12,
        width=64,
        height=48,
        timings=Timings(decode_ms=1.0, queue_ms=2.0, inference_ms=3.0, total_ms=7.0),
        regions=[Region(bbox=(1, 2, 3, 4), area=12, score=0.9, polygon=[(1, 2), (4, 2), (4, 6)])],
        image_key="ab/cd/" + "a" * 64 + ".png",
        image_media_type="image/png",
        map_key="ab/cd/" + "b" * 64 + ".png",
        created_at=BASE_TIME + timedelta(minutes=minutes),
    )
    values.update(overrides)
    return InspectionCreate(**values)  # type: ignore[arg-type]


def test_inspection_round_trip_keeps_every_field(sessions):
    stored = record("f-1")
    with session_scope(sessions) as session:
        assert repo.insert_inspection(session, inspection=stored) is True
    with session_scope(sessions) as session:
        loaded = repo.get_inspection_record(session, inspection_id=stored.id)
        public = repo.get_inspection(session, inspection_id=stored.id)
    assert loaded == stored
    assert public is not None and public.reviewed is False and public.links.map.endswith("/map.png")


def test_same_camera_frame_is_stored_once(sessions):
    first, second = record("dup"), record("dup", score=0.1)
    with session_scope(sessions) as session:
        assert repo.insert_inspection(session, inspection=first) is True
        assert repo.insert_inspection(session, inspection=second) is False
        assert repo.insert_inspection(session, inspection=first) is False  # a replay of the same record
        found = repo.find_inspection(session, camera_id="cam-1", frame_id="dup")
        assert found is not None and found.id == first.id
        assert repo.count_inspections(session, filters=InspectionFilter()) == 1
        # The same frame id from another camera is a different frame.
        assert repo.insert_inspection(session, inspection=record("dup", camera_id="cam-2")) is True


def test_filters_and_keyset_paging_visit_each_row_once(sessions):
    with session_scope(sessions) as session:
        for index in range(7):
            verdict = "ok" if index % 2 else "defect"
            # Two rows share each timestamp, so the id tie-break is exercised.
            repo.insert_inspection(
                session, inspection=record(f"f{index}", minutes=index // 2, verdict=verdict)
            )
        repo.insert_inspection(
            session, inspection=record("other", camera_id="cam-9", line="line-z", minutes=9)
        )
    seen, cursor = [], None
    with session_scope(sessions) as session:
        while True:
            page = repo.list_inspections(
                session, filters=InspectionFilter(line="line-a"), limit=3, cursor=cursor
            )
            seen += [item.frame_id for item in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert sorted(seen) == [f"f{index}" for index in range(7)]
        times = [item.created_at for item in repo.list_inspections(session, filters=InspectionFilter()).items]
        assert times == sorted(times, reverse=True)
        ok = repo.list_inspections(session, filters=InspectionFilter(verdict="ok")).items
        assert {item.frame_id for item in ok} == {"f1", "f3", "f5"}
        window = InspectionFilter(
            since=BASE_TIME + timedelta(minutes=1), until=BASE_TIME + timedelta(minutes=3)
        )
        assert {item.frame_id for item in repo.list_inspections(session, filters=window).items} == {
            "f2",
            "f3",
            "f4",
            "f5",
        }
        with pytest.raises(repo.InvalidCursor):
            repo.list_inspections(session, filters=InspectionFilter(), cursor="!!")


def test_reviews_mark_inspections_reviewed(sessions):
    stored = record("r-1")
    with session_scope(sessions) as session:
        repo.insert_inspection(session, inspection=stored)
        repo.insert_inspection(session, inspection=record("r-2"))
        reviewer = repo.create_user(
            session, user=UserCreate(username="ann", password="s3cret-pass", role="reviewer")
        )
        review = repo.add_review(
            session, review=ReviewCreate(inspection_id=stored.id, reviewer_id=reviewer.id, verdict="reject")
        )
        assert review.id > 0
        with pytest.raises(LookupError):
            repo.add_review(session, review=ReviewCreate(inspection_id="missing", verdict="confirm"))
    with session_scope(sessions) as session:
        reviewed = repo.list_inspections(session, filters=InspectionFilter(reviewed=True)).items
        assert [item.frame_id for item in reviewed] == ["r-1"] and reviewed[0].reviewed
        assert [r.verdict for r in repo.list_reviews(session, inspection_id=stored.id)] == ["reject"]


def test_cameras_are_found_by_key_hash_only_while_active(sessions):
    api_key = new_api_key()
    with session_scope(sessions) as session:
        repo.create_camera(
            session, camera=CameraCreate(name="cam-1", line="line-a"), api_key_hash=hash_api_key(api_key)
        )
    with session_scope(sessions) as session:
        camera = repo.camera_for_key_hash(session, api_key_hash=hash_api_key(api_key))
        assert camera is not None and camera.line == "line-a"
        assert repo.camera_for_key_hash(session, api_key_hash=hash_api_key("isk_other")) is None
        repo.set_camera_active(session, name="cam-1", active=False)
        assert repo.camera_for_key_hash(session, api_key_hash=hash_api_key(api_key)) is None


def test_line_thresholds_set_and_clear(sessions):
    with session_scope(sessions) as session:
        assert repo.get_line_thresholds(session, line="line-a") == LineThresholds()
        repo.set_line_thresholds(session, line="line-a", thresholds=LineThresholds(pixel=0.3))
    with session_scope(sessions) as session:
        assert repo.get_line_thresholds(session, line="line-a") == LineThresholds(pixel=0.3, image=None)
        repo.set_line_thresholds(session, line="line-a", thresholds=LineThresholds())
        assert repo.list_line_thresholds(session) == {"line-a": LineThresholds()}


def test_model_versions_activate_and_roll_back(sessions, test_bundle, second_bundle):
    with session_scope(sessions) as session:
        repo.register_model_version(session, bundle=test_bundle)
        repo.register_model_version(session, bundle=second_bundle)
        assert repo.active_model_version(session) is None
        repo.mark_model_active(session, version="test-1")
        repo.mark_model_active(session, version="test-2")
    with session_scope(sessions) as session:
        assert repo.active_model_version(session).version == "test-2"
        assert repo.previous_model_version(session).version == "test-1"
        assert {m.version: m.active for m in repo.list_model_versions(session)} == {
            "test-1": False,
            "test-2": True,
        }
        assert repo.get_model_version(session, version="test-2").thresholds == ThresholdsUsed(
            pixel=0.9, image=0.95
        )
        with pytest.raises(LookupError):
            repo.mark_model_active(session, version="nope")


def test_users_and_login_sessions(sessions):
    with session_scope(sessions) as session:
        user = repo.create_user(
            session, user=UserCreate(username="bob", password="correct-horse", role="admin")
        )
        assert repo.authenticate_user(session, username="bob", password="wrong-horse") is None
        assert repo.authenticate_user(session, username="bob", password="correct-horse").id == user.id
        token, opened = repo.create_login_session(session, user_id=user.id, ttl=timedelta(hours=1))
        expired_token, _ = repo.create_login_session(session, user_id=user.id, ttl=timedelta(seconds=-1))
    with session_scope(sessions) as session:
        live = repo.get_login_session(session, token=token)
        assert live is not None and live.user.username == "bob" and live.csrf_token == opened.csrf_token
        assert repo.get_login_session(session, token=expired_token) is None
        repo.revoke_login_session(session, token=token)
    with session_scope(sessions) as session:
        assert repo.get_login_session(session, token=token) is None


def test_blob_store_is_content_addressed_and_refuses_bad_keys(tmp_path):
    blobs = BlobStore(tmp_path / "blobs")
    key = blobs.put(b"frame bytes", suffix=".png")
    assert blobs.put(b"frame bytes", suffix=".png") == key
    assert blobs.read(key) == b"frame bytes"
    assert key.count("/") == 2 and key.endswith(".png")
    assert not list((tmp_path / "blobs").rglob(".tmp-*"))
    for bad in ("../../etc/passwd", key.replace(".png", ".jpg"), ""):
        with pytest.raises(BlobNotFound):
            blobs.read(bad)
    with pytest.raises(ValueError):
        blobs.put(b"x", suffix="/../x")


def test_spool_is_durable_keyed_by_frame_and_bounded(tmp_path):
    spool = ResultSpool(tmp_path / "spool.sqlite3", max_items=2)
    first = record("s-1")
    assert spool.add(first) == first
    assert spool.add(record("s-1")) == first  # same frame: the first result stands
    spool.add(record("s-2"))
    with pytest.raises(SpoolFull):
        spool.add(record("s-3"))
    spool.close()
    reopened = ResultSpool(tmp_path / "spool.sqlite3", max_items=2)
    assert [item.frame_id for item in reopened.oldest(10)] == ["s-1", "s-2"]
    assert reopened.get(first.id) == first and reopened.find("cam-1", "s-2") is not None
    reopened.remove(first.id)
    assert reopened.depth() == 1

"""Faults: the database goes away under load (results spool, then replay exactly once), a full spool,
a restart with results still spooled, and a hot swap under load.

The outage is made at the connection level: while it lasts, every new database connection is refused
(the pool is emptied first), which is what a stopped server looks like to the service. Stopping the
shared PostgreSQL server itself would disturb everything else using it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from inspect_svc.main import create_app
from inspect_svc.storage import migrations
from inspect_svc.storage.models import InspectionDB
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes


@contextmanager
def database_outage(client: TestClient) -> Iterator[None]:
    """Refuse every new connection of the app's engine until the block ends."""
    engine = client.app.state.service.db
    driver_error = engine.dialect.loaded_dbapi.OperationalError

    def refuse(*_args: object) -> None:
        raise driver_error("simulated outage: connection refused")

    event.listen(engine, "do_connect", refuse)
    engine.dispose()  # pooled connections would otherwise keep working
    try:
        yield
    finally:
        event.remove(engine, "do_connect", refuse)


def rows_by_frame(client: TestClient) -> dict[str, list[str]]:
    service = client.app.state.service
    with service.sessions() as session:
        rows = session.execute(select(InspectionDB.frame_id, InspectionDB.id)).all()
    frames: dict[str, list[str]] = {}
    for frame_id, inspection_id in rows:
        frames.setdefault(frame_id, []).append(inspection_id)
    return frames


def wait_for_empty_spool(client: TestClient, timeout_s: float = 20.0) -> None:
    spool = client.app.state.service.spool
    deadline = time.monotonic() + timeout_s
    while spool.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool.depth() == 0, "the spool was not replayed after the database came back"


@pytest.fixture
def fault_settings(tmp_path, test_bundle, database_url):
    if not database_url.startswith("sqlite"):
        migrations.upgrade(database_url)
    return make_settings(tmp_path, model=test_bundle.root, database_url=database_url)


def send(client: TestClient, key: dict[str, str], frame_id: str, seed: int):
    return client.post(
        "/inspect", content=png_bytes(seed=seed), params={"frame_id": frame_id},
        headers={**key, "Content-Type": "image/png"},
    )


def test_outage_under_load_spools_and_replays_every_frame_exactly_once(fault_settings):
    with TestClient(create_app(fault_settings)) as client:
        key = add_camera(client)
        assert send(client, key, "before", 0).status_code == 200  # also caches the camera key
        frames = [f"f{index}" for index in range(24)]
        with database_outage(client):
            with ThreadPoolExecutor(4) as pool:
                # Every frame twice: a camera retrying during the outage must not create a second result.
                responses = list(pool.map(lambda i: send(client, key, frames[i % 24], i % 24), range(48)))
            assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
            answered = {}
            for response in responses:
                body = response.json()
                assert answered.setdefault(body["frame_id"], body["id"]) == body["id"]
            assert client.app.state.service.spool.depth() == 24
            spooled = client.get(f"/inspections/{answered['f0']}", headers=key)
            assert spooled.status_code == 200 and spooled.json()["frame_id"] == "f0"
            assert client.get(f"/inspections/{answered['f0']}/mask.png", headers=key).status_code == 200
            ready = client.get("/readyz").json()
            assert ready["status"] == "ok" and ready["checks"]["database"] is False
            assert client.get("/inspections", headers=key).status_code == 503
        wait_for_empty_spool(client)
        stored = rows_by_frame(client)
        assert {frame: ids for frame, ids in stored.items() if frame != "before"} == {
            frame: [answered[frame]] for frame in frames
        }
        replay = send(client, key, "f3", 3)
        assert replay.headers["idempotent-replay"] == "true" and replay.json()["id"] == answered["f3"]


def test_full_spool_refuses_with_503_and_fails_readiness(tmp_path, test_bundle):
    settings = make_settings(tmp_path, model=test_bundle.root, spool_max=2)
    with TestClient(create_app(settings)) as client:
        key = add_camera(client)
        assert send(client, key, "warm", 0).status_code == 200
        with database_outage(client):
            assert [send(client, key, f"s{i}", i).status_code for i in range(3)] == [200, 200, 503]
            assert client.get("/readyz").status_code == 503
        wait_for_empty_spool(client)
        assert set(rows_by_frame(client)) == {"warm", "s0", "s1"}


def test_results_spooled_at_shutdown_are_replayed_at_the_next_start(tmp_path, test_bundle):
    settings = make_settings(tmp_path, model=test_bundle.root)
    with TestClient(create_app(settings)) as client:
        key = add_camera(client)
        assert send(client, key, "warm", 0).status_code == 200
        outage = database_outage(client)
        outage.__enter__()
        answered = send(client, key, "late", 1).json()["id"]
        # Shutdown while the database is still away: the result must stay in the spool file.
    outage.__exit__(None, None, None)
    with TestClient(create_app(settings)) as client:
        wait_for_empty_spool(client)
        assert rows_by_frame(client)["late"] == [answered]


def test_hot_swap_under_load_fails_no_request(client, camera_key, second_bundle):
    assert client.post("/models", json={"path": str(second_bundle.root)}, headers=ADMIN).status_code == 201

    def burst(worker: int) -> list[int]:
        return [send(client, camera_key, f"w{worker}-{i}", i).status_code for i in range(12)]

    with ThreadPoolExecutor(4) as pool:
        loads = [pool.submit(burst, worker) for worker in range(3)]
        for version in ("test-2", "test-1", "test-2"):
            assert client.post(f"/models/{version}/activate", headers=ADMIN).status_code == 200
        statuses = [status for load in loads for status in load.result()]
    assert statuses == [200] * 36
    assert send(client, camera_key, "after", 99).json()["model_version"] == "test-2"
    with client.app.state.service.sessions() as session:
        assert session.scalar(select(func.count()).select_from(InspectionDB)) == 37

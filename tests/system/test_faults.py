"""Faults: the database goes away under load (results spool, then replay exactly once), a full spool,
a restart with results still spooled, a hot swap under load, a frame repeated during an outage, and a
restart during an outage. Each scenario prints its counts (tried / acknowledged / rows / duplicates / lost).

The outage is made at the connection level: while it lasts, every new database connection is refused
(the pool is emptied first), which is what a stopped server looks like to the service. Stopping the
shared PostgreSQL server itself would disturb everything else using it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select

from inspect_svc import main
from inspect_svc.main import create_app
from inspect_svc.settings import Settings
from inspect_svc.storage import migrations
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.db import session_scope
from inspect_svc.storage.models import InspectionDB
from tests.conftest import ADMIN, add_camera, make_settings, png_bytes
from tests.utils.fault_tally import tally


def refuse_connections(engine: Engine) -> Callable[[], None]:
    """Refuse every new connection of `engine` (pooled ones are dropped); returns the function that ends it."""
    driver_error = engine.dialect.loaded_dbapi.OperationalError

    def refuse(*_args: object) -> None:
        raise driver_error("simulated outage: connection refused")

    event.listen(engine, "do_connect", refuse)
    engine.dispose()  # pooled connections would otherwise keep working
    return lambda: event.remove(engine, "do_connect", refuse)


@contextmanager
def database_outage(client: TestClient) -> Iterator[None]:
    """Refuse every new connection of the app's engine until the block ends."""
    end = refuse_connections(client.app.state.service.db)
    try:
        yield
    finally:
        end()


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


def backend(settings: Settings) -> str:
    return "SQLite" if settings.is_sqlite else "PostgreSQL"


def send(client: TestClient, key: dict[str, str], frame_id: str, seed: int):
    return client.post(
        "/inspect",
        content=png_bytes(seed=seed),
        params={"frame_id": frame_id},
        headers={**key, "Content-Type": "image/png"},
    )


def acknowledged_pairs(responses) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(r.json()["frame_id"], r.json()["id"]) for r in responses if r.status_code == 200]


def test_outage_under_load_spools_and_replays_every_frame_exactly_once(fault_settings, capsys, caplog):
    caplog.set_level(logging.INFO, logger="inspect_svc.service")
    with TestClient(create_app(fault_settings)) as client:
        key = add_camera(client)
        before = send(client, key, "before", 0)  # also caches the camera key
        assert before.status_code == 200
        frames = [f"f{index}" for index in range(24)]
        with database_outage(client):
            with ThreadPoolExecutor(4) as pool:
                # Every frame twice: a camera retrying during the outage must not create a second result.
                responses = list(pool.map(lambda i: send(client, key, frames[i % 24], i % 24), range(48)))
            assert all(r.status_code == 200 for r in responses), [
                r.text for r in responses if r.status_code != 200
            ]
            answered_pairs = acknowledged_pairs(responses)
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
        # Replayed, the result keeps the time it was inspected at, not the time it reached the database.
        assert (
            client.get(f"/inspections/{answered['f0']}", headers=key).json()["created_at"]
            == spooled.json()["created_at"]
        )
        stored = rows_by_frame(client)
        assert {frame: ids for frame, ids in stored.items() if frame != "before"} == {
            frame: [answered[frame]] for frame in frames
        }
        replay = send(client, key, "f3", 3)
        assert replay.headers["idempotent-replay"] == "true" and replay.json()["id"] == answered["f3"]
        assert send(client, key, "after", 30).status_code == 200
    # One line when the outage begins and one when it ends, not one per frame.
    outage_lines = [r.getMessage() for r in caplog.records if r.name == "inspect_svc.service"]
    assert [line.split(" (")[0].split(";")[0] for line in outage_lines if "database" in line] == [
        "database unreachable",
        "database reachable again",
    ]
    tally(
        capsys,
        f"outage under load on {backend(fault_settings)}",
        tried=1 + len(responses),
        answers=acknowledged_pairs([before]) + answered_pairs,
        rows=stored,
    )


def test_full_spool_refuses_with_503_and_fails_readiness(tmp_path, test_bundle, capsys):
    settings = make_settings(tmp_path, model=test_bundle.root, spool_max=2)
    with TestClient(create_app(settings)) as client:
        key = add_camera(client)
        responses = [send(client, key, "warm", 0)]
        with database_outage(client):
            responses += [send(client, key, f"s{i}", i) for i in range(3)]
            assert [r.status_code for r in responses] == [200, 200, 200, 503]
            assert client.get("/readyz").status_code == 503
        wait_for_empty_spool(client)
        stored = rows_by_frame(client)
        assert set(stored) == {"warm", "s0", "s1"}
    tally(capsys, "full spool", tried=len(responses), answers=acknowledged_pairs(responses), rows=stored)


def test_results_spooled_at_shutdown_are_replayed_at_the_next_start(tmp_path, test_bundle, capsys):
    settings = make_settings(tmp_path, model=test_bundle.root)
    with TestClient(create_app(settings)) as client:
        key = add_camera(client)
        responses = [send(client, key, "warm", 0)]
        outage = database_outage(client)
        outage.__enter__()
        responses.append(send(client, key, "late", 1))
        # Shutdown while the database is still away: the result must stay in the spool file.
    outage.__exit__(None, None, None)
    with TestClient(create_app(settings)) as client:
        wait_for_empty_spool(client)
        stored = rows_by_frame(client)
    assert [r.status_code for r in responses] == [200, 200]
    tally(
        capsys, "shutdown with results spooled", tried=2, answers=acknowledged_pairs(responses), rows=stored
    )


def test_hot_swap_under_load_fails_no_request(client, camera_key, second_bundle, capsys):
    assert client.post("/models", json={"path": str(second_bundle.root)}, headers=ADMIN).status_code == 201

    def burst(worker: int) -> list:  # type: ignore[type-arg]
        return [send(client, camera_key, f"w{worker}-{i}", i) for i in range(12)]

    with ThreadPoolExecutor(4) as pool:
        loads = [pool.submit(burst, worker) for worker in range(3)]
        for version in ("test-2", "test-1", "test-2"):
            assert client.post(f"/models/{version}/activate", headers=ADMIN).status_code == 200
        responses = [response for load in loads for response in load.result()]
    assert [r.status_code for r in responses] == [200] * 36
    responses.append(send(client, camera_key, "after", 99))
    assert responses[-1].json()["model_version"] == "test-2"
    with client.app.state.service.sessions() as session:
        assert session.scalar(select(func.count()).select_from(InspectionDB)) == 37
    tally(
        capsys,
        "hot swap under load",
        tried=37,
        answers=acknowledged_pairs(responses),
        rows=rows_by_frame(client),
    )


def test_a_frame_stored_before_an_outage_gets_its_first_answer_during_it(fault_settings, capsys):
    with TestClient(create_app(fault_settings)) as client:
        key = add_camera(client)
        responses = [send(client, key, "stored", 0)]
        with database_outage(client):
            responses.append(send(client, key, "spooled", 1))
        wait_for_empty_spool(client)  # "spooled" is in the database now, and no longer in the spool
        with database_outage(client):
            again = [send(client, key, "stored", 0), send(client, key, "spooled", 1)]
            assert client.app.state.service.spool.depth() == 0
        responses += again
        assert [r.status_code for r in responses] == [200] * 4
        assert [r.headers.get("idempotent-replay") for r in again] == ["true", "true"]
        assert [r.json()["id"] for r in again] == [r.json()["id"] for r in responses[:2]]
        stored = rows_by_frame(client)
    tally(
        capsys,
        f"frames repeated during an outage on {backend(fault_settings)}",
        tried=4,
        answers=acknowledged_pairs(responses),
        rows=stored,
    )


def test_a_restart_during_an_outage_keeps_known_cameras_and_refuses_disabled_ones(
    fault_settings, monkeypatch, capsys
):
    with TestClient(create_app(fault_settings)) as client:
        line_key, disabled_key = add_camera(client, "cam-1"), add_camera(client, "cam-2")
        with session_scope(client.app.state.service.sessions) as session:
            repo.set_camera_active(session, name="cam-2", active=False)
        responses = [send(client, line_key, "before", 0)]
        assert send(client, disabled_key, "refused", 9).status_code == 401

    # The next start finds the database unreachable from its first connection on.
    ends: list[Callable[[], None]] = []

    def unreachable_engine(url: str) -> Engine:
        engine = make_engine(url)
        ends.append(refuse_connections(engine))
        return engine

    make_engine = main.make_engine
    monkeypatch.setattr(main, "make_engine", unreachable_engine)
    with TestClient(create_app(fault_settings)) as client:
        during = [send(client, line_key, "during", 1), send(client, line_key, "before", 0)]
        assert [r.status_code for r in during] == [200, 200]
        assert during[1].headers["idempotent-replay"] == "true"
        assert during[1].json()["id"] == responses[0].json()["id"]
        assert send(client, disabled_key, "refused", 9).status_code == 401
        unknown = send(client, {"X-API-Key": "isk_never_issued"}, "x", 2)
        assert unknown.status_code == 503 and "Retry-After" in unknown.headers
        responses += during
        ends.pop()()
        wait_for_empty_spool(client)
        stored = rows_by_frame(client)
    assert set(stored) == {"before", "during"}
    tally(
        capsys,
        f"restart during an outage on {backend(fault_settings)}",
        tried=6,
        answers=acknowledged_pairs(responses),
        rows=stored,
    )


@pytest.mark.parametrize("outage", [False, True], ids=["database up", "database down"])
def test_eight_concurrent_identical_posts_get_one_answer_and_one_row(fault_settings, outage, capsys):
    with TestClient(create_app(fault_settings)) as client:
        key = add_camera(client)
        assert send(client, key, "warm", 0).status_code == 200  # the key is known before any outage
        end = refuse_connections(client.app.state.service.db) if outage else (lambda: None)
        try:
            with ThreadPoolExecutor(8) as pool:
                responses = list(pool.map(lambda _: send(client, key, "same", 1), range(8)))
        finally:
            end()
        wait_for_empty_spool(client)
        stored = rows_by_frame(client)
    assert [r.status_code for r in responses] == [200] * 8
    assert sum(r.headers.get("idempotent-replay") != "true" for r in responses) == 1
    assert len(stored["same"]) == 1
    tally(
        capsys,
        f"8 concurrent identical posts, database {'down' if outage else 'up'}, on {backend(fault_settings)}",
        tried=8,
        answers=acknowledged_pairs(responses),
        rows={"same": stored["same"]},
    )

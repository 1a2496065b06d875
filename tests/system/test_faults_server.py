"""Faults on a real server (`inspect-svc serve` in a subprocess): kill -9 and SIGTERM under load, a PostgreSQL outage
with a restart in the middle of it, and a data directory that refuses writes. Each prints its counts.

The PostgreSQL outage is made by cutting a TCP forwarder between the server and the database (the shared
server keeps running for everyone else). An embedded SQLite database has no network to lose; its outage
scenarios run in-process in test_faults.py. The full disk is a file-size limit set on the server process
(`prlimit`): it needs no mount or privilege, and refuses every write past the first byte of any file.
"""

from __future__ import annotations

import resource
import threading
import time

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from inspect_svc.schemas import CameraCreate
from inspect_svc.security import hash_api_key, new_api_key
from inspect_svc.storage import migrations
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.db import make_engine, make_session_factory, session_scope
from inspect_svc.storage.models import InspectionDB
from tests.conftest import png_bytes
from tests.utils.fault_tally import tally
from tests.utils.live_server import LiveServer, wait_until_ready
from tests.utils.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


def add_camera(database_url: str, name: str, *, active: bool = True) -> dict[str, str]:
    api_key = new_api_key()
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        repo.create_camera(
            session, camera=CameraCreate(name=name, line="line-a"), api_key_hash=hash_api_key(api_key)
        )
        if not active:
            repo.set_camera_active(session, name=name, active=False)
    engine.dispose()
    return {"X-API-Key": api_key}


def rows_by_frame(database_url: str) -> dict[str, list[str]]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(select(InspectionDB.frame_id, InspectionDB.id)).all()
    engine.dispose()
    frames: dict[str, list[str]] = {}
    for frame_id, inspection_id in rows:
        frames.setdefault(frame_id, []).append(inspection_id)
    return frames


def post(server: LiveServer, key: dict[str, str], frame_id: str, seed: int) -> httpx.Response:
    return httpx.post(
        f"{server.base}/inspect",
        content=png_bytes(seed=seed),
        params={"frame_id": frame_id},
        headers={**key, "Content-Type": "image/png"},
        timeout=30,
    )


def ok_pairs(responses: list[httpx.Response]) -> list[tuple[str, str]]:
    return [(r.json()["frame_id"], r.json()["id"]) for r in responses if r.status_code == 200]


def readiness(server: LiveServer) -> httpx.Response:
    return httpx.get(f"{server.base}/readyz", timeout=10)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    migrations.upgrade(database_url)
    return database_url


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_server_stopped_under_load_loses_no_acknowledged_frame(
    migrated_url, stop, test_bundle, tmp_path, capsys
):
    key = add_camera(migrated_url, "cam-1")
    server = LiveServer(model=test_bundle.root, database_url=migrated_url, data_dir=tmp_path / "var")
    server.start()
    answers: list[tuple[str, str]] = []
    tried = [0]
    done = threading.Event()

    def camera(worker: int) -> None:
        with httpx.Client(base_url=server.base, timeout=10) as client:
            for index in range(10_000):
                if done.is_set():
                    return
                tried[0] += 1
                try:
                    response = client.post(
                        "/inspect",
                        content=png_bytes(seed=index),
                        params={"frame_id": f"w{worker}-{index}"},
                        headers={**key, "Content-Type": "image/png"},
                    )
                except httpx.TransportError:
                    return  # stopped: a frame not answered was never acknowledged
                if response.status_code == 200:
                    answers.append((response.json()["frame_id"], response.json()["id"]))

    workers = [threading.Thread(target=camera, args=(worker,)) for worker in range(3)]
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 120
        while len(answers) < 12:
            assert time.monotonic() < deadline, server.lines[-20:]
            time.sleep(0.02)
        if stop == "kill -9":
            server.kill()
        else:
            server.stop()  # drains: frames already taken are answered and stored
        done.set()
        for worker in workers:
            worker.join()
        server.start()  # recovers its files, replays anything spooled
        # A camera that never got its answer, or lost it, sends the frame again: it gets the first result.
        again = [post(server, key, frame, 0) for frame, _ in answers[:3]]
        assert [r.headers.get("idempotent-replay") for r in again] == ["true"] * 3
        answers += ok_pairs(again)
    finally:
        done.set()
        server.kill()
    rows = rows_by_frame(migrated_url)
    tally(
        capsys,
        f"{stop} under load on {make_url(migrated_url).get_backend_name()}",
        tried=tried[0] + len(again),
        answers=answers,
        rows=rows,
    )


@pytest.mark.postgres
def test_postgres_outage_with_a_restart_keeps_one_answer_per_frame(
    postgres_url, test_bundle, tmp_path, capsys
):
    migrations.upgrade(postgres_url)
    key, disabled = add_camera(postgres_url, "cam-1"), add_camera(postgres_url, "cam-2", active=False)
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    through_proxy = url.set(port=proxy.port).render_as_string(hide_password=False)
    server = LiveServer(model=test_bundle.root, database_url=through_proxy, data_dir=tmp_path / "var")
    responses: list[httpx.Response] = []
    try:
        server.start()
        responses += [post(server, key, f"before-{n}", n) for n in range(4)]
        assert post(server, disabled, "refused", 0).status_code == 401
        proxy.cut()
        during = [post(server, key, f"before-{n}", n) for n in range(4)]
        during += [post(server, key, f"during-{n % 3}", n % 3) for n in range(6)]  # each new frame twice
        responses += during
        server.kill()  # kill -9 in the middle of the outage, then start again while it lasts
        server.start()
        ready = readiness(server).json()
        assert ready["status"] == "ok" and ready["checks"]["database"] is False
        after_restart = [
            post(server, key, frame, n)
            for n, frame in enumerate(["before-0", "during-0", "during-1", "after-0"])
        ]
        responses += after_restart
        assert post(server, disabled, "refused", 0).status_code == 401
        assert post(server, {"X-API-Key": "isk_never_issued"}, "x", 0).status_code == 503
        assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]
        repeats = during[:4] + during[7:] + after_restart[:3]
        assert {r.headers.get("idempotent-replay") for r in repeats} == {"true"}
        proxy.restore()
        deadline = time.monotonic() + 60
        while readiness(server).json()["checks"]["spool_depth"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert readiness(server).json()["checks"] == {**ready["checks"], "database": True, "spool_depth": 0}
    finally:
        server.kill()
        proxy.close()
    tally(
        capsys,
        "PostgreSQL outage + kill -9 + restart (real server)",
        tried=len(responses) + 4,
        answers=ok_pairs(responses),
        rows=rows_by_frame(postgres_url),
    )


def test_a_data_directory_that_refuses_writes_answers_503_and_recovers(tmp_path, test_bundle, capsys):
    database_url = f"sqlite:///{tmp_path / 'inspect.db'}"
    migrations.upgrade(database_url)
    key = add_camera(database_url, "cam-1")
    server = LiveServer(model=test_bundle.root, database_url=database_url, data_dir=tmp_path / "var")
    server.start()
    assert server.process is not None
    pid = server.process.pid
    _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        responses = [post(server, key, "f-0", 0)]
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))  # the disk is "full" from now on
        refused = [post(server, key, f"f-{n}", n) for n in range(1, 5)]
        assert {r.status_code for r in refused} == {503}
        assert all(r.json()["detail"] and int(r.headers["Retry-After"]) > 0 for r in refused)
        ready = readiness(server)
        assert ready.status_code == 503 and ready.json()["checks"]["storage_writable"] is False
        metrics = httpx.get(f"{server.base}/metrics", timeout=10).text
        assert "inspect_storage_writable 0.0" in metrics
        assert float(metric_value(metrics, "inspect_storage_write_failures_total")) >= len(refused)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))  # space returns
        wait_until_ready(server.base, timeout_s=30)  # by itself: /readyz probes the disk again
        responses += [post(server, key, f"f-{n}", n) for n in range(1, 5)]
        assert [r.status_code for r in responses] == [200] * 5
        assert len(server.log_lines("local storage refuses writes")) == 1
        assert len(server.log_lines("local storage takes writes again")) == 1
    finally:
        server.kill()
    tally(
        capsys,
        "data directory refusing writes (real server)",
        tried=len(responses) + len(refused),
        answers=ok_pairs(responses),
        rows=rows_by_frame(database_url),
    )


def metric_value(exposition: str, name: str) -> str:
    [line] = [line for line in exposition.splitlines() if line.startswith(name + " ")]
    return line.split()[1]

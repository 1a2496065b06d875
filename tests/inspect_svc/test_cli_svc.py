"""`inspect-svc`: database, camera, model and user commands, their one-line errors, and `serve` for real
(a uvicorn subprocess that is sent SIGTERM under load: every frame answered 200 must be stored)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from inspect_svc.cli import app
from inspect_svc.security import hash_api_key
from inspect_svc.storage import migrations, repositories
from inspect_svc.storage.db import make_engine, make_session_factory
from inspect_svc.storage.models import CameraDB, InspectionDB, UserDB
from tests.conftest import png_bytes
from tests.utils.live_server import free_port, wait_until_ready

runner = CliRunner()


def invoke(*args: str, **env: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env={**env})


def single_error_line(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def test_db_upgrade_current_downgrade(database_url):
    assert invoke("db", "upgrade", "--db", database_url).exit_code == 0
    current = invoke("db", "current", "--db", database_url)
    assert current.exit_code == 0 and current.output.strip() == "current 0005, head 0005"
    assert invoke("db", "downgrade", "base", "--db", database_url).exit_code == 0
    assert migrations.current_revision(database_url) is None


def test_camera_add_prints_a_working_key_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    invoke("db", "upgrade", "--db", url)
    added = invoke("camera", "add", "cam-1", "--line", "line-a", "--db", url)
    assert added.exit_code == 0
    api_key = added.output.strip()
    engine = make_engine(url)
    with engine.connect() as connection:
        row = connection.execute(select(CameraDB.api_key_hash, CameraDB.line)).one()
    engine.dispose()
    assert row == (hash_api_key(api_key), "line-a")
    assert "already exists" in single_error_line(invoke("camera", "add", "cam-1", "--db", url))
    listed = invoke("camera", "list", "--db", url).output.strip().splitlines()
    assert listed[1].startswith("cam-1\tline-a\tactive\t")


def test_camera_list_shows_line_created_and_key_prefix_never_the_key(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    invoke("db", "upgrade", "--db", url)
    assert "no cameras yet" in invoke("camera", "list", "--db", url).output
    keys = {
        name: invoke("camera", "add", name, "--line", "line-a", "--db", url).output.strip() for name in "ab"
    }
    listed = invoke("camera", "list", "--db", url)
    assert listed.exit_code == 0
    header, *rows = listed.output.strip().splitlines()
    assert header.split("\t") == ["name", "line", "state", "created (UTC)", "key starts"]
    for row, (name, key) in zip(rows, keys.items(), strict=True):
        listed_name, line, state, created, prefix = row.split("\t")
        assert (listed_name, line, state) == (name, "line-a", "active")
        assert datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")  # ISO 8601, UTC
        assert prefix == f"{key[:10]}…" and len(key) > 40
        assert key not in listed.output and key[10:20] not in listed.output


def test_camera_rotate_key_prints_a_new_key_once_and_the_old_one_stops_working(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    invoke("db", "upgrade", "--db", url)
    old_key = invoke("camera", "add", "cam-1", "--line", "line-a", "--db", url).output.strip()
    rotated = invoke("camera", "rotate-key", "cam-1", "--db", url)
    assert rotated.exit_code == 0
    new_key = rotated.output.strip()
    assert len(rotated.output.strip().splitlines()) == 1 and new_key.startswith("isk_") and new_key != old_key
    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        assert repositories.camera_for_key_hash(session, api_key_hash=hash_api_key(old_key)) is None
        camera = repositories.camera_for_key_hash(session, api_key_hash=hash_api_key(new_key))
        assert (camera.name, camera.line) == ("cam-1", "line-a")  # the same camera, with its line
    engine.dispose()
    assert f"{new_key[:10]}…" in invoke("camera", "list", "--db", url).output
    assert "no camera 'nope'" in single_error_line(invoke("camera", "rotate-key", "nope", "--db", url))


def test_cameras_from_before_key_prefixes_list_without_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    invoke("db", "upgrade", "0002", "--db", url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO cameras (name, line, api_key_hash, active, created_at)"
                " VALUES ('old', NULL, 'h', 1, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
    engine.dispose()
    assert invoke("db", "upgrade", "--db", url).exit_code == 0
    (row,) = invoke("camera", "list", "--db", url).output.strip().splitlines()[1:]
    assert row.split("\t")[-1] == "- (made before key prefixes)"
    assert invoke("camera", "rotate-key", "old", "--db", url).exit_code == 0
    (row,) = invoke("camera", "list", "--db", url).output.strip().splitlines()[1:]
    assert row.split("\t")[-1].startswith("isk_")


def test_serve_shows_the_demo_key_once_and_then_how_to_get_a_new_one(tmp_path, monkeypatch):
    served: list[object] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.append(app))
    monkeypatch.setattr("inspect_svc.main.create_app", lambda settings: "app")
    url = f"sqlite:///{tmp_path / 'serve.db'}"
    first = invoke("serve", "--db", url, INSPECT_DATA_DIR=str(tmp_path / "var"))
    assert first.exit_code == 0, first.output
    assert "created camera 'demo'; its API key (shown once): isk_" in first.output
    again = invoke("serve", "--db", url, INSPECT_DATA_DIR=str(tmp_path / "var"))
    assert again.exit_code == 0 and "isk_" not in again.output
    assert "inspect-svc camera rotate-key NAME" in again.output and "inspect-svc camera list" in again.output
    assert served == ["app", "app"]


def test_database_commands_close_their_connection_pool(tmp_path, monkeypatch):
    # `serve` opens one for the demo key before uvicorn starts; it must not stay open for the server's life.
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    invoke("db", "upgrade", "--db", url)
    engines = []

    def recording_engine(database_url):  # type: ignore[no-untyped-def]
        engines.append(make_engine(database_url))
        return engines[-1]

    monkeypatch.setattr("inspect_svc.cli.make_engine", recording_engine)
    assert invoke("camera", "add", "cam-1", "--db", url).exit_code == 0
    assert invoke("camera", "list", "--db", url).exit_code == 0
    assert len(engines) == 2 and all(engine.pool.checkedin() == 0 for engine in engines)


def test_models_and_users(tmp_path, test_bundle):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    invoke("db", "upgrade", "--db", url)
    added = invoke("model", "add", str(test_bundle.root), "--db", url, INSPECT_DATA_DIR=str(tmp_path / "var"))
    assert added.output.strip() == "registered test-1"
    # Published to the blob store, so replicas without the bundle's folder can fetch it.
    assert list((tmp_path / "var" / "blobs").rglob("*.zip"))
    assert invoke("model", "activate", "test-1", "--db", url).exit_code == 0
    assert invoke("model", "list", "--db", url).output.startswith("* test-1\tsupervised")
    assert "not registered" in single_error_line(invoke("model", "activate", "nope", "--db", url))
    created = invoke(
        "user", "add", "ann", "--role", "reviewer", "--db", url, INSPECT_NEW_PASSWORD="long-enough-pw"
    )
    assert created.exit_code == 0, created.output
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(select(UserDB.username, UserDB.role)).one() == ("ann", "reviewer")
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("model", "add", "/no/such/bundle"), "does not exist"),
        (("db", "upgrade", "--db", "mysql://somewhere/db"), "database_url"),
        (("db", "upgrade", "--db", "postgresql://nobody@127.0.0.1:1/x"), "cannot use the database"),
        (("camera", "add", "bad name!"), "invalid name"),
        (("serve", "--model", "/no/such/bundle"), "does not exist"),
    ],
)
def test_user_errors_are_one_line(tmp_path, args, message):
    result = invoke(*args, INSPECT_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    assert message in single_error_line(result)


@pytest.mark.slow
def test_serve_prints_url_and_demo_key_and_drains_on_sigterm(tmp_path, test_bundle):
    port, url = free_port(), f"sqlite:///{tmp_path / 'serve.db'}"
    env = {**os.environ, "INSPECT_DATA_DIR": str(tmp_path / "var"), "INSPECT_INTRA_OP_THREADS": "1"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspect_svc.cli",
                "serve",
                "--model",
                str(test_bundle.root),
                "--db",
                url,
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(__file__).parents[2],
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base)
        banner = log_path.read_text().splitlines()
        assert banner[0].startswith(f"inspect-svc serving on {base}")
        api_key = banner[1].rsplit(" ", 1)[-1].strip()
        answered: list[str] = []
        stop = threading.Event()

        def camera(worker: int) -> None:
            with httpx.Client(base_url=base, timeout=10) as client:
                for index in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        response = client.post(
                            "/inspect",
                            files={"file": ("part.png", png_bytes(seed=index), "image/png")},
                            data={"frame_id": f"w{worker}-{index}"},
                            headers={"X-API-Key": api_key},
                        )
                    except httpx.TransportError:
                        return  # the server has closed: frames not answered were never accepted
                    if response.status_code == 200:
                        answered.append(response.json()["id"])

        workers = [threading.Thread(target=camera, args=(worker,)) for worker in range(3)]
        for worker in workers:
            worker.start()
        while len(answered) < 10:
            time.sleep(0.02)
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in log_path.read_text()
        stop.set()
        for worker in workers:
            worker.join()
    finally:
        if server.poll() is None:
            server.kill()
    engine = make_engine(url)
    with engine.connect() as connection:
        stored = set(connection.scalars(select(InspectionDB.id)))
    engine.dispose()
    assert set(answered) <= stored and len(answered) >= 10

"""Shared fixtures: test bundles, settings on a temporary SQLite file, a running app, camera keys,
and PostgreSQL databases (a fresh schema per test on the local server)."""

from __future__ import annotations

import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, text

from inspect_svc.bundle import Bundle, Thresholds
from inspect_svc.main import create_app
from inspect_svc.settings import Settings
from tests.utils.onnx_models import make_test_bundle
from tests.utils.seaweed import S3Server

POSTGRES_URL = os.environ.get(
    "INSPECT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def test_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A tiny pixel-wise ONNX model (32 px tiles), version test-1."""
    return make_test_bundle(tmp_path_factory.mktemp("bundles") / "test-1", version="test-1")


@pytest.fixture(scope="session")
def second_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Another version of the same model with stricter thresholds, for swaps and rollbacks."""
    return make_test_bundle(
        tmp_path_factory.mktemp("bundles") / "test-2",
        version="test-2",
        thresholds=Thresholds(pixel=0.9, image=0.95),
    )


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings isolated from the environment: SQLite and files under `tmp_path`."""
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'inspect.db'}",
        "data_dir": tmp_path / "var",
        "admin_token": ADMIN_TOKEN,
        "max_batch": 4,
        "max_wait_ms": 1.0,
        "intra_op_threads": 1,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, test_bundle: Bundle) -> Settings:
    return make_settings(tmp_path, model=test_bundle.root)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A started app (lifespan run: migrated, model warmed) on the `settings` fixture."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def add_camera(client: TestClient, name: str = "cam-1", line: str | None = "line-a") -> dict[str, str]:
    """Create a camera through the admin API; returns the `X-API-Key` header for it."""
    response = client.post("/cameras", json={"name": name, "line": line}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["api_key"]}


@pytest.fixture
def camera_key(client: TestClient) -> dict[str, str]:
    return add_camera(client)


def png_bytes(width: int = 48, height: int = 40, *, seed: int = 0, mode: str = "RGB") -> bytes:
    """A random image encoded as PNG."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The local PostgreSQL URL, starting the cluster when it is down.

    Skips when it cannot be reached, except in CI (CI=true), where a missing database is a failure.
    """
    if _postgres_reachable():
        return POSTGRES_URL
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    for version in clusters:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            check=False,
        )
    if _postgres_reachable():
        return POSTGRES_URL
    message = f"PostgreSQL is not reachable at {POSTGRES_URL}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _postgres_reachable() -> bool:
    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose connections live in a fresh, empty schema, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_server)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{postgres_server}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'storage.db'}"
    return request.getfixturevalue("postgres_url")


# --- S3 (SeaweedFS) -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS's S3 gateway on loopback, started here when none answers; skips only without the binary."""
    try:
        server = S3Server.start_or_reuse(tmp_path_factory.mktemp("seaweedfs"))
    except FileNotFoundError as error:
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture
def s3_overrides(s3_server: S3Server) -> dict[str, object]:
    """Settings for the S3 blob store on a fresh bucket of the test server."""
    return {
        "blob_store": "s3",
        "s3_endpoint": s3_server.endpoint,
        "s3_bucket": f"t-{uuid.uuid4().hex[:16]}",
        "s3_access_key": s3_server.access_key,
        "s3_secret_key": s3_server.secret_key,
        "s3_timeout_s": 5.0,
    }

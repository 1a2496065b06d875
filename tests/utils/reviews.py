"""Factories for dashboard and review-export tests: a database with inspections, blobs and operators."""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from inspect_svc.dashboard import router as dashboard_router
from inspect_svc.imaging import probability_png
from inspect_svc.schemas import InspectionCreate, Region, ThresholdsUsed, Timings, UserCreate
from inspect_svc.settings import Settings
from inspect_svc.storage import repositories
from inspect_svc.storage.blobstore import BlobStore
from inspect_svc.storage.db import make_engine, make_session_factory, session_scope
from inspect_svc.storage.models import Base

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
BASE_TIME = datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


@dataclass
class ReviewWorld:
    """A database, a blob store and the settings that point at them."""

    settings: Settings
    sessions: sessionmaker[Session]
    blobs: BlobStore

    @property
    def database_url(self) -> str:
        return self.settings.database_url


def make_world(root: Path) -> ReviewWorld:
    """A fresh SQLite database (schema from the ORM: fast, and the migrations have their own tests)."""
    settings = Settings(
        database_url=f"sqlite:///{root / 'inspect.db'}",
        data_dir=root / "data",
        dashboard_secure_cookies=False,
    )
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    return ReviewWorld(
        settings=settings, sessions=make_session_factory(engine), blobs=BlobStore(settings.blob_dir)
    )


def dashboard_app(world: ReviewWorld) -> FastAPI:
    """An app with the dashboard router and only the service state it reads."""
    app = FastAPI()
    app.state.service = SimpleNamespace(settings=world.settings, sessions=world.sessions, blobs=world.blobs)
    app.include_router(dashboard_router)
    return app


def add_user(world: ReviewWorld, username: str, role: str) -> int:
    with session_scope(world.sessions) as session:
        return repositories.create_user(
            session, user=UserCreate(username=username, password=PASSWORD, role=role)
        ).id


def frame_images(width: int, height: int, *, seed: int, defect: bool) -> tuple[bytes, np.ndarray]:
    """A textured grey frame (PNG bytes) and a probability map with one hot blob when `defect`."""
    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width, 3)) * 60 + 100).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    yy, xx = np.mgrid[0:height, 0:width]
    centre_y, centre_x = height // 2, width // 3
    bump = np.exp(-(((yy - centre_y) ** 2 + (xx - centre_x) ** 2) / (2 * 3.0**2)))
    prob = (0.9 * bump if defect else 0.1 * bump).astype(np.float32)
    return buffer.getvalue(), prob


def add_inspection(
    world: ReviewWorld,
    *,
    score: float,
    minutes: int = 0,
    camera: str = "cam-1",
    line: str = "line-a",
    model_version: str = "m1",
    width: int = 64,
    height: int = 48,
    pixel_threshold: float = 0.5,
    frame_png: bytes | None = None,
) -> InspectionCreate:
    """Store an inspection (blobs first, as the service does); verdict follows `score` >= 0.5.

    `frame_png` replaces the generated noise frame (it must be `width` x `height`).
    """
    defect = score >= 0.5
    image_png, prob = frame_images(width, height, seed=int(score * 1000) + minutes, defect=defect)
    image_png = frame_png if frame_png is not None else image_png
    record = InspectionCreate(
        id=str(uuid.uuid4()),
        camera_id=camera,
        frame_id=f"f-{uuid.uuid4().hex[:8]}",
        line=line,
        model_version=model_version,
        threshold=ThresholdsUsed(pixel=pixel_threshold, image=0.5),
        verdict="defect" if defect else "ok",
        score=score,
        defect_area=int((prob >= pixel_threshold).sum()),
        width=width,
        height=height,
        timings=Timings(decode_ms=1.0, queue_ms=1.0, inference_ms=1.0, total_ms=3.0),
        regions=[Region(bbox=(width // 3 - 4, height // 2 - 4, 9, 9), area=60, score=score)]
        if defect
        else [],
        image_key=world.blobs.put(image_png, suffix=".png"),
        image_media_type="image/png",
        map_key=world.blobs.put(probability_png(prob), suffix=".png"),
        created_at=BASE_TIME + timedelta(minutes=minutes),
    )
    with session_scope(world.sessions) as session:
        repositories.insert_inspection(session, inspection=record)
    return record


def mask_png(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    """A binary mask PNG with the box (x, y, w, h) set."""
    mask = np.zeros((height, width), dtype=np.uint8)
    x, y, w, h = box
    mask[y : y + h, x : x + w] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def log_in(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the dashboard form; returns the session's CSRF token."""
    form = client.get("/dashboard/login")
    login_token = CSRF_FIELD.search(form.text).group(1)
    reply = client.post(
        "/dashboard/login",
        data={"username": username, "password": password, "csrf_token": login_token, "next": ""},
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text
    return CSRF_FIELD.search(client.get("/dashboard/queue").text).group(1)

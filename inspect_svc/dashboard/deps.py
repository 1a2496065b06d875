"""What dashboard routes need from the app: a database session, the blob store, the settings.

The app's lifespan keeps them in `app.state.service` (`inspect_svc.service.ServiceState`); routes receive
them through the `Annotated` aliases below and never reach into `app.state` themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.templating import Jinja2Templates

from inspect_svc.settings import Settings
from inspect_svc.storage.blobstore import BlobStorage
from inspect_svc.storage.db import Session, session_scope

TEMPLATES = Jinja2Templates(directory=Path(__file__).parent / "templates")
STATIC_DIR = Path(__file__).parent / "static"


def get_db(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns, rolled back on error."""
    with session_scope(request.app.state.service.sessions) as session:
        yield session


def get_blobs(request: Request) -> BlobStorage:
    blobs: BlobStorage = request.app.state.service.blobs
    return blobs


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.service.settings
    return settings


DbSession = Annotated[Session, Depends(get_db)]
Blobs = Annotated[BlobStorage, Depends(get_blobs)]
AppSettings = Annotated[Settings, Depends(get_settings)]

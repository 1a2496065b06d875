"""Cameras and their API keys (admin only). A new key is returned once and never again."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from inspect_svc.api.deps import AdminDep, ServiceDep
from inspect_svc.api.errors import BODY_ERRORS, COMMON_ERRORS, error_responses
from inspect_svc.schemas import CameraCreate, CameraPublic, CameraWithKey
from inspect_svc.security import api_key_prefix, hash_api_key, new_api_key
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.db import IntegrityError

router = APIRouter(
    prefix="/cameras",
    tags=["cameras"],
    dependencies=[AdminDep],
    responses=error_responses(*COMMON_ERRORS),
)


@router.get("", response_model=list[CameraPublic])
async def list_cameras(service: ServiceDep) -> list[CameraPublic]:
    return await service.run_db(repo.list_cameras)


@router.post("", response_model=CameraWithKey, status_code=201, responses=error_responses(409, *BODY_ERRORS))
async def add_camera(service: ServiceDep, body: CameraCreate) -> CameraWithKey:
    """Create a camera and return its API key (shown only in this response)."""
    api_key = new_api_key()
    try:
        camera = await service.run_db(
            lambda s: repo.create_camera(
                s, camera=body, api_key_hash=hash_api_key(api_key), api_key_prefix=api_key_prefix(api_key)
            )
        )
    except IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, f"camera {body.name!r} already exists") from None
    return CameraWithKey(**camera.model_dump(), api_key=api_key)

"""Reading results: the list with filters and paging, one inspection, and its image, map, mask, overlay.

A camera key sees only its own camera's inspections: the list is filtered to it, and another camera's
inspection answers 404 exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status

from inspect_svc import rendering
from inspect_svc.api import links
from inspect_svc.api.deps import Reader, ReaderDep, ServiceDep, picture_reader
from inspect_svc.api.errors import COMMON_ERRORS, error_responses
from inspect_svc.api.inspect import NAME
from inspect_svc.schemas import (
    INVALID_IMAGE,
    NO_MAP,
    InspectionCreate,
    InspectionFilter,
    InspectionPage,
    InspectionPublic,
    UtcDatetime,
    Verdict,
)
from inspect_svc.service import ServiceState
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.blob_responses import blob_response
from inspect_svc.storage.blobstore import BlobNotFound

router = APIRouter(prefix="/inspections", tags=["inspections"], responses=error_responses(*COMMON_ERRORS))

NOT_FOUND = error_responses(404)
PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}}, **NOT_FOUND}
ImageReader = Annotated[Reader, Depends(picture_reader("image"))]
MapReader = Annotated[Reader, Depends(picture_reader("map"))]
MaskReader = Annotated[Reader, Depends(picture_reader("mask"))]
OverlayReader = Annotated[Reader, Depends(picture_reader("overlay"))]


@router.get("", response_model=InspectionPage)
async def list_inspections(
    service: ServiceDep,
    reader: ReaderDep,
    camera_id: Annotated[str | None, Query(max_length=64, pattern=NAME.pattern)] = None,
    line: Annotated[str | None, Query(max_length=64, pattern=NAME.pattern)] = None,
    verdict: Verdict | None = None,
    model_version: Annotated[str | None, Query(max_length=64)] = None,
    since: UtcDatetime | None = None,
    until: UtcDatetime | None = None,
    reviewed: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> InspectionPage:
    """Newest first; follow `next_cursor` for older results. A camera key lists only its own camera."""
    if reader.camera is not None:
        if camera_id not in (None, reader.camera.name):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this API key reads only camera {reader.camera.name!r}'s results"
            )
        camera_id = reader.camera.name
    filters = InspectionFilter(
        camera_id=camera_id,
        line=line,
        verdict=verdict,
        model_version=model_version,
        since=since,
        until=until,
        reviewed=reviewed,
    )
    try:
        return await service.run_db(
            lambda s: repo.list_inspections(s, filters=filters, limit=limit, cursor=cursor)
        )
    except repo.InvalidCursor as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from None


@router.get("/{inspection_id}", response_model=InspectionPublic, responses=NOT_FOUND)
async def get_inspection(service: ServiceDep, reader: ReaderDep, inspection_id: str) -> InspectionPublic:
    """One inspection (also while it waits in the outage spool), with fresh signed links to its pictures."""
    inspection = await service.inspection_public(inspection_id) if len(inspection_id) <= 36 else None
    if inspection is None or not reader.may_read(inspection.camera_id):
        raise _not_found(inspection_id)
    return inspection.model_copy(update={"signed_links": links.signed_links(service.settings, inspection.id)})


@router.get("/{inspection_id}/image", responses={200: {"content": {"image/*": {}}}, **NOT_FOUND})
async def get_image(service: ServiceDep, reader: ImageReader, inspection_id: str) -> Response:
    """The frame exactly as the camera sent it."""
    record = await _record(service, reader, inspection_id)
    return await asyncio.to_thread(blob_response, service.blobs, record.image_key, record.image_media_type)


@router.get("/{inspection_id}/map.png", responses=PNG)
async def get_map(service: ServiceDep, reader: MapReader, inspection_id: str) -> Response:
    """Defect probability per pixel as 8-bit grey (255 = probability 1), at the frame's resolution."""
    record = await _scored_record(service, reader, inspection_id)
    return await asyncio.to_thread(blob_response, service.blobs, record.map_key, "image/png")


@router.get("/{inspection_id}/mask.png", responses=PNG)
async def get_mask(service: ServiceDep, reader: MaskReader, inspection_id: str) -> Response:
    """The defect mask at the pixel threshold this inspection used."""
    record = await _scored_record(service, reader, inspection_id)
    map_png = await asyncio.to_thread(_read_blob, service, record.map_key)
    png = await asyncio.to_thread(rendering.mask_png, map_png, record.threshold.pixel)
    return Response(png, media_type="image/png")


@router.get("/{inspection_id}/overlay.png", responses=PNG)
async def get_overlay(service: ServiceDep, reader: OverlayReader, inspection_id: str) -> Response:
    """The frame with the probability map blended on as a heat map."""
    record = await _scored_record(service, reader, inspection_id)
    image, map_png = await asyncio.gather(
        asyncio.to_thread(_read_blob, service, record.image_key),
        asyncio.to_thread(_read_blob, service, record.map_key),
    )
    png = await asyncio.to_thread(rendering.overlay_png, image, record.image_media_type, map_png)
    return Response(png, media_type="image/png")


async def _record(service: ServiceState, reader: Reader, inspection_id: str) -> InspectionCreate:
    record = await service.inspection_record(inspection_id) if len(inspection_id) <= 36 else None
    if record is None or not reader.may_read(record.camera_id):
        raise _not_found(inspection_id)
    return record


async def _scored_record(service: ServiceState, reader: Reader, inspection_id: str) -> InspectionCreate:
    """The record of an inspection that has a map: a damaged frame (invalid_image) was never scored."""
    record = await _record(service, reader, inspection_id)
    if record.verdict == INVALID_IMAGE:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_MAP)
    return record


def _not_found(inspection_id: str) -> HTTPException:
    # Another camera's inspection reads as missing: a camera key must not learn which ids exist.
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no inspection {inspection_id[:36]!r}")


def _read_blob(service: ServiceState, key: str) -> bytes:
    try:
        return service.blobs.read(key)
    except BlobNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "the stored file for this inspection is missing"
        ) from None

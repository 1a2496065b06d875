"""`POST /inspect`: one camera frame in, verdict and defect map out."""

from __future__ import annotations

import base64
import re
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from starlette.datastructures import UploadFile

from inspect_svc.api import links
from inspect_svc.api.deps import CameraDep, ServiceDep
from inspect_svc.api.errors import BODY_ERRORS, COMMON_ERRORS, error_responses
from inspect_svc.imaging import SUPPORTED_CONTENT_TYPES
from inspect_svc.schemas import CameraPublic, InspectionPublic
from inspect_svc.service import Frame

router = APIRouter(tags=["inspect"])

NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
FRAME = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
NAME_QUERY = Query(min_length=1, max_length=64, pattern=NAME.pattern)
MULTIPART = "multipart/form-data"

# The body is read by hand (not declared as parameters) so the size limit and the raw-vs-multipart
# choice stay in one place; this describes it for the OpenAPI schema.
REQUEST_BODY = {
    "required": True,
    "content": {
        **{media: {"schema": {"type": "string", "format": "binary"}} for media in SUPPORTED_CONTENT_TYPES},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        MULTIPART: {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "camera_id": {"type": "string", "pattern": NAME.pattern},
                    "frame_id": {"type": "string", "pattern": FRAME.pattern},
                    "line": {"type": "string", "pattern": NAME.pattern},
                },
            }
        },
    },
}
# Every status /inspect answers besides 200, and what each means for a camera (retry or not).
ERRORS = error_responses(
    *COMMON_ERRORS,
    *BODY_ERRORS,
    415,
    descriptions={
        400: "empty or unparseable body; do not retry the same body",
        401: "missing, unknown or disabled camera key",
        403: "the key's camera or registered line differs from the one named",
        408: "the body did not arrive within INSPECT_BODY_TIMEOUT_S; the frame was not stored, retry",
        413: "body over INSPECT_MAX_BODY_BYTES, or pixels over INSPECT_MAX_PIXELS (reason too_large_pixels)",
        415: "not a JPEG, PNG, BMP or TIFF, or a TIFF sample format that is not supported",
        422: "invalid parameters, an image too small, or a damaged frame (reason corrupt or truncated) while "
        "INSPECT_DAMAGED_FRAMES=refuse",
        503: "overloaded, shutting down, no model, outage spool full, or the data directory refuses writes; "
        "the frame was not stored: retry after Retry-After",
    },
)


@router.post(
    "/inspect",
    response_model=InspectionPublic,
    response_model_exclude_none=True,
    openapi_extra={"requestBody": REQUEST_BODY},
    responses=ERRORS,
)
async def inspect_frame(
    request: Request,
    response: Response,
    service: ServiceDep,
    camera: CameraDep,
    camera_id: Annotated[str | None, NAME_QUERY] = None,
    frame_id: Annotated[str | None, Query(min_length=1, max_length=128, pattern=FRAME.pattern)] = None,
    line: Annotated[str | None, NAME_QUERY] = None,
    include: Annotated[Literal["map"] | None, Query(description="`map` adds the map as base64 PNG")] = None,
) -> InspectionPublic:
    """Inspect one frame; a repeated (camera_id, frame_id) returns the first result unchanged."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith(MULTIPART):
        body, file_type, fields = await _read_multipart(request)
        camera_id = camera_id or _field(fields, "camera_id", NAME)
        frame_id = frame_id or _field(fields, "frame_id", FRAME)
        line = line or _field(fields, "line", NAME)
        content_type = file_type
    else:
        body = await request.body()
    frame = Frame(
        body=body,
        content_type=content_type,
        camera_id=_camera_id(camera, camera_id),
        frame_id=frame_id,
        line=_line(camera, line),
    )
    outcome = await service.inspect(frame, include_map=include == "map")
    if outcome.replay:
        response.headers["Idempotent-Replay"] = "true"
    inspection = outcome.inspection.model_copy(
        update={"signed_links": links.signed_links(service.settings, outcome.inspection.id)}
    )
    if outcome.map_png is not None:
        inspection = inspection.model_copy(
            update={"map_png_base64": base64.b64encode(outcome.map_png).decode()}
        )
    return inspection


async def _read_multipart(request: Request) -> tuple[bytes, str, dict[str, str]]:
    form = await request.form(max_files=1, max_fields=8)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "multipart body needs an image in the field 'file'"
        )
    body = await upload.read()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    return body, upload.content_type or "", fields


def _field(fields: dict[str, str], name: str, pattern: re.Pattern[str]) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not pattern.fullmatch(value):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"form field {name!r} must match {pattern.pattern}"
        )
    return value


def _camera_id(camera: CameraPublic | None, requested: str | None) -> str:
    """The key decides the camera; a key may not submit frames for another camera."""
    if camera is not None:
        if requested is not None and requested != camera.name:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this API key belongs to camera {camera.name!r}, not {requested!r}",
            )
        return camera.name
    if requested is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "camera_id is required without an API key")
    return requested


def _line(camera: CameraPublic | None, requested: str | None) -> str | None:
    """A camera's frames belong to the line it was registered for; it may name that line, no other."""
    if camera is None:
        return requested
    if requested is not None and requested != camera.line:
        registered = f"line {camera.line!r}" if camera.line else "no line"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"camera {camera.name!r} is registered for {registered}, not {requested!r}",
        )
    return camera.line

"""Per-line threshold overrides, changed at run time without re-exporting a model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from inspect_svc.api.deps import AdminDep, ReaderDep, ServiceDep
from inspect_svc.api.errors import BODY_ERRORS, COMMON_ERRORS, error_responses
from inspect_svc.api.inspect import NAME
from inspect_svc.schemas import LineThresholds, LineThresholdsPublic, ThresholdsUsed
from inspect_svc.service import ServiceState
from inspect_svc.storage import repositories as repo

router = APIRouter(prefix="/lines", tags=["lines"], responses=error_responses(*COMMON_ERRORS))

LinePath = Annotated[str, Path(min_length=1, max_length=64, pattern=NAME.pattern)]


@router.get("/{line}/threshold", response_model=LineThresholdsPublic)
async def get_threshold(service: ServiceDep, reader: ReaderDep, line: LinePath) -> LineThresholdsPublic:
    """The line's overrides and the thresholds its next frame will use; a camera key reads only its own line."""
    if reader.camera is not None and reader.camera.line != line:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"camera {reader.camera.name!r} is not registered for line {line!r}"
        )
    overrides = await service.run_db(lambda s: repo.get_line_thresholds(s, line=line))
    return _public(service, line, overrides)


@router.put(
    "/{line}/threshold",
    response_model=LineThresholdsPublic,
    dependencies=[AdminDep],
    responses=error_responses(*BODY_ERRORS),
)
async def put_threshold(service: ServiceDep, line: LinePath, body: LineThresholds) -> LineThresholdsPublic:
    """Set (or with `null`, clear) the line's pixel and image thresholds."""
    stored = await service.run_db(lambda s: repo.set_line_thresholds(s, line=line, thresholds=body))
    service.forget_line(line)
    return _public(service, line, stored)


def _public(service: ServiceState, line: str, overrides: LineThresholds) -> LineThresholdsPublic:
    manifest = service.models.engine.manifest if service.models.engine else None
    effective = None
    if manifest is not None:
        model = manifest.thresholds_for(line)  # the bundle's own calibration of this line, if any
        effective = ThresholdsUsed(
            pixel=model.pixel if overrides.pixel is None else overrides.pixel,
            image=model.image if overrides.image is None else overrides.image,
        )
    return LineThresholdsPublic(line=line, pixel=overrides.pixel, image=overrides.image, effective=effective)

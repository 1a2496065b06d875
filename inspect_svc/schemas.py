"""API schemas (pydantic), separate from the ORM tables in `storage/models.py`.

`…Create` is what a caller or the service hands to storage, `…Public` what the API returns.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

# invalid_image: a damaged frame recorded unscored (INSPECT_DAMAGED_FRAMES=flag); it has no map.
Verdict = Literal["ok", "defect", "invalid_image"]
INVALID_IMAGE = "invalid_image"
NO_MAP = "this frame was damaged (verdict invalid_image): it was never scored and has no map"
ReviewVerdict = Literal["confirm", "reject", "missed"]
Role = Literal["viewer", "reviewer", "admin"]

NAME_PATTERN = r"^[A-Za-z0-9._:-]+$"


ISO_DATE_START = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_text(value: object) -> object:
    """Text must be ISO 8601; a bare number would otherwise pass as seconds since 1970."""
    if isinstance(value, str) and not ISO_DATE_START.match(value):
        raise ValueError("expected an ISO 8601 date-time such as 2026-03-02T08:00:00Z")
    return value


def _as_utc(moment: datetime) -> datetime:
    """A naive time is read as UTC; an aware one must still be a date once moved to UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(
            f"{moment.isoformat()} is outside the dates UTC can express (years 1 to 9999)"
        ) from None


UtcDatetime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_as_utc)]
"""A datetime converted to UTC on input; a time zone that pushes it past year 1 or 9999 is a 422."""


class Timings(BaseModel):
    """Milliseconds spent in each stage of one request."""

    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float


class Region(BaseModel):
    """A connected defect region: bounding box `[x, y, width, height]`, pixel area, peak score, outline."""

    bbox: tuple[int, int, int, int]
    area: int
    score: float
    polygon: list[tuple[int, int]] = Field(default_factory=list, description="outline as [x, y] points")


class ThresholdsUsed(BaseModel):
    pixel: float
    image: float


class InspectionCreate(BaseModel):
    """A finished inspection, ready to be stored (or spooled while the database is away)."""

    id: str
    camera_id: str
    frame_id: str
    line: str | None
    model_version: str
    threshold: ThresholdsUsed
    verdict: Verdict
    score: float
    defect_area: int
    width: int
    height: int
    timings: Timings
    regions: list[Region]
    image_key: str
    image_media_type: str
    map_key: str = Field(description='"" when there is no map (an invalid_image was never scored)')
    created_at: datetime


class InspectionLinks(BaseModel):
    """Paths of the inspection's pictures; they need the same `X-API-Key` or admin token as the API."""

    image: str
    map: str
    mask: str
    overlay: str


class SignedLinks(InspectionLinks):
    """The same pictures as URLs that work without headers (a browser, an `<img>`) until `expires_at`."""

    expires_at: datetime


class InspectionPublic(BaseModel):
    """One inspection as the API returns it."""

    id: str
    camera_id: str
    frame_id: str
    line: str | None
    model_version: str
    verdict: Verdict
    score: float
    threshold: ThresholdsUsed
    defect_area: int
    width: int
    height: int
    regions: list[Region]
    timings: Timings
    created_at: datetime
    reviewed: bool = False
    links: InspectionLinks
    signed_links: SignedLinks | None = Field(None, description="links that need no headers, for a while")
    map_png_base64: str | None = Field(None, description="the probability map, only with ?include=map")


class InspectionPage(BaseModel):
    """A page of inspections, newest first; pass `next_cursor` back as `cursor` for the next page."""

    items: list[InspectionPublic]
    next_cursor: str | None


class InspectionFilter(BaseModel):
    """Filters for listing inspections; all optional and combined with AND."""

    model_config = ConfigDict(frozen=True)

    camera_id: str | None = None
    line: str | None = None
    verdict: Verdict | None = None
    model_version: str | None = None
    since: UtcDatetime | None = None
    until: UtcDatetime | None = None
    reviewed: bool | None = None


class CameraCreate(BaseModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=NAME_PATTERN)
    line: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        description="the line this camera's frames belong to, fixed at registration; it may tag no other",
    )


class CameraPublic(BaseModel):
    name: str
    line: str | None
    active: bool
    created_at: datetime
    key_prefix: str | None = None  # the key's first characters, to tell keys apart; never the key


class CameraWithKey(CameraPublic):
    """Returned once, when a camera is created: the key is never stored in clear and cannot be shown again."""

    api_key: str


class LineThresholds(BaseModel):
    """A line's threshold overrides; `null` falls back to the active model's threshold."""

    # Strict: `true` is not a threshold of 1.0, nor "0.5" one of 0.5.
    pixel: float | None = Field(None, ge=0.0, le=1.0, strict=True)
    image: float | None = Field(None, ge=0.0, le=1.0, strict=True)


class LineThresholdsPublic(LineThresholds):
    line: str
    effective: ThresholdsUsed | None = Field(None, description="what the next frame on this line will use")


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    version: str
    bundle_path: str
    bundle_key: str | None = None
    kind: str
    backbone: str
    input_size: int
    thresholds: ThresholdsUsed
    metrics: dict[str, object]
    bundle_created_at: datetime
    registered_at: datetime
    activated_at: datetime | None
    active: bool
    serving: bool = Field(False, description="this replica serves this version now (see X-Replica-Id)")


class ModelRegister(BaseModel):
    path: str = Field(
        ..., min_length=1, max_length=1024, description="bundle directory or .zip on the server"
    )


class ReviewCreate(BaseModel):
    inspection_id: str
    reviewer_id: int | None = None
    verdict: ReviewVerdict
    mask_key: str | None = None
    comment: str | None = Field(None, max_length=1000)


class ReviewPublic(ReviewCreate):
    id: int
    created_at: datetime


class UserCreate(BaseModel):
    username: str = Field(..., min_length=1, max_length=64, pattern=NAME_PATTERN)
    password: str = Field(..., min_length=8, max_length=256)
    role: Role = "viewer"


class UserPublic(BaseModel):
    id: int
    username: str
    role: Role
    active: bool
    created_at: datetime


class SessionPublic(BaseModel):
    """A dashboard session as storage returns it; `id` is the sha256 of the cookie token."""

    id: str
    user: UserPublic
    csrf_token: str
    created_at: datetime
    expires_at: datetime


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, bool | int | str] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """Every error the API answers: a sentence, and for some errors the details behind it."""

    detail: str
    reason: str | None = Field(None, description="a short machine-readable cause (image refusals)")
    errors: list[dict[str, Any]] | None = Field(None, description="each invalid field (422 only)")

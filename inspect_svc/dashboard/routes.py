"""Review pages: the queue, one inspection with its overlays, and the review actions."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.background import BackgroundTask

from inspect_svc.dashboard.auth import Reviewer, Viewer, page_context
from inspect_svc.dashboard.deps import STATIC_DIR, TEMPLATES, Blobs, DbSession
from inspect_svc.dashboard.masks import MAX_MASK_BYTES, MaskRejected, canonical_mask_png
from inspect_svc.rendering import thumbnail_jpeg
from inspect_svc.review_export import export_to_zip
from inspect_svc.schemas import INVALID_IMAGE, NO_MAP, ReviewCreate, ReviewVerdict
from inspect_svc.storage import repositories
from inspect_svc.storage import review_queue as queue
from inspect_svc.storage.blob_responses import blob_response
from inspect_svc.storage.blobstore import BlobNotFound
from inspect_svc.storage.review_queue import Cursor, InspectionView, QueryError, QueueFilters

router = APIRouter(prefix="/dashboard")

STATIC_FILES = {"review.js": "text/javascript", "dashboard.css": "text/css"}
FILTER_FIELDS = ("line", "camera", "model_version", "verdict", "review_state", "since", "until", "sort")
# What the queue's date fields accept, as an HTML `pattern`: an ISO date with an optional time.
ISO_INPUT_PATTERN = r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2})?)?"
ISO_MINUTES = "%Y-%m-%dT%H:%M"


def parse_filters(params: Mapping[str, str]) -> QueueFilters:
    """Queue filters from query parameters; empty values mean "no filter".

    Raises:
        QueryError: an unknown choice or a malformed date.
    """
    verdict = params.get("verdict") or None
    if verdict not in (None, "ok", "defect", "invalid_image"):
        raise QueryError(f"unknown verdict {verdict!r}; use ok, defect or invalid_image")
    review_state = params.get("review_state") or "unreviewed"
    if review_state not in ("any", "unreviewed", "reviewed"):
        raise QueryError(f"unknown review state {review_state!r}; use any, unreviewed or reviewed")
    sort = params.get("sort") or "score"
    if sort not in ("score", "time"):
        raise QueryError(f"unknown sort {sort!r}; use score or time")
    return QueueFilters(
        line=params.get("line") or None,
        camera=params.get("camera") or None,
        model_version=params.get("model_version") or None,
        verdict=verdict,
        review_state=review_state,  # type: ignore[arg-type]
        since=_parse_time(params.get("since")),
        until=_parse_time(params.get("until")),
        sort=sort,  # type: ignore[arg-type]
    )


def _parse_time(value: str | None) -> datetime | None:
    """An ISO date (midnight) or date-time; one without a zone is UTC, as the queue shows times."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
        # Converting to UTC can leave the calendar (0001-01-01T00:00+01:00): OverflowError.
        return (
            moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        )
    except (ValueError, OverflowError) as error:
        raise QueryError(f"{value!r} is not a date-time like 2026-01-31T08:00") from error


def filter_query(filters: QueueFilters) -> str:
    """The filters as a query string, so links keep the operator's view of the queue."""
    values = {
        "line": filters.line,
        "camera": filters.camera,
        "model_version": filters.model_version,
        "verdict": filters.verdict,
        "review_state": filters.review_state,
        "since": filters.since.strftime(ISO_MINUTES) if filters.since else None,
        "until": filters.until.strftime(ISO_MINUTES) if filters.until else None,
        "sort": filters.sort,
    }
    return urlencode({name: value for name, value in values.items() if value})


def _filters_or_400(request: Request) -> QueueFilters:
    try:
        return parse_filters(request.query_params)
    except QueryError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error


def _inspection_or_404(db: DbSession, inspection_id: str) -> InspectionView:
    item = queue.get_inspection(db, inspection_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no inspection {inspection_id}")
    return item


def _inspection_url(request: Request, inspection_id: str, filters: QueueFilters) -> str:
    return (
        f"{request.url_for('dashboard_inspection', inspection_id=inspection_id).path}?{filter_query(filters)}"
    )


def _queue_url(request: Request, filters: QueueFilters) -> str:
    return f"{request.url_for('dashboard_queue').path}?{filter_query(filters)}"


@router.get("", include_in_schema=False)
def dashboard_home(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("dashboard_queue").path, status_code=status.HTTP_303_SEE_OTHER)


@router.get("/queue", name="dashboard_queue", response_class=HTMLResponse)
def review_queue(
    request: Request,
    login: Viewer,
    db: DbSession,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=queue.MAX_PAGE_SIZE)] = queue.DEFAULT_PAGE_SIZE,
) -> HTMLResponse:
    """The review queue: highest score (or newest) first, keyset-paged."""
    filters = _filters_or_400(request)
    try:
        page = queue.queue_page(db, filters, cursor=Cursor.decode(cursor) if cursor else None, limit=limit)
    except QueryError as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    context = page_context(
        login,
        "queue",
        page=page,
        filters=filters,
        cursor=cursor,
        limit=limit,
        filter_query=filter_query(filters),
        choices=queue.filter_choices(db),
        form_since=filters.since.strftime(ISO_MINUTES) if filters.since else "",
        form_until=filters.until.strftime(ISO_MINUTES) if filters.until else "",
        iso_pattern=ISO_INPUT_PATTERN,
    )
    return TEMPLATES.TemplateResponse(request, "queue.html", context)


@router.get("/inspections/{inspection_id}", name="dashboard_inspection", response_class=HTMLResponse)
def inspection_page(request: Request, inspection_id: str, login: Viewer, db: DbSession) -> HTMLResponse:
    """One inspection: image, heatmap, regions, review history and the review actions."""
    filters = _filters_or_400(request)
    item = _inspection_or_404(db, inspection_id)
    next_id = queue.neighbour_id(db, filters, item, forward=True)
    previous_id = queue.neighbour_id(db, filters, item, forward=False)
    latest = item.latest_review
    context = page_context(
        login,
        "queue",
        item=item,
        filter_query=filter_query(filters),
        queue_url=_queue_url(request, filters),
        next_url=_inspection_url(request, next_id, filters) if next_id else None,
        previous_url=_inspection_url(request, previous_id, filters) if previous_id else None,
        mask_url=request.url_for("dashboard_mask", inspection_id=item.id).path
        if latest and latest.mask_key
        else None,
        can_review=login.user.role in ("reviewer", "admin"),
    )
    return TEMPLATES.TemplateResponse(request, "inspection.html", context)


@router.post("/inspections/{inspection_id}/review", name="dashboard_review")
def submit_review(
    request: Request,
    inspection_id: str,
    login: Reviewer,
    db: DbSession,
    blobs: Blobs,
    verdict: Annotated[ReviewVerdict, Form()],
    comment: Annotated[str | None, Form(max_length=1000)] = None,
    mask: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Record a verdict (and a corrected mask), then go on to the next inspection in the queue.

    Browsers posting the form get a 303 to the next inspection; `Accept: application/json` callers
    (the mask editor) get `{review_id, mask_key, next_url}`.
    """
    filters = _filters_or_400(request)
    item = _inspection_or_404(db, inspection_id)
    mask_key = _store_mask(blobs, mask, item, verdict) if mask is not None else None
    review = repositories.add_review(
        db,
        review=ReviewCreate(
            inspection_id=item.id,
            reviewer_id=login.user.id,
            verdict=verdict,
            mask_key=mask_key,
            comment=comment or None,
        ),
    )
    db.commit()
    next_id = queue.neighbour_id(db, filters, item, forward=True)
    next_url = _inspection_url(request, next_id, filters) if next_id else _queue_url(request, filters)
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"review_id": review.id, "mask_key": mask_key, "next_url": next_url})
    return RedirectResponse(next_url, status_code=status.HTTP_303_SEE_OTHER)


def _store_mask(blobs: Blobs, upload: UploadFile, item: InspectionView, verdict: str) -> str:
    if verdict == "reject":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "a false alarm has no defect: send no mask with it")
    if upload.content_type not in (None, "image/png", "application/octet-stream"):
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "the mask must be a PNG image")
    data = upload.file.read(MAX_MASK_BYTES + 1)
    try:
        canonical = canonical_mask_png(data, width=item.width, height=item.height)
    except MaskRejected as error:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
    return blobs.put(canonical, suffix=".png")


def _blob_response(blobs: Blobs, key: str, media_type: str) -> Response:
    # Blobs are content-addressed, so a browser may keep them; `private` keeps them out of shared caches.
    return blob_response(blobs, key, media_type, headers={"Cache-Control": "private, max-age=86400"})


@router.get("/inspections/{inspection_id}/image", name="dashboard_image")
def inspection_image(inspection_id: str, _: Viewer, db: DbSession, blobs: Blobs) -> Response:
    item = _inspection_or_404(db, inspection_id)
    return _blob_response(blobs, item.image_key, item.image_media_type)


@router.get("/inspections/{inspection_id}/thumb.jpg", name="dashboard_thumbnail")
def inspection_thumbnail(inspection_id: str, _: Viewer, db: DbSession, blobs: Blobs) -> Response:
    """A small JPEG of the frame for the queue (the browser keeps it: the frame never changes)."""
    item = _inspection_or_404(db, inspection_id)
    try:
        thumbnail = thumbnail_jpeg(blobs.read(item.image_key), item.image_media_type)
    except BlobNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the file of this inspection is missing") from error
    except ValueError as error:  # ImageRejected is one
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"the stored frame cannot be shown: {error}"
        ) from error
    return Response(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/inspections/{inspection_id}/map.png", name="dashboard_map")
def inspection_map(inspection_id: str, _: Viewer, db: DbSession, blobs: Blobs) -> Response:
    """The probability map as an 8-bit grey PNG; the page thresholds it in the browser."""
    item = _inspection_or_404(db, inspection_id)
    if item.verdict == INVALID_IMAGE:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_MAP)
    return _blob_response(blobs, item.map_key, "image/png")


@router.get("/inspections/{inspection_id}/mask.png", name="dashboard_mask")
def inspection_mask(inspection_id: str, _: Viewer, db: DbSession, blobs: Blobs) -> Response:
    """The corrected mask of the latest review, when that review has one."""
    item = _inspection_or_404(db, inspection_id)
    if item.latest_review is None or item.latest_review.mask_key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "the latest review of this inspection has no mask")
    return _blob_response(blobs, item.latest_review.mask_key, "image/png")


@router.get("/static/{name}", name="dashboard_static", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    """The dashboard's one stylesheet and one script (no login needed: the login page uses them)."""
    if name not in STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    return FileResponse(
        STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"}
    )


@router.get("/export.zip", name="dashboard_export")
def export_reviewed(_: Reviewer, db: DbSession, blobs: Blobs) -> FileResponse:
    """The reviewed inspections as a labeled training set (the same export as the training CLI)."""
    # A temporary file, not memory: a plant's reviewed set can run to gigabytes.
    handle, name = tempfile.mkstemp(prefix="reviewed-", suffix=".zip")
    spool = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            export_to_zip(db, blobs, stream)
    except BaseException:
        spool.unlink(missing_ok=True)
        raise
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return FileResponse(
        spool,
        media_type="application/zip",
        filename=f"reviewed-{stamp}.zip",
        background=BackgroundTask(spool.unlink, missing_ok=True),
        headers={"Cache-Control": "no-store"},
    )

"""The review queue's reads: the queue (keyset paging), one inspection with its regions and reviews.

Rows never leave this module: callers (the dashboard) get frozen dataclasses, so templates cannot
lazy-load anything.

Paging is by keyset, never OFFSET: a page is "the next `limit` rows whose sort key is below the
cursor's", which an index on the sort key answers in the same time on page 1 and on page 20,000.
The sort keys are (score, id) and (created_at, id); `id` breaks ties so no row is skipped or repeated.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, exists, func, select, tuple_
from sqlalchemy.orm import Session

from inspect_svc.storage.models import (
    CameraDB,
    DefectRegionDB,
    InspectionDB,
    LineDB,
    ModelVersionDB,
    ReviewDB,
    UserDB,
)

SortKey = Literal["score", "time"]
ReviewState = Literal["any", "unreviewed", "reviewed"]
REVIEW_VERDICTS = ("confirm", "reject", "missed")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class QueryError(ValueError):
    """A filter or cursor the queue cannot use (shown to the operator as a 400)."""


@dataclass(frozen=True)
class QueueFilters:
    """What an operator narrowed the queue to; every field is optional."""

    line: str | None = None
    camera: str | None = None
    model_version: str | None = None
    verdict: str | None = None  # the model's verdict: ok | defect
    review_state: ReviewState = "unreviewed"
    since: datetime | None = None
    until: datetime | None = None
    sort: SortKey = "score"


@dataclass(frozen=True)
class Cursor:
    """A position in the queue: the sort value and id of the last row seen."""

    value: float | str
    inspection_id: str

    def encode(self) -> str:
        raw = json.dumps([self.value, self.inspection_id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            value, inspection_id = json.loads(base64.urlsafe_b64decode(padded))
        except (binascii.Error, ValueError, TypeError) as error:
            raise QueryError("the page cursor is malformed") from error
        if not isinstance(value, (int, float, str)) or not isinstance(inspection_id, str):
            raise QueryError("the page cursor is malformed")
        return cls(value=value, inspection_id=inspection_id)


@dataclass(frozen=True)
class ReviewView:
    """One review as the dashboard shows it."""

    id: int
    verdict: str
    reviewer: str | None
    mask_key: str | None
    comment: str | None
    created_at: datetime


@dataclass(frozen=True)
class RegionView:
    x: int
    y: int
    width: int
    height: int
    area: int
    score: float
    polygon: list[list[int]]


@dataclass(frozen=True)
class InspectionView:
    """An inspection with what the queue and the review page need of it."""

    id: str
    camera_id: str
    frame_id: str
    line: str | None
    model_version: str
    verdict: str
    score: float
    defect_area: int
    width: int
    height: int
    pixel_threshold: float
    image_threshold: float
    image_key: str
    image_media_type: str
    map_key: str
    created_at: datetime
    latest_review: ReviewView | None = None
    regions: list[RegionView] = field(default_factory=list)
    reviews: list[ReviewView] = field(default_factory=list)


@dataclass(frozen=True)
class QueuePage:
    items: list[InspectionView]
    next_cursor: str | None


def sort_columns(sort: SortKey) -> tuple[Any, Any]:
    """The (sort value, tie-breaker) columns of a queue order; both descend."""
    if sort == "score":
        return InspectionDB.score, InspectionDB.id
    if sort == "time":
        return InspectionDB.created_at, InspectionDB.id
    raise QueryError(f"unknown sort {sort!r}; use score or time")


def _has_review() -> ColumnElement[bool]:
    return exists().where(ReviewDB.inspection_id == InspectionDB.id)


def filter_conditions(filters: QueueFilters) -> list[ColumnElement[bool]]:
    """SQL conditions for the filters; each one is sargable on the inspections indexes."""
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (InspectionDB.line, filters.line),
        (InspectionDB.camera_id, filters.camera),
        (InspectionDB.model_version, filters.model_version),
        (InspectionDB.verdict, filters.verdict),
    ):
        if value:
            conditions.append(column == value)
    if filters.since is not None:
        conditions.append(InspectionDB.created_at >= filters.since)
    if filters.until is not None:
        conditions.append(InspectionDB.created_at < filters.until)
    if filters.review_state == "unreviewed":
        conditions.append(~_has_review())
    elif filters.review_state == "reviewed":
        conditions.append(_has_review())
    elif filters.review_state != "any":
        raise QueryError(f"unknown review state {filters.review_state!r}; use any, unreviewed or reviewed")
    return conditions


def _cursor_value(sort: SortKey, cursor: Cursor) -> float | datetime:
    if sort == "score":
        if isinstance(cursor.value, str):
            raise QueryError("the page cursor does not belong to this sort order")
        return float(cursor.value)
    try:
        return datetime.fromisoformat(str(cursor.value))
    except ValueError as error:
        raise QueryError("the page cursor does not belong to this sort order") from error


def cursor_for(item: InspectionView, sort: SortKey) -> Cursor:
    """The cursor that continues the queue after `item`."""
    value: float | str = item.score if sort == "score" else item.created_at.isoformat()
    return Cursor(value=value, inspection_id=item.id)


def _queue_statement(filters: QueueFilters, cursor: Cursor | None, *, after: bool) -> Select[InspectionDB]:
    """Rows strictly after (`after=True`, the queue's own direction) or before the cursor."""
    value_col, id_col = sort_columns(filters.sort)
    statement = select(InspectionDB).where(*filter_conditions(filters))
    if cursor is not None:
        key = tuple_(value_col, id_col)
        bound = tuple_(_cursor_value(filters.sort, cursor), cursor.inspection_id)
        statement = statement.where(key < bound if after else key > bound)
    if after:
        return statement.order_by(value_col.desc(), id_col.desc())
    return statement.order_by(value_col.asc(), id_col.asc())


def queue_page(
    session: Session, filters: QueueFilters, *, cursor: Cursor | None = None, limit: int = DEFAULT_PAGE_SIZE
) -> QueuePage:
    """One page of the review queue, in the filters' sort order (highest first)."""
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    rows = list(session.scalars(_queue_statement(filters, cursor, after=True).limit(limit + 1)))
    page_rows = rows[:limit]
    latest = latest_reviews(session, [row.id for row in page_rows])
    items = [replace(_inspection_view(row), latest_review=latest.get(row.id)) for row in page_rows]
    next_cursor = cursor_for(items[-1], filters.sort).encode() if len(rows) > limit else None
    return QueuePage(items=items, next_cursor=next_cursor)


def neighbour_id(
    session: Session, filters: QueueFilters, current: InspectionView, *, forward: bool
) -> str | None:
    """The inspection after (`forward`) or before `current` in the queue, or None at either end.

    The current inspection need not match the filters any more (it may just have been reviewed out of
    the "unreviewed" queue): its sort key alone places it.
    """
    statement = _queue_statement(filters, cursor_for(current, filters.sort), after=forward)
    return session.scalar(statement.with_only_columns(InspectionDB.id).limit(1))


def latest_reviews(session: Session, inspection_ids: list[str]) -> dict[str, ReviewView]:
    """The most recent review of each inspection that has one."""
    if not inspection_ids:
        return {}
    newest = (
        select(ReviewDB.inspection_id, func.max(ReviewDB.id).label("review_id"))
        .where(ReviewDB.inspection_id.in_(inspection_ids))
        .group_by(ReviewDB.inspection_id)
        .subquery()
    )
    statement = (
        select(ReviewDB, UserDB.username)
        .join(newest, ReviewDB.id == newest.c.review_id)
        .outerjoin(UserDB, UserDB.id == ReviewDB.reviewer_id)
    )
    return {
        review.inspection_id: _review_view(review, username)
        for review, username in session.execute(statement)
    }


def get_inspection(session: Session, inspection_id: str) -> InspectionView | None:
    """An inspection with its regions and full review history, or None."""
    row = session.get(InspectionDB, inspection_id)
    if row is None:
        return None
    statement = (
        select(ReviewDB, UserDB.username)
        .outerjoin(UserDB, UserDB.id == ReviewDB.reviewer_id)
        .where(ReviewDB.inspection_id == inspection_id)
        .order_by(ReviewDB.id)
    )
    reviews = [_review_view(review, username) for review, username in session.execute(statement)]
    regions = [_region_view(region) for region in row.regions]
    return replace(
        _inspection_view(row),
        regions=regions,
        reviews=reviews,
        latest_review=reviews[-1] if reviews else None,
    )


def filter_choices(session: Session) -> dict[str, list[str]]:
    """Lines, cameras and model versions to offer in the filter form.

    Read from the small cameras/lines/model_versions tables: a DISTINCT over a million inspections
    would cost a full index scan on every page view.
    """
    camera_rows = session.execute(select(CameraDB.name, CameraDB.line).order_by(CameraDB.name)).all()
    line_names = set(session.scalars(select(LineDB.name)))
    line_names.update(line for _, line in camera_rows if line)
    versions = session.scalars(select(ModelVersionDB.version).order_by(ModelVersionDB.registered_at.desc()))
    return {
        "lines": sorted(line_names),
        "cameras": [name for name, _ in camera_rows],
        "versions": list(versions),
    }


def _inspection_view(row: InspectionDB) -> InspectionView:
    return InspectionView(
        id=row.id,
        camera_id=row.camera_id,
        frame_id=row.frame_id,
        line=row.line,
        model_version=row.model_version,
        verdict=row.verdict,
        score=row.score,
        defect_area=row.defect_area,
        width=row.width,
        height=row.height,
        pixel_threshold=row.pixel_threshold,
        image_threshold=row.image_threshold,
        image_key=row.image_key,
        image_media_type=row.image_media_type,
        map_key=row.map_key,
        created_at=row.created_at,
    )


def _review_view(review: ReviewDB, username: str | None) -> ReviewView:
    return ReviewView(
        id=review.id,
        verdict=review.verdict,
        reviewer=username,
        mask_key=review.mask_key,
        comment=review.comment,
        created_at=review.created_at,
    )


def _region_view(region: DefectRegionDB) -> RegionView:
    return RegionView(
        x=region.x,
        y=region.y,
        width=region.width,
        height=region.height,
        area=region.area,
        score=region.score,
        polygon=region.polygon,
    )


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "REVIEW_VERDICTS",
    "Cursor",
    "InspectionView",
    "QueryError",
    "QueueFilters",
    "QueuePage",
    "RegionView",
    "ReviewView",
    "cursor_for",
    "filter_choices",
    "filter_conditions",
    "get_inspection",
    "latest_reviews",
    "neighbour_id",
    "queue_page",
    "sort_columns",
]

"""The reviewed set: every reviewed inspection with its latest review, as the training export reads it.

Rows never leave this module: the export gets `ReviewedInspection` records, streamed in batches so
a plant's whole review history never sits in memory at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from inspect_svc.storage.db import make_engine, make_session_factory
from inspect_svc.storage.models import InspectionDB, ReviewDB, UserDB

# Rows fetched per round trip while streaming the reviewed set.
STREAM_BATCH = 200


class ReviewsUnreadable(RuntimeError):
    """The database does not exist or holds no readable reviews table."""


@dataclass(frozen=True)
class ReviewedInspection:
    """An inspection and its latest review: what the export needs of both."""

    inspection_id: str
    camera_id: str
    line: str | None
    model_version: str
    image_key: str
    image_media_type: str
    map_key: str
    pixel_threshold: float
    inspection_verdict: str  # the model's verdict (or invalid_image for a damaged frame)
    review_id: int
    verdict: str
    mask_key: str | None
    reviewer: str | None
    reviewed_at: datetime


def latest_reviewed(session: Session) -> Iterator[ReviewedInspection]:
    """Each reviewed inspection with its latest review, oldest inspection first."""
    latest = select(func.max(ReviewDB.id).label("review_id")).group_by(ReviewDB.inspection_id).subquery()
    statement = (
        select(InspectionDB, ReviewDB, UserDB.username)
        .join(ReviewDB, ReviewDB.inspection_id == InspectionDB.id)
        .join(latest, latest.c.review_id == ReviewDB.id)
        .outerjoin(UserDB, UserDB.id == ReviewDB.reviewer_id)
        .order_by(InspectionDB.created_at, InspectionDB.id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for inspection, review, username in session.execute(statement):
        yield ReviewedInspection(
            inspection_id=inspection.id,
            camera_id=inspection.camera_id,
            line=inspection.line,
            model_version=inspection.model_version,
            image_key=inspection.image_key,
            image_media_type=inspection.image_media_type,
            map_key=inspection.map_key,
            pixel_threshold=inspection.pixel_threshold,
            inspection_verdict=inspection.verdict,
            review_id=review.id,
            verdict=review.verdict,
            mask_key=review.mask_key,
            reviewer=username,
            reviewed_at=review.created_at,
        )


@contextmanager
def reviews_session(database_url: str) -> Iterator[Session]:
    """A session on the existing database at `database_url`, once its reviews are known to be readable.

    Raises:
        ReviewsUnreadable: a SQLite file that does not exist, or a database whose reviews cannot be read.
    """
    url = make_url(database_url)
    # Opening a missing SQLite file would create an empty database: say it is not there instead.
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        raise ReviewsUnreadable(f"SQLite database {url.database} does not exist")
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            try:
                session.execute(select(ReviewDB.id).limit(1))
            except SQLAlchemyError as error:
                cause = error.orig if isinstance(error, DBAPIError) else error
                raise ReviewsUnreadable(
                    f"cannot read reviews from {url.render_as_string()}: {cause}"
                ) from None
            yield session
    finally:
        engine.dispose()

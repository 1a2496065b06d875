"""Review statistics: defect rate per hour per line, review throughput, precision measured by reviews.

Aggregates run in SQL (GROUP BY over a time window on the `created_at` indexes); only the grouped
counts come back, as plain dataclasses.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from inspect_svc.schemas import INVALID_IMAGE
from inspect_svc.storage.models import InspectionDB, ReviewDB, UserDB

# Reviews that say "there is a defect": a missed-defect verdict on a flagged image still confirms it.
DEFECT_REVIEWS = ("confirm", "missed")


@dataclass(frozen=True)
class ModelPrecision:
    """Confusion counts of one model version against its reviewed inspections (latest review counts)."""

    model_version: str
    true_positive: int
    false_positive: int
    false_negative: int
    true_negative: int

    @property
    def reviewed(self) -> int:
        return self.true_positive + self.false_positive + self.false_negative + self.true_negative

    @property
    def precision(self) -> float | None:
        flagged = self.true_positive + self.false_positive
        return self.true_positive / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        defects = self.true_positive + self.false_negative
        return self.true_positive / defects if defects else None


@dataclass(frozen=True)
class ReviewerThroughput:
    reviewer: str
    total: int
    by_verdict: dict[str, int]


def _hour_bucket(session: Session) -> Any:
    """An SQL expression truncating `created_at` to the hour, per dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc("hour", InspectionDB.created_at)
    return func.strftime("%Y-%m-%dT%H:00:00", InspectionDB.created_at)


def _as_hour(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def window_end(session: Session) -> datetime:
    """The end of the latest hour with inspections (or the current hour): charts show recent activity."""
    latest = session.scalar(select(func.max(InspectionDB.created_at)))
    moment = _as_hour(latest) if latest is not None else datetime.now(timezone.utc)
    return moment.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def defect_rate_per_hour(
    session: Session, *, start: datetime, end: datetime
) -> dict[str, list[tuple[datetime, float]]]:
    """line -> [(hour, share of inspections judged defective)], hours without inspections left out."""
    bucket = _hour_bucket(session).label("hour")
    statement = (
        select(
            InspectionDB.line,
            bucket,
            func.count().label("total"),
            func.sum(case((InspectionDB.verdict == "defect", 1), else_=0)).label("defects"),
        )
        .where(InspectionDB.created_at >= start, InspectionDB.created_at < end)
        .where(InspectionDB.verdict != INVALID_IMAGE)  # damaged frames were never scored
        .group_by(InspectionDB.line, bucket)
        .order_by(bucket)
    )
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for line, hour, total, defects in session.execute(statement):
        series[line or "(no line)"].append((_as_hour(hour), (defects or 0) / total))
    return dict(series)


def _latest_review_ids() -> Any:
    return select(func.max(ReviewDB.id).label("review_id")).group_by(ReviewDB.inspection_id).subquery()


def precision_by_model(session: Session) -> list[ModelPrecision]:
    """Each model version's precision and recall as measured by its reviewed inspections."""
    latest = _latest_review_ids()
    statement = (
        select(InspectionDB.model_version, InspectionDB.verdict, ReviewDB.verdict, func.count())
        .join(ReviewDB, ReviewDB.inspection_id == InspectionDB.id)
        .join(latest, latest.c.review_id == ReviewDB.id)
        .where(InspectionDB.verdict != INVALID_IMAGE)  # not a decision of the model
        .group_by(InspectionDB.model_version, InspectionDB.verdict, ReviewDB.verdict)
    )
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for version, model_verdict, review_verdict, count in session.execute(statement):
        model_says_defect = model_verdict == "defect"
        reviewer_says_defect = review_verdict in DEFECT_REVIEWS
        cell = {(True, True): "tp", (True, False): "fp", (False, True): "fn", (False, False): "tn"}
        counts[version][cell[(model_says_defect, reviewer_says_defect)]] += count
    return [
        ModelPrecision(version, cells["tp"], cells["fp"], cells["fn"], cells["tn"])
        for version, cells in sorted(counts.items())
    ]


def review_throughput(
    session: Session, *, start: datetime, end: datetime
) -> tuple[list[ReviewerThroughput], dict[str, int]]:
    """Reviews per reviewer (by verdict) and reviews per day within [start, end)."""
    per_reviewer = (
        select(UserDB.username, ReviewDB.verdict, func.count())
        .select_from(ReviewDB)
        .outerjoin(UserDB, UserDB.id == ReviewDB.reviewer_id)
        .where(ReviewDB.created_at >= start, ReviewDB.created_at < end)
        .group_by(UserDB.username, ReviewDB.verdict)
    )
    table: dict[str, dict[str, int]] = defaultdict(dict)
    for username, verdict, count in session.execute(per_reviewer):
        table[username or "(deleted user)"][verdict] = count
    reviewers = sorted(
        (ReviewerThroughput(name, sum(verdicts.values()), verdicts) for name, verdicts in table.items()),
        key=lambda row: -row.total,
    )
    day = (
        func.date(ReviewDB.created_at)
        if session.get_bind().dialect.name == "sqlite"
        else func.date_trunc("day", ReviewDB.created_at)
    )
    per_day_statement = (
        select(day.label("day"), func.count())
        .where(ReviewDB.created_at >= start, ReviewDB.created_at < end)
        .group_by("day")
        .order_by("day")
    )
    per_day = {str(value)[:10]: count for value, count in session.execute(per_day_statement)}
    return reviewers, per_day

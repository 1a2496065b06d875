"""Statistics page: defect rate per hour per line, review throughput, precision measured by reviews."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from inspect_svc.dashboard.auth import Viewer, page_context
from inspect_svc.dashboard.charts import line_chart
from inspect_svc.dashboard.deps import TEMPLATES, DbSession
from inspect_svc.storage.review_stats import (
    defect_rate_per_hour,
    precision_by_model,
    review_throughput,
    window_end,
)

router = APIRouter(prefix="/dashboard")

REVIEW_DAYS = 14


@router.get("/stats", name="dashboard_stats", response_class=HTMLResponse)
def statistics(
    request: Request, login: Viewer, db: DbSession, hours: Annotated[int, Query(ge=1, le=24 * 31)] = 24
) -> HTMLResponse:
    """Defect rate per hour per line, review throughput and precision per model version."""
    end = window_end(db)
    start = end - timedelta(hours=hours)
    rates = defect_rate_per_hour(db, start=start, end=end)
    now = datetime.now(timezone.utc)
    reviewers, per_day = review_throughput(db, start=now - timedelta(days=REVIEW_DAYS), end=now)
    context = page_context(
        login,
        "stats",
        hours=hours,
        start=start,
        end=end,
        chart=line_chart(rates, start=start, end=end),
        reviewers=reviewers,
        per_day=per_day,
        review_days=REVIEW_DAYS,
        precision=precision_by_model(db),
    )
    return TEMPLATES.TemplateResponse(request, "stats.html", context)

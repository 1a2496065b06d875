"""Probes and metrics: /livez (the event loop answers), /readyz (can take frames), /metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response, status

from inspect_svc.api.deps import ServiceDep
from inspect_svc.metrics import CONTENT_TYPE_LATEST
from inspect_svc.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/livez", response_model=Health)
async def livez() -> Health:
    """Alive: never checks the database, so an outage does not get the pod restarted."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(service: ServiceDep, response: Response) -> Health:
    """Ready when a warmed model serves, results have somewhere durable to go (database or spool), and
    the service's own disk takes writes (spool and indexes live there).

    `replica` and `model_version` say which replica answers and what it serves; `model_in_sync` is
    false while it still serves another version than the database's active one (`model_wanted`).
    """
    database = await service.database_reachable()
    storage_writable = await asyncio.to_thread(service.write_health.check)
    spool_depth = service.spool.depth()
    spool_has_room = spool_depth < service.settings.spool_max
    checks: dict[str, bool | int | str] = {
        "accepting": service.accepting,
        "model": service.models.ready,
        "model_version": service.models.active_version or "",
        "replica": service.settings.replica_id,
        "model_wanted": service.follower.state.database_version or "",
        "model_in_sync": service.follower.in_sync,
        "model_error": service.follower.state.error,
        "database": database,
        "spool_depth": spool_depth,
        "storage_writable": storage_writable,
    }
    ready = service.accepting and service.models.ready and storage_writable and (database or spool_has_room)
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if ready else "unavailable", checks=checks)


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

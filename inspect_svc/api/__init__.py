"""The HTTP API. `ROUTERS` is everything `create_app` mounts; a new router is added here, and only here."""

from __future__ import annotations

from fastapi import APIRouter

from inspect_svc.api import cameras, health, inspect, inspections, lines, models
from inspect_svc.dashboard import router as dashboard_router

ROUTERS: list[APIRouter] = [
    health.router,
    inspect.router,
    inspections.router,
    models.router,
    lines.router,
    cameras.router,
    dashboard_router,
]

"""The JSON API. `ROUTERS` are its routers; a new one is added here, and only here.

`create_app` mounts them, then the dashboard's router: the API does not know the dashboard.
"""

from __future__ import annotations

from fastapi import APIRouter

from inspect_svc.api import cameras, health, inspect, inspections, lines, models

ROUTERS: list[APIRouter] = [
    health.router,
    inspect.router,
    inspections.router,
    models.router,
    lines.router,
    cameras.router,
]

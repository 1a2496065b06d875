"""The operator dashboard: server-rendered review pages under `/dashboard`.

`router` is the one thing the app includes; it gathers the login, review, statistics, models and
admin pages.
"""

from fastapi import APIRouter

from inspect_svc.dashboard import admin, auth, routes, stats

router = APIRouter()
for module in (auth, routes, stats, admin):
    router.include_router(module.router)

__all__ = ["router"]

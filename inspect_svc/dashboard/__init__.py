"""The operator dashboard: server-rendered review pages under `/dashboard`.

`router` is the one thing the app includes; it gathers the login, review, statistics, models and
admin pages. They are HTML for browsers with a session cookie, not part of the JSON API, so the
OpenAPI schema leaves them out.
"""

from fastapi import APIRouter

from inspect_svc.dashboard import admin, auth, routes, stats

router = APIRouter(include_in_schema=False)
for module in (auth, routes, stats, admin):
    router.include_router(module.router)

__all__ = ["router"]

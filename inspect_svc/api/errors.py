"""One error shape for the whole API, declared in the OpenAPI schema as it is answered.

Every error body is an `ErrorBody`: `detail` is a sentence; a 422 from request validation adds
`errors`, one entry per invalid field (without the rejected value, which may be a password).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette._utils import get_route_path  # the path inside the mount, as starlette's router sees it
from starlette.routing import compile_path
from starlette.types import Scope

from inspect_svc.schemas import ErrorBody

# The answers any route may give before its own code runs: unparseable body, bad credentials,
# a scope that does not cover the request, invalid parameters, database away.
COMMON_ERRORS = (400, 401, 403, 422, 503)
MAX_LISTED_ISSUES = 5
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})


# The body guard (`inspect_svc.middleware`), on every route that reads a body: the body did not arrive
# within INSPECT_BODY_TIMEOUT_S (408), or passed INSPECT_MAX_BODY_BYTES (413).
BODY_ERRORS = (408, 413)


def error_responses(
    *codes: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these status codes, all with the `ErrorBody` schema.

    `descriptions` replaces the standard reason phrase of a code with what it means on this route.
    """
    described = descriptions or {}
    return {
        code: {"model": ErrorBody, **({"description": described[code]} if code in described else {})}
        for code in codes
    }


async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    """A 422 whose `detail` names the invalid fields, so it reads like every other error."""
    issues = [
        {key: value for key, value in issue.items() if key in ("loc", "msg", "type")}
        for issue in jsonable_encoder(error.errors())
    ]
    listed = "; ".join(
        f"{'.'.join(str(part) for part in issue.get('loc', ()))}: {issue.get('msg', 'invalid')}"
        for issue in issues[:MAX_LISTED_ISSUES]
    )
    more = f" (and {len(issues) - MAX_LISTED_ISSUES} more)" if len(issues) > MAX_LISTED_ISSUES else ""
    body = ErrorBody(
        detail=f"invalid request: {listed or 'unreadable input'}{more}", reason=None, errors=issues
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


def allowed_methods(app: FastAPI, scope: Scope) -> str | None:
    """The `Allow` value of a path: every method the schema declares on it, not only those of one route.

    Starlette's 405 lists the methods of the first route whose path matched, so a path served by two
    routes (`GET` and `POST /cameras`) would advertise only one of them. None for a path the schema
    does not describe (the dashboard's pages), whose own answer then stands.
    """
    path = get_route_path(scope)
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        if compile_path(template)[0].match(path):
            methods |= {method.upper() for method in operations if method.upper() in HTTP_METHODS}
    if "GET" in methods:
        methods.add("HEAD")  # answered for every GET route
    return ", ".join(sorted(methods)) or None


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]

"""Dependencies shared by the routers: the service state, the credentials, and what they may read.

Scopes (docs/RELIABILITY.md, "Access and scopes", has the whole table):
- the admin token reads and changes everything;
- a camera key submits frames for its own camera, tagged with its registered line, and reads only
  that camera's results and its line's thresholds;
- a signed link reads the one picture it was made for;
- with keys switched off (`require_api_key=false`, benches only) requests without credentials read
  the whole plant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from inspect_svc.api import links
from inspect_svc.schemas import CameraPublic
from inspect_svc.security import tokens_match
from inspect_svc.service import ServiceState

# Declared as security schemes (not plain headers), so the OpenAPI schema says which routes need which
# credential; `auto_error=False` leaves the refusals, and their messages, to the functions below.
CAMERA_KEY = APIKeyHeader(
    name="X-API-Key", scheme_name="CameraKey", description="the camera's API key", auto_error=False
)
ADMIN_TOKEN = HTTPBearer(scheme_name="AdminToken", description="INSPECT_ADMIN_TOKEN", auto_error=False)
ApiKeyHeader = Annotated[str | None, Security(CAMERA_KEY)]
AuthorizationHeader = Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_TOKEN)]


def get_service(request: Request) -> ServiceState:
    service: ServiceState = request.app.state.service  # set by the lifespan
    return service


ServiceDep = Annotated[ServiceState, Depends(get_service)]


async def get_camera(service: ServiceDep, x_api_key: ApiKeyHeader = None) -> CameraPublic | None:
    """The camera whose key came with the request; None when keys are not required and none was sent."""
    if x_api_key is None:
        if service.settings.require_api_key:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing X-API-Key header")
        return None
    camera = await service.camera_for_key(x_api_key)
    if camera is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or disabled API key")
    return camera


CameraDep = Annotated[CameraPublic | None, Depends(get_camera)]


def require_admin(service: ServiceDep, authorization: AuthorizationHeader = None) -> None:
    """Admin endpoints need `Authorization: Bearer <admin token>`; without a configured token they are off."""
    admin_token = service.settings.admin_token
    if admin_token is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "admin API disabled: set INSPECT_ADMIN_TOKEN to enable it"
        )
    token = authorization.credentials.strip() if authorization is not None else ""
    if not tokens_match(token, admin_token.get_secret_value()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "admin token required", headers={"WWW-Authenticate": "Bearer"}
        )


AdminDep = Depends(require_admin)


@dataclass(frozen=True)
class Reader:
    """Who reads results: the whole plant (`camera=None`) or one camera, which sees only its own."""

    camera: CameraPublic | None = None

    def may_read(self, camera_id: str) -> bool:
        return self.camera is None or self.camera.name == camera_id


async def get_reader(
    service: ServiceDep, x_api_key: ApiKeyHeader = None, authorization: AuthorizationHeader = None
) -> Reader:
    """The admin token reads everything, a camera key its own camera; keys switched off read everything."""
    if authorization is not None:
        require_admin(service, authorization)
        return Reader()
    return Reader(camera=await get_camera(service, x_api_key))


ReaderDep = Annotated[Reader, Depends(get_reader)]


async def require_plant_reader(reader: ReaderDep) -> Reader:
    """Reads that span cameras or show server internals (model bundles and their paths): not for cameras."""
    if reader.camera is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "a camera key reads only its own camera's results; this needs the admin token",
        )
    return reader


PlantReaderDep = Depends(require_plant_reader)


def picture_reader(picture: links.Picture) -> Callable[..., Awaitable[Reader]]:
    """A dependency for one picture route: a valid signed link for it, or the usual credentials."""

    async def dependency(
        service: ServiceDep,
        inspection_id: str,
        x_api_key: ApiKeyHeader = None,
        authorization: AuthorizationHeader = None,
        expires: Annotated[int | None, Query(ge=0, description="signed links: expiry, Unix seconds")] = None,
        signature: Annotated[
            str | None, Query(max_length=128, description="signed links: the signature")
        ] = None,
    ) -> Reader:
        if signature is None:
            return await get_reader(service, x_api_key, authorization)
        valid = expires is not None and links.link_is_valid(
            service.settings, inspection_id, picture, expires=expires, signature=signature
        )
        if not valid:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this link has expired or its signature is wrong")
        return Reader()  # the signature covers exactly this picture, and the route reads nothing else

    return dependency

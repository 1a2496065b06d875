"""Dependencies shared by the routers: the service state and the two kinds of credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, status

from inspect_svc.schemas import CameraPublic
from inspect_svc.security import tokens_match
from inspect_svc.service import ServiceState


def get_service(request: Request) -> ServiceState:
    return request.app.state.service


ServiceDep = Annotated[ServiceState, Depends(get_service)]


async def get_camera(
    service: ServiceDep,
    x_api_key: Annotated[str | None, Header(description="the camera's API key", max_length=256)] = None,
) -> CameraPublic | None:
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


def require_admin(
    service: ServiceDep,
    authorization: Annotated[str | None, Header(description="Bearer <INSPECT_ADMIN_TOKEN>")] = None,
) -> None:
    """Admin endpoints need `Authorization: Bearer <admin token>`; without a configured token they are off."""
    admin_token = service.settings.admin_token
    if admin_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "admin API disabled: set INSPECT_ADMIN_TOKEN to enable it")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not tokens_match(token.strip(), admin_token.get_secret_value()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "admin token required", headers={"WWW-Authenticate": "Bearer"}
        )


AdminDep = Depends(require_admin)


async def require_reader(
    service: ServiceDep,
    x_api_key: Annotated[str | None, Header(max_length=256)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Reading results needs a camera key or the admin token, unless keys are switched off."""
    if not service.settings.require_api_key:
        return
    if authorization is not None:
        require_admin(service, authorization)
        return
    await get_camera(service, x_api_key)


ReaderDep = Depends(require_reader)

"""Model versions: list, register a bundle, activate one (hot swap), roll back.

Admin only, reading included: the list shows the bundles' paths on the server, which cameras never see.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status

from inspect_svc.api.deps import AdminDep, PlantReaderDep, ServiceDep
from inspect_svc.api.errors import BODY_ERRORS, COMMON_ERRORS, error_responses
from inspect_svc.bundle import BundleError
from inspect_svc.engine.session import EngineError
from inspect_svc.model_manager import ModelNotFound
from inspect_svc.schemas import ModelRegister, ModelVersionPublic
from inspect_svc.storage import repositories as repo

router = APIRouter(prefix="/models", tags=["models"], responses=error_responses(*COMMON_ERRORS))

ADMIN_ERRORS = error_responses(404)


@router.get("", response_model=list[ModelVersionPublic], dependencies=[PlantReaderDep])
async def list_models(service: ServiceDep, response: Response) -> list[ModelVersionPublic]:
    """Registered versions, newest first; `active` marks the database's choice, `serving` this replica's.

    Headers `X-Replica-Id` and `X-Serving-Version` name the replica that answered and what it serves.
    """
    serving = service.models.active_version
    response.headers["X-Replica-Id"] = service.settings.replica_id
    response.headers["X-Serving-Version"] = serving or ""
    versions = await service.run_db(repo.list_model_versions)
    return [version.model_copy(update={"serving": version.version == serving}) for version in versions]


@router.post(
    "",
    response_model=ModelVersionPublic,
    status_code=201,
    dependencies=[AdminDep],
    responses={**ADMIN_ERRORS, **error_responses(*BODY_ERRORS)},
)
async def register_model(service: ServiceDep, body: ModelRegister) -> ModelVersionPublic:
    """Register a bundle (a directory or .zip on the server); it serves only once activated."""
    try:
        return await service.models.register(body.path)
    except BundleError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None


@router.post("/rollback", response_model=ModelVersionPublic, dependencies=[AdminDep], responses=ADMIN_ERRORS)
async def rollback(service: ServiceDep) -> ModelVersionPublic:
    """Re-activate the previously active version."""
    try:
        rolled_back = await service.models.rollback()
    except ModelNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    except (BundleError, EngineError) as error:  # a bundle whose graph cannot serve: the old model stays
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    return rolled_back.model_copy(update={"serving": True})


@router.post(
    "/{version}/activate", response_model=ModelVersionPublic, dependencies=[AdminDep], responses=ADMIN_ERRORS
)
async def activate(service: ServiceDep, version: str) -> ModelVersionPublic:
    """Hot-swap to `version`: loaded and warmed beside the current model, then switched atomically."""
    try:
        activated = await service.models.activate(version)
    except ModelNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    except (BundleError, EngineError) as error:  # a bundle whose graph cannot serve: the old model stays
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    return activated.model_copy(update={"serving": True})

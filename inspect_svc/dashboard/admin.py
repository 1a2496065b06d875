"""Models page (versions, metrics, activate / roll back) and the admin page (users, cameras and keys)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError

from inspect_svc.bundle import BundleError
from inspect_svc.dashboard.auth import Admin, Viewer, page_context
from inspect_svc.dashboard.deps import TEMPLATES, DbSession
from inspect_svc.model_manager import ModelNotFound
from inspect_svc.schemas import CameraCreate, SessionPublic, UserCreate
from inspect_svc.security import api_key_prefix, hash_api_key, new_api_key
from inspect_svc.storage import repositories
from inspect_svc.storage.db import Session
from inspect_svc.storage.review_stats import precision_by_model

router = APIRouter(prefix="/dashboard")

# Metrics worth a column on the models page, in this order, when a bundle reports them.
HEADLINE_METRICS = ("pixel_auroc", "aupro", "image_auroc", "f1", "iou")


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as {"a.b": value}, numbers only (a bundle may nest per-threshold results)."""
    flat: dict[str, float] = {}
    for name, value in metrics.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, prefix=f"{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[key] = float(value)
    return flat


def headline_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The headline value of each metric: its top-level number, or the first nested one of that name."""
    flat = flatten_metrics(metrics)
    found: dict[str, float | None] = {}
    for name in HEADLINE_METRICS:
        candidates = [value for key, value in flat.items() if key == name or key.endswith(f".{name}")]
        found[name] = flat.get(name, candidates[0] if candidates else None)
    return found


# --- models ---------------------------------------------------------------------------------------------


@router.get("/models", name="dashboard_models", response_class=HTMLResponse)
def models_page(request: Request, login: Viewer, db: DbSession, changed: str | None = None) -> HTMLResponse:
    """Registered versions with their evaluation metrics and their precision measured by reviews."""
    versions = repositories.list_model_versions(db)
    measured = {row.model_version: row for row in precision_by_model(db)}
    rows = [
        {
            "version": version,
            "metrics": headline_metrics(version.metrics),
            "measured": measured.get(version.version),
        }
        for version in versions
    ]
    # Only a registered version: a crafted link must not show a made-up "now serving" message.
    known = {version.version for version in versions}
    flash = f"Model {changed} is now serving." if changed in known else None
    context = page_context(
        login,
        "models",
        rows=rows,
        metric_names=HEADLINE_METRICS,
        flash=flash,
        flash_kind="success",
        is_admin=login.user.role == "admin",
    )
    return TEMPLATES.TemplateResponse(request, "models.html", context)


async def _swap(request: Request, action: str, version: str | None) -> RedirectResponse:
    """Activate `version` (or roll back) through the engine's hot swap, then show the models page."""
    manager = request.app.state.service.models
    try:
        served = await (manager.rollback() if action == "rollback" else manager.activate(version))
    except ModelNotFound as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    except BundleError as error:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(error)) from None
    target = f"{request.url_for('dashboard_models').path}?changed={served.version}"
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)


@router.post("/models/{version}/activate", name="dashboard_model_activate")
async def activate_model(request: Request, version: str, _: Admin) -> RedirectResponse:
    """Hot-swap the service to `version`."""
    return await _swap(request, "activate", version)


@router.post("/models/rollback", name="dashboard_model_rollback")
async def rollback_model(request: Request, _: Admin) -> RedirectResponse:
    """Hot-swap back to the version that served before the current one."""
    return await _swap(request, "rollback", None)


# --- users and cameras ------------------------------------------------------------------------------------


def _admin_page(
    request: Request, login: SessionPublic, db: Session, *, status_code: int = 200, **values: object
) -> HTMLResponse:
    context = page_context(
        login, "admin", users=repositories.list_users(db), cameras=repositories.list_cameras(db), **values
    )
    return TEMPLATES.TemplateResponse(request, "admin.html", context, status_code=status_code)


def _first_error(error: ValidationError) -> str:
    detail = error.errors()[0]
    field = ".".join(str(part) for part in detail["loc"])
    return f"{field}: {detail['msg']}"


@router.get("/admin", name="dashboard_admin", response_class=HTMLResponse)
def admin_page(request: Request, login: Admin, db: DbSession) -> HTMLResponse:
    """Operators and cameras."""
    return _admin_page(request, login, db)


@router.post("/admin/users", name="dashboard_admin_add_user", response_class=HTMLResponse)
def add_user(
    request: Request,
    login: Admin,
    db: DbSession,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    role: Annotated[str, Form()],
) -> HTMLResponse:
    """Create an operator account."""
    try:
        user = UserCreate(username=username, password=password, role=role)  # type: ignore[arg-type]
    except ValidationError as error:
        return _admin_page(request, login, db, status_code=400, flash=_first_error(error), flash_kind="error")
    if repositories.username_taken(db, user.username):
        message = f"user {user.username!r} already exists"
        return _admin_page(request, login, db, status_code=409, flash=message, flash_kind="error")
    repositories.create_user(db, user=user)
    db.commit()
    return _admin_page(
        request, login, db, flash=f"User {user.username} ({user.role}) created.", flash_kind="success"
    )


@router.post("/admin/cameras", name="dashboard_admin_add_camera", response_class=HTMLResponse)
def add_camera(
    request: Request,
    login: Admin,
    db: DbSession,
    name: Annotated[str, Form()],
    line: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Create a camera and show its API key, once: only its hash is stored."""
    try:
        camera = CameraCreate(name=name, line=line or None)
    except ValidationError as error:
        return _admin_page(request, login, db, status_code=400, flash=_first_error(error), flash_kind="error")
    if repositories.get_camera(db, name=camera.name) is not None:
        message = f"camera {camera.name!r} already exists"
        return _admin_page(request, login, db, status_code=409, flash=message, flash_kind="error")
    api_key = new_api_key()
    repositories.create_camera(
        db, camera=camera, api_key_hash=hash_api_key(api_key), api_key_prefix=api_key_prefix(api_key)
    )
    db.commit()
    response = _admin_page(request, login, db, new_camera=camera.name, new_key=api_key)
    response.headers["Cache-Control"] = "no-store"  # the key must not linger in any cache
    return response

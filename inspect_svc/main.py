"""The app factory: `create_app(settings)` wires storage, the engine, notifications and the routers.

Start-up (lifespan): migrate an embedded SQLite database, open storage, load and warm the model,
start the spool replayer and the notifier. Shutdown: refuse new frames, drain the engine, give the
spool one last chance to reach the database, flush notifications, close.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from inspect_svc import __version__, dashboard, imaging
from inspect_svc.api import ROUTERS, errors
from inspect_svc.dashboard.deps import TEMPLATES
from inspect_svc.engine.admission import PixelsInFlight
from inspect_svc.engine.batcher import BatcherStopped, DeadlineExceeded, QueueFull
from inspect_svc.engine.inference import EngineNotReady
from inspect_svc.imaging import ImageRejected
from inspect_svc.metrics import ServiceMetrics
from inspect_svc.middleware import BodyLimitMiddleware, MetricsMiddleware
from inspect_svc.model_follower import ActiveModelFollower
from inspect_svc.model_manager import ModelManager, open_bundle
from inspect_svc.notify import Notifier, build_publishers
from inspect_svc.service import ServiceState, ServiceUnavailable, StorageUnwritable, store_spooled
from inspect_svc.settings import Settings
from inspect_svc.storage import migrations
from inspect_svc.storage.blob_factory import open_blob_store
from inspect_svc.storage.blobstore import BlobStoreUnavailable
from inspect_svc.storage.camera_keys import KnownCameraKeys
from inspect_svc.storage.db import UNAVAILABLE_ERRORS, make_engine, make_session_factory
from inspect_svc.storage.frame_index import AcknowledgedFrames
from inspect_svc.storage.spool import ResultSpool, SpoolReplayer
from inspect_svc.storage.write_health import WriteHealth

log = logging.getLogger(__name__)

DASHBOARD_PREFIX = "/dashboard"


def create_app(settings: Settings) -> FastAPI:
    """A ready-to-serve app for `settings`; nothing is opened until the lifespan starts."""
    metrics = ServiceMetrics()
    app = FastAPI(
        title="Defect inspection service",
        version=__version__,
        summary="Per-pixel defect maps for line cameras, logged to SQL and reviewed by operators.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    for router in (*ROUTERS, dashboard.router):
        app.include_router(router)
    _add_error_handlers(app, metrics)
    errors.install(app)
    _add_dashboard_error_pages(app)
    # Added last = outermost: the body cap applies before anything reads the body.
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_timeout_s
    )
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    service = await _open_service(app.state.settings, app.state.metrics)
    app.state.service = service
    try:
        yield
    finally:
        await _close_service(service)


async def _open_service(settings: Settings, metrics: ServiceMetrics) -> ServiceState:
    if settings.auto_migrate:
        await asyncio.to_thread(migrations.upgrade, settings.database_url)
    await asyncio.to_thread(imaging.warm_decoders)
    db = make_engine(settings.database_url)
    sessions = make_session_factory(db)
    spool = ResultSpool(settings.spool_path, max_items=settings.spool_max)
    blobs = await asyncio.to_thread(open_blob_store, settings)
    models = ModelManager(
        settings, sessions, on_batch=lambda tiles, _seconds: metrics.observe_batch(tiles), blobs=blobs
    )
    service = ServiceState(
        settings=settings,
        db=db,
        sessions=sessions,
        blobs=blobs,
        spool=spool,
        replayer=SpoolReplayer(spool, functools.partial(store_spooled, sessions)),
        notifier=Notifier(
            build_publishers(webhook_url=settings.webhook_url, mqtt_url=settings.mqtt_url),
            metrics=metrics,
            retries=settings.notify_retries,
        ),
        metrics=metrics,
        models=models,
        acknowledged=AcknowledgedFrames(
            settings.frame_index_path,
            max_age_s=settings.idempotency_window_s,
            max_items=settings.idempotency_max_frames,
        ),
        known_keys=KnownCameraKeys(settings.camera_keys_path),
        write_health=WriteHealth(_local_directories(settings), on_failure=metrics.storage_write_failures.inc),
        follower=ActiveModelFollower(models, interval_s=settings.model_poll_s),
    )
    metrics.watch_queue_depth(models.queue_depth)
    metrics.watch_spool(spool.depth, spool.rejected_count)
    metrics.watch_storage(lambda: service.write_health.writable)
    await _start_model(models, settings)
    service.follower.start()
    service.replayer.start()
    service.replayer.wake()  # results spooled before a restart are replayed first
    service.notifier.start()
    return service


def _local_directories(settings: Settings) -> list[Path]:
    """Where the service writes on its own disk (a blob folder only when blobs are kept locally)."""
    folders = [settings.data_dir, settings.spool_path.parent]
    if settings.blob_store == "file":
        folders.append(settings.blob_dir)
    return [folder for folder in dict.fromkeys(folders) if folder.is_dir()]


async def _start_model(models: ModelManager, settings: Settings) -> None:
    """Serve `settings.model`, else the version the database marks active, else nothing (not ready)."""
    if settings.model is not None:
        bundle = await asyncio.to_thread(open_bundle, settings.model, settings)
        await models.serve(bundle)
        try:
            await asyncio.to_thread(models.record_active, bundle)
        except (*UNAVAILABLE_ERRORS, BlobStoreUnavailable):
            log.warning(
                "database or blob store unreachable: model %s serves, recorded once they are back",
                bundle.manifest.model_version,
            )
            models.unrecorded = bundle
        return
    try:
        active = await asyncio.to_thread(models.active_bundle_from_db)
    except (*UNAVAILABLE_ERRORS, BlobStoreUnavailable):
        active = None  # the follower loads the active version once they are reachable
    if active is None:
        log.warning("no model bundle given and none active in the database: /readyz stays unavailable")
        return
    await models.serve(active)


async def _close_service(service: ServiceState) -> None:
    service.accepting = False
    await service.follower.stop()
    await service.models.stop()
    if service.spool.depth():
        try:
            await service.replayer.drain_once()
        except Exception as error:  # still down: the spool file keeps the results for the next start
            log.warning("%d results stay spooled (%s)", service.spool.depth(), type(error).__name__)
    await service.replayer.stop()
    await service.notifier.stop()
    service.spool.close()
    service.acknowledged.close()
    service.known_keys.close()
    service.db.dispose()


def _add_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    async def image_rejected(_request: Request, error: ImageRejected) -> JSONResponse:
        metrics.rejections.labels(reason=error.reason).inc()
        return JSONResponse({"detail": error.message, "reason": error.reason}, status_code=error.status)

    async def overloaded(_request: Request, error: Exception) -> JSONResponse:
        retry_after = getattr(error, "retry_after_s", 1.0)
        metrics.rejections.labels(reason=_overload_reason(error)).inc()
        return JSONResponse(
            {"detail": str(error) or "the service is overloaded"},
            status_code=503,
            headers={"Retry-After": str(max(1, round(retry_after)))},
        )

    async def database_unavailable(_request: Request, _error: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": "the database is unreachable; retry shortly"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    app.add_exception_handler(ImageRejected, image_rejected)  # type: ignore[arg-type]
    for overload in (
        QueueFull,
        DeadlineExceeded,
        EngineNotReady,
        BatcherStopped,
        ServiceUnavailable,
        BlobStoreUnavailable,
    ):
        app.add_exception_handler(overload, overloaded)
    for unavailable in UNAVAILABLE_ERRORS:
        app.add_exception_handler(unavailable, database_unavailable)


def _add_dashboard_error_pages(app: FastAPI) -> None:
    """Client errors on dashboard pages render as an HTML page; the JSON API keeps JSON bodies."""

    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        allowed = errors.allowed_methods(app, request.scope) if error.status_code == 405 else None
        if allowed is not None:
            error.headers = {**(error.headers or {}), "Allow": allowed}
        if not _wants_error_page(request, error.status_code):
            return await http_exception_handler(request, error)
        context = {
            "status_code": error.status_code,
            "title": HTTPStatus(error.status_code).phrase,
            "message": str(error.detail),
            "user": None,  # the page is shown without the operator's menu: no session lookup on errors
        }
        return TEMPLATES.TemplateResponse(
            request, "error.html", context, status_code=error.status_code, headers=error.headers
        )

    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]


def _wants_error_page(request: Request, status_code: int) -> bool:
    """A 4xx under /dashboard, unless the caller asked for JSON (the mask editor's fetch does)."""
    path = request.url.path
    on_dashboard = path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/")
    if not on_dashboard or not 400 <= status_code < 500:
        return False
    accept = request.headers.get("accept", "")
    return "text/html" in accept or "application/json" not in accept


def _overload_reason(error: Exception) -> str:
    return {
        QueueFull: "queue_full",
        PixelsInFlight: "pixels_in_flight",
        DeadlineExceeded: "deadline",
        EngineNotReady: "not_ready",
        BatcherStopped: "not_ready",
        StorageUnwritable: "storage",
    }.get(type(error), "unavailable")

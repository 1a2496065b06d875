"""Which model serves: registering bundles, activating one (a hot swap), rolling back.

The engine does the swap itself (load and warm beside the old model, switch atomically); this module
keeps the database's `model_versions` in step with it, so every listed version can be re-activated.

With several replicas the database is the truth: each registered bundle is also published to the
blob store (its key recorded on the row), and `follow_database` makes this replica serve whatever
version the database marks active, fetching the bundle when this replica has never seen it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from inspect_svc.bundle import Bundle, BundleError, load_bundle
from inspect_svc.bundle_store import BundleNotStored, fetch_bundle, publish_bundle
from inspect_svc.engine.admission import PixelGate
from inspect_svc.engine.batcher import ANONYMOUS, BatchHook
from inspect_svc.engine.inference import EngineConfig, EngineNotReady, InferenceEngine, InferenceOutput
from inspect_svc.schemas import ModelVersionPublic
from inspect_svc.settings import Settings
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.blobstore import BlobStorage
from inspect_svc.storage.db import SessionFactory, session_scope


class ModelNotFound(LookupError):
    """No registered model version has that name (or there is nothing to roll back to)."""


def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads or None,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue_tiles=settings.max_queue,
        max_camera_tiles=settings.max_queue_per_camera,
    )


def open_bundle(path: Path | str, settings: Settings) -> Bundle:
    """Load and verify a bundle; a .zip is extracted under the settings' models folder."""
    try:
        # Absolute: the database records where the bundle is, independent of the working directory.
        path = Path(path).resolve()
        is_archive = path.is_file()
    except (OSError, ValueError) as error:  # e.g. a NUL byte in a path sent to POST /models
        raise BundleError(f"{str(path)[:200]!r} is not a usable path: {error}") from None
    extract_to = settings.bundle_extract_dir / path.stem if is_archive else None
    return load_bundle(path, extract_to=extract_to)


class ModelManager:
    """The serving engine plus the model-version bookkeeping in the database.

    Args:
        settings: engine configuration and where bundles are extracted.
        sessions: database sessions for `model_versions`.
        on_batch: metrics hook handed to the engine.
        blobs: where bundles are published for other replicas; None keeps them on this machine only.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: SessionFactory,
        *,
        on_batch: BatchHook | None,
        blobs: BlobStorage | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.on_batch = on_batch
        self.blobs = blobs
        self.engine: InferenceEngine | None = None
        # A bundle served from --model while the database was away: recorded once it is back.
        self.unrecorded: Bundle | None = None
        self.pixels = PixelGate(per_camera=settings.max_pixels, total=settings.pixels_in_flight_limit)
        self._lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.ready

    @property
    def active_version(self) -> str | None:
        return self.engine.version if self.engine else None

    def queue_depth(self) -> float:
        stats = self.engine.stats if self.engine else None
        return float(stats.queue_depth_tiles) if stats else 0.0

    @property
    def tile(self) -> int:
        """The serving model's tile side: frames are padded to it (0 when none is active)."""
        return self.engine.tile if self.engine else 0

    async def infer(
        self, image_rgb: np.ndarray, *, deadline_s: float, camera: str = ANONYMOUS
    ) -> InferenceOutput:
        if self.engine is None:
            raise EngineNotReady("no model is active: start with --model or POST /models then activate one")
        return await self.engine.infer(image_rgb, deadline_s=deadline_s, camera=camera)

    async def serve(self, bundle: Bundle) -> None:
        """Make `bundle` the serving model: start the engine on it, or hot-swap to it."""
        async with self._lock:
            await self._serve_locked(bundle)

    async def _serve_locked(self, bundle: Bundle) -> None:
        if self.engine is None:
            engine = InferenceEngine(bundle, engine_config(self.settings), on_batch=self.on_batch)
            await engine.start()
            self.engine = engine
        else:
            await self.engine.swap(bundle)

    async def stop(self) -> None:
        """Refuse new frames and finish the accepted ones."""
        if self.engine is not None:
            await self.engine.stop(drain=True)

    async def register(self, path: Path | str) -> ModelVersionPublic:
        """Verify a bundle and record it as a version that can be activated.

        Raises:
            BundleError: the bundle is missing, malformed or corrupt.
        """
        bundle = await asyncio.to_thread(open_bundle, path, self.settings)
        return await asyncio.to_thread(self._record, bundle, False)

    async def activate(self, version: str) -> ModelVersionPublic:
        """Hot-swap to a registered version and mark it active.

        Raises:
            ModelNotFound: the version is not registered.
            BundleError: its files have gone or changed since registration.
            EngineError: the runtime cannot load the graph, or it disagrees with its manifest.
        """
        registered = await asyncio.to_thread(self._get, version)
        if registered is None:
            raise ModelNotFound(f"model version {version!r} is not registered")
        bundle = await asyncio.to_thread(self.local_bundle, registered)
        # Swap and record under one lock: two concurrent activations must leave the database marking
        # the version the engine ended up serving, not whichever write happened to land last.
        async with self._lock:
            await self._serve_locked(bundle)
            return await asyncio.to_thread(self._record, bundle, True)

    async def rollback(self) -> ModelVersionPublic:
        """Re-activate the version that was active before the current one.

        Raises:
            ModelNotFound: no earlier version has ever been active.
        """
        previous = await asyncio.to_thread(self._previous)
        if previous is None:
            raise ModelNotFound("no earlier model version to roll back to")
        return await self.activate(previous.version)

    def record_active(self, bundle: Bundle) -> ModelVersionPublic:
        """Register `bundle` and mark it active (start-up with --model)."""
        return self._record(bundle, True)

    def active_bundle_from_db(self) -> Bundle | None:
        """The bundle of the version the database marks active (start-up without --model)."""
        active = self._active()
        return self.local_bundle(active) if active else None

    def local_bundle(self, registered: ModelVersionPublic) -> Bundle:
        """The files of a registered version on this machine: from the blob store when it has them there.

        Raises:
            BundleError: missing or corrupt.
            BlobStoreUnavailable: the blob store cannot be reached to fetch it.
        """
        if registered.bundle_key is None or self.blobs is None:  # registered before bundles were published
            return open_bundle(registered.bundle_path, self.settings)
        try:
            return fetch_bundle(
                registered.bundle_key,
                self.blobs,
                extract_root=self.settings.bundle_extract_dir,
                version=registered.version,
            )
        except BundleNotStored:
            # A file blob store of another machine: the registered path may still be reachable from here.
            if not Path(registered.bundle_path).exists():
                raise
            return open_bundle(registered.bundle_path, self.settings)

    async def active_in_database(self) -> ModelVersionPublic | None:
        """The version the database marks active (after recording a model served while it was away).

        Raises:
            the database's errors while it is unreachable; BlobStoreUnavailable while a pending record
            cannot publish its bundle.
        """
        if self.unrecorded is not None:
            await asyncio.to_thread(self.record_active, self.unrecorded)
            self.unrecorded = None
        return await asyncio.to_thread(self._active)

    async def follow(self, active: ModelVersionPublic) -> None:
        """Serve `active` (the database's choice) if this replica serves another version.

        An activation made through another replica reaches this one here. The new bundle is fetched when
        missing, then loaded and warmed beside the serving one before the switch, so no request fails.

        Raises:
            BundleError, EngineError or BlobStoreUnavailable when it cannot be loaded here; the serving
            model stays.
        """
        if active.version == self.active_version:
            return
        bundle = await asyncio.to_thread(self.local_bundle, active)
        async with self._lock:
            # Looked at again under the lock: an activation through this replica may have won meanwhile.
            current = await asyncio.to_thread(self._active)
            if current is not None and current.version == active.version != self.active_version:
                await self._serve_locked(bundle)

    def _record(self, bundle: Bundle, activate: bool) -> ModelVersionPublic:
        """Publish `bundle` to the blob store (a no-op when it is there) and record it; mark it active if asked."""
        key = self._publish(bundle)
        with session_scope(self.sessions) as session:
            registered = repo.register_model_version(session, bundle=bundle, bundle_key=key)
            if activate:
                registered = repo.mark_model_active(session, version=registered.version)
            return registered

    def _publish(self, bundle: Bundle) -> str | None:
        if self.blobs is None:
            return None
        return publish_bundle(bundle, self.blobs, workdir=self.settings.bundle_extract_dir)

    def _active(self) -> ModelVersionPublic | None:
        with session_scope(self.sessions) as session:
            return repo.active_model_version(session)

    def _get(self, version: str) -> ModelVersionPublic | None:
        with session_scope(self.sessions) as session:
            return repo.get_model_version(session, version=version)

    def _previous(self) -> ModelVersionPublic | None:
        with session_scope(self.sessions) as session:
            return repo.previous_model_version(session)

"""The inspection pipeline behind `POST /inspect`, and the service state the routers share.

Order matters for durability: the image and map go to the blob store first, then the row (or, while
the database is unreachable, the spool). A result is answered with 200 only once both are durable; a
write the service's own disk refuses is answered with 503 and Retry-After, and the frame is not
acknowledged. The result then goes into the local index of acknowledged frames before the answer.

While the database is unreachable two local copies stand in for it: the acknowledged-frame index (a
repeated frame gets its first result, never a second one) and the camera keys (a restarted service
still knows its cameras and still refuses disabled keys).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from inspect_svc import imaging
from inspect_svc.bundle import Thresholds, utc_now
from inspect_svc.engine import regions as region_ops
from inspect_svc.metrics import ServiceMetrics
from inspect_svc.model_follower import ActiveModelFollower
from inspect_svc.model_manager import ModelManager
from inspect_svc.notify import Notifier, ResultNotice
from inspect_svc.schemas import (
    CameraPublic,
    InspectionCreate,
    InspectionPublic,
    LineThresholds,
    Region,
    ThresholdsUsed,
    Timings,
)
from inspect_svc.security import hash_api_key
from inspect_svc.settings import Settings
from inspect_svc.storage import repositories as repo
from inspect_svc.storage.blobstore import BlobNotFound, BlobStorage
from inspect_svc.storage.camera_keys import KnownCameraKeys
from inspect_svc.storage.db import UNAVAILABLE_ERRORS, Engine, Session, SessionFactory, ping, session_scope
from inspect_svc.storage.frame_index import AcknowledgedFrames
from inspect_svc.storage.spool import ResultSpool, SpoolFull, SpoolReplayer
from inspect_svc.storage.write_health import LOCAL_WRITE_ERRORS, WriteHealth

log = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")

# Line overrides and camera keys are re-read this often; within it, other workers' changes are not seen.
CACHE_TTL_S = 5.0
# The whole camera table is copied to the local key store at most this often (single keys on every read).
KEY_COPY_INTERVAL_S = 30.0
# A full or read-only disk is not fixed in a second: cameras should not hammer it.
STORAGE_RETRY_AFTER_S = 30.0
IMAGE_SUFFIX = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "tiff": ".tif"}
IMAGE_MEDIA_TYPE = {"jpeg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "tiff": "image/tiff"}


class ServiceUnavailable(RuntimeError):
    """The service cannot take this frame now (stopping, no model, spool full); clients should retry."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageUnwritable(ServiceUnavailable):
    """The service's own disk refuses writes (full, read-only, failing); the frame was not acknowledged."""


@dataclass(frozen=True)
class Frame:
    """One frame as received by `/inspect`."""

    body: bytes
    content_type: str | None
    camera_id: str
    frame_id: str | None
    line: str | None


@dataclass(frozen=True)
class Outcome:
    """The answer for a frame: `replay` when it had been inspected before."""

    inspection: InspectionPublic
    replay: bool
    map_png: bytes | None = None


@dataclass
class _Cached(Generic[V]):
    value: V
    loaded_at: float


@dataclass
class ServiceState:
    """Everything the routers need, built in the lifespan and kept on `app.state.service`."""

    settings: Settings
    db: Engine
    sessions: SessionFactory
    blobs: BlobStorage
    spool: ResultSpool
    replayer: SpoolReplayer
    notifier: Notifier
    metrics: ServiceMetrics
    models: ModelManager
    acknowledged: AcknowledgedFrames
    known_keys: KnownCameraKeys
    write_health: WriteHealth
    follower: ActiveModelFollower
    accepting: bool = True
    _line_cache: dict[str, _Cached[LineThresholds]] = field(default_factory=dict)
    _camera_cache: dict[str, _Cached[CameraPublic]] = field(default_factory=dict)
    _keys_copied_at: float = float("-inf")
    _database_down: bool = False

    # --- database access that survives an outage ----------------------------------------------------

    async def run_db(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` in a worker thread inside a committed transaction."""

        def in_session() -> T:
            with session_scope(self.sessions) as session:
                return work(session)

        return await asyncio.to_thread(in_session)

    async def database_reachable(self) -> bool:
        try:
            await asyncio.wait_for(asyncio.to_thread(ping, self.db), timeout=2.0)
            return True
        except (*UNAVAILABLE_ERRORS, asyncio.TimeoutError):
            return False

    async def camera_for_key(self, api_key: str) -> CameraPublic | None:
        """The active camera owning `api_key`; while the database is away, the local copy of the keys decides."""
        key_hash = hash_api_key(api_key)
        cached = self._camera_cache.get(key_hash)
        if cached and time.monotonic() - cached.loaded_at < CACHE_TTL_S:
            return cached.value
        try:
            camera = await asyncio.to_thread(self._camera_from_database, key_hash)
        except UNAVAILABLE_ERRORS:
            return await asyncio.to_thread(self._camera_while_database_down, key_hash, cached)
        if camera is None:
            self._camera_cache.pop(key_hash, None)
            return None
        self._camera_cache[key_hash] = _Cached(camera, time.monotonic())
        return camera

    def _camera_from_database(self, key_hash: str) -> CameraPublic | None:
        """(worker thread) Look the key up and keep the local copy current, the whole table now and then."""
        if time.monotonic() - self._keys_copied_at >= KEY_COPY_INTERVAL_S:
            with session_scope(self.sessions) as session:
                cameras = repo.cameras_by_key_hash(session)
            self._keys_copied_at = time.monotonic()
            self._keep_locally(lambda: self.known_keys.replace_all(cameras))
            camera = cameras.get(key_hash)
            return camera if camera is not None and camera.active else None
        with session_scope(self.sessions) as session:
            camera = repo.camera_for_key_hash(session, api_key_hash=key_hash)
        if camera is None:
            self._keep_locally(lambda: self.known_keys.refuse(key_hash))
        else:
            self._keep_locally(lambda: self.known_keys.remember(key_hash, camera))
        return camera

    def _camera_while_database_down(
        self, key_hash: str, cached: _Cached[CameraPublic] | None
    ) -> CameraPublic | None:
        known = self.known_keys.lookup(key_hash)
        if known is not None:
            return known if known.active else None
        if cached is not None:
            return cached.value
        raise ServiceUnavailable("the database is unreachable and this key is not known yet")

    async def line_overrides(self, line: str | None) -> LineThresholds:
        if line is None:
            return LineThresholds()
        cached = self._line_cache.get(line)
        if cached and time.monotonic() - cached.loaded_at < CACHE_TTL_S:
            return cached.value
        try:
            overrides = await self.run_db(lambda s: repo.get_line_thresholds(s, line=line))
        except UNAVAILABLE_ERRORS:
            return cached.value if cached else LineThresholds()
        self._line_cache[line] = _Cached(overrides, time.monotonic())
        return overrides

    def forget_line(self, line: str) -> None:
        """Drop a cached override after it changed, so the next frame uses the new one."""
        self._line_cache.pop(line, None)

    async def effective_thresholds(self, line: str | None, bundle_thresholds: Thresholds) -> Thresholds:
        overrides = await self.line_overrides(line)
        return bundle_thresholds.model_copy(
            update={
                "pixel": bundle_thresholds.pixel if overrides.pixel is None else overrides.pixel,
                "image": bundle_thresholds.image if overrides.image is None else overrides.image,
            }
        )

    # --- the pipeline -------------------------------------------------------------------------------

    async def inspect(self, frame: Frame, *, include_map: bool = False) -> Outcome:
        """Decode, infer, store and notify one frame; a repeated (camera, frame) returns its first result.

        Raises:
            imaging.ImageRejected: the body is not an image the service accepts.
            ServiceUnavailable: stopping, no model loaded, or the database and the spool are both unusable.
            QueueFull, DeadlineExceeded: from the engine, under overload.
        """
        if not self.accepting:
            raise ServiceUnavailable("the service is shutting down")
        started = time.perf_counter()
        if frame.frame_id is not None:
            earlier = await self._earlier_result(frame.camera_id, frame.frame_id)
            if earlier is not None:
                # Best effort: a frame first answered elsewhere (another replica) is known here from now on.
                await asyncio.to_thread(self._keep_locally, lambda: self.acknowledged.remember(earlier))
                return await self._replayed(earlier, include_map)
        try:
            record, map_png = await self._inspect_new(frame, started)
        except imaging.ImageRejected as rejected:
            if self.settings.damaged_frames != "flag" or rejected.reason not in imaging.DAMAGE_REASONS:
                raise
            damage = rejected
            record, map_png = await self._write_locally(lambda: self._damaged(frame, damage)), None
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            record.timings = Timings(
                decode_ms=elapsed_ms, queue_ms=0.0, inference_ms=0.0, total_ms=elapsed_ms
            )
        return await self._acknowledge(record, map_png if include_map else None)

    async def _inspect_new(self, frame: Frame, started: float) -> tuple[InspectionCreate, bytes]:
        """Decode, infer and write the blobs of a frame not seen before; the record is not stored yet."""
        header = await asyncio.to_thread(imaging.read_header, frame.body, frame.content_type)
        tile = self.models.tile
        imaging.check_pixel_budget(header, max_pixels=self.settings.max_pixels, tile=tile)
        # Held from decode to the written result: a camera's large frames cannot take the memory of others'.
        with self.models.pixels.hold(frame.camera_id, header.pixel_cost(tile)):
            image = await asyncio.to_thread(imaging.decode_pixels, frame.body, header)
            decode_ms = (time.perf_counter() - started) * 1000.0
            output = await self.models.infer(
                image, deadline_s=self.settings.request_timeout_s, camera=frame.camera_id
            )
            manifest = output.manifest
            thresholds = await self.effective_thresholds(frame.line, manifest.thresholds_for(frame.line))
            record, map_png = await self._write_locally(
                lambda: self._finish(
                    frame,
                    image,
                    output.prob_map,
                    output.model_version,
                    thresholds,
                    manifest.image_score.top_pixels,
                )
            )
        record.timings = Timings(
            decode_ms=decode_ms,
            queue_ms=output.timings.get("queue_ms", 0.0),
            inference_ms=output.timings.get("inference_ms", 0.0),
            total_ms=(time.perf_counter() - started) * 1000.0,
        )
        return record, map_png

    async def _acknowledge(self, record: InspectionCreate, map_png: bytes | None) -> Outcome:
        """Store a finished record (database or spool), index it, count it, notify: then it may be answered."""
        stored, replay = await self._store(record)
        # The result is durable now (row or spool): a failure to index it weakens only the recognition of
        # a repeat during a later outage, which a 503 would not restore, so the answer stands.
        indexed = await asyncio.to_thread(self._keep_locally, lambda: self.acknowledged.remember(stored))
        if indexed and not replay:
            self.write_health.succeeded()  # a new row went into the index: the disk takes writes
        self._observe(stored, replay)
        if not replay:
            self.notifier.submit(_notice(stored))
        return Outcome(repo.public_from_record(stored), replay=replay, map_png=map_png)

    async def _earlier_result(self, camera_id: str, frame_id: str) -> InspectionCreate | None:
        spooled = await asyncio.to_thread(self.spool.find, camera_id, frame_id)
        if spooled is not None:
            return spooled
        try:
            return await self.run_db(
                lambda s: repo.find_inspection(s, camera_id=camera_id, frame_id=frame_id)
            )
        except UNAVAILABLE_ERRORS:
            # Every frame this service acknowledged within the idempotency window is in the local index;
            # one that is not is new to this service and is inspected and spooled (see docs/RELIABILITY.md).
            return await asyncio.to_thread(self.acknowledged.find, camera_id, frame_id)

    async def _replayed(self, record: InspectionCreate, include_map: bool) -> Outcome:
        map_png = None
        if include_map and record.map_key:  # an invalid_image has no map
            try:
                map_png = await asyncio.to_thread(self.blobs.read, record.map_key)
            except BlobNotFound:  # pruned by retention: the result itself still stands
                log.warning("map of inspection %s is no longer stored; replying without it", record.id)
        return Outcome(repo.public_from_record(record), replay=True, map_png=map_png)

    def _finish(
        self,
        frame: Frame,
        image: np.ndarray,
        prob_map: np.ndarray,
        model_version: str,
        thresholds: Thresholds,
        top_pixels: int,
    ) -> tuple[InspectionCreate, bytes]:
        """CPU work after inference (worker thread): verdict, regions, and the blobs written durably."""
        summary = region_ops.summarize(prob_map, thresholds, top_pixels=top_pixels)
        found = region_ops.extract_regions(prob_map, thresholds.pixel, thresholds.min_region_area)
        image_format = imaging.sniff_format(frame.body) or "png"
        image_key = self.blobs.put(frame.body, suffix=IMAGE_SUFFIX[image_format])
        map_png = imaging.probability_png(prob_map)
        map_key = self.blobs.put(map_png, suffix=".png")
        record = InspectionCreate(
            id=str(uuid.uuid4()),
            camera_id=frame.camera_id,
            frame_id=frame.frame_id or uuid.uuid4().hex,
            line=frame.line,
            model_version=model_version,
            threshold=ThresholdsUsed(pixel=thresholds.pixel, image=thresholds.image),
            verdict=summary.verdict,
            score=summary.score,
            defect_area=summary.defect_area,
            width=int(image.shape[1]),
            height=int(image.shape[0]),
            timings=Timings(decode_ms=0.0, queue_ms=0.0, inference_ms=0.0, total_ms=0.0),
            regions=[
                Region(bbox=r.bbox, area=r.area, score=r.score, polygon=[(x, y) for x, y in r.polygon])
                for r in found
            ],
            image_key=image_key,
            image_media_type=IMAGE_MEDIA_TYPE[image_format],
            map_key=map_key,
            created_at=utc_now(),
        )
        return record, map_png

    def _damaged(self, frame: Frame, error: imaging.ImageRejected) -> InspectionCreate:
        """(worker thread) The record of a damaged frame: the body kept as received, no score and no map.

        The size is the header's when it could be read (0 x 0 for a truncated file or an unreadable header);
        the serving model and its thresholds for the line are noted, for the record.
        """
        try:
            header: imaging.ImageHeader | None = imaging.read_header(frame.body, frame.content_type)
        except imaging.ImageRejected:
            header = None
        image_format = imaging.sniff_format(frame.body) or "png"
        engine = self.models.engine
        manifest = engine.manifest if engine is not None else None
        thresholds = manifest.thresholds_for(frame.line) if manifest is not None else None
        log.warning(
            "damaged frame %s/%s recorded as invalid_image: %s",
            frame.camera_id,
            frame.frame_id,
            error.message,
        )
        return InspectionCreate(
            id=str(uuid.uuid4()),
            camera_id=frame.camera_id,
            frame_id=frame.frame_id or uuid.uuid4().hex,
            line=frame.line,
            model_version=self.models.active_version or "",
            threshold=ThresholdsUsed(
                pixel=thresholds.pixel if thresholds else 0.0, image=thresholds.image if thresholds else 0.0
            ),
            verdict="invalid_image",
            score=0.0,
            defect_area=0,
            width=header.width if header else 0,
            height=header.height if header else 0,
            timings=Timings(decode_ms=0.0, queue_ms=0.0, inference_ms=0.0, total_ms=0.0),
            regions=[],
            image_key=self.blobs.put(frame.body, suffix=IMAGE_SUFFIX[image_format]),
            image_media_type=IMAGE_MEDIA_TYPE[image_format],
            map_key="",
            created_at=utc_now(),
        )

    async def _store(self, record: InspectionCreate) -> tuple[InspectionCreate, bool]:
        """Insert, or spool while the database is away. Returns the stored record and whether it was earlier."""
        try:
            inserted = await self.run_db(lambda s: repo.insert_inspection(s, inspection=record))
        except UNAVAILABLE_ERRORS as error:
            self._note_database(error)
            return await self._spool(record)
        self._note_database(None)
        if inserted:
            return record, False
        # A concurrent request for the same frame won the race: answer with its result.
        earlier = await self._earlier_result(record.camera_id, record.frame_id)
        return (earlier, True) if earlier is not None else (record, False)

    async def _spool(self, record: InspectionCreate) -> tuple[InspectionCreate, bool]:
        try:
            spooled = await self._write_locally(lambda: self.spool.add(record))
        except SpoolFull as error:
            raise ServiceUnavailable(str(error), retry_after_s=30.0) from None
        self.metrics.spooled.inc()
        self.replayer.wake()
        return spooled, spooled.id != record.id

    def _note_database(self, error: BaseException | None) -> None:
        """One log line when writes start going to the spool, one when they reach the database again."""
        down = error is not None
        if down and not self._database_down:
            log.warning("database unreachable (%s); results go to the outage spool", type(error).__name__)
        elif not down and self._database_down:
            log.info("database reachable again; results are stored directly")
        self._database_down = down

    async def _write_locally(self, work: Callable[[], T]) -> T:
        """Run a write to the service's own disk in a worker thread; a refused write becomes a 503."""
        try:
            return await asyncio.to_thread(work)
        except LOCAL_WRITE_ERRORS as error:
            self.write_health.failed(error)
            raise StorageUnwritable(
                "the service cannot write to its data directory (full or read-only); the frame was not stored",
                retry_after_s=STORAGE_RETRY_AFTER_S,
            ) from None

    def _keep_locally(self, work: Callable[[], object]) -> bool:
        """(worker thread) A write to a local copy that the answer does not depend on: a failure is noted only."""
        try:
            work()
        except LOCAL_WRITE_ERRORS as error:
            self.write_health.failed(error)
            return False
        return True

    def _observe(self, record: InspectionCreate, replay: bool) -> None:
        if replay:
            return
        timings = record.timings
        log.info(
            "inspected %s/%s: %s %.3f (%.0f ms)",
            record.camera_id,
            record.frame_id,
            record.verdict,
            record.score,
            timings.total_ms,
            extra={
                "inspection_id": record.id,
                "camera_id": record.camera_id,
                "frame_id": record.frame_id,
                "line": record.line,
                "model_version": record.model_version,
                "verdict": record.verdict,
                "score": round(record.score, 4),
                "decode_ms": round(timings.decode_ms, 1),
                "queue_ms": round(timings.queue_ms, 1),
                "inference_ms": round(timings.inference_ms, 1),
                "total_ms": round(timings.total_ms, 1),
            },
        )
        self.metrics.verdicts.labels(verdict=record.verdict).inc()
        self.metrics.queue_seconds.observe(record.timings.queue_ms / 1000.0)
        self.metrics.inference_seconds.observe(record.timings.inference_ms / 1000.0)
        self.metrics.total_seconds.observe(record.timings.total_ms / 1000.0)

    # --- reads that fall back to the spool ------------------------------------------------------------

    async def inspection_public(self, inspection_id: str) -> InspectionPublic | None:
        """A stored or spooled inspection as the API shows it."""
        spooled = await asyncio.to_thread(self.spool.get, inspection_id)
        if spooled is not None:
            return repo.public_from_record(spooled)
        return await self.run_db(lambda s: repo.get_inspection(s, inspection_id=inspection_id))

    async def inspection_record(self, inspection_id: str) -> InspectionCreate | None:
        """A stored or spooled inspection record."""
        spooled = await asyncio.to_thread(self.spool.get, inspection_id)
        if spooled is not None:
            return spooled
        return await self.run_db(lambda s: repo.get_inspection_record(s, inspection_id=inspection_id))


def store_spooled(sessions: SessionFactory, record: InspectionCreate) -> bool:
    """The replayer's writer (worker thread): insert a spooled record; a frame already stored is left as is."""
    with session_scope(sessions) as session:
        if repo.insert_inspection(session, inspection=record):
            return True
        stored = repo.find_inspection(session, camera_id=record.camera_id, frame_id=record.frame_id)
    if stored is not None and stored.id != record.id:
        # Only possible when the first answer is unknown here (another replica's, or older than the
        # idempotency window): the database keeps the first row, and the mismatch is at least visible.
        log.error(
            "frame %s/%s was answered twice during the outage: %s is kept, spooled %s is dropped",
            record.camera_id,
            record.frame_id,
            stored.id,
            record.id,
        )
    return False


def _notice(record: InspectionCreate) -> ResultNotice:
    return ResultNotice(
        inspection_id=record.id,
        camera_id=record.camera_id,
        frame_id=record.frame_id,
        line=record.line,
        verdict=record.verdict,
        score=record.score,
        model_version=record.model_version,
    )

"""The engine the API calls: the active model, its batcher, and hot swaps between models.

A model lives in a `_ModelSlot` (predictor + batcher). A request pins the slot it started on, so it
is tiled, batched and stitched by one model even if a swap happens meanwhile. A swap loads and
warms the new model beside the old one, switches the reference atomically (one assignment on the
event loop), then lets the old slot finish its in-flight requests before stopping it: no request
fails because of a swap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from inspect_svc.bundle import Bundle, BundleManifest
from inspect_svc.engine.batcher import ANONYMOUS, BatcherStats, BatchHook, DynamicBatcher
from inspect_svc.engine.predictor import DEFAULT_MAX_BATCH, Predictor

logger = logging.getLogger(__name__)

# Frames up to this many pixels are tiled and stitched on the event loop: the work is well under a
# millisecond, cheaper than the hop to a thread. Larger frames go to a thread so the loop stays free.
INLINE_PIXELS = 512 * 512


class EngineNotReady(RuntimeError):
    """No model is loaded and warmed (starting up, or shutting down)."""


@dataclass(frozen=True)
class EngineConfig:
    """How models are run; shared by every model the engine loads."""

    providers: Sequence[str] | None = None
    intra_op_threads: int | None = None
    max_batch: int = DEFAULT_MAX_BATCH
    max_wait_ms: float = 2.0
    max_queue_tiles: int = 512
    max_camera_tiles: int | None = None  # one camera's queue bound; None: max_queue_tiles


@dataclass(frozen=True)
class InferenceOutput:
    """One frame's result.

    Attributes:
        prob_map: float32 [H, W] defect probability at the frame's resolution.
        model_version: the model that produced it.
        manifest: that model's manifest (its thresholds are the defaults for this result).
        timings: milliseconds spent in preprocess, queue, inference and postprocess.
    """

    prob_map: np.ndarray
    model_version: str
    manifest: BundleManifest
    timings: dict[str, float] = field(default_factory=dict)


class _ModelSlot:
    """A predictor with its batcher, and a count of the requests using them."""

    def __init__(self, predictor: Predictor, batcher: DynamicBatcher) -> None:
        self.predictor = predictor
        self.batcher = batcher
        self.active_requests = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active_requests += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active_requests -= 1
        if self.active_requests == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


class InferenceEngine:
    """Serves one active model through a dynamic batcher and swaps models without failing requests.

    Args:
        bundle: the model to start with.
        config: providers, threads and batching limits.
        on_batch: metrics hook called with (tiles, seconds) after every batch.
    """

    def __init__(
        self, bundle: Bundle, config: EngineConfig | None = None, *, on_batch: BatchHook | None = None
    ):
        self.config = config or EngineConfig()
        self.on_batch = on_batch
        self._initial_bundle = bundle
        self._slot: _ModelSlot | None = None
        self._accepting = False
        self._swap_lock = asyncio.Lock()

    @property
    def ready(self) -> bool:
        """True once a model is loaded and warmed, until shutdown begins."""
        return self._accepting and self._slot is not None

    @property
    def version(self) -> str | None:
        return self._slot.predictor.version if self._slot else None

    @property
    def manifest(self) -> BundleManifest | None:
        return self._slot.predictor.manifest if self._slot else None

    @property
    def stats(self) -> BatcherStats | None:
        return self._slot.batcher.stats if self._slot else None

    @property
    def tile(self) -> int:
        """The serving model's tile side (0 when none is loaded)."""
        return self._slot.predictor.tile if self._slot else 0

    @property
    def predictor(self) -> Predictor | None:
        return self._slot.predictor if self._slot else None

    async def start(self) -> None:
        """Load and warm the initial model (in a thread), then accept requests."""
        if self._slot is None:
            self._slot = await self._open_slot(self._initial_bundle)
        self._accepting = True

    async def stop(self, drain: bool = True) -> None:
        """Refuse new requests; with `drain`, finish the accepted ones before stopping.

        A swap in progress completes first, so the model it installs is stopped too rather than
        left serving (with its worker thread) after the engine has stopped.
        """
        self._accepting = False
        async with self._swap_lock:
            slot, self._slot = self._slot, None
            if slot is None:
                return
            if drain:
                await slot.wait_idle()
            await slot.batcher.stop(drain=drain)

    async def swap(self, bundle: Bundle) -> str | None:
        """Make `bundle` the active model; returns the version it replaced.

        The new model is loaded and warmed first; if that fails, the old one keeps serving and the
        error propagates.
        """
        async with self._swap_lock:
            new_slot = await self._open_slot(bundle)
            old_slot, self._slot = self._slot, new_slot
            if old_slot is None:
                return None
            logger.info("model %s replaces %s", new_slot.predictor.version, old_slot.predictor.version)
            await old_slot.wait_idle()
            await old_slot.batcher.stop(drain=True)
            return old_slot.predictor.version

    async def infer(
        self, image_rgb: np.ndarray, *, deadline_s: float, camera: str = ANONYMOUS
    ) -> InferenceOutput:
        """Defect probability map of a uint8 RGB [H, W, 3] frame.

        Args:
            image_rgb: the decoded frame.
            deadline_s: seconds from now after which the request gives up.
            camera: whose frame it is: the batcher shares the model fairly among cameras.

        Raises:
            EngineNotReady: no model is serving.
            QueueFull: the queue is saturated (answer 503 with Retry-After).
            DeadlineExceeded: the deadline passed.
        """
        deadline = time.monotonic() + deadline_s
        slot = self._slot
        if not self._accepting or slot is None:
            raise EngineNotReady("the inference engine is not ready")
        slot.enter()
        try:
            return await self._infer_on(slot, image_rgb, deadline, camera)
        finally:
            slot.leave()

    async def _infer_on(
        self, slot: _ModelSlot, image_rgb: np.ndarray, deadline: float, camera: str
    ) -> InferenceOutput:
        predictor = slot.predictor
        height, width = image_rgb.shape[:2]
        # Refused before tiling, so a camera over its share costs no tile memory.
        slot.batcher.check_room(predictor.tile_count(height, width), camera)
        inline = height * width <= INLINE_PIXELS
        started = time.perf_counter()
        if inline:
            tiles, plan = predictor.tile_pixels(image_rgb)
        else:
            tiles, plan = await asyncio.to_thread(predictor.tile_pixels, image_rgb)
        preprocessed = time.perf_counter()
        result = await slot.batcher.submit_timed(tiles, deadline, camera)
        inferred = time.perf_counter()
        if inline:
            prob_map = predictor.postprocess(result.probs, plan)
        else:
            prob_map = await asyncio.to_thread(predictor.postprocess, result.probs, plan)
        finished = time.perf_counter()
        timings = {
            "preprocess_ms": (preprocessed - started) * 1000.0,
            "queue_ms": result.queue_ms,
            "inference_ms": result.inference_ms,
            "postprocess_ms": (finished - inferred) * 1000.0,
            "engine_total_ms": (finished - started) * 1000.0,
        }
        return InferenceOutput(prob_map, predictor.version, predictor.manifest, timings)

    async def _open_slot(self, bundle: Bundle) -> _ModelSlot:
        predictor = await asyncio.to_thread(self._load_predictor, bundle)
        batcher = DynamicBatcher(
            predictor,
            max_wait_ms=self.config.max_wait_ms,
            max_queue_tiles=self.config.max_queue_tiles,
            max_camera_tiles=self.config.max_camera_tiles,
            on_batch=self.on_batch,
        )
        await batcher.start()
        return _ModelSlot(predictor, batcher)

    def _load_predictor(self, bundle: Bundle) -> Predictor:
        predictor = Predictor(
            bundle,
            providers=self.config.providers,
            intra_op_threads=self.config.intra_op_threads,
            max_batch=self.config.max_batch,
        )
        started = time.perf_counter()
        predictor.warmup()
        logger.info(
            "model %s loaded on %s and warmed (batches %s) in %.2f s",
            predictor.version,
            predictor.providers,
            predictor.buckets,
            time.perf_counter() - started,
        )
        return predictor

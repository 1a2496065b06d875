"""Dynamic batching: tiles from concurrent requests share one `session.run`, cameras share the engine fairly.

Requests put their tiles on their camera's queue and await a future. One asyncio task forms batches
(up to `max_batch` tiles, waiting at most `max_wait_ms` for a batch to fill) and hands them to a
single worker thread, the only caller of the model, so ORT never sees concurrent runs. A large
frame's tiles may be spread over several batches; its future resolves when the last of them is done.

Fairness (max-min, by tiles): each camera's recent use of the engine is counted (tiles run, fading
by `USAGE_DECAY` per batch), and every batch is filled by the cameras with queued tiles in order of
least recent use. A camera using less than its share of the engine is served first, so a camera with
a backlog of hundreds of tiles delays another camera's frame by at most the batch already running,
never by its backlog; cameras that all want more than their share alternate, each getting an equal
part over time.

Backpressure is explicit: a camera whose own queue is full, or one above its fair share of a full
queue, gets `QueueFull` at once (the API answers 503 with Retry-After) rather than letting waits grow
without bound, and every request carries a deadline. A request that gives up (deadline, disconnect)
takes its tiles out of the queue at once, so Retry-After estimates count only live work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

logger = logging.getLogger(__name__)

BatchHook = Callable[[int, float], None]


class TileRunner(Protocol):
    """What the batcher runs: `Predictor` satisfies it."""

    @property
    def max_batch(self) -> int: ...

    def run_tiles(self, tiles: np.ndarray) -> np.ndarray: ...


class QueueFull(RuntimeError):
    """The queue holds as many tiles as allowed; retry after `retry_after_s` seconds."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"the inference queue is full; retry in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before all its tiles were inferred."""


class BatcherStopped(RuntimeError):
    """The batcher is stopping or stopped and accepts no new work."""


@dataclass(frozen=True)
class TileResult:
    """Probabilities for one request's tiles, with where its time went."""

    probs: np.ndarray
    queue_ms: float  # from submission to the start of its first batch
    inference_ms: float  # summed run time of the batches that carried its tiles


@dataclass(frozen=True)
class BatcherStats:
    queue_depth_tiles: int
    queued_requests: int
    last_batch_size: int
    batches_run: int
    tiles_run: int


# Requests that name no camera share this queue.
ANONYMOUS = ""
# Per batch, a camera's counted use keeps this fraction: use older than ~10 batches hardly counts.
USAGE_DECAY = 0.9
_FORGOTTEN_USAGE = 0.01  # below this (and nothing queued) a camera is dropped from the books


@dataclass(eq=False)
class _Job:
    tiles: np.ndarray
    camera: str
    future: asyncio.Future[TileResult]
    deadline: float
    enqueued_at: float
    probs: np.ndarray
    taken: int = 0  # tiles handed to batches (or withdrawn) so far
    finished: int = 0  # tiles whose probabilities are in `probs`
    first_batch_at: float | None = None
    inference_s: float = 0.0

    @property
    def remaining(self) -> int:
        return len(self.tiles) - self.taken


@dataclass(frozen=True)
class _Segment:
    """A contiguous run of one job's tiles inside a batch."""

    job: _Job
    start: int
    stop: int


@dataclass
class _Counters:
    last_batch_size: int = 0
    batches_run: int = 0
    tiles_run: int = 0
    seconds_per_batch: float = 0.0  # moving average, for the Retry-After estimate
    in_flight: list[_Segment] = field(default_factory=list)


class DynamicBatcher:
    """Groups tiles of concurrent requests into batches for one model, sharing each batch among cameras.

    Args:
        runner: runs a batch of tiles ([n, 3, T, T] -> [n, T, T]); usually a `Predictor`.
        max_batch: most tiles per run; defaults to the runner's own.
        max_wait_ms: longest time the oldest queued tile waits for a batch to fill.
        max_queue_tiles: tiles allowed in the queue over all cameras; beyond it, a camera is refused
            once it holds its fair share (this bound divided among the cameras waiting).
        max_camera_tiles: tiles one camera may have queued; defaults to `max_queue_tiles`. One request
            larger than this is still accepted when its camera has nothing queued, so a big frame is
            slow rather than refused forever.
        on_batch: called with (tiles in the batch, seconds it ran) after every batch, for metrics.
    """

    def __init__(
        self,
        runner: TileRunner,
        *,
        max_batch: int | None = None,
        max_wait_ms: float = 2.0,
        max_queue_tiles: int = 512,
        max_camera_tiles: int | None = None,
        on_batch: BatchHook | None = None,
    ) -> None:
        self.runner = runner
        self.max_batch = max_batch or runner.max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_tiles = max_queue_tiles
        self.max_camera_tiles = max_camera_tiles or max_queue_tiles
        self.on_batch = on_batch
        # One queue per camera with queued work, in order of arrival (which breaks ties of use).
        self._queues: dict[str, deque[_Job]] = {}
        self._usage: dict[str, float] = {}  # tiles run per camera, fading with USAGE_DECAY per batch
        self._camera_tiles: dict[str, int] = {}
        self._queued_tiles = 0
        self._wakeup = asyncio.Event()
        self._counters = _Counters()
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._accepting = False
        self._draining = False

    @property
    def stats(self) -> BatcherStats:
        return BatcherStats(
            queue_depth_tiles=self._queued_tiles,
            queued_requests=sum(len(queue) for queue in self._queues.values()),
            last_batch_size=self._counters.last_batch_size,
            batches_run=self._counters.batches_run,
            tiles_run=self._counters.tiles_run,
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the batching task and its worker thread."""
        if self.running:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._accepting, self._draining = True, False
        self._task = asyncio.create_task(self._serve(), name="dynamic-batcher")

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting work; with `drain`, finish everything already accepted first.

        Without `drain`, queued and running requests fail with `BatcherStopped`.
        """
        self._accepting = False
        if self._task is not None:
            if drain:
                self._draining = True
                self._wakeup.set()
                await self._task
            else:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
                self._fail_everything(BatcherStopped("the inference engine stopped"))
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def check_room(self, count: int, camera: str = ANONYMOUS) -> None:
        """Raise `QueueFull` if `count` tiles from `camera` would be refused now (call before tiling a
        frame, so a refused frame costs no tiling memory); `submit` checks again."""
        if not self._accepting:
            raise BatcherStopped("the inference engine is not accepting requests")
        own = self._camera_tiles.get(camera, 0)
        if own and own + count > self.max_camera_tiles:
            # Its own backlog drains at its share of every batch while others are waiting too.
            raise QueueFull(self._retry_after(own * max(len(self._queues), 1)))
        queue_full = self._queued_tiles and self._queued_tiles + count > self.max_queue_tiles
        if queue_full and own + count > self._fair_share(camera):
            raise QueueFull(self._retry_after(self._queued_tiles))

    async def submit(self, tiles: np.ndarray, deadline: float, camera: str = ANONYMOUS) -> np.ndarray:
        """Probabilities [n, T, T] for tiles [n, 3, T, T]; `deadline` is a `time.monotonic()` instant.

        Raises:
            QueueFull: the queue has no room for these tiles.
            DeadlineExceeded: the deadline passed first.
            BatcherStopped: the batcher is not accepting work.
        """
        return (await self.submit_timed(tiles, deadline, camera)).probs

    async def submit_timed(self, tiles: np.ndarray, deadline: float, camera: str = ANONYMOUS) -> TileResult:
        """`submit`, also reporting the request's queue and inference time."""
        count = len(tiles)
        self.check_room(count, camera)
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineExceeded("the deadline passed before the request was queued")
        if count == 0:
            return TileResult(
                probs=np.empty((0, *tiles.shape[2:]), np.float32), queue_ms=0.0, inference_ms=0.0
            )
        job = _Job(
            tiles=tiles,
            camera=camera,
            future=asyncio.get_running_loop().create_future(),
            deadline=deadline,
            enqueued_at=now,
            probs=np.empty((count, *tiles.shape[2:]), dtype=np.float32),
        )
        self._queues.setdefault(camera, deque()).append(job)
        self._camera_tiles[camera] = self._camera_tiles.get(camera, 0) + count
        self._queued_tiles += count
        self._wakeup.set()
        try:
            # On timeout or cancellation wait_for cancels the job's future.
            return await asyncio.wait_for(job.future, timeout=deadline - now)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(
                f"no result within the deadline ({(deadline - now) * 1000:.0f} ms)"
            ) from None
        finally:
            # Given up (deadline, client gone): its tiles leave the queue now, not when the batcher
            # reaches them, so nobody's Retry-After counts them meanwhile.
            self._withdraw(job)

    async def _serve(self) -> None:
        while await self._batch_due():
            segments = self._take_batch()
            if segments:
                await self._execute(segments)

    async def _batch_due(self) -> bool:
        """Wait until a batch should be formed: it is full, or its oldest tile waited max_wait.

        Returns False when draining and nothing is left.
        """
        while not self._queues:
            if self._draining:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        fill_by = min(queue[0].enqueued_at for queue in self._queues.values()) + self.max_wait_s
        while self._queued_tiles < self.max_batch and not self._draining:
            remaining = fill_by - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                break
        return True

    def _take_batch(self) -> list[_Segment]:
        """Fill a batch from the cameras with queued tiles, least recent use first, then charge their use."""
        segments: list[_Segment] = []
        room = self.max_batch
        for camera in sorted(
            self._queues, key=lambda name: self._usage.get(name, 0.0)
        ):  # stable: ties by arrival
            if room == 0:
                break
            room -= self._take_from(camera, room, segments)
        self._charge(segments)
        return segments

    def _charge(self, segments: list[_Segment]) -> None:
        for camera in list(self._usage):
            faded = self._usage[camera] * USAGE_DECAY
            if faded < _FORGOTTEN_USAGE and camera not in self._queues:
                del self._usage[camera]
            else:
                self._usage[camera] = faded
        for segment in segments:
            camera = segment.job.camera
            self._usage[camera] = self._usage.get(camera, 0.0) + segment.stop - segment.start

    def _take_from(self, camera: str, share: int, segments: list[_Segment]) -> int:
        """Up to `share` tiles from the head of `camera`'s queue, dropping given-up or expired jobs."""
        now = time.monotonic()
        queue = self._queues[camera]
        taken = 0
        while queue and taken < share:
            job = queue[0]
            if job.future.done() or job.deadline <= now:
                if not job.future.done():
                    job.future.set_exception(
                        DeadlineExceeded("the deadline passed while the request was queued")
                    )
                self._withdraw(job)
                continue
            take = min(share - taken, job.remaining)
            segments.append(_Segment(job, job.taken, job.taken + take))
            self._count_out(job, take)
            taken += take
            if job.remaining == 0:
                queue.popleft()
        if not queue:
            self._queues.pop(camera, None)
        return taken

    def _count_out(self, job: _Job, tiles: int) -> None:
        job.taken += tiles
        self._queued_tiles -= tiles
        left = self._camera_tiles[job.camera] - tiles
        if left:
            self._camera_tiles[job.camera] = left
        else:
            del self._camera_tiles[job.camera]

    def _withdraw(self, job: _Job) -> None:
        """Take a job's untaken tiles out of the queue (idempotent: a job with none left is not queued)."""
        if job.remaining == 0:
            return
        queue = self._queues.get(job.camera)
        if queue is not None:
            queue.remove(job)
            if not queue:
                del self._queues[job.camera]
        self._count_out(job, job.remaining)

    def _fair_share(self, camera: str) -> int:
        waiting = len(self._queues) + (0 if camera in self._queues else 1)
        return self.max_queue_tiles // waiting

    async def _execute(self, segments: list[_Segment]) -> None:
        started = time.monotonic()
        for segment in segments:
            if segment.job.first_batch_at is None:
                segment.job.first_batch_at = started
        # Kept while running so that stop(drain=False), which cancels this task, can fail these jobs too.
        self._counters.in_flight = segments
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, _run_segments, self.runner, segments
            )
        except Exception as error:  # the model failed: every request in the batch learns why
            self._counters.in_flight = []
            logger.exception("inference batch of %d tiles failed", sum(s.stop - s.start for s in segments))
            for segment in segments:
                if not segment.job.future.done():
                    segment.job.future.set_exception(error)
            return
        self._counters.in_flight = []
        self._record_batch(segments, time.monotonic() - started)

    def _record_batch(self, segments: list[_Segment], seconds: float) -> None:
        size = sum(segment.stop - segment.start for segment in segments)
        counters = self._counters
        counters.last_batch_size = size
        counters.batches_run += 1
        counters.tiles_run += size
        counters.seconds_per_batch = (
            seconds if counters.batches_run == 1 else 0.8 * counters.seconds_per_batch + 0.2 * seconds
        )
        for segment in segments:
            job = segment.job
            job.finished += segment.stop - segment.start
            job.inference_s += seconds
            if job.finished == len(job.tiles) and not job.future.done():
                queue_s = (job.first_batch_at or job.enqueued_at) - job.enqueued_at
                job.future.set_result(TileResult(job.probs, queue_s * 1000.0, job.inference_s * 1000.0))
        if self.on_batch is not None:
            try:
                self.on_batch(size, seconds)
            except Exception:  # a metrics hook must never break inference
                logger.exception("on_batch hook failed")

    def _fail_everything(self, error: Exception) -> None:
        queued = [job for queue in self._queues.values() for job in queue]
        for job in [segment.job for segment in self._counters.in_flight] + queued:
            if not job.future.done():
                job.future.set_exception(error)
        for job in queued:
            self._withdraw(job)
        self._counters.in_flight = []

    def _retry_after(self, tiles_ahead: int) -> float:
        """Seconds until `tiles_ahead` live tiles have run, at the recent time per batch (at least 1)."""
        batches_ahead = math.ceil(tiles_ahead / self.max_batch)
        return max(1.0, math.ceil(batches_ahead * self._counters.seconds_per_batch))


def _run_segments(runner: TileRunner, segments: list[_Segment]) -> None:
    """Worker-thread side of a batch: gather tiles, run the model, scatter results into each job."""
    parts = [segment.job.tiles[segment.start : segment.stop] for segment in segments]
    batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
    probs = runner.run_tiles(batch)
    offset = 0
    for segment in segments:
        count = segment.stop - segment.start
        segment.job.probs[segment.start : segment.stop] = probs[offset : offset + count]
        offset += count

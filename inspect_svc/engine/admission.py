"""Admission by pixels: how much image one camera, and all cameras together, may have in memory at once.

A frame costs memory from its decode until its result is written: the RGB frame, its tiles and
their probabilities, the stitched map. The batcher bounds queued *tiles*; this gate bounds the
*pixels* being decoded, queued, inferred or stitched, before any of that memory is spent. A camera
may hold at most `per_camera` pixels (one frame of any allowed size always fits when it holds none),
and all cameras together at most `total`, so a camera flooding large frames meets its own limit
while the others keep the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from inspect_svc.engine.batcher import QueueFull


class PixelsInFlight(QueueFull):
    """Too many pixels are already being processed for this camera, or in total; retry shortly."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        RuntimeError.__init__(self, message)
        self.retry_after_s = retry_after_s


class PixelGate:
    """Counts the pixels of the frames in flight, per camera and in total.

    Args:
        per_camera: pixels one camera may have in flight.
        total: pixels all cameras together may have in flight; at least `per_camera`.
    """

    def __init__(self, *, per_camera: int, total: int) -> None:
        if per_camera <= 0 or total < per_camera:
            raise ValueError(f"need 0 < per_camera <= total, got per_camera={per_camera}, total={total}")
        self.per_camera = per_camera
        self.total = total
        self._held: dict[str, int] = {}
        self._total_held = 0

    @property
    def pixels_in_flight(self) -> int:
        return self._total_held

    @contextmanager
    def hold(self, camera: str, pixels: int) -> Iterator[None]:
        """Hold `pixels` for `camera` for the duration of the block.

        Raises:
            PixelsInFlight: the camera's or the total budget has no room (and is not empty).
        """
        own = self._held.get(camera, 0)
        if own and own + pixels > self.per_camera:
            raise PixelsInFlight(
                f"camera {camera!r} already has {own} pixels in flight (at most {self.per_camera}); retry shortly"
            )
        if self._total_held and self._total_held + pixels > self.total:
            raise PixelsInFlight(f"the service has {self._total_held} pixels in flight; retry shortly")
        self._held[camera] = own + pixels
        self._total_held += pixels
        try:
            yield
        finally:
            self._total_held -= pixels
            left = self._held[camera] - pixels
            if left:
                self._held[camera] = left
            else:
                del self._held[camera]

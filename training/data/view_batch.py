"""The batch of multi-crop views that pretraining consumes, whichever way it was decoded."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class ViewBatch:
    """A batch of views, view-major so that each view kind is one contiguous block.

    Attributes:
        global_crops: `[G, B, 3, Sg, Sg]` uint8.
        local_crops: `[L, B, 3, Sl, Sl]` uint8.
        teacher_points: `[G, B, V·k, 2]`: the reference points of global view g, pair-major (j, m).
        student_points: `[V, B, G·k, 2]`: the reference points of view j, pair-major (g, m).
        skipped: Paths of unreadable files met while building the batch.
    """

    global_crops: torch.Tensor
    local_crops: torch.Tensor
    teacher_points: torch.Tensor
    student_points: torch.Tensor
    skipped: list[str]

    def _map(self, fn) -> ViewBatch:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return ViewBatch(**{k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()})

    def pin_memory(self) -> ViewBatch:
        """Called by the DataLoader when `pin_memory=True`."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device) -> ViewBatch:
        return self._map(lambda t: t.to(device, non_blocking=True))

    @property
    def batch_size(self) -> int:
        return self.global_crops.shape[1]

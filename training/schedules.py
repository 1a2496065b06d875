"""Per-step schedules, precomputed as arrays (easy to log, test and resume: index by step)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_schedule(
    start: float, end: float, total_steps: int, warmup_steps: int = 0, warmup_from: float = 0.0
) -> np.ndarray:
    """Linear warm-up from `warmup_from` to `start`, then a cosine from `start` to `end`."""
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(warmup_from, start, warmup_steps, endpoint=False)
    remaining = total_steps - warmup_steps
    progress = np.arange(remaining) / max(remaining - 1, 1)
    cosine = end + 0.5 * (start - end) * (1 + np.cos(np.pi * progress))
    return np.concatenate([warmup, cosine])


@dataclass(frozen=True)
class TrainingSchedules:
    """Learning rate, weight decay and teacher EMA momentum for every step."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray

    @classmethod
    def build(
        cls,
        *,
        total_steps: int,
        warmup_steps: int,
        lr: float,
        min_lr: float,
        weight_decay: tuple[float, float],
        momentum: tuple[float, float],
    ) -> TrainingSchedules:
        return cls(
            lr=cosine_schedule(lr, min_lr, total_steps, warmup_steps),
            weight_decay=cosine_schedule(weight_decay[0], weight_decay[1], total_steps),
            momentum=cosine_schedule(momentum[0], momentum[1], total_steps),
        )

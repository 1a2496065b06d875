"""Seeded, deterministic splits of a list of samples."""

from __future__ import annotations

import numpy as np


def holdout_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held-out) indices: a seeded permutation, at least one of each when `count` ≥ 2."""
    if count < 2:
        return list(range(count)), []
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(1, round(count * fraction)), count - 1)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())

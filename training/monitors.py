"""Collapse monitors and the per-run metrics file."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def effective_rank(features: torch.Tensor) -> float:
    """exp(entropy of the normalized singular values) of centered `[n, d]` features.

    1 means every sample lies on one line (collapse); up to min(n, d) when spread evenly.
    """
    centered = features.float() - features.float().mean(dim=0, keepdim=True)
    singular = torch.linalg.svdvals(centered)
    weights = singular / singular.sum().clamp_min(1e-12)
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum()
    return float(math.exp(entropy.item()))


class MetricsLog:
    """Appends one JSON object per logged step to RUN/metrics.jsonl (appending keeps resumed runs whole)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


class Throughput:
    """Images per second between two log points (call `rate` only where the host syncs anyway)."""

    def __init__(self) -> None:
        self._since, self._images = time.perf_counter(), 0

    def add(self, images: int) -> None:
        self._images += images

    def rate(self) -> float:
        now = time.perf_counter()
        value = self._images / max(now - self._since, 1e-9)
        self._since, self._images = now, 0
        return value

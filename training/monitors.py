"""Collapse monitors and the per-run metrics file."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
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


# A teacher distribution this close to uniform (as a share of log K) carries no information: the
# centering has won over the sharpening, every view gets the same target and the loss sits at log K.
UNIFORM_ENTROPY_SHARE = 0.99
# SimDINO embeddings are unit vectors in p dimensions, whose per-dimension std is about 1/sqrt(p) when
# spread over the sphere; a tenth of that means the whole batch points one way.
COLLAPSED_STD_SHARE = 0.1
# The monitors are judged on the last quarter of the run, not on its (legitimately chaotic) start.
JUDGED_SHARE = 0.25
METRICS_FILE = "metrics.jsonl"
_LAYER_SCALE_ADVICE = (
    "If the architecture starts its LayerScale tiny (test_vit3: 1e-5), give --layer-scale-init 1.0; "
)


def collapse_warnings(
    records: Sequence[dict[str, Any]],
    *,
    prototypes: dict[str, int],
    projection_dim: int,
) -> list[str]:
    """What the collapse monitors of a finished run say, in sentences a user can act on.

    Args:
        records: The run's metrics.jsonl rows, in step order.
        prototypes: Prototype count per DINO level (`{"image": K, "point": K_point}`); empty for SimDINO.
        projection_dim: Dimension p of SimDINO's embeddings.

    Returns:
        One warning per collapsed level; empty when the monitors look healthy (or nothing was logged).
    """
    if not records:
        return []
    judged = records[-max(1, math.ceil(JUDGED_SHARE * len(records))) :]
    warnings = []
    for level, count in prototypes.items():
        entropy = _mean(judged, f"teacher_entropy_{level}")
        if entropy is not None and entropy >= UNIFORM_ENTROPY_SHARE * math.log(count):
            warnings.append(
                f"{level}-level objective collapsed: the teacher's distribution is uniform over its {count} "
                f"prototypes (entropy {entropy:.3f}, log K = {math.log(count):.3f}), so it taught nothing. "
                + _LAYER_SCALE_ADVICE
                + "a short run also needs a faster teacher (--teacher-momentum 0.99) and a higher --lr."
            )
    spread = _mean(judged, "feature_std_image")
    floor = COLLAPSED_STD_SHARE / math.sqrt(projection_dim)
    if spread is not None and spread < floor:
        warnings.append(
            f"image-level embeddings collapsed: their per-dimension std over a batch is {spread:.2g}, "
            f"below {floor:.2g} (spread unit vectors give about {1 / math.sqrt(projection_dim):.2g}). "
            + _LAYER_SCALE_ADVICE
            + "else train longer or with a higher --lr."
        )
    return warnings


def monitor_readings(
    records: Sequence[dict[str, Any]],
    *,
    prototypes: dict[str, int],
    projection_dim: int,
) -> str:
    """The monitors `collapse_warnings` judges, as one phrase: "teacher entropy 2.20 of 8.32, effective rank 4.9".

    Each reading is the mean over the judged last part of the run, beside its collapse value (log K
    for a teacher's entropy, about 1/sqrt(p) for spread-out SimDINO embeddings). Empty when nothing
    was logged.
    """
    if not records:
        return ""
    judged = records[-max(1, math.ceil(JUDGED_SHARE * len(records))) :]
    parts = []
    for level, count in prototypes.items():
        entropy = _mean(judged, f"teacher_entropy_{level}")
        if entropy is not None:
            label = "teacher entropy" if len(prototypes) == 1 else f"{level} teacher entropy"
            parts.append(f"{label} {entropy:.2f} of {math.log(count):.2f}")
    spread = _mean(judged, "feature_std_image")
    if spread is not None and not prototypes:
        parts.append(f"embedding std {spread:.3f} of {1 / math.sqrt(projection_dim):.3f}")
    rank = _mean(judged, "effective_rank")
    if rank is not None:
        parts.append(f"effective rank {rank:.1f}")
    return ", ".join(parts)


def _mean(records: Sequence[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in records if key in r]
    return sum(values) / len(values) if values else None


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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

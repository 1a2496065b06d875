"""From a probability map to what a line acts on: a verdict and the defect regions.

Thresholds come from the bundle (or a per-line override) and stay outside the graph, so both
functions take them as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

import numpy as np

from inspect_svc.bundle import Thresholds
from inspect_svc.imaging import opencv


@dataclass(frozen=True)
class Region:
    """One connected defect region.

    Attributes:
        x, y, width, height: bounding box in pixels of the input frame.
        area: pixels at or above the pixel threshold.
        score: the region's highest probability.
        mean_score: the region's mean probability.
        polygon: outer contour, simplified, as [[x, y], ...] in frame pixels.
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    score: float
    mean_score: float
    polygon: list[list[int]] = field(default_factory=list)

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.width, self.height)


@dataclass(frozen=True)
class Verdict:
    """The image-level decision: defect when the image score (`image_score`) reaches the image threshold."""

    verdict: Literal["ok", "defect"]
    score: float
    defect_area: int


def image_score(prob_map: np.ndarray, top_pixels: int = 1) -> float:
    """The image-level score of a map: the mean of its `top_pixels` highest probabilities.

    `top_pixels` = 1 is the map's maximum, which a single hot pixel decides; a few dozen make the score
    the strength of a defect-sized area instead. The count is in pixels, not a share of the frame: a
    defect keeps its size in pixels whatever the frame's size, so a larger frame does not dilute it.
    Training's evaluation calls this same function, so both sides score images alike.
    """
    values = np.asarray(prob_map, dtype=np.float32).ravel()
    if not values.size:
        return 0.0
    count = min(max(int(top_pixels), 1), values.size)
    if count == 1:
        return float(values.max())
    hottest = np.partition(values, values.size - count)[values.size - count :]
    return float(hottest.astype(np.float64).mean())


def summarize(prob_map: np.ndarray, thresholds: Thresholds, *, top_pixels: int = 1) -> Verdict:
    """The verdict, the image score (`image_score`) and the defective pixel count of a map."""
    score = image_score(prob_map, top_pixels)
    defect_area = int(np.count_nonzero(prob_map >= thresholds.pixel))
    return Verdict(
        verdict="defect" if score >= thresholds.image else "ok", score=score, defect_area=defect_area
    )


def extract_regions(
    prob_map: np.ndarray, threshold: float, min_area: int = 1, max_regions: int = 50
) -> list[Region]:
    """Connected regions (8-connectivity) of pixels at or above `threshold`, the strongest first.

    Args:
        prob_map: float [H, W] probabilities.
        threshold: pixel threshold.
        min_area: regions with fewer pixels are dropped (specks of noise).
        max_regions: at most this many regions are returned, by descending score.
    """
    cv2 = opencv()
    mask = (prob_map >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    candidates = [label for label in range(1, count) if stats[label, cv2.CC_STAT_AREA] >= min_area]
    regions = [_describe(label, labels, stats[label], prob_map) for label in candidates]
    regions.sort(key=lambda region: (region.score, region.area), reverse=True)
    return regions[:max_regions]


def _describe(label: int, labels: np.ndarray, stat: np.ndarray, prob_map: np.ndarray) -> Region:
    cv2 = opencv()
    x, y, width, height, area = (int(value) for value in stat[:5])
    inside = labels[y : y + height, x : x + width] == label
    values = prob_map[y : y + height, x : x + width][inside]
    return Region(
        x=x,
        y=y,
        width=width,
        height=height,
        area=area,
        score=float(values.max()),
        mean_score=float(values.mean()),
        polygon=_outline(inside.astype(np.uint8), x, y, cv2),
    )


def _outline(component: np.ndarray, x: int, y: int, cv2: ModuleType) -> list[list[int]]:
    """The component's outer contour, simplified to within ~1 % of its perimeter (at least 1 px)."""
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea)
    tolerance = max(1.0, 0.01 * cv2.arcLength(contour, True))
    simplified = cv2.approxPolyDP(contour, tolerance, True)
    return [[int(px) + x, int(py) + y] for px, py in simplified.reshape(-1, 2)]

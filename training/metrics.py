"""Segmentation and detection metrics for defect maps, in plain numpy.

All curves are computed exactly from sorted scores (no threshold grid), so ties are handled the way
the textbook definitions handle them: pixels with equal scores cross a threshold together. Scores
are first rounded to `SCORE_DECIMALS`: float32 probabilities saturate near 0 and 1, and differences
below that (PyTorch vs ONNX Runtime, CPU vs GPU) would otherwise reorder thousands of tied pixels.

- `auroc`: area under the ROC curve (ties count one half, as in the Mann-Whitney U statistic).
- `aupro`: area under the per-region-overlap curve up to a false-positive rate (0.3 by default),
  divided by that rate so a perfect map scores 1 (Bergmann et al., MVTec AD, 2021).
- `binary_scores` / `best_f1_threshold`: F1 and IoU of the pooled pixels at a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SCORE_DECIMALS = 6  # float32 probabilities carry ~7 significant digits; below 1e-6 is numerical noise


@dataclass(frozen=True)
class BinaryScores:
    """Pooled pixel counts at one threshold, and the scores derived from them."""

    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.true_positives, 2 * self.true_positives + self.false_positives + self.false_negatives)

    @property
    def iou(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives + self.false_negatives)

    def as_dict(self) -> dict[str, float]:
        return {
            "threshold": float(self.threshold),
            "f1": self.f1,
            "iou": self.iou,
            "precision": self.precision,
            "recall": self.recall,
        }


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present.

    Args:
        scores: higher means more likely positive; any shape.
        labels: truthy for positives; same number of elements as `scores`.
    """
    scores, positive = _flatten(scores, labels)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    # Mann-Whitney: U = sum of positive ranks - n_pos (n_pos + 1) / 2; AUROC = U / (n_pos n_neg).
    u_statistic = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def aupro(score_maps: np.ndarray | list[np.ndarray], masks: np.ndarray | list[np.ndarray], max_fpr: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve for false-positive rates up to `max_fpr`.

    Each connected defect region (8-connectivity, per image) weighs the same whatever its size, so a
    hairline scratch counts as much as a large stain. NaN when there is no region or no normal pixel.

    Args:
        score_maps: per-image score maps `[H, W]` (a stacked array or a list of differently sized maps).
        masks: matching ground-truth masks, truthy for defect.
        max_fpr: integrate the curve on `[0, max_fpr]`, then divide by `max_fpr`.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    scores, region_weight, normal = _region_weights(score_maps, masks)
    n_normal = int(normal.sum())
    if n_normal == 0 or not region_weight.any():
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    fpr = np.cumsum(normal[order]) / n_normal
    pro = np.cumsum(region_weight[order])
    last_of_tie = _last_of_each_tie(scores[order])
    fpr = np.concatenate([[0.0], fpr[last_of_tie]])
    pro = np.concatenate([[0.0], pro[last_of_tie]])
    return _partial_area(fpr, pro, max_fpr) / max_fpr


def binary_scores(scores: np.ndarray, labels: np.ndarray, threshold: float) -> BinaryScores:
    """Counts and F1/IoU when pixels with `score >= threshold` are called defective."""
    scores, positive = _flatten(scores, labels)
    predicted = scores >= threshold
    return BinaryScores(
        threshold=float(threshold),
        true_positives=int(np.count_nonzero(predicted & positive)),
        false_positives=int(np.count_nonzero(predicted & ~positive)),
        false_negatives=int(np.count_nonzero(~predicted & positive)),
    )


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> BinaryScores:
    """The threshold (one of the scores) that maximises pooled F1, with its counts.

    Without positives every threshold has F1 = 0; the one returned then is just above the largest
    score, so nothing is called defective.
    """
    scores, positive = _flatten(scores, labels)
    n_pos = int(positive.sum())
    if n_pos == 0 or scores.size == 0:
        top = float(scores.max()) if scores.size else 0.0
        return BinaryScores(np.nextafter(top, np.inf), 0, 0, 0)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_pos = np.cumsum(positive[order])
    last_of_tie = _last_of_each_tie(sorted_scores)
    true_pos = true_pos[last_of_tie]
    called = last_of_tie + 1
    f1 = 2 * true_pos / (called + n_pos)
    best = int(np.argmax(f1))
    tp = int(true_pos[best])
    return BinaryScores(float(sorted_scores[last_of_tie[best]]), tp, int(called[best]) - tp, n_pos - tp)


def image_scores(score_maps: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """Image-level score of each map: its maximum."""
    return np.asarray([float(np.max(m)) for m in score_maps], dtype=np.float64)


def _flatten(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = _quantize(np.asarray(scores, dtype=np.float64).ravel())
    positive = np.asarray(labels).ravel().astype(bool)
    if scores.shape != positive.shape:
        raise ValueError(f"{scores.size} scores but {positive.size} labels")
    return scores, positive


def _quantize(scores: np.ndarray) -> np.ndarray:
    return np.round(scores, SCORE_DECIMALS)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], sorted_values.size]
    mean_rank = (starts + ends + 1) / 2.0  # ranks start..end-1 (0-based) → mean of 1-based ranks
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def _last_of_each_tie(sorted_descending: np.ndarray) -> np.ndarray:
    """Indices where the next value differs: a threshold admits a whole tie group at once."""
    return np.flatnonzero(np.r_[sorted_descending[1:] != sorted_descending[:-1], True])


def _region_weights(
    score_maps: np.ndarray | list[np.ndarray], masks: np.ndarray | list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened scores, each defect pixel's weight 1 / (area of its region × number of regions), normal flags."""
    if len(score_maps) != len(masks):
        raise ValueError(f"{len(score_maps)} score maps but {len(masks)} masks")
    connectivity = np.ones((3, 3), dtype=bool)
    all_scores, all_areas, all_normal = [], [], []
    n_regions = 0
    for score_map, mask in zip(score_maps, masks):
        mask = np.asarray(mask).astype(bool)
        if np.shape(score_map) != mask.shape:
            raise ValueError(f"score map {np.shape(score_map)} and mask {mask.shape} differ in shape")
        labelled, count = ndimage.label(mask, structure=connectivity)
        areas = np.bincount(labelled.ravel())
        pixel_area = np.where(labelled > 0, areas[labelled], 0).ravel()
        all_scores.append(_quantize(np.asarray(score_map, dtype=np.float64).ravel()))
        all_areas.append(pixel_area)
        all_normal.append(~mask.ravel())
        n_regions += count
    areas = np.concatenate(all_areas).astype(np.float64)
    weight = np.divide(1.0, areas * max(n_regions, 1), out=np.zeros_like(areas), where=areas > 0)
    return np.concatenate(all_scores), weight, np.concatenate(all_normal)


def _partial_area(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) on [0, x_max], interpolating y at x_max; x is non-decreasing."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if xs[-1] < x_max and inside.size > xs.size:
        y_end = np.interp(x_max, x, y)
        xs, ys = np.r_[xs, x_max], np.r_[ys, y_end]
    return float(np.trapezoid(ys, xs))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def segmentation_summary(
    score_maps: list[np.ndarray], masks: list[np.ndarray], *, pixel_threshold: float, image_threshold: float
) -> dict[str, float | dict[str, float]]:
    """The standard metric set of a list of maps: pixel/image AUROC, AUPRO, F1/IoU at a threshold and at best.

    Keys: `pixel_auroc`, `aupro`, `image_auroc`, `f1`, `iou` (at `pixel_threshold`), `at_threshold` and
    `at_best` (threshold, f1, iou, precision, recall), `image_at_threshold` (image-level F1 at
    `image_threshold`), and the counts `images` / `defective_images`.
    """
    scores = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in score_maps])
    labels = np.concatenate([np.asarray(m).ravel() for m in masks]).astype(bool)
    image_labels = np.asarray([bool(np.any(m)) for m in masks])
    maxima = image_scores(score_maps)
    at_threshold = binary_scores(scores, labels, pixel_threshold)
    return {
        "pixel_auroc": auroc(scores, labels),
        "aupro": aupro(score_maps, masks),
        "image_auroc": auroc(maxima, image_labels),
        "f1": at_threshold.f1,
        "iou": at_threshold.iou,
        "at_threshold": at_threshold.as_dict(),
        "at_best": best_f1_threshold(scores, labels).as_dict(),
        "image_at_threshold": binary_scores(maxima, image_labels, image_threshold).as_dict(),
        "images": len(score_maps),
        "defective_images": int(image_labels.sum()),
    }

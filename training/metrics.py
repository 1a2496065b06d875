"""Segmentation and detection metrics for defect maps, in plain numpy.

All curves are computed exactly from sorted scores (no threshold grid), so ties are handled the way
the textbook definitions handle them: pixels with equal scores cross a threshold together. Scores
are first rounded to `SCORE_DECIMALS`: float32 probabilities saturate near 0 and 1, and differences
below that (PyTorch vs ONNX Runtime, CPU vs GPU) would otherwise reorder thousands of tied pixels.

- `auroc`: area under the ROC curve (ties count one half, as in the Mann-Whitney U statistic).
- `aupro`: area under the per-region-overlap curve up to a false-positive rate (0.3 by default),
  divided by that rate so a perfect map scores 1 (Bergmann et al., MVTec AD, 2021).
- `average_precision`: area under the precision-recall curve (AUPR), as the step sum
  Σ (R_n − R_{n−1}) P_n over thresholds. Unlike AUROC it is not flattered by the flood of easy
  normal pixels: a map that ranks defects above *most* normal pixels still scores low if the few
  normal pixels above them outnumber the defect pixels.
- `binary_scores` / `best_f1_threshold`: F1 and IoU of the pooled pixels at a threshold; applied to
  image scores and image labels, the verdicts' precision, recall and false-alarm rate.
- `threshold_for_recall` / `threshold_for_false_alarm_rate`: the thresholds a line is promised by.
- `line_breakdown`: the mean and the worst line of per-line summaries (a mean hides the worst line).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inspect_svc.engine.regions import image_score

SCORE_DECIMALS = 6  # float32 probabilities carry ~7 significant digits; below 1e-6 is numerical noise


@dataclass(frozen=True)
class BinaryScores:
    """Pooled pixel counts at one threshold, and the scores derived from them."""

    threshold: float
    true_positives: int
    false_positives: int
    false_negatives: int
    true_negatives: int = 0

    @property
    def false_alarm_rate(self) -> float:
        """Share of the negatives called positive (for verdicts: normal parts rejected)."""
        return _ratio(self.false_positives, self.false_positives + self.true_negatives)

    @property
    def precision(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    @property
    def recall(self) -> float:
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    @property
    def f1(self) -> float:
        return _ratio(
            2 * self.true_positives, 2 * self.true_positives + self.false_positives + self.false_negatives
        )

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
            "false_alarm_rate": self.false_alarm_rate,
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


def aupro(
    score_maps: np.ndarray | list[np.ndarray], masks: np.ndarray | list[np.ndarray], max_fpr: float = 0.3
) -> float:
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


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve, Σ (R_n − R_{n−1}) P_n over thresholds; NaN without positives.

    Tied scores cross a threshold together (one step of the curve), as in `auroc`.
    """
    scores, positive = _flatten(scores, labels)
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    last_of_tie = _last_of_each_tie(scores[order])
    true_pos = np.cumsum(positive[order])[last_of_tie]
    precision = true_pos / (last_of_tie + 1)
    recall_gain = np.diff(np.r_[0, true_pos]) / n_pos
    return float(np.sum(recall_gain * precision))


def binary_scores(scores: np.ndarray, labels: np.ndarray, threshold: float) -> BinaryScores:
    """Counts and F1/IoU when pixels with `score >= threshold` are called defective."""
    scores, positive = _flatten(scores, labels)
    predicted = scores >= threshold
    return BinaryScores(
        threshold=float(threshold),
        true_positives=int(np.count_nonzero(predicted & positive)),
        false_positives=int(np.count_nonzero(predicted & ~positive)),
        false_negatives=int(np.count_nonzero(~predicted & positive)),
        true_negatives=int(np.count_nonzero(~predicted & ~positive)),
    )


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, target: float) -> float:
    """The highest threshold (`score >= t` is positive) whose recall on `labels` is at least `target`.

    The highest one calls the fewest negatives positive. Scores are compared at the precision every
    metric here uses (`SCORE_DECIMALS`): two that differ by float noise (PyTorch vs ONNX Runtime, or
    a synthetic defect that left the hottest pixel as it was) are one score. The threshold is set
    halfway down to the next lower score, or half a step of that precision below a score nothing
    lies under, so a score that moves by float noise keeps its side.

    Raises:
        ValueError: `target` outside (0, 1], or no positive.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target recall must be in (0, 1], got {target}")
    scores = _quantize(np.asarray(scores, dtype=np.float64).ravel())
    positive = np.asarray(labels).ravel().astype(bool)
    if not positive.any():
        raise ValueError("a threshold for a recall needs at least one positive")
    ranked = np.sort(scores[positive])[::-1]
    needed = min(int(np.ceil(target * ranked.size - 1e-9)), ranked.size)
    threshold = float(ranked[max(needed, 1) - 1])
    lower = scores[scores < threshold]
    below = float(lower.max()) if lower.size else threshold - 10.0**-SCORE_DECIMALS
    return (threshold + below) / 2.0


def threshold_for_false_alarm_rate(normal_scores: np.ndarray, max_rate: float) -> float:
    """The lowest threshold at which at most `max_rate` of `normal_scores` reach it (`score >= t`).

    Set halfway between the highest normal score it lets pass and the lowest one it stops (or just
    above the highest normal score when none may reach it), capped at 1.

    Raises:
        ValueError: `max_rate` outside [0, 1), or no score.
    """
    if not 0.0 <= max_rate < 1.0:
        raise ValueError(f"the false-alarm rate must be in [0, 1), got {max_rate}")
    ranked = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())[::-1]
    if not ranked.size:
        raise ValueError("a threshold for a false-alarm rate needs at least one normal score")
    allowed = int(np.floor(max_rate * ranked.size + 1e-9))  # normal images that may reach the threshold
    if allowed >= ranked.size:
        return float(ranked[-1])
    highest_stopped = float(ranked[allowed])
    passed = ranked[:allowed][ranked[:allowed] > highest_stopped]
    upper = float(passed.min()) if passed.size else min(1.0, highest_stopped + 2 * 10.0**-SCORE_DECIMALS)
    return min(1.0, (highest_stopped + upper) / 2.0)


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
    tp, fp = int(true_pos[best]), int(called[best]) - int(true_pos[best])
    n_neg = scores.size - n_pos
    return BinaryScores(float(sorted_scores[last_of_tie[best]]), tp, fp, n_pos - tp, n_neg - fp)


def image_scores(score_maps: Sequence[np.ndarray] | np.ndarray, top_pixels: int = 1) -> np.ndarray:
    """Image-level score of each map, computed as the service computes it (mean of the hottest pixels)."""
    return np.asarray([image_score(m, top_pixels) for m in score_maps], dtype=np.float64)


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
    for score_map, mask in zip(score_maps, masks, strict=True):
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


# Metrics compared across lines (or surfaces): the lower the worse, except the false-alarm rate.
LINE_METRICS = (
    "pixel_auroc",
    "aupro",
    "pixel_ap",
    "image_auroc",
    "verdict_recall",
    "verdict_precision",
    "false_alarm_rate",
)
HIGHER_IS_WORSE = frozenset({"false_alarm_rate"})


def segmentation_summary(
    score_maps: list[np.ndarray],
    masks: list[np.ndarray],
    *,
    pixel_threshold: float,
    image_threshold: float,
    top_pixels: int = 1,
) -> dict[str, float | dict[str, float]]:
    """The standard metric set of a list of maps: pixel/image AUROC, AUPRO, pixel AP, F1/IoU, verdicts.

    Keys: `pixel_auroc`, `aupro`, `pixel_ap`, `image_auroc`, `f1`, `iou` (at `pixel_threshold`),
    `at_threshold` and `at_best` (threshold, f1, iou, precision, recall), `image_at_threshold` (the
    verdicts at `image_threshold`, images scored as the service scores them with `top_pixels`), its
    `verdict_precision`, `verdict_recall` and `false_alarm_rate` (share of defect-free images
    rejected) repeated at the top, and the counts `images` / `defective_images`.
    """
    scores = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in score_maps])
    labels = np.concatenate([np.asarray(m).ravel() for m in masks]).astype(bool)
    image_labels = np.asarray([bool(np.any(m)) for m in masks])
    per_image = image_scores(score_maps, top_pixels)
    at_threshold = binary_scores(scores, labels, pixel_threshold)
    verdicts = binary_scores(per_image, image_labels, image_threshold)
    return {
        "pixel_auroc": auroc(scores, labels),
        "aupro": aupro(score_maps, masks),
        "pixel_ap": average_precision(scores, labels),
        "image_auroc": auroc(per_image, image_labels),
        "f1": at_threshold.f1,
        "iou": at_threshold.iou,
        "at_threshold": at_threshold.as_dict(),
        "at_best": best_f1_threshold(scores, labels).as_dict(),
        "image_at_threshold": verdicts.as_dict(),
        "verdict_precision": verdicts.precision
        if verdicts.true_positives + verdicts.false_positives
        else float("nan"),
        "verdict_recall": verdicts.recall if image_labels.any() else float("nan"),
        "false_alarm_rate": verdicts.false_alarm_rate if not image_labels.all() else float("nan"),
        "images": len(score_maps),
        "defective_images": int(image_labels.sum()),
    }


def line_breakdown(per_line: dict[str, dict]) -> dict[str, dict]:
    """The mean over lines of each of `LINE_METRICS`, and the worst line for each (NaNs left out).

    Returns `{"mean": {metric: value}, "worst": {metric: {"line": name, "value": value}}}`; a metric no
    line has a number for is absent from both.
    """
    mean: dict[str, float] = {}
    worst: dict[str, dict] = {}
    for metric in LINE_METRICS:
        values = {
            line: float(m[metric])
            for line, m in per_line.items()
            if not np.isnan(float(m.get(metric, np.nan)))
        }
        if not values:
            continue
        mean[metric] = float(np.mean(list(values.values())))
        pick = max if metric in HIGHER_IS_WORSE else min
        line = pick(sorted(values), key=values.__getitem__)
        worst[metric] = {"line": line, "value": values[line]}
    return {"mean": mean, "worst": worst}

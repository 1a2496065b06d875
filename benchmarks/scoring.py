"""The benchmark's metrics per surface, and their mean and worst over surfaces.

Pixel AUROC, AUPRO@0.3 and pixel AP (area under the precision-recall curve, reported because pixel
AUROC saturates when defects are a tiny share of the pixels) are the product's own (`training.metrics`),
so a benchmark row and `train-pipeline evaluate` score a map alike; a surface without a defective test
image has no pixel AP (NaN), which `mean_and_worst` leaves out. Verdicts are taken as the service takes
them: an image is defective when its image score reaches the stored image threshold; precision, recall
and the false-alarm rate (share of defect-free images flagged) follow from that.
"""

from __future__ import annotations

import numpy as np

from training.metrics import aupro, auroc, average_precision, image_scores

# Metrics where lower is better: their "worst" surface is the largest value.
LOWER_IS_BETTER = frozenset({"false_alarm_rate", "line_false_alarm_rate"})
VERDICT_KEYS = ("verdict_precision", "verdict_recall", "false_alarm_rate")
# The same verdicts at each surface's own threshold, set on its calibration images (a line's calibration).
LINE_VERDICT_KEYS = ("line_verdict_precision", "line_verdict_recall", "line_false_alarm_rate")
METRIC_KEYS = ("pixel_auroc", "aupro", "pixel_ap", "image_auroc", *VERDICT_KEYS, *LINE_VERDICT_KEYS)


def score_surface(
    maps: list[np.ndarray],
    masks: list[np.ndarray],
    image_threshold: float,
    top_pixels: int = 1,
    line_threshold: float | None = None,
) -> dict[str, float]:
    """Every metric of `METRIC_KEYS` on one surface's test images (defective and defect-free); images
    are scored as the model's bundle scores them (the mean of its `top_pixels` hottest pixels). The
    line verdicts use `line_threshold` (NaN without one)."""
    scores = np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])
    labels = np.concatenate([np.asarray(m, bool).ravel() for m in masks])
    defective = np.asarray([bool(m.any()) for m in masks])
    image = image_scores(maps, top_pixels)
    line_verdicts = (
        verdicts(image, defective, line_threshold)
        if line_threshold is not None
        else dict.fromkeys(VERDICT_KEYS, float("nan"))
    )
    return {
        "pixel_auroc": auroc(scores, labels),
        "aupro": aupro(maps, masks),
        "pixel_ap": average_precision(scores, labels),
        "image_auroc": auroc(image, defective),
        **verdicts(image, defective, image_threshold),
        **{f"line_{key}": value for key, value in line_verdicts.items()},
        "images": len(maps),
        "defective_images": int(defective.sum()),
    }


def verdicts(image_score: np.ndarray, defective: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and false-alarm rate of flagging the images whose score reaches `threshold`."""
    flagged = image_score >= threshold
    true_pos = int(np.sum(flagged & defective))
    return {
        "verdict_precision": true_pos / int(flagged.sum()) if flagged.any() else float("nan"),
        "verdict_recall": true_pos / int(defective.sum()) if defective.any() else float("nan"),
        "false_alarm_rate": float(np.mean(flagged[~defective])) if (~defective).any() else float("nan"),
    }


def mean_and_worst(per_surface: dict[str, dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """The mean over surfaces and the worst surface's value, per metric (NaNs ignored)."""
    mean, worst = {}, {}
    for key in METRIC_KEYS:
        values = np.asarray([s.get(key, np.nan) for s in per_surface.values()], np.float64)
        values = values[~np.isnan(values)]
        if not values.size:
            mean[key] = worst[key] = float("nan")
            continue
        mean[key] = float(values.mean())
        worst[key] = float(values.max() if key in LOWER_IS_BETTER else values.min())
    return mean, worst

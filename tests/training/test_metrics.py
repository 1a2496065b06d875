"""Metrics against hand-computed cases and brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from inspect_svc.engine.regions import image_score
from training.metrics import (
    aupro,
    auroc,
    average_precision,
    best_f1_threshold,
    binary_scores,
    image_scores,
    line_breakdown,
    segmentation_summary,
    threshold_for_false_alarm_rate,
    threshold_for_recall,
)


def test_auroc_counts_ties_as_half() -> None:
    # Pairs (pos, neg): (0.4, 0.1)=1, (0.4, 0.4)=0.5, (0.8, 0.1)=1, (0.8, 0.4)=1 → 3.5 / 4.
    assert auroc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.875)


def test_auroc_matches_pairwise_definition_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=60).astype(float)
    labels = rng.random(60) < 0.3
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[labels], scores[~labels])
    ]
    assert auroc(scores, labels) == pytest.approx(np.mean(pairs))


def test_auroc_is_nan_with_one_class() -> None:
    assert np.isnan(auroc(np.array([0.2, 0.3]), np.array([0, 0])))


def test_aupro_two_regions_by_hand() -> None:
    # One row: region A = pixels 0-1, region B = pixel 3, five normal pixels (FPR steps of 0.2).
    scores = np.array([[0.9, 0.5, 0.8, 0.3, 0.1, 0.1, 0.1, 0.1]])
    mask = np.array([[1, 1, 0, 1, 0, 0, 0, 0]])
    # Curve: (0, .25) → (.2, .25) → (.2, .5) → (.2, 1) → (1, 1); area on [0, .3] = .05 + .1 = .15.
    assert aupro([scores], [mask], max_fpr=0.3) == pytest.approx(0.15 / 0.3)


def test_aupro_weighs_regions_equally_and_is_one_when_perfect() -> None:
    mask = np.zeros((16, 16), dtype=bool)
    mask[2:10, 2:10] = True  # large region
    mask[14, 14] = True  # one-pixel region
    assert aupro([mask * 1.0], [mask]) == pytest.approx(1.0)
    # Miss the small region entirely: PRO stays at 0.5 until the normal pixels start firing.
    missed = mask * 1.0
    missed[14, 14] = -1.0  # below every normal pixel
    assert aupro([missed], [mask]) == pytest.approx(0.5)


def test_f1_and_iou_at_threshold() -> None:
    scores, labels = np.array([0.9, 0.6, 0.4, 0.2]), np.array([1, 0, 1, 0])
    at_half = binary_scores(scores, labels, 0.5)
    assert (at_half.f1, at_half.iou) == pytest.approx((0.5, 1 / 3))
    best = best_f1_threshold(scores, labels)
    assert best.threshold == pytest.approx(0.4)
    assert (best.f1, best.iou) == pytest.approx((0.8, 2 / 3))


def test_best_threshold_without_positives_calls_nothing() -> None:
    best = best_f1_threshold(np.array([0.3, 0.7]), np.array([0, 0]))
    assert best.threshold > 0.7
    assert binary_scores(np.array([0.3, 0.7]), np.array([0, 0]), best.threshold).false_positives == 0


def test_image_scores_are_map_maxima() -> None:
    maps = [np.array([[0.1, 0.3]]), np.array([[0.9], [0.2]])]
    np.testing.assert_allclose(image_scores(maps), [0.3, 0.9])


def test_average_precision_by_hand() -> None:
    # Ranked: + (P 1, R .5), − , + (P 2/3, R 1), − → AP = .5·1 + .5·2/3.
    scores, labels = np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])
    assert average_precision(scores, labels) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_average_precision_crosses_ties_together() -> None:
    # The tie at 0.5 enters at once: (P 1/2, R 1/2); then 0.1: (P 2/3, R 1) → .25 + 1/3.
    assert average_precision(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 1])) == pytest.approx(0.25 + 1 / 3)


def test_average_precision_is_not_flattered_by_easy_normals() -> None:
    # 10 defect pixels ranked above 9,900 normal pixels but below 100 others: AUROC ~0.99, AP below 0.1.
    scores = np.r_[np.full(100, 0.9), np.full(10, 0.8), np.full(9_900, 0.1)]
    labels = np.r_[np.zeros(100), np.ones(10), np.zeros(9_900)]
    assert auroc(scores, labels) > 0.98
    assert average_precision(scores, labels) == pytest.approx(10 / 110)
    assert np.isnan(average_precision(scores, np.zeros_like(labels)))


def test_verdict_precision_recall_and_false_alarm_rate_at_a_threshold() -> None:
    # Image scores of 3 defective and 5 normal images; threshold 0.5 → TP 2, FN 1, FP 1, TN 4.
    scores = np.array([0.9, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.0])
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    verdicts = binary_scores(scores, labels, 0.5)
    assert (verdicts.precision, verdicts.recall, verdicts.false_alarm_rate) == pytest.approx(
        (2 / 3, 2 / 3, 1 / 5)
    )
    assert verdicts.as_dict()["false_alarm_rate"] == pytest.approx(0.2)


def test_image_score_is_the_mean_of_the_hottest_pixels() -> None:
    prob = np.full((8, 8), 0.1, np.float32)
    prob[0, 0] = 1.0  # one hot pixel: the maximum, but not a defect-sized area
    assert image_score(prob) == pytest.approx(1.0)
    assert image_score(prob, 4) == pytest.approx((1.0 + 3 * 0.1) / 4)
    prob[4:6, 4:6] = 0.8  # a 2x2 defect outweighs the hot pixel once k covers it
    assert image_score(prob, 4) == pytest.approx(0.85)
    assert image_score(prob, 1000) == pytest.approx(float(prob.mean()))  # k beyond the map: all of it
    np.testing.assert_allclose(image_scores([prob, prob * 0.5], 4), [0.85, 0.425], rtol=1e-6)


def test_summary_reports_pixel_ap_and_verdicts_with_the_top_k_score() -> None:
    masks = [np.zeros((4, 4), bool), np.zeros((4, 4), bool)]
    masks[1][1:3, 1:3] = True
    hot_pixel = np.zeros((4, 4))
    hot_pixel[0, 0] = 0.9  # a normal image with one noisy pixel
    defect = masks[1] * 0.7
    by_max = segmentation_summary([hot_pixel, defect], masks, pixel_threshold=0.5, image_threshold=0.6)
    by_top4 = segmentation_summary(
        [hot_pixel, defect], masks, pixel_threshold=0.5, image_threshold=0.6, top_pixels=4
    )
    assert by_max["false_alarm_rate"] == 1.0 and by_max["verdict_precision"] == 0.5
    assert by_top4["false_alarm_rate"] == 0.0 and by_top4["verdict_recall"] == 1.0
    assert by_top4["pixel_ap"] == pytest.approx(
        average_precision(np.r_[hot_pixel.ravel(), defect.ravel()], np.r_[masks[0].ravel(), masks[1].ravel()])
    )


def test_threshold_for_recall_is_the_highest_that_reaches_it() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.3, 0.1])
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0])
    # 4 of 5 defects: down to 0.6, halfway to the next lower score 0.3.
    assert threshold_for_recall(scores, labels, 0.8) == pytest.approx(0.45)
    assert threshold_for_recall(scores, labels, 0.95) == pytest.approx(0.15)  # all 5: down to 0.2, then 0.1
    assert binary_scores(scores, labels, threshold_for_recall(scores, labels, 0.8)).recall == pytest.approx(
        0.8
    )
    with pytest.raises(ValueError):
        threshold_for_recall(scores, np.zeros(8), 0.9)


def test_threshold_for_recall_treats_float_noise_as_a_tie() -> None:
    """A defect scored 1e-8 above a normal image is the same score: the recall must still be reached."""
    scores = np.array([0.9, 0.47128510, 0.47128500])
    labels = np.array([1, 1, 0])
    threshold = threshold_for_recall(scores, labels, 1.0)
    assert binary_scores(scores, labels, threshold).recall == 1.0
    assert scores[1] - threshold > 4e-7  # raw scores a little below the tie still reach it
    assert threshold_for_recall(np.array([0.5]), np.array([1]), 1.0) < 0.5


def test_threshold_for_false_alarm_rate_lets_through_at_most_that_share() -> None:
    normal = np.arange(100) / 100.0
    threshold = threshold_for_false_alarm_rate(normal, 0.05)
    assert threshold == pytest.approx(0.945)
    assert np.mean(normal >= threshold) == pytest.approx(0.05)
    assert np.mean(normal >= threshold_for_false_alarm_rate(normal, 0.0)) == 0.0
    tied = np.r_[np.full(10, 0.5), np.zeros(90)]  # a tie cannot be split: fewer alarms, never more
    assert np.mean(tied >= threshold_for_false_alarm_rate(tied, 0.05)) == 0.0


def test_line_breakdown_shows_the_mean_and_the_worst_line() -> None:
    per_line = {
        "tile": {"pixel_auroc": 0.9, "false_alarm_rate": 0.02, "aupro": float("nan")},
        "wood": {"pixel_auroc": 0.7, "false_alarm_rate": 0.01, "aupro": 0.5},
    }
    result = line_breakdown(per_line)
    assert result["mean"]["pixel_auroc"] == pytest.approx(0.8) and result["mean"]["aupro"] == pytest.approx(
        0.5
    )
    assert result["worst"]["pixel_auroc"] == {"line": "wood", "value": 0.7}
    assert result["worst"]["false_alarm_rate"] == {"line": "tile", "value": 0.02}  # higher is worse
    assert "verdict_recall" not in result["mean"]

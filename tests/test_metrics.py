"""Metrics against hand-computed cases and brute-force definitions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.metrics import aupro, auroc, best_f1_threshold, binary_scores, image_scores


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

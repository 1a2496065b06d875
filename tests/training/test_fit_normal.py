"""Zero-label mode: coreset, nearest-neighbour scoring, calibration, and the command end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, model_cli, write_labeled_set
from training.models.anomaly import (
    MEDIAN_PROBABILITY,
    AnomalyHead,
    NearestNeighbourScorer,
    TileRetrievalScorer,
    greedy_coreset,
    neighbourhood_mean,
    tile_descriptor,
    window_statistics,
)
from training.runs import load_run


def test_greedy_coreset_keeps_the_outlier() -> None:
    cluster = torch.randn(200, 8, generator=torch.Generator().manual_seed(0)) * 0.1
    features = torch.cat([cluster, torch.full((1, 8), 50.0)])
    chosen = greedy_coreset(features, 5, projection_dim=4)
    assert 200 in chosen.tolist()
    assert len(set(chosen.tolist())) == 5


def test_nearest_neighbour_scorer_matches_cdist() -> None:
    generator = torch.Generator().manual_seed(1)
    bank, features = torch.randn(30, 6, generator=generator), torch.randn(2, 6, 3, 4, generator=generator)
    expected = torch.cdist(features.permute(0, 2, 3, 1).reshape(-1, 6), bank).min(dim=1).values
    actual = NearestNeighbourScorer(bank)(features).permute(0, 2, 3, 1).reshape(-1)
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def _two_surfaces(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal tiles of two surfaces (features near 0 and near 3), three tiles each: banks, descriptors."""
    tiles = torch.cat(
        [
            torch.randn(3, 4, 5, 5, generator=generator) * 0.3,
            3.0 + torch.randn(3, 4, 5, 5, generator=generator) * 0.3,
        ]
    )
    return tiles.flatten(2).transpose(1, 2), tile_descriptor(tiles)


def test_tile_retrieval_scores_against_the_nearest_tiles_only() -> None:
    generator = torch.Generator().manual_seed(2)
    banks, descriptors = _two_surfaces(generator)
    scorer = TileRetrievalScorer(banks, descriptors, neighbours=2)
    # A tile of surface 0 with a 2x2 patch of surface 1 pasted in: that patch is far from surface 0's tiles.
    query = torch.randn(1, 4, 5, 5, generator=generator) * 0.3
    query[..., :2, :2] += 3.0
    picked = scorer.nearest_tiles(query)[0].tolist()
    assert set(picked) <= {0, 1, 2}
    rows = banks[picked].reshape(-1, 4)
    expected = torch.cdist(query.flatten(2)[0].t(), rows).min(dim=1).values.reshape(5, 5)
    torch.testing.assert_close(scorer(query)[0, 0], expected, atol=1e-4, rtol=1e-4)
    assert float(scorer(query)[0, 0, :2, :2].min()) > 1.0  # one bank of everything would call it normal
    assert float(NearestNeighbourScorer(banks.reshape(-1, 4))(query)[0, 0, :2, :2].max()) < 1.0


def test_tile_retrieval_over_every_tile_is_the_single_bank() -> None:
    generator = torch.Generator().manual_seed(3)
    banks, descriptors = _two_surfaces(generator)
    features = torch.randn(2, 4, 3, 3, generator=generator) * 2.0
    everything = TileRetrievalScorer(banks, descriptors, neighbours=banks.shape[0])(features)
    torch.testing.assert_close(
        everything, NearestNeighbourScorer(banks.reshape(-1, 4))(features), atol=1e-4, rtol=1e-4
    )


def test_tile_retrieval_checks_its_shapes() -> None:
    banks, descriptors = _two_surfaces(torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="neighbours"):
        TileRetrievalScorer(banks, descriptors, neighbours=7)
    with pytest.raises(ValueError, match="descriptors"):
        TileRetrievalScorer(banks, descriptors[:, :4], neighbours=2)


def test_window_statistics_are_the_mean_and_std_of_each_window() -> None:
    features = torch.randn(1, 2, 9, 9, generator=torch.Generator().manual_seed(5))
    stats = window_statistics(features, 5)
    assert stats.shape == (1, 4, 9, 9)
    for (y, x), window in [
        ((4, 4), features[0, :, 2:7, 2:7]),
        ((0, 1), features[0, :, 0:3, 0:4]),
    ]:  # inside; corner
        flat = window.reshape(2, -1)
        torch.testing.assert_close(stats[0, :2, y, x], flat.mean(dim=1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats[0, 2:, y, x], flat.std(dim=1, unbiased=False), atol=1e-4, rtol=1e-4)
    # Same grid as the 3x3 mean, also with a stride, so the two can be stacked per position.
    for stride in (1, 2):
        assert (
            window_statistics(features, 7, stride).shape[-2:]
            == neighbourhood_mean(features, stride).shape[-2:]
        )


@pytest.mark.parametrize(("window", "stride"), [(3, 1), (7, 1), (7, 2), (11, 2), (15, 1)])
def test_window_mean_is_computed_separably_but_exactly(window: int, stride: int) -> None:
    """Two 1-D pools give every position the same mean as one KxK pool, borders and strides included."""
    features = torch.randn(2, 3, 11, 13, generator=torch.Generator().manual_seed(6))
    square = F.avg_pool2d(features, window, stride=stride, padding=window // 2, count_include_pad=False)
    torch.testing.assert_close(
        window_statistics(features, window, stride)[:, :3], square, atol=1e-6, rtol=1e-5
    )


def test_context_sees_a_smooth_patch_that_every_3x3_mean_hides() -> None:
    """A low-contrast defect: a patch whose features vary less than the surface's.

    Each 3x3 mean inside it (near 0) is also a common 3x3 mean of normal texture, so the plain bank
    cannot tell; the 7x7 standard deviation (0.2 against 1) can.
    """
    generator = torch.Generator().manual_seed(6)
    normal = torch.randn(4, 3, 24, 24, generator=generator)
    query = torch.randn(1, 3, 24, 24, generator=generator)
    query[..., 6:18, 6:18] *= 0.2
    inside = torch.zeros(24, 24, dtype=torch.bool)
    inside[8:16, 8:16] = True  # a few cells in from its edge, where every window lies within it
    separation = {}
    for context in (0, 7):
        head = AnomalyHead(torch.zeros(1, 1), (0,), source="conv", blur_sigma=0.5, context=context)
        rows = head.local_features(normal)
        head.set_memory_bank(rows.permute(0, 2, 3, 1).reshape(-1, rows.shape[1]))
        score = head.raw_score((24, 24), query)[0, 0]
        separation[context] = float(score[inside].mean() - score[~inside].mean())
    assert separation[0] < 0.0 < separation[7]


def test_pixels_reveal_a_pale_stain_that_edge_features_miss() -> None:
    """A stain that brightens the surface: learned edge-like filters (here a horizontal difference of
    the image) answer the same inside it, the pixels themselves do not."""
    generator = torch.Generator().manual_seed(8)
    normal = torch.randn(4, 3, 32, 32, generator=generator) * 0.3
    query = torch.randn(1, 3, 32, 32, generator=generator) * 0.3
    query[..., 8:24, 8:24] += 1.5

    def edges(images: torch.Tensor) -> torch.Tensor:  # an offset cancels in a difference of neighbours
        return F.avg_pool2d(images[..., 1:] - images[..., :-1], 2, ceil_mode=True)[..., :16]

    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[12:20, 12:20] = True
    separation = {}
    for weight in (0.0, 2.0):
        head = AnomalyHead(torch.zeros(1, 1), (0,), source="conv", blur_sigma=0.5, pixel_weight=weight)
        rows = head.local_features(head.with_pixels(edges(normal), normal))
        head.set_memory_bank(rows.permute(0, 2, 3, 1).reshape(-1, rows.shape[1]))
        score = head.raw_score((32, 32), head.with_pixels(edges(query), query))[0, 0]
        separation[weight] = float(score[inside].mean() - score[~inside].mean())
    assert abs(separation[0.0]) < 0.1 < separation[2.0]


def test_pixels_are_the_weighted_image_averaged_to_the_feature_grid() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    features = torch.ones(2, 5, 4, 4)
    assert torch.equal(AnomalyHead(torch.zeros(1, 1), (0,)).with_pixels(features, images), features)
    with_pixels = AnomalyHead(torch.zeros(1, 1), (0,), pixel_weight=3.0).with_pixels(features, images)
    assert with_pixels.shape == (2, 8, 4, 4)
    torch.testing.assert_close(with_pixels[:, 5:], 3.0 * F.avg_pool2d(images, 2))
    with pytest.raises(ValueError, match="pixel_weight"):
        AnomalyHead(torch.zeros(1, 1), (0,), pixel_weight=-1.0)


def test_context_window_must_be_odd() -> None:
    for window in (1, 4, -3):
        with pytest.raises(ValueError, match="odd"):
            AnomalyHead(torch.zeros(4, 2), (0,), context=window)


def test_calibration_puts_normal_quantiles_where_promised() -> None:
    head = AnomalyHead(torch.zeros(4, 2), (0,))
    scores = torch.linspace(0, 10, 10_001)
    head.calibrate(scores)
    prob = torch.sigmoid((torch.tensor([5.0, 9.9]) - head.center) / head.scale)
    assert math.isclose(float(prob[0]), MEDIAN_PROBABILITY, abs_tol=1e-3)
    assert math.isclose(float(prob[1]), 0.5, abs_tol=1e-3)


def test_fit_normal_writes_a_zero_label_run(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=1, normal=4)
    result = CliRunner().invoke(
        model_cli(),
        [
            "fit-normal",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--image-size",
            "32",
            "--bank-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    assert run.model.kind == "zero-label"
    banks = run.model.anomaly.scorer.tile_banks
    assert banks.shape[1] == 16 // 4 and run.model.anomaly.config["neighbour_tiles"] == min(4, banks.shape[0])
    assert 0.0 < run.thresholds["pixel"] <= 1.0 and 0.0 < run.thresholds["image"] <= 1.0
    # No defect was labeled: the image threshold is set for the target recall of synthetic defects.
    decision = run.metrics["validation"]["decision"]
    assert decision["target_recall"] == 0.95 and decision["real_defective"] == 0
    assert decision["synthetic_defective"] > 0 and decision["expected_recall"] >= 0.95
    assert decision["threshold"] == run.thresholds["image"] and run.thresholds["image_top_pixels"] >= 1


def test_fit_normal_with_one_bank(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=1, normal=4)
    result = CliRunner().invoke(
        model_cli(),
        [
            "fit-normal",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--image-size",
            "32",
            "--bank-size",
            "16",
            "--neighbour-tiles",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    assert (
        run.model.anomaly.scorer.memory_bank.shape[0] == 16
        and run.model.anomaly.config["neighbour_tiles"] == 0
    )


def test_fit_normal_needs_two_images(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=1, normal=1)
    result = CliRunner().invoke(
        model_cli(),
        [
            "fit-normal",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--image-size",
            "32",
        ],
    )
    assert result.exit_code == 2 and "at least 2" in result.output

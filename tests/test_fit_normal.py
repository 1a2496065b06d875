"""Zero-label mode: coreset, nearest-neighbour scoring, calibration, and the command end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, model_cli, write_labeled_set
from training.hybrid import load_run
from training.models.anomaly import (
    MEDIAN_PROBABILITY,
    AnomalyHead,
    NearestNeighbourScorer,
    TileRetrievalScorer,
    greedy_coreset,
    tile_descriptor,
)


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
    tiles = torch.cat([torch.randn(3, 4, 5, 5, generator=generator) * 0.3,
                       3.0 + torch.randn(3, 4, 5, 5, generator=generator) * 0.3])
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
    torch.testing.assert_close(everything, NearestNeighbourScorer(banks.reshape(-1, 4))(features), atol=1e-4, rtol=1e-4)


def test_tile_retrieval_checks_its_shapes() -> None:
    banks, descriptors = _two_surfaces(torch.Generator().manual_seed(4))
    with pytest.raises(ValueError, match="neighbours"):
        TileRetrievalScorer(banks, descriptors, neighbours=7)
    with pytest.raises(ValueError, match="descriptors"):
        TileRetrievalScorer(banks, descriptors[:, :4], neighbours=2)


def test_calibration_puts_normal_quantiles_where_promised() -> None:
    head = AnomalyHead(torch.zeros(4, 2), (0,))
    scores = torch.linspace(0, 10, 10_001)
    head.calibrate(scores)
    prob = torch.sigmoid((torch.tensor([5.0, 9.9]) - head.center) / head.scale)
    assert math.isclose(float(prob[0]), MEDIAN_PROBABILITY, abs_tol=1e-3)
    assert math.isclose(float(prob[1]), 0.5, abs_tol=1e-3)


def test_fit_normal_writes_a_zero_label_run(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=1, normal=4)
    result = CliRunner().invoke(model_cli(), ["fit-normal", "--backbone", TINY_BACKBONE, "--data", str(data),
                                              "--out", str(tmp_path / "run"), "--image-size", "32", "--bank-size", "16"])
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    assert run.model.kind == "zero-label"
    banks = run.model.anomaly.scorer.tile_banks
    assert banks.shape[1] == 16 // 4 and run.model.anomaly.config["neighbour_tiles"] == min(4, banks.shape[0])
    assert 0.0 < run.thresholds["pixel"] <= run.thresholds["image"] <= 1.0


def test_fit_normal_with_one_bank(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=1, normal=4)
    result = CliRunner().invoke(model_cli(), ["fit-normal", "--backbone", TINY_BACKBONE, "--data", str(data),
                                              "--out", str(tmp_path / "run"), "--image-size", "32", "--bank-size", "16",
                                              "--neighbour-tiles", "0"])
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    assert run.model.anomaly.scorer.memory_bank.shape[0] == 16 and run.model.anomaly.config["neighbour_tiles"] == 0


def test_fit_normal_needs_two_images(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=1, normal=1)
    result = CliRunner().invoke(model_cli(), ["fit-normal", "--backbone", TINY_BACKBONE, "--data", str(data),
                                              "--out", str(tmp_path / "run"), "--image-size", "32"])
    assert result.exit_code == 2 and "at least 2" in result.output

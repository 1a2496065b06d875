"""Frozen-feature dense probes: splits, the two probes, and the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.probe import dense_probe, linear_probe, split_samples
from tests.synthetic_labeled import one_line_set, write_labeled_set
from training.data.labeled import load_labeled_set
from training.metrics import auroc


def test_split_is_deterministic_disjoint_and_covers_every_group(tmp_path: Path) -> None:
    samples = load_labeled_set(write_labeled_set(tmp_path / "set", defective=5, normal=4)).samples
    train, test = split_samples(samples, seed=3)
    assert split_samples(samples, seed=3) == (train, test)
    assert {s.stem for s in train}.isdisjoint({s.stem for s in test})
    assert len(train) + len(test) == len(samples)
    for group in (train, test):  # both halves see defective and defect-free images
        assert any(s.defective for s in group) and any(not s.defective for s in group)


def test_linear_probe_separates_linearly_separable_features() -> None:
    # Channel 0 carries the mask: a working probe must recover it almost perfectly.
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[:, 4:12, 4:12] = True
    features = torch.randn(4, 3, 4, 4) * 0.1
    features[:, 0] += masks.float().reshape(4, 4, 4, 4, 4).mean(dim=(2, 4)) * 4
    probs = linear_probe(features, masks, features, steps=200, seed=0)
    assert probs.shape == masks.shape
    assert auroc(probs.numpy().ravel(), masks.numpy().ravel()) > 0.95


def test_dense_probe_runs_end_to_end_on_a_tiny_backbone(tmp_path: Path) -> None:
    data = one_line_set(tmp_path / "set", size=32)
    result = dense_probe("random:test_vit", data, image_size=32, steps=5)
    for value in (result.linear_pixel_auroc, result.linear_aupro, result.nn_pixel_auroc, result.nn_aupro):
        assert 0.0 <= value <= 1.0
    assert result.train_images + result.test_images == 8


@pytest.mark.parametrize("data", ["missing", "empty"])
def test_probe_cli_bad_data_is_a_one_line_error(tmp_path: Path, data: str) -> None:
    folder = tmp_path / data
    if data == "empty":
        folder.mkdir()
    result = CliRunner().invoke(
        app, ["probe", "--backbone", "random:test_vit", "--data", str(folder), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and len(result.output.strip().splitlines()) == 1

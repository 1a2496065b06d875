from __future__ import annotations

import numpy as np
import pytest
import torch

from training.data.normalisation import PIXEL_MEAN, PIXEL_STD, normalise_image
from training.errors import UserError
from training.model_config import check_anomaly_options
from training.models.backbone import load_backbone
from training.models.hybrid import InspectionModel
from training.models.memory_bank import (
    calibrate_on_normal,
    empty_anomaly_head,
    fill_memory_bank,
)
from training.models.segmentation import fix_input_size

TILE = 32


def _model() -> InspectionModel:
    torch.manual_seed(0)
    backbone = fix_input_size(load_backbone("random:test_vit3", img_size=TILE), TILE).eval()
    return InspectionModel(backbone, anomaly=empty_anomaly_head(backbone, "vit")).eval()


def _images(count: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(2 * TILE, TILE, 3), dtype=np.uint8) for _ in range(count)]


def _candidate_rows(model: InspectionModel, images: list[np.ndarray]) -> torch.Tensor:
    rows = []
    for image in images:
        planes = normalise_image(image, PIXEL_MEAN, PIXEL_STD)
        tiles = torch.from_numpy(np.stack([planes[:, :TILE], planes[:, TILE:]]))
        features = model.anomaly_features(tiles)
        rows.append(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))
    return torch.cat(rows)


@torch.no_grad()
def test_one_bank_holds_bank_size_rows_drawn_from_the_normal_features() -> None:
    model, images = _model(), _images()
    fill_memory_bank(
        model, images, tile=TILE, mean=PIXEL_MEAN, std=PIXEL_STD, bank_size=6, device=torch.device("cpu")
    )
    bank = model.anomaly.scorer.memory_bank
    candidates = _candidate_rows(model, images)
    assert bank.shape == (6, candidates.shape[1])
    assert torch.cdist(bank, candidates).min(dim=1).values.max() < 1e-4


@torch.no_grad()
def test_neighbour_tiles_keep_one_bank_per_normal_tile() -> None:
    model, images = _model(), _images()
    fill_memory_bank(
        model,
        images,
        tile=TILE,
        mean=PIXEL_MEAN,
        std=PIXEL_STD,
        bank_size=8,
        device=torch.device("cpu"),
        neighbour_tiles=2,
    )
    assert model.anomaly.scorer.tile_banks.shape[:2] == (4, 4)  # 2 images x 2 tiles, 8 // 2 rows each


class _ConstantScores:
    def predict_outputs(self, image_rgb: np.ndarray, forward: object) -> list[np.ndarray]:
        return [np.linspace(0.0, 10.0, image_rgb.shape[0] * image_rgb.shape[1], dtype=np.float32)]


def test_calibration_fits_the_logistic_on_the_predictors_raw_scores() -> None:
    model = _model()
    calibrate_on_normal(model, _ConstantScores(), _images(1))
    assert 0.0 < float(model.anomaly.center) <= 10.0
    assert float(model.anomaly.scale) > 0.0


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"features": "rgb"}, "--anomaly-features"),
        ({"stride": 0}, "--anomaly-stride"),
        ({"neighbour_tiles": -1}, "--neighbour-tiles"),
        ({"context": 2}, "--anomaly-context"),
        ({"pixel_weight": -1.0}, "--anomaly-pixel-weight"),
    ],
)
def test_bad_anomaly_options_name_their_flag(options: dict, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        check_anomaly_options(**options)

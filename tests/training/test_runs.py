from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.errors import UserError
from training.models.backbone import load_backbone
from training.models.hybrid import InspectionModel, backbone_recipe
from training.models.memory_bank import empty_anomaly_head
from training.models.segmentation import SegmentationHead, default_feature_blocks, fix_input_size
from training.runs import MODEL_FILE, data_fingerprint, load_run, load_sample_tiles, save_run

TILE = 32
SPEC = "random:test_vit3"


def _hybrid() -> InspectionModel:
    torch.manual_seed(0)
    backbone = fix_input_size(load_backbone(SPEC, img_size=TILE), TILE)
    head = SegmentationHead(backbone.embed_dim, default_feature_blocks(len(backbone.blocks)))
    model = InspectionModel(
        backbone, segmentation=head, anomaly=empty_anomaly_head(backbone, "conv"), fusion_weight=0.5
    )
    with torch.no_grad():
        channels = model.anomaly_features(torch.zeros(1, 3, TILE, TILE)).shape[1]
    model.anomaly.set_memory_bank(torch.randn(5, channels))
    model.anomaly.calibrate(torch.linspace(0.0, 4.0, 101))
    return model.eval()


def test_a_saved_run_loads_back_to_the_same_model(tmp_path: Path) -> None:
    model, tiles = _hybrid(), torch.randn(2, 3, TILE, TILE)
    save_run(
        tmp_path,
        model,
        recipe=backbone_recipe(SPEC),
        tile=TILE,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        thresholds={"pixel": 0.3, "image": 0.6},
        metrics={"validation": {"f1": 0.5}},
        data_fingerprint="abc",
        sample_tiles=tiles,
    )
    run = load_run(tmp_path)
    assert (run.model.kind, run.tile, run.mean, run.std) == (
        "hybrid",
        TILE,
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )
    assert (run.thresholds, run.metrics, run.data_fingerprint) == (
        {"pixel": 0.3, "image": 0.6},
        {"validation": {"f1": 0.5}},
        "abc",
    )
    with torch.no_grad():
        assert torch.equal(run.model(tiles), model(tiles))
    assert torch.equal(load_sample_tiles(tmp_path), tiles)
    assert json.loads((tmp_path / "threshold.json").read_text()) == {"pixel": 0.3, "image": 0.6}


def test_a_folder_without_a_model_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=MODEL_FILE):
        load_run(tmp_path)


def test_data_fingerprint_follows_names_and_sizes(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"1234")
    before = data_fingerprint([tmp_path / "a.png"], tmp_path)
    (tmp_path / "a.png").write_bytes(b"12345")
    assert data_fingerprint([tmp_path / "a.png"], tmp_path) != before

"""The per-pixel head: shapes, size, a full-resolution path, and tiling equivalence."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.hybrid import InspectionModel, TorchPredictor
from training.models.backbone import create_vit
from training.models.segmentation import (
    SegmentationHead,
    count_parameters,
    default_feature_blocks,
    fix_input_size,
)


def tiny_model(tile: int = 32) -> InspectionModel:
    backbone = fix_input_size(create_vit("vit_tiny_patch16_224", img_size=tile, model_kwargs={"depth": 4}), tile)
    head = SegmentationHead(backbone.embed_dim, default_feature_blocks(4))
    return InspectionModel(backbone, segmentation=head).eval()


def test_output_is_one_probability_per_pixel() -> None:
    model = tiny_model()
    prob = model(torch.randn(2, 3, 32, 32))
    assert prob.shape == (2, 1, 32, 32)
    assert torch.all((prob >= 0) & (prob <= 1))


def test_conv_part_is_small() -> None:
    head = SegmentationHead(384, (5, 8, 11))  # ViT-S/16 with three feature blocks
    assert count_parameters(head) < 1_000_000


def test_a_single_pixel_reaches_its_own_output_pixel() -> None:
    # The full-resolution branch must see a 1-px change where it happens, not smeared over a 16-px patch.
    model = tiny_model()
    image = torch.zeros(1, 3, 32, 32, requires_grad=True)
    model.segmentation_logits(image)[0, 0, 9, 21].backward()
    saliency = image.grad.abs().sum(dim=1)[0]
    assert saliency[9, 21] > 0
    assert saliency[9, 21] >= 0.05 * saliency.max()


def test_tiling_reproduces_whole_image_prediction_of_an_equivariant_model() -> None:
    pointwise = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Sigmoid()).eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(77, 101, 3), dtype=np.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    predictor = TorchPredictor(pointwise, tile=32, overlap=4, mean=mean, std=std)
    tiled = predictor.predict(image)
    planes = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        whole = pointwise(planes[None])[0, 0].numpy()
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_constant_image_gives_a_seamless_map() -> None:
    model = tiny_model()
    predictor = TorchPredictor(model, tile=32, overlap=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    prob = predictor.predict(np.full((70, 90, 3), 120, dtype=np.uint8))
    # Every tile sees the same constant input, so the blend of identical maps must be the tile map itself
    # repeated: no step where tiles meet.
    tile_map = model(torch.full((1, 3, 32, 32), (120 / 255 - 0.5) / 0.25))[0, 0].detach().numpy()
    np.testing.assert_allclose(prob[:32, :32][4:-4, 4:-4], tile_map[4:-4, 4:-4], atol=1e-5)
    assert prob.shape == (70, 90)

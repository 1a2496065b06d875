"""The per-pixel head: shapes, size, a full-resolution path, and tiling equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.models.backbone import create_vit
from training.models.hybrid import InspectionModel
from training.models.segmentation import (
    SegmentationHead,
    count_parameters,
    default_feature_blocks,
    fix_input_size,
)
from training.predictor import TorchPredictor


def tiny_model(tile: int = 32) -> InspectionModel:
    backbone = fix_input_size(
        create_vit("vit_tiny_patch16_224", img_size=tile, model_kwargs={"depth": 4}), tile
    )
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


def _head_gradient(context: int) -> torch.Tensor:
    """|d logit(10, 10) / d image| of a head whose ViT maps are fixed inputs (so only the conv path sees the image)."""
    torch.manual_seed(0)
    head = SegmentationHead(8, (0,), context=context).eval()
    image = torch.randn(1, 3, 128, 128, requires_grad=True)
    maps = {0: torch.randn(1, 8, 8, 8)}
    head(image, maps)[0, 0, 10, 10].backward()
    return image.grad.abs().sum(dim=1)[0]


def test_texture_context_lets_a_pixel_see_the_whole_tile() -> None:
    # A blend of another material is told from its surroundings only by comparing textures over a wide
    # area: without the block the conv path of pixel (10, 10) ends well before (100, 100), with it the
    # tile mean reaches every pixel.
    assert _head_gradient(context=0)[90:, 90:].abs().max() == 0
    assert _head_gradient(context=7)[90:, 90:].abs().min() > 0


def test_texture_context_trains_on_a_flat_tile() -> None:
    # A constant image has zero variance in every window: the standard deviation must not give inf/NaN gradients.
    head = SegmentationHead(8, (0,), context=5).train()
    logits = head(torch.full((2, 3, 64, 64), 0.3), {0: torch.zeros(2, 8, 4, 4)})
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_texture_context_window_must_be_odd() -> None:
    with pytest.raises(ValueError, match="odd"):
        SegmentationHead(8, (0,), context=4)

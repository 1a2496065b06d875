"""Zero-label mode with a trained discriminator: a head learns "different from normal" from synthetic anomalies.

`fit-normal` alone scores each position by its distance to the nearest normal features; nothing in it
ever learned what a departure from the surface looks like. With `discriminator_steps` > 0 the
zero-label model also trains the per-pixel head, on the plant's own defect-free images with generic
synthetic anomalies drawn in (`training.data.synthetic_anomalies`), and fuses it with the
nearest-neighbour branch as the hybrid does. The backbone stays frozen, so the nearest-neighbour
branch reads exactly the features it read before. The fusion weight is chosen on held-out normal
images given synthetic anomalies of their own; the thresholds still come from clean held-out images.
"""

from __future__ import annotations

import numpy as np
import torch

from training.data.labeled import LabeledImages
from training.data.synthetic_anomalies import add_synthetic_anomaly
from training.finetune import CropSampler, optimise_segmentation
from training.fusion import fit_fusion_weight
from training.models.hybrid import InspectionModel
from training.models.segmentation import SegmentationHead, default_feature_blocks, default_head_context
from training.predictor import TorchPredictor

# Share of training crops given a synthetic anomaly; the rest teach the head what normal looks like.
SYNTHETIC_SHARE = 0.5
DISCRIMINATOR_LR = 1e-3


def train_synthetic_head(
    backbone: torch.nn.Module,
    normal_images: list[np.ndarray],
    *,
    tile: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    steps: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> SegmentationHead:
    """A segmentation head trained on `normal_images` with synthetic anomalies, the backbone frozen."""
    head = SegmentationHead(
        backbone.embed_dim, default_feature_blocks(len(backbone.blocks)), context=default_head_context(None)
    )
    model = InspectionModel(backbone, segmentation=head).to(device)
    data = LabeledImages(
        images=list(normal_images), masks=[np.zeros(i.shape[:2], bool) for i in normal_images]
    )
    sampler = CropSampler(data, tile, mean, std, seed, synthetic=SYNTHETIC_SHARE)
    model.backbone.requires_grad_(False)
    head.requires_grad_(True)
    optimise_segmentation(
        model.segmentation_logits,
        head,
        [{"params": list(head.parameters()), "lr": DISCRIMINATOR_LR}],
        sampler,
        steps=steps,
        batch_size=batch_size,
        device=device,
        label="discriminator ",
    )
    return head


def with_synthetic_anomalies(
    images: list[np.ndarray], seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each image (uint8 RGB) with one synthetic anomaly drawn in, deterministically; and the masks."""
    rng = np.random.default_rng([seed, 7])
    drawn, masks = [], []
    for image in images:
        changed, mask = add_synthetic_anomaly(
            image.astype(np.float32) / 255.0, np.zeros(image.shape[:2], np.float32), rng, images
        )
        drawn.append((changed * 255.0).round().astype(np.uint8))
        masks.append(mask > 0)
    return drawn, masks


def fit_fusion_on_synthetic(
    model: InspectionModel, predictor: TorchPredictor, held_out: list[np.ndarray], seed: int
) -> float:
    """Set the model's fusion weight on held-out normals with synthetic anomalies; returns it."""
    images, masks = with_synthetic_anomalies(held_out, seed)
    branches = [predictor.predict_outputs(image, model.branch_probabilities) for image in images]
    weight = fit_fusion_weight([b[0] for b in branches], [b[1] for b in branches], masks)
    model.fusion_weight.fill_(weight)
    return weight

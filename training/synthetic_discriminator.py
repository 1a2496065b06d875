"""The label-free model: a memory bank of normal features, and a head that learned "different from normal".

`fit-normal` alone scores each position by its distance to the nearest normal features; nothing in it
ever learned what a departure from the surface looks like. With discriminator steps the model also
trains the per-pixel head, on the plant's own defect-free images with generic synthetic anomalies
drawn in (`training.data.synthetic_anomalies`), and fuses it with the nearest-neighbour branch. The
backbone stays frozen. The bank reads the backbone's patch tokens, or (source "conv") the
discriminator's own conv encoder at 1/2 resolution: features at a fine stride that were trained on
normal images and synthetic anomalies only, never on a labeled defect. The fusion weight is chosen
on held-out normal images given synthetic anomalies of their own.

`build_label_free_model` is the zero-label model of `fit-normal`, and in `finetune --label-free-steps`
the branch fused with the supervised head: there it takes the place of the bank on the head's own
features, which were trained to find the labeled types and so describe the others less well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from training.data.labeled import LabeledImages
from training.data.normalisation import PIXEL_MEAN, PIXEL_STD
from training.data.synthetic_anomalies import add_synthetic_anomaly
from training.fusion import fit_fusion_weight
from training.head_training import CropSampler, optimise_segmentation
from training.models.anomaly import AnomalySource
from training.models.hybrid import InspectionModel
from training.models.memory_bank import calibrate_on_normal, empty_anomaly_head, fill_memory_bank
from training.models.segmentation import SegmentationHead, default_feature_blocks, default_head_context
from training.predictor import TorchPredictor, default_overlap

# Share of training crops given a synthetic anomaly; the rest teach the head what normal looks like.
SYNTHETIC_SHARE = 0.5
DISCRIMINATOR_LR = 1e-3


@dataclass(frozen=True)
class LabelFreeSettings:
    """How a label-free model is built (the verbs fill it from their run configs).

    Attributes:
        steps: discriminator training steps (0: the memory bank alone).
        source: what the bank reads: "vit" patch tokens or the discriminator's "conv" encoder.
        context: window of the texture statistics the bank rows carry (0: none).
        pixel_weight: weight of the image's own pixels in the bank rows (0: none).
    """

    tile: int
    steps: int
    batch_size: int
    bank_size: int
    neighbour_tiles: int
    source: AnomalySource
    context: int
    pixel_weight: float
    seed: int

    def __post_init__(self) -> None:
        if self.source == "conv" and self.steps < 1:
            raise ValueError("a bank on the discriminator's encoder needs discriminator steps")


def build_label_free_model(
    backbone: torch.nn.Module,
    bank_images: list[np.ndarray],
    calibration_images: list[np.ndarray],
    settings: LabelFreeSettings,
    device: torch.device,
) -> InspectionModel:
    """Train the discriminator (if any), fill and calibrate the bank, fuse: a model that saw no label.

    `bank_images` train the discriminator and fill the bank; `calibration_images`, defect-free
    images neither saw, calibrate the bank's map and choose the fusion weight.
    """
    mean, std = PIXEL_MEAN, PIXEL_STD
    segmentation = None
    if settings.steps > 0:
        segmentation = train_synthetic_head(
            backbone,
            bank_images,
            tile=settings.tile,
            mean=mean,
            std=std,
            steps=settings.steps,
            batch_size=settings.batch_size,
            device=device,
            seed=settings.seed,
        )
    anomaly = empty_anomaly_head(
        backbone, settings.source, context=settings.context, pixel_weight=settings.pixel_weight
    )
    model = InspectionModel(backbone, segmentation=segmentation, anomaly=anomaly.to(device)).eval()
    fill_memory_bank(
        model,
        bank_images,
        tile=settings.tile,
        mean=mean,
        std=std,
        bank_size=settings.bank_size,
        device=device,
        seed=settings.seed,
        neighbour_tiles=settings.neighbour_tiles,
    )
    predictor = label_free_predictor(model, settings, device)
    calibrate_on_normal(model, predictor, calibration_images)
    if segmentation is not None:
        fit_fusion_on_synthetic(model, predictor, calibration_images, settings.seed)
    return model


def label_free_predictor(
    model: InspectionModel, settings: LabelFreeSettings, device: torch.device
) -> TorchPredictor:
    """Whole-frame prediction with `model` at the settings' tile, as the service tiles frames."""
    return TorchPredictor(
        model,
        tile=settings.tile,
        overlap=default_overlap(settings.tile),
        mean=PIXEL_MEAN,
        std=PIXEL_STD,
        batch_size=settings.batch_size,
        device=device,
    )


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
        backbone.embed_dim,
        default_feature_blocks(len(backbone.blocks)),
        context=default_head_context(None),
        trained_on="synthetic",
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

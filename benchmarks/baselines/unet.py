"""The from-scratch U-Net baseline: plain supervision on the labeled masks, no pretraining at all.

It is what a plant would get without our backbone: strong with many masks, weak with few, and blind
to defect types absent from its labels. To make its numbers comparable with the fine-tuned models,
it trains on the very same images, crops, augmentations and focal + dice loss as `finetune`, picks
its thresholds the same way on the same validation split, and predicts whole frames through the
service's tiling (`TorchPredictor`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.data.labeled import LabeledSample
from training.errors import UserError
from training.finetune import choose_thresholds, load_images_with_masks, split_train_val
from training.head_training import CropSampler, optimise_segmentation
from training.models.backbone import PIXEL_MEAN, PIXEL_STD
from training.models.segmentation import ConvBlock
from training.predictor import TorchPredictor, default_overlap

log = logging.getLogger(__name__)


class UNet(nn.Module):
    """Encoder-decoder with skip connections: normalised tiles `[N, 3, T, T]` → defect logits `[N, 1, T, T]`.

    Each level halves the resolution with a strided conv; the decoder upsamples bilinearly and
    concatenates the encoder's map of the same size, so thin defects keep their full-resolution trace.

    Args:
        widths: channels per level, from full resolution down (4 levels by default).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128)) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError("a U-Net needs at least two levels")
        self.widths = tuple(int(w) for w in widths)
        self.encoders = nn.ModuleList(
            [ConvBlock(3, self.widths[0])]
            + [
                ConvBlock(w_in, w_out, stride=2)
                for w_in, w_out in zip(self.widths, self.widths[1:], strict=False)
            ]
        )
        # decoders[i] merges level i+1 (upsampled) into level i.
        self.decoders = nn.ModuleList(
            [
                ConvBlock(w_deep + w_skip, w_skip)
                for w_skip, w_deep in zip(self.widths, self.widths[1:], strict=False)
            ]
        )
        self.to_logit = nn.Conv2d(self.widths[0], 1, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        skips = []
        x = images
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        for level in reversed(range(len(self.decoders))):
            skip = skips[level]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.decoders[level](torch.cat([x, skip], dim=1))
        return self.to_logit(x)


@dataclass(frozen=True)
class UNetConfig:
    """Training options of the baseline (the shared ones mean what they mean in `FinetuneConfig`)."""

    image_size: int = 224
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-3
    widths: tuple[int, ...] = (16, 32, 64, 128)
    val_fraction: float = 0.2
    copy_paste: float = 0.0
    device: str = "cpu"
    seed: int = 0


@dataclass
class TrainedUNet:
    """A trained baseline, ready to predict whole frames."""

    predictor: TorchPredictor  # probability per pixel, through the service's tiling
    thresholds: dict[str, float]
    validation: dict
    losses: list[float]


def train_unet(samples: list[LabeledSample], config: UNetConfig) -> TrainedUNet:
    """Train the U-Net on `samples` (defective and defect-free), thresholds chosen on a validation split.

    The train/validation split is `finetune`'s, so given the same samples and seed both models see
    the same training images.

    Raises:
        UserError: no defective image among the training samples.
    """
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    train_samples, val_samples = split_train_val(samples, config.val_fraction, config.seed)
    train, val = load_images_with_masks(train_samples), load_images_with_masks(val_samples)
    if not train.defective_indices():
        raise UserError("the U-Net baseline needs at least one readable defective training image")
    net = UNet(config.widths).to(device)
    sampler = CropSampler(
        train, config.image_size, PIXEL_MEAN, PIXEL_STD, config.seed, copy_paste=config.copy_paste
    )
    losses = optimise_segmentation(
        net,
        net,
        [{"params": list(net.parameters()), "lr": config.lr}],
        sampler,
        steps=max(1, config.steps),
        batch_size=config.batch_size,
        device=device,
        label="U-Net ",
    )
    probabilities = nn.Sequential(net, nn.Sigmoid()).eval()
    predictor = TorchPredictor(
        probabilities,
        tile=config.image_size,
        overlap=default_overlap(config.image_size),
        mean=PIXEL_MEAN,
        std=PIXEL_STD,
        device=device,
    )
    thresholds, validation = choose_thresholds(predictor, val)
    return TrainedUNet(predictor=predictor, thresholds=thresholds, validation=validation, losses=losses)

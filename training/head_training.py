"""What every per-pixel head here trains with: augmented crops with their masks, focal + dice, one loop.

`finetune` trains the supervised head with it, `training.synthetic_discriminator` the label-free
discriminator, and the benchmark's U-Net baseline its own network, so all three see the same crops,
loss and schedule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from training.data.copy_paste import cut_defect_pieces, paste_piece
from training.data.labeled import LabeledImages
from training.data.synthetic_anomalies import add_synthetic_anomaly
from training.errors import UserError
from training.progress import progress_bar

log = logging.getLogger(__name__)

DEFECT_CROP_PROBABILITY = 0.7  # share of crops centred near a defect pixel


def focal_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, *, alpha: float = 0.75, gamma: float = 2.0
) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al., 2017) + soft dice over the batch."""
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_true = prob * target + (1 - prob) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    focal = (alpha_t * (1 - p_true) ** gamma * bce).mean()
    # Dice over the whole batch (not per image): crops without defect then do not divide by zero.
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return focal + dice


class CropSampler:
    """Random augmented tile-sized crops of the training images, with their masks.

    With `copy_paste` > 0, that share of the crops also gets one labeled defect of the training set
    pasted in (see `training.data.copy_paste`); with `synthetic` > 0, that share gets a generic
    synthetic anomaly (see `training.data.synthetic_anomalies`), so the head also learns "different
    from normal" and not only the labeled shapes.
    """

    def __init__(
        self,
        data: LabeledImages,
        tile: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        seed: int,
        *,
        copy_paste: float = 0.0,
        synthetic: float = 0.0,
    ) -> None:
        if not 0.0 <= copy_paste <= 1.0:
            raise UserError(f"--copy-paste must be a share between 0 and 1, got {copy_paste}")
        if not 0.0 <= synthetic <= 1.0:
            raise UserError(f"--synthetic-anomalies must be a share between 0 and 1, got {synthetic}")
        self.synthetic = synthetic
        self.data, self.tile, self.rng = data, tile, np.random.default_rng(seed)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]
        self.defective = data.defective_indices()
        self.copy_paste = copy_paste
        self.pieces = cut_defect_pieces(data.images, data.masks) if copy_paste > 0 else []

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        crops = [self._one() for _ in range(size)]
        images = torch.from_numpy(np.stack([c[0] for c in crops]))
        masks = torch.from_numpy(np.stack([c[1] for c in crops]))[:, None]
        return images, masks

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        near_defect = bool(self.defective) and self.rng.random() < DEFECT_CROP_PROBABILITY
        index = (
            int(self.rng.choice(self.defective))
            if near_defect
            else int(self.rng.integers(len(self.data.images)))
        )
        image, mask = _pad_to(self.data.images[index], self.tile), _pad_to(self.data.masks[index], self.tile)
        top, left = self._corner(mask if near_defect else None, image.shape[:2])
        image = image[top : top + self.tile, left : left + self.tile].astype(np.float32) / 255.0
        mask = mask[top : top + self.tile, left : left + self.tile].astype(np.float32)
        if self.pieces and self.rng.random() < self.copy_paste:
            image, mask = paste_piece(
                image, mask, self.pieces[int(self.rng.integers(len(self.pieces)))], self.rng
            )
        if self.synthetic and self.rng.random() < self.synthetic:
            image, mask = add_synthetic_anomaly(image, mask, self.rng, self.data.images)
        image = np.clip(
            (image - 0.5) * self.rng.uniform(0.8, 1.2) + 0.5 + self.rng.uniform(-0.08, 0.08), 0, 1
        )
        image, mask = self._flip_rotate(image, mask)
        planes = (image.transpose(2, 0, 1) - self.mean) / self.std
        return np.ascontiguousarray(planes, dtype=np.float32), np.ascontiguousarray(mask)

    def _corner(self, mask: np.ndarray | None, shape: tuple[int, int]) -> tuple[int, int]:
        height, width = shape
        if mask is None or not mask.any():
            return int(self.rng.integers(height - self.tile + 1)), int(
                self.rng.integers(width - self.tile + 1)
            )
        rows, cols = np.nonzero(mask)
        pick = int(self.rng.integers(len(rows)))
        # The defect pixel lands anywhere in the crop's middle half, not always at its centre.
        jitter = self.rng.integers(-self.tile // 4, self.tile // 4 + 1, size=2)
        top = int(np.clip(rows[pick] - self.tile // 2 + jitter[0], 0, height - self.tile))
        left = int(np.clip(cols[pick] - self.tile // 2 + jitter[1], 0, width - self.tile))
        return top, left

    def _flip_rotate(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        turns = int(self.rng.integers(4))
        return np.rot90(image, turns), np.rot90(mask, turns)


def _pad_to(array: np.ndarray, tile: int) -> np.ndarray:
    pad_h, pad_w = max(tile - array.shape[0], 0), max(tile - array.shape[1], 0)
    if not pad_h and not pad_w:
        return array
    widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (array.ndim - 2)
    return np.pad(array, widths, mode="reflect" if min(array.shape[:2]) > 1 else "edge")


def optimise_segmentation(
    forward: Callable[[torch.Tensor], torch.Tensor],
    module: torch.nn.Module,
    param_groups: list[dict],
    sampler: CropSampler,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    label: str = "",
) -> list[float]:
    """The supervised loop every per-pixel model here shares: AdamW, warm-up then cosine, focal + dice.

    bf16 autocast on CUDA for the forward pass only; the loss is computed in fp32. `module` is put in
    training mode for the loop and frozen in eval mode after it. Returns the loss per step.
    """
    optimizer = torch.optim.AdamW(param_groups, weight_decay=1e-4)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    module.train()
    losses = []
    bar = progress_bar(steps, f"{label}fine-tuning".strip(), unit="step")
    for step in range(steps):
        images, masks = sampler.batch(batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = forward(images.to(device))
        loss = focal_dice_loss(logits.float(), masks.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if step % 50 == 0 or step == steps - 1:
            log.info("%sstep %d/%d loss %.4f", label, step + 1, steps, losses[-1])
    bar.close()
    module.eval().requires_grad_(False)
    return losses

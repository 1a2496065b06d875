"""Fine-tune the per-pixel head (and optionally the last ViT blocks) on a few labeled masks.

The loop trains on random tile-sized crops, most of them centred near a defect (tiny defects are
otherwise almost never seen), with flips, 90° rotations and a mild colour jitter. The loss is focal
+ dice: focal keeps the flood of easy normal pixels from drowning the few defect pixels, dice
rewards overlap directly whatever a defect's size. After training, the memory bank of the anomaly
branch is built from the defect-free training images, the fusion weight and the decision thresholds
are chosen on the validation split (the image threshold for a target recall, see
`training.decision`), and the run is saved.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.data.copy_paste import DefectPiece, cut_defect_pieces, paste_piece
from training.data.labeled import (
    LabeledImages,
    LabeledSample,
    load_images_with_masks,
    load_labeled_sets,
    pick_per_line,
)
from training.data.normalisation import PIXEL_MEAN, PIXEL_STD
from training.data.splits import holdout_split
from training.data.synthetic_anomalies import add_synthetic_anomaly
from training.decision import choose_image_threshold, synthetic_defects
from training.distributed import torch_device
from training.errors import UserError
from training.fusion import fit_fusion_weight
from training.metrics import best_f1_threshold, segmentation_summary
from training.model_config import DEFAULT_TARGET_RECALL, FinetuneConfig, default_top_pixels
from training.models.backbone import load_backbone
from training.models.hybrid import InspectionModel, backbone_recipe
from training.models.memory_bank import (
    calibrate_on_normal,
    empty_anomaly_head,
    fill_memory_bank,
)
from training.models.segmentation import (
    SegmentationHead,
    default_feature_blocks,
    fix_input_size,
)
from training.predictor import TorchPredictor, default_overlap
from training.progress import progress, progress_bar
from training.run_config import write_config
from training.runs import data_fingerprint, sample_tiles, save_run
from training.training_data import write_training_images

log = logging.getLogger(__name__)

DEFECT_CROP_PROBABILITY = 0.7  # share of crops centred near a defect pixel


def split_train_val(
    samples: list[LabeledSample], fraction: float, seed: int
) -> tuple[list[LabeledSample], list[LabeledSample]]:
    """Deterministic split, made separately for defective and defect-free samples so both reach validation.

    With a single defective sample there is nothing to hold out: it trains, and validation reuses it.
    """
    train, val = [], []
    for group in ([s for s in samples if s.defective], [s for s in samples if not s.defective]):
        group = sorted(group, key=lambda s: s.stem)
        keep, held = holdout_split(len(group), fraction, seed)
        train += [group[i] for i in keep]
        val += [group[i] for i in held]
    if not any(s.defective for s in val):
        val += [s for s in train if s.defective]
    return train, val


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


def total_steps(config: FinetuneConfig, train_images: int) -> int:
    """`--steps`, or `--epochs` passes of one crop per training image."""
    if config.epochs is not None:
        return max(1, config.epochs * math.ceil(train_images / config.batch_size))
    return max(1, int(config.steps or 1))


def train_head(
    model: InspectionModel, sampler: CropSampler, config: FinetuneConfig, device: torch.device
) -> list[float]:
    """Choose what trains (the head, and the last backbone blocks if unfrozen), then optimise it."""
    model.segmentation.requires_grad_(True)
    model.backbone.requires_grad_(False)
    if config.unfreeze_last > 0:
        for block in model.backbone.blocks[-config.unfreeze_last :]:
            block.requires_grad_(True)
        model.backbone.norm.requires_grad_(True)
    backbone_params = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [{"params": list(model.segmentation.parameters()), "lr": config.lr}]
    if backbone_params:
        groups.append({"params": backbone_params, "lr": config.lr * config.backbone_lr_scale})
    steps = total_steps(config, len(sampler.data.images))
    return optimise_segmentation(
        model.segmentation_logits,
        model,
        groups,
        sampler,
        steps=steps,
        batch_size=config.batch_size,
        device=device,
    )


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


def finetune(config: FinetuneConfig) -> dict:
    """Fine-tune, build the anomaly branch, pick fusion and thresholds on validation, save the run.

    Returns:
        The validation metrics written to the run's `metrics.json`.

    Raises:
        UserError: no defective image in the labeled set, masks that do not fit their images, a bad backbone.
    """
    torch.manual_seed(config.seed)
    device = torch_device(config.device)
    samples = select_samples(config)
    train_samples, val_samples = split_train_val(samples, config.val_fraction, config.seed)
    train, val = load_images_with_masks(train_samples), load_images_with_masks(val_samples)
    tile = config.image_size
    backbone = fix_input_size(load_backbone(config.backbone, img_size=tile), tile)
    mean, std = PIXEL_MEAN, PIXEL_STD
    head = SegmentationHead(
        backbone.embed_dim, default_feature_blocks(len(backbone.blocks)), context=config.head_context
    )
    model = InspectionModel(backbone, segmentation=head).to(device)
    sampler = CropSampler(
        train,
        tile,
        mean,
        std,
        config.seed,
        copy_paste=config.copy_paste,
        synthetic=config.synthetic_anomalies,
    )
    losses = train_head(model, sampler, config, device)

    predictor = TorchPredictor(
        model, tile=tile, overlap=default_overlap(tile), mean=mean, std=std, device=device
    )
    normal_train = [img for img, m in zip(train.images, train.masks, strict=True) if not m.any()]
    if config.anomaly_branch and len(normal_train) >= 2:
        add_anomaly_branch(model, predictor, normal_train, val, config, mean, std, device)
    elif config.anomaly_branch:
        log.warning(
            "fewer than 2 defect-free training images: no anomaly branch, the model is supervised only"
        )
    pieces = cut_defect_pieces(train.images, train.masks)
    thresholds, metrics = choose_thresholds(
        predictor,
        val,
        pieces,
        target_recall=config.target_recall,
        top_pixels=config.image_top_pixels,
        seed=config.seed,
    )
    metrics.update(
        kind=model.kind,
        train_images=len(train.images),
        train_defective=len(train.defective_indices()),
        val_images=len(val.images),
        final_loss=float(np.mean(losses[-10:])),
        steps=len(losses),
    )
    save_run(
        config.out,
        model.cpu(),
        recipe=backbone_recipe(config.backbone),
        tile=tile,
        mean=mean,
        std=std,
        thresholds=thresholds,
        metrics={"validation": metrics},
        data_fingerprint=_fingerprint(samples, config.data_roots),
        sample_tiles=sample_tiles(val.images, tile, mean, std),
    )
    write_training_images(config.out, [s.image for s in samples])
    write_config(replace(config, device=str(device)), config.out)
    return metrics


def select_samples(config: FinetuneConfig) -> list[LabeledSample]:
    labeled = load_labeled_sets(config.data_roots)
    if not labeled.defective:
        folders = ", ".join(str(root) for root in config.data_roots)
        raise UserError(
            f"{folders} hold(s) no image with a defect mask; use fit-normal for defect-free images only"
        )
    defective = labeled.defective
    if config.labeled_defects is not None:
        defective = pick_per_line(defective, config.labeled_defects, config.seed)
    return sorted(defective + labeled.defect_free, key=lambda s: s.stem)


def _fingerprint(samples: list[LabeledSample], roots: tuple[Path, ...]) -> str:
    """One folder: the fingerprint of its files; several: a digest of each folder's fingerprint, in order."""
    per_root = []
    for root in roots:
        files = [p for s in samples for p in (s.image, s.mask) if p is not None and p.is_relative_to(root)]
        per_root.append(data_fingerprint(files, root))
    return per_root[0] if len(per_root) == 1 else hashlib.sha256("\n".join(per_root).encode()).hexdigest()


def add_anomaly_branch(
    model: InspectionModel,
    predictor: TorchPredictor,
    normal_train: list[np.ndarray],
    val: LabeledImages,
    config: FinetuneConfig,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> None:
    """Memory bank from defect-free training images; calibration on held-out normals; fusion weight on validation.

    The bank takes every defect-free training image (with few images, each one more in the bank
    visibly lowers false alarms) and the calibration the validation split's defect-free images,
    which the bank never saw. Without any, a fifth of the training ones is held out for it instead.
    """
    calibration = [img for img, m in zip(val.images, val.masks, strict=True) if not m.any()]
    bank = normal_train
    if not calibration:
        bank_idx, calib_idx = holdout_split(len(normal_train), config.val_fraction, config.seed)
        bank, calibration = [normal_train[i] for i in bank_idx], [normal_train[i] for i in calib_idx]
    model.anomaly = empty_anomaly_head(
        model.backbone,
        config.anomaly_features,
        config.anomaly_stride,
        config.anomaly_context,
        config.anomaly_pixel_weight,
    ).to(device)
    fill_memory_bank(
        model,
        bank,
        tile=config.image_size,
        mean=mean,
        std=std,
        bank_size=config.bank_size,
        device=device,
        seed=config.seed,
        neighbour_tiles=config.neighbour_tiles,
    )
    calibrate_on_normal(model, predictor, calibration)
    branch_maps = [
        predictor.predict_outputs(img, model.branch_probabilities)
        for img in progress(val.images, "fusion weight")
    ]
    weight = fit_fusion_weight([b[0] for b in branch_maps], [b[1] for b in branch_maps], val.masks)
    model.fusion_weight.fill_(weight)


def choose_thresholds(
    predictor: TorchPredictor,
    val: LabeledImages,
    pieces: Sequence[DefectPiece] = (),
    *,
    target_recall: float = DEFAULT_TARGET_RECALL,
    top_pixels: int | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], dict]:
    """Pixel threshold at max pooled F1 on validation; image threshold for `target_recall`.

    The image threshold is chosen on the validation defects plus synthetic ones drawn on (and
    training defects pasted onto) the validation split's defect-free images (`training.decision`);
    what it promises is returned in the metrics under `decision`.
    """
    maps = [predictor.predict(image) for image in progress(val.images, "thresholds")]
    scores = np.concatenate([m.ravel() for m in maps])
    labels = np.concatenate([m.ravel() for m in val.masks])
    pixel = float(min(best_f1_threshold(scores, labels).threshold, 1.0))
    normal_images = [image for image, mask in zip(val.images, val.masks, strict=True) if not mask.any()]
    synthetic_images, _ = synthetic_defects(normal_images, pieces, seed)
    decision = choose_image_threshold(
        [m for m, mask in zip(maps, val.masks, strict=True) if mask.any()],
        [predictor.predict(image) for image in synthetic_images],
        [m for m, mask in zip(maps, val.masks, strict=True) if not mask.any()],
        target_recall=target_recall,
        top_pixels=top_pixels or default_top_pixels(predictor.tile),
    )
    thresholds = {"pixel": pixel, "image": decision.threshold, "image_top_pixels": decision.top_pixels}
    metrics = segmentation_summary(
        maps,
        val.masks,
        pixel_threshold=pixel,
        image_threshold=decision.threshold,
        top_pixels=decision.top_pixels,
    )
    metrics["decision"] = decision.as_dict()
    log.info(
        "image threshold %.4f for recall %.2f: expected recall %.3f (real defects %.3f), false-alarm rate "
        "%.3f on %d defect-free validation images",
        decision.threshold,
        decision.target_recall,
        decision.expected_recall,
        decision.expected_recall_real,
        decision.expected_false_alarm_rate,
        decision.normal_images,
    )
    return thresholds, metrics

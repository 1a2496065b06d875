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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from training.data.copy_paste import DefectPiece, cut_defect_pieces
from training.data.labeled import (
    LabeledImages,
    LabeledSample,
    load_images_with_masks,
    load_labeled_sets,
    pick_per_line,
)
from training.data.normalisation import PIXEL_MEAN, PIXEL_STD
from training.data.splits import holdout_split
from training.decision import choose_image_threshold, synthetic_defects
from training.distributed import torch_device
from training.errors import UserError
from training.fusion import fit_fusion_weight
from training.head_training import CropSampler, optimise_segmentation
from training.metrics import best_f1_threshold, segmentation_summary
from training.model_config import DEFAULT_TARGET_RECALL, FinetuneConfig, default_top_pixels
from training.models.anomaly import default_context, default_pixel_weight
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
from training.progress import progress
from training.run_config import write_config
from training.runs import data_fingerprint, sample_tiles, save_run
from training.training_data import write_training_images

log = logging.getLogger(__name__)


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

    The bank reads the head's own features, or with `label_free_steps` it belongs to a label-free
    model (`training.synthetic_discriminator`) that stands in for it. The bank takes every defect-free training image (with few images, each one more in the bank
    visibly lowers false alarms) and the calibration the validation split's defect-free images,
    which the bank never saw. Without any, a fifth of the training ones is held out for it instead.
    """
    calibration = [img for img, m in zip(val.images, val.masks, strict=True) if not m.any()]
    bank = normal_train
    if not calibration:
        bank_idx, calib_idx = holdout_split(len(normal_train), config.val_fraction, config.seed)
        bank, calibration = [normal_train[i] for i in bank_idx], [normal_train[i] for i in calib_idx]
    if config.label_free_steps:
        model.label_free = label_free_branch(model, bank, calibration, config, device)
    else:
        _fill_anomaly_head(model, predictor, bank, calibration, config, mean, std, device)
    branch_maps = [
        predictor.predict_outputs(img, model.branch_probabilities)
        for img in progress(val.images, "fusion weight")
    ]
    weight = fit_fusion_weight([b[0] for b in branch_maps], [b[1] for b in branch_maps], val.masks)
    model.fusion_weight.fill_(weight)


def label_free_branch(
    model: InspectionModel,
    bank: list[np.ndarray],
    calibration: list[np.ndarray],
    config: FinetuneConfig,
    device: torch.device,
) -> InspectionModel:
    """The label-free model on the run's backbone: a discriminator and a bank on its own encoder."""
    from training.synthetic_discriminator import LabelFreeSettings, build_label_free_model

    on_conv = config.anomaly_features == "conv"
    settings = LabelFreeSettings(
        tile=config.image_size,
        steps=config.label_free_steps,
        batch_size=config.batch_size,
        bank_size=config.bank_size,
        neighbour_tiles=config.neighbour_tiles,
        source="conv",
        # The branch's bank always reads conv features: the run's settings where they are for conv.
        context=config.anomaly_context if on_conv else default_context("conv", None),
        pixel_weight=config.anomaly_pixel_weight if on_conv else default_pixel_weight("conv", None),
        seed=config.seed,
    )
    return build_label_free_model(model.backbone, bank, calibration, settings, device)


def _fill_anomaly_head(
    model: InspectionModel,
    predictor: TorchPredictor,
    bank: list[np.ndarray],
    calibration: list[np.ndarray],
    config: FinetuneConfig,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> None:
    """The memory bank on the head's own features, calibrated on held-out normals."""
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
    if (warning := decision.warning()) is not None:
        log.warning(warning)
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

"""Zero-label mode: fit an anomaly model on defect-free images only.

The defect-free images are split (deterministically) into a part whose patch features fill the
memory bank and a held-out part that calibrates the map and sets the thresholds: scores of patches
that are themselves in the bank would be near zero and make every threshold far too low. No defect
was ever seen, so the image threshold is chosen for a target recall on synthetic defects drawn on
the held-out images (`training.decision`), and its false-alarm rate measured on those images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from training.data.images import read_images
from training.data.labeled import list_normal_images
from training.data.normalisation import PIXEL_MEAN, PIXEL_STD
from training.data.splits import holdout_split
from training.decision import (
    ImageDecision,
    choose_image_threshold,
    synthetic_defects,
)
from training.distributed import torch_device
from training.errors import UserError
from training.model_config import FitNormalConfig, default_top_pixels
from training.models.backbone import load_backbone
from training.models.hybrid import backbone_recipe
from training.models.segmentation import fix_input_size
from training.progress import progress
from training.run_config import write_config
from training.runs import data_fingerprint, sample_tiles, save_run
from training.synthetic_discriminator import LabelFreeSettings, build_label_free_model, label_free_predictor
from training.training_data import write_training_images

log = logging.getLogger(__name__)

PIXEL_QUANTILE = 0.999  # pixel threshold: this quantile of held-out normal probabilities


def normal_thresholds(
    predict: Callable[[np.ndarray], np.ndarray],
    held_out: list[np.ndarray],
    maps: list[np.ndarray],
    *,
    target_recall: float,
    top_pixels: int,
    seed: int,
) -> tuple[dict[str, float], ImageDecision]:
    """Pixel threshold: a high quantile of the held-out normal maps. Image threshold: for the target
    recall of synthetic defects drawn on the held-out images (no real defect was ever seen)."""
    pixel = float(np.quantile(np.concatenate([m.ravel() for m in maps]), PIXEL_QUANTILE))
    synthetic_images, _ = synthetic_defects(held_out, [], seed)
    decision = choose_image_threshold(
        [],
        [predict(image) for image in synthetic_images],
        maps,
        target_recall=target_recall,
        top_pixels=top_pixels,
    )
    if (warning := decision.warning()) is not None:
        log.warning(warning)
    return {"pixel": pixel, "image": decision.threshold, "image_top_pixels": decision.top_pixels}, decision


def fit_normal(config: FitNormalConfig) -> dict[str, float]:
    """Build, calibrate and save a zero-label model run. Returns its thresholds.

    Raises:
        UserError: fewer than two readable defect-free images, or a bad backbone spec.
    """
    torch.manual_seed(config.seed)  # a random-init backbone is then the same on every run
    device = torch_device(config.device)
    images, paths = read_images(list_normal_images(config.data))
    if len(images) < 2:
        raise UserError(
            f"{config.data} holds {len(images)} readable defect-free image(s); zero-label mode needs at least 2"
        )
    bank_idx, held_idx = holdout_split(len(images), config.holdout_fraction, config.seed)
    backbone = (
        fix_input_size(load_backbone(config.backbone, img_size=config.image_size), config.image_size)
        .to(device)
        .eval()
    )
    mean, std = PIXEL_MEAN, PIXEL_STD
    held_out = [images[i] for i in held_idx]
    settings = LabelFreeSettings(
        tile=config.image_size,
        steps=config.discriminator_steps,
        batch_size=config.batch_size,
        bank_size=config.bank_size,
        neighbour_tiles=config.neighbour_tiles,
        source=config.anomaly_features,
        context=config.anomaly_context,
        pixel_weight=config.anomaly_pixel_weight,
        seed=config.seed,
    )
    model = build_label_free_model(backbone, [images[i] for i in bank_idx], held_out, settings, device)
    predictor = label_free_predictor(model, settings, device)
    maps = [predictor.predict(image) for image in progress(held_out, "thresholds")]
    thresholds, decision = normal_thresholds(
        predictor.predict,
        held_out,
        maps,
        target_recall=config.target_recall,
        top_pixels=config.image_top_pixels or default_top_pixels(config.image_size),
        seed=config.seed,
    )
    metrics = {
        "normal_images": len(images),
        "bank_images": len(bank_idx),
        "calibration_images": len(held_idx),
        "held_out_max_probability": float(max(m.max() for m in maps)),
        "decision": decision.as_dict(),
    }
    save_run(
        config.out,
        model.cpu(),
        recipe=backbone_recipe(config.backbone),
        tile=config.image_size,
        mean=mean,
        std=std,
        thresholds=thresholds,
        metrics={"validation": metrics},
        data_fingerprint=data_fingerprint(paths, config.data),
        sample_tiles=sample_tiles(held_out, config.image_size, mean, std),
    )
    write_training_images(config.out, paths)
    write_config(replace(config, device=str(device)), config.out)
    return thresholds

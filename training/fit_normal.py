"""Zero-label mode: fit an anomaly model on defect-free images only.

The defect-free images are split (deterministically) into a part whose patch features fill the
memory bank and a held-out part that calibrates the map and sets the thresholds: scores of patches
that are themselves in the bank would be near zero and make every threshold far too low. No defect
was ever seen, so the image threshold is chosen for a target recall on synthetic defects drawn on
the held-out images (`training.decision`), and its false-alarm rate measured on those images.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from training.data.images import SkipCounter, list_images, read_image_rgb
from training.decision import (
    ImageDecision,
    choose_image_threshold,
    default_top_pixels,
    synthetic_defects,
)
from training.distributed import torch_device
from training.errors import UserError
from training.hybrid import (
    InspectionModel,
    TorchPredictor,
    backbone_recipe,
    default_overlap,
    normalise_image,
    save_run,
)
from training.model_config import FitNormalConfig
from training.models.anomaly import (
    AnomalyHead,
    AnomalySource,
    anomaly_feature_blocks,
    greedy_coreset,
    tile_descriptor,
)
from training.models.backbone import PIXEL_MEAN, PIXEL_STD, load_backbone
from training.models.segmentation import fix_input_size
from training.progress import progress
from training.run_config import write_config
from training.training_data import write_training_images

log = logging.getLogger(__name__)

# Bank rows gathered before the coreset step; beyond this a random subsample keeps memory bounded.
MAX_CANDIDATE_PATCHES = 200_000
# Normal tiles that keep a bank of their own (retrieval mode); more are thinned to cover their variety.
MAX_BANK_TILES = 96
PIXEL_QUANTILE = 0.999  # pixel threshold: this quantile of held-out normal probabilities


def data_fingerprint(paths: list[Path], root: Path) -> str:
    """sha256 over the sorted relative paths and sizes of the training files (cheap, content-sensitive enough)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def read_images(paths: list[Path]) -> tuple[list[np.ndarray], list[Path]]:
    """Decode images, skipping unreadable files (logged once). Returns images and their paths."""
    skipped = SkipCounter()
    images, kept = [], []
    for path in paths:
        image = read_image_rgb(path)
        if image is None:
            skipped.add(path)
            continue
        images.append(image)
        kept.append(path)
    if skipped.skipped:
        log.warning(skipped.summary())
    return images, kept


def holdout_split(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held-out) indices: a seeded permutation, at least one of each when `count` ≥ 2."""
    if count < 2:
        return list(range(count)), []
    order = np.random.default_rng(seed).permutation(count)
    held = min(max(1, round(count * fraction)), count - 1)
    return sorted(order[held:].tolist()), sorted(order[:held].tolist())


def empty_anomaly_head(
    backbone: torch.nn.Module, source: AnomalySource, stride: int = 1, context: int = 0, pixel_weight: float = 0.0
) -> AnomalyHead:
    """An anomaly head reading `source` features of `backbone`'s mid-level blocks, its bank still to fill."""
    return AnomalyHead(torch.zeros(1, 1), anomaly_feature_blocks(len(backbone.blocks)), source=source, stride=stride,
                       context=context, pixel_weight=pixel_weight)


@torch.no_grad()
def fill_memory_bank(
    model: InspectionModel,
    images: list[np.ndarray],
    *,
    tile: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    bank_size: int,
    device: torch.device,
    seed: int = 0,
    neighbour_tiles: int = 0,
    max_bank_tiles: int = MAX_BANK_TILES,
) -> None:
    """Fill `model.anomaly`'s memory bank with greedy coresets of the normal images' features.

    The features are whatever the head reads (its source and stride). Images are tiled without
    overlap. With `neighbour_tiles` 0 there is one bank of `bank_size` rows; otherwise each normal
    tile keeps a bank of its own, of `bank_size // neighbour_tiles` rows, so that a query still meets
    `bank_size` rows (see `training.models.anomaly`); at most `max_bank_tiles` tiles are kept, chosen
    to cover the range of surfaces (k-center on their descriptors).
    """
    if neighbour_tiles:
        _fill_tile_banks(model, images, tile=tile, mean=mean, std=std, bank_size=bank_size, device=device,
                         neighbour_tiles=neighbour_tiles, max_bank_tiles=max_bank_tiles, seed=seed)
        return
    generator = torch.Generator().manual_seed(seed)
    # Each image contributes at most its share of MAX_CANDIDATE_PATCHES rows (a random subset), so memory
    # stays bounded however many high-resolution images there are and fine (2 px) features are.
    per_image = max(1, MAX_CANDIDATE_PATCHES // max(len(images), 1))
    rows = []
    for features in _feature_tiles(model, images, tile=tile, mean=mean, std=std, device=device):
        features = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).cpu()
        if features.shape[0] > per_image:
            features = features[torch.randperm(features.shape[0], generator=generator)[:per_image]]
        rows.append(features)
    candidates = torch.cat(rows)
    chosen = greedy_coreset(candidates.to(device), bank_size, seed=seed).cpu()
    log.info("memory bank (%s features): %d of %d normal positions", model.anomaly.source, len(chosen),
             candidates.shape[0])
    model.anomaly.set_memory_bank(candidates[chosen].to(device))


def _feature_tiles(
    model: InspectionModel, images: list[np.ndarray], *, tile: int, mean: tuple[float, ...],
    std: tuple[float, ...], device: torch.device, desc: str = "memory bank",
) -> Iterator[torch.Tensor]:
    """Per image, the anomaly features `[tiles, C, h, w]` of its non-overlapping tiles."""
    from inspect_svc.engine.tiling import extract_tiles, plan_tiles

    for image in progress(images, desc):
        boxes = plan_tiles(image.shape[0], image.shape[1], tile, 0)
        tiles = torch.from_numpy(extract_tiles(normalise_image(image, mean, std), boxes, tile)).to(device)
        yield model.anomaly_features(tiles)


def _fill_tile_banks(
    model: InspectionModel, images: list[np.ndarray], *, tile: int, mean: tuple[float, ...],
    std: tuple[float, ...], bank_size: int, neighbour_tiles: int, max_bank_tiles: int, device: torch.device,
    seed: int,
) -> None:
    """One coreset bank per normal tile, keyed by its descriptor (`fill_memory_bank` with neighbour tiles).

    Two passes over the images: the first only describes every tile and picks the ones to keep, so
    the coresets (the costly part) are built for kept tiles alone and no discarded bank is held.
    """
    features_of = partial(_feature_tiles, model, tile=tile, mean=mean, std=std, device=device)
    descriptors = [tile_descriptor(features).cpu() for features in features_of(images, desc="memory bank: surfaces")]
    keys = torch.cat(descriptors)
    kept = torch.arange(len(keys))
    if len(keys) > max_bank_tiles:  # thin them to the ones that cover the surfaces' variety
        kept = greedy_coreset(keys.to(device), max_bank_tiles, seed=seed).cpu()
    where = [(image, offset) for image, d in enumerate(descriptors) for offset in range(len(d))]
    kept_of_image: dict[int, dict[int, int]] = defaultdict(dict)  # image → {tile offset in it: tile index}
    for index in kept.tolist():
        image, offset = where[index]
        kept_of_image[image][offset] = index
    banks: dict[int, torch.Tensor] = {}
    wanted = sorted(kept_of_image)
    for image, features in zip(wanted, features_of([images[i] for i in wanted], desc="memory bank: coresets")):
        rows_per_tile = max(1, min(bank_size // neighbour_tiles, features.shape[2] * features.shape[3]))
        for offset, index in kept_of_image[image].items():
            rows = features[offset].flatten(1).t()
            banks[index] = rows[greedy_coreset(rows, rows_per_tile, seed=seed).to(rows.device)].cpu()
    neighbours = min(neighbour_tiles, len(kept))
    tile_banks = torch.stack([banks[i] for i in kept.tolist()])
    log.info("memory bank (%s features): %d normal tiles x %d positions, each query tile scored against "
             "its %d nearest", model.anomaly.source, tile_banks.shape[0], tile_banks.shape[1], neighbours)
    model.anomaly.set_memory_bank(tile_banks.to(device), keys[kept].to(device), neighbours)


@torch.no_grad()
def calibrate_on_normal(model: InspectionModel, predictor: TorchPredictor, normal_images: list[np.ndarray]) -> None:
    """Fit the anomaly head's logistic on raw scores of held-out defect-free images."""
    scores = [predictor.predict_outputs(image, model.anomaly_raw_score)[0]
              for image in progress(normal_images, "calibration")]
    model.anomaly.calibrate(torch.from_numpy(np.concatenate([s.ravel() for s in scores])))


def normal_thresholds(
    predictor: TorchPredictor, held_out: list[np.ndarray], maps: list[np.ndarray], config: FitNormalConfig
) -> tuple[dict[str, float], ImageDecision]:
    """Pixel threshold: a high quantile of the held-out normal maps. Image threshold: for the target
    recall of synthetic defects drawn on the held-out images (no real defect was ever seen)."""
    pixel = float(np.quantile(np.concatenate([m.ravel() for m in maps]), PIXEL_QUANTILE))
    synthetic_images, _ = synthetic_defects(held_out, [], config.seed)
    decision = choose_image_threshold(
        [], [predictor.predict(image) for image in synthetic_images], maps, target_recall=config.target_recall,
        top_pixels=config.image_top_pixels or default_top_pixels(config.image_size),
    )
    return {"pixel": pixel, "image": decision.threshold, "image_top_pixels": decision.top_pixels}, decision


def list_normal_images(root: Path) -> list[Path]:
    """Defect-free images of a folder; in a labeled folder (images/ + masks/ or MVTec) only its defect-free ones."""
    from training.data.labeled import load_labeled_set

    if (root / "images").is_dir() or (root / "train").is_dir():
        return [s.image for s in load_labeled_set(root).defect_free]
    return list_images(root)


def fit_normal(config: FitNormalConfig) -> dict[str, float]:
    """Build, calibrate and save a zero-label model run. Returns its thresholds.

    Raises:
        UserError: fewer than two readable defect-free images, or a bad backbone spec.
    """
    torch.manual_seed(config.seed)  # a random-init backbone is then the same on every run
    device = torch_device(config.device)
    images, paths = read_images(list_normal_images(config.data))
    if len(images) < 2:
        raise UserError(f"{config.data} holds {len(images)} readable defect-free image(s); zero-label mode needs at least 2")
    bank_idx, held_idx = holdout_split(len(images), config.holdout_fraction, config.seed)
    backbone = fix_input_size(load_backbone(config.backbone, img_size=config.image_size), config.image_size).to(device).eval()
    mean, std = PIXEL_MEAN, PIXEL_STD
    segmentation = None
    if config.discriminator_steps > 0:
        from training.synthetic_discriminator import train_synthetic_head

        segmentation = train_synthetic_head(backbone, [images[i] for i in bank_idx], tile=config.image_size, mean=mean,
                                            std=std, steps=config.discriminator_steps, batch_size=config.batch_size,
                                            device=device, seed=config.seed)
    model = InspectionModel(backbone, segmentation=segmentation,
                            anomaly=empty_anomaly_head(backbone, "vit").to(device)).eval()
    fill_memory_bank(
        model, [images[i] for i in bank_idx], tile=config.image_size, mean=mean, std=std,
        bank_size=config.bank_size, device=device, seed=config.seed, neighbour_tiles=config.neighbour_tiles,
    )
    predictor = TorchPredictor(model, tile=config.image_size, overlap=default_overlap(config.image_size),
                               mean=mean, std=std, batch_size=config.batch_size, device=device)
    held_out = [images[i] for i in held_idx]
    calibrate_on_normal(model, predictor, held_out)
    if segmentation is not None:
        from training.synthetic_discriminator import fit_fusion_on_synthetic

        fit_fusion_on_synthetic(model, predictor, held_out, config.seed)
    maps = [predictor.predict(image) for image in progress(held_out, "thresholds")]
    thresholds, decision = normal_thresholds(predictor, held_out, maps, config)
    metrics = {"normal_images": len(images), "bank_images": len(bank_idx), "calibration_images": len(held_idx),
               "held_out_max_probability": float(max(m.max() for m in maps)), "decision": decision.as_dict()}
    save_run(
        config.out, model.cpu(), recipe=backbone_recipe(config.backbone), tile=config.image_size, mean=mean, std=std,
        thresholds=thresholds, metrics={"validation": metrics},
        data_fingerprint=data_fingerprint(paths, config.data), sample_tiles=sample_tiles(held_out, config.image_size, mean, std),
    )
    write_training_images(config.out, paths)
    write_config(replace(config, device=str(device)), config.out)
    return thresholds


def sample_tiles(images: list[np.ndarray], tile: int, mean: tuple[float, ...], std: tuple[float, ...], count: int = 4) -> torch.Tensor:
    """A few real normalised tiles (top-left of each image) for export's parity check."""
    from inspect_svc.engine.tiling import extract_tiles, plan_tiles

    tiles = []
    for image in images[:count]:
        box = plan_tiles(image.shape[0], image.shape[1], tile, 0)[:1]
        tiles.append(extract_tiles(normalise_image(image, mean, std), box, tile))
    return torch.from_numpy(np.concatenate(tiles))

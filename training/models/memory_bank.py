"""The anomaly branch's memory bank: filling it with coresets of normal features, and calibrating it.

Shared by zero-label runs (`training.fit_normal`) and the hybrid's anomaly branch
(`training.finetune`): both fill the bank from defect-free images, then fit the branch's logistic on
raw scores of other, held-out defect-free images.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol

import numpy as np
import torch

from training.data.normalisation import normalise_image
from training.models.anomaly import (
    AnomalyHead,
    AnomalySource,
    anomaly_feature_blocks,
    greedy_coreset,
    tile_descriptor,
)
from training.models.hybrid import InspectionModel
from training.progress import progress

log = logging.getLogger(__name__)

# Bank rows gathered before the coreset step; beyond this a random subsample keeps memory bounded.
MAX_CANDIDATE_PATCHES = 200_000
# Normal tiles that keep a bank of their own (retrieval mode); more are thinned to cover their variety.
MAX_BANK_TILES = 96


class MapPredictor(Protocol):
    """What calibration needs of a whole-frame predictor (`training.predictor.TorchPredictor`)."""

    def predict_outputs(
        self, image_rgb: np.ndarray, forward: Callable[[torch.Tensor], torch.Tensor]
    ) -> list[np.ndarray]: ...


def empty_anomaly_head(
    backbone: torch.nn.Module,
    source: AnomalySource,
    stride: int = 1,
    context: int = 0,
    pixel_weight: float = 0.0,
) -> AnomalyHead:
    """An anomaly head reading `source` features of `backbone`'s mid-level blocks, its bank still to fill."""
    return AnomalyHead(
        torch.zeros(1, 1),
        anomaly_feature_blocks(len(backbone.blocks)),
        source=source,
        stride=stride,
        context=context,
        pixel_weight=pixel_weight,
    )


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
        _fill_tile_banks(
            model,
            images,
            tile=tile,
            mean=mean,
            std=std,
            bank_size=bank_size,
            device=device,
            neighbour_tiles=neighbour_tiles,
            max_bank_tiles=max_bank_tiles,
            seed=seed,
        )
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
    log.info(
        "memory bank (%s features): %d of %d normal positions",
        model.anomaly.source,
        len(chosen),
        candidates.shape[0],
    )
    model.anomaly.set_memory_bank(candidates[chosen].to(device))


def _feature_tiles(
    model: InspectionModel,
    images: list[np.ndarray],
    *,
    tile: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
    desc: str = "memory bank",
) -> Iterator[torch.Tensor]:
    """Per image, the anomaly features `[tiles, C, h, w]` of its non-overlapping tiles."""
    from inspect_svc.engine.tiling import extract_tiles, plan_tiles

    for image in progress(images, desc):
        boxes = plan_tiles(image.shape[0], image.shape[1], tile, 0)
        tiles = torch.from_numpy(extract_tiles(normalise_image(image, mean, std), boxes, tile)).to(device)
        yield model.anomaly_features(tiles)


def _fill_tile_banks(
    model: InspectionModel,
    images: list[np.ndarray],
    *,
    tile: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    bank_size: int,
    neighbour_tiles: int,
    max_bank_tiles: int,
    device: torch.device,
    seed: int,
) -> None:
    """One coreset bank per normal tile, keyed by its descriptor (`fill_memory_bank` with neighbour tiles).

    Two passes over the images: the first only describes every tile and picks the ones to keep, so
    the coresets (the costly part) are built for kept tiles alone and no discarded bank is held.
    """
    features_of = partial(_feature_tiles, model, tile=tile, mean=mean, std=std, device=device)
    descriptors = [
        tile_descriptor(features).cpu() for features in features_of(images, desc="memory bank: surfaces")
    ]
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
    for image, features in zip(
        wanted, features_of([images[i] for i in wanted], desc="memory bank: coresets"), strict=True
    ):
        rows_per_tile = max(1, min(bank_size // neighbour_tiles, features.shape[2] * features.shape[3]))
        for offset, index in kept_of_image[image].items():
            rows = features[offset].flatten(1).t()
            banks[index] = rows[greedy_coreset(rows, rows_per_tile, seed=seed).to(rows.device)].cpu()
    neighbours = min(neighbour_tiles, len(kept))
    tile_banks = torch.stack([banks[i] for i in kept.tolist()])
    log.info(
        "memory bank (%s features): %d normal tiles x %d positions, each query tile scored against "
        "its %d nearest",
        model.anomaly.source,
        tile_banks.shape[0],
        tile_banks.shape[1],
        neighbours,
    )
    model.anomaly.set_memory_bank(tile_banks.to(device), keys[kept].to(device), neighbours)


@torch.no_grad()
def calibrate_on_normal(
    model: InspectionModel, predictor: MapPredictor, normal_images: list[np.ndarray]
) -> None:
    """Fit the anomaly head's logistic on raw scores of held-out defect-free images."""
    scores = [
        predictor.predict_outputs(image, model.anomaly_raw_score)[0]
        for image in progress(normal_images, "calibration")
    ]
    model.anomaly.calibrate(torch.from_numpy(np.concatenate([s.ravel() for s in scores])))

"""Frozen-feature dense probes: how much defect information do a backbone's patch features carry?

Two probes on the same frozen features, so backbones pretrained with different objectives (or a
random init) can be compared at equal budget:

- linear: a 1×1 logistic layer on the patch tokens, its logits upsampled bilinearly to pixels and
  trained against the masks of a training split (the usual linear segmentation protocol: a linear
  map commutes with bilinear upsampling, so this equals a linear head on upsampled features);
- nearest neighbour (zero labels): per line, the distance of each test patch to the closest patch of
  that line's defect-free training images, upsampled to pixels.

Both report pixel AUROC and AUPRO on the held-out split.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from training.data.images import read_image_rgb
from training.data.labeled import LabeledSample, load_labeled_set, read_mask
from training.errors import UserError
from training.metrics import aupro, auroc
from training.models.anomaly import NearestNeighbourScorer
from training.models.backbone import PIXEL_MEAN, PIXEL_STD, load_backbone


@dataclass(frozen=True)
class ProbeResult:
    backbone: str
    linear_pixel_auroc: float
    linear_aupro: float
    nn_pixel_auroc: float
    nn_aupro: float
    train_images: int
    test_images: int


@dataclass
class _Split:
    images: torch.Tensor  # [N, 3, S, S], normalised
    masks: torch.Tensor  # [N, S, S] bool
    lines: list[str]


def split_samples(samples: list[LabeledSample], seed: int) -> tuple[list[LabeledSample], list[LabeledSample]]:
    """Half of every line (defective and defect-free alike) for training, the rest for testing."""
    groups: dict[tuple[str, bool], list[LabeledSample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.stem):
        groups[(sample.line or "", sample.defective)].append(sample)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for key in sorted(groups):
        members = [groups[key][i] for i in rng.permutation(len(groups[key]))]
        half = (len(members) + 1) // 2
        train += members[:half]
        test += members[half:]
    return train, test


def load_split(samples: list[LabeledSample], size: int) -> _Split:
    images, masks = [], []
    for sample in samples:
        image = read_image_rgb(sample.image)
        if image is None:
            raise UserError(f"cannot read {sample.image}")
        mask = read_mask(sample.mask, image.shape) if sample.mask else np.zeros(image.shape[:2], bool)
        images.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        masks.append(cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return _Split((pixels - mean) / std, torch.from_numpy(np.stack(masks)), [s.line or "" for s in samples])


@torch.no_grad()
def patch_features(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device, batch: int = 32
) -> torch.Tensor:
    """Final-layer patch tokens as a map `[N, D, h, w]` (prefix tokens dropped)."""
    chunks = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch].to(device)
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
        side = round(tokens.shape[1] ** 0.5)
        chunks.append(tokens.transpose(1, 2).reshape(len(x), -1, side, side).float())
    return torch.cat(chunks)


def linear_probe(
    train_feats: torch.Tensor, train_masks: torch.Tensor, test_feats: torch.Tensor, *, steps: int, seed: int
) -> torch.Tensor:
    """Train a 1×1 logistic layer on upsampled logits; return test probabilities `[N, S, S]`."""
    torch.manual_seed(seed)
    size = train_masks.shape[-1]
    head = torch.nn.Conv2d(train_feats.shape[1], 1, kernel_size=1).to(train_feats.device)
    # Standardise features with training statistics: AdamW then converges in a few hundred steps.
    mean, std = (
        train_feats.mean(dim=(0, 2, 3), keepdim=True),
        train_feats.std(dim=(0, 2, 3), keepdim=True) + 1e-6,
    )
    targets = train_masks.float().unsqueeze(1).to(train_feats.device)
    positive = targets.mean().clamp(1e-4, 0.5)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        logits = F.interpolate(
            head((train_feats - mean) / std), size=size, mode="bilinear", align_corners=False
        )
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=(1 - positive) / positive)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = F.interpolate(
            head((test_feats - mean) / std), size=size, mode="bilinear", align_corners=False
        )
    return torch.sigmoid(logits[:, 0])


def nearest_neighbour_maps(
    train: _Split, train_feats: torch.Tensor, test: _Split, test_feats: torch.Tensor
) -> torch.Tensor:
    """Per line: distance to the nearest defect-free training patch of that line, upsampled to pixels.

    Distances are divided by the line's median normal distance so that lines of rough and smooth
    texture share one scale in the pooled AUROC.
    """
    size = test.masks.shape[-1]
    maps = torch.zeros(test.masks.shape, dtype=torch.float32)
    for line in sorted(set(test.lines)):
        normal = [i for i, name in enumerate(train.lines) if name == line and not train.masks[i].any()]
        queries = [i for i, name in enumerate(test.lines) if name == line]
        if not normal:
            raise UserError(
                f"line {line!r} has no defect-free training image for the nearest-neighbour probe"
            )
        bank = train_feats[normal].permute(0, 2, 3, 1).reshape(-1, train_feats.shape[1])
        scorer = NearestNeighbourScorer(bank).to(train_feats.device)
        distances = torch.cat([scorer(test_feats[queries[j : j + 8]]) for j in range(0, len(queries), 8)])
        scale = distances.median().clamp_min(1e-6)
        upsampled = F.interpolate(distances / scale, size=size, mode="bilinear", align_corners=False)
        maps[queries] = upsampled[:, 0].cpu()
    return maps


def dense_probe(
    backbone: str,
    labeled_dir: Path,
    *,
    image_size: int = 224,
    steps: int = 300,
    seed: int = 0,
    device: str = "cpu",
) -> ProbeResult:
    """Run both probes for one backbone spec (a pretrain run, a backbone.pt, or `random:<arch>`)."""
    samples = load_labeled_set(labeled_dir).samples
    train_samples, test_samples = split_samples(samples, seed)
    train, test = load_split(train_samples, image_size), load_split(test_samples, image_size)
    torch_device = torch.device(device)
    torch.manual_seed(seed)  # a random-init backbone is then the same for every probe run
    model = load_backbone(backbone, img_size=image_size).to(torch_device).eval()
    train_feats = patch_features(model, train.images, torch_device)
    test_feats = patch_features(model, test.images, torch_device)
    linear = linear_probe(train_feats, train.masks.to(torch_device), test_feats, steps=steps, seed=seed).cpu()
    nearest = nearest_neighbour_maps(train, train_feats, test, test_feats)
    masks = test.masks.numpy()
    return ProbeResult(
        backbone=str(backbone),
        linear_pixel_auroc=auroc(linear.numpy().ravel(), masks.ravel()),
        linear_aupro=aupro(list(linear.numpy()), list(masks)),
        nn_pixel_auroc=auroc(nearest.numpy().ravel(), masks.ravel()),
        nn_aupro=aupro(list(nearest.numpy()), list(masks)),
        train_images=len(train_samples),
        test_images=len(test_samples),
    )


def write_probe_result(result: ProbeResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "probe.json"
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return path

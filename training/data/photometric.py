"""Photometric augmentation of a batch of uint8 views, on whatever device the batch lives on.

Workers only decode, crop and resize (cheap, uint8); colour jitter, grayscale, blur and solarize run
here, batched, with per-view random parameters, so that on a GPU the augmentation costs a few kernel
launches instead of CPU time per image. The recipe follows DINO: jitter (0.4, 0.4, 0.2, 0.1) with
p = 0.8, grayscale p = 0.2, Gaussian blur σ ∈ [0.1, 2] with a per-view probability, and solarize for
the second global view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from training.data.normalisation import normalize

_LUMA = (0.299, 0.587, 0.114)
BLUR_SIGMA = (0.1, 2.0)


@dataclass(frozen=True)
class PhotometricPolicy:
    """Probabilities of one kind of view (DINO: global 1, global 2 and local views differ)."""

    blur: float
    solarize: float = 0.0
    jitter: float = 0.8
    grayscale: float = 0.2


@dataclass(frozen=True)
class PhotometricRecipe:
    """The policies of a run: first global view, the other global views, local views."""

    first_global: PhotometricPolicy
    other_globals: PhotometricPolicy
    local: PhotometricPolicy

    def for_global(self, index: int) -> PhotometricPolicy:
        return self.first_global if index == 0 else self.other_globals


# DINO's: the first global view is always blurred, the second is rarely blurred but may be solarized.
DINO_RECIPE = PhotometricRecipe(
    first_global=PhotometricPolicy(blur=1.0),
    other_globals=PhotometricPolicy(blur=0.1, solarize=0.2),
    local=PhotometricPolicy(blur=0.5),
)
# For inspection: lighting and exposure vary along a line, so colour jitter stays; but blur,
# grayscale and solarize would teach the features to ignore what tells a thin scratch, a stain or
# a burn from the surface around it.
_COLOUR_JITTER_ONLY = PhotometricPolicy(blur=0.0, grayscale=0.0)
INSPECTION_RECIPE = PhotometricRecipe(_COLOUR_JITTER_ONLY, _COLOUR_JITTER_ONLY, _COLOUR_JITTER_ONLY)
PHOTOMETRIC_RECIPES = {"dino": DINO_RECIPE, "inspection": INSPECTION_RECIPE}


def augment(
    views: torch.Tensor, policy: PhotometricPolicy, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment `[B, 3, H, W]` uint8 views and normalize them with the backbone's pixel mean and std.

    Returns:
        float32 `[B, 3, H, W]`, channels-last in memory.
    """
    images = views.float().div_(255.0)
    batch = images.shape[0]
    draw = _Draw(batch, images.device, generator)
    images = _colour_jitter(images, draw, policy.jitter)
    images = torch.where(draw.coin(policy.grayscale), _gray(images).expand_as(images), images)
    images = _gaussian_blur(images, draw, policy.blur)
    images = torch.where(draw.coin(policy.solarize) & (images >= 0.5), 1.0 - images, images)
    return normalize(images)


class _Draw:
    """Per-view random numbers, broadcastable against `[B, 3, H, W]`."""

    def __init__(self, batch: int, device: torch.device, generator: torch.Generator | None) -> None:
        self.batch, self.device, self.generator = batch, device, generator

    def uniform(self, low: float, high: float) -> torch.Tensor:
        values = torch.rand(self.batch, 1, 1, 1, device=self.device, generator=self.generator)
        return low + (high - low) * values

    def coin(self, probability: float) -> torch.Tensor:
        return self.uniform(0.0, 1.0) < probability


def _gray(images: torch.Tensor) -> torch.Tensor:
    luma = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * luma).sum(dim=1, keepdim=True)


def _colour_jitter(images: torch.Tensor, draw: _Draw, probability: float) -> torch.Tensor:
    """Brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, applied together to a random subset."""
    apply = draw.coin(probability)
    identity = torch.ones_like(apply, dtype=images.dtype)
    brightness = torch.where(apply, draw.uniform(0.6, 1.4), identity)
    contrast = torch.where(apply, draw.uniform(0.6, 1.4), identity)
    saturation = torch.where(apply, draw.uniform(0.8, 1.2), identity)
    hue = torch.where(apply, draw.uniform(-0.1, 0.1), torch.zeros_like(identity))
    images = (images * brightness).clamp_(0, 1)
    mean_gray = _gray(images).mean(dim=(2, 3), keepdim=True)
    images = ((images - mean_gray) * contrast + mean_gray).clamp_(0, 1)
    gray = _gray(images)
    images = ((images - gray) * saturation + gray).clamp_(0, 1)
    return _rotate_hue(images, hue).clamp_(0, 1)


def _rotate_hue(images: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Hue shift as a rotation of the chroma plane in YIQ space (a linear stand-in for HSV hue).

    `hue` is a fraction of a full turn, `[B, 1, 1, 1]`.
    """
    to_yiq = images.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    angle = hue.view(-1) * 2 * torch.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(angle.shape[0], 3, 3, device=images.device, dtype=images.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, -sin
    rotation[:, 2, 1], rotation[:, 2, 2] = sin, cos
    transform = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # [B, 3, 3]
    return torch.einsum("bij,bjhw->bihw", transform, images)


def _gaussian_blur(images: torch.Tensor, draw: _Draw, probability: float) -> torch.Tensor:
    """Separable Gaussian blur with a per-view σ; views not drawn get a delta kernel."""
    if probability <= 0:
        return images
    batch, channels, height, width = images.shape
    radius = min(int(3 * BLUR_SIGMA[1]), (min(height, width) - 1) // 2)
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    sigma = draw.uniform(*BLUR_SIGMA).view(batch, 1)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(images.dtype).expand_as(kernel)
    kernel = torch.where(draw.coin(probability).view(batch, 1), kernel, delta)
    kernel = kernel.repeat_interleave(channels, dim=0)  # one kernel per (view, channel) group
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel.view(-1, 1, 1, 2 * radius + 1), groups=batch * channels)
    flat = F.conv2d(flat, kernel.view(-1, 1, 2 * radius + 1, 1), groups=batch * channels)
    return flat.view(batch, channels, height, width)

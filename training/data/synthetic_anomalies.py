"""Generic synthetic anomalies on a plant's own normal images, for a label-free "different from normal" signal.

The idea of DRAEM, SimpleNet, GLASS and SuperSimpleNet, in our own code: whatever is *not* how the
surface normally looks is an anomaly, so training crops get random, deliberately unspecific changes
with their masks, and a head trained on them learns to flag departures from the surface rather than
the shapes of a few labeled defects. The kinds:

- foreign: a Perlin-shaped region showing another training image (another place, rotated, re-lit);
- curve: a thin random-walk curve, darker or brighter (scratches, hairs, cracks of any kind);
- blob: a Perlin-shaped region with its brightness and colour shifted (stains, burns, films);
- blur: a Perlin-shaped region smoothed (worn, polished or out-of-focus spots);
- noise: a Perlin-shaped region with its fine texture amplified or replaced by noise (rough spots).

Nothing here imitates a particular defect generator: shapes come from thresholded fractal noise and
random walks, and strengths are drawn from wide ranges. Images are float32 in [0, 1], `[H, W, 3]`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from training.data.textures import fractal_noise

SYNTHETIC_KINDS = ("foreign", "curve", "blob", "blur", "noise")
MIN_PIXELS = 6
_MAX_ATTEMPTS = 10


def add_synthetic_anomaly(
    image: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    sources: Sequence[np.ndarray] = (),
    kind: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`image` with one random synthetic anomaly drawn in, and `mask` with its region added.

    Args:
        image: float32 RGB in [0, 1], `[H, W, 3]`.
        mask: float32 or bool `[H, W]`, 1 where a defect already is.
        sources: uint8 RGB images to borrow foreign material from (the training images); without
            any, the foreign kind is not drawn.
        kind: one of `SYNTHETIC_KINDS`; None draws one at random.
    """
    if kind is None:
        kinds = [k for k in SYNTHETIC_KINDS if k != "foreign" or len(sources)]
        kind = kinds[int(rng.integers(len(kinds)))]
    for _ in range(_MAX_ATTEMPTS):
        changed, region = _DRAWERS[kind](image, rng, sources)
        if np.count_nonzero(region) >= MIN_PIXELS:
            break
    else:
        return image, mask
    out = np.where(region[..., None], np.clip(changed, 0.0, 1.0), image).astype(np.float32)
    return out, np.maximum(mask, region.astype(mask.dtype))


def perlin_region(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An irregular region of random size and shape: thresholded fractal noise, kept to one area."""
    side = max(size)
    noise = fractal_noise(side, rng, base_cells=int(rng.integers(2, 6)))[: size[0], : size[1]]
    # A random window keeps the region in one part of the crop (a defect, not a pattern over all of it).
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    centre = rng.uniform(0.2, 0.8, 2) * np.array(size)
    spread = rng.uniform(0.08, 0.3) * side
    window = np.exp(-0.5 * (((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2) / spread**2))
    return (noise + window) > rng.uniform(0.7, 1.1)


def _foreign(
    image: np.ndarray, rng: np.random.Generator, sources: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    source = sources[int(rng.integers(len(sources)))]
    top = int(rng.integers(0, max(1, source.shape[0] - height + 1)))
    left = int(rng.integers(0, max(1, source.shape[1] - width + 1)))
    patch = (
        cv2.resize(source[top : top + height, left : left + width], (width, height)).astype(np.float32)
        / 255.0
    )
    patch = np.rot90(patch, int(rng.integers(1, 4))) if height == width else patch[::-1]
    patch = patch * rng.uniform(0.6, 1.4) + rng.uniform(-0.2, 0.2, 3)
    opacity = rng.uniform(0.5, 1.0)
    return image * (1 - opacity) + patch * opacity, perlin_region((height, width), rng)


def _curve(
    image: np.ndarray, rng: np.random.Generator, _: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[:2]
    steps = int(rng.integers(10, 60))
    headings = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, rng.uniform(0.02, 0.4), steps))
    start = rng.uniform(0.1, 0.9, 2) * np.array([width, height])
    step = rng.uniform(1.0, 3.0) * max(height, width) / 128
    points = start + np.cumsum(np.stack([np.cos(headings), np.sin(headings)], 1) * step, 0)
    canvas = np.zeros((height, width), np.uint8)
    cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, 255, int(rng.integers(1, 4)))
    shift = rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.6)
    return image + shift, canvas > 0


def _blob(
    image: np.ndarray, rng: np.random.Generator, _: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    gain = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.5)  # never an invisible change
    tint = rng.normal(0, 0.12, 3)
    return image * gain + tint, perlin_region(image.shape[:2], rng)


def _blur(
    image: np.ndarray, rng: np.random.Generator, _: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    blurred = cv2.GaussianBlur(image, (0, 0), rng.uniform(1.5, 4.0))
    return blurred, perlin_region(image.shape[:2], rng)


def _noise(
    image: np.ndarray, rng: np.random.Generator, _: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    smooth = cv2.GaussianBlur(image, (0, 0), 1.5)
    detail = (image - smooth) * rng.uniform(2.0, 4.0)
    grain = rng.normal(0, rng.uniform(0.04, 0.15), image.shape[:2])[..., None]
    return smooth + detail + grain, perlin_region(image.shape[:2], rng)


_DRAWERS: dict[
    str, Callable[[np.ndarray, np.random.Generator, Sequence[np.ndarray]], tuple[np.ndarray, np.ndarray]]
] = {
    "foreign": _foreign,
    "curve": _curve,
    "blob": _blob,
    "blur": _blur,
    "noise": _noise,
}

"""Synthetic surface defects with exact ground-truth masks.

Every family draws two things on a clean RGB image: a *target* (what the surface looks like where the
defect is fully present) and an *alpha* map in [0, 1] (how present it is). `apply_defect` blends them
only where alpha ≥ `ALPHA_MIN` and returns that set as the mask, so the mask is exactly where the defect
was drawn: no pixel outside it changes, and soft edges too faint to see are left out of both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from training.data.textures import crop_texture, fractal_noise

ALPHA_MIN = 0.25
# A drawn defect smaller than this share of the image (e.g. a scratch that left the frame) is redrawn.
MIN_AREA_FRACTION = 0.0008
_MAX_ATTEMPTS = 20
_SUBPIXEL_BITS = 4  # cv2 drawing with sub-pixel coordinates (shift=4 → 1/16 px)


@dataclass(frozen=True)
class DefectContext:
    """What a defect may need beyond the clean image: a texture from another line, for blends."""

    foreign_texture: np.ndarray  # uint8 RGB, any size


DefectDrawer = Callable[[np.ndarray, np.random.Generator, DefectContext], tuple[np.ndarray, np.ndarray]]


def apply_defect(
    clean: np.ndarray, family: str, rng: np.random.Generator, context: DefectContext
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of `family` on `clean` (uint8 RGB); returns (defective image, bool mask)."""
    base = clean.astype(np.float32)
    min_pixels = max(4, int(MIN_AREA_FRACTION * clean.shape[0] * clean.shape[1]))
    for _ in range(_MAX_ATTEMPTS):
        target, alpha = DEFECT_FAMILIES[family](base, rng, context)
        mask = alpha >= ALPHA_MIN
        if np.count_nonzero(mask) >= min_pixels:
            break
    else:
        raise RuntimeError(f"{family} drew no defect of {min_pixels}+ pixels in {_MAX_ATTEMPTS} attempts")
    weight = alpha[..., None]
    blended = base * (1 - weight) + target * weight
    image = np.where(mask[..., None], np.clip(blended, 0, 255).round(), base).astype(np.uint8)
    return image, mask


# --- geometry helpers -------------------------------------------------------------------------------


def _draw_paths(size: int, paths: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of polylines given as (points [N, 2] in x, y order, width)."""
    canvas = np.zeros((size, size), np.uint8)
    for points, width in paths:
        fixed = np.round(points * (1 << _SUBPIXEL_BITS)).astype(np.int32)
        cv2.polylines(
            canvas, [fixed], False, 255, thickness=width, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS
        )
    return canvas.astype(np.float32) / 255.0


def _walk(start: np.ndarray, headings: np.ndarray, step: float) -> np.ndarray:
    """A path from `start` of one `step`-long segment per heading (radians)."""
    moves = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _jagged_headings(heading: float, steps: int, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """Headings that zig-zag by `jitter` around a slowly drifting direction, as a crack runs."""
    return heading + np.cumsum(rng.normal(0, 0.06, steps)) + rng.normal(0, jitter, steps)


def _random_point(size: int, rng: np.random.Generator, margin: float = 0.1) -> np.ndarray:
    return rng.uniform(margin * size, (1 - margin) * size, 2)


def _blob_region(
    size: int, rng: np.random.Generator, radius: tuple[float, float], roughness: float
) -> np.ndarray:
    """Signed score of an irregular blob: > 0 inside, growing towards its centre (Perlin-shaped edge).

    An elliptical falloff around a random centre is perturbed by fractal noise, so the outline is as
    ragged as `roughness` asks, yet the region stays in one place like a real defect.
    """
    centre = _random_point(size, rng, margin=0.15)
    falloff = 1.0 - _elliptic_distance(size, centre, rng.uniform(*radius, 2) * size, rng.uniform(0, np.pi))
    return falloff + roughness * fractal_noise(size, rng, base_cells=int(rng.integers(3, 7)))


def _elliptic_distance(size: int, centre: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    """Per-pixel distance from `centre` in units of a rotated ellipse's radii (1 on its outline)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xs - centre[0], ys - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radii[0]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radii[1]
    return np.sqrt(u * u + v * v)


def _scale(size: int) -> float:
    """Defect dimensions are designed at 256 px and scale with the image."""
    return size / 256.0


# --- the families -----------------------------------------------------------------------------------


def draw_scratch(
    base: np.ndarray, rng: np.random.Generator, _: DefectContext
) -> tuple[np.ndarray, np.ndarray]:
    """1 to 3 roughly parallel, gently curved lines 1-4 px wide, brighter (bare metal) or darker (groove)."""
    size = base.shape[0]
    length = rng.uniform(0.25, 0.7) * size
    steps = 40
    heading = rng.uniform(0, 2 * np.pi)
    start = _random_point(size, rng)
    headings = heading + np.cumsum(rng.normal(0, 0.012) + rng.normal(0, 0.01, steps))
    paths = []
    for _ in range(int(rng.integers(1, 4))):
        offset = rng.normal(0, 4 * _scale(size), 2)
        width = int(rng.integers(1, 5))
        paths.append((_walk(start + offset, headings, length / steps), width))
    alpha = _draw_paths(size, paths)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    strength = rng.uniform(50, 95) * (0.75 + 0.25 * fractal_noise(size, rng, base_cells=3))
    return base + sign * strength[..., None], alpha


def draw_crack(base: np.ndarray, rng: np.random.Generator, _: DefectContext) -> tuple[np.ndarray, np.ndarray]:
    """A jagged dark path with thinner side branches."""
    size = base.shape[0]
    step = 3.0 * _scale(size)
    steps = int(rng.uniform(0.3, 0.75) * size / step)
    heading = rng.uniform(0, 2 * np.pi)
    main = _walk(_random_point(size, rng), _jagged_headings(heading, steps, rng, jitter=0.45), step)
    paths = [(main, int(rng.choice([1, 2, 2, 3])))]
    for _ in range(int(rng.integers(1, 5))):
        root = main[int(rng.integers(steps // 5, steps))]
        branch_heading = heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.2)
        branch_steps = int(steps * rng.uniform(0.15, 0.4)) + 2
        paths.append((_walk(root, _jagged_headings(branch_heading, branch_steps, rng, jitter=0.5), step), 1))
    alpha = _draw_paths(size, paths)
    return base * rng.uniform(0.12, 0.35), alpha


def draw_pits(base: np.ndarray, rng: np.random.Generator, _: DefectContext) -> tuple[np.ndarray, np.ndarray]:
    """A small cluster of elliptical dark pits or bright spatter spots, overlapping at times."""
    size = base.shape[0]
    scale = _scale(size)
    centre = _random_point(size, rng, margin=0.15)
    alpha = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 7))):
        at = centre + rng.normal(0, 12 * scale, 2)
        distance = _elliptic_distance(size, at, rng.uniform(1.8, 6.5, 2) * scale, rng.uniform(0, np.pi))
        alpha = np.maximum(alpha, np.clip((1.0 - distance) * 2.5, 0, 1))
    if rng.random() < 0.65:
        return base * rng.uniform(0.1, 0.4), alpha
    return base + rng.uniform(70, 120), alpha


# Tints of common contaminants (RGB): machine oil, rust, limescale, coolant residue.
_STAIN_TINTS = np.array([[45, 38, 30], [150, 75, 30], [215, 210, 195], [95, 115, 60]], np.float32)


def _contrasting_tint(surface: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random stain tint far from the surface colour (oil on black steel would not show)."""
    distances = np.linalg.norm(_STAIN_TINTS - surface, axis=1)
    candidates = np.flatnonzero(distances >= 90)
    if candidates.size == 0:
        return _STAIN_TINTS[int(np.argmax(distances))]
    return _STAIN_TINTS[int(rng.choice(candidates))]


def draw_stain(base: np.ndarray, rng: np.random.Generator, _: DefectContext) -> tuple[np.ndarray, np.ndarray]:
    """A Perlin-shaped, low-contrast discoloration with a soft but short edge ramp."""
    size = base.shape[0]
    score = _blob_region(size, rng, radius=(0.1, 0.25), roughness=0.6)
    alpha = np.clip(score / 0.12, 0, 1)
    tint = _contrasting_tint(base[alpha > 0].mean(axis=0) if alpha.any() else base.mean(axis=(0, 1)), rng)
    strength = rng.uniform(0.3, 0.5)
    return base * (1 - strength) + tint * strength, alpha


def draw_foreign_blend(
    base: np.ndarray, rng: np.random.Generator, context: DefectContext
) -> tuple[np.ndarray, np.ndarray]:
    """A Perlin-shaped region showing another material (DRAEM-style), partly or fully opaque."""
    size = base.shape[0]
    score = _blob_region(size, rng, radius=(0.08, 0.22), roughness=0.8)
    alpha = np.clip(score / 0.04, 0, 1)
    foreign = crop_texture(context.foreign_texture, size, rng).astype(np.float32)
    opacity = rng.uniform(0.6, 1.0)
    return base * (1 - opacity) + foreign * opacity, alpha


def draw_cut_paste(
    base: np.ndarray, rng: np.random.Generator, _: DefectContext
) -> tuple[np.ndarray, np.ndarray]:
    """A patch of the same surface moved elsewhere, rotated and re-lit, with a dark seam at its edge."""
    size = base.shape[0]
    half = rng.uniform(0.06, 0.15, 2) * size
    source = rng.uniform(half.max(), size - half.max(), 2)
    dest = rng.uniform(half.max(), size - half.max(), 2)
    angle = rng.uniform(-60, 60)
    # Maps destination pixels back to the source: rotate the patch about its own centre, then move it.
    to_source = cv2.getRotationMatrix2D((float(dest[0]), float(dest[1])), angle, 1.0)
    to_source[:, 2] += source - dest
    moved = cv2.warpAffine(
        base,
        to_source,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    moved = (
        (moved - moved.mean()) * rng.uniform(0.8, 1.25)
        + moved.mean()
        + rng.choice([-1, 1]) * rng.uniform(18, 40)
    )
    corners = cv2.boxPoints(
        ((float(dest[0]), float(dest[1])), (float(2 * half[0]), float(2 * half[1])), -angle)
    )
    fill = np.zeros((size, size), np.uint8)
    cv2.fillPoly(fill, [np.round(corners * 16).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=4)
    seam = _draw_paths(size, [(np.vstack([corners, corners[:1]]), int(rng.integers(1, 3)))])
    seam_weight = seam[..., None] * rng.uniform(0.5, 0.8)
    target = moved * (1 - seam_weight) + moved * 0.3 * seam_weight
    return target, np.maximum(fill.astype(np.float32) / 255.0, seam)


def draw_burn(base: np.ndarray, rng: np.random.Generator, _: DefectContext) -> tuple[np.ndarray, np.ndarray]:
    """A scorch mark: charred black core fading through brown into a heat-tinted rim."""
    size = base.shape[0]
    score = _blob_region(size, rng, radius=(0.05, 0.13), roughness=0.35)
    char = np.clip((score - 0.12) / 0.45, 0, 1)[..., None]
    heat_tint = np.array([1.0, 0.72, 0.45], np.float32)  # browning removes blue first, then green
    browned = base * heat_tint * rng.uniform(0.55, 0.8)
    charred = base * 0.08 + 12.0
    return browned * (1 - char) + charred * char, np.clip(score / 0.1, 0, 1)


DEFECT_FAMILIES: dict[str, DefectDrawer] = {
    "scratch": draw_scratch,
    "crack": draw_crack,
    "pits": draw_pits,
    "stain": draw_stain,
    "foreign_blend": draw_foreign_blend,
    "cut_paste": draw_cut_paste,
    "burn": draw_burn,
}

"""The benchmark's own defect generator: defects modelled on how they form, each with an exact mask.

`training.data.defects` paints a *target look* and blends it in by an alpha map. This generator never
paints a look: each family changes a physical quantity and lets the image follow from it.

- dent: a smooth height map under a fixed light; the image is re-shaded by the change of surface normal.
- porosity: a clustered (Thomas) point process of gas pores, each a shadowed hole with a lit far rim.
- oil_film: a thin film of varying thickness; its colour is thin-film interference at three wavelengths.
- weave_fault: the surface's own period is measured, and a band of it is displaced by half a period
  (a mis-pick on fabric, a skipped pass on machined or printed surfaces).
- edge_chip: a conchoidal spall at the edge of the part: exposed, matte substrate with a bright fracture rim.
- contamination: loose particles (dust, swarf) and fibres lying on the surface, each with a cast shadow.

Every family returns the candidate image and its *support*: where the physical change is non-zero.
`draw_physical_defect` then changes only the support and returns it as the mask, so no pixel outside the
mask differs from the clean image. This module is for measuring only: training must never import it
(a test checks this), or the benchmark would measure fit to its own defects again.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

# Physical changes below this (in grey levels, or film thickness for the film) are not part of a defect.
MIN_CHANGE = 6.0
MIN_AREA_FRACTION = 0.0006
_MAX_ATTEMPTS = 25

PhysicalDrawer = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def draw_physical_defect(
    clean: np.ndarray, family: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One `family` defect on `clean` (uint8 RGB, square); returns (defective uint8 RGB, bool mask).

    Raises:
        KeyError: an unknown family.
        RuntimeError: the family drew nothing visible in `_MAX_ATTEMPTS` tries.
    """
    drawer = PHYSICAL_FAMILIES[family]
    base = clean.astype(np.float32)
    min_pixels = max(4, int(MIN_AREA_FRACTION * clean.shape[0] * clean.shape[1]))
    for _ in range(_MAX_ATTEMPTS):
        candidate, support = drawer(base, rng)
        if np.count_nonzero(support) >= min_pixels:
            break
    else:
        raise RuntimeError(f"{family} drew no defect of {min_pixels}+ pixels in {_MAX_ATTEMPTS} attempts")
    image = np.where(support[..., None], np.clip(candidate, 0, 255).round(), base).astype(np.uint8)
    return image, support


def _unit(size: int) -> float:
    """Defects are sized for 256 px images and scale with the image."""
    return size / 256.0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114], np.float32)


def _light_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector towards a lamp above the line, 30 to 60 degrees from the vertical."""
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi / 6, np.pi / 3)
    return np.array(
        [np.cos(azimuth) * np.sin(elevation), np.sin(azimuth) * np.sin(elevation), np.cos(elevation)]
    )


def _shading_change(height: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Relative Lambertian shading of a height map against the flat surface (0 where it is flat)."""
    gy, gx = np.gradient(height)
    normal_z = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    lit = (-gx * light[0] - gy * light[1] + light[2]) * normal_z
    return lit / light[2] - 1.0


# --- the families -----------------------------------------------------------------------------------


def draw_dent(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An impact dent: an elliptical depression (optionally creased) re-shaded under one light."""
    size = base.shape[0]
    xs, ys = _grid(size)
    centre = rng.uniform(0.2, 0.8, 2) * size
    radii = rng.uniform(10, 32, 2) * _unit(size)
    angle = rng.uniform(0, np.pi)
    u = ((xs - centre[0]) * np.cos(angle) + (ys - centre[1]) * np.sin(angle)) / radii[0]
    v = (-(xs - centre[0]) * np.sin(angle) + (ys - centre[1]) * np.cos(angle)) / radii[1]
    depth = float(radii.mean()) * rng.uniform(0.15, 0.4)  # shallow: slopes of roughly 10 to 25 degrees
    height = -depth * np.exp(-0.5 * (u * u + v * v))
    if rng.random() < 0.4:  # a crease along the dent's long axis, as from an edge striking the part
        height -= 0.5 * depth * np.exp(-0.5 * (v * radii[1] / 1.5) ** 2) * np.exp(-0.5 * u * u)
    shading = _shading_change(height, _light_direction(rng))
    change = base * shading[..., None] * rng.uniform(1.0, 1.8)
    support = np.abs(_luminance(change)) >= MIN_CHANGE
    return base + change, _largest_component(support)


def draw_porosity(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A cluster of gas pores: each a dark hole with a lit rim on the side away from the light."""
    size = base.shape[0]
    unit = _unit(size)
    xs, ys = _grid(size)
    light = _light_direction(rng)
    parents = rng.uniform(0.15, 0.85, (int(rng.integers(1, 3)), 2)) * size
    out, support = base.copy(), np.zeros((size, size), bool)
    mean_tone = float(_luminance(base).mean())
    for parent in parents:
        for _ in range(int(rng.poisson(9)) + 3):
            at = parent + rng.normal(0, 10 * unit, 2)
            radius = rng.uniform(1.2, 3.8) * unit
            distance = np.hypot(xs - at[0], ys - at[1]) / radius
            hole = distance <= 1.0
            rim = (distance > 1.0) & (distance <= 1.5)
            facing = ((xs - at[0]) * light[0] + (ys - at[1]) * light[1]) / (radius * 1.5) > 0.2
            darkness = rng.uniform(0.15, 0.45)
            out[hole] = out[hole] * darkness
            out[rim & facing] = np.minimum(out[rim & facing] + 0.35 * max(mean_tone, 60.0), 255)
            support |= hole | (rim & facing)
    return out, support


# Wavelengths (nm) the three colour channels stand for, and a mineral oil's refractive index.
_RGB_WAVELENGTHS = np.array([650.0, 532.0, 450.0], np.float32)
_OIL_INDEX = 1.47


def draw_oil_film(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin oil film whose thickness varies smoothly; colours from two-beam interference."""
    size = base.shape[0]
    unit = _unit(size)
    xs, ys = _grid(size)
    thickness = np.zeros((size, size), np.float32)
    centre = rng.uniform(0.25, 0.75, 2) * size
    for _ in range(int(rng.integers(2, 5))):  # a few overlapping spreads make an irregular film
        at = centre + rng.normal(0, 14 * unit, 2)
        spread = rng.uniform(10, 26, 2) * unit
        thickness += rng.uniform(150, 350) * np.exp(
            -0.5 * (((xs - at[0]) / spread[0]) ** 2 + ((ys - at[1]) / spread[1]) ** 2)
        )
    # The film creeps along the surface's micro-structure: its thickness follows the local texture a little.
    grain = cv2.GaussianBlur(_luminance(base), (0, 0), 1.5 * unit)
    thickness *= 1.0 + 0.25 * (grain - grain.mean()) / (grain.std() + 1e-6)
    film = thickness >= 120.0  # nm: thinner films show no colour
    phase = 4 * np.pi * _OIL_INDEX * thickness[..., None] / _RGB_WAVELENGTHS
    reflectance = 0.5 * (1 - np.cos(phase))  # 0..1 per channel
    strength = rng.uniform(0.35, 0.6) * np.clip((thickness[..., None] - 120.0) / 150.0, 0, 1)
    candidate = base * (1 - strength) + 255.0 * reflectance * strength
    visible = np.abs(candidate - base).max(axis=2) >= MIN_CHANGE
    return candidate, film & visible


def dominant_period(image: np.ndarray, axis: int) -> float:
    """The strongest repeat distance (px) of `image` along `axis` (1: along x), from the autocorrelation.

    A surface without repeat still returns a value: its most self-similar shift between 4 px and a
    quarter of the image, so the same fault applies to every surface.
    """
    profile = _luminance(image).mean(axis=1 - axis)
    profile = profile - profile.mean()
    spectrum = np.fft.rfft(profile, n=2 * len(profile))
    correlation = np.fft.irfft(spectrum * np.conj(spectrum))[: len(profile)]
    low, high = 4, max(5, len(profile) // 4)
    return float(low + int(np.argmax(correlation[low:high])))


def draw_weave_fault(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A band of the surface displaced by half its own period along the band (a mis-pick)."""
    size = base.shape[0]
    axis = int(rng.integers(2))  # 1: the band runs along x (rows displaced sideways)
    period = dominant_period(base, axis)
    shift = max(2, round(period / 2))
    width = int(rng.uniform(3, 10) * _unit(size)) + 1
    start = int(rng.integers(0, size - width))
    length = int(rng.uniform(0.35, 1.0) * size)
    begin = int(rng.integers(0, size - length + 1))
    work = base if axis == 1 else base.transpose(1, 0, 2)
    displaced = np.roll(work, shift, axis=1)
    band = np.zeros((size, size), bool)
    band[start : start + width, begin : begin + length] = True
    candidate = np.where(band[..., None], displaced, work)
    if axis == 0:
        candidate, band = candidate.transpose(1, 0, 2), band.T
    visible = cv2.dilate(
        (np.abs(candidate - base).max(axis=2) >= MIN_CHANGE).astype(np.uint8), np.ones((3, 3))
    )
    return candidate, band & visible.astype(bool)


def draw_edge_chip(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A spall broken off the part's edge: matte, lighter substrate inside a jagged bright fracture rim."""
    size = base.shape[0]
    unit = _unit(size)
    xs, ys = _grid(size)
    side = int(rng.integers(4))
    along = rng.uniform(0.15, 0.85) * size
    centre = [(along, 0.0), (size - 1.0, along), (along, size - 1.0), (0.0, along)][side]
    radius = rng.uniform(14, 40) * unit
    angle = np.arctan2(ys - centre[1], xs - centre[0])
    ragged = radius * (
        1 + 0.25 * np.sin(angle * rng.integers(3, 7) + rng.uniform(0, 6)) + rng.normal(0, 0.05)
    )
    distance = np.hypot(xs - centre[0], ys - centre[1])
    inside = distance <= ragged
    rim = inside & (distance >= ragged - 2.0 * unit)
    substrate = cv2.GaussianBlur(_luminance(base), (0, 0), 2.0 * unit)
    substrate = np.repeat(substrate[..., None], 3, axis=2)
    candidate = substrate * rng.uniform(0.6, 0.9) + rng.uniform(40, 90)
    candidate[rim] = np.minimum(candidate[rim] + 60, 255)
    return candidate, inside


def draw_contamination(base: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Particles and fibres resting on the surface, each casting a short shadow away from the light."""
    size = base.shape[0]
    unit = _unit(size)
    cover = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(0, 4))):  # fibres: thin curved strands
        start = rng.uniform(0.1, 0.9, 2) * size
        heading = rng.uniform(0, 2 * np.pi)
        steps = int(rng.uniform(20, 60) * unit) + 2
        headings = heading + np.cumsum(rng.normal(0, 0.12, steps))
        points = start + np.cumsum(np.stack([np.cos(headings), np.sin(headings)], 1) * 1.5 * unit, 0)
        cv2.polylines(cover, [np.round(points).astype(np.int32)], False, 255, int(max(1, round(unit))))
    centre = rng.uniform(0.2, 0.8, 2) * size
    for _ in range(int(rng.integers(2, 12))):  # particles: small irregular grains around one spot
        at = centre + rng.normal(0, 18 * unit, 2)
        corners = int(rng.integers(4, 8))
        radius = rng.uniform(1.5, 5.0, corners) * unit
        angles = np.sort(rng.uniform(0, 2 * np.pi, corners))
        polygon = at + np.stack([np.cos(angles), np.sin(angles)], 1) * radius[:, None]
        cv2.fillPoly(cover, [np.round(polygon).astype(np.int32)], 255)
    body = cover > 0
    light = _light_direction(rng)
    offset = -np.round(light[:2] * 2.5 * unit).astype(int)
    shadow = np.roll(np.roll(body, offset[1], axis=0), offset[0], axis=1) & ~body
    tone = np.array([rng.uniform(10, 60)] * 3) if rng.random() < 0.6 else np.array(rng.uniform(170, 240, 3))
    candidate = base.copy()
    candidate[body] = tone
    candidate[shadow] = candidate[shadow] * 0.55
    return candidate, body | shadow


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected part of `mask` (a dent's faint far slopes can split off as specks)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == biggest


PHYSICAL_FAMILIES: dict[str, PhysicalDrawer] = {
    "dent": draw_dent,
    "porosity": draw_porosity,
    "oil_film": draw_oil_film,
    "weave_fault": draw_weave_fault,
    "edge_chip": draw_edge_chip,
    "contamination": draw_contamination,
}

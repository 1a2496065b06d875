"""Tiling: full coverage, seamless blending, and agreement with whole-frame prediction."""

from __future__ import annotations

import numpy as np
import pytest

from inspect_svc.engine.tiling import (
    TileBox,
    blend_weights,
    extract_tiles,
    make_plan,
    plan_tiles,
    stitch,
    stitch_plan,
    tile_starts,
)

TILE, OVERLAP = 32, 8
# Smaller than, equal to, a little larger than, and much larger than the tile; square and not.
FRAME_SIZES = [(10, 20), (32, 32), (33, 40), (100, 77), (257, 64), (31, 300)]


def _pixel_model(tiles: np.ndarray) -> np.ndarray:
    """A per-pixel (translation-equivariant) 'model': [n, 3, T, T] -> [n, T, T]."""
    return np.tanh(tiles[:, 0] * 0.7 - tiles[:, 1] * 0.3) + tiles[:, 2] ** 2


def _box_blur(plane: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, zero outside the array; [..., H, W] -> same shape."""
    padded = np.pad(plane, [(0, 0)] * (plane.ndim - 2) + [(radius, radius), (radius, radius)])
    height, width = plane.shape[-2:]
    total = np.zeros_like(plane, dtype=np.float64)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            total += padded[..., dy : dy + height, dx : dx + width]
    return total / (2 * radius + 1) ** 2


def _random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, height, width)).astype(np.float32)


def _tiled_prediction(frame: np.ndarray, model, tile: int = TILE, overlap: int = OVERLAP) -> np.ndarray:
    height, width = frame.shape[1:]
    plan = make_plan(height, width, tile, overlap)
    return stitch_plan(model(extract_tiles(frame, plan.boxes, tile)).astype(np.float32), plan)


@pytest.mark.parametrize(("length", "expected"), [(10, [0]), (32, [0]), (33, [0, 1]), (80, [0, 24, 48])])
def test_tile_starts_use_the_stride_and_end_flush_with_the_border(length, expected):
    assert tile_starts(length, TILE, OVERLAP) == expected


@pytest.mark.parametrize(("height", "width"), FRAME_SIZES)
def test_tiles_cover_every_pixel(height, width):
    covered = np.zeros((max(height, TILE), max(width, TILE)), dtype=bool)
    for box in plan_tiles(height, width, TILE, OVERLAP):
        covered[box.top : box.top + TILE, box.left : box.left + TILE] = True
    assert covered[:height, :width].all()
    assert covered.shape == (max(height, TILE), max(width, TILE))  # no tile reaches past the padding


@pytest.mark.parametrize(("height", "width"), FRAME_SIZES)
def test_per_pixel_model_gives_the_whole_frame_prediction(height, width):
    frame = _random_frame(height, width)
    whole = _pixel_model(frame[None])[0]
    tiled = _tiled_prediction(frame, _pixel_model)
    assert tiled.shape == (height, width)
    assert tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


@pytest.mark.parametrize(("height", "width"), FRAME_SIZES)
def test_constant_model_output_has_no_seams(height, width):
    constant = _tiled_prediction(_random_frame(height, width), lambda tiles: np.full(tiles[:, 0].shape, 0.37))
    assert np.ptp(constant) < 1e-6
    np.testing.assert_allclose(constant, 0.37, atol=1e-6)


def test_convolution_is_exact_wherever_no_tile_border_is_within_its_reach():
    radius, height, width = 2, 140, 110
    frame = _random_frame(height, width, seed=3)
    whole = _box_blur(frame[0], radius)
    tiled = _tiled_prediction(frame, lambda tiles: _box_blur(tiles[:, 0], radius))
    # A tile's own zero padding differs from the frame's content only along tile edges inside the
    # frame; pixels within `radius` of such an edge of any covering tile may differ, all others not.
    exact = np.ones((height, width), dtype=bool)
    for box in plan_tiles(height, width, TILE, OVERLAP):
        bottom, right = box.top + TILE, box.left + TILE
        if box.top > 0:
            exact[box.top : box.top + radius, box.left : right] = False
        if bottom < height:
            exact[bottom - radius : bottom, box.left : right] = False
        if box.left > 0:
            exact[box.top : bottom, box.left : box.left + radius] = False
        if right < width:
            exact[box.top : bottom, right - radius : right] = False
    assert exact.mean() > 0.5
    np.testing.assert_allclose(tiled[exact], whole[exact], atol=1e-5)
    # Near tile edges the blend window keeps the error small (the edge values carry little weight).
    assert np.abs(tiled - whole).mean() < 0.02


def test_small_frame_is_reflected_not_zero_padded():
    frame = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    (tile,) = extract_tiles(frame, [TileBox(0, 0)], 16)
    np.testing.assert_array_equal(tile[:, :10, :12], frame)
    np.testing.assert_array_equal(tile[:, 10, :12], frame[:, 8])  # row 10 mirrors row 8 (reflection)


def test_blend_weights_are_smooth_positive_and_flat_inside():
    window = blend_weights(TILE, OVERLAP)
    assert window.shape == (TILE, TILE) and window.dtype == np.float32
    assert window.min() > 0
    assert np.all(window[OVERLAP:-OVERLAP, OVERLAP:-OVERLAP] == 1)
    assert np.all(np.diff(window[TILE // 2, : OVERLAP + 1]) > 0)  # rises monotonically over the ramp
    np.testing.assert_allclose(window, window.T)
    assert np.all(blend_weights(TILE, 0) == 1)


def test_stitch_rejects_mismatched_tile_maps():
    boxes = plan_tiles(40, 40, TILE, OVERLAP)
    with pytest.raises(ValueError, match="tile maps"):
        stitch(np.zeros((len(boxes) - 1, TILE, TILE)), boxes, 40, 40, TILE, OVERLAP)


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (32, 32), (32, -1)])
def test_invalid_geometry_is_refused(tile, overlap):
    with pytest.raises(ValueError):
        plan_tiles(64, 64, tile, overlap)


def test_empty_frame_is_refused():
    with pytest.raises(ValueError, match="empty"):
        plan_tiles(0, 64, TILE, OVERLAP)

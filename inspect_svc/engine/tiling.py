"""Cut frames into overlapping square tiles and blend the tiles' predictions back into one map.

Line cameras send frames far larger than a model's input, and defects can be a few pixels wide, so
frames are never resized: they are covered by tiles of the model's own size that overlap by
`overlap` pixels. Each tile's prediction is weighted by a smooth window that fades out towards the
tile's borders, and the stitched map is the weighted average, so no seam shows where tiles meet.

The same code serves the inspection service and training's evaluation. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class TileBox:
    """One tile: its top-left corner in the (reflection-padded) frame; the side is the plan's tile."""

    top: int
    left: int


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one frame lie, and the frame size the stitched map is cropped back to."""

    height: int
    width: int
    tile: int
    overlap: int
    boxes: tuple[TileBox, ...]

    @property
    def count(self) -> int:
        return len(self.boxes)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: a regular stride, with the last tile flush with the border.

    A length shorter than the tile gives one tile at 0; the frame is padded up to the tile.
    """
    _check_geometry(tile, overlap)
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    # Aligning the last tile to the border (instead of padding past it) keeps every tile on real pixels;
    # it only overlaps its neighbour a little more than the others.
    starts.append(length - tile)
    return starts


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[TileBox]:
    """Tiles that cover a `height` x `width` frame completely.

    Args:
        height: frame height in pixels.
        width: frame width in pixels.
        tile: square tile side (the model's input size).
        overlap: pixels shared by neighbouring tiles; must be smaller than the tile.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"cannot tile an empty frame of {height}x{width}")
    rows = tile_starts(height, tile, overlap)
    cols = tile_starts(width, tile, overlap)
    return [TileBox(top, left) for top in rows for left in cols]


def make_plan(height: int, width: int, tile: int, overlap: int) -> TilePlan:
    """`plan_tiles` wrapped with the geometry `stitch` needs later."""
    boxes = plan_tiles(height, width, tile, overlap)
    return TilePlan(height=height, width=width, tile=tile, overlap=overlap, boxes=tuple(boxes))


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """The [tile, tile] float32 window each tile's prediction is weighted by.

    A raised-cosine ramp rises over the first and last `overlap` pixels of each axis and is flat (1)
    in between; the 2-D window is the outer product of the two axes. The ramp is sampled at pixel
    centres, so it never reaches zero: a frame border covered by a single tile still gets a weight.
    """
    _check_geometry(tile, overlap)
    ramp_1d = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        centres = (np.arange(overlap) + 0.5) / overlap
        rising = 0.5 - 0.5 * np.cos(np.pi * centres)
        ramp_1d[:overlap] = np.minimum(ramp_1d[:overlap], rising)
        ramp_1d[tile - overlap :] = np.minimum(ramp_1d[tile - overlap :], rising[::-1])
    return np.outer(ramp_1d, ramp_1d).astype(np.float32)


def pad_to_tile(image_chw: np.ndarray, tile: int) -> np.ndarray:
    """Reflect-pad a [C, H, W] array on the bottom/right so both sides are at least `tile`."""
    _, height, width = image_chw.shape
    pad_h, pad_w = max(tile - height, 0), max(tile - width, 0)
    if pad_h == 0 and pad_w == 0:
        return image_chw
    # Reflection needs at least two pixels along an axis; a 1-pixel axis can only repeat its edge.
    mode: Literal["reflect", "edge"] = "reflect" if min(height, width) > 1 else "edge"
    return np.pad(image_chw, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode)


def extract_tiles(image_chw: np.ndarray, boxes: list[TileBox] | tuple[TileBox, ...], tile: int) -> np.ndarray:
    """Cut `boxes` out of a [C, H, W] array into a contiguous [n, C, tile, tile] array of its dtype."""
    if image_chw.ndim != 3:
        raise ValueError(f"expected a [C, H, W] array, got shape {image_chw.shape}")
    padded = pad_to_tile(image_chw, tile)
    tiles = np.empty((len(boxes), padded.shape[0], tile, tile), dtype=padded.dtype)
    for index, box in enumerate(boxes):
        tiles[index] = padded[:, box.top : box.top + tile, box.left : box.left + tile]
    return tiles


def stitch(
    tile_probs: np.ndarray,
    boxes: list[TileBox] | tuple[TileBox, ...],
    height: int,
    width: int,
    tile: int,
    overlap: int,
) -> np.ndarray:
    """Blend per-tile maps [n, tile, tile] into one [height, width] float32 map (weighted average)."""
    if tile_probs.shape != (len(boxes), tile, tile):
        raise ValueError(f"expected tile maps of shape {(len(boxes), tile, tile)}, got {tile_probs.shape}")
    padded_h, padded_w = max(height, tile), max(width, tile)
    weighted_sum = np.zeros((padded_h, padded_w), dtype=np.float32)
    weight_total = np.zeros((padded_h, padded_w), dtype=np.float32)
    window = blend_weights(tile, overlap)
    for tile_map, box in zip(tile_probs, boxes, strict=True):
        rows = slice(box.top, box.top + tile)
        cols = slice(box.left, box.left + tile)
        weighted_sum[rows, cols] += window * tile_map
        weight_total[rows, cols] += window
    if not np.all(weight_total[:height, :width] > 0):
        raise ValueError("the tiles do not cover the frame")
    return weighted_sum[:height, :width] / weight_total[:height, :width]


def stitch_plan(tile_probs: np.ndarray, plan: TilePlan) -> np.ndarray:
    """`stitch` with the geometry taken from a `TilePlan`."""
    return stitch(tile_probs, plan.boxes, plan.height, plan.width, plan.tile, plan.overlap)


def _check_geometry(tile: int, overlap: int) -> None:
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")

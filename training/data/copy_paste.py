"""Copy-paste augmentation: labeled defects cut out of their images and pasted onto other crops.

With five labeled defect images per line, the head sees each defect on one background only. Pasting
the labeled defects (their pixels, with a feathered edge, and their masks) at random places, turns
and flips onto other training crops, of any line, multiplies the (defect, surface) pairs it learns
from, and shows it surfaces that do not belong to the line as defects (in the manner of Ghiasi et al.,
2021, "Simple Copy-Paste", for instance segmentation). Nothing is invented: every pasted pixel and
mask pixel comes from a labeled image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Parts of one defect closer than this (pixels) are one piece: a scratch's parallel lines stay together.
GROUPING_DISTANCE = 6
# Width of the feathered edge (pixels): the defect's own anti-aliased rim comes along, no hard seam.
FEATHER = 1.5
# A piece larger than this share of the tile is pasted as a random window of that size.
MAX_PIECE_SHARE = 0.75


@dataclass(frozen=True)
class DefectPiece:
    """One labeled defect cut to its bounding box.

    Attributes:
        pixels: `[h, w, 3]` float32 RGB in [0, 1].
        alpha: `[h, w]` float32 blending weight (the mask, grown by a pixel and feathered).
        mask: `[h, w]` bool defect mask.
    """

    pixels: np.ndarray
    alpha: np.ndarray
    mask: np.ndarray


def cut_defect_pieces(images: list[np.ndarray], masks: list[np.ndarray]) -> list[DefectPiece]:
    """Every defect of the labeled images as a piece (defect-free images give none).

    Args:
        images: uint8 RGB `[H, W, 3]` images.
        masks: bool `[H, W]` defect masks, one per image.
    """
    pieces: list[DefectPiece] = []
    for image, mask in zip(images, masks, strict=True):
        if not mask.any():
            continue
        size = 2 * GROUPING_DISTANCE + 1
        grouped = cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8))
        count, labels = cv2.connectedComponents(grouped, connectivity=8)
        for label in range(1, count):
            component = (labels == label) & mask
            if component.any():
                pieces.append(_cut(image, component))
    return pieces


def _cut(image: np.ndarray, component: np.ndarray) -> DefectPiece:
    margin = int(np.ceil(3 * FEATHER)) + 1
    rows, cols = np.nonzero(component)
    top, bottom = max(rows.min() - margin, 0), min(rows.max() + margin + 1, image.shape[0])
    left, right = max(cols.min() - margin, 0), min(cols.max() + margin + 1, image.shape[1])
    mask = component[top:bottom, left:right]
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(np.float32)
    alpha = np.maximum(cv2.GaussianBlur(grown, (0, 0), FEATHER), mask.astype(np.float32))
    pixels = image[top:bottom, left:right].astype(np.float32) / 255.0
    return DefectPiece(pixels=pixels, alpha=alpha, mask=mask.copy())


def paste_piece(
    image: np.ndarray, mask: np.ndarray, piece: DefectPiece, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Paste `piece`, randomly turned and flipped, at a random place of a crop.

    Args:
        image: `[T, T, 3]` float32 RGB in [0, 1] (not modified).
        mask: `[T, T]` float32 defect mask (not modified).
        piece: what to paste.
        rng: randomness of the placement.

    Returns:
        The new image and mask (the mask is the union of the crop's and the piece's).
    """
    pixels, alpha, piece_mask = _turn(piece, rng)
    tile = image.shape[0]
    pixels, alpha, piece_mask = _window(pixels, alpha, piece_mask, int(MAX_PIECE_SHARE * tile), rng)
    height, width = piece_mask.shape
    top, left = int(rng.integers(tile - height + 1)), int(rng.integers(image.shape[1] - width + 1))
    image, mask = image.copy(), mask.copy()
    region = (slice(top, top + height), slice(left, left + width))
    weight = alpha[..., None]
    image[region] = weight * pixels + (1.0 - weight) * image[region]
    mask[region] = np.maximum(mask[region], piece_mask.astype(mask.dtype))
    return image, mask


def _turn(piece: DefectPiece, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = [piece.pixels, piece.alpha, piece.mask]
    if rng.random() < 0.5:
        arrays = [a[:, ::-1] for a in arrays]
    turns = int(rng.integers(4))
    return tuple(np.rot90(a, turns) for a in arrays)  # type: ignore[return-value]


def _window(
    pixels: np.ndarray, alpha: np.ndarray, mask: np.ndarray, side: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random `side`-limited window of a piece too large to paste whole."""
    height, width = mask.shape
    top = int(rng.integers(max(height - side, 0) + 1))
    left = int(rng.integers(max(width - side, 0) + 1))
    window = (slice(top, top + min(height, side)), slice(left, left + min(width, side)))
    return pixels[window], alpha[window], mask[window]

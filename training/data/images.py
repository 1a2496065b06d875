"""Finding and reading images in a folder tree.

Unreadable files are not fatal: a plant's image folder always holds a few truncated or foreign files.
They are counted and skipped, and the count is reported at the end of a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from training.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


def list_images(root: Path | str) -> list[Path]:
    """Every image file below `root`, sorted, so that a seed gives the same order on every machine.

    Raises:
        UserError: `root` does not exist, is not a folder, or holds no image file.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root} does not exist")
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise UserError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


def read_image_rgb(path: Path | str) -> np.ndarray | None:
    """Read an image as uint8 RGB `[H, W, 3]`; None when the file cannot be decoded.

    Grey images are expanded to three channels, alpha is dropped and 16-bit images are scaled to 8 bits.
    """
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return to_rgb8(image)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded OpenCV image (grey, BGR or BGRA; 8 or 16 bit) to uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass
class SkipCounter:
    """Counts unreadable files so a run can report them once at the end."""

    skipped: list[Path] = field(default_factory=list)

    def add(self, path: Path) -> None:
        self.skipped.append(path)

    def summary(self) -> str:
        if not self.skipped:
            return "all images were readable"
        examples = ", ".join(p.name for p in self.skipped[:3])
        return f"{len(self.skipped)} unreadable image(s) skipped (e.g. {examples})"


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

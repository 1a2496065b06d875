"""Corrected masks uploaded by reviewers: checked, then stored as one canonical PNG form.

Whatever the browser sends (RGBA from a canvas, grey, palette), the stored mask is an 8-bit grey PNG
at the image's own size holding only 0 (background) and 255 (defect), so the export and the training
reader never have to guess what a pixel means.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A canvas mask is a few kilobytes; this only stops someone from posting a bomb as a "mask".
MAX_MASK_BYTES = 16 * 1024 * 1024


class MaskRejected(ValueError):
    """An uploaded mask the service will not store (the message is shown to the reviewer)."""


def canonical_mask_png(data: bytes, *, width: int, height: int) -> bytes:
    """Validate an uploaded mask and return it as a binary grey PNG.

    A pixel is a defect when its luminance is at least 128, or, for masks with transparency, when it is
    also at least half opaque.

    Raises:
        MaskRejected: empty, too large, not a PNG, undecodable, or not `width` x `height`.
    """
    if not data:
        raise MaskRejected("the mask is empty")
    if len(data) > MAX_MASK_BYTES:
        raise MaskRejected(f"the mask is larger than {MAX_MASK_BYTES // (1024 * 1024)} MiB")
    if not data.startswith(PNG_MAGIC):
        raise MaskRejected("the mask must be a PNG image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                # The size comes from the header: check it before decoding a single pixel.
                if image.size != (width, height):
                    raise MaskRejected(
                        f"the mask is {image.size[0]}x{image.size[1]} but the image is {width}x{height}"
                    )
                defect = _defect_pixels(image)
    except MaskRejected:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise MaskRejected(f"the mask could not be decoded: {error}") from error
    return encode_mask_png(defect)


def _defect_pixels(image: Image.Image) -> np.ndarray:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        luminance = np.asarray(Image.fromarray(rgba[..., :3]).convert("L"))
        return (luminance >= 128) & (rgba[..., 3] >= 128)
    return np.asarray(image.convert("L")) >= 128


def encode_mask_png(defect: np.ndarray) -> bytes:
    """A boolean [H, W] array as the canonical mask PNG (0 / 255, 8-bit grey)."""
    buffer = io.BytesIO()
    Image.fromarray(np.where(defect, 255, 0).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()

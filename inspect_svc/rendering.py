"""Pictures of a result for people: the binary mask, the heat-map overlay on the frame, thumbnails."""

from __future__ import annotations

import io

import numpy as np

from inspect_svc import imaging

OVERLAY_OPACITY = 0.45
THUMBNAIL_SIDE = 128  # twice the queue's 64 px cell, sharp on high-density screens


def read_probability_png(map_png: bytes) -> np.ndarray:
    """The stored 8-bit map back as float probabilities [H, W] in [0, 1]."""
    cv2 = imaging.opencv()
    grey: np.ndarray | None = cv2.imdecode(np.frombuffer(map_png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError("stored probability map is not a readable PNG")
    return grey.astype(np.float32) / 255.0


def mask_png(map_png: bytes, pixel_threshold: float) -> bytes:
    """Defect mask (255 = defect) at the threshold the inspection used."""
    probabilities = read_probability_png(map_png)
    return imaging.encode_png(np.where(probabilities >= pixel_threshold, 255, 0).astype(np.uint8))


def overlay_png(
    image_bytes: bytes, media_type: str, map_png: bytes, *, opacity: float = OVERLAY_OPACITY
) -> bytes:
    """The frame with its probability map blended on top as a heat map (viridis: yellow = defect).

    The heat map's weight grows with the probability, so clean areas show the part itself and only
    suspicious ones are tinted: an operator must still see the surface under a flagged region.
    """
    cv2 = imaging.opencv()
    frame_rgb = imaging.decode_image(image_bytes, media_type, max_pixels=imaging.DEFAULT_MAX_PIXELS)
    grey = np.rint(read_probability_png(map_png) * 255.0).astype(np.uint8)
    if grey.shape != frame_rgb.shape[:2]:
        grey = cv2.resize(grey, (frame_rgb.shape[1], frame_rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat_rgb = cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    alpha = (grey.astype(np.float32) / 255.0 * opacity)[..., None]
    blended = frame_rgb.astype(np.float32) * (1.0 - alpha) + heat_rgb.astype(np.float32) * alpha
    return imaging.encode_png(np.rint(blended).astype(np.uint8))


def thumbnail_jpeg(image_bytes: bytes, media_type: str, *, max_side: int = THUMBNAIL_SIDE) -> bytes:
    """A small JPEG of the frame, its aspect ratio kept, its longer side `max_side` pixels at most."""
    cv2 = imaging.opencv()
    frame_rgb = _reduced_jpeg(image_bytes, max_side) if media_type == "image/jpeg" else None
    if frame_rgb is None:
        frame_rgb = imaging.decode_image(image_bytes, media_type, max_pixels=imaging.DEFAULT_MAX_PIXELS)
    height, width = frame_rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(frame_rgb, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else frame_rgb
    small_bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
    encoded_ok, encoded = cv2.imencode(".jpg", small_bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not encoded_ok:
        raise ValueError("the thumbnail could not be encoded")
    jpeg: bytes = encoded.tobytes()
    return jpeg


def _reduced_jpeg(image_bytes: bytes, max_side: int) -> np.ndarray | None:
    """A large JPEG decoded at 1/2, 1/4 or 1/8 of its size (libjpeg scales while decoding, far cheaper
    than a full decode), still at least `max_side` on its longer side; None: decode it in full."""
    cv2 = imaging.opencv()
    from PIL import Image  # the header alone: no pixel is decoded here

    try:
        with Image.open(io.BytesIO(image_bytes), formats=["JPEG"]) as header:
            longer = max(header.size)
    except (OSError, ValueError):
        return None  # the full, hardened decode says what is wrong with it
    reductions = (
        (8, cv2.IMREAD_REDUCED_COLOR_8),
        (4, cv2.IMREAD_REDUCED_COLOR_4),
        (2, cv2.IMREAD_REDUCED_COLOR_2),
    )
    for factor, flag in reductions:
        if longer // factor >= max_side:
            # As the service decodes a frame: EXIF orientation is not applied (the map is not turned).
            decoded = cv2.imdecode(np.frombuffer(image_bytes, np.uint8), flag | cv2.IMREAD_IGNORE_ORIENTATION)
            return None if decoded is None else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    return None

"""Hardened image decoding: every bad body becomes a clear rejection, never a crash or a hang.

A camera (or anyone holding its key) can send empty bodies, the wrong type, truncated or corrupt
files, or a small file whose header claims a huge image. Checks run from cheap to expensive: magic
bytes against the declared type, end markers, the header (dimensions against the caller's pixel
budget, TIFF sample formats against what we convert), then the full decode, which must succeed
without the decoder reporting damage:

- JPEG is decoded by libjpeg-turbo through simplejpeg in strict mode: libjpeg's *warnings*
  ("Corrupt JPEG data: premature end of data segment", a header that claims more pixels than the
  data holds) are errors. OpenCV and Pillow only print them and fill the missing part in, so a
  damaged frame would be scored as if it were a part.
- PNG, BMP and TIFF are decoded by OpenCV, whose libpng and libtiff readers fail on missing data.

Accepted pixels (`to_rgb8`): 8-bit as is; 16-bit unsigned scaled over its full range
(65535 -> 255); floats (32- or 64-bit TIFF) taken as 0..1, clipped, NaN as 0; grey, RGB, RGBA or
palette. Signed-integer, 16-bit float and CMYK/Lab TIFFs are refused with a message saying so.

OpenCV reads its own decode caps (`OPENCV_IO_MAX_IMAGE_*`) from the environment once, when the
library loads, so this module sets them before cv2 is imported and is the one place the service
imports cv2 (`opencv()`).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import sys
from dataclasses import dataclass
from types import ModuleType

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000  # above any line camera we serve (12 MP), far below a bomb
DEFAULT_MAX_SIDE = 1 << 16
MIN_SIDE = 8  # smaller than this is not a camera frame; tiling would only reflect padding
_END_MARKER_WINDOW = 1024  # bytes at the end of a file searched for its end marker


def configure_decoder_limits(
    max_pixels: int, max_side: int = DEFAULT_MAX_SIDE, *, override: bool = True
) -> bool:
    """Set OpenCV's decode caps in the environment; effective only before cv2 is first imported.

    Args:
        max_pixels: largest width x height OpenCV will decode.
        max_side: largest width or height OpenCV will decode.
        override: replace values already in the environment (False keeps a container's settings).

    Returns:
        True when cv2 is not loaded yet, so the caps will apply. `decode_image` checks the header
        against its own `max_pixels` either way; these caps are the second line of defence.
    """
    limits = {
        "OPENCV_IO_MAX_IMAGE_PIXELS": str(max_pixels),
        "OPENCV_IO_MAX_IMAGE_WIDTH": str(max_side),
        "OPENCV_IO_MAX_IMAGE_HEIGHT": str(max_side),
    }
    # Decode failures are reported as rejections; OpenCV's own warnings would only flood the log.
    limits["OPENCV_LOG_LEVEL"] = "ERROR"
    for name, value in limits.items():
        if override or name not in os.environ:
            os.environ[name] = value
    if "cv2" not in sys.modules:
        return True
    # The import-time default is silent: a process that loaded cv2 first (training, tests) has chosen.
    if override:
        logger.warning("cv2 is already imported; OpenCV keeps the decode caps it started with")
    return False


configure_decoder_limits(DEFAULT_MAX_PIXELS, override=False)


def opencv() -> ModuleType:
    """The cv2 module, imported only after the decode caps are in the environment."""
    import cv2  # deliberately lazy, see the module docstring

    return cv2


class ImageRejected(ValueError):
    """A request body that is not an image the service can inspect.

    Attributes:
        reason: a short stable code for metrics and clients ("empty", "truncated", …).
        status: the HTTP status the API answers with.
        message: one line for the client.
    """

    def __init__(self, reason: str, status: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message


_MAGIC = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
_CONTENT_TYPES = {
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/png": "png",
    "image/x-png": "png",
    "image/bmp": "bmp",
    "image/x-bmp": "bmp",
    "image/x-ms-bmp": "bmp",
    "image/tiff": "tiff",
    "image/tif": "tiff",
    "image/x-tiff": "tiff",
}
# Types that say nothing about the format: the magic bytes decide.
_UNTYPED = {"", "application/octet-stream", "binary/octet-stream"}
_PILLOW_FORMAT = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tiff": "TIFF"}
SUPPORTED_CONTENT_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/tiff")
# Refusals that mean "a frame of a supported format, damaged on the way" (a camera glitch, a cut upload),
# as opposed to a body that is not a frame at all: with INSPECT_DAMAGED_FRAMES=flag these are recorded.
DAMAGE_REASONS = frozenset({"corrupt", "truncated"})


def sniff_format(data: bytes) -> str | None:
    """'jpeg', 'png', 'bmp' or 'tiff' from the leading magic bytes; None for anything else."""
    for name, signatures in _MAGIC.items():
        if any(data.startswith(signature) for signature in signatures):
            return name
    return None


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding its pixels."""

    image_format: str  # 'jpeg', 'png', 'bmp' or 'tiff'
    width: int
    height: int

    def pixel_cost(self, tile: int = 0) -> int:
        """Pixels the model will process: each side counts at least one `tile` (frames are padded to it)."""
        return max(self.width, tile) * max(self.height, tile)


def decode_image(
    data: bytes, content_type: str | None, *, max_pixels: int = DEFAULT_MAX_PIXELS, tile: int = 0
) -> np.ndarray:
    """Decode a request body into a uint8 RGB [H, W, 3] array.

    Args:
        data: the raw file bytes.
        content_type: the declared media type; None or application/octet-stream lets the bytes decide.
        max_pixels: the pixel budget, checked on the header before decoding (`check_pixel_budget`).
        tile: the model's tile side, so a thin strip is counted at the size it is processed at.

    Raises:
        ImageRejected: with reason empty, unsupported_type, type_mismatch, truncated, corrupt,
            too_large_pixels or too_small.
    """
    header = read_header(data, content_type)
    check_pixel_budget(header, max_pixels=max_pixels, tile=tile)
    return decode_pixels(data, header)


def read_header(data: bytes, content_type: str | None) -> ImageHeader:
    """Format and size of a body from its magic bytes and header alone (cheap: no pixel is decoded).

    Raises:
        ImageRejected: empty, unsupported_type, type_mismatch, truncated, corrupt or too_small.
    """
    if not data:
        raise ImageRejected("empty", 400, "the request body is empty")
    image_format = _check_type(data, content_type)
    _check_complete(data, image_format)
    width, height = _header_size(data, image_format)
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(
            "too_small", 422, f"the image is {width}x{height}; each side must be at least {MIN_SIDE}"
        )
    return ImageHeader(image_format, width, height)


def check_pixel_budget(header: ImageHeader, *, max_pixels: int, tile: int = 0) -> None:
    """Refuse (413) a frame whose processed size exceeds the per-request pixel budget."""
    cost = header.pixel_cost(tile)
    if cost <= max_pixels:
        return
    size = f"{header.width}x{header.height}"
    padded = (
        "" if cost == header.width * header.height else f", processed as {cost} pixels in {tile}-pixel tiles"
    )
    raise ImageRejected(
        "too_large_pixels",
        413,
        f"the image is {size} pixels{padded}; at most {max_pixels} pixels are accepted",
    )


def decode_pixels(data: bytes, header: ImageHeader) -> np.ndarray:
    """The pixels of a body whose header `read_header` accepted, as uint8 RGB [H, W, 3].

    Raises:
        ImageRejected: corrupt (the decoder failed or reported damage), too_large_pixels or
            unsupported_type.
    """
    if header.image_format == "jpeg":
        decoded = _decode_jpeg(data)
    else:
        decoded = _decode_with_opencv(data, header.image_format)
    if decoded.shape[:2] != (header.height, header.width):
        raise ImageRejected(
            "corrupt", 422, f"the {header.image_format.upper()} data does not match its header"
        )
    if header.image_format == "jpeg":
        return decoded
    try:
        return to_rgb8(decoded)
    except ValueError as error:
        raise ImageRejected("unsupported_type", 415, str(error)) from None


def warm_decoders() -> None:
    """Decode a tiny image of every accepted format once, so the first camera frame does not pay for
    loading OpenCV's codecs and Pillow's plugins (tens of milliseconds on a cold process)."""
    cv2 = opencv()
    tiny = np.zeros((MIN_SIDE, MIN_SIDE, 3), dtype=np.uint8)
    for content_type in SUPPORTED_CONTENT_TYPES:
        encoded_ok, encoded = cv2.imencode("." + content_type.split("/")[1], tiny)
        if encoded_ok:
            decode_image(encoded.tobytes(), content_type, max_pixels=DEFAULT_MAX_PIXELS)
    encode_png(tiny[..., 0])


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded OpenCV array (grey, BGR, BGRA; uint8, uint16 or float) as uint8 RGB [H, W, 3].

    16-bit data is scaled over its full range (65535 -> 255); float data is taken as [0, 1]; alpha is
    dropped (a camera frame has nothing behind it to composite on).

    Raises:
        ValueError: an unsupported dtype or channel count.
    """
    cv2 = opencv()
    eight_bit = _to_uint8(image)
    if eight_bit.ndim == 3 and eight_bit.shape[2] == 1:
        eight_bit = eight_bit[:, :, 0]
    grey = eight_bit.ndim == 2
    channels = eight_bit.shape[2] if eight_bit.ndim == 3 else (1 if grey else 0)
    conversion = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(channels)
    if conversion is None:
        raise ValueError(f"images with shape {image.shape} are not supported (grey, RGB or RGBA only)")
    rgb: np.ndarray = cv2.cvtColor(eight_bit, conversion)
    return rgb


def encode_png(array: np.ndarray, *, compression: int = 1) -> bytes:
    """PNG bytes of a uint8/uint16 grey [H, W], RGB [H, W, 3] or RGBA [H, W, 4] array.

    Compression level 1 by default: maps are written per frame, and size matters less than time.
    """
    cv2 = opencv()
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG holds uint8 or uint16 data, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    elif array.ndim != 2:
        raise ValueError(f"cannot write an array of shape {array.shape} as PNG")
    ok, encoded = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("OpenCV could not encode the PNG")
    png: bytes = encoded.tobytes()
    return png


def probability_png(prob_map: np.ndarray) -> bytes:
    """A probability map [H, W] in [0, 1] as an 8-bit grey PNG (0 -> 0, 1 -> 255)."""
    quantised = np.rint(np.clip(prob_map, 0.0, 1.0) * 255.0).astype(np.uint8)
    return encode_png(quantised)


def _check_type(data: bytes, content_type: str | None) -> str:
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared not in _UNTYPED and declared not in _CONTENT_TYPES:
        raise ImageRejected(
            "unsupported_type",
            415,
            f"content type {declared!r} is not one of {', '.join(SUPPORTED_CONTENT_TYPES)}",
        )
    sniffed = sniff_format(data)
    if sniffed is None:
        raise ImageRejected("unsupported_type", 415, "the body is not a JPEG, PNG, BMP or TIFF image")
    if declared in _CONTENT_TYPES and _CONTENT_TYPES[declared] != sniffed:
        raise ImageRejected(
            "type_mismatch", 415, f"the body is a {sniffed.upper()} image but was declared as {declared}"
        )
    return sniffed


def _check_complete(data: bytes, image_format: str) -> None:
    """Refuse files cut short in transfer, which decoders would partly fill in instead of failing."""
    tail_start = max(len(data) - _END_MARKER_WINDOW, 0)
    if image_format == "jpeg" and data.rfind(b"\xff\xd9", tail_start) < 0:
        raise ImageRejected("truncated", 422, "the JPEG has no end-of-image marker (truncated upload?)")
    if image_format == "png" and data.rfind(b"IEND", tail_start) < 0:
        raise ImageRejected("truncated", 422, "the PNG has no IEND chunk (truncated upload?)")
    if image_format == "bmp" and len(data) >= 6:
        declared_size = int.from_bytes(data[2:6], "little")
        if declared_size > len(data):  # some writers leave the field 0; only a larger claim is evidence
            raise ImageRejected(
                "truncated", 422, f"the BMP declares {declared_size} bytes but has {len(data)}"
            )


def _header_size(data: bytes, image_format: str) -> tuple[int, int]:
    """(width, height) from the header alone, without decoding pixels."""
    if image_format == "jpeg":
        return _jpeg_header_size(data)
    if image_format == "tiff":
        return _tiff_header_size(data)
    return _pillow_header_size(data, image_format)


def _jpeg_header_size(data: bytes) -> tuple[int, int]:
    import simplejpeg

    try:
        height, width, _colorspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        raise ImageRejected("corrupt", 422, f"the JPEG header is unreadable: {_one_line(error)}") from None
    return width, height


def _pillow_header_size(data: bytes, image_format: str) -> tuple[int, int]:
    """PNG and BMP: Pillow's open() parses the header without decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMAT[image_format]]) as header:
            width, height = header.size
            return width, height
    except Image.DecompressionBombError:
        raise ImageRejected(
            "too_large_pixels", 413, "the image header declares an absurd pixel count"
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected("corrupt", 422, f"the {image_format.upper()} header is unreadable") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageRejected(
            "corrupt", 422, f"the {image_format.upper()} header is unreadable: {_one_line(error)}"
        ) from None


# Baseline TIFF tags read from the first image directory.
_TIFF_WIDTH, _TIFF_HEIGHT, _TIFF_BITS, _TIFF_PHOTOMETRIC, _TIFF_SAMPLES, _TIFF_SAMPLE_FORMAT = (
    256,
    257,
    258,
    262,
    277,
    339,
)
_TIFF_FIELD_TYPES = {1: ("B", 1), 3: ("H", 2), 4: ("I", 4)}  # BYTE, SHORT, LONG
_TIFF_SUPPORTED_SAMPLES = {(1, 1), (1, 8), (1, 16), (3, 32), (3, 64)}  # (SampleFormat, bits)
_TIFF_SAMPLE_KIND = {1: "unsigned integer", 2: "signed integer", 3: "floating-point", 4: "undefined"}
_TIFF_UNSUPPORTED_PHOTOMETRIC = {5: "CMYK", 8: "CIE L*a*b*", 9: "ICC L*a*b*", 10: "ITU L*a*b*"}
TIFF_SUPPORT = (
    "supported TIFF samples: unsigned 1-, 8- or 16-bit integers (16-bit scaled 65535 -> 255) and "
    "32- or 64-bit floats (0..1 -> 0..255, clipped); grey, RGB, RGBA or palette"
)


def _tiff_header_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the first TIFF image, refusing sample formats `to_rgb8` cannot convert.

    Read by hand: Pillow cannot open float RGB TIFFs at all, which OpenCV decodes fine.
    """
    try:
        tags = _tiff_tags(data)
        width, height = tags[_TIFF_WIDTH][0], tags[_TIFF_HEIGHT][0]
    except (struct.error, IndexError, KeyError, ValueError) as error:
        raise ImageRejected("corrupt", 422, f"the TIFF header is unreadable: {_one_line(error)}") from None
    bits = tags.get(_TIFF_BITS, (1,))
    sample_format = tags.get(_TIFF_SAMPLE_FORMAT, (1,))[0]
    if len(set(bits)) != 1 or (sample_format, bits[0]) not in _TIFF_SUPPORTED_SAMPLES:
        kind = _TIFF_SAMPLE_KIND.get(sample_format, f"sample format {sample_format}")
        raise ImageRejected(
            "unsupported_type",
            415,
            f"the TIFF has {'/'.join(map(str, bits))}-bit {kind} samples; {TIFF_SUPPORT}",
        )
    photometric = tags.get(_TIFF_PHOTOMETRIC, (1,))[0]
    if photometric in _TIFF_UNSUPPORTED_PHOTOMETRIC:
        raise ImageRejected(
            "unsupported_type",
            415,
            f"the TIFF is {_TIFF_UNSUPPORTED_PHOTOMETRIC[photometric]}; {TIFF_SUPPORT}",
        )
    return width, height


def _tiff_tags(data: bytes) -> dict[int, tuple[int, ...]]:
    """The numeric tags of the first image directory of a classic TIFF (`sniff_format` let no BigTIFF in)."""
    order = "<" if data[:2] == b"II" else ">"
    directory = struct.unpack_from(order + "I", data, 4)[0]
    (entries,) = struct.unpack_from(order + "H", data, directory)
    tags: dict[int, tuple[int, ...]] = {}
    for index in range(entries):
        tag, field_type, count, inline = struct.unpack_from(order + "HHI4s", data, directory + 2 + 12 * index)
        if field_type not in _TIFF_FIELD_TYPES or not 0 < count <= 16:
            continue  # strings, rationals and long arrays: nothing the size check needs
        code, size = _TIFF_FIELD_TYPES[field_type]
        values = inline if count * size <= 4 else data[struct.unpack(order + "I", inline)[0] :]
        tags[tag] = struct.unpack_from(f"{order}{count}{code}", values)
    return tags


def _decode_jpeg(data: bytes) -> np.ndarray:
    """RGB pixels of a JPEG; any libjpeg warning (corrupt or missing data) is a rejection."""
    import simplejpeg

    try:
        rgb: np.ndarray = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
    except ValueError as error:
        raise ImageRejected("corrupt", 422, f"the JPEG data is damaged: {_one_line(error)}") from None
    return rgb


def _decode_with_opencv(data: bytes, image_format: str) -> np.ndarray:
    cv2 = opencv()
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        decoded: np.ndarray | None = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error:  # raised when OpenCV's own caps are exceeded
        raise ImageRejected("too_large_pixels", 413, "the image exceeds the decoder's pixel limits") from None
    if decoded is None or decoded.size == 0:
        raise ImageRejected("corrupt", 422, f"the {image_format.upper()} data cannot be decoded")
    return decoded


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # Full-range scaling with rounding: 65535 -> 255, 257 -> 1.
        scaled: np.ndarray = (image.astype(np.uint32) + 128) // 257
        return scaled.astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        unit: np.ndarray = np.clip(np.nan_to_num(image), 0.0, 1.0)
        return np.rint(unit * 255.0).astype(np.uint8)
    raise ValueError(f"{image.dtype} pixels are not supported (8-bit, 16-bit or float only)")

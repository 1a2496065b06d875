"""Image decoding: a bad-input corpus (each case's reason and status) and the formats we accept."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from inspect_svc.imaging import (
    ImageRejected,
    configure_decoder_limits,
    decode_image,
    encode_png,
    probability_png,
    sniff_format,
    to_rgb8,
)

MAX_PIXELS = 50_000_000
RGB = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def _encode(array: np.ndarray, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, image_format, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG whose header claims width x height RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + _png_chunk(b"IEND", b"")
    )


JPEG = _encode(RGB, "JPEG", quality=95)
PNG = _encode(RGB, "PNG")
BMP = _encode(RGB, "BMP")
TIFF = _encode(RGB, "TIFF")

BAD_INPUTS = {
    "empty": (b"", "image/png", "empty", 400),
    "text body": (b"hello, world", "text/plain", "unsupported_type", 415),
    "gif content type": (PNG, "image/gif", "unsupported_type", 415),
    "wrong magic": (b"not an image at all" * 4, "image/png", "unsupported_type", 415),
    "png declared as jpeg": (PNG, "image/jpeg", "type_mismatch", 415),
    "truncated jpeg": (JPEG[: len(JPEG) // 2], "image/jpeg", "truncated", 422),
    "truncated png": (PNG[:-20], "image/png", "truncated", 422),
    "truncated bmp": (BMP[:-500], "image/bmp", "truncated", 422),
    "truncated tiff": (TIFF[: len(TIFF) // 2], "image/tiff", "corrupt", 422),
    "jpeg with garbage header": (
        b"\xff\xd8\xff\xe0" + b"\0" * 100 + b"\xff\xd9",
        "image/jpeg",
        "corrupt",
        422,
    ),
    "bomb 100k x 100k": (_png_claiming(100_000, 100_000), "image/png", "too_large_pixels", 413),
    "over the pixel cap": (_png_claiming(10_000, 6_000), "image/png", "too_large_pixels", 413),
    "tiny": (_encode(RGB[:4, :4], "PNG"), "image/png", "too_small", 422),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_rejected_with_its_reason(case):
    data, content_type, reason, status = BAD_INPUTS[case]
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, content_type, max_pixels=MAX_PIXELS)
    assert (caught.value.reason, caught.value.status) == (reason, status)
    assert caught.value.message and "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (PNG, "image/png"),
        (BMP, "image/bmp"),
        (TIFF, "image/tiff"),
        (PNG, "application/octet-stream"),
        (BMP, None),
    ],
    ids=["png", "bmp", "tiff", "octet-stream sniffed", "no type sniffed"],
)
def test_lossless_formats_decode_exactly(data, content_type):
    decoded = decode_image(data, content_type, max_pixels=MAX_PIXELS)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, RGB)


def test_jpeg_decodes_close_to_the_original():
    decoded = decode_image(JPEG, "image/jpeg; charset=binary", max_pixels=MAX_PIXELS)
    reference = np.asarray(Image.open(io.BytesIO(JPEG)).convert("RGB"))  # RGB order, another decoder
    assert decoded.shape == RGB.shape
    assert np.abs(decoded.astype(int) - reference).mean() < 2


def test_grey_becomes_three_equal_channels():
    decoded = decode_image(_encode(RGB[:, :, 0], "PNG"), "image/png", max_pixels=MAX_PIXELS)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], RGB[:, :, 0])


def test_rgba_drops_alpha():
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(_encode(rgba, "PNG"), "image/png", max_pixels=MAX_PIXELS), RGB)


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_16_bit_is_scaled_to_8_bit(image_format):
    sixteen = RGB[:, :, 0].astype(np.uint16) * 257  # exactly representable in 8 bits
    decoded = decode_image(_encode(sixteen, image_format), None, max_pixels=MAX_PIXELS)
    np.testing.assert_array_equal(decoded[:, :, 0], RGB[:, :, 0])


def test_palette_png_is_expanded():
    palette_image = Image.fromarray(RGB).convert("P")
    buffer = io.BytesIO()
    palette_image.save(buffer, "PNG")
    decoded = decode_image(buffer.getvalue(), "image/png", max_pixels=MAX_PIXELS)
    np.testing.assert_array_equal(decoded, np.asarray(palette_image.convert("RGB")))


def test_pixel_cap_is_the_callers():
    with pytest.raises(ImageRejected) as caught:
        decode_image(PNG, "image/png", max_pixels=RGB.shape[0] * RGB.shape[1] - 1)
    assert caught.value.reason == "too_large_pixels"


def test_to_rgb8_conversions():
    bgr = RGB[:, :, ::-1]
    np.testing.assert_array_equal(to_rgb8(np.ascontiguousarray(bgr)), RGB)
    floats = to_rgb8(np.full((8, 8), 1.5, dtype=np.float32))
    assert floats.shape == (8, 8, 3) and np.all(floats == 255)
    assert to_rgb8(np.full((8, 8), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError):
        to_rgb8(np.zeros((8, 8), dtype=np.int64))
    with pytest.raises(ValueError):
        to_rgb8(np.zeros((8, 8, 2), dtype=np.uint8))


def test_png_round_trip():
    assert sniff_format(encode_png(RGB)) == "png"
    np.testing.assert_array_equal(decode_image(encode_png(RGB), "image/png", max_pixels=MAX_PIXELS), RGB)
    grey = decode_image(
        probability_png(np.linspace(0, 1, 64 * 9).reshape(9, 64)), None, max_pixels=MAX_PIXELS
    )
    assert grey[0, 0, 0] == 0 and grey[-1, -1, 0] == 255
    with pytest.raises(ValueError):
        encode_png(np.zeros((8, 8), np.float32))


def test_opencv_caps_are_in_the_environment_before_cv2_loads():
    # A fresh interpreter: importing the module must set the caps, and must not import cv2 itself.
    script = (
        "import os, sys; import inspect_svc.imaging as m; "
        "print(os.environ['OPENCV_IO_MAX_IMAGE_PIXELS'], 'cv2' in sys.modules)"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENCV_IO_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    output = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert output.stdout.split() == ["50000000", "False"]


def test_configure_decoder_limits_reports_when_too_late(monkeypatch):
    for name in ("OPENCV_IO_MAX_IMAGE_PIXELS", "OPENCV_IO_MAX_IMAGE_WIDTH", "OPENCV_IO_MAX_IMAGE_HEIGHT"):
        monkeypatch.delenv(name, raising=False)
    import cv2  # noqa: F401  (this test process has loaded cv2 already)

    assert configure_decoder_limits(1234, 99) is False
    assert os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] == "1234"
    assert os.environ["OPENCV_IO_MAX_IMAGE_WIDTH"] == "99"


def test_warming_the_decoders_decodes_every_accepted_format() -> None:
    from inspect_svc.imaging import warm_decoders

    warm_decoders()  # raises ImageRejected if any accepted format could not round-trip

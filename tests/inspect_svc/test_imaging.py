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
    check_pixel_budget,
    configure_decoder_limits,
    decode_image,
    encode_png,
    probability_png,
    read_header,
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


# --- damage the decoder itself reports (libjpeg warnings are errors) -----------------------------------

DEMO_PART = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "demo", "part.png")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A ~1 KB baseline JPEG whose frame header (SOF0) claims width x height: the data covers 64x64."""
    data = bytearray(_encode(RGB[:, :40].repeat(2, axis=0)[:64].repeat(2, axis=1)[:, :64], "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _half_jpeg_with_end_marker(**options) -> bytes:
    """The first half of the demo part as JPEG, closed with an end-of-image marker (FFD9)."""
    intact = _encode(np.asarray(Image.open(DEMO_PART).convert("RGB")), "JPEG", quality=90, **options)
    return intact[: len(intact) // 2] + b"\xff\xd9"


@pytest.mark.parametrize(
    "data",
    [_jpeg_claiming(9000, 5000), _half_jpeg_with_end_marker(), _half_jpeg_with_end_marker(progressive=True)],
    ids=["header claims 9000x5000", "half a frame + FFD9", "half a progressive frame + FFD9"],
)
def test_jpeg_damage_the_decoder_warns_about_is_refused(data):
    assert len(data) < 40_000 and data.endswith(b"\xff\xd9")
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, "image/jpeg", max_pixels=MAX_PIXELS)
    assert (caught.value.reason, caught.value.status) == ("corrupt", 422)
    assert caught.value.message.startswith("the JPEG data is damaged: ")  # the decoder's own words follow


def test_intact_demo_jpeg_still_decodes():
    intact = _encode(np.asarray(Image.open(DEMO_PART).convert("RGB")), "JPEG", quality=90)
    assert decode_image(intact, "image/jpeg").shape == (256, 256, 3)


# --- the pixel budget, checked on the header before decoding ---------------------------------------------


def test_pixel_budget_counts_a_thin_strip_at_the_tile_size_it_is_processed_at():
    strip = _png_claiming(40_000, 8)  # 320,000 pixels on paper, 128 x 40,000 once padded to 128-pixel tiles
    header = read_header(strip, "image/png")
    assert (header.width, header.height, header.pixel_cost(128)) == (40_000, 8, 128 * 40_000)
    check_pixel_budget(header, max_pixels=1_000_000)  # no tile given: its own area fits
    with pytest.raises(ImageRejected) as caught:
        check_pixel_budget(header, max_pixels=1_000_000, tile=128)
    assert (caught.value.reason, caught.value.status) == ("too_large_pixels", 413)
    assert "40000x8" in caught.value.message and "128-pixel tiles" in caught.value.message


def test_pixel_budget_refuses_before_any_decoding(monkeypatch):
    from inspect_svc import imaging

    def no_decoding(*_args):
        raise AssertionError("decoded a frame over the budget")

    monkeypatch.setattr(imaging, "decode_pixels", no_decoding)
    with pytest.raises(ImageRejected) as caught:
        imaging.decode_image(_png_claiming(7000, 7000), "image/png", max_pixels=16_000_000)
    assert caught.value.status == 413


# --- TIFF sample formats: what is converted, and a precise refusal for the rest ---------------------------


def _opencv_tiff(array: np.ndarray) -> bytes:
    import cv2

    pixels = array[:, :, ::-1] if array.ndim == 3 else array  # OpenCV writes BGR
    ok, encoded = cv2.imencode(".tiff", np.ascontiguousarray(pixels))
    assert ok
    return encoded.tobytes()


def _tiff_by_hand(pixels: np.ndarray, bits: int, sample_format: int, photometric: int) -> bytes:
    """A little-endian, uncompressed, single-strip TIFF: for sample formats no library here writes."""
    height, width = pixels.shape[:2]
    samples = 1 if pixels.ndim == 2 else pixels.shape[2]
    payload = pixels.tobytes()
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, bits),
        (259, 3, 1, 1),
        (262, 3, 1, photometric),
        (273, 4, 1, 0),
        (277, 3, 1, samples),
        (278, 4, 1, height),
        (279, 4, 1, len(payload)),
        (339, 3, 1, sample_format),
    ]
    directory_size = 2 + 12 * len(entries) + 4
    strip_offset = 8 + directory_size
    directory = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = strip_offset if tag == 273 else value
        packed = struct.pack("<H", value) + b"\0\0" if kind == 3 else struct.pack("<I", value)
        directory += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + directory + b"\0\0\0\0" + payload


UNIT = RGB.astype(np.float64) / 255.0  # floats in 0..1 that map back to RGB exactly


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        (RGB, RGB),
        (RGB.astype(np.uint16) * 257, RGB),
        (UNIT.astype(np.float32), RGB),
        (UNIT, RGB),
        (RGB[:, :, 0], np.dstack([RGB[:, :, 0]] * 3)),
        (RGB[:, :, 0].astype(np.uint16) * 257, np.dstack([RGB[:, :, 0]] * 3)),
        (UNIT[:, :, 0].astype(np.float32), np.dstack([RGB[:, :, 0]] * 3)),
    ],
    ids=[
        "uint8 rgb",
        "uint16 rgb",
        "float32 rgb",
        "float64 rgb",
        "uint8 grey",
        "uint16 grey",
        "float32 grey",
    ],
)
def test_supported_tiff_sample_formats_decode_exactly(pixels, expected):
    np.testing.assert_array_equal(decode_image(_opencv_tiff(pixels), "image/tiff"), expected)


def test_float_tiff_is_clipped_to_zero_one():
    pixels = np.full((16, 16, 3), 0.5, np.float32)
    pixels[0, 0], pixels[1, 1], pixels[2, 2] = 7.0, -3.0, np.nan
    decoded = decode_image(_opencv_tiff(pixels), "image/tiff")
    assert decoded[0, 0].tolist() == [255] * 3 and decoded[1, 1].tolist() == [0] * 3
    assert decoded[2, 2].tolist() == [0] * 3 and decoded[5, 5].tolist() == [128] * 3


def test_bilevel_tiff_decodes_to_black_and_white():
    bits = RGB[:, :, 0] > 127
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, "TIFF")
    decoded = decode_image(buffer.getvalue(), "image/tiff")
    np.testing.assert_array_equal(decoded[:, :, 1], np.where(bits, 255, 0))


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (_opencv_tiff(RGB.astype(np.int16)), "16-bit signed integer"),
        (_opencv_tiff(RGB[:, :, 0].astype(np.int32)), "32-bit signed integer"),
        (
            _tiff_by_hand(UNIT.astype(np.float16), bits=16, sample_format=3, photometric=2),
            "16-bit floating-point",
        ),
        (_tiff_by_hand(np.dstack([RGB, RGB[:, :, :1]]), bits=8, sample_format=1, photometric=5), "CMYK"),
    ],
    ids=["int16 rgb", "int32 grey", "float16 rgb", "cmyk"],
)
def test_unsupported_tiff_sample_formats_are_named_in_the_refusal(data, named):
    with pytest.raises(ImageRejected) as caught:
        decode_image(data, "image/tiff")
    assert (caught.value.reason, caught.value.status) == ("unsupported_type", 415)
    assert named in caught.value.message and "supported TIFF samples" in caught.value.message


def test_hand_written_tiff_helper_is_a_valid_tiff():
    # The refusals above must come from the sample format, not from a malformed file.
    np.testing.assert_array_equal(
        decode_image(_tiff_by_hand(RGB, bits=8, sample_format=1, photometric=2), "image/tiff"), RGB
    )

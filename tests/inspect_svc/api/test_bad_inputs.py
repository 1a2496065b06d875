"""A corpus of bad (and awkward but valid) requests to /inspect, each with the status it must get."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inspect_svc.main import create_app
from tests.conftest import add_camera, make_settings, png_bytes

MAX_BODY = 300_000
MAX_PIXELS = 1_000_000


def encode(array: np.ndarray, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=image_format, **options)
    return buffer.getvalue()


RGB = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
JPEG = encode(RGB, "JPEG")
PNG = png_bytes()
# A 2000x2000 black PNG: a few KB on the wire, 4 MP once decoded (above MAX_PIXELS).
BOMB = encode(np.zeros((2000, 2000), np.uint8), "PNG", optimize=True)
CORRUPT_PNG = PNG[:40] + bytes(range(256)) * 4 + PNG[-12:]
DEMO_PART = np.asarray(Image.open(Path(__file__).parents[3] / "demo" / "part.png").convert("RGB"))
INTACT_DEMO_JPEG = encode(DEMO_PART, "JPEG", quality=90)
# A camera glitch: the first half of a frame, closed with the end-of-image marker. libjpeg only warns.
HALF_DEMO_JPEG = INTACT_DEMO_JPEG[: len(INTACT_DEMO_JPEG) // 2] + b"\xff\xd9"


def lying_jpeg(width: int, height: int) -> bytes:
    """About 1 KB of JPEG whose frame header claims width x height (the decoder would fill the rest in)."""
    data = bytearray(encode(np.tile(RGB, (2, 2, 1))[:64, :64], "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def opencv_tiff(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".tiff", np.ascontiguousarray(array[:, :, ::-1]))
    assert ok
    return encoded.tobytes()


# 8 x 40,000: 320,000 pixels, but 32 x 40,000 once padded to the test model's 32-pixel tiles.
THIN_STRIP = encode(np.zeros((8, 40_000), np.uint8), "PNG", optimize=True)


@pytest.fixture(scope="module")
def strict_client(tmp_path_factory, test_bundle) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(
        tmp_path_factory.mktemp("bad-inputs"),
        model=test_bundle.root,
        max_body_bytes=MAX_BODY,
        max_pixels=MAX_PIXELS,
    )
    with TestClient(create_app(settings)) as client:
        yield client, add_camera(client)


RAW_CASES = [
    ("empty body", b"", "image/png", 400),
    ("text declared as image", b"hello, world", "image/png", 415),
    ("text with octet-stream", b"hello, world", "application/octet-stream", 415),
    ("unsupported content type", PNG, "text/plain", 415),
    ("gif content type", PNG, "image/gif", 415),
    ("PNG declared as JPEG", PNG, "image/jpeg", 415),
    ("truncated JPEG", JPEG[: len(JPEG) // 2], "image/jpeg", 422),
    ("truncated PNG", PNG[: len(PNG) // 2], "image/png", 422),
    ("corrupt PNG data", CORRUPT_PNG, "image/png", 422),
    ("decompression bomb", BOMB, "image/png", 413),
    ("too small", encode(RGB[:4, :4], "PNG"), "image/png", 422),
    ("JPEG header claiming 900x500", lying_jpeg(900, 500), "image/jpeg", 422),
    ("half a JPEG frame + end marker", HALF_DEMO_JPEG, "image/jpeg", 422),
    ("thin strip over the tiled pixel budget", THIN_STRIP, "image/png", 413),
    ("16-bit signed TIFF", opencv_tiff(RGB.astype(np.int16)), "image/tiff", 415),
    ("body over the limit", b"\x89PNG\r\n\x1a\n" + bytes(MAX_BODY + 10), "image/png", 413),
    ("JPEG", JPEG, "image/jpeg", 200),
    ("JPEG untyped", JPEG, "application/octet-stream", 200),
    ("PNG without content type", PNG, "", 200),
    ("grey PNG", encode(RGB[:, :, 0], "PNG"), "image/png", 200),
    ("RGBA PNG", png_bytes(mode="RGBA"), "image/png", 200),
    ("16-bit PNG", encode((RGB[:, :, 0].astype(np.uint16) * 257), "PNG"), "image/png", 200),
    ("BMP", encode(RGB, "BMP"), "image/bmp", 200),
    ("TIFF", encode(RGB, "TIFF"), "image/tiff", 200),
    ("float32 RGB TIFF", opencv_tiff(RGB.astype(np.float32) / 255), "image/tiff", 200),
    ("float64 RGB TIFF", opencv_tiff(RGB.astype(np.float64) / 255), "image/tiff", 200),
    ("16-bit RGB TIFF", opencv_tiff(RGB.astype(np.uint16) * 257), "image/tiff", 200),
]


@pytest.mark.parametrize(
    ("body", "content_type", "status"), [case[1:] for case in RAW_CASES], ids=[case[0] for case in RAW_CASES]
)
def test_raw_body(strict_client, body, content_type, status):
    client, key = strict_client
    headers = {**key, "Content-Type": content_type} if content_type else key
    response = client.post("/inspect", content=body, headers=headers)
    assert response.status_code == status, response.text
    if status != 200:
        assert response.json()["detail"]
    else:
        assert response.json()["width"] == 48 and response.json()["height"] == 40


def test_streamed_body_over_the_limit_without_content_length(strict_client):
    client, key = strict_client

    def chunks() -> Iterator[bytes]:
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(10):
            yield bytes(MAX_BODY // 5)

    response = client.post("/inspect", content=chunks(), headers={**key, "Content-Type": "image/png"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("files", "data", "params", "status"),
    [
        ({"file": ("a.png", PNG, "image/png")}, {}, {}, 200),
        ({"upload": ("a.png", PNG, "image/png")}, {}, {}, 422),
        ({"file": ("a.png", PNG, "image/png")}, {"frame_id": "bad id!"}, {}, 422),
        ({"file": ("a.png", PNG, "image/png")}, {"camera_id": "someone-else"}, {}, 403),
        ({"file": ("a.txt", b"plain text", "text/plain")}, {}, {}, 415),
        ({"file": ("a.png", b"", "image/png")}, {}, {}, 400),
        ({"file": ("a.png", PNG, "image/png")}, {}, {"frame_id": "x" * 129}, 422),
        ({"file": ("a.png", PNG, "image/png")}, {}, {"include": "everything"}, 422),
        ({"file": ("a.png", PNG, "image/png")}, {}, {"line": "line/with/slashes"}, 422),
    ],
    ids=[
        "ok",
        "wrong field",
        "bad frame field",
        "other camera",
        "text file",
        "empty file",
        "long frame id",
        "unknown include",
        "bad line",
    ],
)
def test_multipart(strict_client, files, data, params, status):
    client, key = strict_client
    response = client.post("/inspect", files=files, data=data, params=params, headers=key)
    assert response.status_code == status, response.text


def test_malformed_multipart_is_a_client_error(strict_client):
    client, key = strict_client
    response = client.post(
        "/inspect",
        content=b"--boundary\r\nnot really multipart",
        headers={**key, "Content-Type": "multipart/form-data; boundary=boundary"},
    )
    assert 400 <= response.status_code < 500


def test_rejections_are_counted_by_reason(strict_client):
    client, key = strict_client
    client.post("/inspect", content=b"", headers={**key, "Content-Type": "image/png"})
    assert 'inspect_rejections_total{reason="empty"}' in client.get("/metrics").text


def test_a_damaged_frame_is_refused_with_the_decoders_reason_never_scored(strict_client):
    client, key = strict_client
    intact = client.post("/inspect", content=INTACT_DEMO_JPEG, headers={**key, "Content-Type": "image/jpeg"})
    assert intact.status_code == 200
    response = client.post("/inspect", content=HALF_DEMO_JPEG, headers={**key, "Content-Type": "image/jpeg"})
    assert response.status_code == 422
    assert response.json()["reason"] == "corrupt"
    assert "Corrupt JPEG data" in response.json()["detail"]


def test_float_tiff_refusals_name_what_is_supported(strict_client):
    client, key = strict_client
    body = opencv_tiff(RGB.astype(np.int16))
    response = client.post("/inspect", content=body, headers={**key, "Content-Type": "image/tiff"})
    assert response.status_code == 415
    assert "16-bit signed integer" in response.json()["detail"]
    assert "32- or 64-bit floats" in response.json()["detail"]


def test_a_camera_with_pixels_in_flight_gets_503_while_another_camera_gets_in(strict_client):
    client, key = strict_client
    other = add_camera(client, "cam-pixels-2")
    gate = client.app.state.service.models.pixels
    headers = {"Content-Type": "image/png"}
    with gate.hold("cam-1", MAX_PIXELS):  # cam-1 is busy with a frame of the whole budget
        refused = client.post("/inspect", content=PNG, headers={**key, **headers})
        admitted = client.post("/inspect", content=PNG, headers={**other, **headers})
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert "pixels in flight" in refused.json()["detail"]
    assert admitted.status_code == 200
    assert gate.pixels_in_flight == 0
    assert 'inspect_rejections_total{reason="pixels_in_flight"} 1.0' in client.get("/metrics").text

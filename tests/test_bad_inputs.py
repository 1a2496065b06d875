"""A corpus of bad (and awkward but valid) requests to /inspect, each with the status it must get."""

from __future__ import annotations

import io
from collections.abc import Iterator

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


@pytest.fixture(scope="module")
def strict_client(tmp_path_factory, test_bundle) -> Iterator[tuple[TestClient, dict[str, str]]]:
    settings = make_settings(
        tmp_path_factory.mktemp("bad-inputs"), model=test_bundle.root, max_body_bytes=MAX_BODY, max_pixels=MAX_PIXELS
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
    ("body over the limit", b"\x89PNG\r\n\x1a\n" + bytes(MAX_BODY + 10), "image/png", 413),
    ("JPEG", JPEG, "image/jpeg", 200),
    ("JPEG untyped", JPEG, "application/octet-stream", 200),
    ("PNG without content type", PNG, "", 200),
    ("grey PNG", encode(RGB[:, :, 0], "PNG"), "image/png", 200),
    ("RGBA PNG", png_bytes(mode="RGBA"), "image/png", 200),
    ("16-bit PNG", encode((RGB[:, :, 0].astype(np.uint16) * 257), "PNG"), "image/png", 200),
    ("BMP", encode(RGB, "BMP"), "image/bmp", 200),
    ("TIFF", encode(RGB, "TIFF"), "image/tiff", 200),
]


@pytest.mark.parametrize(("body", "content_type", "status"), [case[1:] for case in RAW_CASES],
                         ids=[case[0] for case in RAW_CASES])
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
    ids=["ok", "wrong field", "bad frame field", "other camera", "text file", "empty file", "long frame id",
         "unknown include", "bad line"],
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

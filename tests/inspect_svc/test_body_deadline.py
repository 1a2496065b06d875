"""Slow and vanishing clients against a real uvicorn: a body that does not arrive in time gets 408, and
a client that disconnects mid-body leaves one quiet log line, not a traceback."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from inspect_svc.main import create_app
from tests.conftest import make_settings
from tests.utils.live_server import live_server

READ_TIMEOUT_S = 0.5
DECLARED, SENT = 100_000, 1_000
HEAD = (
    f"POST /inspect?camera_id=cam-slow HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
    f"Content-Length: {DECLARED}\r\n\r\n"
).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory, test_bundle) -> Iterator[tuple[str, int]]:
    settings = make_settings(
        tmp_path_factory.mktemp("slow-clients"),
        model=test_bundle.root,
        require_api_key=False,
        body_timeout_s=READ_TIMEOUT_S,
    )
    with live_server(create_app(settings)) as address:
        yield address


def _read_response(connection: socket.socket) -> bytes:
    connection.settimeout(20)  # a guard against a hang, not a timing assertion
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(server):
    with socket.create_connection(server) as connection:
        connection.sendall(HEAD + b"\x89PNG\r\n\x1a\n" + bytes(SENT - 8))
        response = _read_response(connection)  # returns only because the server closed the connection
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", response[:300]
    assert b'"detail":"the request body did not arrive within 0.5 s (1000 bytes received)"' in rest
    with urllib.request.urlopen(f"http://{server[0]}:{server[1]}/openapi.json", timeout=20) as schema:
        assert "408" in json.load(schema)["paths"]["/inspect"]["post"]["responses"]  # the schema says so too


def test_a_trickling_body_is_cut_off_at_the_same_deadline(server):
    with socket.create_connection(server) as connection:
        connection.sendall(HEAD)
        connection.settimeout(20)
        status = b""
        for _ in range(400):  # at most 400 x 50 ms: far past the deadline, never a whole body
            try:
                connection.sendall(b"\0" * 10)
            except OSError:  # the server answered and closed
                break
            time.sleep(0.05)
        status = _read_response(connection).partition(b"\r\n")[0]
    assert status == b"HTTP/1.1 408 Request Timeout"


def test_a_client_that_disconnects_mid_body_is_logged_in_one_quiet_line(server, caplog):
    caplog.set_level(logging.INFO)
    with socket.create_connection(server) as connection:
        connection.sendall(HEAD + bytes(SENT))
    for _ in range(200):  # the server notices the disconnect asynchronously
        if any("disconnected" in record.getMessage() for record in caplog.records):
            break
        time.sleep(0.05)
    disconnects = [record for record in caplog.records if "disconnected" in record.getMessage()]
    assert len(disconnects) == 1
    # How many bytes the app saw depends on when uvicorn noticed the disconnect.
    assert re.fullmatch(
        rf"client disconnected during POST /inspect after \d+ of {DECLARED} body bytes",
        disconnects[0].getMessage(),
    )
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]


def test_a_whole_body_in_time_is_served(server):
    import httpx

    from tests.conftest import png_bytes

    host, port = server
    response = httpx.post(
        f"http://{host}:{port}/inspect",
        params={"camera_id": "cam-fast"},
        content=png_bytes(),
        headers={"Content-Type": "image/png"},
        timeout=20,
    )
    assert response.status_code == 200, response.text

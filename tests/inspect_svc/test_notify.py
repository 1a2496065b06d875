"""The webhook publisher and the retrying notifier (MQTT has its own test against a real broker)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient

from inspect_svc.main import create_app
from inspect_svc.notify import ResultNotice, mqtt_topic
from tests.conftest import add_camera, make_settings, png_bytes


class FlakyReceiver(BaseHTTPRequestHandler):
    """Answers 503 to the first POST and 204 afterwards; records the bodies it accepted."""

    accepted: ClassVar[list[dict]] = []
    attempts = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).attempts += 1
        if type(self).attempts == 1:
            self.send_response(503)
        else:
            type(self).accepted.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def webhook_url():
    FlakyReceiver.accepted, FlakyReceiver.attempts = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyReceiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


def test_webhook_is_retried_and_flushed_at_shutdown(tmp_path, test_bundle, webhook_url):
    settings = make_settings(tmp_path, model=test_bundle.root, webhook_url=webhook_url)
    with TestClient(create_app(settings)) as client:
        client.app.state.service.notifier.backoff_s = 0.01
        key = add_camera(client, "cam-3", "line-w")
        post = {"content": png_bytes(), "headers": {**key, "Content-Type": "image/png"}}
        result = client.post("/inspect?frame_id=n-1", **post).json()
        repeat = client.post("/inspect?frame_id=n-1", **post)  # answered again, never notified again
        assert repeat.headers["Idempotent-Replay"] == "true"
    # Leaving the block shut the app down, which waits for queued notifications.
    assert FlakyReceiver.attempts == 2
    assert FlakyReceiver.accepted == [
        {
            "result": "NG" if result["verdict"] == "defect" else "OK",
            "inspection_id": result["id"],
            "camera_id": "cam-3",
            "frame_id": result["frame_id"],
            "line": "line-w",
            "verdict": result["verdict"],
            "score": result["score"],
            "model_version": "test-1",
        }
    ]


@pytest.mark.parametrize(
    ("line", "camera", "topic"),
    [
        ("line-a", "cam-1", "inspect/line-a/cam-1"),
        (None, "cam-1", "inspect/_/cam-1"),
        ("a/b", "c+#", "inspect/a_b/c__"),
    ],
)
def test_topics_never_contain_wildcards_or_extra_levels(line, camera, topic):
    notice = ResultNotice("id", camera, "f", line, "ok", 0.1, "v")
    assert mqtt_topic(notice) == topic


@pytest.mark.parametrize(("verdict", "result"), [("ok", "OK"), ("defect", "NG"), ("invalid_image", "NG")])
def test_only_a_scored_good_part_is_ok_to_the_line(verdict, result):
    notice = ResultNotice(
        inspection_id="i",
        camera_id="c",
        frame_id="f",
        line=None,
        verdict=verdict,
        score=0.0,
        model_version="m",
    )
    assert notice.result == result

"""Result notifications through the real Mosquitto broker on 127.0.0.1:1883."""

from __future__ import annotations

import json
import os
import queue
import socket
import uuid

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient

from inspect_svc.main import create_app
from tests.conftest import add_camera, make_settings, png_bytes

BROKER = ("127.0.0.1", 1883)
pytestmark = pytest.mark.mqtt


@pytest.fixture(scope="module")
def broker() -> str:
    try:
        socket.create_connection(BROKER, timeout=2).close()
    except OSError:
        message = f"no MQTT broker on {BROKER[0]}:{BROKER[1]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return f"mqtt://{BROKER[0]}:{BROKER[1]}"


@pytest.fixture
def subscriber(broker):
    """Messages on inspect/<unique line>/#, so parallel runs never see each other's results."""
    line = f"line-{uuid.uuid4().hex[:8]}"
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = queue.Queue()
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(f"inspect/{line}/#", qos=1)
    client.on_subscribe = lambda *_: subscribed.put(True)
    client.on_message = lambda _c, _u, message: received.put(message)
    client.connect(*BROKER)
    client.loop_start()
    subscribed.get(timeout=5)
    yield line, received
    client.disconnect()
    client.loop_stop()


def test_each_result_is_published_to_its_line_and_camera_topic(tmp_path, test_bundle, broker, subscriber):
    line, received = subscriber
    settings = make_settings(tmp_path, model=test_bundle.root, mqtt_url=broker)
    with TestClient(create_app(settings)) as client:
        key = add_camera(client, "cam-7", line)
        results = [
            client.post(
                "/inspect",
                content=png_bytes(seed=seed),
                params={"frame_id": f"m{seed}"},
                headers={**key, "Content-Type": "image/png"},
            ).json()
            for seed in range(3)
        ]
        # A replayed frame is not announced again: the line acted on it the first time.
        client.post(
            "/inspect",
            content=png_bytes(),
            params={"frame_id": "m0"},
            headers={**key, "Content-Type": "image/png"},
        )
        messages = [received.get(timeout=10) for _ in results]
    assert {message.topic for message in messages} == {f"inspect/{line}/cam-7"}
    payloads = {
        json.loads(message.payload)["inspection_id"]: json.loads(message.payload) for message in messages
    }
    assert set(payloads) == {result["id"] for result in results}
    for result in results:
        payload = payloads[result["id"]]
        assert payload["result"] == ("NG" if result["verdict"] == "defect" else "OK")
        assert payload["score"] == pytest.approx(result["score"])
        assert payload["model_version"] == "test-1" and payload["frame_id"] == result["frame_id"]
    assert received.empty()

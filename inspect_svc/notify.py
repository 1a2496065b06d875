"""Result notifications for a line's reject logic: a webhook and MQTT, sent off the request path.

`/inspect` only enqueues (never waits on a broker); one background task publishes with retries and
backoff. A full queue drops the oldest work rather than slowing inspection, and counts the drop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Protocol
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from inspect_svc.background import BackgroundLoop
from inspect_svc.metrics import ServiceMetrics

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
MQTT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ResultNotice:
    """What a PLC needs to act on a frame."""

    inspection_id: str
    camera_id: str
    frame_id: str
    line: str | None
    verdict: str
    score: float
    model_version: str

    @property
    def result(self) -> str:
        # Only a scored good part passes: a defect and a damaged frame (invalid_image) both stop it.
        return "OK" if self.verdict == "ok" else "NG"

    def payload(self) -> bytes:
        return json.dumps({"result": self.result, **asdict(self)}, separators=(",", ":")).encode()


def mqtt_topic(notice: ResultNotice) -> str:
    """`inspect/<line>/<camera>`; frames without a line go to `inspect/_/<camera>`."""
    return f"inspect/{_topic_level(notice.line or '_')}/{_topic_level(notice.camera_id)}"


def _topic_level(name: str) -> str:
    # '+', '#' and '/' are MQTT wildcards and separators; they must not appear inside one level.
    return "".join("_" if char in "+#/" else char for char in name)


class Publisher(Protocol):
    channel: str

    async def publish(self, notice: ResultNotice) -> None: ...

    async def close(self) -> None: ...


class WebhookPublisher:
    """POSTs the notice as JSON; any non-2xx answer counts as a failure."""

    channel = "webhook"

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self.url = url
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def publish(self, notice: ResultNotice) -> None:
        response = await self._client.post(
            self.url, content=notice.payload(), headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()

    async def close(self) -> None:
        await self._client.aclose()


class MqttPublisher:
    """Publishes with QoS 1 through paho's network thread; reconnects on its own after a broker restart."""

    channel = "mqtt"

    def __init__(self, url: str, *, client_id: str = "") -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"mqtt_url {url!r} names no host")
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
        if parts.username:
            self._client.username_pw_set(parts.username, parts.password)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.connect_async(parts.hostname, parts.port or 1883)
        self._client.loop_start()

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.DisconnectFlags,
        _reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._connected.clear()

    async def publish(self, notice: ResultNotice) -> None:
        await asyncio.to_thread(self._publish_blocking, notice)

    def _publish_blocking(self, notice: ResultNotice) -> None:
        if not self._connected.wait(MQTT_TIMEOUT_S):
            raise ConnectionError("MQTT broker not connected")
        info = self._client.publish(mqtt_topic(notice), notice.payload(), qos=1)
        info.wait_for_publish(MQTT_TIMEOUT_S)
        if not info.is_published():
            raise ConnectionError(f"MQTT publish not acknowledged (rc={info.rc})")

    async def close(self) -> None:
        await asyncio.to_thread(self._close_blocking)

    def _close_blocking(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Notifier:
    """Queues notices and publishes each to every publisher, retrying with exponential backoff.

    Args:
        publishers: where notices go; with none, `submit` is a no-op.
        metrics: counts notices dropped after the last retry.
        retries: attempts after the first failure.
        backoff_s: first wait between attempts; doubles per attempt.
    """

    def __init__(
        self,
        publishers: list[Publisher],
        *,
        metrics: ServiceMetrics,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.publishers = publishers
        self.metrics = metrics
        self.retries = retries
        self.backoff_s = backoff_s
        self._queue: asyncio.Queue[ResultNotice] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._loop = BackgroundLoop("notifier", self._run)

    def start(self) -> None:
        if self.publishers:
            self._loop.start()

    def submit(self, notice: ResultNotice) -> None:
        """Queue a notice without waiting; when the queue is full the oldest notice is dropped."""
        if not self.publishers:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            for publisher in self.publishers:
                self.metrics.notify_failures.labels(channel=publisher.channel).inc()
        self._queue.put_nowait(notice)

    async def stop(self, *, drain_timeout_s: float = 5.0) -> None:
        """Flush what is queued (up to `drain_timeout_s`), then close the publishers."""
        if self._loop.running:
            try:
                await asyncio.wait_for(self._queue.join(), drain_timeout_s)
            except asyncio.TimeoutError:
                log.warning("dropping %d notifications at shutdown", self._queue.qsize())
        await self._loop.stop()
        for publisher in self.publishers:
            await publisher.close()

    async def _run(self) -> None:
        while True:
            notice = await self._queue.get()
            try:
                await asyncio.gather(*(self._deliver(publisher, notice) for publisher in self.publishers))
            finally:
                self._queue.task_done()

    async def _deliver(self, publisher: Publisher, notice: ResultNotice) -> None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                await publisher.publish(notice)
                return
            except Exception as error:  # any transport failure is retried the same way
                if attempt == self.retries:
                    log.warning(
                        "%s notification for %s failed: %s", publisher.channel, notice.inspection_id, error
                    )
                    self.metrics.notify_failures.labels(channel=publisher.channel).inc()
                    return
                await asyncio.sleep(delay)
                delay *= 2


def build_publishers(*, webhook_url: str | None, mqtt_url: str | None) -> list[Publisher]:
    publishers: list[Publisher] = []
    if webhook_url:
        publishers.append(WebhookPublisher(webhook_url))
    if mqtt_url:
        publishers.append(MqttPublisher(mqtt_url))
    return publishers

"""Prometheus metrics, one registry per app so several apps (tests, workers) never collide."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Seconds; dense below 100 ms where a healthy line camera lives, sparse up to the request deadline.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

__all__ = ["CONTENT_TYPE_LATEST", "ServiceMetrics"]


class ServiceMetrics:
    """The service's instruments; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "inspect_http_requests",
            "HTTP requests by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "inspect_http_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_seconds = Histogram(
            "inspect_queue_seconds",
            "time a frame waited for the engine",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference_seconds = Histogram(
            "inspect_inference_seconds", "model time for a frame", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.total_seconds = Histogram(
            "inspect_total_seconds",
            "time from request to result for /inspect",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "inspect_batch_size", "tiles per ONNX Runtime run", buckets=BATCH_BUCKETS, registry=registry
        )
        self.rejections = Counter(
            "inspect_rejections", "/inspect requests refused, by reason", ["reason"], registry=registry
        )
        self.verdicts = Counter(
            "inspect_verdicts", "inspection results by verdict", ["verdict"], registry=registry
        )
        self.spooled = Counter(
            "inspect_spooled_results",
            "results spooled because the database was unreachable",
            registry=registry,
        )
        self.notify_failures = Counter(
            "inspect_notify_failures",
            "notifications dropped after all retries",
            ["channel"],
            registry=registry,
        )
        self.queue_depth = Gauge("inspect_queue_depth", "frames waiting for the engine", registry=registry)
        self.spool_depth = Gauge(
            "inspect_spool_depth", "results waiting in the outage spool", registry=registry
        )
        self.spool_rejected = Gauge(
            "inspect_spool_rejected",
            "spooled results the database refused, set aside for an operator",
            registry=registry,
        )
        self.storage_write_failures = Counter(
            "inspect_storage_write_failures",
            "local writes (blobs, spool, indexes, readiness probes) refused by a full or read-only disk",
            registry=registry,
        )
        self.storage_writable = Gauge(
            "inspect_storage_writable",
            "1 while the service's own disk takes writes, 0 while it refuses them",
            registry=registry,
        )

    def watch_queue_depth(self, read: Callable[[], float]) -> None:
        self.queue_depth.set_function(read)

    def watch_spool(self, depth: Callable[[], float], rejected: Callable[[], float]) -> None:
        self.spool_depth.set_function(depth)
        self.spool_rejected.set_function(rejected)

    def watch_storage(self, writable: Callable[[], bool]) -> None:
        self.storage_writable.set_function(lambda: float(writable()))

    def observe_batch(self, size: int) -> None:
        """Engine hook: one ONNX Runtime run over `size` tiles."""
        self.batch_size.observe(size)

    def render(self) -> bytes:
        return generate_latest(self.registry)

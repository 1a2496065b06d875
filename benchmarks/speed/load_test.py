"""Loopback load test of `POST /inspect`: a concurrency sweep next to the raw engine's throughput.

Starts `inspect-svc serve` on 127.0.0.1 (a free port, a fresh SQLite database in a temporary folder,
the given bundle) in its own process, or attaches to one already running with `--url`. Then, for each
concurrency level, that many clients post the same image (a new `frame_id` each time, so nothing is
an idempotent replay) for at most `--seconds` or `--max-requests`, whichever comes first. Before the
server starts and after it stops, `benchmarks.speed.engine` measures the bare ONNX Runtime session on the same
bundle at the batch size the service runs, so the two numbers share the machine but never compete for
it (the faster engine measurement is the reference).
Reports numbers, asserts nothing. Usage:

    python -m benchmarks.speed.load_test --bundle BUNDLE --image part.png
    python -m benchmarks.speed.load_test --bundle BUNDLE --image part.png --max-batch 1 --concurrency 1,8
    python -m benchmarks.speed.load_test --bundle BUNDLE --image part.png --url http://127.0.0.1:8000 --api-key KEY

Throughput counts 200 answers only. 503 answers (the engine queue is full: backpressure) are expected
at high concurrency and are counted apart from other failures; a client that gets one waits its
`Retry-After`, as a camera should, instead of hammering the server. The service overhead compares the
time per image over HTTP (1 / images per second) with the engine's time for the image's tiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np

from inspect_svc.bundle import BundleError, load_bundle
from inspect_svc.engine.tiling import plan_tiles
from inspect_svc.imaging import ImageRejected, decode_image

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# The engine bench runs as a module from the checkout that holds this package, wherever the caller stands.
CHECKOUT = Path(__file__).resolve().parents[2]
DEMO_KEY_LINE = re.compile(r"API key \(shown once\): (\S+)")
REQUEST_TIMEOUT_S = 30.0  # a request outliving this counts as a client-side error, never hangs a level
SERVER_START_TIMEOUT_S = 180.0  # loading and warming a bundle on a small CPU takes a while
SERVER_STOP_TIMEOUT_S = 40.0  # the service drains for up to 30 s on SIGTERM
WARMUP_REQUESTS = 3


class LoadTestError(RuntimeError):
    """A setup problem the user can fix (bad argument, server that does not start)."""


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    elapsed_s: float
    latencies_ms: list[float] = field(default_factory=list)  # of 200 answers only
    statuses: Counter[str] = field(default_factory=Counter)  # "200", "503", ..., "conn" for transport errors
    mean_batch: float | None = None  # tiles per ORT run, from the server's /metrics
    client_cpu_s: float = 0.0
    load_average: float = 0.0  # 1-minute load average of the machine at the level's end

    @property
    def ok(self) -> int:
        return self.statuses["200"]

    @property
    def requests_per_s(self) -> float:
        return sum(self.statuses.values()) / self.elapsed_s

    @property
    def images_per_s(self) -> float:
        return self.ok / self.elapsed_s

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


# --- arguments ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory or .zip")
    parser.add_argument("--image", type=Path, required=True, help="PNG or JPEG frame to post")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="longest duration of one level")
    parser.add_argument("--max-requests", type=int, default=2000, help="most requests sent in one level")
    parser.add_argument(
        "--max-batch", type=int, default=8, help="INSPECT_MAX_BATCH of the server (also the engine's batch)"
    )
    parser.add_argument("--url", default=None, help="attach to a running service on loopback instead")
    parser.add_argument("--api-key", default=None, help="camera key for --url (a started server makes one)")
    parser.add_argument("--engine-seconds", type=float, default=5.0, help="raw engine measurement time")
    parser.add_argument("--no-engine", action="store_true", help="skip the raw engine measurement")
    parser.add_argument("--json", action="store_true", help="also print one JSON object per level")
    args = parser.parse_args(argv)
    args.levels = _positive_ints(args.concurrency, "--concurrency")
    if args.seconds <= 0 or args.max_requests <= 0 or args.max_batch <= 0:
        parser.error("--seconds, --max-requests and --max-batch must be positive")
    if args.url is not None:
        _check_loopback(args.url)
        if args.api_key is None:
            parser.error("--url needs --api-key")
    return args


def _positive_ints(text: str, name: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise LoadTestError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise LoadTestError(f"{name} values must be at least 1, got {text!r}")
    return values


def _check_loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise LoadTestError(
            f"--url must point at a loopback address ({', '.join(sorted(LOOPBACK_HOSTS))}), got {url}"
        )


# --- the server under test ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def started_server(
    bundle: Path, max_batch: int, on_ready: Callable[[str], None] | None = None
) -> Iterator[tuple[str, str]]:
    """Run `inspect-svc serve` on a fresh SQLite database; yields (base URL, demo camera key).

    `on_ready(database_url)` runs once the server is ready (its schema made), e.g. to add dashboard users.
    """
    with tempfile.TemporaryDirectory(prefix="inspect-load-") as workdir:
        port = free_port()
        log_path = Path(workdir) / "server.log"
        env = {
            **os.environ,
            "INSPECT_DATA_DIR": str(Path(workdir) / "data"),
            "INSPECT_MAX_BATCH": str(max_batch),
        }
        command = [
            sys.executable, "-m", "inspect_svc.cli", "serve", "--model", str(bundle),
            "--db", f"sqlite:///{workdir}/inspect.db", "--host", "127.0.0.1", "--port", str(port),
        ]  # fmt: skip
        # The log goes to a file, not a pipe: an undrained pipe would stall the server under load.
        with log_path.open("wb") as log:
            server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            api_key = _wait_until_ready(server, url, log_path)
            if on_ready is not None:
                on_ready(f"sqlite:///{workdir}/inspect.db")
            yield url, api_key
        finally:
            _stop(server)


def _wait_until_ready(server: subprocess.Popen[bytes], url: str, log_path: Path) -> str:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise LoadTestError(f"the server exited with {server.returncode}:\n{_tail(log_path)}")
            try:
                if client.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.5)
        else:
            raise LoadTestError(
                f"the server was not ready within {SERVER_START_TIMEOUT_S:.0f} s:\n{_tail(log_path)}"
            )
    found = DEMO_KEY_LINE.search(log_path.read_text(errors="replace"))
    if found is None:
        raise LoadTestError(f"the server printed no demo camera key:\n{_tail(log_path)}")
    return found.group(1)


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- the clients --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str
    body: bytes
    content_type: str
    run_id: str  # makes every frame_id unique across runs against the same database


async def run_level(target: Target, concurrency: int, seconds: float, max_requests: int) -> LevelResult:
    """`concurrency` clients posting frames back to back until the time or request budget is spent."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"X-API-Key": target.api_key, "Content-Type": target.content_type}
    async with httpx.AsyncClient(
        base_url=target.url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S
    ) as client:
        batch_before = await _batch_totals(client)
        result = LevelResult(concurrency=concurrency, elapsed_s=0.0)
        issued = 0
        cpu_started, started = time.process_time(), time.perf_counter()
        deadline = started + seconds

        async def one_client() -> None:
            nonlocal issued
            while time.perf_counter() < deadline and issued < max_requests:
                issued += 1
                frame_id = f"{target.run_id}-c{concurrency}-{issued}"
                retry_after = await _post_frame(client, target.body, frame_id, result)
                if retry_after:
                    # Back off as a camera should; hammering a full queue would only steal the server's CPU.
                    await asyncio.sleep(min(retry_after, max(0.0, deadline - time.perf_counter())))

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
        result.client_cpu_s = time.process_time() - cpu_started
        result.load_average = os.getloadavg()[0]
        batch_after = await _batch_totals(client)
    if batch_before and batch_after and batch_after[1] > batch_before[1]:
        result.mean_batch = (batch_after[0] - batch_before[0]) / (batch_after[1] - batch_before[1])
    return result


async def _post_frame(client: httpx.AsyncClient, body: bytes, frame_id: str, result: LevelResult) -> float:
    """Post one frame and record its outcome; returns the seconds a 503 asked to wait (else 0)."""
    sent = time.perf_counter()
    try:
        response = await client.post("/inspect", content=body, params={"frame_id": frame_id})
    except httpx.HTTPError:
        result.statuses["conn"] += 1
        return 0.0
    result.statuses[str(response.status_code)] += 1
    if response.status_code == 200:
        result.latencies_ms.append((time.perf_counter() - sent) * 1000.0)
    if response.status_code == 503:
        try:
            return float(response.headers.get("Retry-After", "1"))
        except ValueError:
            return 1.0
    return 0.0


async def _batch_totals(client: httpx.AsyncClient) -> tuple[float, float] | None:
    """(sum, count) of the server's `inspect_batch_size` histogram, or None if /metrics is unreadable."""
    try:
        text = (await client.get("/metrics")).text
    except httpx.HTTPError:
        return None
    values = {}
    for name in ("inspect_batch_size_sum", "inspect_batch_size_count"):
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        if found is None:
            return None
        values[name] = float(found.group(1))
    return values["inspect_batch_size_sum"], values["inspect_batch_size_count"]


async def sweep(target: Target, levels: list[int], seconds: float, max_requests: int) -> list[LevelResult]:
    warmup = LevelResult(concurrency=1, elapsed_s=0.0)
    async with httpx.AsyncClient(base_url=target.url, timeout=REQUEST_TIMEOUT_S) as client:
        client.headers.update({"X-API-Key": target.api_key, "Content-Type": target.content_type})
        for index in range(WARMUP_REQUESTS):
            await _post_frame(client, target.body, f"{target.run_id}-warmup-{index}", warmup)
    if warmup.ok == 0:
        raise LoadTestError(f"warm-up requests failed with statuses {dict(warmup.statuses)}")
    return [await run_level(target, level, seconds, max_requests) for level in levels]


# --- the raw engine -----------------------------------------------------------------------------------


def engine_images_per_s(bundle: Path, batch: int, seconds: float) -> float:
    """Tiles per second of the bare ORT session at `batch`, from `benchmarks.speed.engine` in its own process."""
    command = [
        sys.executable, "-m", "benchmarks.speed.engine", "--bundle", str(bundle), "--batch", str(batch),
        "--seconds", str(seconds), "--json",
    ]  # fmt: skip
    finished = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds * 4 + 120, check=False, cwd=CHECKOUT
    )
    if finished.returncode != 0:
        raise LoadTestError(f"the engine bench failed: {finished.stderr.strip()}")
    last = [line for line in finished.stdout.splitlines() if line.startswith("{")][-1]
    return float(json.loads(last)["images_per_s"])


# --- report -------------------------------------------------------------------------------------------


def print_table(results: list[LevelResult], tiles_per_image: int, engine_tiles_per_s: float | None) -> None:
    engine_ms = tiles_per_image / engine_tiles_per_s * 1000.0 if engine_tiles_per_s else None
    header = (
        f"{'conc':>4} {'req/s':>8} {'img/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'batch':>5} {'client cpu':>10} {'load':>5} {'ms/img':>8} {'overhead':>8}  errors"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        errors = {status: count for status, count in sorted(result.statuses.items()) if status != "200"}
        ms_per_image = 1000.0 / result.images_per_s if result.ok else float("nan")
        overhead = f"{(ms_per_image / engine_ms - 1) * 100:7.0f}%" if engine_ms and result.ok else f"{'-':>8}"
        batch = f"{result.mean_batch:5.1f}" if result.mean_batch is not None else f"{'-':>5}"
        cpu_share = f"{result.client_cpu_s / result.elapsed_s * 100:9.0f}%"
        print(
            f"{result.concurrency:4d} {result.requests_per_s:8.1f} {result.images_per_s:8.1f} "
            f"{result.percentile_ms(50):8.1f} {result.percentile_ms(90):8.1f} {result.percentile_ms(99):8.1f} "
            f"{batch} {cpu_share} {result.load_average:5.1f} {ms_per_image:8.1f} {overhead}  {errors or '-'}"
        )
    if engine_ms is not None:
        best = max(results, key=lambda result: result.images_per_s)
        best_ms = 1000.0 / best.images_per_s if best.ok else float("nan")
        print(
            f"\nraw engine: {engine_tiles_per_s:.1f} tiles/s = {engine_ms:.1f} ms per image of {tiles_per_image} tiles; "
            f"best HTTP path: {best.images_per_s:.1f} images/s = {best_ms:.1f} ms per image at concurrency "
            f"{best.concurrency}; service overhead {(best_ms / engine_ms - 1) * 100:.0f}% of the engine time"
        )


def level_json(result: LevelResult, tiles_per_image: int, engine_tiles_per_s: float | None) -> str:
    ms_per_image = 1000.0 / result.images_per_s if result.ok else None
    engine_ms = tiles_per_image / engine_tiles_per_s * 1000.0 if engine_tiles_per_s else None
    return json.dumps(
        {
            "concurrency": result.concurrency,
            "requests_per_s": round(result.requests_per_s, 2),
            "images_per_s": round(result.images_per_s, 2),
            "p50_ms": round(result.percentile_ms(50), 2),
            "p90_ms": round(result.percentile_ms(90), 2),
            "p99_ms": round(result.percentile_ms(99), 2),
            "statuses": dict(result.statuses),
            "mean_batch": result.mean_batch,
            "client_cpu_share": round(result.client_cpu_s / result.elapsed_s, 3),
            "load_average": result.load_average,
            "engine_ms_per_image": engine_ms,
            "overhead": ms_per_image / engine_ms - 1 if ms_per_image and engine_ms else None,
        }
    )


# --- main ---------------------------------------------------------------------------------------------


def measure_engine(args: argparse.Namespace) -> float:
    rate = engine_images_per_s(args.bundle, args.max_batch, args.engine_seconds)
    print(f"raw engine at batch {args.max_batch}: {rate:.1f} tiles/s (load average {_load_average()})")
    return rate


def _load_average() -> str:
    """The 1-minute load average: on a shared machine it says how disturbed a measurement was."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"


def describe_image(path: Path, tile: int, overlap: int) -> tuple[bytes, str, int]:
    """(body, content type, tiles per frame) for the image to post."""
    body = path.read_bytes()
    content_type = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg"
    try:
        height, width = decode_image(body, content_type).shape[:2]
    except ImageRejected as error:
        raise LoadTestError(f"{path}: {error}") from None
    return body, content_type, len(plan_tiles(height, width, tile, overlap))


def run(args: argparse.Namespace) -> None:
    bundle = load_bundle(args.bundle)
    tiling = bundle.manifest.tiling
    body, content_type, tiles = describe_image(args.image, tiling.tile, tiling.overlap)
    print(
        f"model {bundle.manifest.model_version} ({bundle.manifest.backbone}, tile {tiling.tile}); image {args.image.name}: "
        f"{tiles} tiles; {os.cpu_count()} CPUs shared by client and server; "
        f"levels {args.levels}, at most {args.seconds:g} s or {args.max_requests} requests each"
    )
    run_id = uuid.uuid4().hex[:8]
    # The engine is measured before the server starts and after it stops, never while it runs; on a
    # machine shared with other work the faster of the two is the fairer (least disturbed) reference.
    engine_rates = [] if args.no_engine else [measure_engine(args)]
    if args.url is not None:
        target = Target(args.url.rstrip("/"), args.api_key, body, content_type, run_id)
        results = asyncio.run(sweep(target, args.levels, args.seconds, args.max_requests))
        print(f"attached to {args.url}")
    else:
        with started_server(args.bundle, args.max_batch) as (url, api_key):
            print(f"server {url}, INSPECT_MAX_BATCH={args.max_batch}, fresh SQLite database")
            target = Target(url, api_key, body, content_type, run_id)
            results = asyncio.run(sweep(target, args.levels, args.seconds, args.max_requests))
    if engine_rates:
        engine_rates.append(measure_engine(args))
    engine_rate = max(engine_rates, default=None)
    print()
    print_table(results, tiles, engine_rate)
    if args.json:
        for result in results:
            print(level_json(result, tiles, engine_rate))


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except (LoadTestError, BundleError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

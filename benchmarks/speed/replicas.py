"""Scale-out on one machine: throughput with 1, 2 and 3 replicas, and what the S3 blob store adds per frame.

Every replica is an `inspect-svc serve` process sharing one PostgreSQL schema (created here in the
local server's database, dropped afterwards) and one SeaweedFS S3 endpoint (started here when none
answers on the test port). The replicas run on the same CPUs, so the throughput of N replicas is a
ratio to one replica on this machine, not a prediction for N machines.

Throughput: `--concurrency` clients post the image (a new frame_id each) round-robin over the replicas
for `--seconds`; 200 answers per second. Latency: one replica on the file store and one on S3 run side
by side and get the same frames alternately, one at a time, so both see the same machine load; the
difference of the medians is what S3 adds per inspection (two PUTs: the frame and its map). The
latency test serves the tests' tiny pixel-wise model unless `--latency-bundle` is given, so that the
storage difference is not lost in the noise of a real model's inference time on a busy machine.
Reports numbers, asserts nothing. Usage:

    python -m benchmarks.speed.replicas
    python -m benchmarks.speed.replicas --bundle demo/bundle --image demo/part.png --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from inspect_svc.storage import migrations
from tests.utils.onnx_models import make_test_bundle
from tests.utils.replicas import Replica
from tests.utils.seaweed import S3Server

REPO_ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "bench-admin-token"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=REPO_ROOT / "demo" / "bundle")
    parser.add_argument("--image", type=Path, default=REPO_ROOT / "demo" / "part.png")
    parser.add_argument("--replicas", default="1,2,3", help="comma-separated replica counts")
    parser.add_argument("--concurrency", type=int, default=6, help="clients posting at once")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each throughput level")
    parser.add_argument(
        "--latency-requests", type=int, default=40, help="frames per store in the latency test"
    )
    parser.add_argument("--latency-bundle", type=Path, default=None, help="default: the tests' tiny model")
    parser.add_argument("--postgres", default=POSTGRES, help="PostgreSQL URL; a schema is created in it")
    return parser.parse_args(argv)


@contextlib.contextmanager
def fresh_schema(postgres: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{postgres}?options=-csearch_path%3D{schema}"
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def environment(database_url: str, s3: S3Server | None, bucket: str) -> dict[str, str]:
    values = {
        "INSPECT_DATABASE_URL": database_url,
        "INSPECT_AUTO_MIGRATE": "false",
        "INSPECT_ADMIN_TOKEN": ADMIN_TOKEN,
        "INSPECT_INTRA_OP_THREADS": "1",
    }
    if s3 is not None:
        values |= {
            "INSPECT_BLOB_STORE": "s3",
            "INSPECT_S3_ENDPOINT": s3.endpoint,
            "INSPECT_S3_BUCKET": bucket,
            "INSPECT_S3_ACCESS_KEY": s3.access_key,
            "INSPECT_S3_SECRET_KEY": s3.secret_key,
        }
    return values


@contextlib.contextmanager
def running(replicas: list[Replica], bundle: Path) -> Iterator[list[Replica]]:
    try:
        replicas[0].start(model=bundle).wait_ready()
        for replica in replicas[1:]:
            replica.start()
        for replica in replicas[1:]:
            replica.wait_ready()
        yield replicas
    finally:
        for replica in replicas:
            replica.stop()


def camera_key(replica: Replica) -> str:
    with httpx.Client(base_url=replica.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        existing = admin.get("/cameras").json()
        name = f"bench-{len(existing)}"
        return admin.post("/cameras", json={"name": name, "line": "bench"}).json()["api_key"]


async def throughput(
    replicas: list[Replica], key: str, body: bytes, clients: int, seconds: float
) -> tuple[float, int]:
    """200 answers per second over `seconds`, and the count of other answers."""
    headers = {"X-API-Key": key, "Content-Type": "image/png"}
    run = uuid.uuid4().hex[:8]
    ok = failed = 0
    async with httpx.AsyncClient(headers=headers, timeout=180.0) as client:
        for index, replica in enumerate(replicas):  # warm-up: every replica has served a frame
            with contextlib.suppress(httpx.HTTPError):
                await client.post(
                    f"{replica.url}/inspect", content=body, params={"frame_id": f"{run}-warm-{index}"}
                )
        started = time.perf_counter()
        deadline = started + seconds
        sent = 0

        async def one_client() -> None:
            nonlocal ok, failed, sent
            while time.perf_counter() < deadline:
                sent += 1
                replica = replicas[sent % len(replicas)]
                try:
                    response = await client.post(
                        f"{replica.url}/inspect", content=body, params={"frame_id": f"{run}-{sent}"}
                    )
                except httpx.HTTPError:
                    failed += 1
                    continue
                if response.status_code == 200:
                    ok += 1
                else:
                    failed += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return ok / elapsed, failed


def alternate_latency(
    file_replica: Replica, s3_replica: Replica, keys: tuple[str, str], body: bytes, requests: int
) -> tuple[list[float], list[float]]:
    """Milliseconds per inspection on each replica, the two taking turns one frame at a time."""
    timings: tuple[list[float], list[float]] = ([], [])
    run = uuid.uuid4().hex[:8]
    with httpx.Client(timeout=180.0) as client:
        for index in range(requests + 3):
            for side, (replica, key) in enumerate(zip((file_replica, s3_replica), keys, strict=True)):
                sent = time.perf_counter()
                response = client.post(
                    f"{replica.url}/inspect",
                    content=body,
                    params={"frame_id": f"{run}-{side}-{index}"},
                    headers={"X-API-Key": key, "Content-Type": "image/png"},
                )
                response.raise_for_status()
                if index >= 3:  # the first frames warm the connection pools
                    timings[side].append((time.perf_counter() - sent) * 1000.0)
    return timings


def describe(values: list[float]) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(ordered):.1f} ms, p90 {ordered[int(0.9 * (len(ordered) - 1))]:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    body = args.image.read_bytes()
    levels = [int(part) for part in args.replicas.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as workdir_name:
        workdir = Path(workdir_name)
        s3 = S3Server.start_or_reuse(workdir / "s3")
        try:
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            print(
                f"bundle {args.bundle}, image {args.image.name}, {args.concurrency} clients, "
                f"{args.seconds:.0f} s per level"
            )
            rates: dict[int, float] = {}
            for count in levels:
                with fresh_schema(args.postgres) as database_url:
                    env = environment(database_url, s3, bucket)
                    replicas = [
                        Replica(f"n{count}-r{i}", workdir / f"n{count}-r{i}", env) for i in range(count)
                    ]
                    with running(replicas, args.bundle):
                        key = camera_key(replicas[0])
                        rate, failed = asyncio.run(
                            throughput(replicas, key, body, args.concurrency, args.seconds)
                        )
                rates[count] = rate
                print(
                    f"{count} replica(s): {rate:.2f} images/s ({rate / rates[levels[0]]:.2f}x), "
                    f"{failed} non-200 answers"
                )
            latency_bundle = args.latency_bundle or make_test_bundle(workdir / "tiny", version="tiny-1").root
            with fresh_schema(args.postgres) as database_url:
                on_file = Replica("file", workdir / "lat-file", environment(database_url, None, bucket))
                on_s3 = Replica("s3", workdir / "lat-s3", environment(database_url, s3, bucket))
                with running([on_file, on_s3], latency_bundle):
                    keys = (camera_key(on_file), camera_key(on_s3))
                    file_ms, s3_ms = alternate_latency(on_file, on_s3, keys, body, args.latency_requests)
            print(f"latency, bundle {latency_bundle.name}, one frame at a time:")
            print(f"file store: {describe(file_ms)} over {len(file_ms)} frames")
            print(f"S3 store:   {describe(s3_ms)} over {len(s3_ms)} frames")
            print(
                f"S3 adds {statistics.median(s3_ms) - statistics.median(file_ms):+.1f} ms per inspection (medians)"
            )
        finally:
            s3.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

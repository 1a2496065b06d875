"""Latency of the first /inspect after start-up against the steady state (the cost of anything cold).

python -m benchmarks.speed.first_request --bundle demo/bundle --image demo/part.png --requests 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from inspect_svc.main import create_app
from inspect_svc.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("demo/bundle"))
    parser.add_argument("--image", type=Path, default=Path("demo/part.png"))
    parser.add_argument("--requests", type=int, default=5)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="first_request_"))
    settings = Settings(
        database_url=f"sqlite:///{root}/inspect.db", data_dir=root, model=args.bundle, require_api_key=False
    )
    body = args.image.read_bytes()
    started = time.perf_counter()
    with TestClient(create_app(settings)) as client:
        print(
            f"start-up (migrate, warm decoders, load and warm the model): {time.perf_counter() - started:.2f} s"
        )
        for index in range(args.requests):
            sent = time.perf_counter()
            reply = client.post(
                "/inspect",
                params={"camera_id": "bench", "frame_id": str(index)},
                content=body,
                headers={"content-type": "image/png"},
            )
            reply.raise_for_status()
            timings = {name: round(value, 1) for name, value in reply.json()["timings"].items()}
            print(f"request {index}: {(time.perf_counter() - sent) * 1e3:6.1f} ms  {timings}")


if __name__ == "__main__":
    main()

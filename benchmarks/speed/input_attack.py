"""One camera attacks with hostile frames while another posts normal ones: the victim's latency and the
server's peak memory.

Starts `inspect-svc serve` (see `load_test.started_server`) with a second camera, "attacker". The
victim (the demo camera) posts `--image` back to back, first alone for `--baseline-seconds`, then for
`--seconds` while `--attackers` clients of the attacking camera post, in turn, the frames that used
to hold the engine or the memory: a ~1 KB JPEG whose header claims 9000x5000, an 8x40000 PNG and a
7000x7000 PNG (both black, a few hundred bytes to 50 kB on the wire). The victim honours
Retry-After like a camera should (capped at 2 s); the attackers do not: after a refusal they post
again 10 ms later.

Peak memory is the server process's VmHWM (Linux), read after each phase. `--server-path` runs the
server from another source tree (for a before/after comparison). Reports numbers, asserts nothing:

    python -m benchmarks.speed.input_attack --bundle demo/bundle --image demo/part.png
    python -m benchmarks.speed.input_attack --bundle demo/bundle --image demo/part.png --server-path OLD_TREE
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import time
import tracemalloc
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.speed.load_test import started_server

ADMIN_TOKEN = "bench-admin-token"
MAX_RETRY_WAIT_S = 2.0
ATTACKER_PAUSE_S = 0.01  # hostile: ignores Retry-After; after a refusal it only yields to the victim


@dataclass
class Phase:
    """The victim's answers in one phase, and what the attackers got."""

    name: str
    victim_ms: list[float] = field(default_factory=list)
    victim_statuses: Counter[str] = field(default_factory=Counter)
    attack_statuses: Counter[str] = field(default_factory=Counter)
    peak_rss_mib: float = 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.victim_ms:
            return float("nan")
        return float(np.percentile(self.victim_ms, q))


def attack_payloads() -> dict[str, tuple[bytes, str]]:
    """The hostile frames, each with its content type."""
    small = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(small, "JPEG")
    lying = bytearray(small.getvalue())
    sof = lying.index(b"\xff\xc0")
    lying[sof + 5 : sof + 9] = (5000).to_bytes(2, "big") + (9000).to_bytes(2, "big")
    return {
        "jpeg claiming 9000x5000": (bytes(lying), "image/jpeg"),
        "png 8x40000": (_black_png(8, 40_000), "image/png"),
        "png 7000x7000": (_black_png(7000, 7000), "image/png"),
    }


def _black_png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width), np.uint8)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def server_pid(port: int) -> int:
    """The pid of the server listening on `port` (found by its command line: started_server keeps it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in command and str(port).encode() in command:
            return int(entry.name)
    raise RuntimeError(f"no server process found for port {port}")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


async def victim(client: httpx.AsyncClient, body: bytes, key: str, until: float, phase: Phase) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        response = await _post(client, body, "image/png", key, phase.victim_statuses)
        if response is not None and response.status_code == 200:
            phase.victim_ms.append((time.perf_counter() - started) * 1000.0)
        await _honour_retry_after(response)


async def attacker(
    client: httpx.AsyncClient, payloads: dict[str, tuple[bytes, str]], key: str, until: float, phase: Phase
) -> None:
    names = list(payloads)
    turn = 0
    while time.monotonic() < until:
        name = names[turn % len(names)]
        turn += 1
        statuses: Counter[str] = Counter()
        response = await _post(client, *payloads[name], key, statuses)
        for status, count in statuses.items():
            phase.attack_statuses[f"{name}: {status}"] += count
        if response is None or response.status_code != 200:
            await asyncio.sleep(ATTACKER_PAUSE_S)


async def _post(
    client: httpx.AsyncClient, body: bytes, content_type: str, key: str, statuses: Counter[str]
) -> httpx.Response | None:
    headers = {"X-API-Key": key, "Content-Type": content_type}
    try:
        response = await client.post(
            "/inspect", content=body, headers=headers, params={"frame_id": uuid.uuid4().hex}
        )
    except httpx.TransportError as error:
        statuses[type(error).__name__] += 1
        return None
    statuses[_outcome(response)] += 1
    return response


def _outcome(response: httpx.Response) -> str:
    """The status, with why for a refusal: the JSON reason, or the first words of the detail."""
    if response.status_code == 200:
        return "200"
    try:
        body = response.json()
        why = body.get("reason") or " ".join(str(body.get("detail", "")).split()[:4])
    except ValueError:
        why = ""
    return f"{response.status_code} {why}".strip()


async def _honour_retry_after(response: httpx.Response | None) -> None:
    if response is not None and response.status_code == 503:
        await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), MAX_RETRY_WAIT_S))


async def run_phases(
    url: str, victim_key: str, args: argparse.Namespace, pid: int, payloads: dict[str, tuple[bytes, str]]
) -> list[Phase]:
    body = args.image.read_bytes()
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        response = await client.post(
            "/cameras", json={"name": "attacker"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        response.raise_for_status()
        attacker_key = response.json()["api_key"]
        for _ in range(3):  # warm the HTTP path
            await _post(client, body, "image/png", victim_key, Counter())
        baseline = Phase("victim alone")
        await victim(client, body, victim_key, time.monotonic() + args.baseline_seconds, baseline)
        baseline.peak_rss_mib = peak_rss_mib(pid)
        attacked = Phase(f"victim + {args.attackers} attackers")
        until = time.monotonic() + args.seconds
        await asyncio.gather(
            victim(client, body, victim_key, until, attacked),
            *(attacker(client, payloads, attacker_key, until, attacked) for _ in range(args.attackers)),
        )
        attacked.peak_rss_mib = peak_rss_mib(pid)
    return [baseline, attacked]


def report(phases: list[Phase], payloads: dict[str, tuple[bytes, str]]) -> None:
    print(
        "attack frames: " + ", ".join(f"{name} ({len(body)} bytes)" for name, (body, _) in payloads.items())
    )
    print(
        f"{'phase':<28}{'victim ok':>10}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'peak RSS MiB':>14}  victim statuses"
    )
    for phase in phases:
        worst = max(phase.victim_ms) if phase.victim_ms else float("nan")
        print(
            f"{phase.name:<28}{len(phase.victim_ms):>10}{phase.percentile_ms(50):>9.0f}{phase.percentile_ms(95):>9.0f}"
            f"{worst:>9.0f}{phase.peak_rss_mib:>14.0f}  {dict(phase.victim_statuses)}"
        )
    for status, count in sorted(phases[-1].attack_statuses.items()):
        print(f"  attacker {status}: {count}")
    if len(phases) == 2 and phases[0].victim_ms and phases[1].victim_ms:
        ratio = statistics.median(phases[1].victim_ms) / statistics.median(phases[0].victim_ms)
        print(f"victim median under attack / alone: {ratio:.2f}")


def frame_bytes_per_pixel(bundle: Path, height: int = 7000, width: int = 7000) -> float:
    """Peak bytes the service allocates per frame pixel from decode to the stitched map (tracemalloc,
    which numpy reports to), for the bundle's tile geometry; the model's own buffers are not included."""
    from inspect_svc.bundle import load_bundle
    from inspect_svc.engine.tiling import extract_tiles, make_plan, stitch_plan
    from inspect_svc.imaging import decode_pixels, read_header

    tiling = load_bundle(bundle).manifest.tiling
    body = _black_png(height, width)
    tracemalloc.start()
    image = decode_pixels(body, read_header(body, "image/png"))
    plan = make_plan(height, width, tiling.tile, tiling.overlap)
    tiles = extract_tiles(image.transpose(2, 0, 1), plan.boxes, tiling.tile)
    probs = np.zeros(tiles.shape[:1] + tiles.shape[2:], np.float32)  # what the batcher fills in
    stitched = stitch_plan(probs, plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del image, tiles, probs, stitched
    return peak / (height * width)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True, help="the victim's normal frame (PNG)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the attack phase")
    parser.add_argument("--baseline-seconds", type=float, default=10.0)
    parser.add_argument("--attackers", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument(
        "--server-path", type=Path, help="source tree the server is run from (default: this one)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["INSPECT_ADMIN_TOKEN"] = ADMIN_TOKEN
    os.environ.setdefault("INSPECT_INTRA_OP_THREADS", "1")
    args.bundle, args.image = args.bundle.resolve(), args.image.resolve()
    if args.server_path is not None:
        # `python -m` puts the working directory first on the path: the server imports from there.
        os.environ["PYTHONPATH"] = str(args.server_path.resolve())
        os.chdir(args.server_path)
    payloads = attack_payloads()
    with started_server(args.bundle, args.max_batch) as (url, victim_key):
        pid = server_pid(int(url.rsplit(":", 1)[1]))
        phases = asyncio.run(run_phases(url, victim_key, args, pid, payloads))
    settings = {
        name: value
        for name, value in os.environ.items()
        if name.startswith("INSPECT_") and "TOKEN" not in name
    }
    print(f"server from {args.server_path or 'this tree'}; settings from the environment: {settings}")
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
    report(phases, payloads)
    print(
        f"memory per frame pixel in flight (decode to stitched map, 7000x7000): {frame_bytes_per_pixel(args.bundle):.1f} B"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

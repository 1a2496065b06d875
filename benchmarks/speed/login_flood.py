"""A login flood next to a camera: the camera's latency alone, next to form loads, right-password logins
(every try costs a password hash: the throttle never stops them) and wrong-password logins.

Starts `inspect-svc serve` on 127.0.0.1 (see `load_test.started_server`) with a dashboard user, then
runs four phases: the demo camera posting `--image` back to back (a new `frame_id` each time) alone,
then next to `--clients` clients that only load the login form (a control: the HTTP work of a flood
without any password check), then next to clients posting the right password, then the wrong one
(last: wrong passwords lock the loopback address out). Each login client loads the form (its
single-use token) and posts it, back to back, without honouring `Retry-After`. Each phase lasts at
most `--seconds`; each client stops after `--max-requests`. Loopback only. Reports numbers, asserts nothing:

    python -m benchmarks.speed.login_flood --bundle demo/bundle --image demo/part.png
    python -m benchmarks.speed.login_flood --bundle demo/bundle --image demo/part.png --server-path OLD_TREE
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from benchmarks.speed.input_attack import (  # the camera is the victim, the login clients attack
    ADMIN_TOKEN,
    MAX_RETRY_WAIT_S,
    Phase,
)
from benchmarks.speed.load_test import started_server

USERNAME, PASSWORD = "flood-user", "bench-password-123"
FORM_ONLY = ""  # a control: the flood's HTTP work without any password check
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


async def camera(
    client: httpx.AsyncClient, body: bytes, key: str, until: float, limit: int, phase: Phase
) -> None:
    headers = {"X-API-Key": key, "Content-Type": "image/png"}
    for _ in range(limit):
        if time.monotonic() >= until:
            return
        started = time.perf_counter()
        try:
            response = await client.post(
                "/inspect", content=body, headers=headers, params={"frame_id": uuid.uuid4().hex}
            )
        except httpx.TransportError as error:
            phase.victim_statuses[type(error).__name__] += 1
            continue
        phase.victim_statuses[str(response.status_code)] += 1
        if response.status_code == 200:
            phase.victim_ms.append((time.perf_counter() - started) * 1000.0)
        elif response.status_code == 503:
            await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), MAX_RETRY_WAIT_S))


async def login_client(url: str, password: str, until: float, limit: int, phase: Phase) -> None:
    # One client per flooder: the form's token is bound to its cookie, as in a browser.
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        for _ in range(limit):
            if time.monotonic() >= until:
                return
            try:
                form = await client.get("/dashboard/login")
                token = CSRF_FIELD.search(form.text)
                if password is FORM_ONLY:
                    phase.attack_statuses[f"form {form.status_code}"] += 1
                    continue
                if token is None:
                    phase.attack_statuses[f"form {form.status_code}"] += 1
                    continue
                response = await client.post(
                    "/dashboard/login",
                    data={
                        "username": USERNAME,
                        "password": password,
                        "csrf_token": token.group(1),
                        "next": "",
                    },
                )
            except httpx.TransportError as error:
                phase.attack_statuses[type(error).__name__] += 1
                continue
            phase.attack_statuses[str(response.status_code)] += 1
            client.cookies.clear()  # a flooder does not keep the session it may have opened


async def run_phases(url: str, key: str, args: argparse.Namespace) -> list[tuple[Phase, float]]:
    body = args.image.read_bytes()
    # Wrong passwords last: they lock the address out, and the phases share it (loopback).
    floods = [("camera alone", None), (f"+ {args.clients} login-form loads", FORM_ONLY),
              (f"+ {args.clients} right-password logins", PASSWORD),
              (f"+ {args.clients} wrong-password logins", "wrong-password")]  # fmt: skip
    phases = []
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:
        for _ in range(3):  # warm the HTTP path
            await client.post(
                "/inspect", content=body, headers={"X-API-Key": key, "Content-Type": "image/png"}
            )
        for name, password in floods:
            phase = Phase(name)
            started = time.monotonic()
            until = started + args.seconds
            flooders = (
                []
                if password is None
                else [
                    login_client(url, password, until, args.max_requests, phase) for _ in range(args.clients)
                ]
            )
            await asyncio.gather(camera(client, body, key, until, args.max_requests, phase), *flooders)
            phases.append((phase, time.monotonic() - started))
    return phases


def add_user(database_url: str) -> None:
    environment = {**os.environ, "INSPECT_NEW_PASSWORD": PASSWORD}
    command = [
        sys.executable,
        "-m",
        "inspect_svc.cli",
        "user",
        "add",
        USERNAME,
        "--role",
        "viewer",
        "--db",
        database_url,
    ]
    subprocess.run(command, env=environment, check=True, capture_output=True)


def report(phases: list[tuple[Phase, float]]) -> None:
    print(f"{'phase':<34}{'camera ok':>10}{'p50 ms':>9}{'p90 ms':>9}{'logins/s':>10}  login answers")
    for phase, seconds in phases:
        logins = sum(phase.attack_statuses.values()) / seconds if seconds else 0.0
        print(
            f"{phase.name:<34}{len(phase.victim_ms):>10}{phase.percentile_ms(50):>9.0f}{phase.percentile_ms(90):>9.0f}"
            f"{logins:>10.1f}  {dict(phase.attack_statuses)}  camera: {dict(phase.victim_statuses)}"
        )
    alone = phases[0][0].percentile_ms(50)
    for phase, _ in phases[1:]:
        print(f"camera median {phase.name} / alone: {phase.percentile_ms(50) / alone:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True, help="the camera's frame (PNG)")
    parser.add_argument("--clients", type=int, default=8, help="login clients in a flood")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--max-requests", type=int, default=2000, help="per client and phase")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument(
        "--server-path", type=Path, help="source tree the server is run from (default: this one)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["INSPECT_ADMIN_TOKEN"] = ADMIN_TOKEN
    os.environ["INSPECT_DASHBOARD_SECURE_COOKIES"] = "false"  # plain HTTP on loopback
    os.environ.setdefault("INSPECT_INTRA_OP_THREADS", "1")
    args.bundle, args.image = args.bundle.resolve(), args.image.resolve()
    if args.server_path is not None:
        os.environ["PYTHONPATH"] = str(args.server_path.resolve())
        os.chdir(args.server_path)
    with started_server(args.bundle, args.max_batch, on_ready=add_user) as (url, key):
        phases = asyncio.run(run_phases(url, key, args))
    print(f"server from {args.server_path or 'this tree'}; {os.cpu_count()} CPUs; load average at the end: "
          + ", ".join(f"{load:.1f}" for load in os.getloadavg()))  # fmt: skip
    report(phases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

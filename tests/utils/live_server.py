"""Real servers for the tests that need sockets: `inspect-svc serve` in a subprocess (signals, restarts,
file-size limits; its output is read through a pipe, so a limit set on the process never stops its logs),
and a uvicorn serving an ASGI app in a background thread."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

REPOSITORY = Path(__file__).parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} did not become ready")


class LiveServer:
    """One server process at a time on `database_url`, with its data directory under `data_dir`."""

    def __init__(self, *, model: Path, database_url: str, data_dir: Path) -> None:
        self.model, self.database_url, self.data_dir = model, database_url, data_dir
        self.process: subprocess.Popen[str] | None = None
        self.base = ""
        self.lines: list[str] = []

    def start(self) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "INSPECT_DATA_DIR": str(self.data_dir), "INSPECT_INTRA_OP_THREADS": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inspect_svc.cli",
                "serve",
                "--model",
                str(self.model),
                "--db",
                self.database_url,
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPOSITORY,
        )
        threading.Thread(target=self._read_output, args=(self.process,), daemon=True).start()
        wait_until_ready(self.base)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the service drains and shuts down."""
        self._end(signal.SIGTERM)

    def log_lines(self, text: str) -> list[str]:
        return [line for line in list(self.lines) if text in line]

    def _end(self, signum: int) -> None:
        if self.process is None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process = None

    def _read_output(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))


@contextmanager
def live_server(app: object, **config: object) -> Iterator[tuple[str, int]]:
    """Serve `app` until the block ends; yields (host, port). Extra keywords go to `uvicorn.Config`."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=30)

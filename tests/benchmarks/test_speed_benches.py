"""Every speed bench runs on the smallest honest configuration and prints its numbers.

Smoke tests: they keep the benches from rotting; times on a shared test machine mean nothing, so only
the presence of the numbers is checked, never their size. The server benches run as `python -m`, the
way they are documented, each against its own `inspect-svc serve` process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import png_bytes
from tests.utils.onnx_models import make_test_bundle

CHECKOUT = Path(__file__).resolve().parents[2]
NUMBER = r"\d+\.\d+"
TINY_PRETRAIN = [
    "--arch", "test_vit", "--batch-size", "2", "--global-size", "32", "--local-size", "32", "--local-crops", "1",
    "--points", "1", "--prototypes", "64", "--steps", "2", "--warmup", "1", "--workers", "0", "--num-images", "4",
    "--image-size", "48", "48", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def bundle_and_image(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`--bundle B --image I`: the tests' tiny pixel-wise bundle (32 px tiles), a 64x48 frame of 6 tiles."""
    root = tmp_path_factory.mktemp("speed")
    bundle = make_test_bundle(root / "bundle", version="bench-1")
    image = root / "part.png"
    image.write_bytes(png_bytes(64, 48))
    return ["--bundle", str(bundle.root), "--image", str(image)]


def run_module(module: str, *args: str, timeout: float = 240) -> str:
    """`python -m module args` from the checkout; its stdout (fails with the output when it fails)."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(CHECKOUT),
        "OMP_NUM_THREADS": "1",
        "INSPECT_INTRA_OP_THREADS": "1",
    }
    finished = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=CHECKOUT, env=environment, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    return finished.stdout


def test_engine(bundle_and_image: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed.engine import main

    options = ["--batch", "1,2", "--seconds", "0.2", "--warmup", "1", "--threads", "1", "--json"]
    assert main([*bundle_and_image[:2], *options]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [row["batch"] for row in rows] == [1, 2] and all(row["images_per_s"] > 0 for row in rows)


def test_first_request(bundle_and_image: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed.first_request import main

    main([*bundle_and_image, "--requests", "2"])
    printed = capsys.readouterr().out
    assert re.search(rf"start-up .*: {NUMBER} s", printed)
    assert len(re.findall(rf"request \d:\s+{NUMBER} ms", printed)) == 2


def test_review_queue_on_sqlite(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed.review_queue import main

    assert main(["--rows", "300", "--depth", "100", "--repeat", "2"]) == 0
    printed = capsys.readouterr().out
    timed = re.findall(rf"^(.+?)\s+({NUMBER}) ms\s+({NUMBER}) ms", printed, flags=re.MULTILINE)
    assert len(timed) >= 5 and any(name.startswith("line") for name, _, _ in timed)


@pytest.mark.slow
def test_load_test(bundle_and_image: list[str]) -> None:
    options = ["--concurrency", "1,2", "--seconds", "1", "--max-requests", "10", "--engine-seconds", "0.3"]
    printed = run_module("benchmarks.speed.load_test", *bundle_and_image, *options)
    levels = re.findall(rf"^\s+([12])\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}", printed, flags=re.MULTILINE)
    assert levels == ["1", "2"]
    assert re.search(rf"raw engine: {NUMBER} tiles/s", printed) and "service overhead" in printed


@pytest.mark.slow
def test_input_attack(bundle_and_image: list[str]) -> None:
    options = ["--seconds", "1", "--baseline-seconds", "1", "--attackers", "1"]
    printed = run_module("benchmarks.speed.input_attack", *bundle_and_image, *options)
    assert re.search(r"victim alone\s+\d+\s+\d+", printed) and re.search(
        r"victim \+ 1 attackers\s+\d+", printed
    )
    assert re.search(rf"memory per frame pixel in flight .*: {NUMBER} B", printed)


@pytest.mark.slow
@pytest.mark.postgres
def test_replicas(bundle_and_image: list[str], postgres_server: str) -> None:
    options = ["--replicas", "1", "--concurrency", "1", "--seconds", "1", "--latency-requests", "3"]
    printed = run_module(
        "benchmarks.speed.replicas", *bundle_and_image, *options, "--postgres", postgres_server
    )
    assert re.search(rf"1 replica\(s\): {NUMBER} images/s", printed)
    assert re.search(rf"file store: median {NUMBER} ms", printed)
    assert re.search(rf"S3 store:\s+median {NUMBER} ms", printed)


@pytest.mark.slow
def test_pretrain_step_on_the_cpu(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed.pretrain import main

    main(TINY_PRETRAIN)
    printed = capsys.readouterr().out
    for phase in ("model only (no data)", "data only", "end to end (JPEGs)"):
        assert re.search(rf"{re.escape(phase)}\s+{NUMBER} ms/step\s+{NUMBER} images/s", printed), phase


@pytest.mark.slow
def test_anomaly_cost(hybrid_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.speed.anomaly_cost import main

    main(
        [
            "--run",
            str(hybrid_run[0]),
            "--context",
            "0,3",
            "--bank-sizes",
            "32",
            "--repeats",
            "2",
            "--batch",
            "2",
        ]
    )
    table = capsys.readouterr().out
    rows = re.findall(rf"^\| (\d+) \| 32 \| \d+ \| {NUMBER} \| {NUMBER} \|$", table, flags=re.MULTILINE)
    assert rows == ["0", "3"]


@pytest.mark.slow
def test_login_flood(bundle_and_image: list[str]) -> None:
    options = ["--seconds", "1", "--clients", "1", "--max-requests", "5"]
    printed = run_module("benchmarks.speed.login_flood", *bundle_and_image, *options)
    assert re.search(rf"camera median .+ / alone: {NUMBER}", printed)


@pytest.mark.slow
def test_sqlite_sync(bundle_and_image: list[str], tmp_path: Path) -> None:
    options = ["--frames", "2", "--commits", "5", "--rounds", "1", "--dir", str(tmp_path)]
    printed = run_module("benchmarks.speed.sqlite_sync", *bundle_and_image, *options)
    assert re.search(r"FULL - NORMAL, medians: [+-]\d+\.\d ms", printed)

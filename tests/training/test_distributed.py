"""Pretraining under torchrun with two processes (gloo on CPU): the multi-GPU code path, for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from training.models.backbone import load_backbone

pytestmark = pytest.mark.slow


def _images(root: Path, count: int = 8) -> Path:
    root.mkdir()
    for index in range(count):
        rng = np.random.default_rng(index)
        image = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (0, 0), 4)
        cv2.imwrite(str(root / f"image_{index}.png"), image)
    return root


@pytest.mark.parametrize("objective", ["densedino", "densedino-crr"])
def test_two_process_run_trains_one_model_and_rank_zero_writes(tmp_path: Path, objective: str) -> None:
    data, out = _images(tmp_path / "images"), tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "training.cli",
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(out),
        "--arch",
        "test_vit",
        "--objective",
        objective,
        "--global-size",
        "32",
        "--local-size",
        "16",
        "--local-crops",
        "1",
        "--batch-size",
        "2",
        "--steps",
        "3",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--prototypes",
        "32",
        "--head-hidden-dim",
        "32",
        "--log-every",
        "1",
        "--checkpoint-every",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]  # rank 0 alone writes, once per step
    assert all(np.isfinite(r["loss"]) for r in records)
    assert json.loads((out / "config.json").read_text())["batch_size"] == 2
    model = load_backbone(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())

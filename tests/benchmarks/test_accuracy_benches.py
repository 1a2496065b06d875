"""Every accuracy bench runs end to end on a tiny hybrid run and prints (or writes) its numbers.

Smoke tests: they keep the benches from rotting as the product changes; the numbers of a 3-step
model mean nothing, so only their presence is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

NUMBER = r"\d+\.\d{3}"
TRIPLE = rf"{NUMBER} / {NUMBER} / {NUMBER}"  # pixel AUROC / AUPRO / image AUROC
TINY_DENSE_PROBE = [
    "--arch", "test_vit", "--objectives", "dino", "--steps", "1", "--batch-size", "2", "--global-size", "32",
    "--local-size", "16", "--local-crops", "1", "--points", "1", "--prototypes", "64", "--head-hidden-dim", "32",
    "--probe-steps", "2", "--probe-sizes", "32", "--unlabeled", "4", "--labeled", "40", "--device", "cpu",
    "--workers", "0",
]  # fmt: skip


def run_args(hybrid_run: tuple[Path, Path], *, test: bool = True) -> list[str]:
    """`--run RUN --data DATA [--test DATA]`: the run, its training set, and that set again to score on."""
    run, data = hybrid_run
    return ["--run", str(run), "--data", str(data), *(["--test", str(data)] if test else [])]


def test_anomaly_bank(
    hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.anomaly_bank import main

    out = tmp_path / "bank.json"
    main([*run_args(hybrid_run), "--neighbour-tiles", "0,1", "--bank-sizes", "32", "--out", str(out)])
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\| [01] \| 32 \|", line)]
    assert len(rows) == 2 and all(len(re.findall(TRIPLE, row)) >= 2 for row in rows)
    assert out.is_file() and json.loads(out.read_text())


def test_anomaly_features(
    hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.anomaly_features import main

    run, data = hybrid_run
    out = tmp_path / "features.json"
    main(["--run", str(run), "--train", str(data), "--test", str(data), "--out", str(out),
          "--stages", "enc_full", "--bank-size", "32"])  # fmt: skip
    printed = capsys.readouterr().out
    assert re.search(rf"trained enc_full \+ head\s+{TRIPLE}", printed)
    assert re.search(rf"random enc_full\s+{TRIPLE}", printed)
    assert out.is_file() and json.loads(out.read_text())


def test_decisions(hybrid_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.decisions import main

    run, data = hybrid_run
    main(["--model", str(run), "--data", str(data), "--top-pixels", "1,4"])
    printed = capsys.readouterr().out
    assert re.search(rf"k =\s+1: image AUROC {NUMBER}, image AP {NUMBER}", printed)
    assert re.search(rf"k =\s+4: image AUROC {NUMBER}", printed)
    assert re.search(rf"all lines\s+recall {NUMBER} \(\d+/4\)", printed)


def test_frame_ranking(hybrid_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.frame_ranking import main

    main([*run_args(hybrid_run), "--bank-size", "32", "--own-line-bank"])
    frames = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| img")]
    assert len(frames) == 4 and all(len(re.findall(TRIPLE, line)) == 4 for line in frames)


def test_hybrid_errors(hybrid_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.hybrid_errors import main

    main([*run_args(hybrid_run, test=False), "--top", "2"])
    weights = re.findall(rf"w = (\d\.\d\d).*all {TRIPLE}", capsys.readouterr().out)
    assert "0.00" in weights and "1.00" in weights


def test_line_calibration(hybrid_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.line_calibration import main

    main([*run_args(hybrid_run), "--quantiles", "0.5:0.99"])
    printed = capsys.readouterr().out
    for fit in ("pooled (one remap)", "validation, per line", "oracle: test normals, per line"):
        assert re.search(rf"\| {re.escape(fit)} \| 0\.5:0\.99 \| {TRIPLE} \|", printed), fit


def test_dense_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.dense_probe import main

    main(["--out", str(tmp_path), *TINY_DENSE_PROBE])
    assert re.search(r"32 px\s+random\s+linear AUROC \d\.\d{4}", capsys.readouterr().out)
    results = json.loads((tmp_path / "dense_probe.json").read_text())["results"]["32"]
    assert set(results) == {"random", "dino"} and all(0 <= r["nn_pixel_auroc"] <= 1 for r in results.values())

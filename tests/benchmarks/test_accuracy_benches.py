"""Every accuracy bench runs end to end on a tiny hybrid run, prints its numbers and writes them with `--json`.

Smoke tests: they keep the benches from rotting as the product changes; the numbers of a 3-step
model mean nothing, so only their presence is checked, and that the JSON holds the printed rows.
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


def results(path: Path, bench: str, **settings: object) -> list[dict]:
    """The rows of a bench's `--json` file, after checking its shape and the settings it names."""
    record = json.loads(path.read_text())
    assert record["bench"] == bench and record["rows"]
    assert "json" not in record["settings"]
    for name, value in settings.items():
        assert record["settings"][name] == value, name
    return record["rows"]


def test_anomaly_bank(
    hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.anomaly_bank import main

    out = tmp_path / "bank.json"
    main([*run_args(hybrid_run), "--neighbour-tiles", "0,1", "--bank-sizes", "32", "--out", str(out)])
    rows = [line for line in capsys.readouterr().out.splitlines() if re.match(r"\| [01] \| 32 \|", line)]
    assert len(rows) == 2 and all(len(re.findall(TRIPLE, row)) >= 2 for row in rows)
    written = results(out, "anomaly_bank", neighbour_tiles="0,1", bank_sizes="32", run=str(hybrid_run[0]))
    assert [(r["neighbour_tiles"], r["bank_size"]) for r in written] == [(0, 32), (1, 32)]
    for row, line in zip(written, rows, strict=True):
        assert f"{row['fused']['overall']['pixel_auroc']:.3f} / " in line


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
    written = results(out, "anomaly_features", stages="enc_full", bank_size=32)
    assert {"head", "trained enc_full", "trained enc_full + head", "random enc_full"} <= {
        r["features"] for r in written
    }
    for row in written:
        assert re.search(rf"{re.escape(row['features'])}\s+{row['pixel_auroc']:.3f} / ", printed)


def test_decisions(hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.decisions import main

    run, data = hybrid_run
    main(
        ["--model", str(run), "--data", str(data), "--top-pixels", "1,4", "--json", str(tmp_path / "d.json")]
    )
    printed = capsys.readouterr().out
    assert re.search(rf"k =\s+1: image AUROC {NUMBER}, image AP {NUMBER}", printed)
    assert re.search(rf"k =\s+4: image AUROC {NUMBER}", printed)
    assert re.search(rf"all lines\s+recall {NUMBER} \(\d+/4\)", printed)
    written = results(tmp_path / "d.json", "decisions", model=str(run), top_pixels="1,4")
    scores = [r for r in written if r["table"] == "image score"]
    assert [r["top_pixels"] for r in scores] == [1, 4]
    assert f"image AUROC {scores[0]['image_auroc']:.3f}, image AP {scores[0]['image_ap']:.3f}" in printed
    verdicts = [r for r in written if r["table"] == "verdicts at the stored threshold"]
    assert (
        verdicts[0]["lines"] == "all lines"
        and verdicts[0]["true_positives"] + verdicts[0]["false_negatives"] == 4
    )


def test_frame_ranking(
    hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.frame_ranking import main

    main([*run_args(hybrid_run), "--bank-size", "32", "--own-line-bank", "--json", str(tmp_path / "f.json")])
    frames = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| img")]
    assert len(frames) == 4 and all(len(re.findall(TRIPLE, line)) == 4 for line in frames)
    written = results(tmp_path / "f.json", "frame_ranking", bank_size=32, own_line_bank=True)
    assert [f"| {r['frame']} |" for r in written] == [line[: line.index(" |", 2) + 2] for line in frames]
    for row, line in zip(written, frames, strict=True):
        own = row["anomaly_own_line_bank"]
        assert f"| {own['inside']:.3f} / {own['outside']:.3f} / {own['pixel_auroc']:.3f} |" in line


def test_hybrid_errors(
    hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.hybrid_errors import main

    main([*run_args(hybrid_run, test=False), "--top", "2", "--json", str(tmp_path / "h.json")])
    weights = re.findall(rf"w = (\d\.\d\d).*all {TRIPLE}", capsys.readouterr().out)
    assert "0.00" in weights and "1.00" in weights
    written = results(tmp_path / "h.json", "hybrid_errors", top=2, tta=False)
    fusion = [r for r in written if r["table"] == "fusion weight"]
    assert [f"{r['fusion_weight']:.2f}" for r in fusion] == weights
    assert sum(r["runs_own"] for r in fusion) == 1 and all("all" in r["groups"] for r in fusion)
    assert len([r for r in written if r["table"].startswith("largest shares")]) == 4  # two per side


def test_line_calibration(
    hybrid_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.line_calibration import main

    main([*run_args(hybrid_run), "--quantiles", "0.5:0.99", "--json", str(tmp_path / "l.json")])
    printed = capsys.readouterr().out
    for fit in ("pooled (one remap)", "validation, per line", "oracle: test normals, per line"):
        assert re.search(rf"\| {re.escape(fit)} \| 0\.5:0\.99 \| {TRIPLE} \|", printed), fit
    written = results(tmp_path / "l.json", "line_calibration", quantiles="0.5:0.99", margin=4)
    for row in written:
        cells = f"{row['pixel_auroc']:.3f} / {row['aupro']:.3f} / {row['image_auroc']:.3f}"
        assert f"| {row['fitted_on']} | {row['low']}:{row['high']} | {cells} |" in printed
    assert len(written) == 3


def test_dense_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.accuracy.dense_probe import main

    main(["--out", str(tmp_path), *TINY_DENSE_PROBE, "--json", str(tmp_path / "rows.json")])
    assert re.search(r"32 px\s+random\s+linear AUROC \d\.\d{4}", capsys.readouterr().out)
    probes = json.loads((tmp_path / "dense_probe.json").read_text())["results"]["32"]
    assert set(probes) == {"random", "dino"} and all(0 <= r["nn_pixel_auroc"] <= 1 for r in probes.values())
    written = results(tmp_path / "rows.json", "dense_probe", steps=1, arch="test_vit", out=str(tmp_path))
    assert {(r["probe_size"], r["name"]) for r in written} == {(32, "random"), (32, "dino")}
    assert all(r["nn_pixel_auroc"] == probes[r["name"]]["nn_pixel_auroc"] for r in written)

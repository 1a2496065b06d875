"""Smoke test of the benchmark runner on tiny data: every regime, served through the exported bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.dataset import DataConfig, build_split
from benchmarks.runner import REGIMES, RunConfig, no_learning_map, parse_regimes, run_regimes
from tests.benchmarks.test_benchmarks_data import tiny_textures
from tests.synthetic_labeled import TINY_BACKBONE
from training.errors import UserError

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split")
    config = DataConfig(
        image_size=48, train_normal=4, train_defective=7, test_normal=2, test_defective=6, seed=1
    )
    build_split(tiny_textures(), out, config, "a")
    return out


@pytest.mark.slow
def test_every_regime_runs_through_the_bundle_and_is_reported(tiny_split: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    config = RunConfig(data=tiny_split, out=out, backbone=TINY_BACKBONE, steps=2, batch_size=4, image_size=32)
    results = run_regimes(config, progress=lambda _: None)
    rows = {(r["regime"], r["model"]) for r in results["rows"]}
    assert rows == {
        (g, m) for g in REGIMES for m in ("hybrid", "unet", "no-learning") if (g, m) != ("0", "unet")
    }
    for regime in REGIMES:  # each product row was exported and served from its bundle
        assert (out / "bundles" / regime / "model.onnx").is_file()
    for row in results["rows"]:
        assert set(row["per_surface"]) == {"surface0", "surface1"}
        # Each surface also gets its own threshold from its calibration images, and verdicts at it.
        assert set(row["line_thresholds"]) == {"surface0", "surface1"}
        for surface in row["per_surface"].values():
            assert 0.0 <= surface["line_false_alarm_rate"] <= 1.0
            assert 0.0 <= surface["line_verdict_recall"] <= 1.0
        for key in ("pixel_auroc", "aupro", "pixel_ap", "image_auroc", "false_alarm_rate"):
            values = [s[key] for s in row["per_surface"].values()]
            assert row["worst"][key] == (max(values) if key == "false_alarm_rate" else min(values))
            assert row["mean"][key] == pytest.approx(np.mean(values))
    held_out = next(r for r in results["rows"] if r["regime"] == "held-out-types")
    assert sum(s["defective_images"] for s in held_out["per_surface"].values()) < 12  # only held-out types
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == len(results["rows"])
    table = (out / "results.md").read_text()
    assert "pixel AP" in table and "surface1" in table and "defect types never labeled" in table


def test_a_finished_row_is_reused(tiny_split: Path, tmp_path: Path) -> None:
    config = RunConfig(
        data=tiny_split,
        out=tmp_path,
        backbone=TINY_BACKBONE,
        regimes=("1",),
        models=("no-learning",),
        image_size=32,
    )
    first = run_regimes(config, progress=lambda _: None)["rows"][0]
    row_file = tmp_path / "rows" / "1-no-learning.json"
    saved = json.loads(row_file.read_text())
    saved["row"]["seconds"] = -1.0  # a marker: only a reused row can carry it
    row_file.write_text(json.dumps(saved))
    second = run_regimes(config, progress=lambda _: None)["rows"][0]
    assert second["seconds"] == -1.0 and second["mean"] == first["mean"]


def test_the_no_learning_map_is_the_distance_to_the_median() -> None:
    image = np.full((4, 4, 3), 100, np.uint8)
    image[1, 2] = (151, 100, 100)
    expected = np.zeros((4, 4), np.float32)
    expected[1, 2] = 51 / 3 / 255
    assert np.allclose(no_learning_map(image), expected)


def test_bad_options_are_user_errors(tiny_split: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="held-out-types"):
        parse_regimes("5,7")
    config = RunConfig(data=tiny_split, out=tmp_path, backbone=TINY_BACKBONE, finetune_options={"no_such": 1})
    with pytest.raises(UserError, match="no_such"):
        run_regimes(config)
    result = runner.invoke(
        app,
        ["run-regimes", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--backbone", TINY_BACKBONE],
    )
    assert (
        result.exit_code == 2
        and "not a benchmark split" in result.output
        and "Traceback" not in result.output
    )


def test_table_renders_a_results_file(tiny_split: Path, tmp_path: Path) -> None:
    config = RunConfig(
        data=tiny_split, out=tmp_path, backbone=TINY_BACKBONE, regimes=("0",), models=("no-learning",)
    )
    run_regimes(config, progress=lambda _: None)
    result = runner.invoke(app, ["table", str(tmp_path / "results.json")])
    assert result.exit_code == 0 and result.output == (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_a_kept_bundle_is_scored_per_defect_type(
    tiny_split: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.accuracy.defect_types import main

    out = tmp_path / "results"
    config = RunConfig(
        data=tiny_split, out=out, backbone=TINY_BACKBONE, steps=2, batch_size=4, image_size=32,
        regimes=("5",), models=("hybrid",),
    )  # fmt: skip
    run_regimes(config, progress=lambda _: None)
    main(
        [
            "--bundle",
            str(out / "bundles" / "5"),
            "--data",
            str(tiny_split),
            "--json",
            str(tmp_path / "t.json"),
        ]
    )
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    test_types = json.loads((tiny_split / "test" / "defects.json").read_text())["samples"].values()
    assert {r["defect_type"] for r in rows} == {t for s in test_types for t in s.get("defects", [])}
    for row in rows:
        assert set(row["per_surface"]) <= {"surface0", "surface1"} and row["per_surface"]
        assert row["worst_pixel_auroc"] <= row["pixel_auroc"]
        assert (
            f"| {row['defect_type']} | {row['pixel_auroc']:.3f} ({row['worst_pixel_auroc']:.3f}) |" in printed
        )

"""The label-efficiency study end to end on a tiny two-line set, its splits, the U-Net baseline, and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, write_labeled_set
from training.baselines.unet import UNet, UNetConfig, train_unet
from training.cli import app
from training.data.labeled import LabeledSample, load_labeled_set
from training.study import split_pool_and_test

runner = CliRunner()
DEFECTIVE, NORMAL = 12, 8
TINY_STUDY_ARGS = [
    "--backbone",
    TINY_BACKBONE,
    "--labels",
    "1,2",
    "--held-out-types",
    "scratch",
    "--steps",
    "3",
    "--batch-size",
    "4",
    "--image-size",
    "32",
    "--device",
    "cpu",
]


def invoke_study(data: Path, out: Path, *options: str):
    """`label-study` with the tiny backbone on `data`, plus `options`."""
    return runner.invoke(app, ["label-study", "--backbone", TINY_BACKBONE, "--data", str(data), "--out", str(out),
                               *options])


def two_line_set(root: Path) -> Path:
    """12 defective (scratch and crack alternate) + 8 defect-free images, over two lines."""
    write_labeled_set(root, defective=DEFECTIVE, normal=NORMAL)
    labels = {}
    for index in range(DEFECTIVE + NORMAL):
        entry: dict = {"line": "line-a" if (index // 2) % 2 == 0 else "line-b"}
        if index < DEFECTIVE:
            entry["defects"] = ["scratch" if index % 2 else "crack"]
        labels[f"img{index:02d}"] = entry
    (root / "defects.json").write_text(json.dumps({"samples": labels}))
    return root


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(data, study folder, CLI output) of one tiny study."""
    base = tmp_path_factory.mktemp("study")
    data = two_line_set(base / "data")
    result = runner.invoke(
        app, ["label-study", "--data", str(data), "--out", str(base / "out"), *TINY_STUDY_ARGS]
    )
    assert result.exit_code == 0, result.output
    return data, base / "out", result.output


def test_study_writes_every_row(study_run: tuple[Path, Path, str]) -> None:
    _, out, output = study_run
    rows = json.loads((out / "study.json").read_text())["rows"]
    kinds = sorted((r["model"], r["labels_per_line"], r["evaluated_on"]) for r in rows)
    assert kinds == sorted(
        [
            ("zero-label", 0, "test"),
            ("zero-label", 0, "held-out-types"),
            ("hybrid", 1, "test"),
            ("unet", 1, "test"),
            ("hybrid", 2, "test"),
            ("unet", 2, "test"),
            ("hybrid", 2, "held-out-types"),
            ("unet", 2, "held-out-types"),
        ]
    )
    for row in rows:
        assert 0.0 <= row["metrics"]["pixel_auroc"] <= 1.0 and "aupro" in row["metrics"]
    assert "[7/7]" in output  # one progress line per trained model
    markdown = (out / "study.md").read_text()
    assert "| U-Net from scratch |" in markdown and "held out of the labels: scratch" in markdown


def test_test_split_is_fixed_and_never_trained_on(study_run: tuple[Path, Path, str]) -> None:
    _, out, _ = study_run
    study = json.loads((out / "study.json").read_text())
    test_stems = study["split"]["test_images"]
    assert {line for line in load_labeled_set(out / "splits" / "test").lines} == {"line-a", "line-b"}
    for row in study["rows"]:
        assert not set(row["training_images"]) & set(test_stems)
        if row["evaluated_on"] == "test":
            assert row["test_images"] == test_stems
        else:
            assert set(row["test_images"]) < set(test_stems)
    held_out_rows = [r for r in study["rows"] if r["evaluated_on"] == "held-out-types"]
    assert all(r["test_images"] == held_out_rows[0]["test_images"] for r in held_out_rows)
    held_out_test = {s.stem: s for s in load_labeled_set(out / "splits" / "test").samples}
    for row in held_out_rows:
        assert all(
            not held_out_test[s].defective or "scratch" in held_out_test[s].defect_types
            for s in row["test_images"]
        )


def test_unet_and_hybrid_see_the_same_labels(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    rows = json.loads((out / "study.json").read_text())["rows"]
    types = {s.stem: s.defect_types for s in load_labeled_set(data).samples}
    for k, trained_on in ((1, "pool"), (2, "pool"), (2, "pool-without-held-out-types")):
        pair = [
            r
            for r in rows
            if r["labels_per_line"] == k and r["trained_on"] == trained_on and r["model"] != "zero-label"
        ]
        hybrid, unet = sorted(pair, key=lambda r: r["model"])
        assert hybrid["training_images"] == unet["training_images"]
        assert hybrid["training_fingerprint"] == unet["training_fingerprint"]
        assert hybrid["labeled_defect_images"] == 2 * k  # k per line, two lines
        if trained_on != "pool":
            assert not any("scratch" in types[stem] for stem in hybrid["training_images"])


def test_rerun_reuses_finished_models(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    before = json.loads((out / "study.json").read_text())["rows"]
    result = runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS])
    assert result.exit_code == 0, result.output
    assert result.output.count("cached") == 7
    assert json.loads((out / "study.json").read_text())["rows"] == before


def test_other_anomaly_features_retrain_only_the_hybrids(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    before = json.loads((out / "study.json").read_text())["rows"]
    hybrids = len({row["run"] for row in before if row["model"] == "hybrid"})
    try:
        result = runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS,
                                     "--anomaly-features", "vit"])
        assert result.exit_code == 0, result.output
        assert result.output.count("cached") == 7 - hybrids
        assert json.loads((out / "study.json").read_text())["config"]["anomaly_features"] == "vit"
        assert "hybrid anomaly branch on vit features" in (out / "study.md").read_text()
    finally:  # leave the module's study as the other tests expect it
        runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS])


def test_copy_paste_retrains_what_it_trains_and_says_so(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    before = json.loads((out / "study.json").read_text())["rows"]
    zero_label = len({row["run"] for row in before if row["model"] == "zero-label"})  # one job, two rows
    try:
        result = runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS,
                                     "--copy-paste", "0.5"])
        assert result.exit_code == 0, result.output
        assert result.output.count("cached") == zero_label  # hybrids and U-Nets train on pasted crops
        assert json.loads((out / "study.json").read_text())["config"]["copy_paste"] == 0.5
        assert "pasted into 50% of the training crops" in (out / "study.md").read_text()
    finally:  # leave the module's study as the other tests expect it
        runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS])


def test_unknown_anomaly_features_are_a_one_line_error(tmp_path: Path) -> None:
    result = invoke_study(tmp_path, tmp_path / "out", "--anomaly-features", "pixels")
    assert result.exit_code == 2 and "--anomaly-features" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_split_is_stratified_deterministic_and_disjoint() -> None:
    samples = [
        LabeledSample(f"{line}-d{i}", Path(f"{line}-d{i}.png"), Path(f"m{i}.png"), ("stain",), line)
        for line in ("a", "b")
        for i in range(6)
    ]
    samples += [
        LabeledSample(f"{line}-n{i}", Path(f"{line}-n{i}.png"), None, (), line)
        for line in ("a", "b")
        for i in range(4)
    ]
    pool, test = split_pool_and_test(samples, 0.3, seed=1)
    assert (pool, test) == split_pool_and_test(list(reversed(samples)), 0.3, seed=1)
    assert {s.stem for s in pool} | {s.stem for s in test} == {s.stem for s in samples}
    assert not {s.stem for s in pool} & {s.stem for s in test}
    for line in ("a", "b"):
        assert sum(s.line == line and s.defective for s in test) == 2
        assert sum(s.line == line and not s.defective for s in test) == 1


def test_unet_keeps_the_tile_size() -> None:
    net = UNet().eval()
    for size in (32, 40):
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 1, size, size)


def test_unet_loss_decreases(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=4, normal=4)
    result = train_unet(load_labeled_set(data).samples, UNetConfig(image_size=32, steps=40, batch_size=8))
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.05
    image = np.full((48, 48, 3), 128, np.uint8)
    probabilities = result.predictor.predict(image)
    assert probabilities.shape == (48, 48) and 0.0 <= probabilities.min() <= probabilities.max() <= 1.0


@pytest.mark.parametrize("labels", ["1,x", "0,5", ",", "-1"])
def test_bad_labels_list_is_a_one_line_error(tmp_path: Path, labels: str) -> None:
    result = invoke_study(tmp_path, tmp_path / "out", "--labels", labels)
    assert result.exit_code == 2
    assert "--labels" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_held_out_type_is_a_one_line_error(tmp_path: Path) -> None:
    data = two_line_set(tmp_path / "data")
    result = invoke_study(data, tmp_path / "out", "--held-out-types", "scratch,dent", "--device", "cpu")
    assert result.exit_code == 2
    assert "dent" in result.output and "crack, scratch" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1

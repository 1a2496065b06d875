"""Evaluate: run and bundle agree, metrics.json has its keys, the report is written, bad bundles fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, model_cli, write_labeled_set
from training.evaluate import metrics_by_group

runner = CliRunner()


@pytest.fixture(scope="module")
def zero_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    data = write_labeled_set(root / "data")
    cli = model_cli()
    result = runner.invoke(cli, ["fit-normal", "--backbone", TINY_BACKBONE, "--data", str(data), "--out",
                                 str(root / "run"), "--image-size", "32", "--bank-size", "16"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["export", "--model", str(root / "run"), "--out", str(root / "bundle")])
    assert result.exit_code == 0, result.output
    return data, root / "run", root / "bundle"


def test_run_and_bundle_evaluate_alike(zero_label: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, run, bundle = zero_label
    reports = {}
    for name, model in (("run", run), ("bundle", bundle)):
        result = runner.invoke(model_cli(), ["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (tmp_path / name / "report.html").is_file()
    for key in ("pixel_auroc", "aupro", "image_auroc", "f1", "iou"):
        assert reports["run"][key] == pytest.approx(reports["bundle"][key], abs=2e-3)
    assert set(reports["run"]["per_defect_type"]) == {"scratch", "crack"}
    assert "thin_defects" in reports["run"] and "at_best" in reports["run"]["overall"]
    assert reports["bundle"]["model"]["source"] == "bundle"


def test_tampered_bundle_is_a_one_line_error(zero_label: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import shutil

    data, _, bundle = zero_label
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    result = runner.invoke(model_cli(), ["evaluate", "--model", str(copy), "--data", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "sha256" in result.output and "Traceback" not in result.output


def test_groups_add_every_normal_image_to_each_defect_type() -> None:
    import numpy as np

    masks = [np.array([[1, 0]]), np.array([[0, 1]]), np.array([[0, 0]])]
    maps = [np.array([[0.9, 0.1]]), np.array([[0.2, 0.3]]), np.array([[0.25, 0.0]])]
    result = metrics_by_group(maps, masks, [("stain",), ("scratch",), ()], {"pixel": 0.5, "image": 0.5})
    assert result["per_defect_type"]["stain"]["images"] == 2
    assert result["per_defect_type"]["stain"]["pixel_auroc"] == pytest.approx(1.0)
    # scratch: defect 0.3 against normals 0.2, 0.25, 0.0 → ranked above all.
    assert result["thin_defects"]["pixel_auroc"] == pytest.approx(1.0)
    assert result["overall"]["images"] == 3

"""Evaluate: run and bundle agree, metrics.json has its keys, the report is written, bad bundles fail clearly."""

from __future__ import annotations

import json
import re
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
    result = runner.invoke(
        cli,
        [
            "fit-normal",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(root / "run"),
            "--image-size",
            "32",
            "--bank-size",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["export", "--model", str(root / "run"), "--out", str(root / "bundle")])
    assert result.exit_code == 0, result.output
    return data, root / "run", root / "bundle"


def test_run_and_bundle_evaluate_alike(zero_label: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, run, bundle = zero_label
    reports = {}
    for name, model in (("run", run), ("bundle", bundle)):
        result = runner.invoke(
            model_cli(),
            ["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / name)],
        )
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (tmp_path / name / "report.html").is_file()
    for key in ("pixel_auroc", "aupro", "pixel_ap", "image_auroc", "f1", "iou"):
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
    result = runner.invoke(
        model_cli(), ["evaluate", "--model", str(copy), "--data", str(data), "--out", str(tmp_path / "r")]
    )
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


def test_image_scores_agree_between_pytorch_evaluation_and_the_service(
    zero_label: tuple[Path, Path, Path],
) -> None:
    import numpy as np

    from inspect_svc.bundle import load_bundle
    from inspect_svc.engine.predictor import Predictor
    from inspect_svc.engine.regions import summarize
    from training.data.labeled import load_images_with_masks, load_labeled_set
    from training.metrics import image_scores
    from training.predictor import TorchPredictor, default_overlap
    from training.runs import load_run

    data, run_dir, bundle_dir = zero_label
    run, bundle = load_run(run_dir), load_bundle(bundle_dir)
    assert bundle.manifest.image_score.top_pixels == run.thresholds["image_top_pixels"]
    torch_predictor = TorchPredictor(
        run.model, tile=run.tile, overlap=default_overlap(run.tile), mean=run.mean, std=run.std
    )
    service = Predictor(bundle)
    images = load_images_with_masks(load_labeled_set(data).samples).images
    for top_pixels in (1, 9, 50):
        evaluated = image_scores([torch_predictor.predict(image) for image in images], top_pixels)
        served = [
            summarize(service.predict(image), bundle.manifest.thresholds, top_pixels=top_pixels).score
            for image in images
        ]
        np.testing.assert_allclose(evaluated, served, atol=1e-3)


def test_metrics_json_reports_pixel_ap_verdicts_and_the_worst_line(
    zero_label: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, _, bundle = zero_label
    result = runner.invoke(
        model_cli(), ["evaluate", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("pixel_ap", "verdict_precision", "verdict_recall", "false_alarm_rate"):
        assert key in metrics and key in metrics["per_defect_type"]["scratch"]
    assert metrics["model"]["thresholds"]["image_top_pixels"] >= 1
    assert "false_alarm_rate" in (tmp_path / "report.html").read_text()


def test_groups_per_line_with_the_mean_and_the_worst_line() -> None:
    import numpy as np

    masks = [np.array([[1, 0]]), np.array([[0, 0]]), np.array([[0, 1]]), np.array([[0, 0]])]
    maps = [np.array([[0.9, 0.1]]), np.array([[0.2, 0.0]]), np.array([[0.6, 0.3]]), np.array([[0.7, 0.1]])]
    lines = ["steel", "steel", "wood", "wood"]
    result = metrics_by_group(
        maps, masks, [("stain",), (), ("scratch",), ()], {"pixel": 0.5, "image": 0.5}, lines=lines
    )
    assert set(result["per_line"]) == {"steel", "wood"}
    assert (
        result["per_line"]["steel"]["verdict_recall"] == 1.0
        and result["per_line"]["steel"]["false_alarm_rate"] == 0.0
    )
    # wood: its defect (0.3) ranks below a normal pixel (0.6), and its normal image (0.7) is rejected.
    assert result["per_line"]["wood"]["false_alarm_rate"] == 1.0
    assert result["lines"]["worst"]["pixel_auroc"]["line"] == "wood"
    assert result["lines"]["worst"]["false_alarm_rate"] == {"line": "wood", "value": 1.0}
    assert result["lines"]["mean"]["false_alarm_rate"] == pytest.approx(0.5)
    assert "per_line" not in metrics_by_group(
        maps, masks, [(), (), (), ()], {"pixel": 0.5, "image": 0.5}, lines=["steel"] * 4
    )


def test_report_has_the_per_type_table_a_colour_scale_and_telling_headings(
    zero_label: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, run, _ = zero_label
    result = runner.invoke(
        model_cli(), ["evaluate", "--model", str(run), "--data", str(data), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Per defect type</h2>" in page
    for row in ("all images", "scratch", "crack", "thin defects"):
        assert f"<tr><th>{row}" in page
    assert "src='scale.png'" in page and (tmp_path / "scale.png").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert f"{metrics['per_defect_type']['scratch']['pixel_auroc']:.4f}" in page
    # every miss names its defect type and image score
    assert re.search(r"<h3>img\d\d · (scratch|crack) · image score \d\.\d{3}", page)


def _case(stem: str, mask_box: tuple[int, int, int, int] | None, blobs: list[tuple[int, int, int, int]]):
    import numpy as np

    from training.report import Case

    mask = np.zeros((32, 32), bool)
    if mask_box:
        top, left, bottom, right = mask_box
        mask[top:bottom, left:right] = True
    prob = np.full((32, 32), 0.1, np.float32)
    for top, left, bottom, right in blobs:
        prob[top:bottom, left:right] = 0.9
    return Case(stem, np.zeros((32, 32, 3), np.uint8), mask, prob, ("scratch",) if mask_box else ())


def test_a_detection_that_spills_past_the_outline_is_not_a_false_alarm(tmp_path: Path) -> None:
    from training.report import worst_cases, write_report

    spill = _case("spill", (10, 10, 14, 20), [(8, 8, 16, 24)])  # overlaps the defect, larger than it
    stray = _case("stray", (10, 10, 14, 20), [(10, 10, 14, 20), (26, 26, 30, 30)])  # found + a separate blob
    flagged = _case("flagged", None, [(2, 2, 6, 6)])  # defect-free, flagged
    clean = _case("clean", None, [])
    _, alarms = worst_cases([spill, stray, flagged, clean], threshold=0.5, count=8)
    assert {c.stem for c in alarms} == {"stray", "flagged"}
    write_report(tmp_path, [spill, stray, flagged, clean], {"overall": {"pixel_auroc": 1.0}}, 0.5)
    page = (tmp_path / "report.html").read_text()
    assert "flagged · defect-free image flagged · image score 0.900" in page
    assert "stray · scratch · stray region away from the defect" in page

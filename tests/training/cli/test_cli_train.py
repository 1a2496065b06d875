"""The training verbs as a user meets them: progress, refusals, warnings, messages and defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import training.progress as progress_module
from tests.synthetic_labeled import TINY_BACKBONE, TINY_FINETUNE_ARGS, model_cli, write_labeled_set
from training.pretrain_config import MAX_DEFAULT_WORKERS, PretrainConfig, default_workers

runner = CliRunner()
ETA = re.compile(r"\[\d\d:\d\d<(\d\d:\d\d|\?)")  # tqdm's "[elapsed<remaining"


@pytest.fixture(autouse=True)
def loud_by_default() -> None:
    progress_module.set_quiet(False)


@pytest.fixture(scope="module")
def zero_label(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-train")
    data = write_labeled_set(root / "data")
    held_out = write_labeled_set(root / "held-out", seed=1)
    result = runner.invoke(
        model_cli(),
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
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        model_cli(), ["export", "--model", str(root / "run"), "--out", str(root / "bundle")]
    )
    assert result.exit_code == 0, result.output
    return {"data": data, "held_out": held_out, "run": root / "run", "bundle": root / "bundle"}


def evaluate(model: Path, data: Path, out: Path, *extra: str):
    return runner.invoke(
        model_cli(), ["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), *extra]
    )


# --- progress ---------------------------------------------------------------------------------------


def test_bars_are_drawn_only_on_a_terminal_and_not_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: False)
    assert not progress_module.bars_enabled()
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    assert progress_module.bars_enabled()
    progress_module.set_quiet(True)
    assert not progress_module.bars_enabled()


def test_finetune_shows_steps_bank_calibration_and_thresholds_with_an_eta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_labeled_set(tmp_path / "data")
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    args = [
        "finetune",
        "--backbone",
        TINY_BACKBONE,
        "--data",
        str(data),
        *TINY_FINETUNE_ARGS,
        "--device",
        "cpu",
    ]
    result = runner.invoke(model_cli(), [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for phase in ("fine-tuning", "memory bank", "calibration", "fusion weight", "thresholds"):
        assert re.search(rf"{phase}[^\n\r]*{ETA.pattern}", result.stderr), phase
    quiet = runner.invoke(model_cli(), [*args, "--out", str(tmp_path / "quiet"), "--quiet"])
    assert quiet.exit_code == 0, quiet.output
    assert not ETA.search(quiet.stderr)


def test_evaluate_shows_progress_on_a_terminal_only(
    zero_label: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = evaluate(zero_label["run"], zero_label["held_out"], tmp_path / "plain")
    assert plain.exit_code == 0, plain.output
    assert not ETA.search(plain.stderr)  # a log file or CI gets no bars
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    shown = evaluate(zero_label["run"], zero_label["held_out"], tmp_path / "shown")
    assert re.search(rf"evaluating[^\n\r]*{ETA.pattern}", shown.stderr)
    quiet = evaluate(zero_label["run"], zero_label["held_out"], tmp_path / "quiet", "--quiet")
    assert quiet.exit_code == 0 and not ETA.search(quiet.stderr)


# --- evaluate: the served path, the training-data warning, a pretraining run ------------------------


def test_a_run_is_evaluated_through_onnx_runtime_exactly_as_its_bundle(
    zero_label: dict[str, Path], tmp_path: Path
) -> None:
    reports = {}
    for name in ("run", "bundle"):
        result = evaluate(zero_label[name], zero_label["held_out"], tmp_path / name)
        assert result.exit_code == 0, result.output
        reports[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    for key in ("pixel_auroc", "aupro", "image_auroc", "f1", "iou", "per_defect_type"):
        assert reports["run"][key] == reports["bundle"][key]
    assert reports["run"]["model"]["source"] == "run"


def test_a_run_whose_export_fails_is_still_evaluated_in_pytorch(
    zero_label: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export as export_module
    from training.errors import UserError

    def parity_failure(*args: object, **kwargs: object) -> None:
        raise UserError("export parity failed")

    monkeypatch.setattr(export_module, "export_run", parity_failure)
    result = evaluate(zero_label["run"], zero_label["held_out"], tmp_path / "torch")
    assert result.exit_code == 0, result.output
    assert evaluate(zero_label["bundle"], zero_label["held_out"], tmp_path / "bundle").exit_code == 0
    torch_metrics, bundle_metrics = (
        json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("torch", "bundle")
    )
    assert torch_metrics["pixel_auroc"] == pytest.approx(bundle_metrics["pixel_auroc"], abs=2e-3)


@pytest.mark.parametrize("model", ["run", "bundle"])
def test_evaluating_on_the_training_data_warns_in_one_line(
    zero_label: dict[str, Path], tmp_path: Path, model: str
) -> None:
    seen = evaluate(zero_label[model], zero_label["data"], tmp_path / "seen")
    assert seen.exit_code == 0, seen.output
    (line,) = [line for line in seen.stderr.splitlines() if line.startswith("warning:")]
    assert "evaluated images were used to make this model" in line
    # fit-normal read only the 4 defect-free images; the 4 defective ones are new to it.
    assert "4 of 8" in line
    metrics = json.loads((tmp_path / "seen" / "metrics.json").read_text())
    assert metrics["training_overlap"] == {"seen_in_training": 4, "evaluated": 8}
    fresh = evaluate(zero_label[model], zero_label["held_out"], tmp_path / "fresh")
    assert fresh.exit_code == 0 and "warning:" not in fresh.stderr


def test_a_renamed_copy_of_the_training_images_is_still_recognised(
    zero_label: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(zero_label["data"], copy)
    for image in (copy / "images").iterdir():
        image.rename(image.with_name("renamed-" + image.name))
        mask = copy / "masks" / image.name
        if mask.exists():
            mask.rename(mask.with_name("renamed-" + mask.name))
    labels = json.loads((copy / "defects.json").read_text())
    labels["samples"] = {f"renamed-{stem}": value for stem, value in labels["samples"].items()}
    (copy / "defects.json").write_text(json.dumps(labels))
    result = evaluate(zero_label["run"], copy, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "4 of 8 evaluated images were used" in result.stderr


def test_an_older_run_without_image_hashes_warns_on_its_exact_training_folder(
    zero_label: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    from training.training_data import TRAINING_IMAGES_FILE

    older = tmp_path / "older"
    shutil.copytree(zero_label["run"], older)
    (older / TRAINING_IMAGES_FILE).unlink()
    # fit-normal's fingerprint covers its defect-free images only, so a folder of exactly those matches it.
    normal_only = tmp_path / "normal"
    shutil.copytree(zero_label["data"], normal_only)
    for mask in (normal_only / "masks").iterdir():
        (normal_only / "images" / mask.name).unlink()
        mask.unlink()
    (normal_only / "defects.json").unlink()
    seen = evaluate(older, normal_only, tmp_path / "seen")
    assert seen.exit_code == 0, seen.output
    assert "warning: all evaluated images were used to make this model" in seen.stderr
    fresh = evaluate(older, zero_label["held_out"], tmp_path / "fresh")
    assert fresh.exit_code == 0 and "warning:" not in fresh.stderr


def test_evaluating_a_pretraining_run_says_what_to_do(tmp_path: Path) -> None:
    pretrain_run = tmp_path / "pre"
    pretrain_run.mkdir()
    (pretrain_run / "backbone.pt").write_bytes(b"weights")
    (pretrain_run / "config.json").write_text("{}")
    data = write_labeled_set(tmp_path / "data")
    for model in (pretrain_run, pretrain_run / "backbone.pt"):
        result = evaluate(model, data, tmp_path / "out")
        assert result.exit_code == 2
        assert "is a pretraining run: finetune or fit-normal it first" in result.output
        assert "Traceback" not in result.output


# --- export -------------------------------------------------------------------------------------------


def test_export_onto_an_existing_file_is_a_one_line_error(
    zero_label: dict[str, Path], tmp_path: Path
) -> None:
    existing = tmp_path / "bundle.onnx"
    existing.write_bytes(b"something precious")
    result = runner.invoke(model_cli(), ["export", "--model", str(zero_label["run"]), "--out", str(existing)])
    assert result.exit_code == 2
    assert "is a file" in result.output and "Traceback" not in result.output
    assert existing.read_bytes() == b"something precious"


def test_a_bundle_carries_its_runs_training_image_hashes(zero_label: dict[str, Path]) -> None:
    from training.training_data import TRAINING_IMAGES_FILE, read_training_images

    recorded = read_training_images(zero_label["run"])
    assert recorded is not None and len(recorded) == 4
    assert (zero_label["bundle"] / TRAINING_IMAGES_FILE).is_file()
    assert read_training_images(zero_label["bundle"]) == recorded


# --- defaults -----------------------------------------------------------------------------------------


def test_model_verbs_default_to_the_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import training.finetune as finetune_module
    import training.fit_normal as fit_normal_module

    seen = {}

    def fake_finetune(config: object) -> dict:
        seen["finetune"] = config
        return {"kind": "hybrid", "pixel_auroc": 1.0, "aupro": 1.0, "f1": 1.0}

    def fake_fit_normal(config: object) -> dict:
        seen["fit"] = config
        return {"pixel": 0.5, "image": 0.5}

    monkeypatch.setattr(finetune_module, "finetune", fake_finetune)
    monkeypatch.setattr(fit_normal_module, "fit_normal", fake_fit_normal)
    common = ["--backbone", TINY_BACKBONE, "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    assert runner.invoke(model_cli(), ["finetune", *common]).exit_code == 0
    assert runner.invoke(model_cli(), ["fit-normal", *common]).exit_code == 0
    expected_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    for config in (seen["finetune"], seen["fit"]):
        assert config.image_size == 128
        assert config.device == expected_device


def test_pretrain_defaults_are_the_recipe_and_fit_the_machine(tmp_path: Path) -> None:
    import os

    config = PretrainConfig(data=tmp_path, out=tmp_path / "run")
    assert config.photometric == "inspection" and config.device == "auto"
    assert config.workers == default_workers() == min(MAX_DEFAULT_WORKERS, len(os.sched_getaffinity(0)))


@pytest.mark.parametrize("verb", ["pretrain", "finetune", "fit-normal"])
def test_help_states_how_long_the_defaults_take(verb: str) -> None:
    from training.cli import app

    result = runner.invoke(app, [verb, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert re.search(r"CPU", text) and re.search(r"GPU", text)
    assert "minute" in text or "hour" in text

"""Fine-tuning end to end on a tiny synthetic set, its loss, and its input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, TINY_FINETUNE_ARGS, model_cli, write_labeled_set
from training.data.labeled import LabeledSample
from training.errors import UserError
from training.finetune import FinetuneConfig, split_train_val
from training.head_training import focal_dice_loss
from training.model_config import check_anomaly_options
from training.runs import load_run

runner = CliRunner()


def test_finetune_writes_a_hybrid_run(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data")
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--copy-paste",
            "0.5",
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run")
    assert run.model.kind == "hybrid"
    assert 0.0 <= run.thresholds["pixel"] <= 1.0 and 0.0 <= run.thresholds["image"] <= 1.0
    validation = json.loads((tmp_path / "run" / "metrics.json").read_text())["validation"]
    assert {"pixel_auroc", "aupro", "pixel_ap", "f1", "iou", "verdict_recall", "false_alarm_rate"} <= set(
        validation
    )
    # The image threshold is chosen for the default target recall on real + synthetic validation defects.
    decision = validation["decision"]
    assert decision["threshold"] == run.thresholds["image"] and decision["target_recall"] == 0.95
    assert decision["real_defective"] >= 1 and decision["synthetic_defective"] >= 1
    assert decision["expected_recall"] >= 0.95 and 0.0 <= decision["expected_false_alarm_rate"] <= 1.0
    assert run.thresholds["image_top_pixels"] == decision["top_pixels"] >= 1
    assert run.model(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    # The anomaly branch reads the head's conv encoder at 1/2 resolution: one bank row per 2x2 pixels,
    # a bank per normal tile, each query tile scored against its 4 nearest (32 rows in all). By
    # default a row is the 3x3 mean plus the 15x15 mean and std of the encoder's channels and of the
    # image's 3 pixel channels (weighted by 4): three times (channels + 3).
    anomaly = run.model.anomaly
    assert anomaly.source == "conv" and anomaly.context == 15 and anomaly.pixel_weight == 4.0
    banks = anomaly.scorer.tile_banks
    assert banks.shape[1:] == (32 // 4, 3 * (run.model.segmentation.config["widths"][1] + 3))
    assert run.model.anomaly.scorer.neighbours == min(4, banks.shape[0])
    features = run.model.anomaly_features(torch.zeros(2, 3, 32, 32))
    assert features.shape[-2:] == (16, 16)


@pytest.mark.parametrize(
    ("option", "features", "given", "expected"),
    [
        (
            "anomaly_context",
            "conv",
            None,
            15,
        ),  # the hybrid's default: bank rows with the 15x15 texture statistics
        ("anomaly_context", "conv", 0, 0),
        ("anomaly_context", "conv", 5, 5),
        ("anomaly_context", "vit", None, 0),  # patch tokens keep plain rows unless asked
        ("anomaly_context", "vit", 7, 7),
        (
            "anomaly_pixel_weight",
            "conv",
            None,
            4.0,
        ),  # the hybrid's default: bank rows carry the pixels, weighted by 4
        ("anomaly_pixel_weight", "conv", 0.0, 0.0),
        ("anomaly_pixel_weight", "vit", None, 0.0),  # patch tokens were never measured with them
        ("anomaly_pixel_weight", "vit", 2.0, 2.0),
    ],
)
def test_anomaly_defaults_follow_the_features(
    option: str, features: str, given: float | None, expected: float
) -> None:
    config = FinetuneConfig(
        backbone="", data=Path("data"), out=Path("run"), anomaly_features=features, **{option: given}
    )
    assert getattr(config, option) == expected


def test_negative_pixel_weight_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--anomaly-pixel-weight",
            "-1",
        ],
    )
    assert result.exit_code == 2 and "--anomaly-pixel-weight" in result.output
    with pytest.raises(UserError, match="--anomaly-pixel-weight"):
        check_anomaly_options("conv", pixel_weight=-1.0)


@pytest.mark.parametrize(("given", "expected"), [(None, 11), (0, 0), (5, 5)])
def test_head_context_default_is_resolved_when_the_config_is_built(given: int | None, expected: int) -> None:
    config = FinetuneConfig(backbone="", data=Path("data"), out=Path("run"), head_context=given)
    assert config.head_context == expected


def test_default_finetune_trains_the_head_with_texture_context(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--no-anomaly-branch",
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    head = load_run(tmp_path / "run").model.segmentation
    assert head.config["context"] == 11 and head.decoder.context.window == 11


@pytest.mark.parametrize(
    ("source", "stride", "neighbours", "context", "pixels"),
    [
        ("vit", 1, 4, 0, 0.0),
        ("vit", 1, 4, 0, 2.0),
        ("conv", 1, 4, 0, 0.0),
        ("conv", 2, 2, 0, 4.0),
        ("conv", 1, 0, 0, 4.0),
        ("conv", 2, 4, 5, 4.0),
    ],
)
def test_anomaly_branch_sources_round_trip(
    tmp_path: Path, source: str, stride: int, neighbours: int, context: int, pixels: float
) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=4)
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--anomaly-features",
            source,
            "--anomaly-stride",
            str(stride),
            "--neighbour-tiles",
            str(neighbours),
            "--anomaly-context",
            str(context),
            "--anomaly-pixel-weight",
            str(pixels),
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    model = load_run(tmp_path / "run").model
    assert (
        model.anomaly.source == source and model.anomaly.stride == stride and model.anomaly.context == context
    )
    assert model.anomaly.pixel_weight == pixels
    assert (model.anomaly.config["neighbour_tiles"] > 0) == (neighbours > 0)
    # Conv: one query per 2x2 pixels, or per 4x4 with stride 2; ViT: one per patch. The pixels add 3
    # channels, and the context triples them all.
    features = model.anomaly_features(torch.zeros(1, 3, 32, 32))
    grid, width = (16, model.segmentation.config["widths"][1]) if source == "conv" else (2, None)
    assert features.shape[-1] == grid // stride
    if width is not None:
        assert features.shape[1] == (width + (3 if pixels else 0)) * (3 if context else 1)
    tiles = torch.randn(3, 3, 32, 32)
    p_head, p_anomaly = model.branch_probabilities(tiles)
    fused = 1 - (1 - p_head) * (1 - model.fusion_weight * p_anomaly)
    torch.testing.assert_close(model(tiles), fused)
    # The calibration's input is the branch's raw score: p_anomaly is its logistic.
    raw = model.anomaly_raw_score(tiles)
    torch.testing.assert_close(p_anomaly, torch.sigmoid((raw - model.anomaly.center) / model.anomaly.scale))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--anomaly-features", "pixels"),
        ("--anomaly-stride", "0"),
        ("--neighbour-tiles", "-1"),
        ("--copy-paste", "1.5"),
        ("--anomaly-context", "4"),
        ("--head-context", "4"),
    ],
)
def test_bad_anomaly_options_are_refused(tmp_path: Path, option: str, value: str) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            option,
            value,
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 2 and option in result.output


def test_a_label_free_branch_stands_in_for_the_bank_and_exports(tmp_path: Path) -> None:
    """`--label-free-steps`: the fused branch is a discriminator + bank model that never saw a label."""
    from training.export import export_run

    data = write_labeled_set(tmp_path / "data", defective=2, normal=4)
    args = ["--backbone", TINY_BACKBONE, "--data", str(data), "--out", str(tmp_path / "run")]
    result = runner.invoke(model_cli(), ["finetune", *args, "--label-free-steps", "2", *TINY_FINETUNE_ARGS])
    assert result.exit_code == 0, result.output
    model = load_run(tmp_path / "run").model
    free = model.label_free
    assert model.kind == "hybrid" and model.anomaly is None and free is not None
    assert free.backbone is model.backbone and free.anomaly.source == "conv"
    assert free.segmentation is not model.segmentation  # its own encoder, trained on normals only
    tiles = torch.randn(2, 3, 32, 32)
    p_head, p_free = model.branch_probabilities(tiles)
    torch.testing.assert_close(p_free, free(tiles))
    torch.testing.assert_close(model(tiles), 1 - (1 - p_head) * (1 - model.fusion_weight * p_free))
    export_run(tmp_path / "run", tmp_path / "bundle")  # raises when ONNX Runtime disagrees with PyTorch
    assert (tmp_path / "bundle" / "model.onnx").is_file()


def test_a_label_free_branch_without_the_anomaly_branch_is_refused(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    args = ["--backbone", TINY_BACKBONE, "--data", str(data), "--out", str(tmp_path / "run")]
    result = runner.invoke(
        model_cli(),
        ["finetune", *args, "--label-free-steps", "2", "--no-anomaly-branch", *TINY_FINETUNE_ARGS],
    )
    assert result.exit_code == 2 and "--label-free-steps" in result.output


def test_no_anomaly_branch_gives_a_supervised_run(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--no-anomaly-branch",
            "--freeze-backbone",
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_run(tmp_path / "run").model.kind == "supervised"


def test_focal_dice_loss_prefers_the_right_answer() -> None:
    target = torch.zeros(1, 1, 8, 8)
    target[..., 3, :] = 1.0
    right, wrong = (target * 2 - 1) * 6, (1 - target * 2) * 6
    assert focal_dice_loss(right, target) < 0.1 < focal_dice_loss(wrong, target)


def test_split_keeps_defects_on_both_sides_and_is_deterministic() -> None:
    samples = [LabeledSample(f"d{i}", Path(f"d{i}.png"), Path(f"m{i}.png")) for i in range(5)]
    samples += [LabeledSample(f"n{i}", Path(f"n{i}.png"), None) for i in range(5)]
    train, val = split_train_val(samples, 0.2, seed=3)
    assert any(s.defective for s in train) and any(s.defective for s in val)
    assert not {s.stem for s in train} & {s.stem for s in val}
    assert split_train_val(samples, 0.2, seed=3) == (train, val)


def test_empty_folder_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output


def test_mask_of_wrong_size_is_a_one_line_error(tmp_path: Path) -> None:
    import cv2

    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    cv2.imwrite(str(data / "masks" / "img00.png"), np.zeros((10, 12), np.uint8))
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 2
    assert "12x10" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option", ["--batch-size", "--steps", "--image-size", "--bank-size"])
def test_non_positive_sizes_are_refused_before_training(tmp_path: Path, option: str) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    args = [*TINY_FINETUNE_ARGS]
    args[args.index(option) + 1] = "0"
    result = runner.invoke(
        model_cli(),
        ["finetune", "--backbone", TINY_BACKBONE, "--data", str(data), "--out", str(tmp_path / "run"), *args],
    )
    assert result.exit_code == 2, result.output  # a usage error, not a traceback or a run of one step
    assert option in result.output and not (tmp_path / "run").exists()


def test_a_run_saved_before_the_head_context_option_still_loads(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--no-anomaly-branch",
            "--head-context",
            "0",
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    tiles = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = load_run(tmp_path / "run").model(tiles)
    payload = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert payload["segmentation"].pop("context") == 0
    torch.save(payload, tmp_path / "run" / "model.pt")  # as older runs stored it: no "context" key
    old = load_run(tmp_path / "run").model
    assert old.segmentation.config["context"] == 0
    with torch.no_grad():
        torch.testing.assert_close(old(tiles), before)


@pytest.mark.parametrize("value", ["0", "1.5"])
def test_bad_target_recall_is_a_one_line_error(tmp_path: Path, value: str) -> None:
    data = write_labeled_set(tmp_path / "data", defective=2, normal=2)
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--target-recall",
            value,
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 2 and "--target-recall" in result.output and "Traceback" not in result.output

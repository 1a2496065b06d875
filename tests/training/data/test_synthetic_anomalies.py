"""Synthetic anomalies for a label-free signal: the drawer, the crop sampler hook, the zero-label discriminator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.synthetic_labeled import TINY_BACKBONE, write_labeled_set
from training.data.labeled import LabeledImages
from training.data.synthetic_anomalies import SYNTHETIC_KINDS, add_synthetic_anomaly
from training.errors import UserError
from training.head_training import CropSampler
from training.models.backbone import PIXEL_MEAN, PIXEL_STD
from training.runs import load_run


def _normal(size: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.5, 0.05, (size, size, 3)), 0, 1).astype(np.float32)


@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_each_kind_changes_only_inside_its_mask(kind: str) -> None:
    image = _normal()
    sources = [(np.random.default_rng(1).random((80, 80, 3)) * 255).astype(np.uint8)]
    changed, mask = add_synthetic_anomaly(
        image, np.zeros((64, 64), np.float32), np.random.default_rng(2), sources, kind=kind
    )
    region = mask > 0
    assert region.any() and not region.all()
    assert np.array_equal(changed[~region], image[~region])
    assert np.abs(changed - image)[region].max() > 0.01


def test_an_existing_defect_stays_in_the_mask() -> None:
    mask = np.zeros((64, 64), np.float32)
    mask[:4, :4] = 1
    _, added = add_synthetic_anomaly(_normal(), mask, np.random.default_rng(0), kind="blob")
    assert added[:4, :4].all() and added.sum() > mask.sum()


def _defect_free(count: int = 3) -> LabeledImages:
    images = [(np.random.default_rng(i).random((48, 48, 3)) * 255).astype(np.uint8) for i in range(count)]
    return LabeledImages(images=images, masks=[np.zeros((48, 48), bool) for _ in images])


def test_the_sampler_draws_synthetic_anomalies_on_normal_crops_only_when_asked() -> None:
    plain = CropSampler(_defect_free(), 32, PIXEL_MEAN, PIXEL_STD, seed=0)
    assert plain.batch(8)[1].sum() == 0
    synthetic = CropSampler(_defect_free(), 32, PIXEL_MEAN, PIXEL_STD, seed=0, synthetic=1.0)
    masks = synthetic.batch(8)[1]
    assert all(m.sum() > 0 for m in masks)


def test_a_synthetic_share_outside_zero_to_one_is_a_user_error() -> None:
    with pytest.raises(UserError, match="synthetic-anomalies"):
        CropSampler(_defect_free(), 32, PIXEL_MEAN, PIXEL_STD, seed=0, synthetic=1.5)


def test_fit_normal_with_a_discriminator_saves_a_fused_model(tmp_path: Path) -> None:
    from training.fit_normal import FitNormalConfig, fit_normal

    data = write_labeled_set(tmp_path / "data", defective=0, normal=6)
    common = {"backbone": TINY_BACKBONE, "data": data, "image_size": 32, "bank_size": 32}
    fit_normal(FitNormalConfig(**common, out=tmp_path / "plain", discriminator_steps=0))
    thresholds = fit_normal(
        FitNormalConfig(**common, out=tmp_path / "disc", discriminator_steps=2, batch_size=4)
    )
    assert load_run(tmp_path / "plain").model.segmentation is None
    run = load_run(tmp_path / "disc")
    assert run.model.segmentation is not None and run.model.anomaly is not None
    assert 0.0 < float(run.model.fusion_weight) <= 1.0
    # The image threshold follows the target-recall rule on synthetic defects, so it may sit below the
    # pixel threshold (a part flagged with no region drawn); both are probabilities.
    assert 0.0 <= thresholds["pixel"] <= 1.0 and 0.0 <= thresholds["image"] <= 1.0


def test_a_zero_label_bank_can_read_the_discriminators_encoder(tmp_path: Path) -> None:
    """`--anomaly-features conv`: the bank holds features trained only on normal images and synthetic anomalies."""
    from training.fit_normal import FitNormalConfig, fit_normal

    data = write_labeled_set(tmp_path / "data", defective=0, normal=6)
    config = FitNormalConfig(
        backbone=TINY_BACKBONE,
        data=data,
        out=tmp_path / "conv",
        image_size=32,
        bank_size=32,
        batch_size=4,
        discriminator_steps=2,
        anomaly_features="conv",
    )
    assert (config.anomaly_context, config.anomaly_pixel_weight) == (15, 4.0)  # the hybrid's defaults
    fit_normal(config)
    anomaly = load_run(tmp_path / "conv").model.anomaly
    assert anomaly is not None and anomaly.source == "conv" and anomaly.context == 15


def test_conv_bank_features_without_a_discriminator_are_a_user_error(tmp_path: Path) -> None:
    from training.fit_normal import FitNormalConfig

    with pytest.raises(UserError, match="discriminator-steps"):
        FitNormalConfig(
            backbone=TINY_BACKBONE,
            data=tmp_path,
            out=tmp_path / "o",
            anomaly_features="conv",
            discriminator_steps=0,
        )


def test_the_zero_label_default_is_the_discriminator_with_a_bank_on_its_encoder(tmp_path: Path) -> None:
    from training.fit_normal import FitNormalConfig

    common = {"backbone": TINY_BACKBONE, "data": tmp_path, "out": tmp_path / "o"}
    default = FitNormalConfig(**common)
    assert default.discriminator_steps > 0 and default.anomaly_features == "conv"
    assert FitNormalConfig(**common, discriminator_steps=0).anomaly_features == "vit"


def test_negative_discriminator_steps_are_a_user_error(tmp_path: Path) -> None:
    from training.fit_normal import FitNormalConfig, fit_normal

    data = write_labeled_set(tmp_path / "data", defective=0, normal=4)
    with pytest.raises(UserError, match="discriminator-steps"):
        fit_normal(
            FitNormalConfig(backbone=TINY_BACKBONE, data=data, out=tmp_path / "o", discriminator_steps=-1)
        )


def test_the_cli_flags_reach_the_training(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tests.synthetic_labeled import TINY_FINETUNE_ARGS, model_cli

    data = write_labeled_set(tmp_path / "data", defective=3, normal=5)
    runner = CliRunner()
    result = runner.invoke(
        model_cli(),
        [
            "fit-normal",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "zero"),
            "--image-size",
            "32",
            "--bank-size",
            "32",
            "--batch-size",
            "4",
            "--discriminator-steps",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_run(tmp_path / "zero").model.segmentation is not None
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "ft"),
            *TINY_FINETUNE_ARGS,
            "--synthetic-anomalies",
            "1.5",
        ],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output

"""`label-study` takes every run setting: each finetune field is a flag of the same name (each zero-label
setting of its own a `--fit-normal-*` flag), with the config's default and help, and reaches every job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.study_config import FOLLOWS_FINETUNE, StudyConfig
from tests.synthetic_labeled import TINY_BACKBONE
from training.errors import UserError
from training.model_config import FinetuneConfig, FitNormalConfig
from training.run_config import default_of, help_of

runner = CliRunner()

# Fields each job fills in, with no flag: the backbone, training and run folders, a hybrid's labels budget.
PER_JOB = {"backbone", "data", "out", "labeled_defects"}
# Flags of the study's own that set a field: `--seed` (repeatable) is the seed of the study and its runs.
STUDY_SETS = {"seed"}
# The study's own options, which no run config has.
STUDY_ONLY = {
    "backbone",
    "data",
    "out",
    "labels",
    "held_out_types",
    "test_fraction",
    "include_unet",
    "include_zero_label",
    "unet_steps",
    "seed",
}
FIT_NORMAL = "fit_normal_"


def study_params() -> dict[str, typer.core.TyperOption]:
    command = typer.main.get_command(app).commands["label-study"]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


def fit_normal_fields() -> set[str]:
    """The zero-label settings that are its own (the others follow the fine-tuning's)."""
    return {f.name for f in dataclasses.fields(FitNormalConfig)} - PER_JOB - set(FOLLOWS_FINETUNE)


def test_every_finetune_and_fit_normal_field_has_a_flag() -> None:
    flags = set(study_params())
    finetune = {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert finetune - PER_JOB - STUDY_SETS - flags == set(), "finetune fields label-study cannot set"
    assert {FIT_NORMAL + name for name in fit_normal_fields()} - flags == set(), (
        "fit-normal fields without a flag"
    )
    derived = {name for name in flags if name.startswith(FIT_NORMAL)}
    assert flags - STUDY_ONLY - finetune - derived == set(), "flags without a field"


def test_the_flags_take_default_and_help_from_the_configs() -> None:
    params = study_params()
    for name, param in params.items():
        if name in STUDY_ONLY:
            continue
        config_class, field = (
            (FitNormalConfig, name.removeprefix(FIT_NORMAL))
            if name.startswith(FIT_NORMAL)
            else (FinetuneConfig, name)
        )
        assert param.default == default_of(config_class, field), name
        assert param.help.startswith(help_of(config_class, field)) and param.help, name
    # The documented commands keep their spelling.
    for flag in (
        "--anomaly-context",
        "--bank-size",
        "--head-context",
        "--copy-paste",
        "--image-size",
        "--steps",
    ):
        assert flag in params[flag.removeprefix("--").replace("-", "_")].opts


def test_finetune_and_fit_normal_flags_reach_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import benchmarks.study

    seen: list[StudyConfig] = []

    def refuse(config: StudyConfig, progress: object) -> None:
        seen.append(config)
        raise UserError("stopped before training")

    monkeypatch.setattr(benchmarks.study, "run_study", refuse)
    options = {
        "--lr": "0.002",
        "--unfreeze-last": "1",
        "--synthetic-anomalies": "0.25",
        "--anomaly-stride": "2",
        "--target-recall": "0.9",
        "--image-size": "64",
        "--epochs": "3",
        "--unet-steps": "7",
        "--fit-normal-holdout-fraction": "0.4",
        "--fit-normal-bank-size": "64",
        "--seed": "5",
    }
    arguments = [
        "label-study",
        "--backbone",
        TINY_BACKBONE,
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(app, [*arguments, *(part for item in options.items() for part in item)])
    assert result.exit_code == 2 and "stopped before training" in result.output
    (config,) = seen
    finetune, fit_normal = config.finetune, config.fit_normal
    assert (finetune.lr, finetune.unfreeze_last, finetune.synthetic_anomalies) == (0.002, 1, 0.25)
    assert (finetune.anomaly_stride, finetune.epochs, finetune.seed, config.unet_steps) == (2, 3, 5, 7)
    assert (fit_normal.holdout_fraction, fit_normal.bank_size) == (0.4, 64)
    assert finetune.bank_size == default_of(FinetuneConfig, "bank_size")  # each model its own bank size
    # The zero-label models follow the hybrids' tile, decision rule and seed.
    assert (fit_normal.image_size, fit_normal.target_recall, fit_normal.seed) == (64, 0.9, 5)


def test_a_bad_finetune_setting_is_the_finetune_error_before_any_work(tmp_path: Path) -> None:
    arguments = [
        "label-study",
        "--backbone",
        TINY_BACKBONE,
        "--data",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    result = runner.invoke(app, [*arguments, "--unfreeze-last", "-1"])
    assert (
        result.exit_code == 2 and result.output.strip() == "error: --unfreeze-last must be at least 0, got -1"
    )
    assert not (tmp_path / "o").exists()

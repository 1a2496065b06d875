"""One typed config per run: every field has a flag (and every flag a field), the CLI's defaults and help
are the config's, the config checks itself, and run folders and bundles keep the resolved settings."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from inspect_svc.bundle import load_bundle
from tests.synthetic_labeled import model_cli, write_labeled_set
from training.cli import app
from training.errors import UserError
from training.model_config import FinetuneConfig, FitNormalConfig
from training.pretrain_config import PretrainConfig
from training.run_config import CONFIG_FILE, default_of, help_of

runner = CliRunner()

# Flags with no config field: how a verb talks, or a second spelling of a field.
CLI_ONLY = {
    "quiet",  # progress bars: the terminal's business (pretraining records it as `progress`)
    "freeze_backbone",  # finetune: the same as --unfreeze-last 0
}
# Config fields with no flag of their own, and why.
NO_FLAG = {
    "pretrain": {
        "progress",  # set by --quiet
        "model_kwargs",  # ViT constructor overrides for tests' tiny models; --arch names the model on the CLI
    },
    "finetune": set(),
    "fit-normal": set(),
}
VERBS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "fit-normal": FitNormalConfig}


def verb_params(verb: str) -> dict[str, object]:
    command = typer.main.get_command(app).commands[verb]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_field_has_a_flag_and_every_flag_a_field(verb: str) -> None:
    fields = {f.name for f in dataclasses.fields(VERBS[verb])}
    flags = set(verb_params(verb))
    assert fields - NO_FLAG[verb] - flags == set(), "config fields without a CLI flag"
    assert flags - CLI_ONLY - fields == set(), "CLI flags without a config field"


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_the_flags_take_default_and_help_from_the_config(verb: str) -> None:
    config_class = VERBS[verb]
    for name, param in verb_params(verb).items():
        if name in CLI_ONLY or param.required:
            continue
        default = default_of(config_class, name)
        if name == "momentum":  # --teacher-momentum sets the start of the schedule
            default = default[0]
        assert param.default == default, name
        assert param.help.startswith(help_of(config_class, name)) and param.help, name


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: FinetuneConfig(backbone="b", data="d", out="o", steps=0),
            "--steps must be at least 1, got 0",
        ),
        (
            lambda: FinetuneConfig(backbone="b", data="d", out="o", target_recall=0.0),
            "--target-recall must be in (0, 1]",
        ),
        (
            lambda: FinetuneConfig(backbone="b", data="d", out="o", anomaly_stride=0),
            "--anomaly-stride must be at least 1",
        ),
        (lambda: FinetuneConfig(backbone="b", data="d", out="o", head_context=4), "--head-context"),
        (
            lambda: FinetuneConfig(backbone="b", data="d", out="o", device="gpu"),
            "--device must be cpu, cuda or auto",
        ),
        (
            lambda: FitNormalConfig(backbone="b", data="d", out="o", neighbour_tiles=-1),
            "--neighbour-tiles must be 0",
        ),
        (
            lambda: FitNormalConfig(backbone="b", data="d", out="o", holdout_fraction=1.0),
            "--holdout-fraction",
        ),
        (
            lambda: FitNormalConfig(backbone="b", data="d", out="o", discriminator_steps=-1),
            "--discriminator-steps",
        ),
        (lambda: PretrainConfig(data="d", out="o", clip_grad=0.0), "--clip-grad must be positive"),
        (lambda: PretrainConfig(data="d", out="o", warmup=1.0), "--warmup must lie in [0, 1)"),
    ],
)
def test_each_config_checks_itself_with_the_flags_name(build, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        build()


def test_a_bad_option_is_refused_by_the_config_before_any_data_is_read(tmp_path: Path) -> None:
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            "random:test_vit3",
            "--data",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "0",
        ],
    )
    assert result.exit_code == 2
    assert "error: --steps must be at least 1, got 0" in result.output
    result = runner.invoke(
        model_cli(),
        [
            "fit-normal",
            "--backbone",
            "random:test_vit3",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--holdout-fraction",
            "0",
        ],
    )
    assert result.exit_code == 2 and "--holdout-fraction must lie between 0 and 1" in result.output


def test_pretrain_flags_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.pretrain

    seen: list[PretrainConfig] = []

    def refuse(config: PretrainConfig) -> None:
        seen.append(config)
        raise UserError("stopped before training")

    monkeypatch.setattr(training.pretrain, "run_pretrain", refuse)
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
            "--weight-decay",
            "0.01",
            "0.1",
            "--global-scale",
            "0.3",
            "0.9",
            "--teacher-momentum",
            "0.99",
            "--prototypes",
            "128",
            "--student-temp",
            "0.2",
            "--learned-ref-content",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 2 and "stopped before training" in result.output
    config = seen[0]
    assert (config.weight_decay, config.global_scale, config.momentum) == (
        (0.01, 0.1),
        (0.3, 0.9),
        (0.99, 1.0),
    )
    assert (config.num_prototypes, config.student_temp, config.learned_ref_content) == (128, 0.2, True)
    assert (config.workers, config.progress) == (0, False)


def test_a_finetune_run_and_its_bundle_hold_the_resolved_config(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=3, normal=3, size=64)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            "random:test_vit3",
            "--data",
            str(data),
            "--out",
            str(run),
            "--image-size",
            "64",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--bank-size",
            "16",
            "--lr",
            "0.002",
            "--unfreeze-last",
            "1",
            "--anomaly-stride",
            "2",
            "--device",
            "auto",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / CONFIG_FILE).read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert (saved["lr"], saved["unfreeze_last"], saved["anomaly_stride"], saved["image_size"]) == (
        0.002,
        1,
        2,
        64,
    )
    # Resolved: the device used, and the defaults that follow other settings, as numbers.
    assert saved["device"] in {"cpu", "cuda:0"}
    assert (saved["anomaly_context"], saved["anomaly_pixel_weight"], saved["head_context"]) == (15, 4.0, 11)
    assert isinstance(saved["image_top_pixels"], int) and saved["data"] == str(data)

    result = runner.invoke(model_cli(), ["export", "--model", str(run), "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    assert load_bundle(bundle).manifest.training_config == saved


def test_a_fit_normal_run_and_its_bundle_hold_the_resolved_config(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=0, normal=4, size=64)
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    result = runner.invoke(
        model_cli(),
        [
            "fit-normal",
            "--backbone",
            "random:test_vit3",
            "--data",
            str(data),
            "--out",
            str(run),
            "--image-size",
            "64",
            "--bank-size",
            "16",
            "--holdout-fraction",
            "0.5",
            "--discriminator-steps",
            "2",
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / CONFIG_FILE).read_text())
    assert set(saved) == {f.name for f in dataclasses.fields(FitNormalConfig)}
    assert (saved["holdout_fraction"], saved["bank_size"], saved["device"]) == (0.5, 16, "cpu")
    # Defaults that follow other settings are saved resolved: the bank reads the discriminator's encoder.
    assert (saved["discriminator_steps"], saved["anomaly_features"], saved["anomaly_context"]) == (
        2,
        "conv",
        15,
    )
    assert runner.invoke(model_cli(), ["export", "--model", str(run), "--out", str(bundle)]).exit_code == 0
    assert load_bundle(bundle).manifest.training_config == saved


def test_a_bundle_without_training_config_still_loads(tmp_path: Path) -> None:
    from inspect_svc.bundle import BundleManifest

    manifest = BundleManifest.model_validate(
        {
            "model_version": "v1",
            "created_at": "2026-01-01T00:00:00Z",
            "kind": "zero-label",
            "backbone": "b",
            "patch_size": 16,
            "input_size": 64,
            "mean": [0.5] * 3,
            "std": [0.2] * 3,
            "tiling": {"tile": 64, "overlap": 8},
            "onnx_sha256": "0" * 64,
        }
    )
    assert manifest.training_config is None

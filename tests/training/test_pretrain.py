"""The pretraining loop on a tiny ViT: it learns, resumes exactly, saves on Ctrl-C and reports bad input."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

import training.pretrain as pretrain_module
from training.data.photometric import DINO_RECIPE, INSPECTION_RECIPE, PhotometricPolicy, augment
from training.errors import UserError
from training.models.backbone import load_backbone
from training.pretrain import run_pretrain
from training.pretrain_config import PretrainConfig

TINY = {"patch_size": 8, "depth": 2}


def cli_app() -> typer.Typer:
    """A `train-pipeline` with only the pretrain verb (the callback keeps it a command group)."""
    from training.cli import pretrain as pretrain_cli

    app = typer.Typer()
    app.callback()(lambda: None)
    pretrain_cli.register(app)
    return app


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    for index in range(8):
        rng = np.random.default_rng(index)
        # Smooth blobs rather than noise, so that views of one image resemble each other.
        image = cv2.GaussianBlur((rng.random((48, 64, 3)) * 255).astype(np.uint8), (0, 0), 4)
        cv2.imwrite(str(root / ("nested" if index % 2 else ".") / f"image_{index}.png"), image)
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def tiny_config(data: Path, out: Path, **overrides) -> PretrainConfig:
    settings = dict(
        data=data,
        out=out,
        arch="test_vit",
        global_size=32,
        local_size=16,
        local_crops=2,
        points=2,
        batch_size=4,
        steps=4,
        workers=0,
        log_every=1,
        num_prototypes=64,
        head_hidden_dim=64,
        projection_dim=32,
        model_kwargs=TINY,
        drop_path=0.0,
        progress=False,
        seed=3,
    )
    settings.update(overrides)
    return PretrainConfig(**settings)


def logged(run: Path, key: str = "loss") -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("objective", ["densedino", "densedino-crr", "dino"])
def test_a_few_steps_lower_the_loss(objective: str, image_folder: Path, tmp_path: Path) -> None:
    # A frozen teacher and center make the target fixed, so the loss must fall as the student fits it.
    config = tiny_config(
        image_folder,
        tmp_path / "run",
        objective=objective,
        steps=12,
        lr=0.02,
        warmup=0.0,
        momentum=(1.0, 1.0),
        center_momentum=1.0,
        weight_decay=(0.0, 0.0),
        batch_size=8,
    )
    result = run_pretrain(config)
    losses = logged(tmp_path / "run")
    assert result.steps == 12 and result.skipped_images == 1
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    backbone = load_backbone(tmp_path / "run")
    assert backbone.forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 17, 64)


def test_decoding_on_the_device_trains_from_jpegs(tmp_path: Path) -> None:
    """`--decode device` end to end (here on the CPU): JPEGs, a PNG and a broken file in one folder."""
    root = tmp_path / "images"
    root.mkdir()
    for index in range(6):
        image = cv2.GaussianBlur(
            (np.random.default_rng(index).random((48, 64, 3)) * 255).astype(np.uint8), (0, 0), 4
        )
        cv2.imwrite(str(root / f"image_{index}.{'png' if index == 0 else 'jpg'}"), image)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    config = tiny_config(root, tmp_path / "run", decode="device", steps=3, batch_size=4)
    result = run_pretrain(config)
    assert result.steps == 3 and result.skipped_images == 1
    assert np.isfinite(logged(tmp_path / "run")).all()


def test_point_head_can_have_its_own_prototype_count(image_folder: Path, tmp_path: Path) -> None:
    config = tiny_config(image_folder, tmp_path / "run", point_prototypes=16, steps=2)
    trainer_net, _ = pretrain_module.build_networks(config)
    assert trainer_net.point_head.prototypes.shape[0] == 16
    assert trainer_net.cls_head.prototypes.shape[0] == 64
    assert run_pretrain(config).steps == 2 and np.isfinite(logged(tmp_path / "run")).all()
    with pytest.raises(UserError, match="--point-prototypes"):
        tiny_config(image_folder, tmp_path / "bad", point_prototypes=0)


def test_resume_continues_exactly_after_ctrl_c(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    straight = tmp_path / "straight"
    run_pretrain(tiny_config(image_folder, straight))

    interrupted = tmp_path / "interrupted"
    real_step = pretrain_module.train_step
    calls = {"n": 0}

    def step_then_ctrl_c(*args, **kwargs):
        calls["n"] += 1
        result = real_step(*args, **kwargs)
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(pretrain_module, "train_step", step_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(tiny_config(image_folder, interrupted))
    assert torch.load(interrupted / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(pretrain_module, "train_step", real_step)
    run_pretrain(tiny_config(image_folder, interrupted, resume=True))

    assert len(logged(interrupted)) == 4
    np.testing.assert_allclose(logged(interrupted)[2:], logged(straight)[2:], rtol=1e-5, atol=1e-6)


def test_resume_refuses_changed_settings(image_folder: Path, tmp_path: Path) -> None:
    from training.errors import UserError

    run_pretrain(tiny_config(image_folder, tmp_path / "run", steps=1, objective="dino"))
    with pytest.raises(UserError, match="batch_size"):
        run_pretrain(
            tiny_config(image_folder, tmp_path / "run", steps=1, objective="dino", batch_size=2, resume=True)
        )


def test_cli_writes_run_folder(image_folder: Path, tmp_path: Path) -> None:
    # test_vit has 16-px patches: a 32-px global view is a 2×2 grid, enough for the plumbing.
    args = [
        "pretrain",
        "--data",
        str(image_folder),
        "--out",
        str(tmp_path / "run"),
        "--arch",
        "test_vit",
        "--global-size",
        "32",
        "--local-size",
        "16",
        "--local-crops",
        "1",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--prototypes",
        "32",
        "--head-hidden-dim",
        "32",
        "--log-every",
        "1",
    ]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    assert {"config.json", "metrics.jsonl", "checkpoint.pt", "backbone.pt"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }
    assert "1 unreadable" in result.output


CLI_TINY_RUN = [
    "--arch",
    "test_vit",
    "--global-size",
    "32",
    "--local-size",
    "16",
    "--local-crops",
    "1",
    "--batch-size",
    "4",
    "--steps",
    "1",
    "--workers",
    "0",
    "--device",
    "cpu",
    "--prototypes",
    "32",
    "--head-hidden-dim",
    "32",
    "--log-every",
    "1",
]


def test_an_existing_run_is_refused_without_resume_or_overwrite(image_folder: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(image_folder), "--out", str(run), *CLI_TINY_RUN]
    assert CliRunner().invoke(cli_app(), args).exit_code == 0
    before = {name: (run / name).read_bytes() for name in ("metrics.jsonl", "backbone.pt", "checkpoint.pt")}

    refused = CliRunner().invoke(cli_app(), args)
    assert refused.exit_code == 2
    assert "already holds a pretraining run" in refused.output and "--resume" in refused.output
    assert "--overwrite" in refused.output and "Traceback" not in refused.output
    assert {name: (run / name).read_bytes() for name in before} == before  # nothing touched

    replaced = CliRunner().invoke(cli_app(), [*args, "--overwrite", "--seed", "5"])
    assert replaced.exit_code == 0, replaced.output
    assert len(logged(run)) == 1  # the old run's metrics were not appended to
    assert json.loads((run / "config.json").read_text())["seed"] == 5

    both = CliRunner().invoke(cli_app(), [*args, "--overwrite", "--resume"])
    assert both.exit_code == 2 and "choose one of --resume" in both.output


def test_a_file_as_out_is_refused(image_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "run"
    target.write_text("not a folder")
    result = CliRunner().invoke(
        cli_app(), ["pretrain", "--data", str(image_folder), "--out", str(target), *CLI_TINY_RUN]
    )
    assert result.exit_code == 2 and "is a file" in result.output
    assert target.read_text() == "not a folder"


def test_a_collapsed_teacher_is_reported(image_folder: Path, tmp_path: Path) -> None:
    # LayerScale 1e-5 leaves the blocks off: every image gets the same class token, the centered
    # teacher (here centered on the last batch at once) is uniform, and the run must say so.
    collapsed = tiny_config(
        image_folder, tmp_path / "off", layer_scale_init=1e-5, center_momentum=0.0, steps=4
    )
    collapsed_result = run_pretrain(collapsed)
    (warning,) = collapsed_result.collapse_warnings
    assert collapsed_result.verdict() == ""  # the warning speaks for it
    assert warning.startswith("image-level objective collapsed") and "64 prototypes" in warning
    healthy = tiny_config(image_folder, tmp_path / "on", layer_scale_init=1.0, center_momentum=0.0, steps=4)
    result = run_pretrain(healthy)
    assert result.collapse_warnings == ()
    # A healthy run says so, with the readings: entropy of log K = ln 64 = 4.16 at most, and the rank.
    verdict = re.fullmatch(
        r"no collapse \(image teacher entropy ([\d.]+) of 4\.16, point teacher entropy "
        r"([\d.]+) of 4\.16, effective rank ([\d.]+)\)",
        result.verdict(),
    )
    assert verdict, result.verdict()
    assert all(0 < float(value) for value in verdict.groups())


def test_cli_prints_collapse_warnings(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    finished = pretrain_module.PretrainResult(
        tmp_path / "run",
        2,
        0,
        ("image-level objective collapsed: ...",),
        "teacher entropy 4.15 of 4.16, effective rank 1.0",
    )
    monkeypatch.setattr(pretrain_module, "run_pretrain", lambda config: finished)
    args = ["pretrain", "--data", str(image_folder), "--out", str(tmp_path / "run"), "--device", "cpu"]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    assert "warning: image-level objective collapsed" in result.output
    assert "no collapse" not in result.output


def test_cli_prints_the_verdict_of_a_healthy_run(image_folder: Path, tmp_path: Path, monkeypatch) -> None:
    finished = pretrain_module.PretrainResult(
        tmp_path / "run", 2, 0, (), "teacher entropy 2.20 of 8.32, effective rank 4.9"
    )
    monkeypatch.setattr(pretrain_module, "run_pretrain", lambda config: finished)
    args = ["pretrain", "--data", str(image_folder), "--out", str(tmp_path / "run"), "--device", "cpu"]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code == 0, result.output
    assert "no collapse (teacher entropy 2.20 of 8.32, effective rank 4.9)" in result.output


def test_crr_readings_name_the_embedding_spread() -> None:
    from training.monitors import monitor_readings

    records = [{"feature_std_image": 0.05, "effective_rank": 12.0}] * 4
    assert (
        monitor_readings(records, prototypes={}, projection_dim=256)
        == "embedding std 0.050 of 0.062, effective rank 12.0"
    )


def test_layer_scale_init_is_saved_with_the_backbone(image_folder: Path, tmp_path: Path) -> None:
    config = tiny_config(image_folder, tmp_path / "run", layer_scale_init=0.5, steps=2)
    run_pretrain(config)
    payload = torch.load(tmp_path / "run" / "backbone.pt", weights_only=False)
    assert payload["model_kwargs"] == {**TINY, "init_values": 0.5}
    backbone = load_backbone(tmp_path / "run")  # rebuilt with LayerScale, so its learned gammas load
    assert torch.allclose(
        backbone.blocks[0].ls1.gamma, torch.full_like(backbone.blocks[0].ls1.gamma, 0.5), atol=0.05
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/nonexistent/folder"], "does not exist"),
        (["--objective", "simclr"], "--objective"),
        (["--arch", "resnet_nope"], "unknown architecture"),
        (["--layer-scale-init", "0"], "--layer-scale-init must be positive"),
        (["--teacher-momentum", "1.5"], "teacher momentum must satisfy"),
        (["--photometric", "heavy"], "--photometric must be one of dino, inspection"),
    ],
)
def test_cli_bad_input_is_one_line(
    extra: list[str], message: str, image_folder: Path, tmp_path: Path
) -> None:
    args = [
        "pretrain",
        "--data",
        str(image_folder),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "1",
        "--device",
        "cpu",
        "--workers",
        "0",
        *extra,
    ]
    result = CliRunner().invoke(cli_app(), args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_each_rank_and_step_draws_its_own_augmentation() -> None:
    # With one seed for all ranks every process augmented its batch identically, and a resumed
    # multi-process run restarted every rank from rank 0's generator state.
    seeds = {pretrain_module.step_seed(3, rank, step) for rank in range(4) for step in range(50)}
    assert len(seeds) == 200
    assert pretrain_module.step_seed(3, 1, 7) == pretrain_module.step_seed(3, 1, 7)
    views = torch.full((4, 3, 16, 16), 128, dtype=torch.uint8)
    draws = []
    for rank in (0, 1):
        torch.manual_seed(pretrain_module.step_seed(3, rank, 0))
        draws.append(augment(views, DINO_RECIPE.first_global))
    assert not torch.equal(draws[0], draws[1])


def test_inspection_views_keep_fine_detail_and_colour() -> None:
    """The inspection recipe only jitters colour: a 1-px pattern and the colour contrast survive it,
    where DINO's first global view (always blurred, sometimes grayscale) wipes them out."""
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 == 1  # 1-px checkerboard
    red_blue = torch.stack([checker, torch.zeros_like(checker), ~checker]).to(torch.uint8) * 200
    views = red_blue.expand(64, 3, 32, 32).contiguous()

    def detail(images: torch.Tensor) -> torch.Tensor:  # mean neighbour difference per view
        return (images[..., 1:] - images[..., :-1]).abs().mean(dim=(1, 2, 3))

    torch.manual_seed(0)
    inspection = augment(views, INSPECTION_RECIPE.first_global)
    dino = augment(views, DINO_RECIPE.first_global)
    original = detail(augment(views, PhotometricPolicy(blur=0.0, jitter=0.0, grayscale=0.0)))
    assert (detail(inspection) > 0.25 * original).all()
    assert detail(dino).mean() < 0.5 * detail(inspection).mean()
    channel_spread = inspection.std(dim=1).mean(dim=(1, 2))
    assert (channel_spread > 0.1).all()  # no view was turned gray

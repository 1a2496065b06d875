"""`train-pipeline pretrain`: self-supervised pretraining on a folder of unlabeled images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli._common import QuietOpt, flowing, talking, user_errors
from training.pretrain_config import PretrainConfig
from training.run_config import default_of, from_options, help_of

P = PretrainConfig


def opt(name: str, *flags: str, **kwargs: Any) -> Any:
    """The option of the `PretrainConfig` field `name`, with the help text declared there."""
    return typer.Option(*flags, help=help_of(P, name), **kwargs)


def pretrain(
    data: Annotated[Path, opt("data", "--data")],
    out: Annotated[Path, opt("out", "--out")],
    arch: Annotated[str, opt("arch")] = default_of(P, "arch"),
    objective: Annotated[str, opt("objective")] = default_of(P, "objective"),
    global_size: Annotated[int, opt("global_size")] = default_of(P, "global_size"),
    local_size: Annotated[int, opt("local_size")] = default_of(P, "local_size"),
    global_crops: Annotated[int, opt("global_crops")] = default_of(P, "global_crops"),
    local_crops: Annotated[int, opt("local_crops")] = default_of(P, "local_crops"),
    global_scale: Annotated[tuple[float, float], opt("global_scale")] = default_of(P, "global_scale"),
    local_scale: Annotated[tuple[float, float], opt("local_scale")] = default_of(P, "local_scale"),
    points: Annotated[int, opt("points")] = default_of(P, "points"),
    batch_size: Annotated[int, opt("batch_size")] = default_of(P, "batch_size"),
    epochs: Annotated[int, opt("epochs")] = default_of(P, "epochs"),
    steps: Annotated[int | None, opt("steps")] = default_of(P, "steps"),
    lr: Annotated[float, opt("lr")] = default_of(P, "lr"),
    min_lr: Annotated[float, opt("min_lr")] = default_of(P, "min_lr"),
    warmup: Annotated[float, opt("warmup")] = default_of(P, "warmup"),
    weight_decay: Annotated[tuple[float, float], opt("weight_decay")] = default_of(P, "weight_decay"),
    # The flag sets the schedule's start; its end stays 1 (the teacher freezes as training ends).
    momentum: Annotated[float, opt("momentum", "--teacher-momentum")] = default_of(P, "momentum")[0],
    clip_grad: Annotated[float, opt("clip_grad")] = default_of(P, "clip_grad"),
    drop_path: Annotated[float, opt("drop_path")] = default_of(P, "drop_path"),
    alpha: Annotated[float, opt("alpha")] = default_of(P, "alpha"),
    num_prototypes: Annotated[int, opt("num_prototypes", "--prototypes")] = default_of(P, "num_prototypes"),
    point_prototypes: Annotated[int | None, opt("point_prototypes")] = default_of(P, "point_prototypes"),
    projection_dim: Annotated[int, opt("projection_dim")] = default_of(P, "projection_dim"),
    head_hidden_dim: Annotated[int, opt("head_hidden_dim")] = default_of(P, "head_hidden_dim"),
    student_temp: Annotated[float, opt("student_temp")] = default_of(P, "student_temp"),
    teacher_temp: Annotated[float, opt("teacher_temp")] = default_of(P, "teacher_temp"),
    center_momentum: Annotated[float, opt("center_momentum")] = default_of(P, "center_momentum"),
    eps_sq: Annotated[float, opt("eps_sq")] = default_of(P, "eps_sq"),
    learned_ref_content: Annotated[bool, opt("learned_ref_content")] = default_of(P, "learned_ref_content"),
    layer_scale_init: Annotated[float | None, opt("layer_scale_init")] = default_of(P, "layer_scale_init"),
    photometric: Annotated[str, opt("photometric")] = default_of(P, "photometric"),
    device: Annotated[str, opt("device")] = default_of(P, "device"),
    workers: Annotated[
        int | None,
        typer.Option(
            help=f"{help_of(P, 'workers')}  [default: one per CPU, at most 8]",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, opt("seed")] = default_of(P, "seed"),
    checkpoint_every: Annotated[int, opt("checkpoint_every")] = default_of(P, "checkpoint_every"),
    log_every: Annotated[int, opt("log_every")] = default_of(P, "log_every"),
    compile: Annotated[bool, opt("compile", "--compile")] = default_of(P, "compile"),
    resume: Annotated[bool, opt("resume", "--resume")] = default_of(P, "resume"),
    overwrite: Annotated[bool, opt("overwrite", "--overwrite")] = default_of(P, "overwrite"),
    reference_attention: Annotated[str, opt("reference_attention")] = default_of(P, "reference_attention"),
    decode: Annotated[str, opt("decode")] = default_of(P, "decode"),
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a ViT backbone without labels (DenseDINO); torchrun launches it on several GPUs.

    The defaults are the GPU recipe (ViT-S/16, 100 epochs of batch 64). On one H100 a step takes
    about 0.15 s (docs/BENCHMARKS.md §5): 1,000 images take about 4 minutes. They do not fit a small
    CPU machine (a 2-core, 23 GB one ran out of memory in the first step); on a CPU use the README's
    recipe (test_vit3 at 128 px, 300 steps), about 5 minutes on 2 cores.
    """
    options = dict(locals())
    from training.pretrain import run_pretrain  # torch/timm only when the verb runs

    with user_errors(), talking(quiet):
        config = from_options(P, options, momentum=(momentum, 1.0), progress=not quiet)
        try:
            result = run_pretrain(config)
        except KeyboardInterrupt:
            typer.secho(f"interrupted: checkpoint saved in {out}; continue with --resume", err=True)
            raise typer.Exit(code=130) from None
    typer.echo(f"{result.steps} steps; backbone written to {result.run_dir / 'backbone.pt'}")
    if result.skipped_images:
        typer.echo(f"{result.skipped_images} unreadable image(s) skipped")
    for warning in result.collapse_warnings:
        typer.secho(f"warning: {warning}", err=True, fg=typer.colors.YELLOW)
    if result.verdict():
        typer.echo(result.verdict())


def register(app: typer.Typer) -> None:
    """Add the `pretrain` verb to `app`."""
    app.command("pretrain", help=flowing(pretrain.__doc__))(pretrain)

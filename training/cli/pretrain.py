"""`train-pipeline pretrain`: self-supervised pretraining on a folder of unlabeled images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli._common import DeviceOpt, QuietOpt, flowing, talking, user_errors

Opt = typer.Option


def pretrain(
    data: Annotated[Path, Opt("--data", help="Folder tree of unlabeled images.")],
    out: Annotated[Path, Opt("--out", help="Run folder (config, metrics, checkpoint.pt, backbone.pt).")],
    arch: Annotated[str, Opt(help="timm ViT name, e.g. vit_small_patch16_224.")] = "vit_small_patch16_224",
    objective: Annotated[str, Opt(help="densedino, densedino-crr (coding rate) or dino (image level).")] = "densedino",
    global_size: Annotated[int, Opt("--global-size", help="Side of global views (px).")] = 224,
    local_size: Annotated[int, Opt("--local-size", help="Side of local views (px).")] = 96,
    global_crops: Annotated[int, Opt("--global-crops", help="Global views per image.")] = 2,
    local_crops: Annotated[int, Opt("--local-crops", help="Local views per image.")] = 4,
    points: Annotated[int, Opt("--points", help="Reference points k per (global, view) pair.")] = 2,
    batch_size: Annotated[int, Opt("--batch-size", help="Images per process.")] = 64,
    epochs: Annotated[int, Opt(help="Passes over the data (ignored when --steps is given).")] = 100,
    steps: Annotated[int | None, Opt(help="Total optimization steps.")] = None,
    lr: Annotated[float, Opt(help="Learning rate per 256 images (scaled by the global batch).")] = 5e-4,
    teacher_momentum: Annotated[float, Opt(
        "--teacher-momentum", help="EMA momentum of the teacher at the start (cosine to 1 at the end); it "
        "averages about 1/(1 − m) steps, so a run of a few hundred steps needs 0.99 rather than 0.996."
    )] = 0.996,
    alpha: Annotated[float, Opt(help="Weight of the image-level loss; 1 − alpha goes to points.")] = 0.5,
    prototypes: Annotated[int, Opt("--prototypes", help="DINO head prototypes.")] = 65536,
    point_prototypes: Annotated[int | None, Opt(
        "--point-prototypes", help="Prototypes of the point head (default: --prototypes)."
    )] = None,
    head_hidden_dim: Annotated[int, Opt("--head-hidden-dim", help="Hidden width of the heads.")] = 2048,
    layer_scale_init: Annotated[float | None, Opt(
        "--layer-scale-init", help="Initial LayerScale of the ViT's blocks (default: the architecture's own; "
        "give 1.0 for test_vit3, whose 1e-5 cannot learn in a short run)."
    )] = None,
    photometric: Annotated[str, Opt(
        "--photometric", help="Augmentation: inspection (colour jitter only: blur and grayscale would teach the "
        "features to ignore scratches and stains) or dino (colour jitter, grayscale, blur, solarize)."
    )] = "inspection",
    device: DeviceOpt = "auto",
    workers: Annotated[int | None, Opt(
        help="Data-loading worker processes.  [default: one per CPU, at most 8]", show_default=False,
    )] = None,
    seed: Annotated[int, Opt(help="Seed of weights, views and augmentation.")] = 0,
    checkpoint_every: Annotated[int, Opt("--checkpoint-every", help="Save the training state every N steps.")] = 1000,
    log_every: Annotated[int, Opt("--log-every", help="Write metrics every N steps.")] = 20,
    compile: Annotated[bool, Opt("--compile", help="torch.compile the networks.")] = False,
    resume: Annotated[bool, Opt("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    overwrite: Annotated[bool, Opt(
        "--overwrite", help="Replace the run already in --out (without it, or --resume, an existing run is refused)."
    )] = False,
    reference_attention: Annotated[str, Opt(
        "--reference-attention", help="split (fast, flash-eligible) or masked: the same maths two ways."
    )] = "split",
    decode: Annotated[str, Opt(
        "--decode", help="workers (OpenCV in the data workers) or device (JPEGs decoded and cropped on the GPU)."
    )] = "workers",
    quiet: QuietOpt = False,
) -> None:
    """Pretrain a ViT backbone without labels (DenseDINO); torchrun launches it on several GPUs.

    The defaults are the GPU recipe (ViT-S/16, 100 epochs of batch 64). On one H100 a step takes
    about 0.15 s (docs/BENCHMARKS.md §1): 1,000 images take about 4 minutes. They do not fit a small
    CPU machine (a 2-core, 23 GB one ran out of memory in the first step); on a CPU use the README's
    recipe (test_vit3 at 128 px, 300 steps), about 5 minutes on 2 cores.
    """
    from training.pretrain import run_pretrain  # torch/timm only when the verb runs
    from training.pretrain_config import PretrainConfig, default_workers

    with user_errors(), talking(quiet):
        config = PretrainConfig(
            data=data, out=out, arch=arch, objective=objective, global_size=global_size, local_size=local_size,
            global_crops=global_crops, local_crops=local_crops, points=points, batch_size=batch_size,
            epochs=epochs, steps=steps, lr=lr, momentum=(teacher_momentum, 1.0), alpha=alpha, num_prototypes=prototypes,
            point_prototypes=point_prototypes, layer_scale_init=layer_scale_init, photometric=photometric,
            head_hidden_dim=head_hidden_dim, device=device, workers=default_workers() if workers is None else workers,
            seed=seed, checkpoint_every=checkpoint_every, log_every=log_every, compile=compile, resume=resume,
            overwrite=overwrite,
            reference_attention=reference_attention, decode=decode,
        )
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

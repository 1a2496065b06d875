"""`python -m benchmarks label-study`: label efficiency and unseen defect types, against a from-scratch U-Net."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli._common import (
    AnomalyContextOpt,
    AnomalyPixelWeightOpt,
    CopyPasteOpt,
    DeviceOpt,
    HeadContextOpt,
    user_errors,
)

Opt = typer.Option


def label_study(
    backbone: Annotated[
        list[str],
        Opt("--backbone", help="Pretrain run folder, backbone.pt or random:<arch>; repeat to compare."),
    ],
    data: Annotated[Path, Opt("--data", help="Labeled folder (images/ + masks/, or MVTec AD layout).")],
    out: Annotated[Path, Opt("--out", help="Study folder: study.json, study.md, splits/, runs/.")],
    labels: Annotated[
        str, Opt("--labels", help="Labeled defect images per line, comma-separated.")
    ] = "1,5,20",
    held_out_types: Annotated[
        str,
        Opt(
            "--held-out-types",
            help="Defect types kept out of the labels (trained at the middle budget); '' skips.",
        ),
    ] = "scratch,crack",
    steps: Annotated[
        int, Opt("--steps", help="Optimisation steps of every fine-tuning and of the U-Net.")
    ] = 500,
    batch_size: Annotated[int, Opt("--batch-size", help="Tiles per step.")] = 16,
    image_size: Annotated[
        int, Opt("--image-size", help="Tile side in pixels (the models' input size; finetune's default too).")
    ] = 128,
    test_fraction: Annotated[
        float, Opt("--test-fraction", help="Share of each line and defect type kept for testing.")
    ] = 0.3,
    include_unet: Annotated[
        bool, Opt("--include-unet/--no-include-unet", help="Train the from-scratch U-Net baseline.")
    ] = True,
    include_zero_label: Annotated[
        bool,
        Opt(
            "--include-zero-label/--no-include-zero-label",
            help="Score the zero-label mode alone, per backbone.",
        ),
    ] = True,
    anomaly_features: Annotated[
        str, Opt("--anomaly-features", help="What the hybrid's anomaly branch reads: conv (default) or vit.")
    ] = "conv",
    neighbour_tiles: Annotated[
        int,
        Opt(
            "--neighbour-tiles",
            min=0,
            help="Anomaly branches score each tile against the banks of its N most similar normal tiles (0: one bank).",
        ),
    ] = 4,
    anomaly_context: AnomalyContextOpt = None,
    anomaly_pixel_weight: AnomalyPixelWeightOpt = None,
    head_context: HeadContextOpt = None,
    bank_size: Annotated[
        int, Opt("--bank-size", min=1, help="Memory-bank rows a hybrid's query meets.")
    ] = 2048,
    copy_paste: CopyPasteOpt = 0.0,
    device: DeviceOpt = "auto",
    seed: Annotated[
        list[int] | None,
        Opt(
            "--seed",
            help="Seed of the splits, label picks and training (default 0). Repeat to run the study once "
            "per seed (in OUT/seed-N) with mean, spread and worst seed in OUT/summary.md.",
        ),
    ] = None,
) -> None:
    """Train and score every backbone at each labels budget, the U-Net baseline, and the zero-label mode.

    The test split is fixed for all rows; rerunning the same command skips the models already done.
    """
    from benchmarks.study import StudyConfig, parse_labels, parse_types, run_seeded_studies, run_study

    seeds = seed or [0]

    with user_errors():
        config = StudyConfig(
            backbones=tuple(backbone),
            data=data,
            out=out,
            labels=parse_labels(labels),
            held_out_types=parse_types(held_out_types),
            steps=steps,
            batch_size=batch_size,
            image_size=image_size,
            test_fraction=test_fraction,
            include_unet=include_unet,
            include_zero_label=include_zero_label,
            anomaly_features=anomaly_features,
            neighbour_tiles=neighbour_tiles,
            anomaly_context=anomaly_context,
            anomaly_pixel_weight=anomaly_pixel_weight,
            head_context=head_context,
            bank_size=bank_size,
            copy_paste=copy_paste,
            device=device,
            seed=seeds[0],
        )
        if len(seeds) > 1:
            summary = run_seeded_studies(config, seeds, progress=typer.echo)
            typer.echo(
                f"{len(summary['rows'])} rows over {len(seeds)} seeds → {out / 'summary.md'} and "
                f"{out / 'summary.json'}"
            )
            return
        study = run_study(config, progress=typer.echo)
    typer.echo(f"{len(study['rows'])} rows → {out / 'study.md'} and {out / 'study.json'}")


def register(app: typer.Typer) -> None:
    """Add the `label-study` verb to `app`."""
    app.command("label-study")(label_study)

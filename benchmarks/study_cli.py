"""`python -m benchmarks label-study`: label efficiency and unseen defect types, against a from-scratch U-Net.

The study's own options are declared here. Every other option is a field of the run configs the
study trains from, derived from the field itself (`training.cli.config_options`): each setting of
`train-pipeline finetune` is a flag of the same name with the same default and help, and the
zero-label model's own settings are `--fit-normal-*` flags. A new field gets its flag without a
line here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from benchmarks.study_config import (
    FOLLOWS_FINETUNE,
    PER_JOB,
    StudyConfig,
    finetune_template,
    fit_normal_template,
    parse_labels,
    parse_types,
)
from training.cli._common import flowing, user_errors
from training.cli.config_options import config_parameters, config_values, with_parameters
from training.model_config import FinetuneConfig, FitNormalConfig

Opt = typer.Option

# Fields with no flag of their own: each job fills in those of `PER_JOB`, and the study's repeatable
# `--seed` sets the seed.
NOT_FLAGS = (*PER_JOB, "seed")
FIT_NORMAL_PREFIX = "fit_normal"


def _own_fields(config_class: type, skipped: tuple[str, ...]) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class) if f.name not in skipped]


FINETUNE_FLAGS = _own_fields(FinetuneConfig, NOT_FLAGS)
FIT_NORMAL_FLAGS = _own_fields(FitNormalConfig, NOT_FLAGS + FOLLOWS_FINETUNE)


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
    unet_steps: Annotated[
        int | None,
        Opt("--unet-steps", show_default=False, help="Optimisation steps of the U-Net. Default: --steps."),
    ] = None,
    seed: Annotated[
        list[int] | None,
        Opt(
            "--seed",
            help="Seed of the splits, label picks and training (default 0). Repeat to run the study once "
            "per seed (in OUT/seed-N) with mean, spread and worst seed in OUT/summary.md.",
        ),
    ] = None,
    **settings: Any,
) -> None:
    """Train and score every backbone at each labels budget, the U-Net baseline, and the zero-label mode.

    The hybrids train as `train-pipeline finetune` does, with its defaults unless told otherwise (every
    finetune flag is taken here too); the zero-label models as `fit-normal` does, at the hybrids' tile
    size, neighbour tiles, decision settings, device and seed. The test split is fixed for all rows;
    rerunning the same command skips the models already done.
    """
    from benchmarks.study import run_seeded_studies, run_study

    seeds = seed or [0]
    with user_errors():
        config = StudyConfig(
            backbones=tuple(backbone),
            data=data,
            out=out,
            finetune=finetune_template(**config_values(FinetuneConfig, settings), seed=seeds[0]),
            fit_normal=fit_normal_template(
                **config_values(FitNormalConfig, settings, prefix=FIT_NORMAL_PREFIX)
            ),
            labels=parse_labels(labels),
            held_out_types=parse_types(held_out_types),
            test_fraction=test_fraction,
            include_unet=include_unet,
            include_zero_label=include_zero_label,
            unet_steps=unet_steps,
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


with_parameters(
    label_study,
    config_parameters(FinetuneConfig, FINETUNE_FLAGS, panel="The hybrids: train-pipeline finetune's settings")
    + config_parameters(
        FitNormalConfig,
        FIT_NORMAL_FLAGS,
        prefix=FIT_NORMAL_PREFIX,
        panel="The zero-label models: fit-normal's own settings",
    ),
)


def register(app: typer.Typer) -> None:
    """Add the `label-study` verb to `app`."""
    app.command("label-study", help=flowing(label_study.__doc__))(label_study)

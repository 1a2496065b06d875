"""`python -m benchmarks probe`: frozen-feature dense probes of a backbone (linear and nearest neighbour)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli._common import DeviceOpt, resolved_device, user_errors

Opt = typer.Option


def probe(
    backbone: Annotated[
        str, Opt("--backbone", help="Pretrain run folder, backbone.pt, or random:<timm arch>.")
    ],
    data: Annotated[Path, Opt("--data", help="Labeled folder (images/ + masks/, or MVTec layout).")],
    out: Annotated[Path, Opt("--out", help="Folder for probe.json.")],
    image_size: Annotated[
        int, Opt("--image-size", min=16, help="Images are resized to this square size.")
    ] = 224,
    steps: Annotated[int, Opt("--steps", min=1, help="Optimiser steps of the linear probe.")] = 300,
    seed: Annotated[int, Opt("--seed", help="Seed of the train/test split and the linear probe.")] = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Measure how much defect information frozen patch features carry (pixel AUROC, AUPRO)."""
    from benchmarks.probe import dense_probe, write_probe_result

    with user_errors():
        result = dense_probe(
            backbone, data, image_size=image_size, steps=steps, seed=seed, device=resolved_device(device)
        )
        path = write_probe_result(result, out)
    typer.echo(
        f"linear: pixel AUROC {result.linear_pixel_auroc:.4f}, AUPRO {result.linear_aupro:.4f}; "
        f"nearest neighbour: pixel AUROC {result.nn_pixel_auroc:.4f}, AUPRO {result.nn_aupro:.4f} ({path})"
    )


def register(app: typer.Typer) -> None:
    """Add the `probe` verb to `app`."""
    app.command("probe")(probe)

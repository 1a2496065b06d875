"""`train-pipeline probe`: frozen-feature dense probes of a backbone (linear and nearest neighbour)."""

from __future__ import annotations

from pathlib import Path

import typer

from training.cli._common import user_errors


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)


def probe(
    backbone: str = typer.Option(..., help="pretrain run folder, backbone.pt, or random:<timm arch>"),
    data: Path = typer.Option(..., help="labeled folder (images/ + masks/, or MVTec layout)"),
    out: Path = typer.Option(..., help="folder for probe.json"),
    image_size: int = typer.Option(224, min=16, help="images are resized to this square size"),
    steps: int = typer.Option(300, min=1, help="optimiser steps of the linear probe"),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="cpu or cuda"),
) -> None:
    """Measure how much defect information frozen patch features carry (pixel AUROC, AUPRO)."""
    with user_errors():
        from training.probe import dense_probe, write_probe_result

        result = dense_probe(backbone, data, image_size=image_size, steps=steps, seed=seed, device=device)
        path = write_probe_result(result, out)
    typer.echo(
        f"linear: pixel AUROC {result.linear_pixel_auroc:.4f}, AUPRO {result.linear_aupro:.4f}; "
        f"nearest neighbour: pixel AUROC {result.nn_pixel_auroc:.4f}, AUPRO {result.nn_aupro:.4f} ({path})"
    )

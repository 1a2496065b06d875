"""`train-pipeline demo-data`: demo line images from real textures, with synthetic defects and masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli._common import user_errors


def demo_data(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (new, empty, or from an earlier run).")],
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes byte-identical files.")] = 0,
    count: Annotated[int, typer.Option(help="Number of unlabeled (defect-free) images.")] = 200,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side in pixels.")] = 256,
    labeled_count: Annotated[int, typer.Option("--labeled-count", help="Number of labeled images.")] = 240,
    lines: Annotated[
        int, typer.Option(help="Production lines, one texture each (capped by textures found).")
    ] = 6,
) -> None:
    """Write demo data: unlabeled line images, a labeled set with exact defect masks, a contact sheet."""
    from training.data.demo import generate_demo_data  # numpy/cv2/scikit-image only when the verb runs

    with user_errors():
        summary = generate_demo_data(
            out, seed=seed, count=count, image_size=image_size, labeled_count=labeled_count, lines=lines
        )
    typer.echo(summary.describe())


def register(app: typer.Typer) -> None:
    """Add the `demo-data` verb to `app`."""
    app.command("demo-data")(demo_data)

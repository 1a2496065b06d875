"""`train-pipeline dataset-from-reviews`: reviewed inspections -> a labeled set for `finetune`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli._common import user_errors


def dataset_from_reviews(
    db: Annotated[
        str, typer.Option("--db", help="The service's database URL (sqlite:///… or postgresql://…).")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="New or empty folder for images/, masks/, manifest.json.")
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="The service's data directory (its blob store is DATA_DIR/blobs)."),
    ] = None,
) -> None:
    """Export reviewed inspections: corrected masks win, false alarms become defect-free images."""
    from training.reviews import export_reviewed_dataset

    with user_errors():
        manifest = export_reviewed_dataset(db, out, data_dir=data_dir)
    typer.echo(
        f"wrote {len(manifest.items)} images ({manifest.defect_images} with a defect mask) to {out}; "
        f"skipped {len(manifest.skipped)} (see manifest.json)"
    )


def register(app: typer.Typer) -> None:
    """Add the `dataset-from-reviews` verb to `app`."""
    app.command("dataset-from-reviews")(dataset_from_reviews)

"""Helpers shared by the CLI verbs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from training.errors import UserError

CopyPasteOpt = Annotated[float, typer.Option(
    "--copy-paste", min=0.0, max=1.0,
    help="Share of training crops that get one of the labeled defects pasted in (0: off).",
)]

AnomalyContextOpt = Annotated[int | None, typer.Option(
    "--anomaly-context", min=0, show_default=False,
    help="Hybrid memory-bank rows also carry the KxK mean and std of the features around them "
    "(odd K; 0: off). Helps large, low-contrast defects. Default: 15 on conv features, 0 on vit.",
)]

AnomalyPixelWeightOpt = Annotated[float | None, typer.Option(
    "--anomaly-pixel-weight", min=0.0, show_default=False,
    help="Hybrid memory-bank rows also carry the image's own pixels at this weight (0: off). Sees pale "
    "stains and colour changes that learned features miss. Default: 4 on conv features, 0 on vit.",
)]

HeadContextOpt = Annotated[int | None, typer.Option(
    "--head-context", min=0, show_default=False,
    help="The head compares each 1/4-resolution position with the mean and std of the KxK window around "
    "it and with the whole tile (odd K >= 3; 0: off). Helps large, low-contrast defects. Default: 11.",
)]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a `UserError` into a one-line message on stderr and exit status 2."""
    try:
        yield
    except UserError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None

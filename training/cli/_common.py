"""Helpers shared by the CLI verbs."""

from __future__ import annotations

import contextlib
import inspect
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


DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (CUDA when present, else the CPU), cuda or cpu.",
)]

QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="No progress bars (they are drawn only when stderr is a terminal anyway).",
)]


def flowing(docstring: str | None) -> str:
    """A verb's docstring as `--help` should show it: each paragraph one flowing line.

    The help formatter keeps the docstring's line breaks, which reads as ragged text in a terminal.
    """
    paragraphs = inspect.cleandoc(docstring or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


@contextlib.contextmanager
def talking(quiet: bool) -> Iterator[None]:
    """Progress bars unless `quiet` (and only on a terminal), with log lines to stderr drawn above them."""
    import logging

    from training.progress import log_above_bars, set_quiet

    set_quiet(quiet)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with log_above_bars():
        yield


def resolved_device(choice: str) -> str:
    """The torch device `--device` names (`auto`: CUDA when present), or a one-line error."""
    from training.distributed import resolve_device

    with user_errors():
        return str(resolve_device(choice))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a `UserError` into a one-line message on stderr and exit status 2."""
    try:
        yield
    except UserError as error:
        typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None

"""Helpers shared by the CLI verbs."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Annotated

import typer

from training.errors import UserError
from training.model_config import FinetuneConfig
from training.run_config import help_of

# Options several verbs share; their help is declared with `FinetuneConfig`'s fields.
CopyPasteOpt = Annotated[float, typer.Option("--copy-paste", help=help_of(FinetuneConfig, "copy_paste"))]
AnomalyContextOpt = Annotated[
    int | None,
    typer.Option("--anomaly-context", show_default=False, help=help_of(FinetuneConfig, "anomaly_context")),
]
AnomalyPixelWeightOpt = Annotated[
    float | None,
    typer.Option(
        "--anomaly-pixel-weight", show_default=False, help=help_of(FinetuneConfig, "anomaly_pixel_weight")
    ),
]
HeadContextOpt = Annotated[
    int | None,
    typer.Option("--head-context", show_default=False, help=help_of(FinetuneConfig, "head_context")),
]
DeviceOpt = Annotated[str, typer.Option("--device", help=help_of(FinetuneConfig, "device"))]

QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="No progress bars (they are drawn only when stderr is a terminal anyway).",
    ),
]


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

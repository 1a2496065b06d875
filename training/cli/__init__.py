"""`train-pipeline`: the command line of the training subsystem.

Each verb lives in a small module that only parses arguments and calls library code; heavy imports
(torch, timm) happen inside the commands so that `--help` stays instant.
"""

from __future__ import annotations

import typer

from training.cli import demo, model, pretrain, reviews

app = typer.Typer(
    name="train-pipeline",
    help="Pretrain (DenseDINO), fine-tune, evaluate and export defect-segmentation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (demo, pretrain, model, reviews):
    module.register(app)

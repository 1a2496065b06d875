"""Command line: `make-data`, `run-regimes`, `table`; the research verbs `label-study` and `probe`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from benchmarks import probe_cli, study_cli
from training.cli._common import user_errors

app = typer.Typer(
    name="benchmarks",
    help="The development benchmark: split A for choosing, split B frozen and only reported.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SplitOpt = Annotated[str, typer.Option("--split", help="a (for choosing) or b (frozen: only report it).")]


@app.command("make-data")
def make_data(
    split: SplitOpt,
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the split into (new, empty or an earlier split).")
    ],
    seed: Annotated[int, typer.Option(help="Seed of every image and defect.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the square images in pixels.")] = 256,
    train_normal: Annotated[int, typer.Option(help="Defect-free training images per surface.")] = 30,
    train_defective: Annotated[int, typer.Option(help="Labeled defective training images per surface.")] = 24,
    test_normal: Annotated[int, typer.Option(help="Defect-free test images per surface.")] = 20,
    test_defective: Annotated[int, typer.Option(help="Defective test images per surface.")] = 20,
    calibration_normal: Annotated[
        int, typer.Option(help="Defect-free images per surface for line calibration (never trained on).")
    ] = 20,
) -> None:
    """Build a split's train and test folders from its surfaces and the physical defect generator."""
    from benchmarks.dataset import DataConfig, build_split
    from benchmarks.surfaces import load_split_surfaces

    with user_errors():
        textures = load_split_surfaces(split)
        config = DataConfig(
            image_size=image_size,
            train_normal=train_normal,
            train_defective=train_defective,
            test_normal=test_normal,
            calibration_normal=calibration_normal,
            test_defective=test_defective,
            seed=seed,
        )
        record = build_split(textures, out, config, split.lower())
    typer.echo(f"wrote split {split.upper()} ({', '.join(record['surfaces'])}) to {out}")


@app.command("run-regimes")
def run_regimes_command(
    data: Annotated[Path, typer.Option("--data", help="A split folder written by make-data.")],
    out: Annotated[Path, typer.Option("--out", help="Results folder (finished rows are reused).")],
    backbone: Annotated[
        str, typer.Option(help="Backbone spec: pretrain run folder, backbone.pt or random:<arch>.")
    ],
    regimes: Annotated[
        str, typer.Option(help="Comma-separated: 0, 1, 5, 20, held-out-types.")
    ] = "0,1,5,20,held-out-types",
    models: Annotated[
        str, typer.Option(help="Comma-separated: hybrid, unet, no-learning.")
    ] = "hybrid,unet,no-learning",
    steps: Annotated[int, typer.Option(help="Fine-tuning (and U-Net) steps.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Tiles per step.")] = 16,
    image_size: Annotated[int, typer.Option(help="Tile side.")] = 128,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    seed: Annotated[int, typer.Option(help="Seed of label picks and training.")] = 0,
    finetune_options: Annotated[
        str,
        typer.Option(
            help="JSON object of extra finetune options, e.g. '{\"synthetic_anomalies\": 0.5}' (default: none)."
        ),
    ] = "{}",
    fit_normal_options: Annotated[str, typer.Option(help="JSON object of extra fit-normal options.")] = "{}",
) -> None:
    """Every regime on a split, each model exported and served by ONNX Runtime; writes results.json/.md."""
    from benchmarks.runner import RunConfig, parse_models, parse_regimes, run_regimes

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    with user_errors():
        config = RunConfig(
            data=data,
            out=out,
            backbone=backbone,
            regimes=parse_regimes(regimes),
            models=parse_models(models),
            steps=steps,
            batch_size=batch_size,
            image_size=image_size,
            device=device,
            seed=seed,
            finetune_options=_json_object(finetune_options, "--finetune-options"),
            fit_normal_options=_json_object(fit_normal_options, "--fit-normal-options"),
        )
        run_regimes(config, progress=typer.echo)
    typer.echo(f"results: {out / 'results.json'}, {out / 'results.md'}")


@app.command("table")
def table(
    results: Annotated[
        list[Path],
        typer.Argument(
            help="Result files: results.json (run-regimes), study.json, summary.json (label-study), probe.json (probe).",
        ),
    ],
) -> None:
    """Print the markdown tables of saved result files (several probe.json files make one table)."""
    from benchmarks.tables import render_files

    with user_errors():
        typer.echo(render_files(results), nl=False)


@app.command("docs-tables")
def docs_tables(
    docs: Annotated[
        list[Path] | None,
        typer.Argument(help="Markdown files to refresh (default: README.md and docs/BENCHMARKS.md)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; exit 1 naming each stale table.")
    ] = False,
) -> None:
    """Regenerate the results tables inside the docs from the result files each table names."""
    from benchmarks.docs_tables import DEFAULT_DOCS, refresh

    with user_errors():
        stale = [block for doc in docs or DEFAULT_DOCS for block in refresh(doc, Path.cwd(), write=not check)]
    for block in stale:
        verb = "is stale" if check else "rewritten"
        typer.echo(f"{block.doc}:{block.line}: table of {', '.join(block.files)} {verb}")
    if check and stale:
        raise typer.Exit(1)


def _json_object(text: str, flag: str) -> dict:
    from training.errors import UserError

    try:
        value = json.loads(text)
    except ValueError as error:
        raise UserError(f"{flag} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise UserError(f"{flag} must be a JSON object such as '{{\"steps\": 10}}'")
    return value


# The research verbs, beside the benchmark and outside the product: each module parses its own options.
for module in (study_cli, probe_cli):
    module.register(app)

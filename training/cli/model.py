"""`train-pipeline finetune | fit-normal | evaluate | export | calibrate`: from a backbone to a served model bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli._common import (
    AnomalyContextOpt,
    AnomalyPixelWeightOpt,
    CopyPasteOpt,
    DeviceOpt,
    HeadContextOpt,
    QuietOpt,
    flowing,
    resolved_device,
    talking,
    user_errors,
)
from training.model_config import FinetuneConfig, FitNormalConfig
from training.run_config import default_of, from_options, help_of

F, N = FinetuneConfig, FitNormalConfig


def opt(config_class: type, name: str, *flags: str) -> Any:
    """The option of the field `name` of `config_class`, with the help text declared there."""
    return typer.Option(*flags, help=help_of(config_class, name))


def finetune(
    backbone: Annotated[str, opt(F, "backbone", "--backbone")],
    data: Annotated[list[Path], opt(F, "data", "--data")],
    out: Annotated[Path, opt(F, "out", "--out")],
    image_size: Annotated[int, opt(F, "image_size")] = default_of(F, "image_size"),
    steps: Annotated[int, opt(F, "steps")] = default_of(F, "steps"),
    epochs: Annotated[int | None, opt(F, "epochs")] = default_of(F, "epochs"),
    batch_size: Annotated[int, opt(F, "batch_size")] = default_of(F, "batch_size"),
    lr: Annotated[float, opt(F, "lr")] = default_of(F, "lr"),
    backbone_lr_scale: Annotated[float, opt(F, "backbone_lr_scale")] = default_of(F, "backbone_lr_scale"),
    unfreeze_last: Annotated[int, opt(F, "unfreeze_last")] = default_of(F, "unfreeze_last"),
    freeze_backbone: Annotated[
        bool, typer.Option("--freeze-backbone", help="Same as --unfreeze-last 0.")
    ] = False,
    anomaly_branch: Annotated[bool, opt(F, "anomaly_branch", "--anomaly-branch/--no-anomaly-branch")] = (
        default_of(F, "anomaly_branch")
    ),
    anomaly_features: Annotated[str, opt(F, "anomaly_features")] = default_of(F, "anomaly_features"),
    anomaly_stride: Annotated[int, opt(F, "anomaly_stride")] = default_of(F, "anomaly_stride"),
    anomaly_context: AnomalyContextOpt = default_of(F, "anomaly_context"),
    anomaly_pixel_weight: AnomalyPixelWeightOpt = default_of(F, "anomaly_pixel_weight"),
    head_context: HeadContextOpt = default_of(F, "head_context"),
    bank_size: Annotated[int, opt(F, "bank_size")] = default_of(F, "bank_size"),
    neighbour_tiles: Annotated[int, opt(F, "neighbour_tiles")] = default_of(F, "neighbour_tiles"),
    copy_paste: CopyPasteOpt = default_of(F, "copy_paste"),
    synthetic_anomalies: Annotated[float, opt(F, "synthetic_anomalies")] = default_of(
        F, "synthetic_anomalies"
    ),
    label_free_steps: Annotated[int, opt(F, "label_free_steps")] = default_of(F, "label_free_steps"),
    labeled_defects: Annotated[int | None, opt(F, "labeled_defects")] = default_of(F, "labeled_defects"),
    val_fraction: Annotated[float, opt(F, "val_fraction")] = default_of(F, "val_fraction"),
    target_recall: Annotated[float, opt(F, "target_recall")] = default_of(F, "target_recall"),
    image_top_pixels: Annotated[int | None, opt(F, "image_top_pixels")] = default_of(F, "image_top_pixels"),
    device: DeviceOpt = default_of(F, "device"),
    seed: Annotated[int, opt(F, "seed")] = default_of(F, "seed"),
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the per-pixel defect head; thresholds are chosen on a validation split.

    The defaults are the measured recipe (128 px tiles, docs/BENCHMARKS.md §2). On the demo data
    (240 labeled 256 px images) they take about 10 minutes on a 2-core CPU (docs/BENCHMARKS.md §11);
    on a GPU much less (not measured yet). The run folder keeps the resolved settings in config.json.
    """
    options = dict(locals())
    from training.finetune import finetune as run_finetune

    with user_errors():
        config = from_options(
            F,
            options,
            data=tuple(data),
            unfreeze_last=0 if freeze_backbone else unfreeze_last,
            device=resolved_device(device),
        )
    with user_errors(), talking(quiet):
        metrics = run_finetune(config)
    typer.echo(
        f"{metrics['kind']} model in {out}: validation pixel AUROC {metrics['pixel_auroc']:.4f}, "
        f"AUPRO {metrics['aupro']:.4f}, F1 {metrics['f1']:.4f}"
    )


def fit_normal(
    backbone: Annotated[str, opt(N, "backbone", "--backbone")],
    data: Annotated[Path, opt(N, "data", "--data")],
    out: Annotated[Path, opt(N, "out", "--out")],
    image_size: Annotated[int, opt(N, "image_size")] = default_of(N, "image_size"),
    bank_size: Annotated[int, opt(N, "bank_size")] = default_of(N, "bank_size"),
    neighbour_tiles: Annotated[int, opt(N, "neighbour_tiles")] = default_of(N, "neighbour_tiles"),
    holdout_fraction: Annotated[float, opt(N, "holdout_fraction")] = default_of(N, "holdout_fraction"),
    batch_size: Annotated[int, opt(N, "batch_size")] = default_of(N, "batch_size"),
    target_recall: Annotated[float, opt(N, "target_recall")] = default_of(N, "target_recall"),
    image_top_pixels: Annotated[int | None, opt(N, "image_top_pixels")] = default_of(N, "image_top_pixels"),
    discriminator_steps: Annotated[int, opt(N, "discriminator_steps")] = default_of(N, "discriminator_steps"),
    anomaly_features: Annotated[str | None, opt(N, "anomaly_features")] = default_of(N, "anomaly_features"),
    anomaly_context: AnomalyContextOpt = default_of(N, "anomaly_context"),
    anomaly_pixel_weight: AnomalyPixelWeightOpt = default_of(N, "anomaly_pixel_weight"),
    device: DeviceOpt = default_of(N, "device"),
    seed: Annotated[int, opt(N, "seed")] = default_of(N, "seed"),
    quiet: QuietOpt = False,
) -> None:
    """Zero-label mode: anomaly model from defect-free images only.

    With the defaults (a discriminator and a bank on its encoder), about 11 minutes of CPU time for the
    demo data's 60 defect-free images on a 2-core CPU; `--discriminator-steps 0` (the bank on patch
    tokens alone) about one (docs/BENCHMARKS.md §11). Less on a GPU (not measured yet). The run folder
    keeps the resolved settings in config.json.
    """
    options = dict(locals())
    from training.fit_normal import fit_normal as run_fit_normal

    with user_errors():
        config = from_options(N, options, device=resolved_device(device))
    with user_errors(), talking(quiet):
        thresholds = run_fit_normal(config)
    typer.echo(
        f"zero-label model in {out}: pixel threshold {thresholds['pixel']:.4f}, image {thresholds['image']:.4f}"
    )


def evaluate(
    model: Annotated[Path, typer.Option("--model", help="Model run folder or bundle (folder or .zip).")],
    data: Annotated[Path, typer.Option("--data", help="Labeled folder.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder (metrics.json, report.html, overlays).")],
    quiet: QuietOpt = False,
) -> None:
    """Measure a model on a labeled set; a bundle runs through the service's own inference code.

    Evaluate on images the model never saw: it warns when some of them were among its training data.
    """
    from training.evaluate import evaluate as run_evaluate

    def warn(message: str) -> None:
        typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)

    with user_errors(), talking(quiet):
        metrics = run_evaluate(model, data, out, warn=warn)
    typer.echo(
        f"pixel AUROC {metrics['pixel_auroc']:.4f}, AUPRO {metrics['aupro']:.4f}, "
        f"image AUROC {metrics['image_auroc']:.4f}, F1 {metrics['f1']:.4f}, IoU {metrics['iou']:.4f} → {out}"
    )


def export(
    model: Annotated[Path, typer.Option("--model", help="Model run folder (from finetune or fit-normal).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (17 or newer).")] = 17,
    int8: Annotated[bool, typer.Option("--int8", help="Write an INT8-quantized graph (for CPUs).")] = False,
    fp16: Annotated[
        bool, typer.Option("--fp16", help="Write an fp16 graph (for GPUs); float32 in and out.")
    ] = False,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval-data", help="Labeled folder: measure the pixel AUROC change of --int8/--fp16."),
    ] = None,
) -> None:
    """Export a run as a model bundle (ONNX + model.json), after a PyTorch-vs-ONNX Runtime parity check.

    With --int8 or --fp16 the bundle holds that variant instead, written only after its accuracy change
    and CPU speed-up against the fp32 graph were measured and found within tolerance.
    """
    from training.export import export_run

    if int8 and fp16:
        typer.secho(
            "error: choose one of --int8 and --fp16 (each variant is a bundle of its own)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(code=2)
    if eval_data is not None and not (int8 or fp16):
        typer.secho(
            "error: --eval-data measures a variant; add --int8 or --fp16", err=True, fg=typer.colors.RED
        )
        raise typer.Exit(code=2)
    if out.exists() and not out.is_dir():
        typer.secho(
            f"error: --out {out} is a file; the bundle is a folder (model.onnx + model.json), give a new "
            "or empty folder",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(code=2)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    with user_errors():
        result = export_run(model, out, opset=opset, precision=precision, eval_data=eval_data)
    manifest = result.bundle.manifest
    typer.echo(
        f"bundle {manifest.model_version} ({manifest.kind}, {manifest.precision}) in {out}; "
        f"fp32 parity max |Δp| {result.parity_max_abs_diff:.1e}"
    )
    if result.variant is not None:
        typer.echo(result.variant.summary())


def calibrate(
    model: Annotated[
        Path, typer.Option("--model", help="Bundle folder (from export); its model.json is updated.")
    ],
    normal: Annotated[
        Path, typer.Option("--normal", help="The line's defect-free images (a folder, or a labeled folder).")
    ],
    line: Annotated[str, typer.Option("--line", help="The line's name, as its cameras report it.")],
    max_false_alarm_rate: Annotated[
        float,
        typer.Option(
            "--max-false-alarm-rate",
            min=0.0,
            max=1.0,
            help="Set the line's image threshold as low as it goes while rejecting at most this share of its normal images.",
        ),
    ] = 0.01,
) -> None:
    """Calibrate one line's image threshold on its own defect-free images, inside the bundle.

    The service uses it for that line's frames (an operator's PUT /lines/{line}/threshold still wins);
    register the bundle again after calibrating.
    """
    from training.decision import calibrate_bundle

    with user_errors():
        result = calibrate_bundle(model, normal, line, max_false_alarm_rate=max_false_alarm_rate)
    typer.echo(
        f"line {line}: image threshold {result.image:.4f}, false-alarm rate {result.false_alarm_rate:.4f} "
        f"on {result.normal_images} defect-free images (target {max_false_alarm_rate}) → {model}"
    )


def register(app: typer.Typer) -> None:
    """Add the model verbs to `app`."""
    verbs = (
        ("finetune", finetune),
        ("fit-normal", fit_normal),
        ("evaluate", evaluate),
        ("export", export),
        ("calibrate", calibrate),
    )
    for name, verb in verbs:
        app.command(name, help=flowing(verb.__doc__))(verb)

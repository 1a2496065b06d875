"""`train-pipeline finetune | fit-normal | evaluate | export | calibrate`: from a backbone to a served model bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

BackboneOpt = Annotated[str, typer.Option("--backbone", help="Pretrain run folder, backbone.pt, or random:<timm arch>.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Run folder to write.")]
ImageSizeOpt = Annotated[int, typer.Option(
    "--image-size", min=1, help="Tile side in pixels (the model's input size; the measured recipe is 128).",
)]
# The tile size the accuracies of docs/BENCHMARKS.md §3 were measured at (larger tiles measured worse there).
DEFAULT_TILE = 128
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per step.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of splits, crops and coreset.")]
BankOpt = Annotated[int, typer.Option("--bank-size", min=1, help="Memory-bank rows a query is compared with.")]
TargetRecallOpt = Annotated[float, typer.Option(
    "--target-recall", min=0.0, max=1.0,
    help="The image threshold catches this share of validation defects (real ones plus synthetic ones drawn "
    "on defect-free validation images); the false-alarm rate it costs is measured and stored in the bundle.",
)]
NeighbourTilesOpt = Annotated[int, typer.Option(
    "--neighbour-tiles", min=0,
    help="Score each tile against the banks of its N most similar normal tiles (0: one bank for all tiles).",
)]


def finetune(
    backbone: BackboneOpt,
    data: Annotated[
        list[Path],
        typer.Option("--data", help="Labeled folder (images/ + masks/, or MVTec AD layout); repeat to combine folders."),
    ],
    out: OutOpt,
    image_size: ImageSizeOpt = DEFAULT_TILE,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps (ignored when --epochs is given).")] = 500,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Passes of one crop per training image.")] = None,
    batch_size: BatchOpt = 8,
    lr: Annotated[float, typer.Option("--lr", help="Head learning rate; unfrozen blocks get a tenth.")] = 1e-3,
    unfreeze_last: Annotated[int, typer.Option("--unfreeze-last", min=0, help="Backbone blocks fine-tuned (0 = frozen).")] = 2,
    freeze_backbone: Annotated[bool, typer.Option("--freeze-backbone", help="Same as --unfreeze-last 0.")] = False,
    anomaly_branch: Annotated[
        bool, typer.Option("--anomaly-branch/--no-anomaly-branch", help="Fuse a zero-label anomaly map (hybrid model).")
    ] = True,
    anomaly_features: Annotated[str, typer.Option(
        "--anomaly-features", help="conv: the head's encoder at 1/2 resolution (thin defects); vit: patch tokens.",
    )] = "conv",
    anomaly_stride: Annotated[int, typer.Option(
        "--anomaly-stride", help="Score every Nth feature position (2: 4x cheaper anomaly branch, a little coarser).",
    )] = 1,
    anomaly_context: AnomalyContextOpt = None,
    anomaly_pixel_weight: AnomalyPixelWeightOpt = None,
    head_context: HeadContextOpt = None,
    bank_size: BankOpt = 2048,
    neighbour_tiles: NeighbourTilesOpt = 4,
    copy_paste: CopyPasteOpt = 0.0,
    synthetic_anomalies: Annotated[float, typer.Option(
        "--synthetic-anomalies", min=0.0, max=1.0,
        help="Share of training crops that get a generic synthetic anomaly (foreign material, curve, blob, blur, "
        "noise), so the head also learns 'different from normal' (0: off).",
    )] = 0.0,
    labeled_defects: Annotated[
        int | None, typer.Option("--labeled-defects", min=1, help="Use only N labeled defect images per line.")
    ] = None,
    target_recall: TargetRecallOpt = 0.95,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Fine-tune the per-pixel defect head; thresholds are chosen on a validation split.

    The defaults are the measured recipe (128 px tiles, docs/BENCHMARKS.md §3). On the demo data
    (240 labeled 256 px images) they take about 10 minutes on a 2-core CPU (docs/BENCHMARKS.md §9);
    on a GPU much less (not measured yet).
    """
    from training.finetune import FinetuneConfig
    from training.finetune import finetune as run_finetune

    device = resolved_device(device)
    config = FinetuneConfig(
        backbone=backbone, data=tuple(data), out=out, image_size=image_size, steps=steps, epochs=epochs,
        batch_size=batch_size, lr=lr, unfreeze_last=0 if freeze_backbone else unfreeze_last,
        anomaly_branch=anomaly_branch, anomaly_features=anomaly_features, anomaly_stride=anomaly_stride,
        anomaly_context=anomaly_context, anomaly_pixel_weight=anomaly_pixel_weight, head_context=head_context,
        bank_size=bank_size, neighbour_tiles=neighbour_tiles, copy_paste=copy_paste,
        synthetic_anomalies=synthetic_anomalies, labeled_defects=labeled_defects, target_recall=target_recall,
        device=device, seed=seed,
    )
    with user_errors(), talking(quiet):
        metrics = run_finetune(config)
    typer.echo(f"{metrics['kind']} model in {out}: validation pixel AUROC {metrics['pixel_auroc']:.4f}, "
               f"AUPRO {metrics['aupro']:.4f}, F1 {metrics['f1']:.4f}")


def fit_normal(
    backbone: BackboneOpt,
    data: Annotated[Path, typer.Option("--data", help="Folder of defect-free images (or a labeled folder).")],
    out: OutOpt,
    image_size: ImageSizeOpt = DEFAULT_TILE,
    bank_size: BankOpt = 2048,
    neighbour_tiles: NeighbourTilesOpt = 4,
    batch_size: BatchOpt = 16,
    discriminator_steps: Annotated[int, typer.Option(
        "--discriminator-steps", min=0,
        help="Also train a per-pixel head for N steps on the defect-free images with synthetic anomalies and "
        "fuse it with the nearest-neighbour map (0: nearest-neighbour map only).",
    )] = 0,
    target_recall: TargetRecallOpt = 0.95,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Zero-label mode: anomaly model from defect-free images only.

    With the defaults, about a minute of CPU time for the demo data's 60 defect-free images on a
    2-core CPU (docs/BENCHMARKS.md §9); less on a GPU (not measured yet).
    """
    from training.fit_normal import FitNormalConfig
    from training.fit_normal import fit_normal as run_fit_normal

    device = resolved_device(device)
    config = FitNormalConfig(backbone=backbone, data=data, out=out, image_size=image_size, bank_size=bank_size,
                             neighbour_tiles=neighbour_tiles, batch_size=batch_size, target_recall=target_recall,
                             discriminator_steps=discriminator_steps, device=device, seed=seed)
    with user_errors(), talking(quiet):
        thresholds = run_fit_normal(config)
    typer.echo(f"zero-label model in {out}: pixel threshold {thresholds['pixel']:.4f}, image {thresholds['image']:.4f}")


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
    typer.echo(f"pixel AUROC {metrics['pixel_auroc']:.4f}, AUPRO {metrics['aupro']:.4f}, "
               f"image AUROC {metrics['image_auroc']:.4f}, F1 {metrics['f1']:.4f}, IoU {metrics['iou']:.4f} → {out}")


def export(
    model: Annotated[Path, typer.Option("--model", help="Model run folder (from finetune or fit-normal).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write.")],
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (17 or newer).")] = 17,
    int8: Annotated[bool, typer.Option("--int8", help="Write an INT8-quantized graph (for CPUs).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Write an fp16 graph (for GPUs); float32 in and out.")] = False,
    eval_data: Annotated[
        Path | None, typer.Option("--eval-data", help="Labeled folder: measure the pixel AUROC change of --int8/--fp16.")
    ] = None,
) -> None:
    """Export a run as a model bundle (ONNX + model.json), after a PyTorch-vs-ONNX Runtime parity check.

    With --int8 or --fp16 the bundle holds that variant instead, written only after its accuracy change
    and CPU speed-up against the fp32 graph were measured and found within tolerance.
    """
    from training.export import export_run

    if int8 and fp16:
        typer.secho("error: choose one of --int8 and --fp16 (each variant is a bundle of its own)", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    if eval_data is not None and not (int8 or fp16):
        typer.secho("error: --eval-data measures a variant; add --int8 or --fp16", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    if out.exists() and not out.is_dir():
        typer.secho(f"error: --out {out} is a file; the bundle is a folder (model.onnx + model.json), give a new "
                    "or empty folder", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2)
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    with user_errors():
        result = export_run(model, out, opset=opset, precision=precision, eval_data=eval_data)
    manifest = result.bundle.manifest
    typer.echo(f"bundle {manifest.model_version} ({manifest.kind}, {manifest.precision}) in {out}; "
               f"fp32 parity max |Δp| {result.parity_max_abs_diff:.1e}")
    if result.variant is not None:
        typer.echo(result.variant.summary())


def calibrate(
    model: Annotated[Path, typer.Option("--model", help="Bundle folder (from export); its model.json is updated.")],
    normal: Annotated[Path, typer.Option("--normal", help="The line's defect-free images (a folder, or a labeled folder).")],
    line: Annotated[str, typer.Option("--line", help="The line's name, as its cameras report it.")],
    max_false_alarm_rate: Annotated[float, typer.Option(
        "--max-false-alarm-rate", min=0.0, max=1.0,
        help="Set the line's image threshold as low as it goes while rejecting at most this share of its normal images.",
    )] = 0.01,
) -> None:
    """Calibrate one line's image threshold on its own defect-free images, inside the bundle.

    The service uses it for that line's frames (an operator's PUT /lines/{line}/threshold still wins);
    register the bundle again after calibrating.
    """
    from training.decision import calibrate_bundle

    with user_errors():
        result = calibrate_bundle(model, normal, line, max_false_alarm_rate=max_false_alarm_rate)
    typer.echo(f"line {line}: image threshold {result.image:.4f}, false-alarm rate {result.false_alarm_rate:.4f} "
               f"on {result.normal_images} defect-free images (target {max_false_alarm_rate}) → {model}")


def register(app: typer.Typer) -> None:
    """Add the model verbs to `app`."""
    verbs = (("finetune", finetune), ("fit-normal", fit_normal), ("evaluate", evaluate), ("export", export),
             ("calibrate", calibrate))
    for name, verb in verbs:
        app.command(name, help=flowing(verb.__doc__))(verb)

"""Export a model run as a bundle: ONNX graph + manifest, checked against PyTorch before it is written.

The graph maps normalised tiles `image` [N, 3, T, T] to probabilities `prob` [N, 1, T, T]: the
sigmoid, the anomaly branch and the fusion are inside, the thresholds are not (they live in
`model.json`, where an operator can move them without a re-export). The tile size is fixed (the
position grid was resampled once, before tracing) and the batch axis is dynamic.
`--int8` and `--fp16` bundles are derived from the checked fp32 graph (`training.export_variants`).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inspect_svc.bundle import (
    Bundle,
    BundleManifest,
    ImageScore,
    Thresholds,
    Tiling,
    sha256_file,
    utc_now,
    write_bundle,
)
from training.errors import UserError
from training.export_variants import (
    Precision,
    VariantReport,
    check_tolerance,
    convert_fp16,
    labeled_pixel_auroc,
    ms_per_batch,
    probability_diffs,
    quantize_int8,
    timing_batch,
)
from training.predictor import default_overlap
from training.run_config import read_config
from training.runs import RunModel, load_run, load_sample_tiles
from training.training_data import copy_training_images

PARITY_TOLERANCE = 1e-3  # max abs difference of fp32 probabilities between ORT and PyTorch
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    bundle: Bundle
    parity_max_abs_diff: float
    variant: VariantReport | None = None  # set for fp16 and int8 bundles


def export_onnx(run: RunModel, path: Path, *, opset: int = MIN_OPSET) -> None:
    """Trace the run's model to `path` (legacy TorchScript exporter: fast and exact for a static graph)."""
    import onnx

    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} is too old; the bundle needs opset {MIN_OPSET} or newer")
    example = torch.zeros(2, 3, run.tile, run.tile)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes, all static here by design
        torch.onnx.export(
            run.model.eval(),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["prob"],
            dynamic_axes={"image": {0: "batch"}, "prob": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def parity_max_abs_diff(run: RunModel, onnx_path: Path, *, seed: int = 0) -> float:
    """Largest |p_ort − p_torch| over random tiles and the run's stored real tiles (ORT CPU).

    NaN when either side produced a NaN, infinity when the output shapes differ: both fail the check.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(3, 3, run.tile, run.tile, generator=generator)]
    real = load_sample_tiles(run.root)
    if real is not None and len(real):
        inputs.append(real)
    diffs = []
    with torch.no_grad():
        for batch in inputs:
            expected = run.model(batch).numpy()
            (actual,) = session.run(["prob"], {"image": batch.numpy()})
            if actual.shape != expected.shape:  # broadcasting would otherwise compare the wrong pixels
                return float("inf")
            diffs.append(float(np.max(np.abs(actual - expected))))
    # np.max, not the builtin max: a NaN anywhere must stay NaN (and so fail the check), not be skipped.
    return float(np.max(diffs))


def model_version(onnx_path: Path) -> str:
    """`YYYYmmddTHHMMSS-<first 8 hex of the graph's sha256>`: sortable and tied to the exact graph."""
    return f"{utc_now():%Y%m%dT%H%M%S}-{sha256_file(onnx_path)[:8]}"


def export_run(
    run_dir: Path,
    out: Path,
    *,
    opset: int = MIN_OPSET,
    precision: Precision = "fp32",
    eval_data: Path | None = None,
) -> ExportResult:
    """Export `run_dir` to the bundle folder `out`, at fp32 or as a measured fp16/INT8 variant.

    The fp32 graph is always traced and parity-checked first; a variant is derived from it, compared
    with it (see `training.export_variants`), and written only within tolerance.

    Args:
        eval_data: a labeled folder; with a variant, pixel AUROC is measured on it for both graphs.

    Raises:
        UserError: not a run, ONNX Runtime disagrees with PyTorch beyond `PARITY_TOLERANCE`, or the
            variant changes detection beyond its tolerance.
    """
    run = load_run(run_dir)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        onnx_path = scratch / "model.onnx"
        export_onnx(run, onnx_path, opset=opset)
        diff = parity_max_abs_diff(run, onnx_path)
        if not diff < PARITY_TOLERANCE:
            raise UserError(
                f"export parity failed: ONNX Runtime and PyTorch differ by {diff:.2e} on probabilities "
                f"(tolerance {PARITY_TOLERANCE:.0e}); no bundle was written"
            )
        metrics = _manifest_metrics(run, diff)
        if precision == "fp32":
            bundle = write_bundle(out, onnx_path, _manifest(run, onnx_path, metrics))
            copy_training_images(run.root, out)
            return ExportResult(bundle, diff)
        variant_path, method = _derive_variant(run, onnx_path, scratch, precision)
        report = _measure_variant(
            run, onnx_path, variant_path, precision, method, eval_data, scratch, metrics
        )
        check_tolerance(report)
        metrics[precision] = report.as_metrics()
        bundle = write_bundle(out, variant_path, _manifest(run, variant_path, metrics, precision))
        copy_training_images(run.root, out)
    return ExportResult(bundle=bundle, parity_max_abs_diff=diff, variant=report)


def _manifest(run: RunModel, onnx_path: Path, metrics: dict, precision: Precision = "fp32") -> BundleManifest:
    return BundleManifest(
        model_version=model_version(onnx_path),
        created_at=utc_now(),
        kind=run.model.kind,
        backbone=run.backbone_name,
        patch_size=run.patch_size,
        input_size=run.tile,
        mean=run.mean,
        std=run.std,
        precision=precision,
        thresholds=Thresholds(pixel=run.thresholds["pixel"], image=run.thresholds["image"]),
        # Runs saved before the image score was robust scored images by their maximum (k = 1).
        image_score=ImageScore(top_pixels=int(run.thresholds.get("image_top_pixels", 1))),
        tiling=Tiling(tile=run.tile, overlap=default_overlap(run.tile)),
        metrics=metrics,
        data_fingerprint=run.data_fingerprint,
        training_config=read_config(run.root),
        onnx_sha256=hashlib.sha256(b"").hexdigest(),  # replaced by write_bundle
    )


def _real_tiles(run: RunModel) -> np.ndarray:
    """The run's stored real tiles, or random ones for a run saved without them (calibration needs some)."""
    real = load_sample_tiles(run.root)
    if real is None or not len(real):
        real = torch.randn(4, 3, run.tile, run.tile, generator=torch.Generator().manual_seed(0))
    return np.ascontiguousarray(real.numpy(), dtype=np.float32)


def _derive_variant(run: RunModel, fp32_path: Path, scratch: Path, precision: Precision) -> tuple[Path, str]:
    """Write the reduced-precision graph; for INT8, static and dynamic quantization are both tried and
    the one closer to fp32 on the run's real tiles is kept (which wins depends on the model)."""
    target = scratch / f"model-{precision}.onnx"
    if precision == "fp16":
        convert_fp16(fp32_path, target)
        return target, "float16"
    tiles = _real_tiles(run)
    candidates = {}
    for method in ("static", "dynamic"):
        candidates[method] = scratch / f"model-int8-{method}.onnx"
        quantize_int8(fp32_path, candidates[method], tiles, method=method)
    best = min(candidates, key=lambda m: probability_diffs(fp32_path, candidates[m], tiles)[1])
    candidates[best].replace(target)
    return target, best


def _measure_variant(
    run: RunModel,
    fp32_path: Path,
    variant_path: Path,
    precision: Precision,
    method: str,
    eval_data: Path | None,
    scratch: Path,
    metrics: dict,
) -> VariantReport:
    from inspect_svc.engine.session import available_cpus

    tiles = _real_tiles(run)
    batch, threads = timing_batch(tiles), available_cpus()
    max_diff, mean_diff = probability_diffs(fp32_path, variant_path, tiles)
    aurocs: dict[str, float] = {}
    if eval_data is not None:
        for name, path, graph_precision in (
            ("fp32", fp32_path, "fp32"),
            ("variant", variant_path, precision),
        ):
            bundle_dir = scratch / f"bundle-{name}"
            write_bundle(bundle_dir, path, _manifest(run, path, metrics, graph_precision))
            aurocs[name] = labeled_pixel_auroc(bundle_dir, eval_data)
    return VariantReport(
        precision=precision,
        method=method,
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        fp32_ms_per_batch=ms_per_batch(fp32_path, batch, threads=threads),
        variant_ms_per_batch=ms_per_batch(variant_path, batch, threads=threads),
        batch=len(batch),
        threads=threads,
        pixel_auroc_fp32=aurocs.get("fp32"),
        pixel_auroc_variant=aurocs.get("variant"),
    )


def _manifest_metrics(run: RunModel, parity: float) -> dict:
    validation = run.metrics.get("validation", {})
    flat = {k: v for k, v in validation.items() if isinstance(v, (int, float, str)) and not _is_nan(v)}
    metrics = {"validation": flat, "export_parity_max_abs_diff": parity}
    if isinstance(
        validation.get("decision"), dict
    ):  # how the image threshold was chosen, and what it promises
        metrics["decision"] = {k: v for k, v in validation["decision"].items() if not _is_nan(v)}
    return metrics


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)

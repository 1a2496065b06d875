"""Export a model run as a bundle: ONNX graph + manifest, checked against PyTorch before it is written.

The graph maps normalised tiles `image` [N, 3, T, T] to probabilities `prob` [N, 1, T, T]: the
sigmoid, the anomaly branch and the fusion are inside, the thresholds are not (they live in
`model.json`, where an operator can move them without a re-export). The tile size is fixed (the
position grid was resampled once, before tracing) and the batch axis is dynamic.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inspect_svc.bundle import Bundle, BundleManifest, Thresholds, Tiling, sha256_file, utc_now, write_bundle
from training.errors import UserError
from training.hybrid import RunModel, default_overlap, load_run, load_sample_tiles

PARITY_TOLERANCE = 1e-3  # max abs difference of fp32 probabilities between ORT and PyTorch
MIN_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    bundle: Bundle
    parity_max_abs_diff: float


def export_onnx(run: RunModel, path: Path, *, opset: int = MIN_OPSET) -> None:
    """Trace the run's model to `path` (legacy TorchScript exporter: fast and exact for a static graph)."""
    import onnx

    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} is too old; the bundle needs opset {MIN_OPSET} or newer")
    example = torch.zeros(2, 3, run.tile, run.tile)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about constant shapes, all static here by design
        torch.onnx.export(
            run.model.eval(), (example,), str(path), input_names=["image"], output_names=["prob"],
            dynamic_axes={"image": {0: "batch"}, "prob": {0: "batch"}}, opset_version=opset, dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def parity_max_abs_diff(run: RunModel, onnx_path: Path, *, seed: int = 0) -> float:
    """Largest |p_ort − p_torch| over random tiles and the run's stored real tiles (ORT CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.randn(3, 3, run.tile, run.tile, generator=generator)]
    real = load_sample_tiles(run.root)
    if real is not None and len(real):
        inputs.append(real)
    worst = 0.0
    with torch.no_grad():
        for batch in inputs:
            expected = run.model(batch).numpy()
            (actual,) = session.run(["prob"], {"image": batch.numpy()})
            worst = max(worst, float(np.max(np.abs(actual - expected))))
    return worst


def model_version(onnx_path: Path) -> str:
    """`YYYYmmddTHHMMSS-<first 8 hex of the graph's sha256>`: sortable and tied to the exact graph."""
    return f"{utc_now():%Y%m%dT%H%M%S}-{sha256_file(onnx_path)[:8]}"


def export_run(run_dir: Path, out: Path, *, opset: int = MIN_OPSET) -> ExportResult:
    """Export `run_dir` to the bundle folder `out`.

    Raises:
        UserError: not a run, or ONNX Runtime disagrees with PyTorch beyond `PARITY_TOLERANCE`.
    """
    run = load_run(run_dir)
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = Path(scratch) / "model.onnx"
        export_onnx(run, onnx_path, opset=opset)
        diff = parity_max_abs_diff(run, onnx_path)
        if not diff < PARITY_TOLERANCE:
            raise UserError(
                f"export parity failed: ONNX Runtime and PyTorch differ by {diff:.2e} on probabilities "
                f"(tolerance {PARITY_TOLERANCE:.0e}); no bundle was written"
            )
        manifest = BundleManifest(
            model_version=model_version(onnx_path),
            created_at=utc_now(),
            kind=run.model.kind,
            backbone=run.backbone_name,
            patch_size=run.patch_size,
            input_size=run.tile,
            mean=run.mean,
            std=run.std,
            thresholds=Thresholds(pixel=run.thresholds["pixel"], image=run.thresholds["image"]),
            tiling=Tiling(tile=run.tile, overlap=default_overlap(run.tile)),
            metrics=_manifest_metrics(run, diff),
            data_fingerprint=run.data_fingerprint,
            onnx_sha256=hashlib.sha256(b"").hexdigest(),  # replaced by write_bundle
        )
        bundle = write_bundle(out, onnx_path, manifest)
    return ExportResult(bundle=bundle, parity_max_abs_diff=diff)


def _manifest_metrics(run: RunModel, parity: float) -> dict:
    validation = run.metrics.get("validation", {})
    flat = {k: v for k, v in validation.items() if isinstance(v, (int, float, str)) and not _is_nan(v)}
    return {"validation": flat, "export_parity_max_abs_diff": parity}


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and value != value

"""Reduced-precision variants of an exported fp32 graph: INT8 for CPUs, fp16 for GPUs.

A variant is written as a bundle of its own (its manifest says `precision`), and only after it was
measured against the fp32 graph it came from: probability differences on the run's real tiles, CPU
latency of both graphs at the same thread count, and, given a labeled set, the change of pixel AUROC
when both run through the service's `Predictor`.

What stays in float32, and why:
- the zero-label branch (`/anomaly/…`): its nearest-neighbour distance is ‖q‖² − 2 q·b + ‖b‖², a
  difference of large, nearly equal terms; at 8 bits (or fp16) the cancellation turns the distance to
  noise, and the branch is a small share of the compute anyway;
- the conv encoder's first two stages (`…/enc_full/…`, `…/enc_half/…`), whose
  1/2-resolution output is what a hybrid's anomaly branch measures distances on: rounded to fp16,
  those features move the anomaly map by several percent. They are a few small convolutions;
- the graph's inputs and outputs, so the service feeds and reads float32 whatever the precision.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from training.errors import UserError

if TYPE_CHECKING:  # onnx is imported where it is used: the module loads without it
    import onnx

Precision = Literal["fp32", "fp16", "int8"]
Int8Method = Literal["static", "dynamic"]

# Module scopes in node names (`/anomaly/scorer/MatMul`; how much of the parent path a name keeps
# depends on how the module was called, so a scope is matched anywhere in the name).
FLOAT_ONLY_SCOPES = ("/anomaly/", "/enc_full/", "/enc_half/")
# Quantized graphs are judged by what they do to detection, not by bit-exactness: the export fails
# when pixel AUROC on a labeled set drops by more than this ...
MAX_AUROC_DROP = 0.01
# ... and, labeled set or not, when a probability moves by more than this on the run's real tiles
# (a sanity bound that catches a broken quantization; typical INT8 differences are far smaller).
MAX_PROB_DIFF = {"int8": 0.25, "fp16": 1e-2}
TIMING_BATCH = 8
TIMING_REPEATS = 5


@dataclass(frozen=True)
class VariantReport:
    """How a variant compares with its fp32 graph; stored in the manifest as `metrics[precision]`."""

    precision: Precision
    method: str
    max_abs_diff: float
    mean_abs_diff: float
    fp32_ms_per_batch: float
    variant_ms_per_batch: float
    batch: int
    threads: int
    pixel_auroc_fp32: float | None = None
    pixel_auroc_variant: float | None = None

    @property
    def speedup(self) -> float:
        return self.fp32_ms_per_batch / self.variant_ms_per_batch

    @property
    def auroc_change(self) -> float | None:
        if self.pixel_auroc_fp32 is None or self.pixel_auroc_variant is None:
            return None
        return self.pixel_auroc_variant - self.pixel_auroc_fp32

    def as_metrics(self) -> dict[str, float | int | str]:
        values = {k: v for k, v in asdict(self).items() if v is not None}
        values["speedup"] = self.speedup
        if self.auroc_change is not None:
            values["pixel_auroc_change"] = self.auroc_change
        return values

    def summary(self) -> str:
        text = (
            f"{self.precision} ({self.method}): max |Δp| {self.max_abs_diff:.3f}, mean |Δp| {self.mean_abs_diff:.4f}; "
            f"CPU {self.fp32_ms_per_batch:.1f} → {self.variant_ms_per_batch:.1f} ms per {self.batch} tiles "
            f"({self.speedup:.2f}x, {self.threads} threads)"
        )
        if self.auroc_change is not None:
            text += f"; pixel AUROC {self.pixel_auroc_fp32:.4f} → {self.pixel_auroc_variant:.4f} ({self.auroc_change:+.4f})"
        return text


def float_only_nodes(onnx_path: Path) -> list[str]:
    """Names of the nodes that must stay float32 (see the module docstring)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [node.name for node in graph.node if any(scope in node.name for scope in FLOAT_ONLY_SCOPES)]


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray, *, method: Int8Method) -> None:
    """INT8 graph with per-channel int8 weights; the float-only nodes are left alone.

    `static` inserts QuantizeLinear/DequantizeLinear pairs with activation ranges calibrated on
    `calibration` (normalised tiles); `dynamic` quantizes the MatMul weights only and measures
    activation ranges at run time.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    excluded = float_only_nodes(fp32_path)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(
                str(prepared),
                str(out_path),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=excluded,
            )
            return
        quantize_static(
            str(prepared),
            str(out_path),
            _TileReader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Conv", "Gemm"],
            nodes_to_exclude=excluded,
            # Weight ranges of a trained ViT are roughly symmetric; symmetric weights let ORT use its
            # fastest int8 kernels. Activations keep their asymmetric ranges (post-GELU/ReLU).
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )


def convert_fp16(fp32_path: Path, out_path: Path) -> None:
    """fp16 graph with float32 inputs and outputs (the service's contract); float-only nodes kept fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    converted = convert_float_to_float16(
        model, keep_io_types=True, node_block_list=float_only_nodes(fp32_path), disable_shape_infer=False
    )
    onnx.save(drop_fp16_round_trips(converted), str(out_path))


def drop_fp16_round_trips(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewire every Cast(float32) fed by a Cast(float16) to the latter's input.

    The converter casts each float32 node's output to fp16 and back before the next float32 node, so
    a chain of float-only nodes would still round every intermediate value to fp16. Casting the
    original tensor directly is exact where it was float32 and unchanged where it was fp16.
    """
    from onnx import TensorProto

    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}

    def cast_to(node) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    for node in graph.node:
        source = producers.get(node.input[0]) if cast_to(node) == TensorProto.FLOAT else None
        if source is not None and cast_to(source) == TensorProto.FLOAT16:
            node.input[0] = source.input[0]
    used = {name for node in graph.node for name in node.input} | {output.name for output in graph.output}
    dead = [
        node for node in graph.node if node.op_type == "Cast" and not any(out in used for out in node.output)
    ]
    for node in dead:
        graph.node.remove(node)
    return model


class _TileReader:
    """`CalibrationDataReader` over normalised tiles, one tile per batch."""

    def __init__(self, tiles: np.ndarray) -> None:
        self._tiles = iter(np.ascontiguousarray(tiles, dtype=np.float32))

    def get_next(self) -> dict[str, np.ndarray] | None:
        tile = next(self._tiles, None)
        return None if tile is None else {"image": tile[None]}


def probability_diffs(reference: Path, variant: Path, tiles: np.ndarray) -> tuple[float, float]:
    """(max, mean) |p_variant − p_fp32| over `tiles`, both graphs on the CPU."""
    expected, actual = (
        _cpu_session(path).run(["prob"], {"image": tiles})[0] for path in (reference, variant)
    )
    difference = np.abs(actual.astype(np.float64) - expected)
    return float(difference.max()), float(difference.mean())


def ms_per_batch(onnx_path: Path, tiles: np.ndarray, *, threads: int) -> float:
    """Median CPU latency of one batch of `tiles`, after a warm-up run (not asserted anywhere)."""
    session = _cpu_session(onnx_path, threads=threads)
    session.run(["prob"], {"image": tiles})
    timings = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        session.run(["prob"], {"image": tiles})
        timings.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(timings)


def timing_batch(tiles: np.ndarray, size: int = TIMING_BATCH) -> np.ndarray:
    """`size` tiles, cycling through the given ones, so every graph is timed on the same real input."""
    return np.ascontiguousarray(tiles[np.arange(size) % len(tiles)], dtype=np.float32)


def labeled_pixel_auroc(bundle_dir: Path, data: Path) -> float:
    """Pixel AUROC of a bundle on a labeled set, run by the service's `Predictor` (as `evaluate` does)."""
    from inspect_svc.bundle import load_bundle
    from inspect_svc.engine.predictor import Predictor
    from training.data.labeled import load_images_with_masks, load_labeled_set
    from training.metrics import auroc

    loaded = load_images_with_masks(load_labeled_set(data).samples)
    if not loaded.images:
        raise UserError(f"{data} holds no readable image")
    predict: Callable[[np.ndarray], np.ndarray] = Predictor(load_bundle(bundle_dir)).predict
    scores = np.concatenate([predict(image).ravel() for image in loaded.images])
    labels = np.concatenate([mask.ravel() > 0 for mask in loaded.masks])
    return auroc(scores, labels)


def check_tolerance(report: VariantReport) -> None:
    """Raise when the variant changes detection more than the documented tolerances allow.

    Raises:
        UserError: pixel AUROC dropped by more than `MAX_AUROC_DROP`, or a probability moved by more
            than `MAX_PROB_DIFF[precision]`.
    """
    limit = MAX_PROB_DIFF[report.precision]
    if not report.max_abs_diff <= limit:
        raise UserError(
            f"{report.precision} export failed: probabilities differ from fp32 by up to "
            f"{report.max_abs_diff:.3f} (tolerance {limit}); no bundle was written"
        )
    change = report.auroc_change
    if change is not None and not change >= -MAX_AUROC_DROP:
        raise UserError(
            f"{report.precision} export failed: pixel AUROC drops by {-change:.4f} "
            f"(tolerance {MAX_AUROC_DROP}); no bundle was written"
        )


def _cpu_session(onnx_path: Path, *, threads: int | None = None):
    from inspect_svc.engine.session import create_session

    return create_session(onnx_path, providers=["CPUExecutionProvider"], intra_op_threads=threads)

"""Tiny ONNX models and bundles for tests: built with `onnx.helper`, no torch needed.

The graph follows the bundle contract: input `image` float32 [N, 3, T, T] (dynamic N), output `prob`
float32 [N, 1, T, T]. It computes sigmoid(w . x + b) per pixel (a 1x1 convolution), which is
translation-equivariant, so tiled and whole-frame predictions agree exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inspect_svc.bundle import Bundle, BundleManifest, Thresholds, Tiling, utc_now, write_bundle

# Per-channel weights and bias of the test model; `reference_probability` mirrors them in numpy.
PIXEL_WEIGHTS = (1.5, -1.0, 0.5)
PIXEL_BIAS = -0.25
TEST_MEAN = (0.485, 0.456, 0.406)
TEST_STD = (0.229, 0.224, 0.225)
OPSET = 17


def make_pixel_model(path: Path, *, tile: int, input_name: str = "image", output_name: str = "prob") -> Path:
    """Write a per-pixel sigmoid(1x1 conv) ONNX graph with a dynamic batch axis to `path`."""
    weight = numpy_helper.from_array(np.asarray(PIXEL_WEIGHTS, np.float32).reshape(1, 3, 1, 1), "weight")
    bias = numpy_helper.from_array(np.asarray([PIXEL_BIAS], np.float32), "bias")
    nodes = [
        helper.make_node("Conv", [input_name, "weight", "bias"], ["logit"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["logit"], [output_name]),
    ]
    graph = helper.make_graph(
        nodes,
        "pixel_model",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, tile, tile])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 1, tile, tile])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9  # readable by every onnxruntime the project supports
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def reference_probability(image_rgb: np.ndarray) -> np.ndarray:
    """What the pixel model computes on a whole uint8 RGB frame, in float64 numpy: [H, W]."""
    scaled = image_rgb.astype(np.float64) / 255.0
    normalised = (scaled - np.asarray(TEST_MEAN)) / np.asarray(TEST_STD)
    logit = normalised @ np.asarray(PIXEL_WEIGHTS) + PIXEL_BIAS
    return 1.0 / (1.0 + np.exp(-logit))


def make_test_bundle(
    root: Path,
    *,
    tile: int = 32,
    overlap: int = 8,
    kind: str = "supervised",
    version: str = "test-1",
    thresholds: Thresholds | None = None,
) -> Bundle:
    """A complete, verified bundle directory at `root` holding the pixel model."""
    root.mkdir(parents=True, exist_ok=True)
    onnx_path = make_pixel_model(root / "model.onnx", tile=tile)
    manifest = BundleManifest(
        model_version=version,
        created_at=utc_now(),
        kind=kind,
        backbone="test-pixel-model",
        patch_size=1,
        input_size=tile,
        mean=TEST_MEAN,
        std=TEST_STD,
        thresholds=thresholds or Thresholds(),
        tiling=Tiling(tile=tile, overlap=overlap),
        onnx_sha256="0" * 64,  # write_bundle fills in the real checksum
    )
    return write_bundle(root, onnx_path, manifest)

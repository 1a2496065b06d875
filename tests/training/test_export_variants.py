"""INT8 and fp16 bundles: written as bundles of their own, measured against fp32, served by the Predictor."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

from inspect_svc.bundle import load_bundle
from inspect_svc.engine.predictor import Predictor
from tests.synthetic_labeled import TINY_BACKBONE, TINY_FINETUNE_ARGS, model_cli, write_labeled_set
from training.errors import UserError
from training.export import export_run
from training.export_variants import (
    MAX_AUROC_DROP,
    MAX_PROB_DIFF,
    VariantReport,
    check_tolerance,
    float_only_nodes,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(run, labeled data, fp32 bundle)."""
    root = tmp_path_factory.mktemp("variants")
    data = write_labeled_set(root / "data")
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(root / "run"),
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    export_run(root / "run", root / "fp32")
    return root / "run", data, root / "fp32"


def _frame(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(48, 40, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def int8_export(
    hybrid: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """(INT8 bundle, CLI output), exported with a labeled set."""
    run, data, _ = hybrid
    out = tmp_path_factory.mktemp("int8") / "bundle"
    result = runner.invoke(
        model_cli(), ["export", "--model", str(run), "--out", str(out), "--int8", "--eval-data", str(data)]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_int8_bundle_is_served_by_the_predictor_close_to_fp32(
    hybrid: tuple[Path, Path, Path], int8_export: tuple[Path, str]
) -> None:
    out, output = int8_export
    assert "pixel AUROC" in output and "ms per 8 tiles" in output
    bundle = load_bundle(out)
    assert bundle.manifest.precision == "int8"
    graph = onnx.load(str(bundle.onnx_path)).graph
    assert {"QuantizeLinear", "DynamicQuantizeLinear"} & {node.op_type for node in graph.node}
    report = bundle.manifest.metrics["int8"]
    assert report["method"] in ("static", "dynamic") and report["speedup"] > 0
    assert report["pixel_auroc_change"] >= -MAX_AUROC_DROP
    assert report["max_abs_diff"] <= MAX_PROB_DIFF["int8"]
    frame = _frame()
    served, reference = Predictor(bundle).predict(frame), Predictor(load_bundle(hybrid[2])).predict(frame)
    assert served.shape == frame.shape[:2] and served.dtype == np.float32
    np.testing.assert_allclose(served, reference, atol=MAX_PROB_DIFF["int8"])


def test_quantization_leaves_the_nearest_neighbour_search_in_float(
    hybrid: tuple[Path, Path, Path], int8_export: tuple[Path, str]
) -> None:
    graph = onnx.load(str(load_bundle(int8_export[0]).onnx_path)).graph
    search = [
        n
        for n in onnx.load(str(hybrid[2] / "model.onnx")).graph.node
        if n.name in float_only_nodes(hybrid[2] / "model.onnx") and n.op_type in ("MatMul", "ReduceMin")
    ]
    # The distance MatMul and its ReduceMin; with per-tile banks also the MatMul that picks the nearest tiles.
    assert {n.op_type for n in search} == {"MatMul", "ReduceMin"}, (
        "the hybrid graph should hold the anomaly branch's search"
    )
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    nodes = {node.name: node for node in graph.node}
    for original in search:
        kept = nodes.get(original.name)
        assert kept is not None and kept.op_type == original.op_type, f"{original.name} was quantized"
        assert not dequantized.intersection(kept.input), f"{original.name} reads int8 values"


def test_fp16_bundle_runs_on_cpu_with_float32_io(hybrid: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, _, fp32 = hybrid
    result = runner.invoke(
        model_cli(), ["export", "--model", str(run), "--out", str(tmp_path / "fp16"), "--fp16"]
    )
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tmp_path / "fp16")
    assert bundle.manifest.precision == "fp16"
    predictor = Predictor(bundle)
    assert [node.type for node in predictor.session.get_inputs()] == ["tensor(float)"]
    assert [node.type for node in predictor.session.get_outputs()] == ["tensor(float)"]
    graph = onnx.load(str(bundle.onnx_path))
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.graph.initializer)
    frame = _frame(1)
    np.testing.assert_allclose(
        predictor.predict(frame), Predictor(load_bundle(fp32)).predict(frame), atol=MAX_PROB_DIFF["fp16"]
    )
    metrics = bundle.manifest.metrics["fp16"]
    assert metrics["max_abs_diff"] <= MAX_PROB_DIFF["fp16"] and metrics["fp32_ms_per_batch"] > 0
    assert "pixel_auroc_change" not in metrics  # no labeled set given


def test_an_auroc_drop_beyond_tolerance_is_refused() -> None:
    report = VariantReport(
        precision="int8",
        method="static",
        max_abs_diff=0.01,
        mean_abs_diff=0.001,
        fp32_ms_per_batch=2.0,
        variant_ms_per_batch=1.0,
        batch=8,
        threads=2,
        pixel_auroc_fp32=0.98,
        pixel_auroc_variant=0.98 - 2 * MAX_AUROC_DROP,
    )
    with pytest.raises(UserError, match=r"pixel AUROC drops by 0\.0200"):
        check_tolerance(report)
    check_tolerance(VariantReport(**{**report.__dict__, "pixel_auroc_variant": 0.98 - MAX_AUROC_DROP / 2}))


def test_a_failed_variant_writes_no_bundle(
    hybrid: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export as export_module

    # A copy stands in for the quantized graph: what is tested is that a bad measurement stops the export.
    monkeypatch.setattr(
        export_module, "quantize_int8", lambda source, target, tiles, method: shutil.copyfile(source, target)
    )
    monkeypatch.setattr(export_module, "probability_diffs", lambda reference, variant, tiles: (0.9, 0.2))
    result = runner.invoke(
        model_cli(), ["export", "--model", str(hybrid[0]), "--out", str(tmp_path / "b"), "--int8"]
    )
    assert result.exit_code == 2 and "int8 export failed" in result.output
    assert not (tmp_path / "b").exists()


def test_variant_flags_are_checked(hybrid: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, data, _ = hybrid
    both = runner.invoke(
        model_cli(), ["export", "--model", str(run), "--out", str(tmp_path / "b"), "--int8", "--fp16"]
    )
    assert both.exit_code == 2 and "choose one of --int8 and --fp16" in both.output
    eval_only = runner.invoke(
        model_cli(), ["export", "--model", str(run), "--out", str(tmp_path / "b"), "--eval-data", str(data)]
    )
    assert eval_only.exit_code == 2 and "add --int8 or --fp16" in eval_only.output


def test_float_only_chains_are_not_rounded_to_fp16_between_nodes(tmp_path: Path) -> None:
    """x → Sqrt → Mul(1e3) → Sub(const) → y, all float-only: the fp16 graph must compute it in float32."""
    from onnx import TensorProto, helper

    from training.export_variants import _cpu_session, convert_fp16

    nodes = [
        helper.make_node("Sqrt", ["image"], ["root"], name="/anomaly/Sqrt"),
        helper.make_node("Mul", ["root", "big"], ["scaled"], name="/anomaly/Mul"),
        helper.make_node("Sub", ["scaled", "offset"], ["prob"], name="/anomaly/Sub"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [4])],
        initializer=[
            helper.make_tensor("big", TensorProto.FLOAT, [], [1000.0]),
            helper.make_tensor("offset", TensorProto.FLOAT, [], [1000.0]),
        ],
    )
    fp32 = tmp_path / "chain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    convert_fp16(fp32, tmp_path / "chain16.onnx")
    x = np.array([1.0, 1.0001, 1.0003, 0.9999], np.float32)
    expected = np.sqrt(x) * 1000.0 - 1000.0  # a difference of nearly equal terms, as in a distance
    (actual,) = _cpu_session(tmp_path / "chain16.onnx").run(["prob"], {"image": x})
    np.testing.assert_allclose(actual, expected, atol=2e-3)

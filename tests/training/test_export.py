"""Export: a verified bundle whose graph agrees with PyTorch, dynamic in batch, fixed in tile size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from inspect_svc.bundle import load_bundle
from tests.synthetic_labeled import TINY_BACKBONE, TINY_FINETUNE_ARGS, model_cli, write_labeled_set
from training.export import PARITY_TOLERANCE, export_run
from training.runs import load_run

runner = CliRunner()


@pytest.fixture(scope="module")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
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
    return root / "run"


def test_export_writes_a_bundle_with_parity(hybrid_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        model_cli(), ["export", "--model", str(hybrid_run), "--out", str(tmp_path / "bundle")]
    )
    assert result.exit_code == 0, result.output
    bundle = load_bundle(tmp_path / "bundle")
    manifest = bundle.manifest
    assert manifest.kind == "hybrid" and manifest.input_size == 32 and manifest.tiling.overlap == 4
    assert manifest.thresholds.pixel == pytest.approx(load_run(hybrid_run).thresholds["pixel"])
    assert manifest.metrics["export_parity_max_abs_diff"] < PARITY_TOLERANCE
    assert len(manifest.data_fingerprint) == 64


def test_graph_has_dynamic_batch_opset_17_and_matches_torch(hybrid_run: Path, tmp_path: Path) -> None:
    bundle = export_run(hybrid_run, tmp_path / "bundle").bundle
    graph = onnx.load(str(bundle.onnx_path))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    model = load_run(hybrid_run).model
    for batch in (1, 5):
        tiles = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
        (prob,) = session.run(["prob"], {"image": tiles.numpy()})
        assert prob.shape == (batch, 1, 32, 32)
        with torch.no_grad():
            np.testing.assert_allclose(prob, model(tiles).numpy(), atol=PARITY_TOLERANCE)


@pytest.mark.parametrize(
    "options",
    [("--anomaly-context", "7"), ("--head-context", "3"), ("--anomaly-context", "0", "--head-context", "5")],
)
def test_texture_context_exports_with_parity(tmp_path: Path, options: tuple[str, ...]) -> None:
    """The context statistics of the bank rows and of the head (AveragePools, a Sqrt, a ReduceMean) export
    and agree with PyTorch like the rest."""
    data = write_labeled_set(tmp_path / "data")
    result = runner.invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            *options,
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    head_context = int(options[options.index("--head-context") + 1]) if "--head-context" in options else 11
    assert load_run(tmp_path / "run").model.segmentation.config["context"] == head_context
    bundle = export_run(tmp_path / "run", tmp_path / "bundle").bundle
    assert bundle.manifest.metrics["export_parity_max_abs_diff"] < PARITY_TOLERANCE
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    tiles = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    (prob,) = session.run(["prob"], {"image": tiles.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(
            prob, load_run(tmp_path / "run").model(tiles).numpy(), atol=PARITY_TOLERANCE
        )


def test_parity_failure_stops_the_export(
    hybrid_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.export as export_module

    monkeypatch.setattr(export_module, "parity_max_abs_diff", lambda run, path: 0.5)
    result = runner.invoke(
        model_cli(), ["export", "--model", str(hybrid_run), "--out", str(tmp_path / "bundle")]
    )
    assert result.exit_code == 2 and "parity failed" in result.output
    assert not (tmp_path / "bundle").exists()


def test_export_of_a_non_run_is_a_one_line_error(tmp_path: Path) -> None:
    result = runner.invoke(
        model_cli(), ["export", "--model", str(tmp_path), "--out", str(tmp_path / "bundle")]
    )
    assert result.exit_code == 2 and "not a model run" in result.output


def test_parity_check_cannot_pass_on_nan_or_wrong_shape(
    hybrid_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.export import parity_max_abs_diff

    run = load_run(hybrid_run)

    def torch_output(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return run.model(torch.from_numpy(feeds["image"])).numpy()

    answers = {
        "nan": lambda feeds: np.full_like(torch_output(feeds), np.nan),  # NaN must not vanish into max()
        "extra axis": lambda feeds: torch_output(feeds)[None],  # equal values, but broadcast: [1, N, 1, T, T]
    }
    for name, answer in answers.items():
        session = type(
            "FakeSession",
            (),
            {
                "__init__": lambda self, *a, **k: None,
                "run": lambda self, names, feeds, answer=answer: [answer(feeds)],
            },
        )
        monkeypatch.setattr(ort, "InferenceSession", session)
        diff = parity_max_abs_diff(run, tmp_path / "unused.onnx")
        assert not diff < PARITY_TOLERANCE, name

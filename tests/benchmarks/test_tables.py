"""`python -m benchmarks table FILE…`: markdown tables from saved result files, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmarks.cli import app
from tests.synthetic_labeled import one_line_set

runner = CliRunner()


def test_probe_files_make_one_table_with_a_row_each(tmp_path: Path) -> None:
    data = one_line_set(tmp_path / "set", size=32)
    written = []
    for seed in (0, 1):
        out = tmp_path / f"probe-{seed}"
        options = ["--image-size", "32", "--steps", "3", "--seed", str(seed), "--device", "cpu"]
        result = runner.invoke(
            app, ["probe", "--backbone", "random:test_vit", "--data", str(data), "--out", str(out), *options]
        )
        assert result.exit_code == 0, result.output
        written.append(json.loads((out / "probe.json").read_text()))
    result = runner.invoke(
        app, ["table", str(tmp_path / "probe-0" / "probe.json"), str(tmp_path / "probe-1" / "probe.json")]
    )
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| random:test_vit |")]
    assert len(rows) == 2 and result.output.count("# Frozen-feature dense probes") == 1
    for row, probe in zip(rows, written, strict=True):
        assert f"{probe['linear_pixel_auroc']:.4f} | {probe['linear_aupro']:.4f}" in row
        assert f"{probe['nn_pixel_auroc']:.4f} | {probe['nn_aupro']:.4f}" in row


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "does not exist"),
        ("{not json", "is not JSON"),
        ('{"rows": []}', "is not a result file this command knows"),
        ("[1, 2]", "is not a result file this command knows"),
    ],
)
def test_bad_result_files_are_one_line_errors(tmp_path: Path, content: str | None, words: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["table", str(path)])
    assert result.exit_code == 2 and words in result.output
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1

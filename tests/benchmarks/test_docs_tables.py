"""`python -m benchmarks docs-tables`: the docs' results tables come from committed result files."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from benchmarks.cli import app
from benchmarks.docs_tables import DEFAULT_DOCS, refresh
from benchmarks.scoring import METRIC_KEYS

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _results(path: Path, *, aupro_mean: float, aupro_worst: float) -> Path:
    metrics = dict.fromkeys(METRIC_KEYS, 0.5)
    row = {
        "regime": "0",
        "model": "hybrid",
        "mean": {**metrics, "aupro": aupro_mean},
        "worst": {**metrics, "aupro": aupro_worst},
        "per_surface": {},
    }
    record = {
        "config": {
            "backbone": "runs/pretrained",
            "fit_normal_options": {"discriminator_steps": 100},
            "finetune_options": {},
        },
        "data": {"split": "b"},
        "rows": [row, {**row, "model": "no-learning"}],
    }
    path.write_text(json.dumps(record))
    return path


def _doc(path: Path, style: str, files: str, body: str = "old table\n") -> Path:
    path.write_text(f"# Results\n\n<!-- results-table {style} {files} -->\n{body}<!-- /results-table -->\n")
    return path


def test_a_stale_table_is_named_by_check_and_rewritten_without_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _results(tmp_path / "zero.json", aupro_mean=0.634, aupro_worst=0.516)
    doc = _doc(tmp_path / "doc.md", "brief", "zero.json")

    checked = runner.invoke(app, ["docs-tables", "--check", str(doc)])
    assert checked.exit_code == 1 and "zero.json is stale" in checked.output
    assert "old table" in doc.read_text()

    assert runner.invoke(app, ["docs-tables", str(doc)]).exit_code == 0
    text = doc.read_text()
    assert (
        "old table" not in text
        and "| B | no labels | ours | `backbone=runs/pretrained`, `discriminator_steps=100` |" in text
    )
    assert "0.634 (0.516)" in text and "| B | no labels | no learning | — |" in text
    assert runner.invoke(app, ["docs-tables", "--check", str(doc)]).exit_code == 0


def test_the_full_style_shows_every_metric(tmp_path: Path) -> None:
    _results(tmp_path / "zero.json", aupro_mean=0.7, aupro_worst=0.6)
    doc = _doc(tmp_path / "doc.md", "full", "zero.json")
    refresh(doc, tmp_path, write=True)
    header = next(line for line in doc.read_text().splitlines() if line.startswith("| split"))
    assert header.count("|") == 4 + len(METRIC_KEYS) + 1


def test_bad_blocks_are_one_line_errors(tmp_path: Path) -> None:
    _results(tmp_path / "zero.json", aupro_mean=0.7, aupro_worst=0.6)
    cases = [
        (_doc(tmp_path / "style.md", "fancy", "zero.json"), "style must be one of"),
        (_doc(tmp_path / "missing.md", "brief", "nowhere.json"), "does not exist"),
        (tmp_path / "absent.md", "does not exist"),
    ]
    for doc, words in cases:
        result = runner.invoke(app, ["docs-tables", "--check", str(doc)])
        assert result.exit_code == 2 and words in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_the_repositorys_tables_match_their_result_files() -> None:
    stale = [block for doc in DEFAULT_DOCS for block in refresh(REPO / doc, REPO, write=False)]
    assert not stale, f"run `python -m benchmarks docs-tables`: stale tables {stale}"

"""Tiny inputs shared by the benches' smoke tests: a one-line labeled set and a hybrid run trained on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, TINY_FINETUNE_ARGS, model_cli, write_labeled_set


def one_line_set(root: Path, *, size: int = 48) -> Path:
    """The synthetic labeled set with its defect-free images on the defects' line (benches work per line)."""
    data = write_labeled_set(root, defective=4, normal=4, size=size)
    labels = json.loads((data / "defects.json").read_text())
    for image in (data / "images").iterdir():
        labels["samples"].setdefault(image.stem, {"line": "synthetic", "defects": []})
    (data / "defects.json").write_text(json.dumps(labels))
    return data


@pytest.fixture(scope="session")
def hybrid_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, labeled folder): a hybrid fine-tuned for a few steps on a tiny one-line set."""
    root = tmp_path_factory.mktemp("hybrid-run")
    data = one_line_set(root / "data")
    result = CliRunner().invoke(
        model_cli(),
        [
            "finetune",
            "--backbone",
            TINY_BACKBONE,
            "--data",
            str(data),
            "--out",
            str(root / "run"),
            "--quiet",
            *TINY_FINETUNE_ARGS,
        ],
    )
    assert result.exit_code == 0, result.output
    return root / "run", data

"""Shared by the benches' smoke tests: a hybrid run trained for a few steps on a tiny one-line labeled set."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.synthetic_labeled import TINY_BACKBONE, TINY_FINETUNE_ARGS, model_cli, one_line_set


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

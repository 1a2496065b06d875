"""The quality gates run with the suite: ruff lint and format, mypy --strict on the service, the import contracts.

Each tool reads its configuration from the repository (`pyproject.toml`, `.importlinter`), so these
tests and a developer running the tool by hand check the same thing.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The tools installed beside the interpreter that runs the suite (the project's virtualenv).
BIN = Path(sys.executable).parent


def run_tool(*command: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / command[0]
    if not tool.exists():
        pytest.fail(f"{command[0]} is not installed beside {sys.executable}: pip install -e '.[dev]'")
    # The checkout first on the path, so an installed copy of the package is never what gets checked.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [str(tool), *command[1:]], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"{result.args[0]} failed:\n{result.stdout[-8000:]}{result.stderr[-4000:]}"


def test_ruff_lint_is_clean() -> None:
    assert_clean(run_tool("ruff", "check", "inspect_svc", "training", "benchmarks", "tests", "alembic"))


def test_ruff_format_is_kept() -> None:
    """Every Python file is as `ruff format` writes it, so diffs show changes, not layout."""
    assert_clean(run_tool("ruff", "format", "--check", "."))


def test_import_contracts_are_kept() -> None:
    """Layering, no torch in the service, ORM rows only in storage, no cycles (`.importlinter`)."""
    result = run_tool("lint-imports")
    assert_clean(result)
    assert "BROKEN" not in result.stdout


def test_every_service_module_outside_storage_is_bound_by_the_sql_contract() -> None:
    """A new top-level module of the service must join `rows-stay-in-storage`, or it could read rows."""
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    listed = set(config["importlinter:contract:rows-stay-in-storage"]["source_modules"].split())
    package = REPO / "inspect_svc"
    modules = {path.stem for path in package.glob("*.py") if path.stem != "__init__"}
    modules |= {path.parent.name for path in package.glob("*/__init__.py")}
    expected = {f"inspect_svc.{name}" for name in modules - {"storage"}}
    assert listed == expected


@pytest.mark.slow
def test_service_is_clean_under_mypy_strict() -> None:
    """`mypy` with the `[tool.mypy]` settings: strict on `inspect_svc`, with the pydantic plugin."""
    assert_clean(run_tool("mypy"))

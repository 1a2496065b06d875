"""The service must run without the training stack: no torch, timm or training import, ever."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import inspect_svc

FORBIDDEN = {"torch", "timm", "torchvision", "training"}
SERVICE_ROOT = Path(inspect_svc.__file__).parent


def _imported_top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_service_module_imports_the_training_stack() -> None:
    offenders = {
        str(path.relative_to(SERVICE_ROOT)): sorted(_imported_top_level_names(path.read_text()) & FORBIDDEN)
        for path in SERVICE_ROOT.rglob("*.py")
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_the_app_loads_no_training_module() -> None:
    probe = (
        "import sys, inspect_svc.main, inspect_svc.cli\n"
        f"leaked = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""

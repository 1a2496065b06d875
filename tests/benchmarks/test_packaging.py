"""The product ships without its research: no benchmark, study, probe or baseline code in the wheel or
among the product's command-line verbs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import setuptools

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the project's floor is 3.10
    import tomli as tomllib

CHECKOUT = Path(__file__).resolve().parents[2]
RESEARCH_WORDS = ("benchmark", "bench", "study", "probe", "baseline")


def wheel_modules() -> list[str]:
    """Dotted names of every module the wheel gets, found with the project's own package configuration."""
    config = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]
    packages = setuptools.find_packages(
        where=str(CHECKOUT), include=config.get("include", ("*",)), exclude=config.get("exclude", ())
    )
    modules = []
    for package in packages:
        folder = CHECKOUT.joinpath(*package.split("."))
        modules += [f"{package}.{path.stem}" for path in folder.glob("*.py")]
    return modules


def test_the_wheel_holds_the_product_and_no_research() -> None:
    modules = wheel_modules()
    assert {"training.finetune", "training.cli.model", "inspect_svc.main"} <= set(modules)  # the finder works
    research = [name for name in modules if any(word in name.lower() for word in RESEARCH_WORDS)]
    assert research == []
    assert not any(name.startswith(("benchmarks", "tests")) for name in modules)


def test_the_product_never_imports_research_or_tests() -> None:
    """An installed wheel has no `benchmarks` or `tests`: a product import of either would fail there."""
    offenders = []
    for name in wheel_modules():
        path = CHECKOUT.joinpath(*name.split(".")).with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            imported = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            offenders += [
                f"{name}: {module}" for module in imported if module.split(".")[0] in ("benchmarks", "tests")
            ]
    assert offenders == []


def test_the_product_cli_has_no_research_verbs() -> None:
    from training.cli import app

    verbs = {command.name for command in app.registered_commands}
    assert {"pretrain", "finetune", "fit-normal", "evaluate", "export", "demo-data"} <= verbs
    assert not verbs & {"label-study", "probe"}


def test_the_benchmarks_entry_point_has_them() -> None:
    from benchmarks.cli import app

    verbs = {command.name for command in app.registered_commands}
    assert {"make-data", "run-regimes", "table", "label-study", "probe"} <= verbs

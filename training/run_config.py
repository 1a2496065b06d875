"""How a run's settings are declared once: defaults, help text and validation in one typed class.

Each training verb has one dataclass (`PretrainConfig`, `FinetuneConfig`, `FitNormalConfig`) whose
fields are declared with `setting(...)`: the default and the help text `--help` shows. The CLI
takes both from the class (`default_of`, `help_of`), validates by constructing it (each class
checks itself in `__post_init__`, raising `UserError` with the flag's name) and builds it with
`from_options`. Every run folder holds the resolved settings as `config.json` (`write_config`),
and `export` copies them into the bundle's `model.json`.

This module and the config modules import no torch: the CLI reads them to build `--help`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
HELP = "help"


def setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A config field with its help text (shown by `--help`, and kept beside the default it describes)."""
    return dataclasses.field(default=default, metadata={HELP: help}, **kwargs)


def _field(config_class: type, name: str) -> dataclasses.Field:
    try:
        return {f.name: f for f in dataclasses.fields(config_class)}[name]
    except KeyError:
        raise KeyError(f"{config_class.__name__} has no field {name!r}") from None


def help_of(config_class: type, name: str) -> str:
    """The help text declared with the field `name` of `config_class`."""
    return _field(config_class, name).metadata.get(HELP, "")


def default_of(config_class: type, name: str) -> Any:
    """The default of the field `name` (None for one computed per run, such as the worker count)."""
    field = _field(config_class, name)
    if field.default is dataclasses.MISSING:
        return None
    return field.default


def from_options(config_class: type, options: Mapping[str, Any], **overrides: Any) -> Any:
    """Build `config_class` from a verb's options: every option named like a field, then `overrides`.

    An option left at None for a field whose default is computed (a default factory) keeps that default.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config_class):
        if field.name not in options:
            continue
        value = options[field.name]
        if value is None and field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            continue
        values[field.name] = value
    values.update(overrides)
    return config_class(**values)


def config_json(config: Any) -> dict[str, Any]:
    """The config as plain JSON values (paths as text, tuples as lists), field by field."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_plain))


def write_config(config: Any, run_dir: Path) -> None:
    """Write the resolved settings of a run into `run_dir/config.json`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps(config_json(config), indent=2) + "\n")


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """The settings a run folder was made with, or None for runs saved before runs kept them."""
    path = Path(run_dir) / CONFIG_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

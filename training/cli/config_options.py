"""Options derived from a run config's fields, for commands that take a whole config rather than list its flags.

A verb such as `finetune` names each option and takes its default and help from the config class
(`training.run_config.default_of`, `help_of`). A command that embeds a config (a study that runs many
fine-tunings) instead derives the options from the fields themselves: `config_parameters` gives one
keyword parameter per field, with the field's type, default and help, so a new field gets its flag
without anyone writing it. `with_parameters` adds them to a command's signature (typer reads the
signature), and `config_values` takes the given values back as field names.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from training.run_config import default_of, help_of

Command = TypeVar("Command", bound=Callable[..., Any])


def config_parameters(
    config_class: type, names: Iterable[str], *, prefix: str = "", panel: str | None = None
) -> list[inspect.Parameter]:
    """A keyword parameter per field in `names`: `--name` (or `--prefix-name`), the field's type, default and help.

    A field whose default is None (computed when the config is built) shows no default in `--help`;
    `panel` groups the options under that title there.
    """
    types = typing.get_type_hints(config_class)
    parameters = []
    for name in names:
        default = default_of(config_class, name)
        option = typer.Option(
            help=help_of(config_class, name), show_default=default is not None, rich_help_panel=panel
        )
        parameters.append(
            inspect.Parameter(
                _parameter_name(name, prefix),
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=Annotated[types[name], option],
            )
        )
    return parameters


def config_values(config_class: type, given: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """The values in `given` of the parameters `config_parameters` made for `config_class`, by field name."""
    values = {}
    for field in dataclasses.fields(config_class):
        parameter = _parameter_name(field.name, prefix)
        if parameter in given:
            values[field.name] = given[parameter]
    return values


def with_parameters(command: Command, parameters: list[inspect.Parameter]) -> Command:
    """`command` with `parameters` in place of its `**options`, which receives their values when it runs."""
    own = [
        parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for parameter in inspect.signature(command, eval_str=True).parameters.values()
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    command.__signature__ = inspect.Signature([*own, *parameters])  # type: ignore[attr-defined]
    return command


def _parameter_name(field: str, prefix: str) -> str:
    return f"{prefix}_{field}" if prefix else field

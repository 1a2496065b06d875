"""`--json PATH` for the benches: the rows a bench prints, and the settings it ran with, as one JSON file.

Every accuracy bench adds the option with `add_json_option` and ends with `write_results`, so each
file has the same shape: `{"bench": module, "settings": {option: value}, "rows": [{...}], ...}` (a
bench may add a few named facts it prints above its table). Values that JSON has no word for are
written plainly: paths as text, NaN as null.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

JSON_OPTION = "json"


def add_json_option(parser: argparse.ArgumentParser, *aliases: str) -> None:
    """`--json PATH` (and `aliases`, older spellings of it): where the bench writes its results."""
    parser.add_argument(
        "--json",
        *aliases,
        dest=JSON_OPTION,
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the printed rows and the settings as JSON to PATH",
    )


def write_results(
    args: argparse.Namespace, bench: str, rows: list[dict[str, Any]], **facts: Any
) -> Path | None:
    """Write `rows` with the bench's settings (its parsed options) to `--json`; None when it was not given."""
    path: Path | None = getattr(args, JSON_OPTION)
    if path is None:
        return None
    settings = {name: value for name, value in vars(args).items() if name != JSON_OPTION}
    record = {"bench": bench, "settings": settings, **facts, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(record), indent=1, allow_nan=False) + "\n")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _plain(value.item())
    return value

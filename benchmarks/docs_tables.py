"""Results tables inside the docs, regenerated from committed result files instead of typed by hand.

A block in a markdown file names the `run-regimes` result files it shows:

    <!-- results-table brief docs/results/split-b/zero-label.json docs/results/split-b/five-labels.json -->
    (generated rows)
    <!-- /results-table -->

`python -m benchmarks docs-tables` rewrites every such block from its files; `--check` only says
which blocks are stale (the suite runs it, so a table cannot drift from its results). The style
`full` shows every metric of `benchmarks.scoring.METRIC_KEYS`, `brief` the ranking and both verdicts a
reader of the README needs. Each row is one (file, regime, model): mean over surfaces, worst surface in brackets.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import METRIC_HEADERS
from benchmarks.scoring import METRIC_KEYS
from training.errors import UserError

DEFAULT_DOCS = (Path("README.md"), Path("docs/BENCHMARKS.md"))
STYLES = {
    "full": METRIC_KEYS,
    "brief": (
        "pixel_auroc",
        "aupro",
        "image_auroc",
        "verdict_recall",
        "false_alarm_rate",
        "line_verdict_recall",
        "line_false_alarm_rate",
    ),
}
_REGIMES = {
    "0": "no labels",
    "1": "1 label per surface",
    "5": "5 labels per surface",
    "20": "20 labels per surface",
    "held-out-types": "types never labeled",
}
_MODELS = {"hybrid": "ours", "unet": "U-Net from scratch", "no-learning": "no learning"}
_BLOCK = re.compile(
    r"(?P<open><!-- results-table (?P<style>\w+) (?P<files>[^>]*?) -->\n)(?P<body>.*?)(?P<close><!-- /results-table -->)",
    re.DOTALL,
)


@dataclass(frozen=True)
class StaleBlock:
    """A block whose text differs from what its result files give."""

    doc: Path
    line: int
    files: tuple[str, ...]


def render_block(style: str, files: Sequence[Path]) -> str:
    """The markdown table of `files` (run-regimes results.json) in `style`."""
    if style not in STYLES:
        raise UserError(f"results-table style must be one of {', '.join(STYLES)}, not {style!r}")
    keys = STYLES[style]
    lines = [
        "| split | regime | model | settings | " + " | ".join(METRIC_HEADERS[k] for k in keys) + " |",
        "|---|---|---|---|" + "---|" * len(keys),
    ]
    for path in files:
        results = _read_results(path)
        split = results["data"]["split"].upper()
        for row in results["rows"]:
            cells = [f"{_fmt(row['mean'].get(k))} ({_fmt(row['worst'].get(k))})" for k in keys]
            lines.append(
                f"| {split} | {_REGIMES.get(row['regime'], row['regime'])} | "
                f"{_MODELS.get(row['model'], row['model'])} | {_settings(results, row)} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines) + "\n"


def refresh(doc: Path, root: Path, *, write: bool) -> list[StaleBlock]:
    """Regenerate every block of `doc` (paths relative to `root`); returns the stale ones, rewritten if `write`."""
    if not doc.is_file():
        raise UserError(f"{doc} does not exist")
    text = doc.read_text()
    stale: list[StaleBlock] = []

    def replace(match: re.Match[str]) -> str:
        names = tuple(match["files"].split())
        if not names:
            raise UserError(f"{doc}: a results-table block names no result file")
        body = render_block(match["style"], [root / name for name in names])
        if body != match["body"]:
            stale.append(StaleBlock(doc, text.count("\n", 0, match.start()) + 1, names))
        return match["open"] + body + match["close"]

    updated = _BLOCK.sub(replace, text)
    if write and updated != text:
        doc.write_text(updated)
    return stale


def _settings(results: dict, row: dict) -> str:
    """What a row changed from the product's defaults (the options given to its verb), or "defaults"."""
    if row["model"] != "hybrid":
        return "—"
    config = results["config"]
    options = dict(config.get("fit_normal_options" if row["regime"] == "0" else "finetune_options") or {})
    backbone = str(config.get("backbone", "random:"))
    if not backbone.startswith("random:"):  # a pretrained backbone is a setting too
        options["backbone"] = backbone
    if not options:
        return "defaults"
    return ", ".join(f"`{key}={value}`" for key, value in sorted(options.items()))


def _read_results(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} does not exist (named by a results-table block)")
    try:
        results = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path} is not JSON: {error}") from None
    if not isinstance(results, dict) or not {"config", "data", "rows"} <= results.keys():
        raise UserError(f"{path} is not a run-regimes results.json")
    return results


def _fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

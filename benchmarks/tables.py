"""Markdown tables from saved result files, so no results table is ever typed by hand.

`python -m benchmarks table FILE…` reads each file, recognises what wrote it by its keys, and prints
that writer's own tables: `results.json` of `run-regimes`, `study.json` and `summary.json` of
`label-study`, `probe.json` of `probe` (several probe files make one table, a row per backbone).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from training.errors import UserError

KNOWN_FILES = "results.json (run-regimes), study.json, summary.json (label-study), probe.json (probe)"

_PROBE_KEYS = ("linear_pixel_auroc", "linear_aupro", "nn_pixel_auroc", "nn_aupro")


def render_files(paths: Sequence[Path]) -> str:
    """The tables of every file, in the order given; probe files are gathered into one table."""
    if not paths:
        raise UserError(f"name at least one result file: {KNOWN_FILES}")
    records = [(path, _read(path)) for path in paths]
    probes = [record for _, record in records if _is_probe(record)]
    parts: list[str] = []
    for path, record in records:
        if _is_probe(record):
            if record is probes[0]:
                parts.append(render_probe_table(probes))
            continue
        parts.append(_renderer(path, record)(record))
    return "\n".join(parts)


def render_probe_table(results: Sequence[dict]) -> str:
    """One row per probe result: linear and nearest-neighbour pixel AUROC and AUPRO."""
    lines = [
        "# Frozen-feature dense probes",
        "",
        "| backbone | linear pixel AUROC | linear AUPRO | NN pixel AUROC | NN AUPRO | train / test images |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        cells = " | ".join(f"{result[key]:.4f}" for key in _PROBE_KEYS)
        lines.append(
            f"| {result['backbone']} | {cells} | {result['train_images']} / {result['test_images']} |"
        )
    return "\n".join(lines) + "\n"


def _renderer(path: Path, record: dict) -> Callable[[dict], str]:
    if "seeds" in record and "splits" in record and "rows" in record:
        from benchmarks.study_summary import render_summary_markdown

        return render_summary_markdown
    if "split" in record and "rows" in record:
        from benchmarks.study_report import render_markdown as render_study

        return render_study
    if "data" in record and "rows" in record:
        from benchmarks.report import render_markdown as render_regimes

        return render_regimes
    raise UserError(f"{path} is not a result file this command knows: {KNOWN_FILES}")


def _is_probe(record: dict) -> bool:
    return all(key in record for key in (*_PROBE_KEYS, "backbone"))


def _read(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not JSON: {error}") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} is not a result file this command knows: {KNOWN_FILES}")
    return record

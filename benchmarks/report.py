"""The markdown tables of a benchmark run, generated from its results.json (never written by hand)."""

from __future__ import annotations

import math

from benchmarks.scoring import METRIC_KEYS

# Column titles of the metrics, shared by every table made from run-regimes results.
METRIC_HEADERS = {
    "pixel_auroc": "pixel AUROC",
    "aupro": "AUPRO@0.3",
    "pixel_ap": "pixel AP",
    "image_auroc": "image AUROC",
    "verdict_precision": "verdict precision",
    "verdict_recall": "verdict recall",
    "false_alarm_rate": "false alarms",
    "line_verdict_precision": "precision, line threshold",
    "line_verdict_recall": "recall, line threshold",
    "line_false_alarm_rate": "false alarms, line threshold",
}
_REGIME_TITLES = {
    "0": "no labels (fit-normal)",
    "1": "1 labeled defect image per surface",
    "5": "5 labeled defect images per surface",
    "20": "20 labeled defect images per surface",
    "held-out-types": "defect types never labeled (5 labels per surface of the other types)",
}


def render_markdown(results: dict) -> str:
    """Summary table (mean over surfaces, worst surface in brackets), then per-surface tables."""
    config, data = results["config"], results["data"]
    lines = [
        f"# Benchmark split {data['split'].upper()}: {len(data['surfaces'])} surfaces, physical defects",
        "",
        (
            f"Backbone `{config['backbone']}`, {config['steps']} steps, {config['image_size']} px tiles, batch "
            f"{config['batch_size']}, seed {config['seed']}; held-out types: {', '.join(data['held_out_types'])}."
        ),
        (
            "Verdicts at the stored image threshold, then at each surface's own threshold set on its calibration "
            "images (a line's calibration, at most 1 % of them flagged); false alarms = share of defect-free "
            "test images flagged."
        ),
        "",
        "Mean over surfaces (worst surface in brackets):",
        "",
        "| regime | model | " + " | ".join(METRIC_HEADERS[k] for k in METRIC_KEYS) + " |",
        "|---|---|" + "---|" * len(METRIC_KEYS),
    ]
    for row in results["rows"]:
        cells = [f"{_fmt(row['mean'].get(k))} ({_fmt(row['worst'].get(k))})" for k in METRIC_KEYS]
        lines.append(
            f"| {_REGIME_TITLES.get(row['regime'], row['regime'])} | {row['model']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Per surface (pixel AUROC / AUPRO / pixel AP / image AUROC / verdict recall):", ""]
    surfaces = sorted({s for row in results["rows"] for s in row["per_surface"]})
    lines += ["| regime | model | " + " | ".join(surfaces) + " |", "|---|---|" + "---|" * len(surfaces)]
    for row in results["rows"]:
        cells = []
        for surface in surfaces:
            m = row["per_surface"].get(surface)
            keys = ("pixel_auroc", "aupro", "pixel_ap", "image_auroc", "verdict_recall")
            cells.append("/".join(_fmt(m[k]) for k in keys) if m else "—")
        lines.append(f"| {row['regime']} | {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

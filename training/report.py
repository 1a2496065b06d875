"""A report a person looks at: overlays of the worst misses and false alarms, and an HTML page.

Each overlay is three panels side by side: the image, the image with the ground truth outlined in
green and the thresholded prediction in red, and the probability map as a heat map.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPORT_FILE = "report.html"


@dataclass(frozen=True)
class Case:
    """One evaluated image, kept for the report."""

    stem: str
    image: np.ndarray
    mask: np.ndarray
    prob: np.ndarray


def overlay_panels(case: Case, threshold: float) -> np.ndarray:
    """uint8 RGB [H, 3W, 3]: image | truth (green outline) + prediction (red fill) | heat map."""
    image = case.image
    marked = image.copy()
    predicted = case.prob >= threshold
    marked[predicted] = (0.5 * marked[predicted] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(case.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(marked, contours, -1, (0, 255, 0), 1)
    heat = cv2.applyColorMap((np.clip(case.prob, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return np.concatenate([image, marked, heat], axis=1)


def worst_cases(cases: list[Case], threshold: float, count: int) -> tuple[list[Case], list[Case]]:
    """(misses, false alarms): defective images with the lowest recall, then the highest-scoring normal pixels."""
    defective = [c for c in cases if c.mask.any()]
    misses = sorted(defective, key=lambda c: float(np.mean(c.prob[c.mask] >= threshold)))[:count]
    alarms = sorted(cases, key=lambda c: -float(np.max(np.where(c.mask, 0.0, c.prob))))
    alarms = [c for c in alarms if np.any((c.prob >= threshold) & ~c.mask.astype(bool))][:count]
    return misses, alarms


LINE_COLUMNS = (("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO"), ("pixel_ap", "pixel AP"),
                ("verdict_recall", "verdict recall"), ("verdict_precision", "verdict precision"),
                ("false_alarm_rate", "false-alarm rate"))


def line_table(per_line: dict[str, dict], breakdown: dict[str, dict]) -> list[str]:
    """HTML rows of the per-line metrics, the mean over lines, and each metric's worst line in bold."""
    worst = {metric: entry["line"] for metric, entry in breakdown.get("worst", {}).items()}
    header = "".join(f"<th>{html.escape(title)}</th>" for _, title in LINE_COLUMNS)
    rows = ["<h2>Per line</h2><p>The worst line of each metric is in bold.</p><table border=1 cellpadding=4>",
            f"<tr><th>line</th>{header}</tr>"]
    for line, metrics in per_line.items():
        cells = "".join(
            f"<td>{'<b>' if worst.get(m) == line else ''}{_fmt(metrics.get(m))}{'</b>' if worst.get(m) == line else ''}</td>"
            for m, _ in LINE_COLUMNS
        )
        rows.append(f"<tr><th>{html.escape(line)}</th>{cells}</tr>")
    mean = breakdown.get("mean", {})
    rows.append("<tr><th>mean</th>" + "".join(f"<td>{_fmt(mean.get(m))}</td>" for m, _ in LINE_COLUMNS) + "</tr>")
    return [*rows, "</table>"]


def write_report(
    out: Path, cases: list[Case], metrics: dict, threshold: float, *, count: int = 8,
    per_line: dict[str, dict] | None = None, lines: dict[str, dict] | None = None,
) -> Path:
    """Write overlay PNGs and `report.html` into `out`; returns the HTML path.

    With `per_line` and `lines` (`training.evaluate.metrics_by_group`), a table per line is added.
    """
    misses, alarms = worst_cases(cases, threshold, count)
    sections = [("Worst misses", "miss", misses), ("Worst false alarms", "alarm", alarms)]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Evaluation report</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%;image-rendering:pixelated}</style>",
        "<h1>Evaluation report</h1>",
        f"<p>Pixel threshold {threshold:.4f}. Panels: image | truth (green) and prediction (red) | probability.</p>",
        "<h2>Metrics</h2><table border=1 cellpadding=4>",
        *(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in metrics.items() if not isinstance(v, dict)),
        "</table>",
        *(line_table(per_line, lines or {}) if per_line else []),
    ]
    for title, prefix, chosen in sections:
        parts.append(f"<h2>{title}</h2>" if chosen else f"<h2>{title}</h2><p>none</p>")
        for index, case in enumerate(chosen):
            name = f"{prefix}_{index:02d}.png"
            cv2.imwrite(str(out / name), overlay_panels(case, threshold)[:, :, ::-1])
            parts.append(f"<h3>{html.escape(case.stem)}</h3><img src='{name}' alt='{html.escape(case.stem)}'>")
    path = out / REPORT_FILE
    path.write_text("\n".join(parts) + "\n")
    return path


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))

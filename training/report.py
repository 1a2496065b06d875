"""A report a person looks at: metrics per defect type, overlays of the worst misses and false alarms.

Each overlay is three panels side by side: the image, the image with the ground truth outlined in
green and the thresholded prediction in red, and the probability map as a heat map (its colour scale
is drawn once, under the metrics).

A *false alarm* is a predicted region (pixels at or above the pixel threshold, 8-connected) that
touches no true defect pixel: a defect-free image flagged anywhere, or a stray region on a defective
image away from its defect. A prediction that overlaps a defect and spills past its outline is a
detection, not a false alarm.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from training.metrics import image_scores

REPORT_FILE = "report.html"
SCALE_FILE = "scale.png"
COLOUR_MAP = cv2.COLORMAP_JET
# Columns of the per-defect-type table: (heading, key in a metrics group, key inside it or None).
TYPE_COLUMNS = (
    ("defective images", "defective_images", None),
    ("pixel AUROC", "pixel_auroc", None),
    ("AUPRO", "aupro", None),
    ("image AUROC", "image_auroc", None),
    ("F1", "f1", None),
    ("IoU", "iou", None),
    ("pixel recall", "at_threshold", "recall"),
    ("pixel precision", "at_threshold", "precision"),
)


@dataclass(frozen=True)
class Case:
    """One evaluated image, kept for the report."""

    stem: str
    image: np.ndarray
    mask: np.ndarray
    prob: np.ndarray
    defect_types: tuple[str, ...] = ()

    @property
    def defective(self) -> bool:
        return bool(self.mask.any())

    @property
    def score(self) -> float:
        """The image-level score the metrics use."""
        return float(image_scores([self.prob])[0])

    def label(self) -> str:
        """The defect types, for a heading ("defect" when the labels name none)."""
        if not self.defective:
            return "defect-free"
        return ", ".join(self.defect_types) or "defect"


def heat_colours(prob: np.ndarray) -> np.ndarray:
    """uint8 RGB heat map of probabilities in [0, 1] (the colours of the report's scale)."""
    return cv2.applyColorMap((np.clip(prob, 0, 1) * 255).astype(np.uint8), COLOUR_MAP)[..., ::-1]


def overlay_panels(case: Case, threshold: float) -> np.ndarray:
    """uint8 RGB [H, 3W, 3]: image | truth (green outline) + prediction (red fill) | heat map."""
    image = case.image
    marked = image.copy()
    predicted = case.prob >= threshold
    marked[predicted] = (0.5 * marked[predicted] + 0.5 * np.array([255, 0, 0])).astype(np.uint8)
    contours, _ = cv2.findContours(case.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(marked, contours, -1, (0, 255, 0), 1)
    return np.concatenate([image, marked, heat_colours(case.prob)], axis=1)


def stray_region_scores(case: Case, threshold: float) -> list[float]:
    """Peak probability of each predicted region that touches no true defect pixel (the false alarms)."""
    predicted = (case.prob >= threshold).astype(np.uint8)
    count, labels = cv2.connectedComponents(predicted, connectivity=8)
    truth = case.mask.astype(bool)
    scores = []
    for region in range(1, count):
        pixels = labels == region
        if not truth[pixels].any():
            scores.append(float(case.prob[pixels].max()))
    return scores


def recall(case: Case, threshold: float) -> float:
    """Share of the true defect pixels predicted."""
    return float(np.mean(case.prob[case.mask.astype(bool)] >= threshold))


def worst_cases(cases: list[Case], threshold: float, count: int) -> tuple[list[Case], list[Case]]:
    """(misses, false alarms): defective images with the lowest pixel recall, then the images with the
    highest-scoring false-alarm region (see the module docstring)."""
    misses = sorted((c for c in cases if c.defective), key=lambda c: recall(c, threshold))[:count]
    strays = {c.stem: stray_region_scores(c, threshold) for c in cases}
    alarms = sorted((c for c in cases if strays[c.stem]), key=lambda c: -max(strays[c.stem]))[:count]
    return misses, alarms


LINE_COLUMNS = (
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AUPRO"),
    ("pixel_ap", "pixel AP"),
    ("verdict_recall", "verdict recall"),
    ("verdict_precision", "verdict precision"),
    ("false_alarm_rate", "false-alarm rate"),
)


def line_table(per_line: dict[str, dict], breakdown: dict[str, dict]) -> list[str]:
    """HTML rows of the per-line metrics, the mean over lines, and each metric's worst line in bold."""
    worst = {metric: entry["line"] for metric, entry in breakdown.get("worst", {}).items()}
    header = "".join(f"<th>{html.escape(title)}</th>" for _, title in LINE_COLUMNS)
    rows = [
        "<h2>Per line</h2><p>The worst line of each metric is in bold.</p><table border=1 cellpadding=4>",
        f"<tr><th>line</th>{header}</tr>",
    ]
    for line, metrics in per_line.items():
        cells = "".join(
            f"<td>{'<b>' if worst.get(m) == line else ''}{_fmt(metrics.get(m))}{'</b>' if worst.get(m) == line else ''}</td>"
            for m, _ in LINE_COLUMNS
        )
        rows.append(f"<tr><th>{html.escape(line)}</th>{cells}</tr>")
    mean = breakdown.get("mean", {})
    rows.append(
        "<tr><th>mean</th>" + "".join(f"<td>{_fmt(mean.get(m))}</td>" for m, _ in LINE_COLUMNS) + "</tr>"
    )
    return [*rows, "</table>"]


def write_report(out: Path, cases: list[Case], metrics: dict, threshold: float, *, count: int = 8) -> Path:
    """Write overlay PNGs, the colour scale and `report.html` into `out`; returns the HTML path.

    `metrics` is what `evaluate` writes to metrics.json: `overall`, `per_defect_type`, `thin_defects`,
    and with `per_line` and `lines` (`training.evaluate.metrics_by_group`) a table per line.
    """
    misses, alarms = worst_cases(cases, threshold, count)
    cv2.imwrite(str(out / SCALE_FILE), heat_colours(np.tile(np.linspace(0, 1, 256), (12, 1)))[..., ::-1])
    overall = metrics.get("overall", metrics)
    parts = [
        "<!doctype html><meta charset='utf-8'><title>Evaluation report</title>",
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%;image-rendering:pixelated}"
        "td,th{text-align:right;padding:2px 8px}th:first-child{text-align:left}"
        ".scale{width:256px}.scale img{width:256px;height:12px;display:block}"
        ".ticks{display:flex;justify-content:space-between;font-size:small}</style>",
        "<h1>Evaluation report</h1>",
        f"<p>Pixel threshold {threshold:.4f}. Panels: image | truth (green outline) and prediction at the "
        "threshold (red) | probability of a defect:</p>",
        f"<div class=scale><img src='{SCALE_FILE}' alt='colour scale from 0 (blue) to 1 (red)'>"
        "<div class=ticks><span>0</span><span>0.25</span><span>0.5</span><span>0.75</span><span>1</span></div></div>",
        "<h2>Metrics</h2><table border=1>",
        *(
            f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
            for k, v in overall.items()
            if not isinstance(v, dict)
        ),
        "</table>",
        *_type_table(metrics),
        *(line_table(metrics["per_line"], metrics.get("lines") or {}) if metrics.get("per_line") else []),
    ]
    sections = [
        ("Worst misses", "Defective images with the lowest share of defect pixels found", "miss", misses),
        (
            "Worst false alarms",
            "Predicted regions touching no true defect: a defect-free image flagged, or a "
            "stray region beside a defect",
            "alarm",
            alarms,
        ),
    ]
    for title, meaning, prefix, chosen in sections:
        parts.append(f"<h2>{title}</h2><p>{meaning}{'' if chosen else ': none'}.</p>")
        for index, case in enumerate(chosen):
            name = f"{prefix}_{index:02d}.png"
            cv2.imwrite(str(out / name), overlay_panels(case, threshold)[:, :, ::-1])
            parts.append(
                f"<h3>{html.escape(_heading(case, prefix, threshold))}</h3>"
                f"<img src='{name}' alt='{html.escape(case.stem)}'>"
            )
    path = out / REPORT_FILE
    path.write_text("\n".join(parts) + "\n")
    return path


def _type_table(metrics: dict) -> list[str]:
    groups = [("all images", metrics.get("overall"))]
    groups += [(name, group) for name, group in sorted(metrics.get("per_defect_type", {}).items())]
    if "thin_defects" in metrics:
        groups.append(("thin defects (scratch, crack)", metrics["thin_defects"]))
    groups = [(name, group) for name, group in groups if isinstance(group, dict)]
    if len(groups) < 2:
        return []
    head = "".join(f"<th>{html.escape(title)}</th>" for title, _, _ in TYPE_COLUMNS)
    rows = []
    for name, group in groups:
        cells = "".join(f"<td>{_fmt(_cell(group, key, sub))}</td>" for _, key, sub in TYPE_COLUMNS)
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return [
        "<h2>Per defect type</h2><p>Each type's images together with every defect-free image.</p>",
        f"<table border=1><tr><th>defect type</th>{head}</tr>",
        *rows,
        "</table>",
    ]


def _cell(group: dict, key: str, sub: str | None) -> object:
    value = group.get(key)
    return value.get(sub) if sub is not None and isinstance(value, dict) else value


def _heading(case: Case, prefix: str, threshold: float) -> str:
    if prefix == "miss":
        return f"{case.stem} · {case.label()} · image score {case.score:.3f} · {recall(case, threshold):.0%} of defect pixels found"
    peak = max(stray_region_scores(case, threshold))
    kind = (
        "defect-free image flagged"
        if not case.defective
        else f"{case.label()} · stray region away from the defect"
    )
    return f"{case.stem} · {kind} · image score {case.score:.3f} · false-alarm peak {peak:.3f}"


def _fmt(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "—" if np.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))

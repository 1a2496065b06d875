"""The label-efficiency study repeated over several seeds: mean, spread and worst case of every row.

One seed draws one test split, one pick of labeled images and one training run. On a few dozen test
images a single defect can move pixel AUROC by 0.01 and another split by 0.05, so a claim such as
"reaches 0.97" needs the study over several seeds, and the spread says how far one run can fall.

Everything here reads the per-seed study records (`study.json`, as `benchmarks.study.run_study`
writes them), so a summary can be re-rendered from saved studies alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from benchmarks.study_report import MODEL_ORDER, row_name, run_settings, write_files
from training.evaluate import THIN_DEFECT_TYPES

SUMMARY_JSON = "summary.json"
SUMMARY_MARKDOWN = "summary.md"
HEADLINE_METRICS = ("pixel_auroc", "aupro", "image_auroc")
# Reported beside them when every seed has them (studies before them did not): what AUROC hides.
DECISION_METRICS = ("pixel_ap", "verdict_recall", "verdict_precision", "false_alarm_rate")
EVAL_NAMES = {"test": "all defect types", "held-out-types": "held-out types"}


def seed_folder(out: Path, seed: int) -> Path:
    """Where the study of one seed lives inside a multi-seed study folder."""
    return out / f"seed-{seed}"


def _row_key(row: dict) -> tuple:
    return (row["model"], row["backbone"], row["labels_per_line"], row["trained_on"], row["evaluated_on"])


def _statistics(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), minimum and maximum of `values`.

    A NaN (e.g. a verdict precision when no part was called defective) is kept in `values` and left
    out of the rest; with nothing else left they are None.
    """
    numbers = [v for v in values if not math.isnan(v)]
    if not numbers:
        return {"values": values, "mean": None, "std": None, "min": None, "max": None}
    mean = sum(numbers) / len(numbers)
    std = math.sqrt(sum((v - mean) ** 2 for v in numbers) / (len(numbers) - 1)) if len(numbers) > 1 else None
    return {"values": values, "mean": mean, "std": std, "min": min(numbers), "max": max(numbers)}


def _group_statistics(metrics_per_seed: list[dict]) -> dict:
    """Statistics of the headline metrics of one metrics group (overall, thin defects, one defect type),
    and of the decision metrics when every seed reports them."""
    names = HEADLINE_METRICS + tuple(n for n in DECISION_METRICS if all(n in m for m in metrics_per_seed))
    return {name: _statistics([float(m[name]) for m in metrics_per_seed]) for name in names}


def summarize_seeds(studies: Mapping[int, dict]) -> dict:
    """Aggregate the rows that several seeds' studies share.

    Args:
        studies: Study records by seed.

    Returns:
        `{"seeds", "config", "splits", "rows"}`: each row names its model, backbone, labels budget,
        training and test sets, the seeds it was measured on, and per metric (overall, thin defects,
        per defect type) the per-seed values, mean, sample standard deviation and minimum.
    """
    seeds = sorted(studies)
    by_key: dict[tuple, dict[int, dict]] = {}
    for seed in seeds:
        for row in studies[seed]["rows"]:
            by_key.setdefault(_row_key(row), {})[seed] = row["metrics"]
    rows = []
    for key, per_seed in by_key.items():
        model, backbone, labels, trained_on, evaluated_on = key
        metrics = list(per_seed.values())
        row = {
            "model": model,
            "backbone": backbone,
            "labels_per_line": labels,
            "trained_on": trained_on,
            "evaluated_on": evaluated_on,
            "seeds": list(per_seed),
            "overall": _group_statistics(metrics),
            "per_defect_type": _per_type_statistics(metrics),
        }
        if all("thin_defects" in m for m in metrics):
            row["thin_defects"] = _group_statistics([m["thin_defects"] for m in metrics])
        if all("lines" in m for m in metrics):
            row["worst_line"] = _worst_lines([m["lines"]["worst"] for m in metrics])
        rows.append(row)
    first = studies[seeds[0]]
    config = _without_seed(first["config"])
    splits = {
        str(seed): {
            "test_images": len(s["split"]["test_images"]),
            "test_defective": s["split"]["test_defective"],
            "held_out_test_images": s["split"]["held_out_test_images"],
        }
        for seed, s in studies.items()
    }
    return {"seeds": seeds, "config": config, "splits": splits, "rows": rows}


def _without_seed(config: dict) -> dict:
    """A seed's study settings less what differs between seeds (its seed, its folder), run templates too."""
    kept = {k: v for k, v in config.items() if k not in ("seed", "out")}
    for run in ("finetune", "fit_normal"):  # older records have none
        if run in kept:
            kept[run] = {k: v for k, v in kept[run].items() if k != "seed"}
    return kept


WORST_LINE_METRICS = ("pixel_auroc", "aupro", "verdict_recall", "false_alarm_rate")


def _worst_lines(worst_per_seed: list[dict]) -> dict:
    """Per metric, each seed's worst line and its value (`training.metrics.line_breakdown`)."""
    return {
        name: {
            "lines": [w[name]["line"] for w in worst_per_seed],
            "values": [w[name]["value"] for w in worst_per_seed],
        }
        for name in WORST_LINE_METRICS
        if all(name in w for w in worst_per_seed)
    }


def _per_type_statistics(metrics_per_seed: list[dict]) -> dict:
    """Per defect type, over the seeds whose test split holds that type."""
    names = sorted({t for m in metrics_per_seed for t in m["per_defect_type"]})
    return {
        name: _group_statistics(
            [m["per_defect_type"][name] for m in metrics_per_seed if name in m["per_defect_type"]]
        )
        for name in names
    }


def write_summary(summary: dict, out: Path) -> None:
    """`summary.json` and `summary.md`, written atomically."""
    write_files(
        out,
        {
            SUMMARY_JSON: json.dumps(summary, indent=1) + "\n",
            SUMMARY_MARKDOWN: render_summary_markdown(summary),
        },
    )


# --- Markdown ----------------------------------------------------------------------------------------


def render_summary_markdown(summary: dict) -> str:
    """Mean ± spread tables (all types, held-out types, thin defects), per defect type, and per seed."""
    seeds, splits, rows = summary["seeds"], summary["splits"], _ordered(summary["rows"])
    settings = run_settings(summary["config"])
    sizes = ", ".join(
        f"{splits[str(s)]['test_images']} ({splits[str(s)]['test_defective']} defective)" for s in seeds
    )
    setup = (
        f"Seeds {', '.join(map(str, seeds))}: each draws its own test split, labeled images and training "
        f"randomness. Test images per seed: {sizes}. {settings['steps']} steps, "
        f"{settings['image_size']} px tiles; the study of each seed is in `seed-N/study.md`."
    )
    lines = [
        f"# Label-efficiency study over {len(seeds)} seeds",
        "",
        setup,
        "Cells: mean ± sample standard deviation over the seeds, and the worst seed in brackets.",
        "",
        *_mean_table("Mean over seeds", rows, "overall"),
    ]
    thin = [r for r in rows if "thin_defects" in r and r["evaluated_on"] == "test"]
    if thin:
        title = f"Thin defects ({', '.join(sorted(THIN_DEFECT_TYPES))}, with the defect-free test images)"
        lines += ["", *_mean_table(title, thin, "thin_defects", tested_on="thin defects")]
    per_type = _per_type_table([r for r in rows if r["evaluated_on"] == "test"])
    if per_type:  # a summary of held-out-type rows alone has no all-types row to break down
        lines += ["", *per_type]
    worst = [r for r in rows if r.get("worst_line")]
    if worst:
        lines += ["", *_worst_line_table(worst)]
    lines += ["", *_per_seed_table(rows, seeds)]
    return "\n".join(lines) + "\n"


def _worst_line_table(rows: list[dict]) -> list[str]:
    """The worst line of each row over all seeds: a mean over lines hides it."""
    names = {
        "pixel_auroc": "pixel AUROC",
        "aupro": "AUPRO",
        "verdict_recall": "verdict recall",
        "false_alarm_rate": "false-alarm rate",
    }

    def cell(entry: dict | None, metric: str) -> str:
        if not entry:
            return "—"
        pick = max if metric == "false_alarm_rate" else min
        at = entry["values"].index(pick(entry["values"]))
        return f"{entry['lines'][at]} {entry['values'][at]:.3f}"

    body = [
        f"| {_row_label(r)} | {EVAL_NAMES[r['evaluated_on']]} | "
        + " | ".join(cell(r["worst_line"].get(m), m) for m in names)
        + " |"
        for r in rows
    ]
    return [
        "## The worst line (over all seeds; the lowest value, the highest for false alarms)",
        "",
        "| model | tested on | " + " | ".join(names.values()) + " |",
        "|---|---|" + "---|" * len(names),
        *body,
    ]


def _ordered(rows: list[dict]) -> list[dict]:
    """Evaluation set, then hybrid / U-Net / zero-label, then labels budget; backbones keep their order."""
    evals = list(EVAL_NAMES)
    return sorted(
        rows,
        key=lambda r: (evals.index(r["evaluated_on"]), MODEL_ORDER.index(r["model"]), r["labels_per_line"]),
    )


def _row_label(row: dict) -> str:
    name = row_name(row)
    return f"{name}, {row['labels_per_line']} labels/line" if row["labels_per_line"] else name


def _cell(stats: dict | None, worst: str = "min") -> str:
    """mean ± spread (worst seed); the worst is the maximum for the false-alarm rate."""
    if stats is None or stats["mean"] is None:
        return "—"
    spread = f" ± {stats['std']:.3f}" if stats["std"] is not None else ""
    return f"{stats['mean']:.3f}{spread} ({stats[worst]:.3f})"


DECISION_COLUMNS = {
    "pixel_ap": "pixel AP",
    "verdict_recall": "verdict recall",
    "false_alarm_rate": "false-alarm rate",
}


def _mean_table(title: str, rows: list[dict], group: str, tested_on: str | None = None) -> list[str]:
    decisions = [n for n in DECISION_COLUMNS if any(n in r[group] for r in rows)]
    body = [
        f"| {_row_label(r)} | {tested_on or EVAL_NAMES[r['evaluated_on']]} | {len(r['seeds'])} | "
        + " | ".join(_cell(r[group][m]) for m in HEADLINE_METRICS)
        + "".join(
            f" | {_cell(r[group].get(m), 'max' if m == 'false_alarm_rate' else 'min')}" for m in decisions
        )
        + " |"
        for r in rows
    ]
    return [
        f"## {title}",
        "",
        "| model | tested on | seeds | pixel AUROC | AUPRO | image AUROC |"
        + "".join(f" {DECISION_COLUMNS[m]} |" for m in decisions),
        "|---|---|---|---|---|---|" + "---|" * len(decisions),
        *body,
    ]


def _per_type_table(rows: list[dict]) -> list[str]:
    """Pixel AUROC per defect type; no table (an empty list) when no row names a type."""
    types = sorted({t for r in rows for t in r["per_defect_type"]})
    if not types:
        return []
    body = [
        f"| {_row_label(r)} | "
        + " | ".join(
            f"{r['per_defect_type'][t]['pixel_auroc']['mean']:.3f}" if t in r["per_defect_type"] else "—"
            for t in types
        )
        + " |"
        for r in rows
    ]
    return [
        "## Pixel AUROC per defect type (mean over seeds; each type with the defect-free test images)",
        "",
        "| model | " + " | ".join(types) + " |",
        "|---|" + "---|" * len(types),
        *body,
    ]


def _per_seed_table(rows: list[dict], seeds: list[int]) -> list[str]:
    def triple(row: dict, seed: int) -> str:
        if seed not in row["seeds"]:
            return "—"
        at = row["seeds"].index(seed)
        return " / ".join(f"{row['overall'][m]['values'][at]:.3f}" for m in HEADLINE_METRICS)

    body = [
        f"| {_row_label(r)} | {EVAL_NAMES[r['evaluated_on']]} | "
        + " | ".join(triple(r, s) for s in seeds)
        + " |"
        for r in rows
    ]
    return [
        "## Per seed (pixel AUROC / AUPRO / image AUROC)",
        "",
        "| model | tested on | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---|" + "---|" * len(seeds),
        *body,
    ]

"""The label-efficiency study's outputs: `study.json` and the Markdown tables of `study.md`.

Everything here reads the study record that `benchmarks.study.run_study` builds (plain dicts, as
`study.json` holds them), so the tables can be re-rendered from a saved `study.json` alone.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from training.evaluate import THIN_DEFECT_TYPES

STUDY_JSON = "study.json"
STUDY_MARKDOWN = "study.md"

# Row order of every table: hybrid rows, then the U-Net baseline, then zero-label.
MODEL_ORDER = ("hybrid", "unet", "zero-label")


def write_study(study: dict, out: Path) -> None:
    """`study.json` (everything) and `study.md` (the tables), written atomically."""
    write_files(
        out,
        {
            STUDY_JSON: json.dumps(study, indent=1, default=float) + "\n",
            STUDY_MARKDOWN: render_markdown(study),
        },
    )


def write_files(out: Path, texts: dict[str, str]) -> None:
    """Each text to `out/name` through a temporary file, so a reader never sees half a file."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out / name)


def run_settings(config: dict) -> dict:
    """The hybrids' fine-tuning settings of a study record (older records kept them beside the study's own)."""
    settings: dict = config.get("finetune", config)
    return settings


def _training_words(config: dict) -> str:
    settings = run_settings(config)
    epochs = settings.get("epochs")
    words = f"{epochs} epochs" if epochs else f"{settings['steps']} steps"
    unet_steps = config.get("unet_steps")  # older records: the U-Net took the hybrids' steps
    if unet_steps is not None and (epochs or unet_steps != settings["steps"]):
        words += f" ({unet_steps} for the U-Net)"
    return f"{words}, batch {settings['batch_size']}, {settings['image_size']} px tiles"


def _bank_words(config: dict) -> str:
    neighbours = config.get("neighbour_tiles", 0)  # studies before per-tile banks had one bank
    words = (
        f"each tile scored against its {neighbours} nearest normal tiles" if neighbours else "one memory bank"
    )
    rows = config.get("bank_size")  # studies before the option: 2,048 rows, not recorded
    return f"{words}, {rows} rows per query" if rows else words


def _context_words(config: dict) -> str:
    window = config.get("anomaly_context", 0)  # studies before the option had none
    return f", bank rows with {window}x{window} texture statistics" if window else ""


def _pixel_words(config: dict) -> str:
    weight = config.get("anomaly_pixel_weight", 0.0)  # studies before the option had none
    return f" and the image's pixels at weight {weight:g}" if weight else ""


def _head_context_words(config: dict) -> str:
    window = config.get("head_context", 0)  # studies before the option had none
    return f"; hybrid head with a {window}x{window} texture-context block at 1/4 resolution" if window else ""


def _copy_paste_words(config: dict) -> str:
    share = config.get("copy_paste", 0.0)  # studies before copy-paste had none
    return (
        f"; a labeled defect pasted into {share:.0%} of the training crops (hybrid and U-Net)"
        if share
        else ""
    )


def render_markdown(study: dict) -> str:
    """The label-efficiency tables (all defects, thin defects) and the held-out-type table."""
    config, split, rows = study["config"], study["split"], study["rows"]
    settings = run_settings(config)
    setup = (
        f"Test split: {len(split['test_images'])} images ({split['test_defective']} defective) from "
        f"{len(split['lines']) or 1} line(s), the same for every row. {_training_words(config)}, "
        f"seed {config['seed']}, device {config['device']}; "
        f"hybrid anomaly branch on {settings.get('anomaly_features', 'vit')} features, {_bank_words(settings)}"
        f"{_context_words(settings)}{_pixel_words(settings)}{_head_context_words(settings)}"
        f"{_copy_paste_words(settings)}."
    )
    lines = ["# Label-efficiency study", "", setup, "Cells: pixel AUROC / AUPRO / image AUROC.", ""]
    on_test = [r for r in rows if r["evaluated_on"] == "test"]
    lines += _budget_table("By labeled defect images per line", on_test, config["labels"], _ranking_cell)
    if any("thin_defects" in r["metrics"] for r in on_test):
        thin = f"Thin defects only ({', '.join(sorted(THIN_DEFECT_TYPES))}, with the defect-free test images)"
        lines += [
            "",
            *_budget_table(thin, on_test, config["labels"], lambda m: _ranking_cell(m.get("thin_defects"))),
        ]
    if any("verdict_recall" in r["metrics"] for r in on_test):  # studies before verdict metrics have none
        lines += ["", *_budget_table(VERDICT_TITLE, on_test, config["labels"], _verdict_cell)]
    if any("lines" in r["metrics"] for r in on_test):
        lines += ["", *_budget_table(WORST_LINE_TITLE, on_test, config["labels"], _worst_line_cell)]
    held = [r for r in rows if r["evaluated_on"] == "held-out-types"]
    if held:
        lines += ["", *_held_out_table(held, config, split)]
    return "\n".join(lines) + "\n"


VERDICT_TITLE = (
    "Pixel AP and verdicts at the stored image threshold "
    "(cells: pixel AP · verdict recall / precision / false-alarm rate)"
)
WORST_LINE_TITLE = (
    "The worst line (a mean over lines hides it; cells: the line with the lowest pixel AUROC, "
    "the lowest verdict recall and the highest false-alarm rate)"
)


def _ranking_cell(m: dict | None) -> str | None:
    return None if m is None else f"{m['pixel_auroc']:.3f} / {m['aupro']:.3f} / {m['image_auroc']:.3f}"


def _verdict_cell(m: dict) -> str | None:
    if "verdict_recall" not in m:
        return None
    rates = " / ".join(_number(m[k]) for k in ("verdict_recall", "verdict_precision", "false_alarm_rate"))
    return f"{_number(m['pixel_ap'])} · {rates}"


def _worst_line_cell(m: dict) -> str | None:
    worst = m.get("lines", {}).get("worst", {})
    picks = [(k, worst.get(k)) for k in ("pixel_auroc", "verdict_recall", "false_alarm_rate")]
    return ", ".join(f"{w['line']} {w['value']:.3f}" if w else "—" for _, w in picks) if worst else None


def _number(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.3f}"  # NaN: e.g. no part called defective


def _held_out_table(rows: list[dict], config: dict, split: dict) -> list[str]:
    setting = (
        f"Trained with {config['held_out_budget']} labeled defect images per line of the other types; tested on "
        f"{split['held_out_test_images']} test images (held-out-type defects and all defect-free ones)."
    )
    body = [
        f"| {row_name(r)} | {r['labels_per_line']} | {r['metrics']['pixel_auroc']:.3f} | "
        f"{r['metrics']['aupro']:.3f} | {r['metrics']['image_auroc']:.3f} | {_verdict_cell(r['metrics']) or '—'} |"
        for r in sorted(rows, key=lambda r: MODEL_ORDER.index(r["model"]))
    ]
    return [
        f"## Defect types held out of the labels: {', '.join(config['held_out_types'])}",
        "",
        setting,
        "",
        "| model | labels/line | pixel AUROC | AUPRO | image AUROC | pixel AP · verdict recall / precision / false alarms |",
        "|---|---|---|---|---|---|",
        *body,
    ]


def _budget_table(
    title: str, rows: list[dict], budgets: list[int], cell: Callable[[dict], str | None]
) -> list[str]:
    """Rows = models, columns = labels budgets; `cell` renders a row's metrics (None: nothing to show)."""
    columns = ([0] if any(r["model"] == "zero-label" for r in rows) else []) + list(budgets)
    cells: dict[str, dict[int, str]] = {}
    # Hybrid rows first, then the baseline, then zero-label; backbones keep their command-line order.
    for row in sorted(rows, key=lambda r: MODEL_ORDER.index(r["model"])):
        text = cell(row["metrics"])
        if text is not None:
            cells.setdefault(row_name(row), {})[row["labels_per_line"]] = text
    header = "| model | " + " | ".join(f"{k} labels/line" for k in columns) + " |"
    rule = "|---|" + "---|" * len(columns)
    body = [
        f"| {name} | " + " | ".join(by_k.get(k, "—") for k in columns) + " |" for name, by_k in cells.items()
    ]
    return [f"## {title}", "", header, rule, *body]


def row_name(row: dict) -> str:
    """A row's model as the tables name it: 'hybrid · dino', 'U-Net from scratch'."""
    if row["model"] == "unet":
        return "U-Net from scratch"
    return f"{row['model']} · {row['backbone']}"

"""The label-efficiency study end to end on a tiny two-line set, its splits, the U-Net baseline, and CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from benchmarks.baselines.unet import UNet, UNetConfig, train_unet
from benchmarks.cli import app
from benchmarks.study import split_pool_and_test
from benchmarks.study_summary import render_summary_markdown, summarize_seeds
from tests.synthetic_labeled import TINY_BACKBONE, write_labeled_set
from training.data.labeled import LabeledSample, load_labeled_set

runner = CliRunner()
DEFECTIVE, NORMAL = 12, 8
TINY_STUDY_ARGS = [
    "--backbone",
    TINY_BACKBONE,
    "--labels",
    "1,2",
    "--held-out-types",
    "scratch",
    "--steps",
    "3",
    "--batch-size",
    "4",
    "--image-size",
    "32",
    "--device",
    "cpu",
]


def invoke_study(data: Path, out: Path, *options: str):
    """`label-study` with the tiny backbone on `data`, plus `options`."""
    return runner.invoke(
        app, ["label-study", "--backbone", TINY_BACKBONE, "--data", str(data), "--out", str(out), *options]
    )


def two_line_set(root: Path) -> Path:
    """12 defective (scratch and crack alternate) + 8 defect-free images, over two lines."""
    write_labeled_set(root, defective=DEFECTIVE, normal=NORMAL)
    labels = {}
    for index in range(DEFECTIVE + NORMAL):
        entry: dict = {"line": "line-a" if (index // 2) % 2 == 0 else "line-b"}
        if index < DEFECTIVE:
            entry["defects"] = ["scratch" if index % 2 else "crack"]
        labels[f"img{index:02d}"] = entry
    (root / "defects.json").write_text(json.dumps({"samples": labels}))
    return root


@pytest.fixture(scope="module")
def study_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(data, study folder, CLI output) of one tiny study."""
    base = tmp_path_factory.mktemp("study")
    data = two_line_set(base / "data")
    result = runner.invoke(
        app, ["label-study", "--data", str(data), "--out", str(base / "out"), *TINY_STUDY_ARGS]
    )
    assert result.exit_code == 0, result.output
    return data, base / "out", result.output


def test_study_writes_every_row(study_run: tuple[Path, Path, str]) -> None:
    _, out, output = study_run
    rows = json.loads((out / "study.json").read_text())["rows"]
    kinds = sorted((r["model"], r["labels_per_line"], r["evaluated_on"]) for r in rows)
    assert kinds == sorted(
        [
            ("zero-label", 0, "test"),
            ("zero-label", 0, "held-out-types"),
            ("hybrid", 1, "test"),
            ("unet", 1, "test"),
            ("hybrid", 2, "test"),
            ("unet", 2, "test"),
            ("hybrid", 2, "held-out-types"),
            ("unet", 2, "held-out-types"),
        ]
    )
    for row in rows:
        assert 0.0 <= row["metrics"]["pixel_auroc"] <= 1.0 and "aupro" in row["metrics"]
        # What AUROC hides: pixel AP, the verdicts at the stored threshold, and each line with the worst one.
        assert {"pixel_ap", "verdict_recall", "verdict_precision", "false_alarm_rate"} <= set(row["metrics"])
        assert set(row["metrics"]["per_line"]) == {"line-a", "line-b"} and "worst" in row["metrics"]["lines"]
    assert "[7/7]" in output  # one progress line per trained model
    markdown = (out / "study.md").read_text()
    assert "| U-Net from scratch |" in markdown and "held out of the labels: scratch" in markdown
    assert (
        "## Pixel AP and verdicts at the stored image threshold" in markdown
        and "## The worst line" in markdown
    )
    # The hybrids ran with finetune's defaults, and the report says which.
    assert "2048 rows per query, bank rows with 15x15 texture statistics" in markdown


def test_test_split_is_fixed_and_never_trained_on(study_run: tuple[Path, Path, str]) -> None:
    _, out, _ = study_run
    study = json.loads((out / "study.json").read_text())
    test_stems = study["split"]["test_images"]
    assert {line for line in load_labeled_set(out / "splits" / "test").lines} == {"line-a", "line-b"}
    for row in study["rows"]:
        assert not set(row["training_images"]) & set(test_stems)
        if row["evaluated_on"] == "test":
            assert row["test_images"] == test_stems
        else:
            assert set(row["test_images"]) < set(test_stems)
    held_out_rows = [r for r in study["rows"] if r["evaluated_on"] == "held-out-types"]
    assert all(r["test_images"] == held_out_rows[0]["test_images"] for r in held_out_rows)
    held_out_test = {s.stem: s for s in load_labeled_set(out / "splits" / "test").samples}
    for row in held_out_rows:
        assert all(
            not held_out_test[s].defective or "scratch" in held_out_test[s].defect_types
            for s in row["test_images"]
        )


def test_unet_and_hybrid_see_the_same_labels(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    rows = json.loads((out / "study.json").read_text())["rows"]
    types = {s.stem: s.defect_types for s in load_labeled_set(data).samples}
    for k, trained_on in ((1, "pool"), (2, "pool"), (2, "pool-without-held-out-types")):
        pair = [
            r
            for r in rows
            if r["labels_per_line"] == k and r["trained_on"] == trained_on and r["model"] != "zero-label"
        ]
        hybrid, unet = sorted(pair, key=lambda r: r["model"])
        assert hybrid["training_images"] == unet["training_images"]
        assert hybrid["training_fingerprint"] == unet["training_fingerprint"]
        assert hybrid["labeled_defect_images"] == 2 * k  # k per line, two lines
        if trained_on != "pool":
            assert not any("scratch" in types[stem] for stem in hybrid["training_images"])


def test_rerun_reuses_finished_models(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    before = json.loads((out / "study.json").read_text())["rows"]
    result = runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS])
    assert result.exit_code == 0, result.output
    assert result.output.count("cached") == 7
    assert json.loads((out / "study.json").read_text())["rows"] == before


def test_a_job_alone_gives_the_row_it_gives_within_the_study(
    study_run: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job seeds its own training, so one job run alone (here the held-out-type hybrid, with the
    other jobs skipped) scores exactly as it does after the jobs before it."""
    from benchmarks import study

    data, out, _ = study_run
    whole = json.loads((out / "study.json").read_text())["rows"]
    plan = study.plan_jobs
    monkeypatch.setattr(
        study,
        "plan_jobs",
        lambda config: [job for job in plan(config) if job.model == "hybrid" and job.trained_on != "pool"],
    )
    result = runner.invoke(
        app, ["label-study", "--data", str(data), "--out", str(tmp_path), *TINY_STUDY_ARGS]
    )
    assert result.exit_code == 0, result.output
    (alone,) = json.loads((tmp_path / "study.json").read_text())["rows"]
    within = next(r for r in whole if r["model"] == "hybrid" and r["trained_on"] != "pool")
    assert alone["evaluated_on"] == within["evaluated_on"] == "held-out-types"
    assert alone["metrics"] == within["metrics"] and alone["thresholds"] == within["thresholds"]


@pytest.mark.parametrize(
    ("option", "value", "key", "stored", "words"),
    [
        ("--anomaly-features", "vit", "anomaly_features", "vit", "hybrid anomaly branch on vit features"),
        ("--anomaly-context", "5", "anomaly_context", 5, "bank rows with 5x5 texture statistics"),
        ("--bank-size", "512", "bank_size", 512, "512 rows per query"),
        ("--anomaly-pixel-weight", "0", "anomaly_pixel_weight", 0.0, "texture statistics; hybrid head"),
        ("--head-context", "5", "head_context", 5, "hybrid head with a 5x5 texture-context block"),
    ],
)
def test_other_anomaly_branch_retrains_only_the_hybrids(
    study_run: tuple[Path, Path, str], option: str, value: str, key: str, stored: object, words: str
) -> None:
    data, out, _ = study_run
    before = json.loads((out / "study.json").read_text())["rows"]
    hybrids = len({row["run"] for row in before if row["model"] == "hybrid"})
    try:
        result = runner.invoke(
            app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS, option, value]
        )
        assert result.exit_code == 0, result.output
        assert result.output.count("cached") == 7 - hybrids
        assert json.loads((out / "study.json").read_text())["config"]["finetune"][key] == stored
        assert words in (out / "study.md").read_text()
    finally:  # leave the module's study as the other tests expect it
        runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS])


def test_copy_paste_retrains_what_it_trains_and_says_so(study_run: tuple[Path, Path, str]) -> None:
    data, out, _ = study_run
    before = json.loads((out / "study.json").read_text())["rows"]
    zero_label = len({row["run"] for row in before if row["model"] == "zero-label"})  # one job, two rows
    try:
        result = runner.invoke(
            app,
            ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS, "--copy-paste", "0.5"],
        )
        assert result.exit_code == 0, result.output
        assert result.output.count("cached") == zero_label  # hybrids and U-Nets train on pasted crops
        assert json.loads((out / "study.json").read_text())["config"]["finetune"]["copy_paste"] == 0.5
        assert "pasted into 50% of the training crops" in (out / "study.md").read_text()
    finally:  # leave the module's study as the other tests expect it
        runner.invoke(app, ["label-study", "--data", str(data), "--out", str(out), *TINY_STUDY_ARGS])


def test_unknown_anomaly_features_are_a_one_line_error(tmp_path: Path) -> None:
    result = invoke_study(tmp_path, tmp_path / "out", "--anomaly-features", "pixels")
    assert result.exit_code == 2 and "--anomaly-features" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_split_is_stratified_deterministic_and_disjoint() -> None:
    samples = [
        LabeledSample(f"{line}-d{i}", Path(f"{line}-d{i}.png"), Path(f"m{i}.png"), ("stain",), line)
        for line in ("a", "b")
        for i in range(6)
    ]
    samples += [
        LabeledSample(f"{line}-n{i}", Path(f"{line}-n{i}.png"), None, (), line)
        for line in ("a", "b")
        for i in range(4)
    ]
    pool, test = split_pool_and_test(samples, 0.3, seed=1)
    assert (pool, test) == split_pool_and_test(list(reversed(samples)), 0.3, seed=1)
    assert {s.stem for s in pool} | {s.stem for s in test} == {s.stem for s in samples}
    assert not {s.stem for s in pool} & {s.stem for s in test}
    for line in ("a", "b"):
        assert sum(s.line == line and s.defective for s in test) == 2
        assert sum(s.line == line and not s.defective for s in test) == 1


def test_unet_keeps_the_tile_size() -> None:
    net = UNet().eval()
    for size in (32, 40):
        assert net(torch.zeros(2, 3, size, size)).shape == (2, 1, size, size)


def test_unet_loss_decreases(tmp_path: Path) -> None:
    data = write_labeled_set(tmp_path / "data", defective=4, normal=4)
    result = train_unet(load_labeled_set(data).samples, UNetConfig(image_size=32, steps=40, batch_size=8))
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5]) - 0.05
    image = np.full((48, 48, 3), 128, np.uint8)
    probabilities = result.predictor.predict(image)
    assert probabilities.shape == (48, 48) and 0.0 <= probabilities.min() <= probabilities.max() <= 1.0


@pytest.mark.parametrize("labels", ["1,x", "0,5", ",", "-1"])
def test_bad_labels_list_is_a_one_line_error(tmp_path: Path, labels: str) -> None:
    result = invoke_study(tmp_path, tmp_path / "out", "--labels", labels)
    assert result.exit_code == 2
    assert "--labels" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_held_out_type_is_a_one_line_error(tmp_path: Path) -> None:
    data = two_line_set(tmp_path / "data")
    result = invoke_study(data, tmp_path / "out", "--held-out-types", "scratch,dent", "--device", "cpu")
    assert result.exit_code == 2
    assert "dent" in result.output and "crack, scratch" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_several_seeds_give_one_study_each_and_a_summary(tmp_path: Path) -> None:
    data = two_line_set(tmp_path / "data")
    out = tmp_path / "multi"
    args = [
        "--labels",
        "1",
        "--held-out-types",
        "",
        "--no-include-unet",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--seed",
        "0",
        "--seed",
        "3",
    ]
    result = invoke_study(data, out, *args)
    assert result.exit_code == 0, result.output
    studies = {seed: json.loads((out / f"seed-{seed}" / "study.json").read_text()) for seed in (0, 3)}
    assert studies[0]["split"]["test_images"] != studies[3]["split"]["test_images"]  # each seed its own split
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["seeds"] == [0, 3] and len(summary["rows"]) == 2
    )  # zero-label and hybrid, on the test split
    for row in summary["rows"]:
        measured = [
            next(r for r in studies[seed]["rows"] if r["model"] == row["model"])["metrics"]["pixel_auroc"]
            for seed in (0, 3)
        ]
        stats = row["overall"]["pixel_auroc"]
        assert stats["values"] == pytest.approx(measured) and stats["mean"] == pytest.approx(
            np.mean(measured)
        )
        assert stats["std"] == pytest.approx(np.std(measured, ddof=1)) and stats["min"] == min(measured)
    assert "# Label-efficiency study over 2 seeds" in (out / "summary.md").read_text()
    again = invoke_study(data, out, *args)  # finished seeds are reused job by job
    assert again.exit_code == 0 and again.output.count("cached") == 4


def test_summary_statistics_by_hand() -> None:
    def study(seed: int, hybrid_auroc: float, with_unet: bool) -> dict:
        def row(model: str, auroc: float) -> dict:
            metrics = {
                "pixel_auroc": auroc,
                "aupro": 0.5,
                "image_auroc": 0.75,
                "per_defect_type": {"stain": {"pixel_auroc": auroc, "aupro": 0.5, "image_auroc": 0.75}},
            }
            return {
                "model": model,
                "backbone": None if model == "unet" else "dino",
                "labels_per_line": 5,
                "trained_on": "pool",
                "evaluated_on": "test",
                "metrics": metrics,
            }

        rows = [row("hybrid", hybrid_auroc)] + ([row("unet", 0.6)] if with_unet else [])
        split = {"test_images": ["a", "b"], "test_defective": 1, "held_out_test_images": 0}
        return {
            "config": {"seed": seed, "out": "x", "steps": 3, "image_size": 32},
            "split": split,
            "rows": rows,
        }

    summary = summarize_seeds({1: study(1, 0.9, True), 2: study(2, 0.8, False)})
    hybrid, unet = sorted(summary["rows"], key=lambda r: r["model"])
    assert hybrid["overall"]["pixel_auroc"]["mean"] == pytest.approx(0.85)
    assert hybrid["overall"]["pixel_auroc"]["std"] == pytest.approx(0.1 / np.sqrt(2))
    assert hybrid["overall"]["pixel_auroc"]["min"] == 0.8 and hybrid["overall"]["aupro"]["std"] == 0.0
    assert unet["seeds"] == [1] and unet["overall"]["pixel_auroc"]["std"] is None  # one seed: no spread
    markdown = render_summary_markdown(summary)
    assert "| hybrid · dino, 5 labels/line | all defect types | 2 | 0.850 ± 0.071 (0.800) |" in markdown
    assert "| U-Net from scratch, 5 labels/line | all defect types | 0.600 / 0.500 / 0.750 | — |" in markdown
    assert "| stain |" in markdown

    held_out_only = {seed: study(seed, 0.9, False) for seed in (1, 2)}
    for record in held_out_only.values():
        record["rows"][0]["evaluated_on"] = "held-out-types"
    markdown = render_summary_markdown(summarize_seeds(held_out_only))
    assert "| hybrid · dino, 5 labels/line | held-out types | 2 | 0.900 ± 0.000 (0.900) |" in markdown
    assert "per defect type" not in markdown and "| model |  |" not in markdown  # no empty table


def test_repeated_seed_is_a_one_line_error(tmp_path: Path) -> None:
    data = two_line_set(tmp_path / "data")
    result = invoke_study(data, tmp_path / "out", "--device", "cpu", "--seed", "1", "--seed", "1")
    assert result.exit_code == 2 and "seed is given twice" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_summary_reports_decision_metrics_and_the_worst_line_by_hand() -> None:
    def study(seed: int, recall: float, alarms: float, worst: str) -> dict:
        metrics = {
            "pixel_auroc": 0.9,
            "aupro": 0.5,
            "image_auroc": 0.75,
            "pixel_ap": 0.4,
            "verdict_recall": recall,
            "verdict_precision": float("nan"),
            "false_alarm_rate": alarms,
            "per_defect_type": {},
            "lines": {
                "worst": {
                    "pixel_auroc": {"line": worst, "value": 0.7},
                    "false_alarm_rate": {"line": worst, "value": alarms * 2},
                }
            },
        }
        row = {
            "model": "hybrid",
            "backbone": "dino",
            "labels_per_line": 5,
            "trained_on": "pool",
            "evaluated_on": "test",
            "metrics": metrics,
        }
        split = {"test_images": ["a", "b"], "test_defective": 1, "held_out_test_images": 0}
        return {
            "config": {"seed": seed, "out": "x", "steps": 3, "image_size": 32},
            "split": split,
            "rows": [row],
        }

    summary = summarize_seeds({1: study(1, 1.0, 0.1, "wood"), 2: study(2, 0.8, 0.3, "tile")})
    (row,) = summary["rows"]
    assert row["overall"]["verdict_recall"]["mean"] == pytest.approx(0.9)
    assert row["overall"]["verdict_precision"]["mean"] is None  # NaN on every seed: nothing to average
    markdown = render_summary_markdown(summary)
    # pixel AP, verdict recall (worst: the lowest), false-alarm rate (worst: the highest).
    assert "| 0.400 ± 0.000 (0.400) | 0.900 ± 0.141 (0.800) | 0.200 ± 0.141 (0.300) |" in markdown
    assert "| hybrid · dino, 5 labels/line | all defect types | wood 0.700 | — | — | tile 0.600 |" in markdown


def test_table_regenerates_study_md_from_study_json(study_run: tuple[Path, Path, str]) -> None:
    _, out, _ = study_run
    result = runner.invoke(app, ["table", str(out / "study.json")])
    assert result.exit_code == 0, result.output
    assert result.output == (out / "study.md").read_text()


def test_table_regenerates_summary_md_from_summary_json(tmp_path: Path) -> None:
    data = two_line_set(tmp_path / "data")
    out = tmp_path / "multi"
    result = invoke_study(
        data,
        out,
        "--labels",
        "1",
        "--held-out-types",
        "",
        "--no-include-unet",
        "--no-include-zero-label",
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--device",
        "cpu",
        "--seed",
        "0",
        "--seed",
        "1",
    )
    assert result.exit_code == 0, result.output
    table = runner.invoke(app, ["table", str(out / "summary.json"), str(out / "seed-1" / "study.json")])
    assert table.exit_code == 0, table.output
    expected = (out / "summary.md").read_text() + "\n" + (out / "seed-1" / "study.md").read_text()
    assert table.output == expected


def test_a_job_is_cached_on_every_setting_of_its_run_defaults_included(tmp_path: Path) -> None:
    from benchmarks.study import Job, StudyConfig, StudyData, _run_settings
    from benchmarks.study_config import finetune_template
    from training.finetune import LabeledImages
    from training.model_config import FinetuneConfig

    def study(**finetune: object) -> StudyConfig:
        return StudyConfig(
            backbones=(TINY_BACKBONE,),
            data=tmp_path,
            out=tmp_path / "out",
            finetune=finetune_template(device="cpu", **finetune),
        )

    data = StudyData(
        pool_dir=tmp_path / "pool",
        test_dir=tmp_path / "test",
        seen_pool_dir=None,
        test=LabeledImages(),
        held_out_indices=[],
        lines=[],
    )
    jobs = {
        "hybrid": Job(
            model="hybrid", backbone=TINY_BACKBONE, labels=5, trained_on="pool", evaluations=("test",)
        ),
        "zero-label": Job("zero-label", TINY_BACKBONE, 0, "pool", ("test",)),
        "unet": Job(model="unet", backbone=None, labels=5, trained_on="pool", evaluations=("test",)),
    }

    def settings(config: StudyConfig) -> dict[str, dict]:
        return {name: _run_settings(job, config, data, torch.device("cpu")) for name, job in jobs.items()}

    default = settings(study())
    # The study sets none of these: finetune's defaults train its hybrids, and a new default makes them stale.
    defaults = FinetuneConfig(backbone="", data=tmp_path, out=tmp_path)
    for name in ("lr", "unfreeze_last", "anomaly_stride", "val_fraction", "target_recall", "batch_size"):
        assert default["hybrid"][name] == getattr(defaults, name)
    assert default["hybrid"]["labeled_defects"] == 5 and "out" not in default["hybrid"]
    assert default["unet"]["steps"] == defaults.steps and default["unet"]["image_size"] == defaults.image_size
    # A setting retrains the models that read it, and only those.
    for finetune, stale in (
        ({"lr": 0.002}, {"hybrid"}),
        ({"synthetic_anomalies": 0.5}, {"hybrid"}),
        ({"copy_paste": 0.5}, {"hybrid", "unet"}),
        ({"image_size": 64}, {"hybrid", "unet", "zero-label"}),
        ({"target_recall": 0.9}, {"hybrid", "zero-label"}),
    ):
        changed = settings(study(**finetune))
        assert {name for name in jobs if changed[name] != default[name]} == stale, finetune


def test_copy_paste_outside_zero_to_one_is_refused_before_any_training(tmp_path: Path) -> None:
    result = invoke_study(tmp_path, tmp_path / "out", "--copy-paste", "1.5")
    assert result.exit_code == 2 and "--copy-paste must be a share between 0 and 1, got 1.5" in result.output
    assert not (tmp_path / "out").exists()

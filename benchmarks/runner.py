"""Run every regime of the benchmark on one split, through what a plant would deploy.

Regimes: `0` (zero-label, `fit-normal` on the defect-free training images), `1`, `5`, `20` (labeled
defect images per surface, `finetune --labeled-defects k`) and `held-out-types` (5 labels per surface
of the types not in `HELD_OUT_TYPES`; tested only on held-out-type defects and the defect-free test
images). Each product model is exported to a bundle and run by the service's own `Predictor` on ONNX
Runtime, with the stored thresholds. Beside it, on the same images:

- `unet`: the from-scratch U-Net (`benchmarks.baselines.unet`) on exactly the same labeled images;
- `no-learning`: |pixel − the image's per-channel median|, averaged over channels, / 255; its
  thresholds come from the defect-free training images as `fit-normal` sets them.

Each row is cached in `OUT/rows/<regime>-<model>.json` with the inputs it was made from, so a run
that stopped continues where it was; `OUT/results.json` and `OUT/results.md` are rewritten after
every row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.dataset import HELD_OUT_TYPES, read_record
from benchmarks.report import render_markdown
from benchmarks.scoring import mean_and_worst, score_surface
from training.errors import UserError

log = logging.getLogger(__name__)

REGIMES = ("0", "1", "5", "20", "held-out-types")
MODELS = ("hybrid", "unet", "no-learning")
HELD_OUT_LABELS = 5
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
CALIBRATION_FOLDER = "calibration"

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RunConfig:
    """Options of `run_regimes` (mirrors `python -m benchmarks run-regimes`).

    Attributes:
        finetune_options: extra `FinetuneConfig` fields for the hybrid (to measure a change against
            today's defaults); empty = the product's defaults.
        fit_normal_options: extra `FitNormalConfig` fields for the zero-label regime.
        threads: ONNX Runtime threads of the bundle's predictor.
    """

    data: Path
    out: Path
    backbone: str
    regimes: tuple[str, ...] = REGIMES
    models: tuple[str, ...] = MODELS
    steps: int = 300
    batch_size: int = 16
    image_size: int = 128
    device: str = "cpu"
    seed: int = 0
    finetune_options: dict[str, Any] = field(default_factory=dict)
    fit_normal_options: dict[str, Any] = field(default_factory=dict)
    threads: int = 1


@dataclass
class TestSet:
    """The split's decoded test images."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    surfaces: list[str]
    types: list[tuple[str, ...]]


def parse_regimes(text: str) -> tuple[str, ...]:
    """'0,5,held-out-types' → the regimes in the benchmark's order (UserError for an unknown one)."""
    return _parse_choices(text, REGIMES, "--regimes")


def parse_models(text: str) -> tuple[str, ...]:
    """'hybrid,no-learning' → the models in the benchmark's order (UserError for an unknown one)."""
    return _parse_choices(text, MODELS, "--models")


def _parse_choices(text: str, choices: tuple[str, ...], flag: str) -> tuple[str, ...]:
    asked = [part.strip() for part in text.split(",") if part.strip()]
    if not asked or set(asked) - set(choices):
        raise UserError(f"{flag} takes a comma-separated list of {', '.join(choices)}; got {text!r}")
    return tuple(choice for choice in choices if choice in asked)


def run_regimes(config: RunConfig, progress: Callable[[str], None] = log.info) -> dict:
    """Train, export, predict and score every (regime, model) pair; write results.json and results.md.

    Returns:
        The content of results.json.

    Raises:
        UserError: `config.data` is not a benchmark split, or bad options.
    """
    record = read_record(config.data)
    if config.steps < 1 or config.batch_size < 1:
        raise UserError("--steps and --batch-size must be at least 1")
    _check_options(config)
    test = load_test_set(config.data / "test")
    calibration = load_calibration_images(config.data / CALIBRATION_FOLDER)
    results: dict[str, Any] = {"config": _config_record(config), "data": record, "rows": []}
    started = time.perf_counter()
    for regime in config.regimes:
        for model in config.models:
            if model == "unet" and regime == "0":
                continue  # the U-Net needs labels
            row = _cached_or_run(regime, model, config, test, calibration)
            results["rows"].append(row)
            write_results(results, config.out)
            mean = row["mean"]
            progress(
                f"{regime:>14} {model:<11} pixel AUROC {mean['pixel_auroc']:.3f}  AUPRO {mean['aupro']:.3f}  "
                f"pixel AP {mean['pixel_ap']:.3f}  image AUROC {mean['image_auroc']:.3f}  "
                f"recall {mean['verdict_recall']:.2f}  ({time.perf_counter() - started:.0f} s)"
            )
    return results


def write_results(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_JSON).write_text(json.dumps(results, indent=1, default=float) + "\n")
    (out / RESULTS_MD).write_text(render_markdown(results))


def load_test_set(folder: Path) -> TestSet:
    from training.data.labeled import load_labeled_set
    from training.finetune import load_images_with_masks

    loaded = load_images_with_masks(load_labeled_set(folder).samples)
    return TestSet(
        images=loaded.images,
        masks=loaded.masks,
        surfaces=[s.line or "" for s in loaded.samples],
        types=[s.defect_types for s in loaded.samples],
    )


def _cached_or_run(
    regime: str, model: str, config: RunConfig, test: TestSet, calibration: dict[str, list[np.ndarray]]
) -> dict:
    signature = json.loads(json.dumps(_signature(regime, model, config), default=str))
    path = config.out / "rows" / f"{regime}-{model}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("signature") == signature:
            return saved["row"]
    start = time.perf_counter()
    predict, thresholds = _train(regime, model, config)
    indices = _evaluated_indices(regime, test)
    maps = {i: predict(test.images[i]) for i in indices}
    top_pixels = int(thresholds.get("image_top_pixels", 1))
    line_thresholds = _line_thresholds(predict, calibration, top_pixels)
    row = {
        "regime": regime,
        "model": model,
        "thresholds": thresholds,
        "line_thresholds": line_thresholds,
        **_score(maps, test, thresholds["image"], top_pixels, line_thresholds),
        "seconds": time.perf_counter() - start,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"signature": signature, "row": row}, indent=1, default=float) + "\n")
    return row


def _evaluated_indices(regime: str, test: TestSet) -> list[int]:
    if regime != "held-out-types":
        return list(range(len(test.images)))
    held = set(HELD_OUT_TYPES)
    return [i for i, types in enumerate(test.types) if not test.masks[i].any() or held & set(types)]


def load_calibration_images(folder: Path) -> dict[str, list[np.ndarray]]:
    """Each surface's defect-free calibration images, read once per run; empty for a split without them."""
    if not folder.is_dir():
        return {}
    from training.data.images import read_images
    from training.data.labeled import load_labeled_set

    by_surface: dict[str, list[Path]] = {}
    for sample in load_labeled_set(folder).defect_free:
        by_surface.setdefault(sample.line or "", []).append(sample.image)
    return {surface: read_images(paths)[0] for surface, paths in sorted(by_surface.items())}


def _line_thresholds(
    predict: Predict, calibration: dict[str, list[np.ndarray]], top_pixels: int
) -> dict[str, float]:
    """Each surface's image threshold from its calibration images, as `train-pipeline calibrate` sets it
    (at most `DEFAULT_MAX_FALSE_ALARM_RATE` of them flagged)."""
    from training.decision import DEFAULT_MAX_FALSE_ALARM_RATE, calibrate_line

    return {
        surface: calibrate_line(
            [predict(image) for image in images],
            max_false_alarm_rate=DEFAULT_MAX_FALSE_ALARM_RATE,
            top_pixels=top_pixels,
        ).image
        for surface, images in calibration.items()
    }


def _score(
    maps: dict[int, np.ndarray],
    test: TestSet,
    image_threshold: float,
    top_pixels: int,
    line_thresholds: dict[str, float],
) -> dict:
    per_surface = {}
    for surface in sorted({test.surfaces[i] for i in maps}):
        indices = [i for i in maps if test.surfaces[i] == surface]
        per_surface[surface] = score_surface(
            [maps[i] for i in indices],
            [test.masks[i] for i in indices],
            image_threshold,
            top_pixels,
            line_thresholds.get(surface),
        )
    mean, worst = mean_and_worst(per_surface)
    return {"per_surface": per_surface, "mean": mean, "worst": worst}


# --- the models --------------------------------------------------------------------------------------


def _train(regime: str, model: str, config: RunConfig) -> tuple[Predict, dict[str, float]]:
    """The trained model of one row as a whole-frame predictor, and its stored thresholds."""
    train_root = _training_folder(regime, config)
    if model == "no-learning":
        return _no_learning(train_root, config)
    labels = HELD_OUT_LABELS if regime == "held-out-types" else int(regime)
    if model == "unet":
        return _unet(train_root, labels, config)
    run_dir = config.out / "runs" / regime
    if labels == 0:
        from training.fit_normal import FitNormalConfig, fit_normal

        fit_normal(
            FitNormalConfig(
                backbone=config.backbone,
                data=train_root,
                out=run_dir,
                image_size=config.image_size,
                device=config.device,
                seed=config.seed,
                **config.fit_normal_options,
            )
        )
    else:
        from training.finetune import FinetuneConfig, finetune

        finetune(
            FinetuneConfig(
                backbone=config.backbone,
                data=train_root,
                out=run_dir,
                image_size=config.image_size,
                steps=config.steps,
                batch_size=config.batch_size,
                labeled_defects=labels,
                device=config.device,
                seed=config.seed,
                **config.finetune_options,
            )
        )
    return _served_predictor(run_dir, config.out / "bundles" / regime, config.threads)


def _served_predictor(run_dir: Path, bundle_dir: Path, threads: int) -> tuple[Predict, dict[str, float]]:
    """Export the run and load the bundle exactly as the service does (ONNX Runtime `Predictor`)."""
    from inspect_svc.bundle import load_bundle
    from inspect_svc.engine.predictor import Predictor
    from training.export import export_run

    export_run(run_dir, bundle_dir)
    bundle = load_bundle(bundle_dir)
    thresholds = bundle.manifest.thresholds
    predictor = Predictor(bundle, providers=["CPUExecutionProvider"], intra_op_threads=threads)
    return predictor.predict, {
        "pixel": thresholds.pixel,
        "image": thresholds.image,
        "image_top_pixels": bundle.manifest.image_score.top_pixels,
    }


def _unet(train_root: Path, labels: int, config: RunConfig) -> tuple[Predict, dict[str, float]]:
    from benchmarks.baselines.unet import UNetConfig, train_unet
    from training.finetune import FinetuneConfig, select_samples

    # finetune's own selection, so the U-Net trains on exactly the hybrid's images.
    samples = select_samples(
        FinetuneConfig(
            backbone=config.backbone,
            data=train_root,
            out=config.out,
            labeled_defects=labels,
            seed=config.seed,
        )
    )
    trained = train_unet(
        samples,
        UNetConfig(
            image_size=config.image_size,
            steps=config.steps,
            batch_size=config.batch_size,
            device=config.device,
            seed=config.seed,
        ),
    )
    return trained.predictor.predict, trained.thresholds


def no_learning_map(image: np.ndarray) -> np.ndarray:
    """|pixel − the image's per-channel median|, averaged over channels, in [0, 1]."""
    pixels = image.astype(np.float32)
    median = np.median(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    return (np.abs(pixels - median).mean(axis=-1) / 255.0).astype(np.float32)


def _no_learning(train_root: Path, config: RunConfig) -> tuple[Predict, dict[str, float]]:
    from training.data.images import read_images
    from training.data.labeled import load_labeled_set
    from training.fit_normal import normal_thresholds
    from training.model_config import DEFAULT_TARGET_RECALL, default_top_pixels

    normal, _ = read_images([s.image for s in load_labeled_set(train_root).defect_free])
    maps = [no_learning_map(image) for image in normal]
    # Thresholded as fit-normal thresholds its maps, with the image score of the run's tile size.
    thresholds, _ = normal_thresholds(
        no_learning_map,
        normal,
        maps,
        target_recall=DEFAULT_TARGET_RECALL,
        top_pixels=default_top_pixels(config.image_size),
        seed=config.seed,
    )
    return no_learning_map, thresholds


def _training_folder(regime: str, config: RunConfig) -> Path:
    """The labeled folder a regime trains on; the held-out-type one is written once, without those types."""
    train = config.data / "train"
    if regime != "held-out-types":
        return train
    from benchmarks.study import write_labeled_folder
    from training.data.labeled import load_labeled_set, split_by_defect_type

    samples = load_labeled_set(train).samples
    seen, _ = split_by_defect_type(samples, HELD_OUT_TYPES)
    dest = config.out / "splits" / "train-without-held-out-types"
    return write_labeled_folder(
        sorted(seen + [s for s in samples if not s.defective], key=lambda s: s.stem), dest
    )


def _check_options(config: RunConfig) -> None:
    from training.finetune import FinetuneConfig
    from training.fit_normal import FitNormalConfig

    fixed = {
        "backbone",
        "data",
        "out",
        "image_size",
        "steps",
        "batch_size",
        "labeled_defects",
        "device",
        "seed",
    }
    for flag, options, kind in (
        ("--finetune-options", config.finetune_options, FinetuneConfig),
        ("--fit-normal-options", config.fit_normal_options, FitNormalConfig),
    ):
        allowed = {f.name for f in fields(kind)} - fixed
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise UserError(
                f"{flag}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
            )


def _signature(regime: str, model: str, config: RunConfig) -> dict:
    """Everything a row depends on; a cached row is reused only when all of it matches."""
    record = (config.data / "benchmark-data.json").read_text()
    return {
        "regime": regime,
        "model": model,
        "data": str(config.data.resolve()),
        "data_record": hashlib.sha256(record.encode()).hexdigest(),
        **{k: v for k, v in _config_record(config).items() if k not in ("out", "regimes", "models", "data")},
    }


def _config_record(config: RunConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}

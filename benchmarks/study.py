"""Label-efficiency study: how good is each model with 1, 5, 20 labeled defect images per line, and on
defect types nobody labeled?

The labeled set is split once, deterministically and stratified by line and defect type, into a
training pool and a TEST split that is the same for every row. Then, per labels budget k, every
backbone is fine-tuned into the hybrid model on k labeled defect images per line (plus the pool's
defect-free images), and the from-scratch U-Net trains on exactly the same images; the zero-label
mode fits on the pool's defect-free images alone. The hybrids and zero-label models train exactly as
`train-pipeline finetune` and `fit-normal` do, from the run configs `StudyConfig` holds
(`benchmarks.study_config`): each job fills in its backbone, folders and labels budget. The held-out-type split trains on the defect
types NOT held out (at the middle budget) and is tested only on held-out-type defects plus the
defect-free test images. Every model predicts through the service's tiling and is scored by
`evaluate.metrics_by_group`, so the numbers are those `train-pipeline evaluate` would report.

The splits are written as labeled folders (`OUT/splits/`), each trained model keeps its run folder
(`OUT/runs/`) and its result (`OUT/runs/<job>/result.json`): rerunning the same command skips the
jobs already done with the same inputs (every setting of the job's run config among them, defaults
included), so a long study can be continued after an interruption or a time limit.
`run_seeded_studies` repeats the whole study over several seeds (`OUT/seed-N`) and summarises every
row's mean and spread (`benchmarks.study_summary`): one test split of a few dozen images cannot tell
0.96 from 0.97.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from benchmarks.baselines.unet import UNetConfig
from benchmarks.study_config import PER_JOB, StudyConfig
from benchmarks.study_report import write_study
from benchmarks.study_summary import seed_folder, summarize_seeds, write_summary
from training.data.labeled import (
    LABELS_FILE,
    LabeledSample,
    load_labeled_set,
    pick_per_line,
    split_by_defect_type,
)
from training.data.splits import holdout_split
from training.decision import DECISION_RULE
from training.errors import UserError
from training.evaluate import metrics_by_group
from training.finetune import LabeledImages, load_images_with_masks
from training.model_config import FinetuneConfig, FitNormalConfig
from training.models.backbone import BACKBONE_FILE, RANDOM_PREFIX
from training.run_config import config_json
from training.runs import data_fingerprint

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"

ModelName = Literal["hybrid", "unet", "zero-label"]
EvalSet = Literal["test", "held-out-types"]


# --- splits ------------------------------------------------------------------------------------------


def split_pool_and_test(
    samples: Iterable[LabeledSample], fraction: float, seed: int
) -> tuple[list[LabeledSample], list[LabeledSample]]:
    """(pool, test): `fraction` of every (line, first defect type) group goes to test, deterministically.

    Defect-free images form a group per line. Each group is permuted by a seed derived from its own
    key, so adding a line or a defect type leaves the other groups' split unchanged. A group of one
    stays in the pool (the labels budget needs it more than the test does).
    """
    groups: dict[tuple[str, str], list[LabeledSample]] = defaultdict(list)
    for sample in sorted(samples, key=lambda s: s.stem):
        groups[(sample.line or "", sample.defect_types[0] if sample.defective else "")].append(sample)
    pool, test = [], []
    for key in sorted(groups):
        members = groups[key]
        group_seed = zlib.crc32(f"{seed}\0{key[0]}\0{key[1]}".encode())
        keep, held = holdout_split(len(members), fraction, group_seed)
        pool += [members[i] for i in keep]
        test += [members[i] for i in held]
    return sorted(pool, key=lambda s: s.stem), sorted(test, key=lambda s: s.stem)


def write_labeled_folder(samples: list[LabeledSample], dest: Path) -> Path:
    """Write `samples` as a labeled folder in our layout (hard links where possible, else copies).

    The folder is rebuilt from scratch, so it never keeps images of an earlier, different split.
    """
    if dest.exists():
        shutil.rmtree(dest)
    labels: dict[str, dict[str, Any]] = {}
    for sample in samples:
        _link_or_copy(sample.image, dest / "images" / f"{sample.stem}{sample.image.suffix}")
        entry: dict[str, Any] = {"line": sample.line} if sample.line is not None else {}
        if sample.mask is not None:
            _link_or_copy(sample.mask, dest / "masks" / f"{sample.stem}.png")
            entry["defects"] = list(sample.defect_types)
        labels[sample.stem] = entry
    (dest / "masks").mkdir(parents=True, exist_ok=True)
    (dest / LABELS_FILE).write_text(json.dumps({"samples": labels}, indent=1) + "\n")
    return dest


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


@dataclass
class StudyData:
    """The fixed splits of a study and the decoded test images."""

    pool_dir: Path
    test_dir: Path
    seen_pool_dir: Path | None  # pool without held-out defect types
    test: LabeledImages
    held_out_indices: list[int]  # test images of the held-out-type split (held-out defects + defect-free)
    lines: list[str]

    @property
    def test_stems(self) -> list[str]:
        return [s.stem for s in self.test.samples]


def prepare_splits(config: StudyConfig) -> StudyData:
    """Split the labeled set, write the split folders, decode the test split.

    Raises:
        UserError: no defective or defect-free image, an unknown held-out type, or a split left empty.
    """
    labeled = load_labeled_set(config.data)
    if not labeled.defective:
        raise UserError(f"{config.data} holds no image with a defect mask; a label study needs some")
    unknown = sorted(set(config.held_out_types) - set(labeled.defect_types))
    if unknown:
        raise UserError(
            f"unknown held-out defect type(s) {', '.join(unknown)}; {config.data} has: "
            f"{', '.join(labeled.defect_types)}"
        )
    pool, test_samples = split_pool_and_test(labeled.samples, config.test_fraction, config.seed)
    _check_pool_and_test(pool, test_samples, config)
    splits = config.out / "splits"
    pool_dir = write_labeled_folder(pool, splits / "pool")
    test_dir = write_labeled_folder(test_samples, splits / "test")
    seen_pool_dir = None
    if config.held_out_types:
        seen, _ = split_by_defect_type(pool, config.held_out_types)
        if not seen:
            raise UserError(
                f"every defective image shows a held-out type ({', '.join(config.held_out_types)}): "
                "nothing is left to train the held-out-type split on"
            )
        seen_pool_dir = write_labeled_folder(
            sorted(seen + [s for s in pool if not s.defective], key=lambda s: s.stem),
            splits / "pool-without-held-out-types",
        )
    test = load_images_with_masks(load_labeled_set(test_dir).samples)
    return StudyData(
        pool_dir=pool_dir,
        test_dir=test_dir,
        seen_pool_dir=seen_pool_dir,
        test=test,
        held_out_indices=_held_out_indices(test.samples, config.held_out_types),
        lines=labeled.lines,
    )


def _check_pool_and_test(pool: list[LabeledSample], test: list[LabeledSample], config: StudyConfig) -> None:
    if not any(s.defective for s in test) or not any(not s.defective for s in test):
        raise UserError(
            "the test split needs defective and defect-free images; add images or raise --test-fraction"
        )
    if sum(not s.defective for s in pool) < 2:
        raise UserError(
            "the training pool needs at least 2 defect-free images (for the anomaly branch); add some"
        )
    if config.held_out_types and not split_by_defect_type(test, config.held_out_types)[1]:
        raise UserError(
            f"no test image shows a held-out type ({', '.join(config.held_out_types)}); "
            "add images of those types or raise --test-fraction"
        )


def _held_out_indices(samples: list[LabeledSample], held_out: tuple[str, ...]) -> list[int]:
    if not held_out:
        return []
    return [i for i, s in enumerate(samples) if not s.defective or set(held_out) & set(s.defect_types)]


# --- jobs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One model to train, and the test sets it is scored on (each pair is a row of the study)."""

    model: ModelName
    backbone: str | None  # the spec; None for the U-Net
    labels: int  # labeled defect images per line; 0 for the zero-label mode
    trained_on: Literal["pool", "pool-without-held-out-types"]
    evaluations: tuple[EvalSet, ...]

    @property
    def key(self) -> str:
        """A folder name unique within the study."""
        backbone = _slug(self.backbone) if self.backbone else "scratch"
        suffix = "-seen-types" if self.trained_on != "pool" else ""
        return f"{self.model}-{backbone}-k{self.labels}{suffix}"


def plan_jobs(config: StudyConfig) -> list[Job]:
    """Every model of the study, in the order they are trained."""
    with_held_out: tuple[EvalSet, ...] = ("test", "held-out-types") if config.held_out_types else ("test",)
    jobs = []
    if config.include_zero_label:
        jobs += [Job("zero-label", spec, 0, "pool", with_held_out) for spec in config.backbones]
    for k in config.labels:
        jobs += [Job("hybrid", spec, k, "pool", ("test",)) for spec in config.backbones]
        if config.include_unet:
            jobs.append(Job("unet", None, k, "pool", ("test",)))
    if config.held_out_types:
        k = config.held_out_budget
        seen_only: tuple[EvalSet, ...] = ("held-out-types",)
        jobs += [
            Job("hybrid", spec, k, "pool-without-held-out-types", seen_only) for spec in config.backbones
        ]
        if config.include_unet:
            jobs.append(Job("unet", None, k, "pool-without-held-out-types", seen_only))
    return jobs


@dataclass
class Trained:
    """What a finished training hands to evaluation."""

    predict: Callable[[np.ndarray], np.ndarray]
    thresholds: dict[str, float]
    validation: dict
    run: Path | None
    training_stems: list[str]
    labeled_defects: int  # defective images among the training images
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)


def train_job(job: Job, config: StudyConfig, data: StudyData, device: torch.device) -> Trained:
    """Train one model of the study on its split."""
    # Seeded per job, so a job's model (a random-init backbone too) does not depend on the jobs before it.
    torch.manual_seed(config.seed)
    root = _training_root(job, data)
    run_dir = config.out / "runs" / job.key
    if job.model == "zero-label":
        return _train_zero_label(job, config, root, run_dir, device)
    samples = _labeled_selection(root, job.labels, config.seed)
    if job.model == "hybrid":
        return _train_hybrid(job, config, root, samples, run_dir, device)
    return _train_unet(config, root, samples, device)


def _training_root(job: Job, data: StudyData) -> Path:
    root = data.pool_dir if job.trained_on == "pool" else data.seen_pool_dir
    assert root is not None  # plan_jobs only plans held-out-type jobs when that split exists
    return root


def _labeled_selection(root: Path, labels: int, seed: int) -> list[LabeledSample]:
    """The training images of a labels budget: what `finetune --labeled-defects k` selects."""
    labeled = load_labeled_set(root)
    return sorted(pick_per_line(labeled.defective, labels, seed) + labeled.defect_free, key=lambda s: s.stem)


def _fingerprint(samples: list[LabeledSample], root: Path) -> str:
    return data_fingerprint([s.image for s in samples] + [s.mask for s in samples if s.mask], root)


def _train_hybrid(
    job: Job,
    config: StudyConfig,
    root: Path,
    samples: list[LabeledSample],
    run_dir: Path,
    device: torch.device,
) -> Trained:
    from training.finetune import finetune

    validation = finetune(_hybrid_config(job, config, root, run_dir, device))
    predict, thresholds, run_fingerprint = _load_run_predictor(run_dir, device)
    fingerprint = _fingerprint(samples, root)
    if run_fingerprint != fingerprint:  # the U-Net rows would then not be trained on the same labels
        raise RuntimeError(f"finetune selected other training images than the study expects ({run_dir})")
    return Trained(
        predict=predict,
        thresholds=thresholds,
        validation=validation,
        run=run_dir,
        training_stems=[s.stem for s in samples],
        labeled_defects=sum(s.defective for s in samples),
        fingerprint=fingerprint,
    )


def _train_zero_label(
    job: Job, config: StudyConfig, root: Path, run_dir: Path, device: torch.device
) -> Trained:
    from training.fit_normal import fit_normal

    fit_normal(_zero_label_config(job, config, root, run_dir, device))
    predict, thresholds, fingerprint = _load_run_predictor(run_dir, device)
    normal = load_labeled_set(root).defect_free
    validation = json.loads((run_dir / "metrics.json").read_text()).get("validation", {})
    return Trained(
        predict=predict,
        thresholds=thresholds,
        validation=validation,
        run=run_dir,
        training_stems=[s.stem for s in normal],
        labeled_defects=0,
        fingerprint=fingerprint,
    )


def _hybrid_config(
    job: Job, config: StudyConfig, root: Path, run_dir: Path, device: torch.device
) -> FinetuneConfig:
    """The study's fine-tuning settings, for this job's backbone, training folder, run folder and budget."""
    return replace(
        config.finetune,
        backbone=job.backbone or "",
        data=root,
        out=run_dir,
        labeled_defects=job.labels,
        device=str(device),
    )


def _zero_label_config(
    job: Job, config: StudyConfig, root: Path, run_dir: Path, device: torch.device
) -> FitNormalConfig:
    """The study's zero-label settings, for this job's backbone, training folder and run folder."""
    return replace(config.fit_normal, backbone=job.backbone or "", data=root, out=run_dir, device=str(device))


def _unet_config(config: StudyConfig, device: torch.device) -> UNetConfig:
    """The U-Net trains on the hybrids' tiles, batch, crops and seed, for its own number of steps."""
    finetune = config.finetune
    return UNetConfig(
        image_size=finetune.image_size,
        steps=_unet_steps(config),
        batch_size=finetune.batch_size,
        copy_paste=finetune.copy_paste,
        device=str(device),
        seed=finetune.seed,
    )


def _unet_steps(config: StudyConfig) -> int:
    steps = config.unet_steps if config.unet_steps is not None else config.finetune.steps
    if steps is None:
        raise UserError("the fine-tuning runs by --epochs, so give the U-Net its number of --unet-steps")
    return steps


def _run_settings(job: Job, config: StudyConfig, data: StudyData, device: torch.device) -> dict:
    """Every setting of the job's run (defaults included; paths and device are elsewhere in its signature)."""
    if job.model == "unet":
        settings = asdict(_unet_config(config, device))
    else:
        build = _hybrid_config if job.model == "hybrid" else _zero_label_config
        settings = config_json(
            build(job, config, _training_root(job, data), config.out / "runs" / job.key, device)
        )
    return {name: value for name, value in settings.items() if name not in ("data", "out", "device")}


def _train_unet(
    config: StudyConfig, root: Path, samples: list[LabeledSample], device: torch.device
) -> Trained:
    from benchmarks.baselines.unet import train_unet

    result = train_unet(samples, _unet_config(config, device))
    losses = result.losses
    extra = {
        "first_loss": float(np.mean(losses[:10])),
        "final_loss": float(np.mean(losses[-10:])),
        "steps": len(losses),
    }
    return Trained(
        predict=result.predictor.predict,
        thresholds=result.thresholds,
        validation=result.validation,
        run=None,  # the baseline is scored, not served: no run folder
        training_stems=[s.stem for s in samples],
        labeled_defects=sum(s.defective for s in samples),
        fingerprint=_fingerprint(samples, root),
        extra=extra,
    )


def _load_run_predictor(
    run_dir: Path, device: torch.device
) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, float], str]:
    """A saved run, back on `device`, predicting through the service's tiling (as `evaluate` does)."""
    from training.predictor import TorchPredictor, default_overlap
    from training.runs import load_run

    run = load_run(run_dir)
    predictor = TorchPredictor(
        run.model.to(device),
        tile=run.tile,
        overlap=default_overlap(run.tile),
        mean=run.mean,
        std=run.std,
        device=device,
    )
    return predictor.predict, dict(run.thresholds), run.data_fingerprint


# --- the study ---------------------------------------------------------------------------------------


def run_study(config: StudyConfig, progress: Callable[[str], None] = log.info) -> dict:
    """Train and score every model of the study; write `study.json` and `study.md` into `config.out`.

    Args:
        config: The study's options.
        progress: Called with one line per finished job.

    Returns:
        The content of `study.json`.

    Raises:
        UserError: bad options, a bad labeled set or backbone.
    """
    from training.distributed import resolve_device

    _check_config(config)
    device = resolve_device(config.finetune.device)
    labels_of = _backbone_labels(config.backbones, config.finetune.image_size)
    data = prepare_splits(config)
    study: dict[str, Any] = {
        "config": _config_record(config, device),
        "split": _split_record(data, config),
        "rows": [],
    }
    jobs = plan_jobs(config)
    started = time.perf_counter()
    for number, job in enumerate(jobs, start=1):
        rows, seconds, cached = _run_job(job, config, data, device, labels_of)
        study["rows"] += rows
        write_study(study, config.out)
        scores = "; ".join(f"{r['evaluated_on']}: {_scores(r['metrics'])}" for r in rows)
        how = "cached" if cached else f"{seconds:.1f} s"
        total = time.perf_counter() - started
        progress(
            f"[{number}/{len(jobs)}] {_job_title(job, labels_of)}: {scores} ({how}, {total:.0f} s total)"
        )
    return study


def run_seeded_studies(
    config: StudyConfig, seeds: Sequence[int], progress: Callable[[str], None] = log.info
) -> dict:
    """The study once per seed (each in `OUT/seed-N`), then `summary.json` and `summary.md` over them.

    Each seed draws its own test split, label picks and training randomness; the summary gives every
    row's mean, spread and worst seed. Finished seeds are reused like finished jobs, so adding a seed
    to the command trains only the new one.

    Returns:
        The content of `summary.json`.

    Raises:
        UserError: fewer than two seeds, a repeated seed, or anything `run_study` rejects.
    """
    if len(seeds) < 2:
        raise UserError("a multi-seed study needs at least two seeds; with one, run the study itself")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"a seed is given twice: {', '.join(map(str, seeds))}")
    _check_config(config)
    studies = {}
    for number, seed in enumerate(seeds, start=1):
        progress(f"seed {seed} ({number}/{len(seeds)})")
        studies[seed] = run_study(config.with_seed(seed, seed_folder(config.out, seed)), progress)
    summary = summarize_seeds(studies)
    write_summary(summary, config.out)
    return summary


def _run_job(
    job: Job, config: StudyConfig, data: StudyData, device: torch.device, labels_of: dict[str, str]
) -> tuple[list[dict], float, bool]:
    """The rows of one job: from its saved result when that was made with the same inputs, else trained now."""
    # Compared in the form it reads back from disk (tuples become lists).
    signature = json.loads(json.dumps(_job_signature(job, config, data, device)))
    result_path = config.out / "runs" / job.key / RESULT_FILE
    if result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved.get("signature") == signature:
            # The label depends on the other backbones of this study (a repeated source gets its path).
            rows = [{**row, "backbone": _backbone_label(job, labels_of)} for row in saved["rows"]]
            return rows, saved["seconds"], True
    start = time.perf_counter()
    trained = train_job(job, config, data, device)
    maps = [trained.predict(image) for image in data.test.images]
    seconds = time.perf_counter() - start
    rows = [_row(job, evaluation, trained, maps, data, labels_of, seconds) for evaluation in job.evaluations]
    result_path.parent.mkdir(parents=True, exist_ok=True)
    result_path.write_text(
        json.dumps({"signature": signature, "seconds": seconds, "rows": rows}, indent=1, default=float) + "\n"
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, seconds, False


def _row(
    job: Job,
    evaluation: EvalSet,
    trained: Trained,
    maps: list[np.ndarray],
    data: StudyData,
    labels_of: dict[str, str],
    seconds: float,
) -> dict:
    indices = list(range(len(maps))) if evaluation == "test" else data.held_out_indices
    masks, samples = data.test.masks, data.test.samples
    metrics = metrics_by_group(
        [maps[i] for i in indices],
        [masks[i] for i in indices],
        [samples[i].defect_types for i in indices],
        trained.thresholds,
        lines=[samples[i].line for i in indices],
    )
    return {
        "model": job.model,
        "backbone": _backbone_label(job, labels_of),
        "backbone_spec": job.backbone,
        "labels_per_line": job.labels,
        "trained_on": job.trained_on,
        "evaluated_on": evaluation,
        "metrics": metrics,
        "thresholds": trained.thresholds,
        "validation": trained.validation,
        "training_images": trained.training_stems,
        "labeled_defect_images": trained.labeled_defects,
        "training_fingerprint": trained.fingerprint,
        "test_images": [samples[i].stem for i in indices],
        "run": str(trained.run) if trained.run else None,
        "seconds": seconds,
        **trained.extra,
    }


def _backbone_label(job: Job, labels_of: dict[str, str]) -> str | None:
    return labels_of[job.backbone] if job.backbone else None


def _job_signature(job: Job, config: StudyConfig, data: StudyData, device: torch.device) -> dict:
    """Everything a job's result depends on; a saved result is reused only when all of it matches."""
    digest = hashlib.sha256("\n".join(data.test_stems).encode()).hexdigest()
    root = _training_root(job, data)
    return {
        "job": asdict(job),
        "backbone_file": _backbone_identity(job.backbone),
        "seed": config.seed,  # of the splits and label picks; each run's own is in its settings
        "device": device.type,
        "test_fraction": config.test_fraction,
        "held_out_types": list(config.held_out_types),
        "data": str(config.data.resolve()),
        "test_split": digest,
        "training_folder": _fingerprint(load_labeled_set(root).samples, root),
        # How image thresholds are chosen and images scored: results chosen another way are stale.
        "decision_rule": DECISION_RULE,
        # Every setting of the job's run config, defaults included: a new default makes the result stale too,
        # and a setting only other models read (a hybrid's bank for a U-Net, say) leaves it valid.
        "run_settings": _run_settings(job, config, data, device),
    }


def _backbone_identity(spec: str | None) -> str | None:
    """The backbone file's size and modification time, so a re-pretrained backbone invalidates old results."""
    if spec is None or spec.startswith(RANDOM_PREFIX):
        return spec
    path = Path(spec)
    path = path / BACKBONE_FILE if path.is_dir() else path
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _check_config(config: StudyConfig) -> None:
    if not config.backbones:
        raise UserError("give at least one --backbone")
    if not config.labels or min(config.labels) < 1:
        raise UserError("--labels needs at least one budget of 1 or more labeled images per line")
    if not 0.0 < config.test_fraction < 1.0:
        raise UserError(f"--test-fraction must lie between 0 and 1, got {config.test_fraction}")
    if len(set(config.backbones)) != len(config.backbones):
        raise UserError("the same --backbone is given twice")
    if config.unet_steps is not None and config.unet_steps < 1:
        raise UserError(f"--unet-steps must be at least 1, got {config.unet_steps}")
    if config.include_unet:
        _unet_steps(config)


def _backbone_labels(specs: tuple[str, ...], image_size: int) -> dict[str, str]:
    """Short names for the tables ('densedino:vit_small_patch16_224'); loads each backbone once to fail early."""
    from training.models.backbone import load_backbone
    from training.models.hybrid import backbone_recipe

    sources = {}
    for spec in specs:
        load_backbone(spec, img_size=image_size)
        sources[spec] = backbone_recipe(spec).source
    repeated = {s for s in sources.values() if list(sources.values()).count(s) > 1}
    return {spec: f"{source} ({spec})" if source in repeated else source for spec, source in sources.items()}


def _config_record(config: StudyConfig, device: torch.device) -> dict:
    """The study's own options, then each run template's settings (the device as resolved)."""
    runs = {"finetune": config.finetune, "fit_normal": config.fit_normal}
    record: dict[str, Any] = {
        name: value
        for name, value in config_json(config).items()
        if name not in runs  # `config_json` would keep the templates' placeholder paths
    }
    record.update(
        seed=config.seed,
        device=str(device),
        unet_steps=_unet_steps(config) if config.include_unet else None,
        held_out_budget=config.held_out_budget if config.held_out_types else None,
    )
    for name, run in runs.items():
        settings = config_json(replace(run, device=str(device)))
        record[name] = {key: value for key, value in settings.items() if key not in PER_JOB}
    return record


def _split_record(data: StudyData, config: StudyConfig) -> dict:
    pool = load_labeled_set(data.pool_dir)
    per_line = {
        line: sum(1 for s in pool.defective if (s.line or "") == line)
        for line in sorted({s.line or "" for s in pool.defective})
    }
    short = {line: n for line, n in per_line.items() if n < max(config.labels)}
    if short:
        log.warning("lines with fewer labeled defect images than the largest budget: %s", short)
    return {
        "pool": str(data.pool_dir),
        "test": str(data.test_dir),
        "pool_images": len(pool.samples),
        "pool_defective_per_line": per_line,
        "test_images": data.test_stems,
        "test_defective": sum(1 for m in data.test.masks if m.any()),
        "held_out_test_images": len(data.held_out_indices),
        "lines": data.lines,
    }


def _slug(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip("/"))
    return keep[-60:].strip("-.") or "backbone"


def _scores(metrics: dict) -> str:
    return f"pixel AUROC {metrics['pixel_auroc']:.3f}, AUPRO {metrics['aupro']:.3f}, image AUROC {metrics['image_auroc']:.3f}"


def _job_title(job: Job, labels_of: dict[str, str]) -> str:
    name = {"hybrid": "hybrid", "unet": "U-Net", "zero-label": "zero-label"}[job.model]
    backbone = f" {labels_of[job.backbone]}" if job.backbone else ""
    seen = ", held-out types excluded" if job.trained_on != "pool" else ""
    return f"{name}{backbone}, {job.labels} labels/line{seen}"

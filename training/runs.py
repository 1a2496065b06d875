"""Run folders as `finetune` and `fit-normal` leave them, and as `evaluate` and `export` read them.

A run directory stores the model as `model.pt` (recipe + weights, `training.models.hybrid`) beside
`threshold.json`, `metrics.json` and a few real tiles for export's parity check.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspect_svc.engine.tiling import extract_tiles, plan_tiles
from training.data.normalisation import normalise_image
from training.errors import UserError
from training.models.backbone import patch_size_of
from training.models.hybrid import BackboneRecipe, InspectionModel, assemble_model, heads_payload

MODEL_FILE = "model.pt"
THRESHOLD_FILE = "threshold.json"
METRICS_FILE = "metrics.json"
SAMPLE_TILES_FILE = "sample_tiles.pt"


@dataclass
class RunModel:
    """A model run as `finetune`/`fit-normal` leave it, ready to evaluate or export."""

    model: InspectionModel
    tile: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    backbone_name: str
    data_fingerprint: str
    root: Path

    @property
    def patch_size(self) -> int:
        return patch_size_of(self.model.backbone)


def save_run(
    root: Path,
    model: InspectionModel,
    *,
    recipe: BackboneRecipe,
    tile: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    thresholds: dict[str, float],
    metrics: dict[str, Any],
    data_fingerprint: str,
    sample_tiles: torch.Tensor,
) -> None:
    """Write `model.pt`, `threshold.json`, `metrics.json` and a few real tiles for export's parity check."""
    root.mkdir(parents=True, exist_ok=True)
    payload = {
        "kind": model.kind,
        "backbone": {"arch": recipe.arch, "model_kwargs": recipe.model_kwargs, "source": recipe.source},
        "tile": int(tile),
        "mean": list(mean),
        "std": list(std),
        **heads_payload(model),
        "data_fingerprint": data_fingerprint,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    tmp = root / (MODEL_FILE + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(root / MODEL_FILE)
    (root / THRESHOLD_FILE).write_text(json.dumps(thresholds, indent=2) + "\n")
    (root / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    torch.save(sample_tiles.detach().cpu().float(), root / SAMPLE_TILES_FILE)


def load_run(root: Path | str) -> RunModel:
    """Rebuild the model of a run directory (eval mode, CPU).

    Raises:
        UserError: the folder holds no readable `model.pt`.
    """
    root = Path(root)
    model_path = root / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"{root} is not a model run (no {MODEL_FILE}); run finetune or fit-normal first")
    try:
        payload = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(f"{model_path} is not readable ({type(error).__name__})") from None
    tile = int(payload["tile"])
    recipe = BackboneRecipe(
        payload["backbone"]["arch"], payload["backbone"]["model_kwargs"], payload["backbone"]["source"]
    )
    backbone = recipe.build(tile)
    model = assemble_model(backbone, payload)
    model.load_state_dict(payload["state_dict"])
    return RunModel(
        model=model.eval(),
        tile=tile,
        mean=tuple(payload["mean"]),
        std=tuple(payload["std"]),
        thresholds=json.loads((root / THRESHOLD_FILE).read_text()),
        metrics=json.loads((root / METRICS_FILE).read_text()) if (root / METRICS_FILE).is_file() else {},
        backbone_name=recipe.source,
        data_fingerprint=payload.get("data_fingerprint", ""),
        root=root,
    )


def load_sample_tiles(root: Path) -> torch.Tensor | None:
    path = Path(root) / SAMPLE_TILES_FILE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def data_fingerprint(paths: list[Path], root: Path) -> str:
    """sha256 over the sorted relative paths and sizes of the training files (cheap, content-sensitive enough)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def sample_tiles(
    images: list[np.ndarray], tile: int, mean: tuple[float, ...], std: tuple[float, ...], count: int = 4
) -> torch.Tensor:
    """A few real normalised tiles (top-left of each image) for export's parity check."""
    tiles = []
    for image in images[:count]:
        box = plan_tiles(image.shape[0], image.shape[1], tile, 0)[:1]
        tiles.append(extract_tiles(normalise_image(image, mean, std), box, tile))
    return torch.from_numpy(np.concatenate(tiles))

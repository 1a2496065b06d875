"""The served model: one backbone, a supervised head, a zero-label anomaly head, and their fusion.

`InspectionModel` maps normalised tiles `[N, 3, T, T]` to a defect probability per pixel. Its kind
follows from the heads it holds: "supervised" (head only), "zero-label" (anomaly head only), or
"hybrid", where p = 1 − (1 − p_head)(1 − w · p_anomaly): a noisy-OR, so a defect type nobody labeled
still lights up through the anomaly branch, and w (fitted on validation) tempers its false alarms.
The anomaly branch scores ViT patch features (zero-label runs) or, in a hybrid, the head's own conv
encoder at 1/2 resolution (see `training.models.anomaly`).

A run directory stores it as `model.pt` (recipe + weights) beside `threshold.json` and `metrics.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from training.errors import UserError
from training.models.anomaly import AnomalyHead
from training.models.backbone import BACKBONE_FILE, RANDOM_PREFIX, create_vit, patch_size_of
from training.models.segmentation import EncodedImage, SegmentationHead, fix_input_size, vit_feature_maps

MODEL_FILE = "model.pt"
THRESHOLD_FILE = "threshold.json"
METRICS_FILE = "metrics.json"
SAMPLE_TILES_FILE = "sample_tiles.pt"

ModelKind = Literal["supervised", "zero-label", "hybrid"]


class InspectionModel(nn.Module):
    """Backbone + optional segmentation head + optional anomaly head → probability `[N, 1, T, T]`."""

    def __init__(
        self,
        backbone: VisionTransformer,
        *,
        segmentation: SegmentationHead | None = None,
        anomaly: AnomalyHead | None = None,
        fusion_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if segmentation is None and anomaly is None:
            raise ValueError("an inspection model needs a segmentation head, an anomaly head, or both")
        if anomaly is not None and anomaly.source == "conv" and segmentation is None:
            raise ValueError("an anomaly head on conv features needs the segmentation head that computes them")
        self.backbone = backbone
        self.segmentation = segmentation
        self.anomaly = anomaly
        self.register_buffer("fusion_weight", torch.tensor(float(fusion_weight)))

    @property
    def kind(self) -> ModelKind:
        if self.segmentation is not None and self.anomaly is not None:
            return "hybrid"
        return "supervised" if self.segmentation is not None else "zero-label"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p_head, p_anomaly = self.branch_probabilities(images)
        if p_head is None or p_anomaly is None:
            return p_head if p_anomaly is None else p_anomaly
        return self.fuse(p_head, p_anomaly)

    def fuse(self, p_head: torch.Tensor, p_anomaly: torch.Tensor) -> torch.Tensor:
        """The hybrid's map from its two branches, at the model's fusion weight (`fuse_branches`)."""
        return fuse_branches(p_head, p_anomaly, self.fusion_weight)

    def branch_probabilities(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(p_head, p_anomaly) separately, for fitting the fusion weight; None for a missing branch."""
        maps = vit_feature_maps(self.backbone, images, self._blocks())
        encoded = self.segmentation.encode(images) if self.segmentation is not None else None
        p_head = torch.sigmoid(self.segmentation.decode(encoded, maps)) if encoded is not None else None
        p_anomaly = None
        if self.anomaly is not None:
            p_anomaly = self.anomaly(images.shape[-2:], self._anomaly_features(images, maps, encoded))
        return p_head, p_anomaly

    def anomaly_features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map the anomaly branch scores, as its memory bank holds it: `[N, C, h, w]`."""
        return self.anomaly.local_features(self._anomaly_input(images))

    def anomaly_raw_score(self, images: torch.Tensor) -> torch.Tensor:
        """The anomaly branch's uncalibrated per-pixel score (what its calibration is fitted on)."""
        return self.anomaly.raw_score(images.shape[-2:], self._anomaly_input(images))

    def _anomaly_input(self, images: torch.Tensor) -> torch.Tensor:
        """The anomaly branch's input alone (ViT blocks or conv encoder, whichever it reads)."""
        if self.anomaly is None:
            raise ValueError("this model has no anomaly head")
        if self.anomaly.source == "vit":
            maps = vit_feature_maps(self.backbone, images, self.anomaly.feature_blocks)
            return self._anomaly_features(images, maps, None)
        return self._anomaly_features(images, {}, self.segmentation.encode(images))

    def _anomaly_features(self, images: torch.Tensor, maps: dict[int, torch.Tensor], encoded: EncodedImage | None) -> torch.Tensor:
        """The anomaly branch's input before its neighbourhood averaging."""
        if self.anomaly.source == "vit":
            features = torch.cat([maps[b] for b in self.anomaly.feature_blocks], dim=1)
        elif encoded is None:
            raise ValueError("conv anomaly features need the segmentation head's encoder")
        else:
            features = encoded.half
        return self.anomaly.with_pixels(features, images)

    def segmentation_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The supervised head's logits (what fine-tuning trains)."""
        if self.segmentation is None:
            raise ValueError("this model has no segmentation head")
        maps = vit_feature_maps(self.backbone, images, self.segmentation.feature_blocks)
        return self.segmentation(images, maps)

    def _blocks(self) -> tuple[int, ...]:
        blocks: set[int] = set(self.segmentation.feature_blocks) if self.segmentation is not None else set()
        if self.anomaly is not None and self.anomaly.source == "vit":
            blocks.update(self.anomaly.feature_blocks)
        return tuple(sorted(blocks))


@dataclass(frozen=True)
class BackboneRecipe:
    """What rebuilding the backbone's architecture needs (its weights travel in `model.pt`)."""

    arch: str
    model_kwargs: dict[str, Any]
    source: str

    def build(self, img_size: int) -> VisionTransformer:
        backbone = create_vit(self.arch, img_size=img_size, model_kwargs=self.model_kwargs)
        return fix_input_size(backbone, img_size)


def backbone_recipe(spec: str | Path) -> BackboneRecipe:
    """Read the architecture named by a backbone spec (as `load_backbone` accepts it)."""
    text = str(spec)
    if text.startswith(RANDOM_PREFIX):
        return BackboneRecipe(arch=text[len(RANDOM_PREFIX):], model_kwargs={}, source=text)
    path = Path(spec)
    path = path / BACKBONE_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"no backbone at {path} (expected a pretrain run folder, a backbone.pt or random:<arch>)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    objective = payload.get("objective", "pretrained")
    return BackboneRecipe(arch=payload["arch"], model_kwargs=dict(payload.get("model_kwargs") or {}), source=f"{objective}:{payload['arch']}")


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
        "segmentation": model.segmentation.config if model.segmentation is not None else None,
        "anomaly": model.anomaly.config if model.anomaly is not None else None,
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
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign or truncated file
        raise UserError(f"{model_path} is not readable ({type(error).__name__})") from None
    tile = int(payload["tile"])
    recipe = BackboneRecipe(payload["backbone"]["arch"], payload["backbone"]["model_kwargs"], payload["backbone"]["source"])
    backbone = recipe.build(tile)
    model = _assemble(backbone, payload)
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


def _assemble(backbone: VisionTransformer, payload: dict[str, Any]) -> InspectionModel:
    segmentation = anomaly = None
    if payload.get("segmentation"):
        segmentation = SegmentationHead.from_config(backbone.embed_dim, payload["segmentation"])
    if payload.get("anomaly"):
        cfg = payload["anomaly"]
        anomaly = AnomalyHead(torch.zeros(cfg["bank_shape"]), cfg["feature_blocks"], blur_sigma=cfg["blur_sigma"],
                              source=cfg.get("source", "vit"), stride=cfg.get("stride", 1),  # older runs: vit, 1, 0
                              neighbour_tiles=cfg.get("neighbour_tiles", 0), context=cfg.get("context", 0),
                              pixel_weight=cfg.get("pixel_weight", 0.0))
    return InspectionModel(backbone, segmentation=segmentation, anomaly=anomaly)


Maps = TypeVar("Maps", torch.Tensor, np.ndarray)


def fuse_branches(p_head: Maps, p_anomaly: Maps, weight: float | torch.Tensor) -> Maps:
    """A pixel is defective unless both the head and the anomaly branch, weighted by `weight`, say no.

    Plain arithmetic, so the same function fuses tensors inside the model (and its exported graph)
    and numpy maps when a weight is chosen or compared.
    """
    return 1.0 - (1.0 - p_head) * (1.0 - weight * p_anomaly)


def fit_fusion_weight(
    p_head: list[np.ndarray], p_anomaly: list[np.ndarray], masks: list[np.ndarray], candidates: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
) -> float:
    """Pick the anomaly branch's weight w on validation maps, by pooled pixel AUROC + AUPRO.

    w = 0 is not a candidate: validation only holds the defect types someone labeled, and the anomaly
    branch is there for the ones nobody did, so validation alone would always undervalue it.
    """
    from training.metrics import aupro, auroc

    labels = np.concatenate([m.ravel() for m in masks]).astype(bool)
    if not labels.any() or labels.all():
        return 1.0
    best_weight, best_score = candidates[-1], -np.inf
    for weight in candidates:
        fused = [fuse_branches(h, a, weight) for h, a in zip(p_head, p_anomaly)]
        score = auroc(np.concatenate([f.ravel() for f in fused]), labels) + np.nan_to_num(aupro(fused, masks))
        if score > best_score:
            best_weight, best_score = weight, score
    return float(best_weight)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def normalise_image(image_rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 RGB [H, W, 3] → float32 [3, H, W]: (pixel / 255 − mean) / std, as the service does it."""
    planes = image_rgb.astype(np.float32).transpose(2, 0, 1) / 255.0
    return (planes - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


class TorchPredictor:
    """Whole-frame prediction with a PyTorch model through the service's own tiling code.

    Args:
        model: any module mapping normalised tiles `[n, 3, T, T]` to `[n, 1, T, T]`.
        tile: the model's input size.
        overlap: pixels shared by neighbouring tiles.
        mean: channel means used for normalisation.
        std: channel standard deviations.
        batch_size: tiles per forward pass.
        device: where the tiles go; the model must already be there.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tile: int,
        overlap: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        batch_size: int = 16,
        device: torch.device | str = "cpu",
    ) -> None:
        self.model, self.tile, self.overlap = model, tile, overlap
        self.mean, self.std, self.batch_size, self.device = mean, std, batch_size, torch.device(device)

    @torch.no_grad()
    def predict(self, image_rgb: np.ndarray) -> np.ndarray:
        """Probability per pixel, float32 [H, W]."""
        return self.predict_outputs(image_rgb, lambda tiles: self.model(tiles))[0]

    @torch.no_grad()
    def predict_outputs(self, image_rgb: np.ndarray, forward: Any) -> list[np.ndarray]:
        """Stitch each map that `forward(tiles)` returns (a tensor or a tuple of `[n, 1, T, T]` tensors)."""
        from inspect_svc.engine.tiling import extract_tiles, make_plan, stitch_plan

        plan = make_plan(image_rgb.shape[0], image_rgb.shape[1], self.tile, self.overlap)
        tiles = extract_tiles(normalise_image(image_rgb, self.mean, self.std), plan.boxes, self.tile)
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(tiles), self.batch_size):
            batch = torch.from_numpy(tiles[start : start + self.batch_size]).to(self.device)
            outputs = forward(batch)
            outputs = outputs if isinstance(outputs, tuple) else (outputs,)
            chunks.append([out[:, 0].float().cpu().numpy() for out in outputs])
        return [stitch_plan(np.concatenate([c[i] for c in chunks]), plan) for i in range(len(chunks[0]))]


def default_overlap(tile: int) -> int:
    """Tile overlap used for serving and evaluation: an eighth of the tile."""
    return tile // 8

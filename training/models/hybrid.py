"""The served model: one backbone, a supervised head, a zero-label anomaly head, and their fusion.

`InspectionModel` maps normalised tiles `[N, 3, T, T]` to a defect probability per pixel. Its kind
follows from the heads it holds: "supervised" (head only), "zero-label" (anomaly head only), or
"hybrid", where p = 1 − (1 − p_head)(1 − w · p_anomaly): a noisy-OR, so a defect type nobody labeled
still lights up through the anomaly branch, and w (fitted on validation, `training.fusion`) tempers
its false alarms. The anomaly branch scores ViT patch features (zero-label runs) or, in a hybrid, the
head's own conv encoder at 1/2 resolution (see `training.models.anomaly`). How a run folder stores it:
`training.runs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from training.errors import UserError
from training.models.anomaly import AnomalyHead
from training.models.backbone import BACKBONE_FILE, RANDOM_PREFIX, create_vit
from training.models.segmentation import EncodedImage, SegmentationHead, fix_input_size, vit_feature_maps

ModelKind = Literal["supervised", "zero-label", "hybrid"]


class InspectionModel(nn.Module):
    """Backbone + optional segmentation head + optional anomaly head → probability `[N, 1, T, T]`."""

    def __init__(
        self,
        backbone: VisionTransformer,
        *,
        segmentation: SegmentationHead | None = None,
        anomaly: AnomalyHead | None = None,
        label_free: InspectionModel | None = None,
        fusion_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if segmentation is None and anomaly is None:
            raise ValueError("an inspection model needs a segmentation head, an anomaly head, or both")
        if anomaly is not None and anomaly.source == "conv" and segmentation is None:
            raise ValueError(
                "an anomaly head on conv features needs the segmentation head that computes them"
            )
        if label_free is not None:
            _check_label_free(backbone, segmentation, anomaly, label_free)
        self.backbone = backbone
        self.segmentation = segmentation
        self.anomaly = anomaly
        self.label_free = label_free
        self.register_buffer("fusion_weight", torch.tensor(float(fusion_weight)))

    @property
    def kind(self) -> ModelKind:
        """zero-label when no head learned from labels (a discriminator trained on synthetic anomalies
        keeps a model zero-label); hybrid when a labeled head is fused with a label-free branch."""
        if self.segmentation is None or self.segmentation.trained_on != "labels":
            return "zero-label"
        return "hybrid" if self.anomaly is not None or self.label_free is not None else "supervised"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._fused(*self.branch_probabilities(images))

    def fuse(self, p_head: torch.Tensor, p_anomaly: torch.Tensor) -> torch.Tensor:
        """The hybrid's map from its two branches, at the model's fusion weight (`fuse_branches`)."""
        return fuse_branches(p_head, p_anomaly, self.fusion_weight)

    def branch_probabilities(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(p_head, p_anomaly) separately, for fitting the fusion weight; None for a missing branch.

        With a label-free model, p_anomaly is that model's own fused map.
        """
        return self._branches(images, vit_feature_maps(self.backbone, images, self._blocks()))

    def _branches(
        self, images: torch.Tensor, maps: dict[int, torch.Tensor]
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """`branch_probabilities` on ViT maps already computed (a label-free model reuses its host's)."""
        encoded = self.segmentation.encode(images) if self.segmentation is not None else None
        p_head = torch.sigmoid(self.segmentation.decode(encoded, maps)) if encoded is not None else None
        p_anomaly = None
        if self.label_free is not None:
            free_head, free_anomaly = self.label_free._branches(images, maps)
            p_anomaly = self.label_free._fused(free_head, free_anomaly)
        elif self.anomaly is not None:
            p_anomaly = self.anomaly(images.shape[-2:], self._anomaly_features(images, maps, encoded))
        return p_head, p_anomaly

    def _fused(self, p_head: torch.Tensor | None, p_anomaly: torch.Tensor | None) -> torch.Tensor:
        if p_head is None or p_anomaly is None:
            present = p_head if p_anomaly is None else p_anomaly
            if present is None:
                raise ValueError("a model without branches has no map")
            return present
        return self.fuse(p_head, p_anomaly)

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

    def _anomaly_features(
        self, images: torch.Tensor, maps: dict[int, torch.Tensor], encoded: EncodedImage | None
    ) -> torch.Tensor:
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
        if self.label_free is not None:
            blocks.update(self.label_free._blocks())
        return tuple(sorted(blocks))


def _check_label_free(
    backbone: nn.Module,
    segmentation: SegmentationHead | None,
    anomaly: AnomalyHead | None,
    label_free: InspectionModel,
) -> None:
    """A label-free model stands in for the anomaly head beside a segmentation head, on the same backbone."""
    if segmentation is None or anomaly is not None:
        raise ValueError("a label-free model takes the anomaly head's place beside a segmentation head")
    if label_free.backbone is not backbone:
        raise ValueError("a label-free model must read the same backbone as the model it is part of")
    if label_free.label_free is not None:
        raise ValueError("a label-free model cannot hold another one")


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
        return BackboneRecipe(arch=text[len(RANDOM_PREFIX) :], model_kwargs={}, source=text)
    path = Path(spec)
    path = path / BACKBONE_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(
            f"no backbone at {path} (expected a pretrain run folder, a backbone.pt or random:<arch>)"
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    objective = payload.get("objective", "pretrained")
    return BackboneRecipe(
        arch=payload["arch"],
        model_kwargs=dict(payload.get("model_kwargs") or {}),
        source=f"{objective}:{payload['arch']}",
    )


def assemble_model(backbone: VisionTransformer, payload: dict[str, Any]) -> InspectionModel:
    """Rebuild the heads a run payload (`model.pt`) describes around `backbone`; weights are loaded after."""
    label_free = assemble_model(backbone, payload["label_free"]) if payload.get("label_free") else None
    segmentation = anomaly = None
    if payload.get("segmentation"):
        segmentation = SegmentationHead.from_config(backbone.embed_dim, payload["segmentation"])
    if payload.get("anomaly"):
        cfg = payload["anomaly"]
        anomaly = AnomalyHead(
            torch.zeros(cfg["bank_shape"]),
            cfg["feature_blocks"],
            blur_sigma=cfg["blur_sigma"],
            source=cfg.get("source", "vit"),
            stride=cfg.get("stride", 1),  # older runs: vit, 1, 0
            neighbour_tiles=cfg.get("neighbour_tiles", 0),
            context=cfg.get("context", 0),
            pixel_weight=cfg.get("pixel_weight", 0.0),
        )
    return InspectionModel(backbone, segmentation=segmentation, anomaly=anomaly, label_free=label_free)


def heads_payload(model: InspectionModel) -> dict[str, Any]:
    """The head configs `assemble_model` rebuilds a model from (weights travel in the state dict)."""
    return {
        "segmentation": model.segmentation.config if model.segmentation is not None else None,
        "anomaly": model.anomaly.config if model.anomaly is not None else None,
        "label_free": heads_payload(model.label_free) if model.label_free is not None else None,
    }


Maps = TypeVar("Maps", torch.Tensor, np.ndarray)


def fuse_branches(p_head: Maps, p_anomaly: Maps, weight: float | torch.Tensor) -> Maps:
    """A pixel is defective unless both the head and the anomaly branch, weighted by `weight`, say no.

    Plain arithmetic, so the same function fuses tensors inside the model (and its exported graph)
    and numpy maps when a weight is chosen or compared.
    """
    return 1.0 - (1.0 - p_head) * (1.0 - weight * p_anomaly)

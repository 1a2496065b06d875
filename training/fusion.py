"""Fitting the hybrid's fusion weight: how much the anomaly branch counts beside the supervised head."""

from __future__ import annotations

import numpy as np

from training.metrics import aupro, auroc
from training.models.hybrid import fuse_branches


def fit_fusion_weight(
    p_head: list[np.ndarray],
    p_anomaly: list[np.ndarray],
    masks: list[np.ndarray],
    candidates: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0),
) -> float:
    """Pick the anomaly branch's weight w on validation maps, by pooled pixel AUROC + AUPRO.

    w = 0 is not a candidate: validation only holds the defect types someone labeled, and the anomaly
    branch is there for the ones nobody did, so validation alone would always undervalue it.
    """
    labels = np.concatenate([m.ravel() for m in masks]).astype(bool)
    if not labels.any() or labels.all():
        return 1.0
    best_weight, best_score = candidates[-1], -np.inf
    for weight in candidates:
        fused = [fuse_branches(h, a, weight) for h, a in zip(p_head, p_anomaly, strict=True)]
        score = auroc(np.concatenate([f.ravel() for f in fused]), labels) + np.nan_to_num(aupro(fused, masks))
        if score > best_score:
            best_weight, best_score = weight, score
    return float(best_weight)

"""Class-map metrics from confusion matrices: IoU and F1 per class, mean IoU, per-scene means.

Dronescapes reports a scene's mean IoU as the mean over classes of IoUs computed from that scene's
pooled confusion matrix, and a split's score as the mean of its scenes' means: `ClassMetrics`
keeps one confusion matrix per scene (video) and reports both that and the pooled figures.
A class that appears in neither the prediction nor the target of a scene has no IoU there (NaN)
and is left out of that scene's mean.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """int64 [K, K]: entry [t, p] counts pixels of target class t predicted as p.

    pred, target: integer tensors of one shape; target values outside 0..K-1 (e.g. 255, the store's
    "no label") are ignored, as are predictions outside it.
    """
    t, p = target.reshape(-1).long(), pred.reshape(-1).long()
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    flat = torch.bincount(t[keep] * num_classes + p[keep], minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def iou_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class IoU = TP/(TP+FP+FN) and F1 = 2TP/(2TP+FP+FN), float64 [K]; NaN where TP+FP+FN = 0."""
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    support = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return iou, f1


def _nanmean(values) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


class ClassMetrics:
    """Accumulates confusion matrices of one class node, per scene."""

    def __init__(self, classes: Sequence[str]):
        self.classes = tuple(classes)
        self.scenes: dict[str, np.ndarray] = {}

    def update(self, scenes: Sequence[str], pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: scenes [B] (scene name of each sample), pred and target int [B, H, W]."""
        k = len(self.classes)
        for i, scene in enumerate(scenes):
            cm = confusion_matrix(pred[i], target[i], k)
            self.scenes[scene] = self.scenes.get(scene, 0) + cm

    def _per_class(self, values: np.ndarray) -> dict[str, float | None]:
        return {c: (None if np.isnan(v) else float(v)) for c, v in zip(self.classes, values)}

    def summary(self) -> dict:
        """{iou: {class: v}, f1: {class: v}, miou, mf1, scene_miou: {scene: v}, miou_scenes}.

        iou/f1/miou/mf1 pool every pixel; scene_miou is each scene's mean over classes and
        miou_scenes their mean (the Dronescapes figure). None where nothing was seen.
        """
        if not self.scenes:
            return {"iou": {}, "f1": {}, "miou": None, "mf1": None, "scene_miou": {}, "miou_scenes": None}
        pooled = sum(self.scenes.values())
        iou, f1 = iou_f1(pooled)
        scene_miou = {s: _nanmean(iou_f1(cm)[0]) for s, cm in sorted(self.scenes.items())}
        return {"iou": self._per_class(iou), "f1": self._per_class(f1), "miou": _nanmean(iou), "mf1": _nanmean(f1),
                "scene_miou": scene_miou,
                "miou_scenes": _nanmean([v for v in scene_miou.values() if v is not None])}

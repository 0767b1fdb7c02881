"""Accuracy overall, per class and per group, from a FeatureSet."""
from __future__ import annotations

import torch

from neuroinspect.core.featureset import FeatureSet


def accuracy_by(labels: torch.Tensor, predictions: torch.Tensor, keys: torch.Tensor, names: list[str]) -> dict[str, float]:
    """Accuracy for each value of ``keys`` that occurs (keys index ``names``; negative keys ignored)."""
    out = {}
    correct = (labels == predictions).float()
    for k in keys.unique().tolist():
        if k < 0:
            continue
        sel = keys == k
        out[names[k] if k < len(names) else str(k)] = float(correct[sel].mean())
    return out


def evaluate(fs: FeatureSet, predictions: torch.Tensor | None = None) -> dict:
    """``{"accuracy", "per_class", "per_group", "worst_class", "worst_group", "n"}`` (fractions 0–1)."""
    pred = fs.predictions if predictions is None else predictions
    n = len(fs)
    acc = float((pred == fs.labels).float().mean()) if n else float("nan")
    names = fs.class_names or [str(i) for i in range(int(fs.labels.max()) + 1 if n else 0)]
    per_class = accuracy_by(fs.labels, pred, fs.labels, names)
    per_group = accuracy_by(fs.labels, pred, fs.groups, fs.group_names) if fs.group_names else {}
    return {
        "accuracy": acc,
        "per_class": per_class,
        "per_group": per_group,
        "worst_class": min(per_class, key=per_class.get) if per_class else None,
        "worst_group": min(per_group, key=per_group.get) if per_group else None,
        "n": n,
    }

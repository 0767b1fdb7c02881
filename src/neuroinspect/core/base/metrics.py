"""Accuracy overall, per class and per group, as a :class:`~neuroinspect.core.base.records.Metrics` record.

The worst class and group are picked by :func:`~neuroinspect.core.base.summary.summarize` (re-exported
here with :func:`worst` and :func:`finite_or_none`), the only function that does.

No torch import at module level: the report reads metrics without loading torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from neuroinspect.core.base.records import Metrics
from neuroinspect.core.base.summary import Summary, finite_or_none, summarize, worst  # noqa: F401 (re-exported)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from neuroinspect.core.model.featureset import FeatureSet


def accuracy_by(labels: "torch.Tensor", predictions: "torch.Tensor", keys: "torch.Tensor", names: list[str]) -> dict[str, float]:
    """Accuracy for each value of ``keys`` that occurs (keys index ``names``; negative keys ignored)."""
    out = {}
    correct = (labels == predictions).float()
    for k in keys.unique().tolist():
        if k < 0:
            continue
        sel = keys == k
        out[names[k] if k < len(names) else str(k)] = float(correct[sel].mean())
    return out


def metrics_of(labels: "torch.Tensor", predictions: "torch.Tensor", class_names: list[str],
               groups: "torch.Tensor | None" = None, group_names: list[str] | None = None) -> "Metrics":
    """The :class:`~neuroinspect.core.base.records.Metrics` of ``predictions`` against ``labels``: overall, per
    class (keys index ``class_names``) and, when ``groups`` are given, per group (keys index ``group_names``;
    a key past the names is written as its number; negative keys are ignored)."""
    n = len(labels)
    acc = float((predictions == labels).float().mean()) if n else float("nan")
    per_class = accuracy_by(labels, predictions, labels, class_names)
    per_group = accuracy_by(labels, predictions, groups, list(group_names or [])) if groups is not None else {}
    s = summarize(acc, per_class, per_group)
    return Metrics(accuracy=acc, per_class=per_class, per_group=per_group, worst_class=s.worst_class,
                   worst_group=s.worst_group, n=n, worst_class_acc=s.worst_class_acc,
                   worst_group_acc=s.worst_group_acc)


def evaluate(fs: "FeatureSet", predictions: "torch.Tensor | None" = None) -> "Metrics":
    """The :class:`~neuroinspect.core.base.records.Metrics` of ``fs``'s predictions (or ``predictions``):
    accuracy overall, per class and per group (when ``fs`` names its groups), the worst class and group with
    their accuracies, and the number of images (fractions 0–1)."""
    pred = fs.predictions if predictions is None else predictions
    n = len(fs)
    names = fs.class_names or [str(i) for i in range(int(fs.labels.max()) + 1 if n else 0)]
    return metrics_of(fs.labels, pred, names, fs.groups if fs.group_names else None, fs.group_names)

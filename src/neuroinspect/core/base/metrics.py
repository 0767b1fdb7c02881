"""Accuracy overall, per class and per group, and the one place the worst class and group are found.

:func:`summarize` is the only function that picks the worst class and the worst group (and
their accuracies) out of per-class and per-group accuracies: :func:`evaluate`, the comparison
rows of stage 3, the training log and the report all call it. (The refits' selection score,
``fix.refit.worst_of``, is a different quantity: the worst accuracy over arbitrary integer keys
such as pseudo-groups, on tensors, while a head is being fitted.)

No torch import at module level: the report reads metrics without loading torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

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


def finite_or_none(x) -> float | None:
    """``x`` as a finite float, else None (None, a bool, a string that is not a number, NaN, ±inf)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def worst(accuracies: Mapping[str, float | None]) -> tuple[str | None, float | None]:
    """``(name, accuracy)`` of the lowest accuracy (the first one on ties; None and NaN skipped), or ``(None, None)``."""
    best_name, best_acc = None, None
    for name, acc in accuracies.items():
        v = finite_or_none(acc)
        if v is not None and (best_acc is None or v < best_acc):
            best_name, best_acc = name, v
    return best_name, best_acc


@dataclass(frozen=True)
class Summary:
    """Overall accuracy and the worst class and group, with their accuracies (fractions 0–1)."""

    accuracy: float | None
    worst_class: str | None
    worst_class_acc: float | None
    worst_group: str | None
    worst_group_acc: float | None


def summarize(accuracy: float | None, per_class: Mapping[str, float | None],
              per_group: Mapping[str, float | None] | None = None) -> Summary:
    """The one computation of overall / worst-class / worst-group accuracy (see the module docstring)."""
    wc, wc_acc = worst(per_class)
    wg, wg_acc = worst(per_group or {})
    return Summary(finite_or_none(accuracy), wc, wc_acc, wg, wg_acc)


def evaluate(fs: "FeatureSet", predictions: "torch.Tensor | None" = None) -> dict:
    """``{"accuracy", "per_class", "per_group", "worst_class", "worst_group", "n"}`` (fractions 0–1)."""
    pred = fs.predictions if predictions is None else predictions
    n = len(fs)
    acc = float((pred == fs.labels).float().mean()) if n else float("nan")
    names = fs.class_names or [str(i) for i in range(int(fs.labels.max()) + 1 if n else 0)]
    per_class = accuracy_by(fs.labels, pred, fs.labels, names)
    per_group = accuracy_by(fs.labels, pred, fs.groups, fs.group_names) if fs.group_names else {}
    s = summarize(acc, per_class, per_group)
    return {
        "accuracy": acc,
        "per_class": per_class,
        "per_group": per_group,
        "worst_class": s.worst_class,
        "worst_group": s.worst_group,
        "n": n,
    }

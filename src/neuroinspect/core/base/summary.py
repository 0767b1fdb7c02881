"""The one place the worst class and group are found: :func:`summarize` picks them (and their
accuracies) out of per-class and per-group accuracies. :func:`neuroinspect.core.base.metrics.evaluate`,
the :class:`~neuroinspect.core.base.records.Metrics` record, the comparison rows of stage 3, the training
log and the report all call it. (The refits' selection score, ``fix.refit.worst_of``, is a different
quantity: the worst accuracy over arbitrary integer keys such as pseudo-groups, on tensors, while a head
is being fitted.)

Pure Python: the records read it without importing torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

__all__ = ["finite_or_none", "worst", "Summary", "summarize"]


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

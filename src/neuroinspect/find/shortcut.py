"""Which class has a shortcut: read from the head under debugging, no group labels and no mistakes needed.

A head fitted on biased data learns the shortcut as part of a class's score. Say class ``c`` mostly carries a
stamp in training; then ``c``'s score rises on *every* image with a stamp, whatever its class. Inside each
other class, the few stamped images therefore form a tail of high ``c``-scores: the distribution of ``c``'s
score within that class leans towards ``c``. A class that is merely confused with ``c`` (a T-shirt that looks
like a coat) makes such a tail in one or two classes; an artefact shared across the data makes it in all of
them. So, for every class ``c``:

1. ``s = z · d_c``, with ``z`` the features of the training and validation images together and ``d_c`` the
   head's weights for ``c`` minus its mean weights over classes (the head's own score for ``c`` against the
   mean class; standardising the features first would change nothing, since the weights scale back);
2. inside each other class ``k`` (with at least ``MIN_IMAGES`` images), the quantile skewness of ``s``
   between its ``TAIL`` and ``1 − TAIL`` quantiles: ``(q_hi + q_lo − 2·median) / (q_hi − q_lo)``, in
   [−1, 1], positive when the upper tail (towards ``c``) is the longer one;
3. ``c``'s score is the lower quartile of these over the other classes: most of them must lean towards ``c``.

The quantile skewness is used, not the third moment: the shortcut's minority is a few per cent of a class,
which a quantile at ``TAIL`` reaches while the moment is dominated by the bulk's own shape.

This is how ``debug`` chooses a class by default (``--choose-by tails``, :func:`neuroinspect.pipeline.by_tails`).
A shortcut class may have no mistakes of its own (the planted red patch of the tests turns apples into berries:
berry is the class the tails point at, apple the one with the mistakes); ``debug`` then explains the class whose
images are taken for it. On the cue planted in (ReLU-ed Gaussian) features by the tests, a class's own features
skew its score as much as the cue's tail does, and the rule is no better than chance
(``benchmarks/bench_choose.py``, ``docs/fix-methods.md``).
"""
from __future__ import annotations

import math

import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.featureset import FeatureSet

TAIL = 0.05  # the quantiles the skewness is read between (5 % and 95 %)
MIN_IMAGES = 20  # a class with fewer images (train + val) is not read for a tail
QUARTILE = 0.25  # which quantile of the other classes' skewness scores a class


def class_quantile_skews(s: torch.Tensor, y: torch.Tensor, n_classes: int, tail: float = TAIL) -> torch.Tensor:
    """[n_classes] the quantile skewness ``(q_{1-tail} + q_tail − 2·median) / (q_{1-tail} − q_tail)`` of ``s`` inside
    each class (``torch.quantile``'s linear interpolation), > 0 where the upper tail is the longer; NaN for a class
    with no image, 0 where the two quantiles meet. One sort for all classes."""
    s = s.double()
    order = torch.argsort(s)
    order = order[torch.argsort(y[order], stable=True)]  # grouped by class, ascending inside each
    ranked = s[order]
    counts = torch.bincount(y, minlength=n_classes)
    starts = torch.cumsum(counts, 0) - counts
    last = (starts + counts - 1).clamp_min(0)

    def q(p: float) -> torch.Tensor:
        pos = starts + p * (counts - 1).clamp_min(0).double()
        below = pos.floor().long().clamp(max=len(ranked) - 1)
        above = torch.minimum(below + 1, last)
        return ranked[below] + (pos - below) * (ranked[above] - ranked[below])

    lo, mid, hi = q(tail), q(0.5), q(1.0 - tail)
    spread = hi - lo
    skew = torch.where(spread > 0, (hi + lo - 2.0 * mid) / spread.clamp_min(1e-300), torch.zeros_like(spread))
    return torch.where(counts > 0, skew, torch.full_like(skew, float("nan")))


def shortcut_tails(W: torch.Tensor, train: FeatureSet, val: FeatureSet | None = None,
                   classes=None) -> dict[int, float]:
    """For each class ``c`` (default: every class), how much the other classes' images lean towards ``c`` on the
    head's score for ``c`` (module docstring): higher means a shortcut is more likely. NaN where no other class
    has ``MIN_IMAGES`` images. ``W`` [C, D]: the head's weights (the bias does not matter)."""
    parts = [train] + ([val] if val is not None and len(val) else [])
    z = torch.cat([p.features.float() for p in parts])
    y = torch.cat([p.labels for p in parts]).long()
    if not torch.isfinite(z).all():
        raise NeuroInspectError("the features hold NaN or inf values; re-extract them (--verify-cache) before debugging")
    w = W.detach().float().cpu()
    n_classes = w.shape[0]
    big = torch.bincount(y, minlength=n_classes) >= MIN_IMAGES
    wanted = list(range(n_classes)) if classes is None else [int(c) for c in classes]
    scores = z @ (w[wanted] - w.mean(0)).T  # [N, len(wanted)]; a shift or scale of each column leaves its skewness
    out = {}
    for i, c in enumerate(wanted):
        read = big.clone()
        read[c] = False
        skews = class_quantile_skews(scores[:, i], y, n_classes)[read]
        out[c] = float(skews.quantile(QUARTILE)) if len(skews) else math.nan
    return out

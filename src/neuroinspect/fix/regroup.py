"""``regroup``: the default fix. Pseudo-groups from where the class's mistakes sit in feature space, then a balanced refit.

No group labels are read. For every class under debugging ``c``:

1. **Mistakes held out.** The training split and the validation split (when there is one) are
   pooled and cut in two stratified folds; a plain class-balanced logistic regression fitted on
   each fold predicts the other. A head that has seen an image cannot show where it is wrong
   (an ERM head fits almost every training image), so only these *out-of-fold* mistakes are read.
2. **Candidate directions.** Three ways to sort every image by "has what ``c`` usually has":
   - ``mistakes``: the mean standardised feature of ``c``'s out-of-fold correct images minus that of
     its mistakes, over *all* neurons (the per-neuron term ``μ_j − z_ij`` of the contribution-gap
     ranking of ``explain``, kept for every neuron: a background is spread over many neurons);
   - ``neurons``: the neurons ranked by ``explain``, signed by the class;
   - ``head``: the head under debugging's own weights for ``c`` against the mean class, on the
     standardised features. A head fitted on biased data leans on the shortcut, so its score for
     ``c`` is high on the images that carry it, whatever their class. A local artefact such as a
     stamp causes few of the held-out mistakes, which then sort images no better than chance
     (measured: ``benchmarks/bench_pseudo_groups.py``), while the head's score still ranks them.
3. **Pseudo-groups.** Every image is scored by ``z · d``. An image of ``c`` below the midpoint
   between ``c``'s mean score and the other classes' lacks what ``c`` usually has (``c``'s
   *minority*); an image of another class above it has what ``c`` usually has (its class's
   minority). Everything else is the majority. Each (class, majority/minority) is a pseudo-group.
4. **The refit.** DFR's recipe (Kirichenko et al., ICLR 2023) with these pseudo-groups in place of
   the true groups, on train and val together: L1 logistic regression on standardised features,
   averaged over subsamples in which every pseudo-group appears equally often; or an L2 refit on
   every image with the pseudo-groups weighted equally. The form and its penalty are chosen by the
   two folds of step 1 (fit on one, score the other), by worst pseudo-group accuracy over every
   pooled image. ``mistakes`` and ``neurons`` are both refit, and of those whose refit gains
   ``MIN_GAIN`` over no change (step 5), the one that gains most is kept: a grouping that sorts
   the images well exposes a larger failure of the model and fixes more of it (the background's
   two groupings can gain 16 and 55 points, held out, and then score 58 and 76 % on test). Only when
   neither gains that much is ``head`` tried (when its minority holds at least
   ``MIN_HEAD_MINORITY`` images: its midpoint is the head's decision boundary, which few images
   cross, so its minority is small and only the L2 refit of every image is tried for it; balanced
   subsamples would keep too few images). Its gain is not weighed against the others': its
   minority is by construction the images the head gets wrong, so no change scores low on it.
5. **No change, unless it is clearly better.** The chosen head's held-out worst pseudo-group
   accuracy is compared with that of keeping the model as it is, on the same images: the original
   head's own predictions on val (it never trained on val) and, on the training images it has
   seen, those of a plain class-balanced refit scored out of fold (the nearest held-out stand-in).
   Unless the fix is ``MIN_GAIN`` (10 points) higher, the original head is kept and the result says
   so. Picking the best of eight refits finds a few points on groupings that sort nothing (up to 7
   on the stamp benchmark's), while a real shortcut gives 19 points or more (the background's).
   When no grouping earns the margin, one still ships whose held-out gain is above zero while the
   validation split holds its pseudo-minority significantly more often than the training split (a
   one-sided hypergeometric test at ``ENRICHED_P``, on the images of the classes not debugged:
   ``explain`` ranked the neurons on the debugged classes' val images): val then brings images of the
   kind the original head lacked, which it never saw, and the refit is the first to use them (DFR's
   premise). A val drawn like train does not pass the test; without val there is nothing new; a
   grouping by the head is not tested (the head was fitted to the training images, so fewer of them
   cross its boundary whatever val holds): in those cases the margin holds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.fix.config import L2_GRID, REGROUP_C_GRID, FixConfig
from neuroinspect.fix.methods import FixMethod, FixProblem, FixResult
from neuroinspect.fix.refit import (balanced_weights, fit_logistic, l1_ensemble, split_halves, worst_of,
                                    _raw, _scaler)

CROSS_FIT_L2 = 1e-2  # the plain refit that finds the held-out mistakes (penalty on standardised features)
SELECT_DRAWS = 5  # balanced subsamples per fold while choosing the penalty (the final fit takes `draws`)
MIN_HEAD_MINORITY = 20  # the head's grouping, when its pseudo-minority holds fewer images, is not one to balance by
MIN_GAIN = 0.10  # held-out worst pseudo-group accuracy the fix must gain over no change (step 5)
ENRICHED_P = 0.01  # val holds the pseudo-minority more often than train at this one-sided level: no margin (step 5)


@dataclass
class Pooled:
    """Train and val stacked, standardised, with the two folds and the out-of-fold predictions."""

    x: torch.Tensor  # [N, D] standardised features
    y: torch.Tensor  # [N]
    is_val: torch.Tensor  # [N] bool
    folds: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    predicted: torch.Tensor  # [N] out-of-fold predictions of the plain class-balanced refit
    mean: torch.Tensor
    std: torch.Tensor
    n_classes: int

    @classmethod
    def of(cls, train: FeatureSet, val: FeatureSet | None, seed: int) -> "Pooled":
        parts = [train] + ([val] if val is not None and len(val) else [])
        z = torch.cat([p.features.float() for p in parts])
        y = torch.cat([p.labels for p in parts])
        is_val = torch.cat([torch.full((len(p),), i == 1) for i, p in enumerate(parts)])
        if not torch.isfinite(z).all():
            raise NeuroInspectError("the features hold NaN or inf values; re-extract them (--verify-cache) before fixing")
        C = len(train.class_names) or int(y.max()) + 1
        mean, std = _scaler(z)
        x = (z - mean) / std
        first, second = split_halves(y * 2 + is_val.long(), seed)  # stratified by class and by split
        folds = ((first, second), (second, first))
        predicted = torch.empty_like(y)
        for fit, held in folds:
            W, b = fit_logistic(x[fit], y[fit], C, balanced_weights(y[fit]), l2=CROSS_FIT_L2)
            predicted[held] = (x[held] @ W.T + b).argmax(1)
        return cls(x, y, is_val, folds, predicted, mean, std, C)


_LAST_POOL: list = []  # at most one (key, tensors, Pooled): see pooled()


def pooled(train: FeatureSet, val: FeatureSet | None, seed: int) -> Pooled:
    """:meth:`Pooled.of`, reused when called again on the very same feature and label tensors, unmodified, with
    the same seed: ``debug`` scores the classes with :func:`shortcut_scores` and then fixes the chosen one with
    :func:`regroup` on one pool (the cross-fit is two logistic regressions). The cache holds the tensors
    themselves, so an identity cannot be reused by other tensors while it lives; an in-place change of any of
    them (its version counter) misses it."""
    tensors = [t for fs in (train, val) if fs is not None for t in (fs.features, fs.labels)]
    key = (seed, len(train.class_names), tuple(t._version for t in tensors))
    if _LAST_POOL:
        last_key, last_tensors, pool = _LAST_POOL[0]
        if last_key == key and len(last_tensors) == len(tensors) and all(a is b for a, b in zip(last_tensors, tensors)):
            return pool
    pool = Pooled.of(train, val, seed)
    _LAST_POOL[:] = [(key, tensors, pool)]
    return pool


def shortcut_direction(pool: Pooled, c: int) -> torch.Tensor | None:
    """``d_c`` [D]: mean standardised feature of ``c``'s held-out correct images minus its mistakes' (None without both)."""
    own = pool.y == c
    wrong, right = own & (pool.predicted != c), own & (pool.predicted == c)
    if not wrong.any() or not right.any():
        return None
    return pool.x[right].mean(0) - pool.x[wrong].mean(0)


def minority_of(pool: Pooled, c: int, direction: torch.Tensor) -> torch.Tensor:
    """[N] bool: ``c``'s images without what ``c`` usually has, and the other classes' images with it."""
    score = pool.x @ direction
    own = pool.y == c
    midpoint = 0.5 * (float(score[own].mean()) + float(score[~own].mean()))
    present = score > midpoint
    return (own & ~present) | (~own & present)


def candidate_directions(pool: Pooled, c: int, neurons, head: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Step 2's directions for class ``c``: ``mistakes`` (when it has held-out mistakes and correct images),
    ``neurons`` (when ``explain`` ranked some) and ``head`` (the head's standardised weights for ``c``)."""
    options = {}
    d = shortcut_direction(pool, c)
    if d is not None:
        options["mistakes"] = d
    if neurons:
        own = pool.y == c
        idx = torch.as_tensor(list(neurons), dtype=torch.long)
        sign = torch.where(pool.x[own][:, idx].mean(0) >= pool.x[~own][:, idx].mean(0), 1.0, -1.0)
        options["neurons"] = torch.zeros(pool.x.shape[1]).index_put_((idx,), sign)
    if head is not None:
        w = head.detach().float().cpu() * pool.std  # the head's weights on the standardised features
        options["head"] = w[c] - w.mean(0)
    return options


@dataclass
class PseudoGroups:
    """The pseudo-groups of the pooled images and what they came from."""

    keys: torch.Tensor  # [N] 2·class + minority
    directions: dict[int, torch.Tensor]  # per class debugged: the direction its pseudo-groups came from
    mistakes: dict[int, int]  # held-out mistakes of each class
    source: dict[int, str]  # per class: "mistakes" (all neurons), "neurons" (the ranked ones) or "head"
    choices: dict[int, tuple]  # per class: that refit's choice (choose_refit's return)
    enrichment: float | None  # step 5's test of val's share of the minority pseudo-groups (grouping_enrichment)

    @classmethod
    def find(cls, pool: Pooled, targets: dict[int, list[int]], head: torch.Tensor, unchanged: torch.Tensor,
             seed: int) -> "PseudoGroups":
        """Per class, the grouping (step 3) whose best refit gains most over ``unchanged`` held out among the
        directions of the mistakes and of the ranked neurons, when it gains ``MIN_GAIN``; else the head's own,
        when it does. When none does, the one that gained most among those that still :func:`clears` step 5 (a
        val richer in their pseudo-minority); else the one that gained most. ``choices[c]``: that refit's choice."""
        minority = torch.zeros(len(pool.y), dtype=torch.bool)
        directions, mistakes, source, choices = {}, {}, {}, {}
        others = not_debugged(pool, targets)
        for c, neurons in targets.items():
            c = int(c)
            mistakes[c] = int(((pool.y == c) & (pool.predicted != c)).sum())
            options = candidate_directions(pool, c, neurons, head)
            found = {k: minority_of(pool, c, d) for k, d in options.items()}
            if "head" in found and int(found["head"].sum()) < MIN_HEAD_MINORITY:
                del found["head"]  # the head's midpoint is its decision boundary: only a handful of images cross it
            best = waived = None  # the largest gain of all; of those that clear step 5 only by its waiver
            for name in sorted(found, key=lambda k: k == "head"):  # the head's grouping last
                if name == "head" and best is not None and clears(best[0], None):
                    break  # the head's gain is not weighed against the others' (step 4)
                keys = 2 * pool.y + found[name].long()
                choice = choose_refit(pool, keys, seed, l1=name != "head")
                gain = choice[0][1] - worst_of(unchanged, pool.y, keys)
                tried = (gain, name, choice)
                if best is None or gain > best[0]:
                    best = tried
                if not clears(gain, None) and clears(  # below the margin (as if val held nothing new), waived
                        gain, grouping_enrichment(pool, found[name], name == "head", others)) and (
                        waived is None or gain > waived[0]):
                    waived = tried
            if best is not None and not clears(best[0], None):  # none earned the margin
                best = waived or best
            if best is not None:
                _, source[c], choices[c] = best
                directions[c] = options[source[c]]
                minority |= found[source[c]]
        enrichment = grouping_enrichment(pool, minority, "head" in source.values(), others) if source else None
        return cls(2 * pool.y + minority.long(), directions, mistakes, source, choices, enrichment)

    def top_neurons(self, c: int, k: int = 10) -> list[int]:
        """The neurons that moved most between ``c``'s correct images and its mistakes."""
        d = self.directions[c]
        return d.abs().topk(min(k, len(d))).indices.tolist()


def unchanged_predictions(pool: Pooled, W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """[N] held-out predictions of keeping the model: the head ``W, b`` itself on val (it never trained on val);
    on the training images, which it has seen, the out-of-fold ones of the plain class-balanced refit."""
    predicted = pool.predicted.clone()
    if pool.is_val.any():
        z = pool.x[pool.is_val] * pool.std + pool.mean
        predicted[pool.is_val] = (z @ W.T.float() + (0 if b is None else b.float())).argmax(1)
    return predicted


def not_debugged(pool: Pooled, targets) -> torch.Tensor:
    """[N] bool: the images of the classes not under debugging. ``explain`` ranked the neurons on the debugged
    classes' val images, so only the others can show, untilted, how much of a pseudo-minority val holds."""
    return ~torch.isin(pool.y, torch.as_tensor([int(c) for c in targets], dtype=pool.y.dtype))


def enriched(enrichment: float | None) -> bool:
    """Whether step 5's test (:func:`val_enrichment`; None: not tested) finds val richer in the pseudo-minority."""
    return enrichment is not None and enrichment < ENRICHED_P


def clears(gain: float, enrichment: float | None) -> bool:
    """Step 5: a held-out ``gain`` over no change ships a fix when it is ``MIN_GAIN`` or more, or above zero
    where val holds the pseudo-minority more often than train (:func:`enriched`). The tolerance keeps a gain of
    exactly ``MIN_GAIN`` from rounding below it."""
    return gain > 0 if enriched(enrichment) else gain >= MIN_GAIN - 1e-9


def grouping_enrichment(pool: Pooled, minority: torch.Tensor, by_head: bool, others: torch.Tensor) -> float | None:
    """Step 5's test of a grouping's ``minority`` [N] bool: :func:`val_enrichment` on ``others``
    (:func:`not_debugged`); None, not tested, for a grouping by the head (``by_head``): the head was fitted to the
    training images, so fewer of them cross its boundary whatever val holds."""
    return None if by_head else val_enrichment(pool, minority, others)


def val_enrichment(pool: Pooled, minority: torch.Tensor, rows: torch.Tensor | None = None) -> float | None:
    """One-sided p-value that val holds as many of ``minority`` [N] bool as it does, or more, were its images
    drawn at random from the pooled ones (the hypergeometric upper tail): small when val is richer in the
    pseudo-minority than the training split. ``rows`` [N] bool: count only these images (None: all). None
    without a val image among them."""
    rows = torch.ones_like(minority) if rows is None else rows
    is_val, minority = pool.is_val[rows], minority[rows]
    n = int(is_val.sum())
    if not n:
        return None
    from scipy.stats import hypergeom  # lazy: scipy.stats takes ~1 s to import, and only val needs it

    k, K = int((minority & is_val).sum()), int(minority.sum())
    return float(hypergeom.sf(k - 1, len(minority), K, n))


def exposure(pool: Pooled, unchanged: torch.Tensor):
    """``minority [N] bool → accuracy`` of ``unchanged`` (:func:`unchanged_predictions`) on the minority's
    held-out images: on val when there is one (the model's own predictions), else on every image (out of fold);
    2.0 (no score: above any accuracy) for a minority with no such image."""
    rows = pool.is_val if pool.is_val.any() else torch.ones_like(pool.is_val)
    correct = unchanged == pool.y

    def accuracy(minority: torch.Tensor) -> float:
        m = minority & rows
        return float(correct[m].float().mean()) if m.any() else 2.0

    return accuracy


def _fit(pool: Pooled, rows: torch.Tensor | None, keys: torch.Tensor, setting: dict, draws: int, seed: int):
    """One candidate head on the standardised features of ``rows`` (None: all): a balanced-subsample L1
    ensemble (``inv_l1``) or a pseudo-group-weighted L2 refit on every image (``l2``)."""
    x, y, k = (pool.x, pool.y, keys) if rows is None else (pool.x[rows], pool.y[rows], keys[rows])
    if "inv_l1" in setting:
        return l1_ensemble(x, y, pool.n_classes, k, setting["inv_l1"], draws=draws, seed=seed)
    return fit_logistic(x, y, pool.n_classes, balanced_weights(k), l2=setting["l2"])


def _held_out_predictions(pool: Pooled, keys: torch.Tensor, setting: dict, seed: int) -> torch.Tensor:
    predicted = torch.empty_like(pool.y)
    for fit, held in pool.folds:
        W, b = _fit(pool, fit, keys, setting, SELECT_DRAWS, seed)
        predicted[held] = (pool.x[held] @ W.T + b).argmax(1)
    return predicted


def choose_refit(pool: Pooled, keys: torch.Tensor, seed: int, l1: bool = True) -> tuple[tuple, list[dict]]:
    """Step 4's choice: every refit form and penalty (only the L2 ones without ``l1``) fitted on one fold and
    scored on the other, by worst accuracy over ``keys``. Returns ``(setting, score, held-out predictions)`` of
    the best and a row per setting."""
    rows, best = [], None
    for setting in [{"inv_l1": c} for c in REGROUP_C_GRID if l1] + [{"l2": a} for a in L2_GRID]:
        predicted = _held_out_predictions(pool, keys, setting, seed)  # every image scored by a head that did not see it
        s = worst_of(predicted, pool.y, keys)
        rows.append({**setting, "metric": s})
        if best is None or s > best[1]:
            best = (setting, s, predicted)
    return best, rows


def fit_raw(pool: Pooled, keys: torch.Tensor, setting: dict, draws: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The final refit of ``setting`` on every pooled image, as weights for the raw features."""
    W, b = _fit(pool, None, keys, setting, draws, seed)
    return _raw(W, b, pool.mean, pool.std)


def _unchanged(W0, b0, targets, chosen: dict, rows: list) -> FixResult:
    W = W0.detach().float().clone().cpu()
    b = None if b0 is None else b0.detach().float().clone().cpu()
    return FixResult(W, b, "regroup", targets, "— (kept the original)", False, chosen, rows,
                       best_val_metric=chosen["no_change_worst"], select_by="worst pseudo-group accuracy, held out")


def regroup(W0: torch.Tensor, b0: torch.Tensor | None, train: FeatureSet, val: FeatureSet | None,
            targets: dict[int, list[int]], *, draws: int = 20, seed: int = 0) -> FixResult:
    """The default fix (module docstring): returns the refit head, or the original one when it is not better."""
    if not targets:
        raise NeuroInspectError("regroup needs the classes to fix (from explain's ranking, or --class)")
    pool = pooled(train, val, seed)
    unchanged = unchanged_predictions(pool, W0, b0)
    groups = PseudoGroups.find(pool, targets, W0, unchanged, seed)
    names = train.class_names
    if not groups.directions:  # nothing to regroup by: no change, said so
        chosen = {"kept_original": True, "held_out_worst": float("nan"), "no_change_worst": float("nan"),
                  "compared_with": "no held-out mistake of " + ", ".join(f"'{names[c]}'" for c in targets)
                  + ", no ranked neuron, and fewer than " + str(MIN_HEAD_MINORITY)
                  + " images on the wrong side of the head's own boundary to group its images by"}
        return _unchanged(W0, b0, targets, chosen, [])
    keys = groups.keys
    best, rows = (groups.choices[next(iter(groups.choices))] if len(groups.choices) == 1
                  else choose_refit(pool, keys, seed))
    # no change unless better, scored on the same images by held-out predictions (unchanged_predictions)
    baseline = worst_of(unchanged, pool.y, keys)
    against = ("the original head on val, a plain class-balanced refit out of fold on train" if pool.is_val.any() else
               "a plain class-balanced refit out of fold (no validation split: the original head has seen every image)")
    chosen = {**best[0], "groups_from": {names[c]: v for c, v in groups.source.items()},
              "held_out_mistakes": {names[c]: n for c, n in groups.mistakes.items()},
              "top_neurons": {names[c]: groups.top_neurons(c) for c in groups.directions},
              "pseudo_minority": int((keys % 2 == 1).sum()), "held_out_worst": best[1], "no_change_worst": baseline,
              "compared_with": against, "min_gain": MIN_GAIN}
    enrichment = chosen["val_enrichment_p"] = groups.enrichment
    gain = best[1] - baseline
    if enriched(enrichment) and not clears(gain, None):
        chosen["min_gain"] = 0.0  # the margin was waived (any gain would do): say so
    fit_on = "train+val" if pool.is_val.any() else "train"
    if not clears(gain, enrichment):
        chosen["kept_original"] = True
        return _unchanged(W0, b0, targets, chosen, rows)
    W, b = fit_raw(pool, keys, best[0], draws, seed)
    chosen["kept_original"] = False
    return FixResult(W, b, "regroup", targets, f"{fit_on} (pseudo-group-balanced draws)", False, chosen, rows,
                       best_val_metric=best[1], select_by="worst pseudo-group accuracy, held out")


class Regroup(FixMethod):
    """:func:`regroup`, the default fix."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return regroup(p.W, p.b, p.train, p.val, p.targets, seed=cfg.seed)


def pooled_refit(train: FeatureSet, val: FeatureSet | None, targets=None, *, seed: int = 0) -> FixResult:
    """The naive reference beside ``regroup``: its L2 refit of every image with every class as one group, no
    neurons, no pseudo-groups. The head is refit on the standardised features of train and val pooled (train alone
    without val), every class weighing the same; the penalty is chosen by the two folds (fit on one, score the
    other) by worst-class accuracy. (``regroup``'s balanced-subsample L1 form changed no benchmark result by more
    than 5 points either way here and took ten times as long.)"""
    pool = pooled(train, val, seed)
    keys = 2 * pool.y
    best, rows = choose_refit(pool, keys, seed, l1=False)
    W, b = fit_raw(pool, keys, best[0], 1, seed)  # an L2 setting: one fit of every image, no subsamples to draw
    fit_on = "train+val" if pool.is_val.any() else "train"
    return FixResult(W, b, "pooled-refit", dict(targets or {}), f"{fit_on} (class-balanced)", False,
                     {**best[0], "held_out_worst_class": best[1]}, rows, best_val_metric=best[1],
                     select_by="worst-class accuracy, held out")


class PooledRefit(FixMethod):
    """:func:`pooled_refit`."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return pooled_refit(p.train, p.val, p.targets, seed=cfg.seed)


def shortcut_scores(W: torch.Tensor, b: torch.Tensor | None, train: FeatureSet, val: FeatureSet | None,
                    classes=None, seed: int = 0) -> dict[int, float]:
    """For each class ``c`` (default: every class), the head's accuracy on ``c``'s held-out pseudo-minority.

    The pseudo-minority of ``c`` (step 3 of the module docstring, from its held-out mistakes): its
    images without what it usually has and the other classes' images with it. Scored on val with the
    head itself, or, without val, with the out-of-fold predictions. A class whose accuracy hides a
    shortcut (most of its validation images carry it, as in training) still scores low here: the
    few images where the shortcut and the label disagree are the ones it gets wrong. NaN: no held-out
    mistake of ``c`` or no held-out image in its pseudo-minority."""
    pool = pooled(train, val, seed)
    exposed = exposure(pool, unchanged_predictions(pool, W, b))
    out = {}
    for c in (range(pool.n_classes) if classes is None else classes):
        d = shortcut_direction(pool, int(c))
        score = exposed(minority_of(pool, int(c), d)) if d is not None else 2.0
        out[int(c)] = score if score <= 1.0 else float("nan")
    return out

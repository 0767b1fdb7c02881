"""Refit the decision layer on reweighted data: the fixes that work when the paper's edit does not.

All of these keep the backbone frozen and refit only ``W, b`` on cached features, by weighted
multinomial logistic regression (full batch, L-BFGS, on standardised features, L2 penalty):

``rebalance`` (ours, needs no group labels) — neuron-guided rebalancing, after *Spuriosity
    Rankings* (Moayeri et al., NeurIPS 2023) with the neurons found by ``explain``. Each sample
    gets a spuriosity score from the standardised activations of the chosen neurons ``S_c``:
    ``+mean_{j∈S_c} z̃_j`` if its label is ``c`` (the cue the class leans on), ``−mean_{j∈S_c} z̃_j``
    otherwise (the cue that pulls other classes toward ``c``), summed over the edited classes.
    Within each class, the samples whose cue is on the wrong side of the midpoint between the
    class's and the other classes' mean cue activation (in training) form the *minority*
    pseudo-group (cue absent where the class expects it, present where it misleads); the rest the
    majority. (Or, with ``q``, each class's lowest ``q`` fraction of training scores.) The head is
    refit from scratch so that every (class, pseudo-group) weighs the same, on one half of the
    validation split by default (``fit_on``: or the training split, or both); the other half
    selects the penalty and the pseudo-group rule by its worst pseudo-group accuracy. With
    ``fit_on="val"`` this is last-layer retraining on held-out data, as DFR does, with
    pseudo-groups from the neurons in place of the true groups.
``dfr`` — Deep Feature Reweighting (Kirichenko et al., ICLR 2023): the same refit on one half of the
    validation split with the *true* groups balanced, selected by true worst-group accuracy on the
    other half. **Uses group labels**: a reference, not a method for a user without them.
``jtt`` — Just Train Twice (Liu et al., ICML 2021) on cached features: an underfit ERM head marks
    the training samples it gets wrong, which are up-weighted in the refit; the up-weight is
    selected by worst-class accuracy on the validation split (no group labels).
``ablate`` — zero ``W[c, S_c]``: what the chosen neurons contribute, removed outright.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.metrics import worst
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.fix.config import DFR_C_GRID, FIT_ON, L2_GRID, QUANTILE_GRID, UPWEIGHT_GRID, FixConfig
from neuroinspect.fix.methods import FixMethod, FixProblem, FixResult

SELECT_QUANTILE = None  # pseudo-groups for model selection: the midpoint rule (see Spuriosity.thresholds)


# --------------------------------------------------------------------------- the weighted fit
def fit_logistic_path(z: torch.Tensor, y: torch.Tensor, C: int, weight: torch.Tensor | None = None,
                      l2s=L2_GRID, max_iter: int = 100) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Weighted multinomial logistic regression ``argmin Σ w_i CE_i / Σ w_i + l2/2 ||W'||²`` for each ``l2``.

    Features are standardised with the (weighted) mean and std of ``z``; the penalty acts on the
    standardised weights ``W'`` and the bias is free. The penalties are fitted from the strongest
    to the weakest, each warm-started from the previous solution (a regularisation path, as in
    glmnet), which cuts the L-BFGS iterations several-fold. Returns ``(W [C, D], b [C])`` for the raw
    features, in the order of ``l2s``. Deterministic.
    """
    z = z.float()
    n, D = z.shape
    w = torch.ones(n) if weight is None else weight.float()
    w = w / w.sum()
    mu = (w[:, None] * z).sum(0)
    sd = ((w[:, None] * (z - mu) ** 2).sum(0)).sqrt().clamp_min(1e-6)
    x = (z - mu) / sd
    Wp = torch.zeros(C, D, requires_grad=True)
    bp = torch.zeros(C, requires_grad=True)
    solutions = {}
    for l2 in sorted(set(l2s), reverse=True):
        opt = torch.optim.LBFGS([Wp, bp], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-7, tolerance_change=1e-10)

        def closure():
            opt.zero_grad()
            loss = (F.cross_entropy(x @ Wp.T + bp, y, reduction="none") * w).sum() + 0.5 * l2 * (Wp ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        W, b = _raw(Wp.detach(), bp.detach(), mu, sd)
        if not (torch.isfinite(W).all() and torch.isfinite(b).all()):
            raise NeuroInspectError("the refit diverged (non-finite weights); check the features for NaN/inf values")
        solutions[l2] = (W.clone(), b.clone())
    return [solutions[l2] for l2 in l2s]


def fit_logistic(z: torch.Tensor, y: torch.Tensor, C: int, weight: torch.Tensor | None = None, l2: float = 1e-2,
                 max_iter: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """One penalty of :func:`fit_logistic_path`."""
    return fit_logistic_path(z, y, C, weight, (l2,), max_iter)[0]


def balanced_weights(keys: torch.Tensor) -> torch.Tensor:
    """Per-sample weights that give every value of ``keys`` the same total weight (mean weight 1)."""
    values, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    w = (len(keys) / (len(values) * counts.double()))[inverse]
    return w.float()


def group_accuracies(pred: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> dict[int, float]:
    correct = (pred == labels).float()
    return {int(k): float(correct[keys == k].mean()) for k in keys.unique().tolist() if k >= 0}


def worst_of(pred: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> float:
    """The selection score of the refits and edits: the worst accuracy over the values of ``keys``
    (pseudo-groups, labels or true groups; NaN when there is none). The worst class and group that
    are reported come from :func:`neuroinspect.core.base.metrics.summarize`; both pick the lowest the same way."""
    _, acc = worst(group_accuracies(pred, labels, keys))
    return float("nan") if acc is None else acc


def split_halves(labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint index sets, each holding half of every class (stratified, seeded)."""
    g = torch.Generator().manual_seed(seed)
    first, second = [], []
    for k in labels.unique().tolist():
        idx = (labels == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        half = (len(idx) + 1) // 2
        first.append(idx[:half])
        second.append(idx[half:])
    return torch.cat(first).sort().values, torch.cat(second).sort().values


# --------------------------------------------------------------------------- spuriosity
@dataclass
class Spuriosity:
    """Scores samples by the activations of the chosen neurons (fitted on a reference split).

    Each neuron enters with a sign: + when it fires more on its class's reference samples than on
    the other classes' (an *insufficient* neuron: the class's cue), − otherwise (an *excessive*
    one, the cue of another class). So a ``ranking.json``'s two lists can be given together.
    """

    targets: dict[int, list[int]]
    mean: torch.Tensor  # [D] per-neuron mean on the reference split
    std: torch.Tensor  # [D]
    signs: dict[int, torch.Tensor] = field(default_factory=dict)  # per class: ±1 per neuron

    @classmethod
    def fit(cls, reference: FeatureSet, targets: dict[int, list[int]]) -> "Spuriosity":
        if not any(targets.values()):
            raise NeuroInspectError("rebalance needs neurons: give each edited class its --neurons (or a --ranking)")
        z = reference.features.float()
        signs = {}
        for c, neurons in targets.items():
            if neurons:
                idx = torch.as_tensor(list(neurons), dtype=torch.long)
                own = reference.labels == int(c)
                diff = z[own][:, idx].mean(0) - z[~own][:, idx].mean(0) if own.any() and (~own).any() else torch.ones(len(idx))
                signs[int(c)] = torch.where(diff >= 0, 1.0, -1.0)
        return cls({int(c): list(s) for c, s in targets.items()}, z.mean(0), z.std(0).clamp_min(1e-6), signs)

    def cue(self, fs: FeatureSet, c: int) -> torch.Tensor:
        """[N]: the signed mean standardised activation of class ``c``'s neurons (high: c's cue present)."""
        neurons = self.targets[c]
        z = (fs.features.float() - self.mean) / self.std
        return (z[:, torch.as_tensor(neurons, dtype=torch.long)] * self.signs[c]).mean(1)

    def score(self, fs: FeatureSet) -> torch.Tensor:
        """[N]: high = the sample carries the cue its class is expected to lean on (see the module docstring)."""
        s = torch.zeros(len(fs))
        for c, neurons in self.targets.items():
            if neurons:
                cue = self.cue(fs, c)
                s += torch.where(fs.labels == c, cue, -cue)
        return s

    def thresholds(self, fs: FeatureSet, q: float | None = None) -> torch.Tensor:
        """Per class, the score at or below which a sample is in the minority, from the reference split ``fs``.

        ``q`` None: the midpoint rule: for each edited class c, the cue activation halfway between
        its mean over c's samples and over the other classes' samples (a sample of c below it lacks
        the cue; a sample of another class above it carries it); summed over the edited classes like
        the scores. ``q`` a number: the ``q``-quantile of each class's own scores (no use when every
        training image of a class carries the cue, as then no image of it is really without).
        """
        C = len(fs.class_names) or int(fs.labels.max()) + 1
        if q is not None:
            s = self.score(fs)
            t = torch.full((C,), -math.inf)
            for k in fs.labels.unique().tolist():
                t[k] = torch.quantile(s[fs.labels == k], q)
            return t
        t = torch.zeros(C)
        for c, neurons in self.targets.items():
            if not neurons:
                continue
            a = self.cue(fs, c)
            own = fs.labels == c
            if not own.any() or own.all():
                name = fs.class_names[c] if c < len(fs.class_names) else str(c)
                split = f"the '{fs.split}' split" if fs.split else "the training features"
                raise NeuroInspectError(
                    f"class '{name}' has {'no images' if not own.any() else 'every image'} in {split}; rebalance "
                    f"sorts each class's images by its neurons there: add images of '{name}'"
                    f"{'' if not own.any() else ' and of the other classes'} to it")
            mid = 0.5 * (float(a[own].mean()) + float(a[~own].mean()))
            t += -mid
            t[c] += 2 * mid
        return t

    def pseudo_groups(self, fs: FeatureSet, thresholds: torch.Tensor) -> torch.Tensor:
        """``2·class + minority`` for each sample (minority: score at or below its class's threshold)."""
        minority = (self.score(fs) <= thresholds[fs.labels]).long()
        return 2 * fs.labels + minority


# --------------------------------------------------------------------------- the refits
def _concat(parts: list[FeatureSet]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([p.features.float() for p in parts]), torch.cat([p.labels for p in parts])


def _select(fitted, score) -> tuple[dict, tuple, list[dict], float]:
    """Keep the best of ``fitted`` ``[(params, (W, b))]`` by ``score`` (ties: the earlier, i.e. more penalised).

    Returns the chosen params, ``(W, b)``, every candidate's row and the chosen one's metric."""
    best, best_key, rows = None, None, []
    for params, (W, b) in fitted:
        metric, tie = score(W, b)
        rows.append({**params, "metric": metric, "tie_break": tie})
        if best_key is None or (metric, tie) > best_key:
            best, best_key = (params, (W, b)), (metric, tie)
    return best[0], best[1], rows, best_key[0]


def _predict(W, b, fs: FeatureSet) -> torch.Tensor:
    return (fs.features.float() @ W.T + b).argmax(1)


def _scorer(fs: FeatureSet, keys: torch.Tensor):
    """``score(W, b)`` for :func:`_select`: worst accuracy over ``keys`` on ``fs``, overall accuracy to break ties."""
    def score(W, b):
        pred = _predict(W, b, fs)
        return worst_of(pred, fs.labels, keys), float((pred == fs.labels).float().mean())

    return score


def rebalance(train: FeatureSet, val: FeatureSet | None, targets: dict[int, list[int]], *, fit_on: str = FixConfig.fit_on,
              l2=L2_GRID, quantiles=QUANTILE_GRID, seed: int = 0) -> FixResult:
    """Neuron-guided rebalancing (module docstring). ``fit_on``: ``train``, ``val`` or ``train+val``."""
    if fit_on not in FIT_ON:
        raise NeuroInspectError(f"--fit-on must be one of {', '.join(FIT_ON)}; got '{fit_on}'")
    if "val" in fit_on and val is None:
        raise NeuroInspectError("rebalance --fit-on val/train+val needs a validation split; add one or pass --fit-on train")
    C = len(train.class_names) or int(train.labels.max()) + 1
    spur = Spuriosity.fit(train, targets)
    if val is not None:
        fit_idx, sel_idx = split_halves(val.labels, seed)
        val_fit, val_sel = val.subset(fit_idx), val.subset(sel_idx)
    else:
        val_fit, val_sel = None, train
    parts = [p for name, p in (("train", train), ("val", val_fit)) if name in fit_on]
    z, y = _concat(parts)

    def path(q):
        t = spur.thresholds(train, q)
        keys = torch.cat([spur.pseudo_groups(p, t) for p in parts])
        return [({"l2": a, "q": q}, wb) for a, wb in zip(l2, fit_logistic_path(z, y, C, balanced_weights(keys), l2))]

    # selection: worst accuracy over the pseudo-groups of the midpoint rule (one fixed split, so that
    # candidates with different q are compared on the same groups)
    score = _scorer(val_sel, spur.pseudo_groups(val_sel, spur.thresholds(train, SELECT_QUANTILE)))

    chosen, (W, b), rows, best = _select([cand for q in quantiles for cand in path(q)], score)
    return FixResult(W, b, "rebalance", targets, fit_on.replace("val", "val (half)"), False, chosen, rows,
                       best_val_metric=best, select_by="worst pseudo-group accuracy")


def l1_ensemble(x: torch.Tensor, y: torch.Tensor, C: int, keys: torch.Tensor, inv_penalty: float, *,
                draws: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 logistic regression averaged over ``draws`` subsamples that hold every value of ``keys`` equally often.

    Each draw keeps, of every key (a group or a pseudo-group), as many samples as the smallest key
    has, fits one-vs-rest L1-penalised logistic regressions (liblinear, inverse penalty
    ``inv_penalty``), and the weights are averaged over the draws: the recipe of DFR (Kirichenko
    et al., ICLR 2023). ``x`` is used as given (standardise it first). Returns ``(W [C, D], b [C])``.
    """
    import numpy as np  # lazy: scikit-learn takes a second to import and only the refits need it
    from sklearn.linear_model import LogisticRegression  # lazy: as numpy's line says
    from sklearn.multiclass import OneVsRestClassifier  # lazy: as numpy's line says

    g = torch.Generator().manual_seed(seed)
    values, counts = torch.unique(keys, return_counts=True)
    smallest = int(counts.min())
    X, Y = x.double().numpy(), y.numpy()
    W, b = torch.zeros(C, x.shape[1], dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    for draw in range(draws):
        idx = torch.cat([(keys == v).nonzero().flatten()[torch.randperm(int(n), generator=g)[:smallest]]
                         for v, n in zip(values.tolist(), counts.tolist())]).sort().values.numpy()
        present = np.unique(Y[idx])
        if len(present) < 2:
            raise NeuroInspectError("a balanced subsample holds a single class; the refit needs at least two")
        model = OneVsRestClassifier(LogisticRegression(C=inv_penalty, l1_ratio=1.0, solver="liblinear",
                                                       random_state=seed * 1000 + draw)).fit(X[idx], Y[idx])
        coef = np.stack([e.coef_[0] for e in model.estimators_])
        icpt = np.array([e.intercept_[0] for e in model.estimators_])
        if len(present) == 2:  # one estimator for a binary problem: split it into two opposite logits
            coef, icpt = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
        rows = torch.as_tensor(present, dtype=torch.long)
        W[rows] += torch.as_tensor(coef)
        b[rows] += torch.as_tensor(icpt)
        if len(present) < C:  # a class missing from the draw: it gets no evidence from this draw
            missing = torch.ones(C, dtype=torch.bool)
            missing[rows] = False
            b[missing] -= 1e3
    return (W / draws).float(), (b / draws).float()


def _scaler(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.float()
    return z.mean(0), z.std(0, unbiased=False).clamp_min(1e-6)


def _raw(W: torch.Tensor, b: torch.Tensor, mu: torch.Tensor, sd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A head fitted on ``(z − mu) / sd`` as a head on the raw features ``z``."""
    W = W / sd
    return W, b - W @ mu


def dfr(train: FeatureSet, val: FeatureSet | None, *, inv_penalties=DFR_C_GRID, draws: int = 20, seed: int = 0,
        targets=None) -> FixResult:
    """DFR(Val) by its paper's recipe, with the *true* groups of the validation split.

    Features standardised with the training split's mean and std; the inverse L1 penalty is tuned by
    fitting on one half of val (group-balanced subsample) and scoring worst-group accuracy on the
    other half; the final head is refit on *all* of val, averaged over ``draws`` group-balanced
    subsamples. **Uses group labels**: a reference, not a method for a user without them."""
    _needs_groups(val, "dfr")
    C = len(train.class_names) or int(train.labels.max()) + 1
    mu, sd = _scaler(train.features)
    x = (val.features.float() - mu) / sd
    first, second = _group_halves(val, seed)

    def score(W, b):
        pred = (x[second] @ W.T + b).argmax(1)
        return worst_of(pred, val.labels[second], val.groups[second]), float((pred == val.labels[second]).float().mean())

    fitted = [({"inv_l1": c}, l1_ensemble(x[first], val.labels[first], C, val.groups[first], c, draws=1, seed=seed))
              for c in inv_penalties]
    chosen, _, rows, best = _select(fitted, score)
    W, b = l1_ensemble(x, val.labels, C, val.groups, chosen["inv_l1"], draws=draws, seed=seed)
    W, b = _raw(W, b, mu, sd)
    return FixResult(W, b, "dfr", dict(targets or {}), "val (all, group-balanced draws)", True, chosen, rows,
                       best_val_metric=best, select_by="worst group accuracy (true groups), on half of val")


def dfr_half(train: FeatureSet, val: FeatureSet | None, *, l2=L2_GRID, seed: int = 0, targets=None) -> FixResult:
    """A weaker DFR variant: L2 refit on one half of val with the true groups weighted equally, selected on the other."""
    _needs_groups(val, "dfr-half")
    C = len(train.class_names) or int(train.labels.max()) + 1
    fit_idx, sel_idx = _group_halves(val, seed)
    val_fit, val_sel = val.subset(fit_idx), val.subset(sel_idx)
    score = _scorer(val_sel, val_sel.groups)
    fitted = fit_logistic_path(val_fit.features, val_fit.labels, C, balanced_weights(val_fit.groups), l2)
    chosen, (W, b), rows, best = _select([({"l2": a}, wb) for a, wb in zip(l2, fitted)], score)
    return FixResult(W, b, "dfr-half", dict(targets or {}), "val (half)", True, chosen, rows,
                       best_val_metric=best, select_by="worst group accuracy (true groups)")


def _group_halves(val: FeatureSet, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`split_halves` stratified by (class, true group)."""
    return split_halves(val.labels * (int(val.groups.max()) + 2) + val.groups + 1, seed)


def _needs_groups(val: FeatureSet | None, method: str) -> None:
    if val is None or not (val.groups >= 0).any():
        raise NeuroInspectError(f"{method} needs group labels in the validation split (a group column in the manifest)")


def val_refit(train: FeatureSet, val: FeatureSet | None, *, l2=L2_GRID, seed: int = 0, targets=None) -> FixResult:
    """The plain reference: refit the head on *all* of val, every class weighing the same; no groups, no neurons.

    The L2 penalty is chosen by fitting on one half of val and scoring worst-class accuracy on the
    other half; the final head is refit on all of val with it."""
    if val is None or len(val) == 0:
        raise NeuroInspectError("val-refit needs a validation split to refit on; add one (or use a method that fits on train)")
    C = len(train.class_names) or int(train.labels.max()) + 1
    first, second = split_halves(val.labels, seed)
    half, other = val.subset(first), val.subset(second)
    score = _scorer(other, other.labels)
    fitted = fit_logistic_path(half.features, half.labels, C, balanced_weights(half.labels), l2)
    chosen, _, rows, best = _select([({"l2": a}, wb) for a, wb in zip(l2, fitted)], score)
    W, b = fit_logistic(val.features, val.labels, C, balanced_weights(val.labels), l2=chosen["l2"])
    return FixResult(W, b, "val-refit", dict(targets or {}), "val (all)", False, chosen, rows,
                       best_val_metric=best, select_by="worst-class accuracy, on half of val")


def jtt(train: FeatureSet, val: FeatureSet | None, *, l2=L2_GRID, upweights=UPWEIGHT_GRID, identify_l2: float = 1.0,
        seed: int = 0, targets=None) -> FixResult:
    """Just Train Twice on cached features (module docstring)."""
    C = len(train.class_names) or int(train.labels.max()) + 1
    W0, b0 = fit_logistic(train.features, train.labels, C, l2=identify_l2)
    errors = _predict(W0, b0, train) != train.labels
    sel = val if val is not None else train

    def path(upweight):
        w = torch.where(errors, torch.tensor(upweight), torch.tensor(1.0))
        fitted = fit_logistic_path(train.features, train.labels, C, w, l2)
        return [({"l2": a, "upweight": upweight}, wb) for a, wb in zip(l2, fitted)]

    score = _scorer(sel, sel.labels)
    chosen, (W, b), rows, best = _select([cand for u in upweights for cand in path(u)], score)
    chosen = {**chosen, "n_errors": int(errors.sum())}
    return FixResult(W, b, "jtt", dict(targets or {}), "train (errors up-weighted)", False, chosen, rows,
                       best_val_metric=best, select_by="worst-class accuracy")


def ablate(W: torch.Tensor, b: torch.Tensor | None, targets: dict[int, list[int]]) -> FixResult:
    """Zero ``W[c, S_c]`` for every edited class."""
    W = W.detach().float().clone().cpu()
    for c, neurons in targets.items():
        if neurons:
            W[c, torch.as_tensor(neurons, dtype=torch.long)] = 0.0
    bias = None if b is None else b.detach().float().clone().cpu()
    return FixResult(W, bias, "ablate", targets, "—", False, {})


# --------------------------------------------------------------------------- as fix methods
def _l2(cfg: FixConfig) -> tuple[float, ...]:
    """The L2 penalties to search: the one given, else :data:`L2_GRID`."""
    return (cfg.l2,) if cfg.l2 is not None else L2_GRID


class Rebalance(FixMethod):
    """:func:`rebalance`, the pseudo-group quantile searched unless given."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        qs = (cfg.quantile,) if cfg.quantile is not None else QUANTILE_GRID
        return rebalance(p.train, p.val, p.targets, fit_on=cfg.fit_on, l2=_l2(cfg), quantiles=qs, seed=cfg.seed)


class DFR(FixMethod):
    """:func:`dfr` (reads group labels)."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return dfr(p.train, p.val, seed=cfg.seed, targets=p.targets)


class DFRHalf(FixMethod):
    """:func:`dfr_half` (reads group labels)."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return dfr_half(p.train, p.val, l2=_l2(cfg), seed=cfg.seed, targets=p.targets)


class ValRefit(FixMethod):
    """:func:`val_refit`."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return val_refit(p.train, p.val, l2=_l2(cfg), seed=cfg.seed, targets=p.targets)


class JTT(FixMethod):
    """:func:`jtt`."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return jtt(p.train, p.val, l2=_l2(cfg), seed=cfg.seed, targets=p.targets)


class Ablate(FixMethod):
    """:func:`ablate`."""

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        return ablate(p.W, p.b, p.targets)

"""Fix false correlations by retraining only the decision layer (paper Sec. III-E, paper Eqs. 5–9).

Let ``S`` be neurons chosen as false correlations for class ``c`` and ``m`` the mask that
zeroes them. For a training sample ``z`` the *probability ratio* is

    r(z) = p(c | z) / p(c | z ⊙ m)

(``r > 1``: the neurons in ``S`` push the sample toward ``c``). The edit retrains ``W, b`` on
the cached training features with

    L = CE(W z + b, y) + λ · || r(z) − τ ||_2 · sqrt(32 / B)     (the norm runs over a batch of B)

for each edited class (several classes, each with its own ``S``, add their terms). The norm over
the batch grows with sqrt(B); the factor ``sqrt(32 / B)`` makes λ mean what it meant at the
authors' batch size of 32 whatever ``batch_size`` is (at B = 32 it is exactly Eq. 8). ``τ`` is
given or automatic: ``τ = 1 + (min_{j∈S} imp_j − 1) / 3`` with
``imp_j = p(c | z̄) / p(c | z̄ with z̄_j := 0)`` and ``z̄`` the mean feature over the evaluated
samples (the validation split when there is one, as ``explain`` uses; else the training split).

The same loop trains the paper's baselines, selected by ``method``; each is a
:class:`GradientMethod` that overrides the loss hooks (:meth:`GradientMethod.base_loss`,
:meth:`GradientMethod.regulariser`):

``ratio``         the probability-ratio regulariser above (the method)
``con``           CE + λ · mean_i || ReLU(W_{c,S} ⊙ z_{i,S} + b_c) ||_2   (Eq. 9: shrink class c's use of S)
``class-weight``  CE with inverse-frequency class weights, the edited classes weighted ``class_boost`` × more
                  (when every class is edited the boost cancels and this is inverse-frequency weighting)
``focal``         focal loss, γ = 2
``erm``           plain CE retraining (the control)

Training: Adam in mini-batches (each epoch is :func:`~neuroinspect.core.model.head_training.head_epoch`, the loop
every head trainer shares), linear warm-up to ``lr``, early stopping after ``patience`` epochs without
improvement of the validation metric, and the best epoch's ``W, b`` are returned. The metric is
coarse (a handful of samples decide a worst group), so an epoch that ties the best metric with a
lower validation loss counts as an improvement: a strict ``>`` would keep the first epoch. The backbone
is never touched: everything here works on :class:`~neuroinspect.core.model.featureset.FeatureSet` s.

>>> result = edit_head(W, b, train, val, targets={3: [12, 40]})
>>> fixed = test.with_logits(result.weight, result.bias)
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from neuroinspect.core.base.config import configured
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.model.head_training import head_epoch
from neuroinspect.fix.config import FIX_METHODS, GROUP_LABEL_SELECT, LAM_GRID, LR_GRID, SELECT_BY, EditConfig, FixConfig
from neuroinspect.fix.methods import FixMethod, FixProblem, FixResult, get_fix_method
from neuroinspect.core.base.io import save_safetensors
from neuroinspect.core.runtime.progress import progress_bar
from neuroinspect.find.importance import bias_or_zeros, neuron_importance
from neuroinspect.fix.refit import SELECT_QUANTILE, Spuriosity, worst_of

log = logging.getLogger(__name__)

MAX_LOG_RATIO = 30.0  # r is capped at e^30 inside the loss so that ||r − τ||² cannot overflow
REFERENCE_BATCH = 32  # the authors' batch size: λ of the ratio penalty is calibrated to it


# --------------------------------------------------------------------------- pure functions
def neuron_mask(D: int, neurons, device=None) -> torch.Tensor:
    """The float mask ``m`` [D] that zeroes ``neurons`` (1 elsewhere)."""
    m = torch.ones(D, device=device)
    if len(neurons):
        m[torch.as_tensor(list(neurons), dtype=torch.long, device=device)] = 0.0
    return m


def log_probability_ratio(W: torch.Tensor, b: torch.Tensor | None, z: torch.Tensor, c: int, mask: torch.Tensor) -> torch.Tensor:
    """``log r(z) = log p(c|z) − log p(c|z ⊙ m)`` for each row of ``z`` [N, D]; returns [N]."""
    b = bias_or_zeros(W, b)
    logits = z @ W.T + b
    masked = (z * mask.to(z)) @ W.T + b
    return torch.log_softmax(logits, dim=1)[:, c] - torch.log_softmax(masked, dim=1)[:, c]


def probability_ratio(W: torch.Tensor, b: torch.Tensor | None, z: torch.Tensor, c: int, mask: torch.Tensor) -> torch.Tensor:
    """``r(z) = p(c|z) / p(c|z ⊙ m)`` (paper Eq. 7) for each row of ``z`` [N, D] (or one [D] vector).

    ``mask`` [D] is 1 for kept neurons and 0 for the zeroed ones (see :func:`neuron_mask`).
    Differentiable in ``W``, ``b`` and ``z``; computed in log space.
    """
    single = z.dim() == 1
    r = log_probability_ratio(W, b, z.unsqueeze(0) if single else z, c, mask).exp()
    return r[0] if single else r


def auto_tau(importances) -> float:
    """The automatic τ: ``1 + (min_j imp_j − 1) / 3`` over the edited neurons' importances."""
    imp = torch.as_tensor(importances, dtype=torch.float64).flatten()
    if imp.numel() == 0:
        raise NeuroInspectError("automatic tau needs at least one neuron")
    return float(1.0 + (imp.min() - 1.0) / 3.0)


def ratio_regulariser(W, b, z, c: int, mask, tau: float) -> torch.Tensor:
    """``|| r(z) − τ ||_2`` over the rows of ``z`` (paper Eq. 8 without λ)."""
    log_r = log_probability_ratio(W, b, z, c, mask).clamp(max=MAX_LOG_RATIO)
    return torch.linalg.vector_norm(log_r.exp() - tau)


def _log_ratio_from_logits(logits: torch.Tensor, z: torch.Tensor, W: torch.Tensor, c: int, idx: torch.Tensor) -> torch.Tensor:
    """``log r`` reusing the logits: zeroing neurons ``idx`` subtracts ``z[:, idx] @ W[:, idx]ᵀ`` (cheap for a small S)."""
    masked = logits - z[:, idx] @ W[:, idx].T
    return torch.log_softmax(logits, dim=1)[:, c] - torch.log_softmax(masked, dim=1)[:, c]


def con_regulariser(W, z, c: int, neurons, b=None) -> torch.Tensor:
    """``mean_i || ReLU(W_{c,S} ⊙ z_{i,S} + b_c) ||_2`` (paper Eq. 9 without λ; ``b`` None: no bias)."""
    idx = torch.as_tensor(list(neurons), dtype=torch.long, device=z.device)
    contrib = W[c, idx].unsqueeze(0) * z[:, idx]
    if b is not None:
        contrib = contrib + b[c]
    contrib = torch.relu(contrib)
    return torch.linalg.vector_norm(contrib, dim=1).mean()


def focal_loss(logits: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss ``mean_i −(1 − p_{i,y})^γ log p_{i,y}`` (Lin et al. 2017)."""
    logp = torch.log_softmax(logits, dim=1).gather(1, y[:, None])[:, 0]
    loss = -((1 - logp.exp()) ** gamma) * logp
    if weight is not None:
        w = weight[y]
        return (loss * w).sum() / w.sum()
    return loss.mean()


def class_weights(labels: torch.Tensor, C: int, boost_classes=(), boost: float = 2.0) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C · n_k)``, times ``boost`` for ``boost_classes``.

    Classes absent from ``labels`` get weight 0. Normalised so the mean weight per sample is 1.
    """
    counts = torch.bincount(labels, minlength=C).double()
    w = torch.where(counts > 0, counts.sum() / (C * counts.clamp(min=1)), torch.zeros_like(counts))
    for k in boost_classes:
        w[k] *= boost
    per_sample = w[labels].mean()
    return (w / per_sample).float()


def resolve_select_by(select_by: str, targets: dict[int, list[int]]) -> str:
    """``auto`` → ``pseudo-group`` when any class has neurons, else ``worst-class``."""
    if select_by == "auto":
        return "pseudo-group" if any(targets.values()) else "worst-class"
    return select_by


def selection_metric(logits: torch.Tensor, fs: FeatureSet, select_by: str, classes, pseudo_groups=None) -> float:
    """The validation metric early stopping watches (higher is better), as a fraction.

    ``pseudo_groups`` [N]: the keys ``pseudo-group`` selection takes the worst accuracy over.
    """
    pred = logits.argmax(1)
    correct = (pred == fs.labels.to(pred.device)).float()
    labels = fs.labels.to(pred.device)
    worst_over = {"pseudo-group": pseudo_groups, "worst-class": fs.labels, "worst-group": fs.groups}
    if select_by in worst_over:
        return worst_of(pred, labels, worst_over[select_by].to(pred.device))
    if select_by == "accuracy":
        return float(correct.mean())
    if select_by == "class":
        accs = [float(correct[labels == k].mean()) for k in classes if (labels == k).any()]
        return sum(accs) / len(accs)
    raise NeuroInspectError(f"unknown --select-by '{select_by}'; choose one of {', '.join(SELECT_BY)}")


# --------------------------------------------------------------------------- the gradient methods
@dataclass
class LossContext:
    """What a gradient method's loss hooks read while :func:`edit_head` trains."""

    weight: torch.Tensor  # [C, D], the trained parameter
    bias: torch.Tensor | None  # [C], the trained parameter (None: no bias)
    targets: dict[int, list[int]]  # {class: neurons S}
    index: dict[int, torch.Tensor]  # {class: S as a long tensor on the device}
    tau: dict[int, float]  # {class: τ}
    config: EditConfig
    device: torch.device
    class_weights: torch.Tensor | None = None  # per class, for the cross-entropy (set by setup)


class GradientMethod(FixMethod):
    """A fix that retrains the head from the original with Adam (:func:`edit_head`); the plain one is ``erm``.

    Subclasses override the loss hooks: :meth:`setup` (once before training), :meth:`base_loss`
    (default: cross-entropy, with the class weights :meth:`setup` set) and :meth:`regulariser` (default:
    none), weighed by λ. :meth:`fit` searches the learning rate (and λ for a ``regularised`` method)
    on the validation split, each candidate trained from the original head.
    """

    def setup(self, ctx: LossContext, train: FeatureSet) -> None:
        """Prepare what the hooks read (e.g. ``ctx.class_weights``) from the training split."""

    def base_loss(self, logits: torch.Tensor, y: torch.Tensor, ctx: LossContext) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=ctx.class_weights)

    def regulariser(self, logits: torch.Tensor, z: torch.Tensor, ctx: LossContext) -> torch.Tensor:
        return torch.zeros((), device=ctx.device)

    def fit(self, p: FixProblem, cfg: FixConfig) -> FixResult:
        """Train from the original head for every candidate lr (and λ) and keep the best on val (unset ones searched)."""
        select_by = resolve_select_by(cfg.select_by, p.targets)
        lrs = (cfg.lr,) if cfg.lr is not None else LR_GRID
        lams = (cfg.lam,) if cfg.lam is not None else (LAM_GRID if self.regularised else (0.0,))
        use_val = p.val is not None and bool(cfg.patience)  # patience 0 or None: every epoch, no early stopping
        best, rows = None, []
        for lr, lam in itertools.product(lrs, lams):
            trainer = cfg.edit_config(method=self.name, lr=lr, lam=lam, patience=cfg.patience if use_val else None,
                                      select_by=select_by)
            res = edit_head(p.W, p.b, p.train, p.val if use_val else None, p.targets, trainer, policy=p.policy,
                            progress=p.progress)
            rows.append({"lr": lr, "lam": lam, "metric": res.best_val_metric, "best_epoch": res.best_epoch})
            if best is None or (res.best_val_metric is not None and res.best_val_metric > best[1].best_val_metric):
                best = ({"lr": lr, "lam": lam}, res)
        chosen, res = best
        return replace(res, method=self.name, select_by=select_by if use_val else "last epoch",
                       uses_group_labels=select_by in GROUP_LABEL_SELECT, fit_on="train (from the original head)",
                       chosen=chosen, search=rows if len(rows) > 1 else [])


class RatioEdit(GradientMethod):
    """``ratio``: the probability-ratio regulariser ``|| r(z) − τ ||_2 · sqrt(32 / B)`` per edited class (Eq. 8)."""

    def regulariser(self, logits, z, ctx):
        reg = torch.zeros((), device=ctx.device)
        scale = math.sqrt(REFERENCE_BATCH / len(z))
        for c in ctx.targets:
            log_r = _log_ratio_from_logits(logits, z, ctx.weight, c, ctx.index[c]).clamp(max=MAX_LOG_RATIO)
            reg = reg + torch.linalg.vector_norm(log_r.exp() - ctx.tau[c]) * scale
        return reg


class ConEdit(GradientMethod):
    """``con``: shrink each edited class's use of its neurons (Eq. 9)."""

    def regulariser(self, logits, z, ctx):
        reg = torch.zeros((), device=ctx.device)
        for c, s in ctx.targets.items():
            reg = reg + con_regulariser(ctx.weight, z, c, s, ctx.bias)
        return reg


class ClassWeightEdit(GradientMethod):
    """``class-weight``: inverse-frequency class weights, the edited classes ``class_boost`` × more."""

    def setup(self, ctx, train):
        C = ctx.weight.shape[0]
        ctx.class_weights = class_weights(train.labels, C, list(ctx.targets), ctx.config.class_boost).to(ctx.device)


class FocalEdit(GradientMethod):
    """``focal``: focal loss with γ = ``focal_gamma``."""

    def base_loss(self, logits, y, ctx):
        return focal_loss(logits, y, ctx.config.focal_gamma)


def gradient_method(name: str) -> GradientMethod:
    """The gradient method ``name``; a method that is not trained by gradient raises one line listing those that are."""
    if name not in FIX_METHODS or not FIX_METHODS.info(name).by_gradient:
        raise NeuroInspectError(f"unknown edit method '{name}'; choose one of "
                                f"{', '.join(FIX_METHODS.select(by_gradient=True))}")
    method = get_fix_method(name)
    if not isinstance(method, GradientMethod):
        raise NeuroInspectError(f"method '{name}' is marked by_gradient but is not a GradientMethod")
    return method


def _check_inputs(W, b, train, val, targets, config: EditConfig, select_by: str, augmented_views):
    """One clear error for inputs the edit cannot use; ``select_by`` is ``config.select_by`` resolved."""
    method, patience = gradient_method(config.method), config.patience
    if select_by not in SELECT_BY:
        raise NeuroInspectError(f"unknown --select-by '{select_by}'; choose one of {', '.join(SELECT_BY)}")
    C, D = W.shape
    if b is not None and b.shape != (C,):
        raise NeuroInspectError(f"bias has shape {tuple(b.shape)}, expected ({C},)")
    if len(train) == 0:
        raise NeuroInspectError("the training split is empty; edit needs the training features")
    if train.D != D:
        raise NeuroInspectError(f"training features have D={train.D} but the decision layer expects D={D}")
    if not targets:
        raise NeuroInspectError("no class to edit: give at least one class (--class)")
    names = train.class_names
    counts = torch.bincount(train.labels, minlength=C)
    for c, neurons in targets.items():
        if not 0 <= c < C:
            raise NeuroInspectError(f"class index {c} is out of range: the model has {C} classes (0–{C - 1})")
        cname = names[c] if c < len(names) else str(c)
        if counts[c] == 0:
            raise NeuroInspectError(
                f"class '{cname}' has no training samples; the edit retrains on the training split, add images of it there"
            )
        if method.needs_neurons:
            if not neurons:
                raise NeuroInspectError(
                    f"no neurons chosen for class '{cname}' (S is empty); pass --neurons, e.g. from explain's ranking.json"
                )
            bad = [j for j in neurons if not 0 <= int(j) < D]
            if bad:
                raise NeuroInspectError(f"neurons {bad} are out of range: the features have D={D} neurons (0–{D - 1})")
            if len(set(neurons)) != len(neurons):
                raise NeuroInspectError(f"neurons for class '{cname}' are listed twice: {list(neurons)}")
    if select_by == "pseudo-group" and not any(targets.values()):
        raise NeuroInspectError("--select-by pseudo-group needs neurons (--neurons) to form the pseudo-groups; "
                                "choose another --select-by")
    if patience and val is None:
        raise NeuroInspectError(
            "early stopping needs a validation split and there is none; add a 'val' split "
            "(ROOT/val/CLASS/... or rows with split=val in the manifest), or turn early stopping off (patience 0)"
        )
    if val is not None:
        if len(val) == 0:
            raise NeuroInspectError("the validation split is empty; add images to it or turn early stopping off (patience 0)")
        if val.D != D:
            raise NeuroInspectError(f"validation features have D={val.D} but the decision layer expects D={D}")
        if select_by == "worst-group" and not (val.groups >= 0).any():
            raise NeuroInspectError(
                "--select-by worst-group needs group labels in the validation split; add a group column to the manifest "
                "or choose another --select-by"
            )
        if select_by == "class" and not any((val.labels == c).any() for c in targets):
            raise NeuroInspectError("--select-by class: the validation split has no samples of the edited class(es)")
    for k, view in enumerate(augmented_views or []):
        if len(view) != len(train) or not torch.equal(view.labels, train.labels):
            raise NeuroInspectError(
                f"augmented view {k} does not match the training split (it must hold the same samples in the same order)"
            )


def resolve_tau(W, b, evaluated: FeatureSet, targets: dict[int, list[int]], tau) -> tuple[dict[int, float], dict[int, list[float]]]:
    """τ per edited class: given, or automatic from the importances at ``z̄``, the mean feature over
    all the ``evaluated`` samples (paper §IV-C; the authors' code does the same)."""
    taus, imps = {}, {}
    z_mean = evaluated.features.float().mean(0)
    for c, neurons in targets.items():
        if neurons:
            imp = neuron_importance(W, b, z_mean, c, neurons)
            imps[c] = [float(v) for v in imp]
        given = tau.get(c) if isinstance(tau, dict) else tau
        if given is None or given == "auto":
            if not neurons:
                taus[c] = 1.0
                continue
            taus[c] = auto_tau(imps[c])
            if taus[c] < 1.0:
                log.info("automatic tau %.4f < 1 for class %d: some chosen neurons push away from it", taus[c], c)
        else:
            taus[c] = float(given)
            if not math.isfinite(taus[c]) or taus[c] <= 0:
                raise NeuroInspectError(f"tau must be a positive number or 'auto', got {given}")
    return taus, imps


def edit_head(
    W: torch.Tensor,
    b: torch.Tensor | None,
    train: FeatureSet,
    val: FeatureSet | None,
    targets: dict[int, list[int]],
    config: EditConfig | None = None,
    *,
    policy: DevicePolicy | str | torch.device | None = None,
    augmented_views: list[FeatureSet] | None = None,
    progress: bool = False,
    **overrides,
) -> FixResult:
    """Retrain the decision layer ``W`` [C, D], ``b`` [C] on cached features (see the module docstring).

    ``targets`` maps each edited class index to its neurons ``S``. ``config`` (an :class:`EditConfig`;
    its fields may also be given as keyword ``overrides``): ``tau`` None/"auto" (automatic), a number
    for every class, or ``{class: tau}``; ``warmup`` is in epochs (linear ramp to ``lr``); ``patience``
    0/None trains all ``epochs`` and keeps the last one (no validation split needed); ``seed`` seeds
    the generator of every random draw (shuffling, view choice; no global RNG is touched).
    ``policy``: where to train (a :class:`DevicePolicy` or a device; default cpu); the head is always
    trained in fp32. ``augmented_views``: extra FeatureSets of the same training samples (e.g. cached
    augmentations); each epoch every sample is drawn from one of the views (the original included) at random.
    """
    cfg = configured(EditConfig, config, overrides)
    tau, lam, epochs, patience, lr, warmup, batch_size, seed = (
        cfg.tau, cfg.lam, cfg.epochs, cfg.patience, cfg.lr, cfg.warmup, cfg.batch_size, cfg.seed)
    method = gradient_method(cfg.method)
    targets = {int(c): [int(j) for j in (n or [])] for c, n in targets.items()}
    select_by = resolve_select_by(cfg.select_by, targets)
    _check_inputs(W, b, train, val, targets, cfg, select_by, augmented_views)
    if epochs < 1:
        raise NeuroInspectError(f"epochs must be ≥ 1, got {epochs}")
    device = DevicePolicy.of(policy).device
    C, D = W.shape
    taus, imps = resolve_tau(W, b, val if val is not None else train, targets, tau)

    gen = torch.Generator().manual_seed(seed)
    weight = nn.Parameter(W.detach().float().clone().to(device))
    bias = nn.Parameter(b.detach().float().clone().to(device)) if b is not None else None
    params = [weight] + ([bias] if bias is not None else [])
    opt = torch.optim.Adam(params, lr=lr)
    n = len(train)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    warm_steps = max(1, int(round(warmup * steps_per_epoch))) if warmup > 0 else 0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm_steps) if warm_steps else 1.0
    )

    views = [train.features] + [v.features for v in (augmented_views or [])]
    views = [v.float().to(device) for v in views]
    y_all = train.labels.to(device)
    index = {c: torch.as_tensor(s, dtype=torch.long, device=device) for c, s in targets.items()}
    ctx = LossContext(weight, bias, targets, index, taus, cfg, device)
    method.setup(ctx, train)
    val_z = val.features.float().to(device) if val is not None else None
    pseudo = None
    if select_by == "pseudo-group" and val is not None:
        spur = Spuriosity.fit(train, targets)
        pseudo = spur.pseudo_groups(val, spur.thresholds(train, SELECT_QUANTILE))
    use_val = bool(patience) and val is not None

    which = None  # per epoch: the view each sample is drawn from (None: the original features only)
    tot_reg = 0.0

    def draw_views(generator):
        nonlocal which
        which = torch.randint(len(views), (n,), generator=generator) if len(views) > 1 else None

    def batch_loss(idx):
        nonlocal tot_reg
        z = views[0][idx.to(device)]
        if which is not None:  # each sample from one randomly drawn view
            w = which[idx]
            for v in range(1, len(views)):
                sel = w == v
                if sel.any():
                    z[sel.to(device)] = views[v][idx[sel].to(device)]
        y = y_all[idx.to(device)]
        logits = z @ weight.T + (bias if bias is not None else 0)
        base, reg = method.base_loss(logits, y, ctx), method.regulariser(logits, z, ctx)
        tot_reg += float(reg.detach()) * len(idx)
        return base + lam * reg

    best = None
    best_key, best_epoch, since_best = None, 0, 0  # best_key: (val metric, -val loss) of the kept epoch
    curves: list[dict] = []
    stopped = False
    bar = progress_bar(epochs, f"edit ({method.name})", "epoch", enabled=progress)
    for epoch in range(1, epochs + 1):
        tot_reg = 0.0
        tot_loss, _ = head_epoch(opt, batch_loss, n, batch_size, generator=gen, scheduler=sched,
                                 after_shuffle=draw_views)
        with torch.no_grad():
            ratios = {}
            full = views[0] @ weight.T + (bias if bias is not None else 0)
            for c in targets:
                if targets[c]:
                    r = _log_ratio_from_logits(full, views[0], weight, c, index[c]).clamp(max=MAX_LOG_RATIO).exp()
                    ratios[c] = float(r.mean())
            metric = val_loss = None
            if val_z is not None:
                vlogits = val_z @ weight.T + (bias if bias is not None else 0)
                metric = selection_metric(vlogits, val, select_by, list(targets), pseudo)
                val_loss = float(F.cross_entropy(vlogits, val.labels.to(device)))
        curves.append({
            "epoch": epoch, "train_loss": tot_loss / n, "regulariser": tot_reg / n,
            "val_metric": metric, "val_loss": val_loss, "mean_ratio": ratios,
        })
        bar.update(1)
        bar.set_postfix_str(f"loss {tot_loss / n:.4f}" + ("" if metric is None else f", val {metric:.4f}"))
        key = (metric, -val_loss) if use_val else None
        improved = (not use_val) or best_key is None or key > best_key
        if improved:
            best_key = key
            best_epoch, since_best = epoch, 0
            best = (weight.detach().clone(), None if bias is None else bias.detach().clone())
        else:
            since_best += 1
            if since_best >= patience:
                stopped = epoch < epochs
                break
    bar.close()
    new_w, new_b = best
    return FixResult(
        weight=new_w.cpu(), bias=None if new_b is None else new_b.cpu(), best_epoch=best_epoch,
        epochs_run=len(curves), curves=curves, tau=taus, method=method.name, lam=lam, select_by=select_by,
        targets=targets, best_val_metric=best_key[0] if use_val else None, stopped_early=stopped, importance=imps,
        fit_on="train (from the original head)", uses_group_labels=select_by in GROUP_LABEL_SELECT,
    )


# --------------------------------------------------------------------------- the edited model
def fit_linear_head(train: FeatureSet, C: int, epochs: int = 200, lr: float = 0.01, weight_decay: float = 1e-4,
                    seed: int = 0, init_std: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain ERM from scratch: multinomial logistic regression on cached features (full batch, Adam, ``epochs``
    steps, each one epoch of :func:`~neuroinspect.core.model.head_training.head_epoch`), the one trainer of a
    fresh linear head on features. ``W`` starts as ``init_std`` times a normal draw
    from a generator seeded with ``seed`` (0: zeros), ``b`` at zero; the global random state is not used.

    The demo's head is the default; the planted test's head is ``lr=0.05, weight_decay=0, init_std=0``. (The
    fixes retrain an existing head with :func:`edit_head`; ``neuroinspect train`` trains the model's own
    ``nn.Linear`` in mini-batches with a schedule.)"""
    if init_std:
        g = torch.Generator().manual_seed(seed)
        W = (torch.randn(C, train.D, generator=g) * init_std).requires_grad_()
    else:
        W = torch.zeros(C, train.D, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr, weight_decay=weight_decay)
    z, y = train.features, train.labels

    def batch_loss(idx):  # one batch of every sample in stored order: the full-batch gradient
        return F.cross_entropy(z[idx] @ W.T + b, y[idx])

    for _ in range(epochs):
        head_epoch(opt, batch_loss, len(train))
    return W.detach(), b.detach()


def edited_state_dict(model: nn.Module, head_name: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The model's full state_dict (copied to the CPU) with the decision layer ``head_name`` replaced."""
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    wkey, bkey = f"{head_name}.weight", f"{head_name}.bias"
    if wkey not in state:
        raise NeuroInspectError(f"the model has no decision layer '{head_name}' (no '{wkey}' in its state_dict)")
    if tuple(state[wkey].shape) != tuple(weight.shape):
        raise NeuroInspectError(f"edited weight has shape {tuple(weight.shape)}, the model's head {tuple(state[wkey].shape)}")
    state[wkey] = weight.detach().cpu().to(state[wkey].dtype).clone().contiguous()
    if bias is not None:
        if bkey not in state:
            raise NeuroInspectError(f"the model's decision layer '{head_name}' has no bias to replace")
        state[bkey] = bias.detach().cpu().to(state[bkey].dtype).clone().contiguous()
    return state


def save_edited_model(model: nn.Module, head_name: str, weight: torch.Tensor, bias: torch.Tensor | None,
                      path: str | os.PathLike) -> Path:
    """Save the original weights with the edited head as one ``.safetensors`` file (atomically).

    Reload it with ``build_model(spec, weights=path, num_classes=C)`` (CLI: ``--weights path``).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise NeuroInspectError(f"the edited model is saved as .safetensors; got '{path.name}'")
    state = edited_state_dict(model, head_name, weight, bias)
    save_safetensors(path, state, {"neuroinspect": "edited decision layer", "head": head_name})
    return path

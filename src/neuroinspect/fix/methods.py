"""The registry of stage 3's methods: each fix is one function registered with ``@fix_method``.

A method reads a :class:`FixProblem` (the decision layer, the cached features and the classes to
fix with their neurons) and a validated :class:`~neuroinspect.fix.config.FixConfig`, and returns
a :class:`FixResult`. Its flags say what it needs and reads, so that callers ask the registry
instead of comparing names:

``needs_neurons``      it reads the chosen neurons S of every edited class (refuses an empty S)
``uses_group_labels``  it reads the true group labels (a reference, not a fair competitor)
``by_gradient``        it retrains the head from the original with Adam (searches the learning rate)
``regularised``        its loss has a neuron regulariser of weight λ (searches λ)

The torch-free copy of the names and flags in :mod:`neuroinspect.fix.config` (read by the command
line's ``--help``) is checked against this registry by the tests.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.fix.config import GROUP_LABEL_SELECT, L2_GRID, LAM_GRID, LR_GRID, QUANTILE_GRID, FixConfig
from neuroinspect.fix.edit import edit_head, resolve_select_by
from neuroinspect.fix.refit import RefitResult, ablate, dfr, dfr_half, jtt, rebalance, val_refit
from neuroinspect.fix.regroup import regroup


@dataclass
class FixProblem:
    """What every method reads: the head ``W, b``, the cached features and ``{class: neurons}``."""

    W: torch.Tensor
    b: torch.Tensor | None
    train: FeatureSet
    val: FeatureSet | None
    targets: dict[int, list[int]]
    policy: DevicePolicy | None = None  # where the gradient methods train (None: the head's device, fp32)
    progress: bool = False


@dataclass
class FixResult:
    """One fitted decision layer with what it used and how it was chosen."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    method: str
    targets: dict[int, list[int]]
    select_by: str
    uses_group_labels: bool
    fit_on: str
    chosen: dict = field(default_factory=dict)
    search: list[dict] = field(default_factory=list)
    best_val_metric: float | None = None
    detail: object = None  # the EditResult or RefitResult behind it

    def apply(self, fs: FeatureSet) -> FeatureSet:
        return fs.with_logits(self.weight, self.bias)


@dataclass(frozen=True)
class FixMethod:
    name: str
    run: Callable[[FixProblem, FixConfig], FixResult]
    label: str  # its name in tables
    needs_neurons: bool = False
    uses_group_labels: bool = False
    by_gradient: bool = False
    regularised: bool = False


FIX_METHODS: dict[str, FixMethod] = {}


def fix_method(name: str, label: str, *, needs_neurons: bool = False, uses_group_labels: bool = False,
               by_gradient: bool = False, regularised: bool = False):
    """Register ``run(problem, config) -> FixResult`` as the method ``name`` (flags: module docstring)."""
    def register(run: Callable[[FixProblem, FixConfig], FixResult]) -> Callable[[FixProblem, FixConfig], FixResult]:
        FIX_METHODS[name] = FixMethod(name, run, label, needs_neurons, uses_group_labels, by_gradient, regularised)
        return run

    return register


def get_fix_method(name: str) -> FixMethod:
    """The registered method ``name``; an unknown name raises one line listing the choices."""
    found = FIX_METHODS.get(name)
    if found is None:
        raise NeuroInspectError(f"unknown method '{name}'; choose one of {', '.join(FIX_METHODS)}")
    return found


# --------------------------------------------------------------------------- the methods
def _from_refit(p: FixProblem, res: RefitResult) -> FixResult:
    return FixResult(res.weight, res.bias, res.method, p.targets, res.select_by or "—", res.uses_group_labels,
                     res.fit_on, res.chosen, res.search, res.best_val_metric, res)


def _l2(cfg: FixConfig) -> tuple[float, ...]:
    return (cfg.l2,) if cfg.l2 is not None else L2_GRID


@fix_method("regroup", "regroup (held-out mistakes)")
def _regroup(p: FixProblem, cfg: FixConfig) -> FixResult:
    return _from_refit(p, regroup(p.W, p.b, p.train, p.val, p.targets, seed=cfg.seed))


@fix_method("rebalance", "neuron-guided rebalancing", needs_neurons=True)
def _rebalance(p: FixProblem, cfg: FixConfig) -> FixResult:
    qs = (cfg.quantile,) if cfg.quantile is not None else QUANTILE_GRID
    return _from_refit(p, rebalance(p.train, p.val, p.targets, fit_on=cfg.fit_on, l2=_l2(cfg), quantiles=qs, seed=cfg.seed))


def gradient_edit(p: FixProblem, cfg: FixConfig) -> FixResult:
    """A gradient method (``cfg.method``) from the original head; unset lr/λ searched on val."""
    method = get_fix_method(cfg.method)
    select_by = resolve_select_by(cfg.select_by, p.targets)
    lrs = (cfg.lr,) if cfg.lr is not None else LR_GRID
    lams = (cfg.lam,) if cfg.lam is not None else (LAM_GRID if method.regularised else (0.0,))
    use_val = p.val is not None and bool(cfg.patience)  # patience 0 or None: every epoch, no early stopping
    best, rows = None, []
    for lr, lam in itertools.product(lrs, lams):
        trainer = cfg.edit_config(lr=lr, lam=lam, patience=cfg.patience if use_val else None, select_by=select_by)
        res = edit_head(p.W, p.b, p.train, p.val if use_val else None, p.targets, trainer, policy=p.policy,
                        progress=p.progress)
        rows.append({"lr": lr, "lam": lam, "metric": res.best_val_metric, "best_epoch": res.best_epoch})
        if best is None or (res.best_val_metric is not None and res.best_val_metric > best[1].best_val_metric):
            best = ({"lr": lr, "lam": lam}, res)
    chosen, res = best
    fit_on = "train (from the original head)"
    return FixResult(res.weight, res.bias, cfg.method, p.targets, select_by if use_val else "last epoch",
                     select_by in GROUP_LABEL_SELECT, fit_on, chosen, rows if len(rows) > 1 else [],
                     res.best_val_metric, res)


# The gradient methods differ only in their loss (see neuroinspect.fix.edit); each is registered here.
fix_method("ratio", "ratio edit (paper)", needs_neurons=True, by_gradient=True, regularised=True)(gradient_edit)
fix_method("con", "CON", needs_neurons=True, by_gradient=True, regularised=True)(gradient_edit)
fix_method("class-weight", "class re-weighting", by_gradient=True)(gradient_edit)
fix_method("focal", "focal loss", by_gradient=True)(gradient_edit)
fix_method("erm", "ERM retrained", by_gradient=True)(gradient_edit)


@fix_method("dfr", "DFR (group labels)", uses_group_labels=True)
def _dfr(p: FixProblem, cfg: FixConfig) -> FixResult:
    return _from_refit(p, dfr(p.train, p.val, seed=cfg.seed, targets=p.targets))


@fix_method("dfr-half", "DFR, half of val (group labels)", uses_group_labels=True)
def _dfr_half(p: FixProblem, cfg: FixConfig) -> FixResult:
    return _from_refit(p, dfr_half(p.train, p.val, l2=_l2(cfg), seed=cfg.seed, targets=p.targets))


@fix_method("val-refit", "plain refit on val")
def _val_refit(p: FixProblem, cfg: FixConfig) -> FixResult:
    return _from_refit(p, val_refit(p.train, p.val, l2=_l2(cfg), seed=cfg.seed, targets=p.targets))


@fix_method("jtt", "JTT")
def _jtt(p: FixProblem, cfg: FixConfig) -> FixResult:
    return _from_refit(p, jtt(p.train, p.val, l2=_l2(cfg), seed=cfg.seed, targets=p.targets))


@fix_method("ablate", "ablate W[c,S]", needs_neurons=True)
def _ablate(p: FixProblem, cfg: FixConfig) -> FixResult:
    return _from_refit(p, ablate(p.W, p.b, p.targets))

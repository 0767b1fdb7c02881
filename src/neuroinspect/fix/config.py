"""Every method name, search grid and default of stage 3, in one place and without importing torch
(the command line reads them from here).

The fix methods' name table, :data:`FIX_METHODS`, lives here: each method's name, its label in
tables and its flags (what it needs and reads), with the place of its implementation, which is
imported only when the method runs (see :mod:`neuroinspect.fix.methods`; a method a user adds
with ``@fix_method`` joins the same table). A setting left ``None`` in :class:`FixConfig` is
searched on the validation split (see :mod:`neuroinspect.fix.compare`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.registry import Registry


@dataclass(frozen=True)
class MethodInfo:
    """What a fix method needs and reads, so that callers ask the table instead of comparing names.

    ``needs_neurons``      it reads the chosen neurons S of every edited class (refuses an empty S)
    ``uses_group_labels``  it reads the true group labels (a reference, not a fair competitor)
    ``by_gradient``        it retrains the head from the original with Adam (searches the learning rate;
                           early stopping reads the validation split)
    ``regularised``        its loss has a neuron regulariser of weight λ (searches λ)
    """

    label: str  # its name in tables
    needs_neurons: bool = False
    uses_group_labels: bool = False
    by_gradient: bool = False
    regularised: bool = False


FIX_METHODS: Registry[MethodInfo] = Registry("method")
_EDIT, _REFIT = "neuroinspect.fix.edit", "neuroinspect.fix.refit"
FIX_METHODS.declare("regroup", MethodInfo("regroup (pseudo-groups)"), "neuroinspect.fix.regroup:Regroup")
FIX_METHODS.declare("rebalance", MethodInfo("neuron-guided rebalancing", needs_neurons=True), f"{_REFIT}:Rebalance")
# the gradient methods: one trainer, each with its own loss (neuroinspect.fix.edit)
FIX_METHODS.declare("ratio", MethodInfo("ratio edit (paper)", needs_neurons=True, by_gradient=True, regularised=True),
                    f"{_EDIT}:RatioEdit")
FIX_METHODS.declare("con", MethodInfo("CON", needs_neurons=True, by_gradient=True, regularised=True), f"{_EDIT}:ConEdit")
FIX_METHODS.declare("class-weight", MethodInfo("class re-weighting", by_gradient=True), f"{_EDIT}:ClassWeightEdit")
FIX_METHODS.declare("focal", MethodInfo("focal loss", by_gradient=True), f"{_EDIT}:FocalEdit")
FIX_METHODS.declare("erm", MethodInfo("ERM retrained", by_gradient=True), f"{_EDIT}:GradientMethod")
FIX_METHODS.declare("jtt", MethodInfo("JTT"), f"{_REFIT}:JTT")
FIX_METHODS.declare("ablate", MethodInfo("ablate W[c,S]", needs_neurons=True), f"{_REFIT}:Ablate")
FIX_METHODS.declare("val-refit", MethodInfo("plain refit on val"), f"{_REFIT}:ValRefit")
FIX_METHODS.declare("pooled-refit", MethodInfo("plain refit on train+val"), "neuroinspect.fix.regroup:PooledRefit")
FIX_METHODS.declare("dfr", MethodInfo("DFR (group labels)", uses_group_labels=True), f"{_REFIT}:DFR")
FIX_METHODS.declare("dfr-half", MethodInfo("DFR, half of val (group labels)", uses_group_labels=True),
                    f"{_REFIT}:DFRHalf")

DEFAULT_METHOD = "regroup"
# what `compare` and the demo run by default: the proposed fix first, the plain held-out refit and the
# group-label reference last
DEFAULT_COMPARE = ("regroup", "rebalance", "ratio", "con", "class-weight", "focal", "erm", "jtt", "ablate", "val-refit",
                   "pooled-refit", "dfr")
# what `debug` compares by default: the fix, the paper's ratio edit, the plain refit on val (no groups, no
# neurons) and DFR (group labels: only when the data has them). The other baselines took most of the fix
# stage's time (JTT alone as long as the fix; benchmarks/bench_debug.py); `--methods all` runs them all.
DEBUG_COMPARE = ("regroup", "ratio", "val-refit", "dfr")

# auto: the worst pseudo-group (from the chosen neurons, no group labels) when neurons are given, else the worst class
SELECT_BY = ("auto", "pseudo-group", "accuracy", "class", "worst-class", "worst-group")
GROUP_LABEL_SELECT = frozenset({"worst-group"})  # selections that read the true group labels
FIT_ON = ("train", "val", "train+val")

LR_GRID = (1e-3, 1e-2)  # gradient methods: Adam learning rate
LAM_GRID = (0.01, 0.1, 1.0)  # ratio/con: regulariser weight
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # refits: penalty per sample on standardised features
QUANTILE_GRID = (None, 0.25)  # rebalance: pseudo-group rule (None: the midpoint rule)
UPWEIGHT_GRID = (5.0, 20.0, 50.0)  # jtt: up-weight of the identified errors
REGROUP_C_GRID = (0.1, 0.3, 1.0, 3.0)  # regroup: inverse L1 penalty on standardised features (chosen out of fold)
DFR_C_GRID = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)  # dfr: the inverse L1 penalties of the DFR paper's search


@dataclass
class EditConfig:
    """The gradient trainer's settings (:func:`~neuroinspect.fix.edit.edit_head`): the paper's edit and its baselines."""

    method: str = "ratio"  # a method of FIX_METHODS trained by gradient (by_gradient)
    lr: float = LR_GRID[0]  # Adam learning rate after warm-up
    lam: float = LAM_GRID[0]  # ratio/con: regulariser weight
    tau: float | dict | None = None  # ratio: None/"auto" = automatic, a number, or {class: tau}
    epochs: int = 20
    patience: int | None = 5  # epochs without improvement on val before stopping; 0/None trains all epochs
    warmup: float = 1.0  # linear warm-up, in epochs
    batch_size: int = 256
    select_by: str = "auto"  # the validation metric early stopping watches (SELECT_BY)
    focal_gamma: float = 2.0  # focal: gamma
    class_boost: float = 2.0  # class-weight: extra weight of the edited classes
    seed: int = 0  # the shuffling and view draws come from a torch.Generator seeded with it


@dataclass
class FixConfig(EditConfig):
    """Every setting of a fix (any method of FIX_METHODS): the trainer's settings plus the refits'; ``None`` means "search on val"."""

    method: str = DEFAULT_METHOD
    lr: float | None = None  # gradient methods: Adam learning rate (LR_GRID)
    lam: float | None = None  # ratio/con: regulariser weight (LAM_GRID)
    fit_on: str = "val"  # rebalance: train, val (one half of it; the other half selects) or train+val
    quantile: float | None = None  # rebalance: pseudo-group quantile (QUANTILE_GRID)
    l2: float | None = None  # refits: penalty (L2_GRID)

    def edit_config(self, **chosen) -> EditConfig:
        """The trainer's part of this config, with ``chosen`` values (e.g. the searched lr and lam) filled in."""
        own = {f.name: getattr(self, f.name) for f in fields(EditConfig)}
        return EditConfig(**{**own, **chosen})

    def validate(self) -> "FixConfig":
        """Check every setting (the method against the name table :data:`FIX_METHODS`)."""
        if self.method not in FIX_METHODS:
            raise FIX_METHODS.unknown(self.method)
        for name, v in (("lr", self.lr), ("lam", self.lam), ("l2", self.l2)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise NeuroInspectError(f"--{name} must be a positive finite number; got {v}")
        if self.quantile is not None and not 0 < self.quantile < 1:
            raise NeuroInspectError(f"--quantile must lie strictly between 0 and 1; got {self.quantile}")
        if self.select_by not in SELECT_BY:
            raise NeuroInspectError(f"unknown --select-by '{self.select_by}'; choose one of {', '.join(SELECT_BY)}")
        if self.fit_on not in FIT_ON:
            raise NeuroInspectError(f"--fit-on must be one of {', '.join(FIT_ON)}; got '{self.fit_on}'")
        if self.epochs < 1 or self.batch_size < 1 or (self.patience is not None and self.patience < 0):
            raise NeuroInspectError("--epochs and --train-batch-size must be ≥ 1 and --patience ≥ 0")
        return self

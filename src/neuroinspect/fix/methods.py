"""Stage 3's methods as objects: a :class:`FixMethod` turns a :class:`FixProblem` into a :class:`FixResult`.

A method reads a :class:`FixProblem` (the decision layer, the cached features and the classes to
fix with their neurons) and a validated :class:`~neuroinspect.fix.config.FixConfig`, and returns a
:class:`FixResult`, the one result type of every fix. Two families share the work:

- the *gradient* methods (:class:`~neuroinspect.fix.edit.GradientMethod`: ``ratio``, ``con``,
  ``class-weight``, ``focal``, ``erm``) share one trainer and one search over the learning rate
  and λ; each overrides only the loss hooks;
- the *refits* (:mod:`neuroinspect.fix.refit`, :mod:`neuroinspect.fix.regroup`) override :meth:`FixMethod.fit`.

The names, labels and flags (:class:`~neuroinspect.fix.config.MethodInfo`) sit in the torch-free
name table :data:`~neuroinspect.fix.config.FIX_METHODS`, which the command line reads; a built-in
method's class is imported when it first runs. A new method is one decorated class or function::

    @fix_method("zero-cue", "zero the neurons' weights", needs_neurons=True)
    class ZeroCue(FixMethod):
        def fit(self, p, cfg):
            W = p.W.clone()
            for c, s in p.targets.items():
                W[c, s] = 0.0
            return FixResult(W, p.b, self.name, p.targets)

(a plain function ``run(problem, config) -> FixResult`` is accepted too).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.fix.config import FIX_METHODS, FixConfig, MethodInfo

__all__ = ["FIX_METHODS", "FixProblem", "FixResult", "FixMethod", "fix_method", "get_fix_method"]


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
    """One fitted decision layer, what it was fitted on, how it was chosen, and (gradient methods) how it trained."""

    weight: torch.Tensor  # [C, D] (CPU)
    bias: torch.Tensor | None  # [C] (CPU), None when the head has no bias
    method: str
    targets: dict[int, list[int]]
    fit_on: str = "—"  # the data it was fitted on, in words
    uses_group_labels: bool = False
    chosen: dict = field(default_factory=dict)  # the selected settings (and what the method reports about them)
    search: list[dict] = field(default_factory=list)  # every candidate with its selection score
    best_val_metric: float | None = None
    select_by: str = "—"  # the selection metric, in words
    # the training record of a gradient method (left empty by the refits)
    best_epoch: int | None = None  # 1-based
    epochs_run: int | None = None
    curves: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, regulariser, val_metric, mean_ratio
    tau: dict[int, float] = field(default_factory=dict)  # per edited class (the automatic value unless given)
    importance: dict[int, list[float]] = field(default_factory=dict)  # imp_j of each class's S
    stopped_early: bool = False
    lam: float | None = None

    @property
    def trained(self) -> bool:
        """Whether a gradient trainer produced it (and the training record is filled)."""
        return self.best_epoch is not None

    def apply(self, fs: FeatureSet) -> FeatureSet:
        """``fs`` rescored by the fixed decision layer."""
        return fs.with_logits(self.weight, self.bias)


class FixMethod:
    """A fix of the decision layer. Subclasses override :meth:`fit`; the flags come from the method's
    entry in the name table (:data:`~neuroinspect.fix.config.FIX_METHODS`)."""

    def __init__(self, name: str, info: MethodInfo):
        self.name, self.info = name, info

    @property
    def label(self) -> str:
        return self.info.label

    @property
    def needs_neurons(self) -> bool:
        return self.info.needs_neurons

    @property
    def uses_group_labels(self) -> bool:
        return self.info.uses_group_labels

    @property
    def by_gradient(self) -> bool:
        return self.info.by_gradient

    @property
    def regularised(self) -> bool:
        return self.info.regularised

    def fit(self, problem: FixProblem, config: FixConfig) -> FixResult:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, problem: FixProblem, config: FixConfig) -> FixResult:
        """The fix of ``problem`` with the validated ``config`` (:meth:`fit`)."""
        return self.fit(problem, config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class _FunctionMethod(FixMethod):
    """A method given as a plain function ``run(problem, config) -> FixResult``."""

    def __init__(self, name: str, info: MethodInfo, function: Callable[[FixProblem, FixConfig], FixResult]):
        super().__init__(name, info)
        self.function = function

    def fit(self, problem: FixProblem, config: FixConfig) -> FixResult:
        return self.function(problem, config)


def fix_method(name: str, label: str, *, needs_neurons: bool = False, uses_group_labels: bool = False,
               by_gradient: bool = False, regularised: bool = False):
    """Register a :class:`FixMethod` subclass, or a function ``run(problem, config) -> FixResult``, as the
    method ``name`` (flags: :class:`~neuroinspect.fix.config.MethodInfo`). A gradient method subclasses
    :class:`~neuroinspect.fix.edit.GradientMethod` and passes ``by_gradient=True``."""
    def register(obj):
        FIX_METHODS.register(name, MethodInfo(label, needs_neurons, uses_group_labels, by_gradient, regularised), obj)
        return obj

    return register


def get_fix_method(name: str) -> FixMethod:
    """The method ``name`` (its class imported on first use); an unknown name raises one line listing the choices."""
    entry = FIX_METHODS.entry(name)
    impl = entry.load()
    if isinstance(impl, type) and issubclass(impl, FixMethod):
        return impl(entry.name, entry.info)
    return _FunctionMethod(entry.name, entry.info, impl)

"""Stage 3 as one call: fix a class's false correlations with any method, tuned on val by default.

``fix_head`` runs the method object that the name table
(:data:`~neuroinspect.fix.config.FIX_METHODS`) names: the paper's gradient edit and its baselines
(:mod:`neuroinspect.fix.edit`: ``ratio``, ``con``, ``class-weight``, ``focal``, ``erm``) or the
refits (:mod:`neuroinspect.fix.regroup`: ``regroup``; :mod:`neuroinspect.fix.refit`: ``rebalance``,
``dfr``, ``jtt``, ``ablate``, ...). A setting left as
``None`` in :class:`FixConfig` is chosen by a small, seeded search on the validation split by
the selection metric (learning rate and λ for the gradient methods; penalty and pseudo-group
quantile for the refits), and the search is recorded. ``compare_methods`` runs several methods
over several seeds and returns mean ± std rows.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Mapping

import torch

from neuroinspect.core.base.config import configured
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.metrics import evaluate
from neuroinspect.core.base.records import STAT_KEYS, Comparison, ComparisonRow, EditRecord, Metrics
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.fix.config import FIX_METHODS, FixConfig
from neuroinspect.fix.methods import FixProblem, FixResult, get_fix_method

__all__ = ["FixConfig", "FixResult", "fix_head", "fix_splits", "run_methods", "compare_methods", "aggregate_seeds", "format_table",
           "fix_record", "summary_row", "kept_original_note", "MethodRun"]


def fix_head(W: torch.Tensor, b: torch.Tensor | None, train: FeatureSet, val: FeatureSet | None,
             targets: dict[int, list[int]], config: FixConfig | None = None, *, policy=None,
             progress: bool = False, **overrides) -> FixResult:
    """Fix the decision layer ``W, b`` for ``targets`` ``{class: neurons}`` with the registered method
    ``config.method`` (module docstring; the methods: :mod:`neuroinspect.fix.methods`)."""
    cfg = configured(FixConfig, config, overrides).validate()
    method = get_fix_method(cfg.method)
    targets = {int(c): [int(j) for j in (n or [])] for c, n in targets.items()}
    names = train.class_names
    if method.needs_neurons:
        empty = [names[c] if c < len(names) else str(c) for c, s in targets.items() if not s]
        if empty or not targets:
            raise NeuroInspectError(f"method '{cfg.method}' needs neurons for every edited class (none for "
                                    f"{', '.join(empty) or 'any class'}); pass --neurons or --ranking")
    D = W.shape[1]
    bad = sorted({j for s in targets.values() for j in s if not 0 <= j < D})
    if bad:
        raise NeuroInspectError(f"neurons {bad} are out of range: the features have D={D} neurons (0–{D - 1})")
    return method.run(FixProblem(W, b, train, val, targets, policy, progress), cfg)


# --------------------------------------------------------------------------- comparing over seeds
def summary_row(method: str, metrics: Metrics, edited: list[str], info: dict | None = None) -> ComparisonRow:
    """The row of one evaluation: avg / edited-class / worst-class / worst-group accuracy (worst ones by
    :func:`neuroinspect.core.base.metrics.summarize`) and the per-group accuracies; ``info``: which data and
    labels the method used (:func:`method_info`; left unset when not given)."""
    per_class = metrics.per_class
    accs = [per_class[n] for n in edited if n in per_class]
    s = metrics.summary
    return ComparisonRow(method=method, **(info or {}), avg_acc=metrics.accuracy,
                         class_acc=sum(accs) / len(accs) if accs else None, worst_class_acc=s.worst_class_acc,
                         worst_group_acc=s.worst_group_acc, per_group=dict(metrics.per_group))


def aggregate(method: str, runs: list[ComparisonRow], info: dict) -> ComparisonRow:
    """One table row: mean and std (population, over seeds) of every summary key, plus per-group means."""
    stats = {}
    for k in STAT_KEYS:
        vals = [r.value(k) for r in runs if r.value(k) is not None]
        stats[k] = statistics.fmean(vals) if vals else None
        stats[k + "_std"] = statistics.pstdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        stats[k + "_runs"] = [r.value(k) for r in runs]
    groups = sorted({g for r in runs for g in r.per_group})
    per_group = {g: statistics.fmean(r.per_group[g] for r in runs if g in r.per_group) for g in groups}
    return ComparisonRow(method=method, n_seeds=len(runs), **info, **stats, per_group=per_group)


def method_info(result: FixResult | None) -> dict:
    """Which data and which labels a method used (for the table); ``None``: the original head."""
    if result is None:
        return {"uses_group_labels": False, "fit_on": "—", "select_by": "—"}
    return {"uses_group_labels": result.uses_group_labels, "fit_on": result.fit_on, "select_by": result.select_by}


@dataclass
class MethodRun:
    """One method on one seed: its test ``metrics``, its table ``row`` (one seed) and its ``result``
    (``None`` for the original head)."""

    metrics: Metrics
    row: ComparisonRow
    result: FixResult | None


def has_group_labels(fs: FeatureSet | None) -> bool:
    """Whether ``fs`` names its groups and labels at least one image with one."""
    return fs is not None and bool(fs.group_names) and bool((fs.groups >= 0).any())


UNSPLIT_NOTE = ("the data has no train/val/test splits, so every role reads all of it: the fix is fitted, chosen "
                "and measured on the same images and its metrics are optimistic; split the data "
                "(ROOT/train|val|test/CLASS/* or a split column in the manifest) for honest ones")


def fix_splits(data, wanted: Mapping[str, str], optional=(), fallback: Mapping[str, str] | None = None,
               flags: Mapping[str, str] | None = None) -> tuple[dict[str, str | None], list[str]]:
    """The one check of which split each role of a fix reads (``train``: the methods fit on it; ``val``: the
    held-out split that selects, and that find explains; ``test``: the before/after metrics), before any work.

    ``wanted`` maps each role to the split it asks for (aliases such as ``validation`` are accepted). The
    rules, the same for ``neuroinspect debug`` and ``neuroinspect edit``/``compare``:

    * data with only an ``all`` split (an unsplit folder, in-memory data) serves every role, as
      :meth:`~neuroinspect.core.data.images.ImageData.resolve_split` says, with a note that the metrics are
      optimistic;
    * a role whose split is missing reads its ``fallback`` role's split instead, with a note (the edit command
      measures on ``val`` when there is no ``test``), else is ``None`` when it is ``optional``;
    * any other missing split fails with one line naming it, the splits there are, and what to do (``flags``:
      the option that chooses the role's split, e.g. ``{"test": "--eval-split"}``).

    Returns ``{role: split name or None}`` and the notes."""
    if data is None:
        raise NeuroInspectError("this needs data: pass --data (an image folder, a CSV manifest or torchvision:NAME:ROOT)")
    if list(data.splits) == ["all"]:
        return {role: "all" for role in wanted}, [UNSPLIT_NOTE]
    chosen: dict[str, str | None] = {}
    for role, split in wanted.items():
        try:
            chosen[role] = data.resolve_split(split)
        except NeuroInspectError:
            chosen[role] = None
    notes = []
    for role, split in wanted.items():
        if chosen[role] is not None:
            continue
        other = (fallback or {}).get(role)
        if other is not None and chosen.get(other) is not None:
            chosen[role] = chosen[other]
            notes.append(f"the data has no '{split}' split: the {role} metrics are on '{chosen[other]}', which also "
                         f"chose the fix (optimistic)")
        elif role not in optional:
            flag = (flags or {}).get(role)
            raise NeuroInspectError(
                f"data '{data.spec}' has no '{split}' split{'' if split == role else f' (the {role} split)'} and has "
                f"only: {', '.join(data.splits)}; "
                f"add it (ROOT/{split}/CLASS/* or rows with split={split} in the manifest)"
                + (f" or choose another split ({flag})" if flag else ""))
    return chosen, notes


def runnable_methods(methods, val: FeatureSet | None, targets: dict[int, list[int]] | None = None
                     ) -> tuple[tuple[str, ...], list[str]]:
    """The one check of which fix methods can run on these splits and targets: ``methods`` without repeats,
    the ones that read group labels last, left out (with a note) when ``val`` has no group labels, and the
    ones that need neurons left out (with a note) when ``targets`` names none (``None``: not checked).
    An unknown name fails here, listing the registered methods. Returns the methods and the notes."""
    notes = []
    methods = tuple(dict.fromkeys(methods))
    for m in methods:
        get_fix_method(m)
    labelled = tuple(m for m in methods if FIX_METHODS.info(m).uses_group_labels)
    others = tuple(m for m in methods if m not in labelled)
    if labelled and not has_group_labels(val):
        notes.append(f"{', '.join(labelled)} left out: the validation split has no group labels")
        labelled = ()
    methods = others + labelled
    if targets is not None and not any(targets.values()):
        unfit = tuple(m for m in methods if FIX_METHODS.info(m).needs_neurons)
        if unfit:
            notes.append(f"{', '.join(unfit)} left out: no neurons given (--neurons or --ranking)")
            methods = tuple(m for m in methods if m not in unfit)
    return methods, notes


def run_methods(W, b, splits: Mapping[str, FeatureSet | None], targets: dict[int, list[int]], methods,
                seed: int = 0, config: FixConfig | None = None, *, policy=None,
                progress: bool = False) -> dict[str, MethodRun]:
    """One seed of every method: ``{method: MethodRun}`` (test metrics, one-seed row, FixResult), ``original``
    first. ``splits``: the features by role, ``train`` and ``test`` (``val``: optional, the methods' held-out
    split; see :func:`fix_head`)."""
    cfg = config or FixConfig()
    train, val, test = splits["train"], splits.get("val"), splits["test"]
    edited = [test.class_names[c] for c in targets]
    original = evaluate(test.with_logits(W, b))
    out = {"original": MethodRun(original, summary_row("original", original, edited, method_info(None)), None)}
    for method in methods:
        get_fix_method(method)  # an unknown name fails before any work, listing the registered methods
        res = fix_head(W, b, train, val, targets, cfg, policy=policy, progress=progress, method=method, seed=seed)
        m = evaluate(res.apply(test))
        out[method] = MethodRun(m, summary_row(method, m, edited, method_info(res)), res)
    return out


def aggregate_seeds(per_seed: list[dict[str, MethodRun]]) -> list[ComparisonRow]:
    """Table rows (mean ± std over seeds) from several :func:`run_methods` results."""
    rows = []
    for method in per_seed[0]:
        runs = [s[method] for s in per_seed if method in s]
        rows.append(aggregate(method, [r.row for r in runs], method_info(runs[0].result)))
    return rows


def compare_methods(W, b, splits: Mapping[str, FeatureSet | None], targets: dict[int, list[int]], methods,
                    seeds=(0,), config: FixConfig | None = None, *, policy=None,
                    progress: bool = False) -> tuple[list[ComparisonRow], list[dict[str, MethodRun]]]:
    """Every method once per seed on the same head and ``splits`` (as :func:`run_methods`); rows
    (``original`` first) with mean ± std over seeds, and the per-seed results."""
    per_seed = [run_methods(W, b, splits, targets, methods, seed, config, policy=policy, progress=progress)
                for seed in seeds]
    return aggregate_seeds(per_seed), per_seed


def format_table(rows: list[ComparisonRow]) -> str:
    """A Markdown table of the rows (percentages, mean ± std when there are several seeds)."""
    def cell(r, k):
        v = r.value(k)
        if v is None:
            return "—"
        sd = r.std(k)
        return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd and (r.n_seeds or 1) > 1 else "")

    lines = ["| method | group labels | fit on | avg acc | class acc | worst-class acc | worst-group acc |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        labels = "**yes**" if r.uses_group_labels else "no"
        lines.append(f"| {r.method} | {labels} | {r.fit_on or ''} | {cell(r, 'avg_acc')} | {cell(r, 'class_acc')} | "
                     f"{cell(r, 'worst_class_acc')} | {cell(r, 'worst_group_acc')} |")
    return "\n".join(lines)


def kept_original_note(result: FixResult) -> str | None:
    """One line when a method kept the original head (its held-out score did not beat no change); else None."""
    c = result.chosen
    if not c.get("kept_original"):
        return None
    if math.isnan(c["held_out_worst"]):  # nothing to fit by
        return f"kept the original head: {result.method} found {c['compared_with']}; nothing was changed"
    margin = f" by the {100 * c['min_gain']:g} points a change needs" if c.get("min_gain") else ""
    return (f"kept the original head: {result.method}'s held-out worst pseudo-group accuracy "
            f"{100 * c['held_out_worst']:.1f}% did not beat no change ({100 * c['no_change_worst']:.1f}%, "
            f"{c['compared_with']}){margin}; nothing was changed")


def scalar_settings(chosen: dict) -> str:
    """The chosen settings that are single numbers or words, as ``name value, …`` (for one printed line)."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.items()
                     if isinstance(v, (int, float, str)) and not isinstance(v, bool))


def fix_record(result: FixResult, class_names: list[str], before: Metrics, after: Metrics, model_file: str,
               **extra) -> EditRecord:
    """The ``edit.json`` record: what was fixed, how, on which data and labels, and the metrics before and after.

    ``extra``: more top-level keys (``split``, ``notes``, ``reload``, ``picked_by``)."""
    names = class_names
    rec = {
        "method": result.method,
        "classes": [names[c] for c in result.targets],
        "neurons": {names[c]: list(s) for c, s in result.targets.items()},
        "uses_group_labels": result.uses_group_labels,
        "fit_on": result.fit_on,
        "select_by": result.select_by,
        "chosen": result.chosen,
        "search": result.search,
        "best_val_metric": result.best_val_metric,
        "kept_original": bool(result.chosen.get("kept_original", False)),
        "lam": result.chosen.get("lam"),
        "before": before.to_dict(),
        "after": after.to_dict(),
        "model_file": model_file,
    }
    if result.trained:  # a gradient method: its training record
        rec.update({
            "tau": {names[c]: t for c, t in result.tau.items()},
            "importance": {names[c]: v for c, v in result.importance.items()},
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "stopped_early": result.stopped_early,
            "curves": [{**row, "mean_ratio": {names[c]: v for c, v in row.get("mean_ratio", {}).items()}}
                       for row in result.curves],
        })
    return EditRecord.from_dict({**rec, **extra})


def comparison_record(rows: list[ComparisonRow], targets: dict[int, list[int]], class_names: list[str], split: str,
                      seeds, notes=(), *, neurons_by_seed: dict | None = None,
                      config: FixConfig | None = None) -> Comparison:
    """The ``compare.json`` record of :func:`compare_methods`'s rows, for ``compare`` and the demo alike.

    ``neurons_by_seed``: ``{seed: {class: neurons}}`` when each seed picked its own neurons;
    ``config``: the settings every method shared (recorded, with its selection metric)."""
    return Comparison.from_dict({
        "classes": [class_names[c] for c in targets],
        "split": split,
        "rows": [r.to_dict() for r in rows],
        "neurons": {class_names[c]: list(s) for c, s in targets.items()},
        "seeds": list(seeds),
        "select_by": config.select_by if config is not None else None,
        "config": {k: v for k, v in vars(config).items() if k not in ("method", "seed")} if config is not None else None,
        "neurons_by_seed": {str(k): v for k, v in neurons_by_seed.items()} if neurons_by_seed is not None else None,
        "notes": [str(n) for n in notes],
    })

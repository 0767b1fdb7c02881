"""Stage 3 as one call: fix a class's false correlations with any method, tuned on val by default.

``fix_head`` dispatches to the paper's gradient edit and its baselines (:mod:`neuroinspect.fix.edit`:
``ratio``, ``con``, ``class-weight``, ``focal``, ``erm``) or to the refits
(:mod:`neuroinspect.fix.refit`: ``rebalance``, ``dfr``, ``jtt``, ``ablate``). A setting left as
``None`` in :class:`FixConfig` is chosen by a small, seeded search on the validation split by
the selection metric (learning rate and λ for the gradient methods; penalty and pseudo-group
quantile for the refits), and the search is recorded. ``compare_methods`` runs several methods
over several seeds and returns mean ± std rows.
"""
from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass, field, replace

import torch

from neuroinspect.core.config import configured
from neuroinspect.fix.edit import EditResult, edit_head, resolve_select_by
from neuroinspect.core.errors import NeuroInspectError
from neuroinspect.core.featureset import FeatureSet
from neuroinspect.fix.config import (EDIT_METHODS, GROUP_LABEL_SELECT, L2_GRID, LAM_GRID, LR_GRID, METHODS, NEEDS_NEURONS,
                         NEURON_METHODS, QUANTILE_GRID, FixConfig)
from neuroinspect.core.metrics import evaluate
from neuroinspect.fix.refit import ablate, dfr, jtt, rebalance


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


def _edit(W, b, train, val, targets, cfg: FixConfig, policy, progress) -> FixResult:
    select_by = resolve_select_by(cfg.select_by, targets)
    lrs = (cfg.lr,) if cfg.lr is not None else LR_GRID
    lams = (cfg.lam,) if cfg.lam is not None else (LAM_GRID if cfg.method in NEURON_METHODS else (0.0,))
    use_val = val is not None and cfg.patience > 0
    best, rows = None, []
    for lr, lam in itertools.product(lrs, lams):
        trainer = cfg.edit_config(lr=lr, lam=lam, patience=cfg.patience if use_val else None, select_by=select_by)
        res = edit_head(W, b, train, val if use_val else None, targets, trainer, policy=policy, progress=progress)
        rows.append({"lr": lr, "lam": lam, "metric": res.best_val_metric, "best_epoch": res.best_epoch})
        if best is None or (res.best_val_metric is not None and res.best_val_metric > best[1].best_val_metric):
            best = ({"lr": lr, "lam": lam}, res)
    chosen, res = best
    fit_on = "train (from the original head)"
    return FixResult(res.weight, res.bias, cfg.method, targets, select_by if use_val else "last epoch",
                     select_by in GROUP_LABEL_SELECT, fit_on, chosen, rows if len(rows) > 1 else [],
                     res.best_val_metric, res)


def fix_head(W: torch.Tensor, b: torch.Tensor | None, train: FeatureSet, val: FeatureSet | None,
             targets: dict[int, list[int]], config: FixConfig | None = None, *, policy=None,
             progress: bool = False, **overrides) -> FixResult:
    """Fix the decision layer ``W, b`` for ``targets`` ``{class: neurons}`` (module docstring)."""
    cfg = configured(FixConfig, config, overrides).validate()
    targets = {int(c): [int(j) for j in (n or [])] for c, n in targets.items()}
    names = train.class_names
    if cfg.method in NEEDS_NEURONS:
        empty = [names[c] if c < len(names) else str(c) for c, s in targets.items() if not s]
        if empty or not targets:
            raise NeuroInspectError(f"method '{cfg.method}' needs neurons for every edited class (none for "
                                    f"{', '.join(empty) or 'any class'}); pass --neurons or --ranking")
        D = W.shape[1]
        bad = sorted({j for s in targets.values() for j in s if not 0 <= j < D})
        if bad:
            raise NeuroInspectError(f"neurons {bad} are out of range: the features have D={D} neurons (0–{D - 1})")
    if cfg.method in EDIT_METHODS:
        return _edit(W, b, train, val, targets, cfg, policy, progress)
    l2 = (cfg.l2,) if cfg.l2 is not None else L2_GRID
    if cfg.method == "rebalance":
        qs = (cfg.quantile,) if cfg.quantile is not None else QUANTILE_GRID
        res = rebalance(train, val, targets, fit_on=cfg.fit_on, l2=l2, quantiles=qs, seed=cfg.seed)
    elif cfg.method == "dfr":
        res = dfr(train, val, l2=l2, seed=cfg.seed, targets=targets)
    elif cfg.method == "jtt":
        res = jtt(train, val, l2=l2, seed=cfg.seed, targets=targets)
    else:
        res = ablate(W, b, targets)
    return FixResult(res.weight, res.bias, res.method, targets, res.select_by or "—", res.uses_group_labels,
                     res.fit_on, res.chosen, res.search, res.best_val_metric, res)


# --------------------------------------------------------------------------- comparing over seeds
def summary_row(method: str, metrics: dict, edited: list[str]) -> dict:
    """avg / edited-class / worst-class / worst-group accuracy of one evaluation."""
    per_class = metrics["per_class"]
    accs = [per_class[n] for n in edited if n in per_class]
    return {
        "method": method,
        "avg_acc": metrics["accuracy"],
        "class_acc": sum(accs) / len(accs) if accs else None,
        "worst_class_acc": min(per_class.values()) if per_class else None,
        "worst_group_acc": min(metrics["per_group"].values()) if metrics["per_group"] else None,
    }


STAT_KEYS = ("avg_acc", "class_acc", "worst_class_acc", "worst_group_acc")


def aggregate(method: str, runs: list[dict], per_group: list[dict], info: dict) -> dict:
    """One table row: mean and std (population, over seeds) of every summary key, plus per-group means."""
    row = {"method": method, "n_seeds": len(runs), **info}
    for k in STAT_KEYS:
        vals = [r[k] for r in runs if r[k] is not None]
        row[k] = statistics.fmean(vals) if vals else None
        row[k + "_std"] = statistics.pstdev(vals) if len(vals) > 1 else (0.0 if vals else None)
        row[k + "_runs"] = [r[k] for r in runs]
    groups = sorted({g for pg in per_group for g in pg})
    row["per_group"] = {g: statistics.fmean(pg[g] for pg in per_group if g in pg) for g in groups}
    return row


def method_info(result: FixResult | None) -> dict:
    """Which data and which labels a method used (for the table); ``None``: the original head."""
    if result is None:
        return {"uses_group_labels": False, "fit_on": "—", "select_by": "—"}
    return {"uses_group_labels": result.uses_group_labels, "fit_on": result.fit_on, "select_by": result.select_by}


def run_methods(W, b, train: FeatureSet, val: FeatureSet | None, test: FeatureSet, targets: dict[int, list[int]],
                methods, seed: int = 0, config: FixConfig | None = None, *, policy=None,
                progress: bool = False) -> dict[str, tuple[dict, dict, FixResult | None]]:
    """One seed of every method: ``{method: (test metrics, summary row, FixResult)}``, ``original`` first."""
    cfg = config or FixConfig()
    edited = [test.class_names[c] for c in targets]
    original = evaluate(test.with_logits(W, b))
    out = {"original": (original, summary_row("original", original, edited), None)}
    for method in methods:
        if method not in METHODS:
            raise NeuroInspectError(f"unknown method '{method}'; choose from {', '.join(METHODS)}")
        res = fix_head(W, b, train, val, targets, cfg, policy=policy, progress=progress, method=method, seed=seed)
        m = evaluate(res.apply(test))
        out[method] = (m, summary_row(method, m, edited), res)
    return out


def aggregate_seeds(per_seed: list[dict[str, tuple[dict, dict, FixResult | None]]]) -> list[dict]:
    """Table rows (mean ± std over seeds) from several :func:`run_methods` results."""
    rows = []
    for method in per_seed[0]:
        runs = [s[method] for s in per_seed if method in s]
        info = method_info(runs[0][2])
        rows.append(aggregate(method, [r[1] for r in runs], [r[0]["per_group"] for r in runs], info))
    return rows


def compare_methods(W, b, train: FeatureSet, val: FeatureSet | None, test: FeatureSet, targets: dict[int, list[int]],
                    methods, seeds=(0,), config: FixConfig | None = None, *, policy=None,
                    progress: bool = False) -> tuple[list[dict], list[dict]]:
    """Every method once per seed on the same head; rows (``original`` first) with mean ± std over seeds,
    and the per-seed results."""
    per_seed = [run_methods(W, b, train, val, test, targets, methods, seed, config, policy=policy, progress=progress)
                for seed in seeds]
    return aggregate_seeds(per_seed), per_seed


def format_table(rows: list[dict]) -> str:
    """A Markdown table of the rows (percentages, mean ± std when there are several seeds)."""
    def cell(r, k):
        v = r.get(k)
        if v is None:
            return "—"
        sd = r.get(k + "_std")
        return f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd and r.get("n_seeds", 1) > 1 else "")

    lines = ["| method | group labels | fit on | avg acc | class acc | worst-class acc | worst-group acc |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        labels = "**yes**" if r.get("uses_group_labels") else "no"
        lines.append(f"| {r['method']} | {labels} | {r.get('fit_on', '')} | {cell(r, 'avg_acc')} | {cell(r, 'class_acc')} | "
                     f"{cell(r, 'worst_class_acc')} | {cell(r, 'worst_group_acc')} |")
    return "\n".join(lines)


def fix_record(result: FixResult, class_names: list[str], before: dict, after: dict, model_file: str, **extra) -> dict:
    """The ``edit.json`` record: what was fixed, how, on which data and labels, and the metrics before and after."""
    names = class_names
    d = result.detail
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
        "lam": result.chosen.get("lam"),
        "before": before,
        "after": after,
        "model_file": model_file,
    }
    if isinstance(d, EditResult):
        rec.update({
            "tau": {names[c]: t for c, t in d.tau.items()},
            "importance": {names[c]: v for c, v in d.importance.items()},
            "best_epoch": d.best_epoch,
            "epochs_run": d.epochs_run,
            "stopped_early": d.stopped_early,
            "curves": [{**row, "mean_ratio": {names[c]: v for c, v in row.get("mean_ratio", {}).items()}}
                       for row in d.curves],
        })
    return {**rec, **extra}

"""Every fix in the validation regimes users meet, on both built-in benchmarks, over several seeds.

Benchmarks (frozen EfficientNet-Lite0 with its real ImageNet weights, each seed its own ERM head):

- ``background``: the demo's spurious scenes (Coat on nature backgrounds in 95 % of training);
- ``stamp``: the same items with a *local artefact* as the shortcut: a small red badge in a corner
  on 95 % of the training coats and 5 % of the other classes' images (``ScenesConfig(cue="stamp")``).

Regimes of the validation split (the test split is always balanced):

- ``a`` balanced: half of every class with the shortcut's attribute, half without;
- ``b`` drawn like train: every group kept in its training share (about 2 minority images per class);
- ``c`` small and balanced: 10 images per group;
- ``d`` none: methods that need val are left out, the rest fit and select on train.

The test split holds 900 images a class (450 a group) by default, six times the demo's: with the demo's 75
a group, one image moves a worst group by 1.3 points, as much as the gaps between the methods on the stamp.
Train and val are the demo's own images whatever the test size.

Each seed fits its own ERM head, chooses the class to debug as ``neuroinspect debug`` does (its
default ``--choose-by tails``; the choices of ``mistakes`` and ``accuracy`` are recorded beside it) and takes
its top 3 insufficient neurons by the contribution-gap ranking on val (on train without val), then runs
every method at its defaults; the default fix runs a second time on the shortcut's class
(``--given-class``), as ``debug --class`` would. It prints one JSON object: per benchmark and regime,
each method's test worst-group and average accuracy (mean ± std over seeds), whether it reads group
labels, which class was chosen per seed, whether the default fix kept the original head and its test of
val's share of the pseudo-minority (``val_enrichment_p``), and the goals of the default fix. Every gap between the
default fix and another method comes with a 95 % interval from a paired bootstrap over the test images
(resampled inside each group, the same draw for every method and seed), so that a gap within the test
split's noise reads as one.

    python benchmarks/bench_regimes.py --seeds 0,1,2

The first run builds the scenes and extracts their features (20 minutes on one thread of a 2-core CPU, both
benchmarks); later runs read them from the cache (5 minutes).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, pin_threads, print_measured, scene_features  # noqa: E402

REGIMES = ("a", "b", "c", "d")
TEST_PER_CLASS = 900  # Fashion-MNIST's test split holds 1000 items a class; val takes 80 of them
BOOTSTRAP_DRAWS = 2000
NEEDS_VAL = {"val-refit", "dfr", "dfr-half", "rebalance"}
METHODS = ("regroup", "rebalance", "ratio", "con", "class-weight", "focal", "erm", "jtt", "ablate", "val-refit",
           "pooled-refit", "dfr", "dfr-half")  # every method `neuroinspect compare` runs by default, and DFR on half of val


def regime_val(feats: dict, regime: str, seed: int):
    """The validation split of ``regime`` drawn from the balanced one (None for ``d``)."""
    val, train = feats["val"], feats["train"]
    if regime == "a":
        return val
    if regime == "d":
        return None
    g = torch.Generator().manual_seed(1000 + seed)
    keep = []
    for k in val.groups.unique().tolist():
        idx = (val.groups == k).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        if regime == "c":
            keep.append(idx[:10])
            continue
        c = int(val.labels[idx[0]])
        share = float((train.groups == k).sum()) / float((train.labels == c).sum())
        others = int(((val.labels == c) & (val.groups != k)).sum())
        keep.append(idx if share >= 0.5 else idx[:max(1, round(others * share / (1 - share)))])
    return val.subset(torch.cat(keep).sort().values)


def _ms(values: list[float]) -> dict:
    return {"mean": round(100 * statistics.fmean(values), 1),
            "std": round(100 * statistics.pstdev(values), 1) if len(values) > 1 else 0.0,
            "runs": [round(100 * v, 1) for v in values]}


def worst_group_draws(correct: dict[str, torch.Tensor], groups: torch.Tensor, draws: int = BOOTSTRAP_DRAWS,
                      seed: int = 0) -> dict[str, torch.Tensor]:
    """Per method, [S, draws]: the worst-group accuracy of each row of its ``correct`` [S, N] (one row a seed) on
    bootstrap draws of the test images, resampled inside each group. One set of draws serves every method, so
    the differences between methods are paired."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for k in groups.unique().tolist():
        idx = (groups == k).nonzero().flatten()
        picks.append(idx[torch.randint(len(idx), (draws, len(idx)), generator=g)])  # [draws, n_k]
    return {m: torch.stack([c[:, pick].float().mean(-1) for pick in picks]).amin(0) for m, c in correct.items()}


def run_regime(feats: dict, regime: str, seeds, methods, given: str = "") -> dict:
    from neuroinspect.core.base.metrics import evaluate
    from neuroinspect.demo import DemoConfig, fit_linear_head
    from neuroinspect.find.ranking import explain_class
    from neuroinspect.fix.compare import fix_head
    from neuroinspect.fix.methods import get_fix_method
    from neuroinspect.pipeline import PipelineConfig, choose_classes

    train, test = feats["train"], feats["test"]
    C = len(train.class_names)
    acc: dict[str, dict[str, list]] = {}
    chosen, others, kept, enrichment = [], {"mistakes": [], "accuracy": []}, [], []
    for seed in seeds:
        val = regime_val(feats, regime, seed)
        W, b = fit_linear_head(train, C, epochs=DemoConfig.head_epochs, seed=seed)
        explain_on = (val if val is not None else train).with_logits(W, b)
        cfg = PipelineConfig()
        c = choose_classes(explain_on, cfg, train.class_names.index, train=train, head=(W, b))[0]
        chosen.append(train.class_names[c])
        for rule, names in others.items():  # the other rules, recorded beside the default's choice
            names.append(train.class_names[choose_classes(explain_on, replace(cfg, choose_by=rule),
                                                          train.class_names.index, train=train, head=(W, b))[0]])
        ex = explain_class(W, b, explain_on, c, progress=False)
        neurons = [s.neuron for s in (ex.insufficient or ex.excessive)[:cfg.n_edit]]
        targets = {c: neurons}

        def record(name, weight, bias):
            scored = test.with_logits(weight, bias)
            m = evaluate(scored)
            acc.setdefault(name, {"worst": [], "avg": [], "correct": []})
            acc[name]["worst"].append(min(m.per_group.values()))
            acc[name]["avg"].append(m.accuracy)
            acc[name]["correct"].append(scored.predictions == test.labels)

        record("original", W, b)
        for method in methods:
            if (val is None and method in NEEDS_VAL) or (not neurons and get_fix_method(method).needs_neurons):
                continue
            res = fix_head(W, b, train, val, targets, method=method, seed=seed)
            record(method, res.weight, res.bias)
            if method == methods[0]:
                kept.append(bool(res.chosen.get("kept_original")))
                enrichment.append(res.chosen.get("val_enrichment_p"))
        if given:  # the default fix pointed at the shortcut's class, as `debug --class NAME` does
            g = train.class_names.index(given)
            ex = explain_class(W, b, explain_on, g, progress=False)
            res = fix_head(W, b, train, val, {g: [s.neuron for s in (ex.insufficient or ex.excessive)[:cfg.n_edit]]},
                           method=methods[0], seed=seed)
            record(f"{methods[0]} ({given} given)", res.weight, res.bias)
    rows = {m: {"worst_group": _ms(v["worst"]), "average": _ms(v["avg"]),
                "uses_group_labels": m != "original" and get_fix_method(m.split(" (")[0]).uses_group_labels}
            for m, v in acc.items()}
    draws = worst_group_draws({m: torch.stack(v["correct"]) for m, v in acc.items()
                               if len(v["correct"]) == len(acc[methods[0]]["correct"])}, test.groups)
    return {"val_size": 0 if val is None else len(val), "test_size": len(test), "chosen_class": chosen,
            **{f"chosen_by_{rule}": v for rule, v in others.items()}, "kept_original": kept,
            "val_enrichment_p": [None if p is None else float(f"{p:.3g}") for p in enrichment], "rows": rows,
            "goals": goals(rows, methods[0], draws)}


def gap(draws: dict, fix: str, rival: str) -> dict:
    """The paired-bootstrap 95 % interval of the fix's mean worst group minus the rival's, in points."""
    d = 100 * (draws[fix] - draws[rival]).mean(0)
    return {"ci95": [round(float(d.quantile(0.025)), 1), round(float(d.quantile(0.975)), 1)]}


def goals(rows: dict, fix: str, draws: dict | None = None) -> dict:
    """How the default fix stands against every method that reads no group labels, and against DFR. With
    ``draws`` (:func:`worst_group_draws` per method), each gap's 95 % interval over the test images, and the
    methods the fix is below beyond that noise (``significantly_below``)."""
    wg = {m: r["worst_group"]["mean"] for m, r in rows.items()}
    rivals = {m: v for m, v in wg.items() if not m.startswith(fix) and not rows[m]["uses_group_labels"]}
    best_rival = max(rivals, key=rivals.get)
    out = {"fix": wg[fix], "best_without_group_labels": best_rival, "beats_every_method_without_group_labels":
           all(wg[fix] >= v for v in rivals.values()), "minus_best_rival_points": round(wg[fix] - rivals[best_rival], 1)}
    if draws:
        out["gaps"] = {m: {"points": round(wg[fix] - wg[m], 1), **gap(draws, fix, m)}
                       for m in wg if not m.startswith(fix) and m in draws}
        out["significantly_below"] = sorted(m for m in rivals if m in out["gaps"] and out["gaps"][m]["ci95"][1] < 0)
    if "val-refit" in wg:
        out["minus_val_refit_points"] = round(wg[fix] - wg["val-refit"], 1)
    if "dfr" in wg:
        out["minus_dfr_points"] = round(wg[fix] - wg["dfr"], 1)
    out["never_worse_than_original"] = wg[fix] >= wg["original"]
    return out


def main() -> None:
    from neuroinspect.cli.common import HelpLayout  # method names are not broken at their hyphens

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpLayout)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--benchmarks", default="background,stamp", help="which benchmarks (default background,stamp)")
    p.add_argument("--regimes", default="abcd", help="which validation regimes (default abcd)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated methods, the default fix first (default {', '.join(METHODS)})")
    p.add_argument("--given-class", default="Coat",
                   help="also run the default fix on this class, as `debug --class NAME` would (default Coat, "
                        "the shortcut's class in both benchmarks; '' for none)")
    p.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS,
                   help=f"test images a class (default {TEST_PER_CLASS}; the demo's test split holds 150)")
    p.add_argument("--cache-dir", help="feature cache (default $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)")
    add_arguments(p, threads=1, repeat=1)
    args = p.parse_args()
    pin_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    methods = tuple(m for m in args.methods.split(",") if m)

    def run() -> dict:
        out = {"seeds": seeds, "methods": list(methods), "test_per_class": args.test_per_class,
               "bootstrap_draws": BOOTSTRAP_DRAWS}
        for bench in args.benchmarks.split(","):
            feats = scene_features(bench, args.cache_dir, args.test_per_class)
            out[bench] = {r: run_regime(feats, r, seeds, methods, args.given_class) for r in args.regimes}
        return out

    print_measured(run, args.repeat)


if __name__ == "__main__":
    main()

"""Find and fix, measured: which ranking finds the shortcut's neurons, and which fix repairs it.

On the demo's default benchmark (spurious scenes, frozen EfficientNet-Lite0 with its real weights)
and on the planted feature-space shortcut of the tests, over several seeds (each seed: its own
ERM head, explanation, pick and fixes), it prints one JSON object:

- ``rankings``: for the paper's additive counterfactual, the multiplicative one and the contribution
  gap, how well the top insufficient neurons separate the worst class's majority group from its
  minority group on test (|AUC − 0.5|, and their rank among all D neurons by that separation;
  group labels are used here only to evaluate);
- ``demo``: every method's test accuracy (average, worst group; mean ± std over seeds), which data
  and labels it uses, and the goals of the fix (rebalance ≥ ERM retraining + 25 points, average ≥
  original − 1 point, within 10 points of DFR);
- ``planted``: the same on the planted shortcut (goal: rebalance raises worst-group accuracy ≥ 40 points).

    python benchmarks/bench_fix.py --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, pin_threads, print_measured, scene_features  # noqa: E402


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    gt = (pos.unsqueeze(1) > neg.unsqueeze(0)).float().mean((0, 1))
    eq = (pos.unsqueeze(1) == neg.unsqueeze(0)).float().mean((0, 1))
    return gt + 0.5 * eq


def _ms(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def demo_features(cache: Path | None):
    from neuroinspect.demo import DemoConfig

    return DemoConfig(), scene_features("background", cache)


def evaluate(feats, cfg, seeds, spurious: str) -> tuple[dict, dict]:
    from neuroinspect.demo import fit_linear_head
    from neuroinspect.pipeline import find_and_fix
    from neuroinspect.find.ranking import RANKINGS, explain_class
    from neuroinspect.fix.compare import aggregate_seeds

    te = feats["test"]
    own = [i for i, g in enumerate(te.group_names) if g.startswith(spurious + "/")]
    # majority = the group of the class's training background (the larger one in training)
    counts = [int((feats["train"].groups == g).sum()) for g in own]
    major, minor = (own[0], own[1]) if counts[0] >= counts[1] else (own[1], own[0])
    separation = (_auc(te.features[te.groups == major], te.features[te.groups == minor]) - 0.5).abs()
    order = torch.argsort(separation, descending=True)
    rank_of = torch.empty_like(order)
    rank_of[order] = torch.arange(len(order))
    rankings = {r: {"separation": [], "rank": []} for r in RANKINGS}
    per_seed = []
    C = len(feats["train"].class_names)
    for seed in seeds:
        W, b = fit_linear_head(feats["train"], C, epochs=cfg.head_epochs, seed=seed)
        fs = {k: v.with_logits(W, b) for k, v in feats.items()}
        c = fs["val"].class_names.index(spurious)
        for r in RANKINGS:
            ex = explain_class(W, b, fs["val"], c, ranking=r, progress=False)
            top = [s.neuron for s in ex.insufficient[:cfg.pipeline.n_edit]]
            rankings[r]["separation"].append(float(separation[top].mean()) if top else 0.0)
            rankings[r]["rank"] += [int(rank_of[j]) for j in top]
        per_seed.append(find_and_fix(feats, cfg.pipeline, seed, head=(W, b)).results)
    ranking_out = {r: {"separation_mean": statistics.fmean(v["separation"]),
                       "ranks_of_selected": v["rank"], "D": int(len(separation))} for r, v in rankings.items()}
    rows = aggregate_seeds(per_seed)
    return ranking_out, {r.method: {
        "avg_acc": _ms(r.avg_acc_runs), "worst_group_acc": _ms(r.worst_group_acc_runs),
        "uses_group_labels": r.uses_group_labels, "fit_on": r.fit_on} for r in rows}


def goals(rows: dict) -> dict:
    wg = {m: v["worst_group_acc"]["mean"] for m, v in rows.items()}
    avg = {m: v["avg_acc"]["mean"] for m, v in rows.items()}
    out = {}
    if "erm" in wg:
        out["rebalance_minus_erm_points"] = round(100 * (wg["rebalance"] - wg["erm"]), 2)
        out["rebalance_beats_erm_by_25"] = wg["rebalance"] >= wg["erm"] + 0.25
    out["rebalance_avg_minus_original_points"] = round(100 * (avg["rebalance"] - avg["original"]), 2)
    out["rebalance_keeps_average"] = avg["rebalance"] >= avg["original"] - 0.01
    if "dfr" in wg:
        out["dfr_minus_rebalance_points"] = round(100 * (wg["dfr"] - wg["rebalance"]), 2)
        out["rebalance_within_10_of_dfr"] = wg["rebalance"] >= wg["dfr"] - 0.10
    out["rebalance_gain_points"] = round(100 * (wg["rebalance"] - wg["original"]), 2)
    return out


def planted(seeds) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import shortcut

    from neuroinspect.fix.compare import aggregate_seeds
    from neuroinspect.pipeline import PipelineConfig, find_and_fix

    cfg = PipelineConfig(n_edit=1, methods=("rebalance", "erm", "ratio", "dfr"))
    per_seed = []
    for seed in seeds:
        S = shortcut.splits(seed)
        per_seed.append(find_and_fix(S, cfg, seed, head=shortcut.erm_head(S["train"], seed=seed)).results)
    rows = {r.method: {"avg_acc": _ms(r.avg_acc_runs), "worst_group_acc": _ms(r.worst_group_acc_runs),
                       "uses_group_labels": r.uses_group_labels} for r in aggregate_seeds(per_seed)}
    return {"rows": rows, "goals": {**goals(rows), "rebalance_gain_at_least_40":
                                    rows["rebalance"]["worst_group_acc"]["mean"] >= rows["original"]["worst_group_acc"]["mean"] + 0.4}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--cache-dir", help="feature cache (default $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)")
    p.add_argument("--skip-demo", action="store_true", help="only the planted shortcut (no Lite0 features needed)")
    add_arguments(p, threads=1, repeat=1)
    args = p.parse_args()
    pin_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    def run() -> dict:
        out = {"seeds": seeds, "planted": planted(seeds)}
        if not args.skip_demo:
            cfg, feats = demo_features(args.cache_dir)
            ranking, rows = evaluate(feats, cfg, seeds, cfg.scenes.spurious_class)
            out["rankings"] = ranking
            out["demo"] = {"rows": rows, "goals": goals(rows), "methods": list(cfg.pipeline.methods)}
        return out

    print_measured(run, args.repeat)  # the results are deterministic: the last run's are printed


if __name__ == "__main__":
    main()

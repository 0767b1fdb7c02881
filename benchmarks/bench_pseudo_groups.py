"""Why ``regroup`` wins on the background shortcut and not on the stamp: how well its pseudo-groups match the true ones.

``regroup`` (the default fix) balances a refit by pseudo-groups built from the class's held-out
mistakes. This script measures, on both built-in benchmarks and the validation regimes of
``bench_regimes.py`` that differ most ((a) balanced, (b) drawn like train, (d) none), with the
demo's shortcut class fixed (Coat) and each seed its own ERM head:

- ``auc``: per class, how well a score ranks the *true* minority images of the pooled train + val
  (a class's images without the shortcut's attribute for the shortcut class, with it for the
  others), as ROC AUC averaged over the classes (0.5 = chance). Two scores: ``mistakes``, the
  projection on the direction ``regroup`` builds from the held-out mistakes over all neurons, and
  ``head``, the head under debugging's own score for the class (the shortcut it learned, read
  without any group label).
- ``precision``, ``recall``: of the pseudo-minority ``regroup`` balances by, against the true one;
  ``head_chosen``: the share of seeds in which that grouping came from the head's own score.
- ``worst_group``: test worst-group accuracy (%) of ``regroup`` as it is, and of the same refit and
  selection given the *true* groups in place of its pseudo-groups (``true_groups``, an upper bound
  that reads group labels; no no-change guard).

Group labels are read only to score, never by ``regroup``. Prints one JSON object (mean ± std over seeds).

    python benchmarks/bench_pseudo_groups.py --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, pin_threads, print_measured, scene_features  # noqa: E402
from bench_regimes import TEST_PER_CLASS, regime_val  # noqa: E402


def true_minority(parts, train) -> torch.Tensor:
    """[N] bool over the stacked ``parts``: images of a group holding under half of its class in training."""
    out = []
    for fs in parts:
        m = torch.zeros(len(fs), dtype=torch.bool)
        for k in fs.groups.unique().tolist():
            c = int(fs.labels[fs.groups == k][0])
            m[fs.groups == k] = float((train.groups == k).sum()) < 0.5 * float((train.labels == c).sum())
        out.append(m)
    return torch.cat(out)


def class_auc(score: torch.Tensor, y: torch.Tensor, truth: torch.Tensor, c: int) -> float:
    """Mean over classes of the ROC AUC of ``score`` for the true minority (negated for ``c``: its minority lacks)."""
    from sklearn.metrics import roc_auc_score  # lazy: only the measurement needs it

    aucs = []
    for k in y.unique().tolist():
        m = y == k
        if 0 < int(truth[m].sum()) < int(m.sum()):
            aucs.append(roc_auc_score(truth[m].numpy(), (score[m] if k != c else -score[m]).numpy()))
    return statistics.fmean(aucs)


def one_run(feats: dict, regime: str, seed: int) -> dict:
    from neuroinspect.core.base.metrics import evaluate
    from neuroinspect.demo import DemoConfig, fit_linear_head
    from neuroinspect.fix import regroup as rg

    train, test = feats["train"], feats["test"]
    val = regime_val(feats, regime, seed)
    c = train.class_names.index(DemoConfig().scenes.spurious_class)
    W, b = fit_linear_head(train, len(train.class_names), epochs=DemoConfig.head_epochs, seed=seed)
    pool = rg.pooled(train, val, seed)
    truth = true_minority([train] + ([val] if val is not None else []), train)
    w = W.float() * pool.std  # the head's weights on the standardised features
    scores = {"mistakes": pool.x @ rg.shortcut_direction(pool, c), "head": pool.x @ (w[c] - w.mean(0))}
    fixed = rg.regroup(W, b, train, val, {c: []}, seed=seed)
    source = fixed.chosen.get("groups_from", {}).get(train.class_names[c])  # the grouping regroup balanced by
    found = (rg.minority_of(pool, c, rg.candidate_directions(pool, c, [], W)[source]) if source
             else torch.zeros(len(pool.y), dtype=torch.bool))
    true_keys = 2 * pool.y + truth.long()
    best, _ = rg.choose_refit(pool, true_keys, seed)
    Wt, bt = rg.fit_raw(pool, true_keys, best[0], 20, seed)

    def worst(weight, bias) -> float:
        return min(evaluate(test.with_logits(weight, bias)).per_group.values())

    return {"auc_mistakes": class_auc(scores["mistakes"], pool.y, truth, c),
            "auc_head": class_auc(scores["head"], pool.y, truth, c),
            "precision": float(truth[found].float().mean()) if found.any() else 0.0,
            "recall": float(found[truth].float().mean()), "true_share": float(truth.float().mean()),
            "head_chosen": float(source == "head"),
            "original": worst(W, b), "regroup": worst(fixed.weight, fixed.bias), "true_groups": worst(Wt, bt)}


def _ms(values: list[float], scale: float) -> dict:
    return {"mean": round(scale * statistics.fmean(values), 2 if scale == 1 else 1),
            "std": round(scale * statistics.pstdev(values), 2 if scale == 1 else 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--benchmarks", default="background,stamp", help="which benchmarks (default background,stamp)")
    p.add_argument("--regimes", default="abd", help="which validation regimes of bench_regimes.py (default abd)")
    p.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS,
                   help=f"test images a class, as bench_regimes.py (default {TEST_PER_CLASS}; the demo's holds 150)")
    p.add_argument("--cache-dir", help="feature cache (default $NEUROINSPECT_CACHE or ~/.cache/neuroinspect)")
    add_arguments(p, threads=1, repeat=1)
    args = p.parse_args()
    pin_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]

    def run() -> dict:
        out = {"seeds": seeds, "class": "Coat", "test_per_class": args.test_per_class}
        for bench in args.benchmarks.split(","):
            feats = scene_features(bench, args.cache_dir, args.test_per_class)
            out[bench] = {}
            for regime in args.regimes:
                runs = [one_run(feats, regime, s) for s in seeds]
                out[bench][regime] = {k: _ms([r[k] for r in runs], 100 if k in ("original", "regroup", "true_groups")
                                             else 1) for k in runs[0]}
        return out

    print_measured(run, args.repeat)


if __name__ == "__main__":
    main()

"""Which class ``debug`` chooses, and what the default fix then does, on shortcuts planted in feature space.

The feature-space shortcut of the tests (``tests/shortcut.py``: four classes, one cue neuron, post-ReLU
Gaussian features) with a *partial* cue: in training it sits on ``p`` of the shortcut's class and on
``1 − p`` of every other class, so the other classes hold a few cued images (their minority). The
validation split is drawn like the training split (the regime that hides a shortcut from class accuracy);
test is balanced. Each draw has its own features and its own ERM head. For every ``--choose-by`` rule it
records the chosen class and the test worst-group accuracy of the default fix (``regroup``, reading no
group labels) on that class, with the class's top 3 insufficient neurons, as ``debug`` does, and in how
many draws that fix ended below the original head; ``given`` is the fix told the shortcut's class.
Chance of naming the shortcut's class: 1 in 4.

    python benchmarks/bench_choose.py --draws 8
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _harness import add_arguments, pin_threads, print_measured  # noqa: E402

RULES = ("tails", "mistakes", "accuracy", "given")


def one_draw(share: float, seed: int) -> dict:
    from neuroinspect.core.base.metrics import evaluate
    from neuroinspect.find.ranking import explain_class
    from neuroinspect.fix.compare import fix_head
    from neuroinspect.pipeline import PipelineConfig, choose_classes
    from shortcut import CLASS_NAMES, SPURIOUS, erm_head, features

    train = features(150, share, 1 - share, seed, "train")
    val = features(60, share, 1 - share, seed + 100, "val")
    test = features(150, 0.5, 0.5, seed + 200, "test")
    W, b = erm_head(train)
    on = val.with_logits(W, b)
    worst = lambda w, bias: min(evaluate(test.with_logits(w, bias)).per_group.values())  # noqa: E731
    out = {"original": worst(W, b)}
    for rule in RULES:
        if rule == "given":
            c = SPURIOUS
        else:
            c = choose_classes(on, PipelineConfig(choose_by=rule), CLASS_NAMES.index, train=train, head=(W, b))[0]
        ex = explain_class(W, b, on, c, progress=False)
        neurons = [s.neuron for s in (ex.insufficient or ex.excessive)[:3]]
        res = fix_head(W, b, train, val, {c: neurons}, seed=seed)
        out[rule] = {"class": CLASS_NAMES[c], "worst_group": worst(res.weight, res.bias),
                     "kept_original": bool(res.chosen.get("kept_original"))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--draws", type=int, default=8, help="independent draws per cue share (default 8)")
    p.add_argument("--shares", default="0.95,0.9", help="the cue's share of the shortcut's class in training "
                                                         "(the other classes get 1 − share; default 0.95,0.9)")
    add_arguments(p, threads=1, repeat=1)
    args = p.parse_args()
    pin_threads(args.threads)
    from shortcut import CLASS_NAMES, SPURIOUS

    def run() -> dict:
        out = {"shortcut_class": CLASS_NAMES[SPURIOUS], "draws": args.draws}
        for share in (float(s) for s in args.shares.split(",")):
            runs = [one_draw(share, seed) for seed in range(args.draws)]
            row = {"original_worst_group": round(100 * statistics.fmean(r["original"] for r in runs), 1)}
            for rule in RULES:
                wg = [r[rule]["worst_group"] for r in runs]
                row[rule] = {"names_shortcut_class": sum(r[rule]["class"] == CLASS_NAMES[SPURIOUS] for r in runs),
                             "classes": [r[rule]["class"] for r in runs],
                             "worst_group_mean": round(100 * statistics.fmean(wg), 1),
                             "worst_group_std": round(100 * statistics.pstdev(wg), 1),
                             "kept_original": sum(r[rule]["kept_original"] for r in runs),
                             "worse_than_original": sum(r[rule]["worst_group"] < r["original"] for r in runs)}
            out[f"share_{share}"] = row
        return out

    print_measured(run, args.repeat)


if __name__ == "__main__":
    main()

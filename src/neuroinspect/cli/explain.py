"""``neuroinspect explain``: rank the neurons behind a class's mistakes."""
from __future__ import annotations

from pathlib import Path

from neuroinspect.cli.common import (add_data_args, add_model_args, add_run_args, fraction, make_inspector, nonneg_float, nonneg_int,
                     percent, positive_float, positive_int, write_run_json)
from neuroinspect.find.config import RANKINGS, ExplainConfig
from neuroinspect.show.config import RenderConfig

_E = ExplainConfig()  # every default below is read from here


def register(sub) -> None:
    p = sub.add_parser(
        "explain", help="find the neurons behind a class's mistakes",
        description="Extract (cached) features, measure accuracy per class and group, solve the counterfactual "
                    "feature edits for every mistake of the class, and rank the insufficient and excessive neurons. "
                    "Writes metrics.json, ranking.json, mistakes.csv and run.json into --out.",
    )
    add_model_args(p)
    add_data_args(p)
    g = p.add_argument_group("explanation")
    g.add_argument("--class", dest="cls", required=True, metavar="NAME|INDEX", help="the class to debug")
    g.add_argument("--split", default="val", help="split whose mistakes are explained (default val)")
    g.add_argument("--ranking", choices=list(RANKINGS), default=_E.ranking,
                   help=f"how a mistake blames a neuron (default {_E.ranking}): gap (the margin the class lost because the neuron moved "
                        "from its value on correct samples; only what is in the image can be blamed), additive (the "
                        "paper's counterfactual edit z + delta, Eq. 1) or multiplicative (z * (1 + delta))")
    g.add_argument("--top-k", type=positive_int, default=_E.k,
                   help=f"top-k neurons per mistake counted in the ratio (default {_E.k})")
    g.add_argument("--min-ratio", type=percent, default=_E.min_ratio,
                   help=f"keep neurons in at least this %% of mistakes (default {_E.min_ratio:g})")
    g.add_argument("--lambda1", type=nonneg_float, default=_E.lambda1, help=f"L1 weight of the edit (default {_E.lambda1})")
    g.add_argument("--lambda2", type=nonneg_float, default=_E.lambda2, help=f"L2 weight of the edit (default {_E.lambda2})")
    g.add_argument("--lr", type=positive_float, default=_E.lr, help=f"SGD learning rate (default {_E.lr})")
    g.add_argument("--momentum", type=fraction, default=_E.momentum, help=f"SGD momentum (default {_E.momentum})")
    g.add_argument("--max-steps", type=positive_int, default=_E.max_steps,
                   help=f"step cap per mistake (default {_E.max_steps})")
    g.add_argument("--only-flipped", action="store_true", help="rank over the mistakes whose edit flipped the decision only")
    g.add_argument("--visualize", type=nonneg_int, default=0, metavar="N",
                   help="also render the top-N ranked neurons (insufficient and excessive) inside the class")
    g.add_argument("--steps", type=positive_int, default=RenderConfig.steps,
                   help=f"visualisation steps with --visualize (default {RenderConfig.steps})")
    g.add_argument("--clip", default="none", help="CLIP for --visualize: open_clip:MODEL/PRETRAINED, hf:NAME or none")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from neuroinspect.core.base.records import Metrics
    from neuroinspect.core.runtime import distributed

    out = Path(args.out)
    ins = make_inspector(args)
    c = ins.class_index(args.cls)
    metrics = ins.metrics(args.split)
    split = ins.data.resolve_split(args.split)
    if distributed.is_main():  # under torchrun rank 0 alone writes the results
        metrics.write(out / Metrics.FILE)
    print(f"accuracy on '{split}': {metrics.accuracy:.1%} (n={metrics.n}); "
          f"worst class: {metrics.worst_class}" + (f"; worst group: {metrics.worst_group}" if metrics.worst_group else ""))
    skipped = ins.features(args.split).skipped
    if skipped:
        print(f"skipped {len(skipped)} unreadable images (listed in run.json)")
    explanation = ins.explain(c, args.split, ExplainConfig(
        ranking=args.ranking, k=args.top_k, min_ratio=args.min_ratio, lambda1=args.lambda1, lambda2=args.lambda2,
        lr=args.lr, momentum=args.momentum, max_steps=args.max_steps, only_flipped=args.only_flipped,
        progress=not args.no_progress,
    ))
    if distributed.is_main():
        explanation.save(out)
    if explanation.n_mistakes == 0:
        print(f"class '{explanation.class_name}' has no mistakes on split '{args.split}': nothing to explain")
    else:
        print(explanation.table())
    if args.visualize and explanation.n_mistakes:
        from neuroinspect.show.visualize import visualize_ranked

        visualize_ranked(ins, explanation, args.visualize, out / "visualize", steps=args.steps, clip=args.clip,
                         seed=args.seed, progress=not args.no_progress)
    # after the rendering: under torchrun, run.json then lists the pairs each rank rendered too
    write_run_json(out, args, model=args.model, data=args.data, probe=ins.probe.describe(), skipped=skipped)
    print(f"\nresults in {out}/ (ranking.json, metrics.json, mistakes.csv)")
    return 0

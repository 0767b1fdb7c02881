"""``neuroinspect debug``: the whole pipeline (find → show → pick → fix → compare → report) on your model."""
from __future__ import annotations

import argparse
import logging

from neuroinspect.cli.common import (add_data_args, add_model_args, add_run_args, make_inspector, nonneg_int,
                                     parse_name_list, parse_seeds, positive_int, print_headline, run_record)
from neuroinspect.find.config import RANKINGS
from neuroinspect.fix.config import FIX_METHODS
from neuroinspect.pipeline_config import CHOOSE_BY, PICTURES, PipelineConfig
from neuroinspect.show.config import RECIPES

_P = PipelineConfig()  # every default below is read from here (torch-free)


def register(sub) -> None:
    p = sub.add_parser(
        "debug", help="find, show and fix a class's mistakes in one run, with an HTML report",
        description="The whole method on your model and data: measure every class, explain the worst class's "
                    "mistakes on --explain-split (or the classes you name), render the top neurons inside the class, "
                    "fix the decision layer with its top insufficient neurons, compare every method over --seeds on "
                    "--eval-split, and write one run folder with report.html. `neuroinspect demo` is this command "
                    "on the built-in benchmark.",
    )
    add_model_args(p)
    add_data_args(p)
    d, r = _P, _P.render
    g = p.add_argument_group("what to debug")
    which = g.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", metavar="NAME[,NAME…]",
                       help="the class(es) to debug, by name or index (default: the worst ones)")
    which.add_argument("--worst-classes", type=positive_int, default=d.worst_classes, metavar="N",
                       help=f"debug the N worst classes on --explain-split (default {d.worst_classes}; see --choose-by)")
    g.add_argument("--choose-by", choices=CHOOSE_BY, default=d.choose_by,
                   help="which classes to debug: 'tails' (default) the classes the other classes' images lean towards "
                        "on the head's own score, as a shortcut shared across the data (a background, a stamp) makes "
                        "them, each debugged itself or, without mistakes of its own, through the class whose images it "
                        "takes; 'mistakes' by the model's accuracy on each class's held-out pseudo-minority (its images "
                        "without what the class usually has, and other classes' images with it); 'accuracy' by class "
                        f"accuracy, which a val biased like train misleads (default {d.choose_by})")
    g.add_argument("--explain-split", default=d.explain_split,
                   help=f"split whose mistakes are explained and on which every method selects; the refits fit on it "
                        f"(default {d.explain_split})")
    g.add_argument("--eval-split", default=d.eval_split, help=f"split where before/after is measured (default {d.eval_split})")
    g.add_argument("--ranking", choices=RANKINGS, default=d.ranking,
                   help=f"how a mistake blames a neuron (default {d.ranking}; see `neuroinspect explain --help`)")
    g.add_argument("--n-edit", type=positive_int, default=d.n_edit, metavar="N",
                   help=f"neurons fixed per class: its top N insufficient ones (default {d.n_edit})")
    g.add_argument("--n-insufficient", type=nonneg_int, default=d.n_insufficient, metavar="N",
                   help=f"top insufficient neurons rendered per class (default {d.n_insufficient})")
    g.add_argument("--n-excessive", type=nonneg_int, default=d.n_excessive, metavar="N",
                   help=f"top excessive neurons rendered per class (default {d.n_excessive})")
    f = p.add_argument_group("fix")
    f.add_argument("--fix", choices=FIX_METHODS, default=d.fix,
                   help=f"the method saved as the edited model (default {d.fix})")
    f.add_argument("--methods", metavar="M[,M…]",
                   help=f"methods compared in the table, or 'all' (every registered method); default "
                        f"{','.join(d.methods)}; those that read group labels only when the data has them")
    f.add_argument("--seeds", metavar="S[,S…]", help="seeds of the comparison; the table shows mean ± std (default 0)")
    pics = p.add_argument_group("pictures")
    pics.add_argument("--pictures", choices=PICTURES, default=d.pictures,
                      help="how far the pictures go, after the report with the answer is written: none, heatmaps (where "
                           "the top neurons fire in their top images; cheap), all (+ the optimised images) or auto (all "
                           "on a GPU, heatmaps on a CPU, where the optimised images take most of the run; default "
                           f"{d.pictures})")
    pics.add_argument("--recipe", default=r.recipe, choices=RECIPES, metavar="RECIPE",
                      help=f"visualisation recipe, one of {RECIPES.choices()} (default {r.recipe}; see `neuroinspect visualize --help`)")
    pics.add_argument("--clip", default=r.clip,
                      help="CLIP guide: open_clip:MODEL/PRETRAINED, open_clip:MODEL@CHECKPOINT, hf:NAME or none "
                        f"(default {r.clip})")
    pics.add_argument("--steps", type=positive_int, default=r.steps,
                      help=f"optimisation steps per picture (default {r.steps})")
    pics.add_argument("--size", type=positive_int, default=r.size, help=f"picture size in pixels (default {r.size})")
    add_run_args(p)
    p.set_defaults(func=run)


def _methods(text: str | None) -> tuple[str, ...]:
    """``--methods``: a comma-separated list, ``all`` (every registered method, the demo's table first) or nothing
    (the default)."""
    from neuroinspect.fix.config import DEFAULT_COMPARE

    names = tuple(parse_name_list(text))
    if names == ("all",):
        return tuple(dict.fromkeys(DEFAULT_COMPARE + tuple(FIX_METHODS)))
    return names or _P.methods


def config_from(args: argparse.Namespace):
    from dataclasses import replace

    return PipelineConfig(
        classes=tuple(parse_name_list(args.classes)),
        worst_classes=args.worst_classes, choose_by=args.choose_by, explain_split=args.explain_split,
        eval_split=args.eval_split,
        ranking=args.ranking, n_insufficient=args.n_insufficient, n_excessive=args.n_excessive, n_edit=args.n_edit,
        fix=args.fix, methods=_methods(args.methods), seeds=tuple(parse_seeds(args.seeds)) or (args.seed,),
        # the measured render defaults (PipelineConfig's), the classifier at the render size
        render=replace(_P.render, recipe=args.recipe, clip=args.clip, steps=args.steps, size=args.size,
                       seed=args.seed),
        render_precision=args.precision, pictures=args.pictures,
    ).validate()


def run(args) -> int:
    from neuroinspect.pipeline import run_pipeline

    config = config_from(args)  # bad settings fail before the model loads
    ins = make_inspector(args)
    n = len(ins.class_names)
    if not config.classes and config.worst_classes > n:
        logging.getLogger(__name__).warning("note: --worst-classes %d, but the data has %d classes: debugging all %d",
                                            config.worst_classes, n, n)
    headline = run_pipeline(ins, args.out, config, progress=not args.no_progress,
                            run_info=run_record(args, model=args.model, data=args.data))
    if not headline:  # under torchrun, a rank other than 0: its share is done, rank 0 writes and reports
        return 0
    print_headline(headline, args.out)
    return 0

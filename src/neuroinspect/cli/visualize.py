"""``neuroinspect visualize``: show what neurons respond to inside classes (CLIP-Illusion)."""
from __future__ import annotations

import argparse
from pathlib import Path

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.cli.common import (add_data_args, check_out, add_model_args, add_run_args, finite_float, input_px, make_inspector, parse_int_list,
                     parse_name_list, positive_float, positive_int, write_run_json)
from neuroinspect.show.config import PAPER_CLIP, PARAMS, RECIPES, STARTS, RenderConfig

_R = RenderConfig()  # every default below is read from here


def register(sub) -> None:
    p = sub.add_parser(
        "visualize", help="render what neurons respond to inside a class (CLIP-Illusion)",
        description="Optimise images, from noise, that make each neuron fire inside a class: "
                    "-(sim + eps)(a_k + gamma s_c) with CLIP (clip-illusion), -(a_k + gamma s_c) without (class), "
                    "or plain -a_k (fv). Masks each image with the neuron's spatial map and reports a_k, s_c, p(c), "
                    "CLIP similarity and the core relevance score. Writes PNGs and visualizations.json into --out. "
                    "--data is optional: it adds the neuron's top dataset images and the class means for the score.",
    )
    add_model_args(p)
    add_data_args(p, required=False)
    g = p.add_argument_group("visualisation")
    g.add_argument("--neurons", required=True, metavar="12,40", help="feature indices (neurons) to render")
    g.add_argument("--classes", metavar="A,B", help="classes (names or indices) to render every neuron inside")
    g.add_argument("--top-classes", type=positive_int, default=_R.top_classes, metavar="N",
                   help=f"without --classes: each neuron's N classes of largest decision-layer weight (default {_R.top_classes})")
    g.add_argument("--recipe", choices=RECIPES, metavar="RECIPE", default=_R.recipe,
                   help=f"objective, one of {RECIPES.choices()} (default {_R.recipe}; a recipe that needs CLIP "
                        "falls back to one without when CLIP cannot be had)")
    g.add_argument("--clip", default=_R.clip, metavar="SPEC",
                   help=f"open_clip:MODEL/PRETRAINED, open_clip:MODEL@CHECKPOINT, hf:NAME_OR_DIR or none "
                        f"(default {PAPER_CLIP}; falls back to --recipe class with a warning when the weights cannot be had)")
    g.add_argument("--class-text", action="append", default=[], metavar="CLASS=TEXT",
                   help='text CLIP reads for a class, e.g. "waterbird=waterbird, aquatic bird" (repeatable)')
    g.add_argument("--steps", type=positive_int, default=_R.steps,
                   help=f"optimisation steps (default {_R.steps}, with --size {_R.size}: the most activation per second on a CPU; "
                        "650 at --size 224: the paper's quality)")
    g.add_argument("--size", type=positive_int, default=_R.size, help=f"image size in pixels (default {_R.size})")
    g.add_argument("--batch", type=positive_int, default=_R.batch, help=f"images optimised together (default {_R.batch})")
    g.add_argument("--lr", type=positive_float, default=_R.lr, help=f"AdamW learning rate (default {_R.lr})")
    g.add_argument("--gamma", type=finite_float, default=_R.gamma, help=f"weight of the class logit (default {_R.gamma})")
    g.add_argument("--epsilon", type=finite_float, default=_R.epsilon, help=f"CLIP gate offset (default {_R.epsilon})")
    g.add_argument("--param", choices=list(PARAMS), default=_R.param,
                   help=f"image parameterisation (default {_R.param})")
    g.add_argument("--split", help="split whose features give exemplars and class means (default train, else the only one)")
    g.add_argument("--exemplars", type=positive_int, default=_R.exemplars,
                   help=f"top dataset images per neuron (default {_R.exemplars})")
    g.add_argument("--hard-mask", action="store_true", help="black out (instead of dim) where the neuron is quiet")
    g.add_argument("--heatmaps", type=int, default=_R.heatmaps, metavar="K",
                   help=f"with --data: top K images per class with where the neuron fires in them (default {_R.heatmaps}; "
                        "0: none)")
    g.add_argument("--start", choices=list(STARTS), default=_R.start,
                   help="images whose neuron is silent on the starting noise: start from its top image of the class "
                        "(exemplar; needs --data), push its pre-activation until it fires (preact), auto (default: "
                        "exemplar where there is one, else preact) or nothing (noise)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC memory layout for the classifier while optimising (default on: measured faster for CNNs); "
                        "--precision (in the run options) autocasts it, CLIP stays fp32 and the final scores are "
                        "always fp32")
    g.add_argument("--input-size", type=_input_size, metavar="PX", default=_R.input_size,
                   help="classifier input size while optimising (default: the image's --size, measured the most "
                        "activation per second; the final scores use the classifier's own size)")
    g.add_argument("--warmup", type=float, default=_R.warmup,
                   help=f"fraction of steps with a linear learning-rate warm-up (default {_R.warmup:g})")
    add_run_args(p)
    p.set_defaults(func=run)


def _input_size(text: str):
    """``--input-size``: ``size`` (the image's size) or a size in pixels."""
    return "size" if text.strip() == "size" else input_px(text)


def _class_texts(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip() or not text.strip():
            raise NeuroInspectError(f"--class-text expects CLASS=TEXT like 'waterbird=waterbird, aquatic bird'; got '{item}'")
        out[name.strip()] = text.strip()
    return out


def run(args) -> int:
    from neuroinspect.core.runtime.device import DevicePolicy
    from neuroinspect.show.visualize import parse_clip_spec, visualize_neurons

    neurons = parse_int_list(args.neurons, "--neurons", unique=True)
    if not neurons:
        raise NeuroInspectError("--neurons needs at least one index, like 12,40")
    classes = parse_name_list(args.classes) or None
    for name, value in (("--steps", args.steps), ("--size", args.size), ("--batch", args.batch)):
        if value < 1:
            raise NeuroInspectError(f"{name} must be a positive integer, got {value}")
    if args.heatmaps < 0:
        raise NeuroInspectError(f"--heatmaps must be 0 or more, got {args.heatmaps}")
    if not 0 <= args.warmup < 1:
        raise NeuroInspectError(f"--warmup is a fraction of the steps in [0, 1), got {args.warmup}")
    parse_clip_spec(args.clip)  # a spec that does not parse fails before the model loads
    texts = _class_texts(args.class_text)
    check_out(args)
    out = Path(args.out)
    ins = make_inspector(args)
    config = RenderConfig(
        top_classes=args.top_classes, recipe=args.recipe, clip=args.clip, class_text=texts, gamma=args.gamma,
        epsilon=args.epsilon, steps=args.steps, size=args.size, batch=args.batch, lr=args.lr, param=args.param,
        seed=args.seed, split=args.split, exemplars=args.exemplars, dim=0.0 if args.hard_mask else _R.dim,
        heatmaps=args.heatmaps, start=args.start, input_size=args.input_size, warmup=args.warmup,
        progress=not args.no_progress,
    )
    policy = DevicePolicy.resolve(ins.device, args.precision, args.channels_last, backward=True)
    report = visualize_neurons(ins, neurons, classes, out, config, policy=policy)
    write_run_json(out, args, model=args.model, data=args.data, probe=ins.probe.describe())
    if report.clip_fallback:
        print(f"CLIP was unavailable: rendered with the '{report.recipe}' recipe instead (recorded in visualizations.json)")
    print(f"{'neuron':>7} {'class':<24} {'a_k':>8} {'start':>7} {'s_c':>8} {'p(c)':>6} {'clip':>6} {'CRS':>6}  image")
    for r in report.images:
        clip_s = "-" if r.clip_similarity is None else f"{r.clip_similarity:.3f}"
        crs = "-" if r.crs is None else f"{r.crs:.2f}"
        print(f"{r.neuron:>7} {r.class_name[:24]:<24} {r.activation:>8.2f} {r.start_activation:>7.2f} "
              f"{r.logit:>8.2f} {r.prob:>6.3f} {clip_s:>6} {crs:>6}  {r.image}")
    for r in report.images:
        if r.note:
            print(f"neuron {r.neuron} in '{r.class_name}': {r.note}")
    for row in report.neurons:
        for h in row.exemplar_heatmaps:
            if h.note:
                print(f"neuron {row.neuron}, {h.role} '{h.class_name}': {h.note}")
        if row.dataset_top_activation is not None:
            print(f"neuron {row.neuron}: top dataset activation {row.dataset_top_activation:.2f} "
                  f"(mean of top {len(row.exemplars)}: {row.dataset_mean_top_activation:.2f})")
    if report.interrupted:
        print("interrupted: the results hold the images finished so far")
    print(f"\nresults in {out}/ (visualizations.json, images/, exemplars/)")
    return 130 if report.interrupted else 0

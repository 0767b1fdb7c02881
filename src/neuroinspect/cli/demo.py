"""``neuroinspect demo``: the whole method on a real pretrained network with a planted shortcut."""
from __future__ import annotations

from pathlib import Path

from neuroinspect.cli.common import add_threads_arg, check_out, parse_seeds, positive_int, seed_int, print_headline
from neuroinspect.show.config import RenderConfig


def register(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the built-in demo end to end and write an HTML report",
        description="Build the spurious-scenes benchmark (Fashion-MNIST items on two families of photo "
                    "backgrounds, one class tied to one family in training), train a linear head on a frozen "
                    "EfficientNet-Lite0 with its real ImageNet weights, then explain the worst class, visualise "
                    "its top neurons, edit the decision layer and compare with the baselines. Offline.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--fast", action="store_true", help="tiny sizes and few steps (about 2 minutes on 2 CPU cores)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one, else the CPU), cpu or cuda "
                                                    "(default auto); run.json records the one used")
    p.add_argument("--seed", type=seed_int, default=0, help="random seed of the run shown in detail (default 0)")
    p.add_argument("--seeds", help="comma-separated seeds of the find → fix comparison; the table shows mean ± std "
                                   "(default 0,1,2; 0 with --fast)")
    p.add_argument("--clip", default="none",
                   help="CLIP for the visualisations, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k (default none: "
                        "the class-conditional recipe without CLIP)")
    p.add_argument("--steps", type=positive_int,
                   help=f"visualisation steps (default {RenderConfig().steps}, the measured render default; 32 with --fast)")
    p.add_argument("--cache-dir", metavar="DIR", help="cache for data and features (default ~/.cache/neuroinspect)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_threads_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from neuroinspect.demo import DemoConfig, run_demo

    check_out(args)
    render = {"clip": args.clip, **({"steps": args.steps} if args.steps else {})}
    pipeline = {"seeds": tuple(parse_seeds(args.seeds))} if args.seeds else {}
    config = (DemoConfig.fast if args.fast else DemoConfig)().with_(seed=args.seed, render=render, pipeline=pipeline)
    headline = run_demo(Path(args.out), config, device=args.device, cache_dir=args.cache_dir, progress=not args.no_progress)
    if not headline:  # under torchrun, a rank other than 0: its share is done, rank 0 writes and reports
        return 0
    print_headline(headline, args.out)
    return 0

"""Benchmark: which render settings reach the most neuron activation per second (the defaults' evidence).

Renders the same (neuron, top class) pairs of EfficientNet-Lite0 (its ImageNet weights) with the
class recipe, from the same seeds, under each candidate setting — precision, channels-last, the
classifier's input size while optimising, steps and warm-up — and reports, per setting, wall and
CPU seconds, the mean final activation a_k (always measured in fp32 at the classifier's own input
size, so the settings compare), how many images ended silent, and the score: mean a_k per wall
second. Batch size is left to ``bench_visualize.py``. Prints JSON (and writes it with --json).

    python benchmarks/bench_render_defaults.py --threads 1 --json docs/bench_render_defaults.json
    python benchmarks/bench_render_defaults.py --pairs 2 --steps 8 --repeat 1     # a smoke run
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, emit, environment, measure, pin_threads  # noqa: E402

#: name -> (precision, channels_last, input_size (None: the classifier's own), steps factor, warm-up)
CANDIDATES = {
    "fp32, own input": ("fp32", False, None, 1.0, 0.0),
    "fp32 + channels-last, own input": ("fp32", True, None, 1.0, 0.0),
    "fp32 + channels-last, own input, half the steps, warm-up 0.1": ("fp32", True, None, 0.5, 0.1),
    "fp32, input = render size": ("fp32", False, "size", 1.0, 0.0),
    "fp32 + channels-last, input = render size": ("fp32", True, "size", 1.0, 0.0),
    "bf16 + channels-last, input = render size": ("bf16", True, "size", 1.0, 0.1),
    "fp32, input = render size, half the steps, warm-up 0.1": ("fp32", False, "size", 0.5, 0.1),
    "fp32 + channels-last, input = render size, half the steps, warm-up 0.1": ("fp32", True, "size", 0.5, 0.1),
    "bf16 + channels-last, input = render size, half the steps, warm-up 0.1": ("bf16", True, "size", 0.5, 0.1),
}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=6, help="(neuron, class) images rendered together (default 6)")
    ap.add_argument("--steps", type=int, default=96, help="full steps (default 96, debug's default)")
    ap.add_argument("--size", type=int, default=128, help="render size in pixels (default 128, debug's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", action="append", help="run only the candidates whose name holds this text (repeatable)")
    ap.add_argument("--json", help="also write the results to this file")
    add_arguments(ap, threads=1, repeat=1)
    args = ap.parse_args(argv)
    threads = pin_threads(args.threads)

    import torch

    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.model.probe import Probe
    from neuroinspect.core.runtime.device import DevicePolicy
    from neuroinspect.show.config import RenderConfig
    from neuroinspect.show.exemplars import neuron_top_classes
    from neuroinspect.show.render import render

    loaded = build_model("efficientnet-lite0")
    probe = Probe(loaded.model, input_size=loaded.preprocess.input_size)
    g = torch.Generator().manual_seed(0)
    neurons = torch.randperm(probe.D, generator=g)[: args.pairs].tolist()
    pairs = [(n, neuron_top_classes(probe.weight, n, 1)[0][0]) for n in neurons]
    render(probe, loaded.preprocess, pairs[:1], RenderConfig(recipe="class", clip="none", steps=2, size=args.size,
                                                             progress=False))  # warm-up
    rows = {}
    for name, (precision, channels_last, input_size, factor, warmup) in CANDIDATES.items():
        if args.only and not any(part in name for part in args.only):
            continue
        policy = DevicePolicy.resolve(args.device, precision, channels_last, backward=True)
        steps = max(1, round(args.steps * factor))
        cfg = RenderConfig(recipe="class", clip="none", steps=steps, size=args.size, batch=len(pairs),
                           input_size=args.size if input_size == "size" else None, warmup=warmup, start="preact",
                           progress=False)
        times, res = measure(lambda: render(probe, loaded.preprocess, pairs, cfg, policy=policy), repeat=args.repeat)
        acts = [r.activation for r in res.images]
        mean = sum(acts) / len(acts)
        rows[name] = {"precision": precision, "channels_last": channels_last, "input_size": cfg.input_size,
                      "steps": steps, "warmup": warmup, **times, "mean_final_activation": round(mean, 4),
                      "silent": sum(a <= 1e-6 for a in acts),
                      "activation_per_s": round(mean / times["wall_s_min"], 5) if times["wall_s_min"] else None}
        print(f"{name}: {times['wall_s_min']:.1f} s, a_k {mean:.3f}", file=sys.stderr)
    best = max(rows, key=lambda k: rows[k]["activation_per_s"] or 0.0)
    report = {"benchmark": "render_defaults", **environment(args.device), "threads": threads,
              "model": "efficientnet-lite0", "recipe": "class", "size": args.size, "pairs": len(pairs),
              "steps": args.steps, "candidates": rows, "best": best,
              "cpu_capability": torch.backends.cpu.get_cpu_capability() if args.device == "cpu" else None}
    return emit(report, args.json)


if __name__ == "__main__":
    main()

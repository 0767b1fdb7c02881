"""Benchmark: feature-visualisation throughput, batched vs one image at a time.

Renders the same (neuron, top class) pairs with the same seeds, (a) one image per
optimisation (the original authors' approach) and (b) B images per optimisation for each batch
size, at equal steps, and reports image-steps per second, the speed-up over (a), and the mean
final activation a_k of both (batching must not buy speed with worse images). On CUDA it also
times mixed precision and channels-last. Prints JSON (and writes it with --json).

    python benchmarks/bench_visualize.py                       # defaults: lite0, 224 px, 30 steps
    python benchmarks/bench_visualize.py --size 96 --steps 10 --batches 1,4,8 --single-images 2   # quick
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from neuroinspect.core.model.models import build_model
from neuroinspect.core.model.probe import Probe
from neuroinspect.core.runtime.device import split_policy
from neuroinspect.show.exemplars import neuron_top_classes
from neuroinspect.show.visualize import render, resolve_clip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, emit, environment, measure, pin_threads  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet-lite0", help="model spec (default efficientnet-lite0)")
    ap.add_argument("--weights", help="weights file for the model spec")
    ap.add_argument("--size", type=int, default=224, help="image size (default 224)")
    ap.add_argument("--steps", type=int, default=30, help="optimisation steps per image (default 30)")
    ap.add_argument("--batches", default="1,4,8,16", help="batch sizes to time (default 1,4,8,16)")
    ap.add_argument("--single-images", type=int, default=4,
                    help="images rendered one at a time for the baseline (default 4; its throughput does not depend on B)")
    ap.add_argument("--recipe", default="class", choices=["class", "fv", "clip-illusion"])
    ap.add_argument("--clip", default="none", help="CLIP spec for --recipe clip-illusion (default none)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-variants", action="store_true", help="skip the channels-last / mixed-precision runs")
    ap.add_argument("--amp-cpu", action="store_true", help="also time bfloat16 autocast on CPU")
    ap.add_argument("--json", help="also write the results to this file")
    add_arguments(ap, threads=1, repeat=1)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",") if b]
    loaded = build_model(args.model, weights=args.weights)
    probe = Probe(loaded.model, input_size=loaded.preprocess.input_size)
    loaded.model.to(device)
    choice = resolve_clip(args.clip if args.recipe == "clip-illusion" else "none", device)
    recipe = args.recipe if (args.recipe != "clip-illusion" or choice.model is not None) else "class"
    names = loaded.class_names or [f"class_{i}" for i in range(probe.C)]
    g = torch.Generator().manual_seed(args.seed)
    n_max = max(batches + [args.single_images])
    neurons = torch.randperm(probe.D, generator=g)[:n_max].tolist()
    pairs = [(n, neuron_top_classes(probe.weight, n, 1)[0][0]) for n in neurons]
    common = dict(recipe=recipe, clip=choice.model, class_texts=names, steps=args.steps, size=args.size,
                  seed=args.seed, device=device, progress=False)

    def render_with(pairs_, **options):  # the device, precision and layout options form the DevicePolicy
        policy, rest = split_policy(options)
        return render(probe, loaded.preprocess, pairs_, policy=policy, **rest)

    render_with(pairs[:1], **{**common, "steps": 2})  # warm-up

    def run(k, batch, **extra):
        t, res = measure(lambda: render_with(pairs[:k], batch=batch, **{**common, **extra}),
                         repeat=args.repeat)
        secs = t["wall_s_min"]
        acts = [r.activation for r in res.images]
        return {"images": k, "batch": batch, "seconds": secs, "times": t, "image_steps_per_s": k * args.steps / secs,
                "mean_final_activation": sum(acts) / len(acts), "activations": acts}

    single = run(args.single_images, 1)

    def compare(row):
        row["speedup_vs_single"] = row["image_steps_per_s"] / single["image_steps_per_s"]
        k = min(row["images"], args.single_images)  # the same pairs and seeds, rendered one at a time
        row["mean_final_activation_first_k"] = sum(row["activations"][:k]) / k
        row["single_mean_final_activation_first_k"] = sum(single["activations"][:k]) / k
        return row

    rows = []
    for b in batches:
        row = compare(run(b, b))
        rows.append(row)
        print(f"batch {b:>3}: {row['image_steps_per_s']:.2f} image-steps/s ({row['speedup_vs_single']:.2f}x)", file=sys.stderr)
    variants = []
    if not args.no_variants:  # the largest batch again, with channels-last (and mixed precision on CUDA)
        b = max(batches)
        options = [("channels_last", {"channels_last": True})]
        if device.type == "cuda" or args.amp_cpu:
            options = [("amp", {"amp": True})] + options + [("amp+channels_last", {"amp": True, "channels_last": True})]
        for name, extra in options:
            row = compare(run(b, b, **extra))
            row["variant"] = name
            variants.append(row)
            print(f"batch {b:>3} {name}: {row['image_steps_per_s']:.2f} image-steps/s ({row['speedup_vs_single']:.2f}x)",
                  file=sys.stderr)
    best = max(rows + variants, key=lambda r: r["image_steps_per_s"])
    report = {
        "benchmark": "visualize",
        "model": args.model, "recipe": recipe, "clip": choice.spec, "size": args.size, "steps": args.steps,
        **environment(str(device)), "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "single": single, "batched": rows, "variants": variants,
        "best": {"batch": best["batch"], "variant": best.get("variant", "plain"), "speedup_vs_single": best["speedup_vs_single"],
                 "image_steps_per_s": best["image_steps_per_s"]},
    }
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()

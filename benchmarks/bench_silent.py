"""Benchmark: how to render a neuron that is silent on the starting noise (no gradient reaches the image).

On a demo run (its trained model and its data), picks neurons that are 0 on the starting noise
but fire on some image of the class, and renders each inside the class three ways at equal
steps: from noise (the old behaviour), from the neuron's top image of the class ("exemplar"),
and by pushing the pre-activation until it fires ("preact"). Reports per method the fraction
of images on which the neuron fires at the end, the mean final activation a_k (plain forward,
fp32) and the fraction beating the neuron's top dataset activation in that class. Prints JSON.

    neuroinspect demo --fast --out runs/demo-fast
    python benchmarks/bench_silent.py --run runs/demo-fast --neurons 8 --steps 64 --size 128
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from demo_run import open_demo_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, emit, environment, measure, pin_threads  # noqa: E402


def main(argv=None) -> dict:
    from neuroinspect.show.visualize import visualize_neurons
    from neuroinspect.show.render import _ChunkState, _evaluate
    from neuroinspect.show.augment import ModelInput
    from neuroinspect.show.config import RenderConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a demo run folder (its model.safetensors and run.json)")
    ap.add_argument("--neurons", type=int, default=8, help="silent neurons to render (default 8)")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--class", dest="cls", help="class to render inside (default: the run's worst class)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this file")
    add_arguments(ap, threads=2, repeat=1)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    run, ins = open_demo_run(args.run)
    data, loaded = ins.data, ins.loaded
    fs = ins.features("train")
    c = data.class_index(args.cls or run["headline"]["worst_class"])
    # neurons silent on the starting noise of the (seed, size) the render will use
    config = RenderConfig(seed=args.seed, size=args.size, param="fourier", lr=0.05, weight_decay=0, steps=args.steps)
    state = _ChunkState([(0, c)], [0], config, "cpu")
    with torch.no_grad():
        noise = ins.probe(ModelInput.for_classifier(loaded.preprocess)(state.image())).features[0]
    in_class = fs.features[fs.labels == c]
    top = in_class.max(0).values
    candidates = ((noise <= 1e-6) & (top > 0)).nonzero().flatten()
    g = torch.Generator().manual_seed(args.seed)
    neurons = candidates[torch.randperm(len(candidates), generator=g)[: args.neurons]].tolist()
    rows = {}
    for start in ("noise", "exemplar", "preact"):
        t, rep = measure(lambda: visualize_neurons(
            ins, neurons, [c], Path(args.run) / f"silent_{start}", recipe="class", clip="none", steps=args.steps,
            size=args.size, features=fs, start=start, heatmaps=0, seed=args.seed, progress=False), repeat=args.repeat)
        acts = [im.activation for im in rep.images]
        beats = [im.activation >= float(top[im.neuron]) for im in rep.images]
        rows[start] = {
            "fires": sum(a > 1e-6 for a in acts) / len(acts),
            "mean_activation": sum(acts) / len(acts),
            "beats_top_class_exemplar": sum(beats) / len(beats),
            "activations": [round(a, 4) for a in acts],
            "wall_s": round(t["wall_s_min"], 2), "cpu_s": round(t["cpu_s_min"], 2), "times": t,
        }
    report = {
        "benchmark": "silent-neurons", "model": run["config"]["model"], "class": data.class_names[c],
        "neurons": neurons, "silent_on_noise_of_all": f"{int((noise <= 1e-6).sum())}/{noise.numel()}",
        "top_class_exemplar_activation": [round(float(top[n]), 4) for n in neurons],
        "steps": args.steps, "size": args.size, "recipe": "class", **environment("cpu"),
        "platform": platform.platform(), "methods": rows,
    }
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()

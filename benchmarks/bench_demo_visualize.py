"""Benchmark: the demo's visualisation stage, old settings against new, side by side in one process.

Takes a demo run's neurons and classes (its ``visualize/visualizations.json``), its trained
model and its data, and runs the stage twice on them, alternating, ``--repeat`` times:
"old" (this stage's settings before the cost work: fp32, contiguous memory, the classifier at
its own 224 px input with its weights' gradients on, images from noise, 200 steps at 160 px;
40 at 96 px with --fast) and
"new" (the demo's current ``DemoConfig``: frozen weights, bf16 autocast and channels-last on the
classifier only, the classifier at the render size, fewer steps with a warm-up, silent images from their
top exemplar, plus the exemplar heatmaps the old stage did not have). Reports wall and CPU
seconds (min and median), the speed-up, and the quality of both: the mean final activation a_k
under a plain fp32 forward at 224 px and how many images left their neuron silent. Prints JSON.

    neuroinspect demo --fast --out runs/demo-fast
    python benchmarks/bench_demo_visualize.py --run runs/demo-fast --fast
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from demo_run import open_demo_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Clock, add_arguments, emit, environment, pin_threads, summary  # noqa: E402


def main(argv=None) -> dict:
    from neuroinspect.core.runtime.device import split_policy
    from neuroinspect.demo import DemoConfig
    from neuroinspect.show.visualize import visualize_neurons

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a demo run folder")
    ap.add_argument("--fast", action="store_true", help="compare the --fast demo's settings")
    ap.add_argument("--json", help="also write the results to this file")
    add_arguments(ap, threads=2, repeat=1)  # the runs of old and new alternate
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    run_dir = Path(args.run)
    vis = json.loads((run_dir / "visualize" / "visualizations.json").read_text())
    per_neuron: dict[int, list[int]] = {}
    for im in vis["images"]:
        per_neuron.setdefault(im["neuron"], []).append(im["class_index"])
    neurons = list(per_neuron)
    _, ins = open_demo_run(args.run)
    fs = ins.features("train")
    cfg = DemoConfig.fast() if args.fast else DemoConfig()
    old = dict(steps=40 if args.fast else 200, size=96 if args.fast else 160, precision="fp32", channels_last=False,
               input_size=None, start="noise", heatmaps=0, warmup=0.0, freeze=False)
    render = cfg.pipeline.render
    new = dict(steps=render.steps, size=render.size, precision=cfg.pipeline.render_precision,
               channels_last=cfg.pipeline.render_channels_last, input_size=render.input_size, start=render.start,
               heatmaps=render.heatmaps, warmup=render.warmup)
    settings = {"old": old, "new": new}
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    quality = {}
    for r in range(args.repeat):
        for name in ("old", "new"):
            policy, rest = split_policy(settings[name], ins.device)
            with Clock() as t:
                rep = visualize_neurons(ins, neurons, per_neuron, run_dir / f"bench_{name}", recipe="clip-illusion",
                                        clip=render.clip, batch=render.batch, seed=cfg.seed, features=fs, progress=False,
                                        policy=policy, **rest)
            times[name].append((t.wall, t.cpu))
            acts = [im.activation for im in rep.images]
            quality[name] = {"images": len(acts), "mean_activation": round(sum(acts) / len(acts), 4),
                             "silent_images": sum(a <= 1e-6 for a in acts),
                             "activations": [round(a, 3) for a in acts]}
    rows = {}
    for name in ("old", "new"):
        walls, cpus = [t[0] for t in times[name]], [t[1] for t in times[name]]
        rows[name] = {"settings": settings[name], **summary(walls, cpus), **quality[name]}
    report = {
        "benchmark": "demo-visualize-stage", "run": str(run_dir), "fast": args.fast, "neurons": neurons,
        "classes_per_neuron": per_neuron, "repeat": args.repeat, **environment("cpu"),
        "platform": platform.platform(), "old": rows["old"], "new": rows["new"],
        "speedup_wall_min": round(rows["old"]["wall_s_min"] / rows["new"]["wall_s_min"], 2),
        "speedup_cpu_min": round(rows["old"]["cpu_s_min"] / rows["new"]["cpu_s_min"], 2),
    }
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()

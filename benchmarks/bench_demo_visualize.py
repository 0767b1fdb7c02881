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
import resource
import statistics
import time
from pathlib import Path

import torch
from demo_run import open_demo_run


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv=None) -> dict:
    from neuroinspect.demo import DemoConfig
    from neuroinspect.core.io import write_json
    from neuroinspect.core.device import split_policy
    from neuroinspect.show.visualize import visualize_neurons

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a demo run folder")
    ap.add_argument("--fast", action="store_true", help="compare the --fast demo's settings")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, alternating (default 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
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
    new = dict(steps=cfg.steps, size=cfg.vis_size, precision=cfg.precision, channels_last=cfg.channels_last,
               input_size=cfg.vis_input_size, start=cfg.start, heatmaps=cfg.heatmaps, warmup=cfg.warmup)
    settings = {"old": old, "new": new}
    times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    quality = {}
    for r in range(args.repeat):
        for name in ("old", "new"):
            t0, c0 = time.perf_counter(), _cpu()
            policy, rest = split_policy(settings[name], ins.device)
            rep = visualize_neurons(ins, neurons, per_neuron, run_dir / f"bench_{name}", recipe="clip-illusion",
                                    clip=cfg.clip, batch=cfg.batch, seed=cfg.seed, features=fs, progress=False,
                                    policy=policy, **rest)
            times[name].append((time.perf_counter() - t0, _cpu() - c0))
            acts = [im["activation"] for im in rep["images"]]
            quality[name] = {"images": len(acts), "mean_activation": round(sum(acts) / len(acts), 4),
                             "silent_images": sum(a <= 1e-6 for a in acts),
                             "activations": [round(a, 3) for a in acts]}
    rows = {}
    for name in ("old", "new"):
        walls, cpus = [t[0] for t in times[name]], [t[1] for t in times[name]]
        rows[name] = {"settings": settings[name], "wall_s_min": round(min(walls), 2),
                      "wall_s_median": round(statistics.median(walls), 2), "cpu_s_min": round(min(cpus), 2),
                      "cpu_s_median": round(statistics.median(cpus), 2), **quality[name]}
    report = {
        "benchmark": "demo-visualize-stage", "run": str(run_dir), "fast": args.fast, "neurons": neurons,
        "classes_per_neuron": per_neuron, "repeat": args.repeat, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "platform": platform.platform(), "old": rows["old"], "new": rows["new"],
        "speedup_wall_min": round(rows["old"]["wall_s_min"] / rows["new"]["wall_s_min"], 2),
        "speedup_cpu_min": round(rows["old"]["cpu_s_min"] / rows["new"]["cpu_s_min"], 2),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()

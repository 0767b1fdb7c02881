"""Benchmark: our feature visualisation against torch-lucent's, on the same model, channels, steps and size.

Both render the same channels of the real EfficientNet-Lite0 (the penultimate features: the
mean of the last ReLU6 map) with the plain objective -a_k, in one batch of B images:
lucent's ``render_vis`` with its defaults (FFT + colour-decorrelated parameterisation, its
standard transforms, Adam at 0.05, images below 224 px upsampled to 224) and ours (``render``,
recipe "fv") with the settings given. The model is frozen for both. Reports per method:
(a) each channel's activation on the final image under a plain fp32 forward at 224 px,
(b) the fraction of channels whose image beats the channel's top dataset image (the features of
a demo run's training split), (c) wall and CPU seconds per image-step. Writes the images as one
PNG grid per method. Prints JSON.

torch-lucent 0.1.8 pins kornia<=0.4.1, which would downgrade torch: install it without its
dependencies, beside a current kornia (see docs/benchmarks.md)::

    pip install --no-deps torch-lucent==0.1.8 kornia==0.9.0 kornia-rs==0.2.0 decorator
    neuroinspect demo --fast --out runs/demo-fast
    python benchmarks/bench_lucent.py --run runs/demo-fast --channels 8 --size 128 --steps 256
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import types
from pathlib import Path

import numpy as np
import torch
from demo_run import open_demo_run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Clock, add_arguments, environment, pin_threads  # noqa: E402


def _import_lucent():
    """Import lucent against a current kornia (two renamed functions) without IPython (display only)."""
    import kornia
    from kornia.geometry import transform as kt

    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kt, name))
    if "IPython" not in sys.modules:
        try:
            import IPython  # noqa: F401
        except ImportError:  # lucent imports IPython.display for notebooks only; never called here
            ipy = types.ModuleType("IPython")
            ipy.display = types.ModuleType("IPython.display")
            sys.modules["IPython"], sys.modules["IPython.display"] = ipy, ipy.display
    from lucent.optvis import objectives, param, render, transform

    return objectives, param, render, transform


def _grid(images: torch.Tensor, path: Path) -> None:
    from PIL import Image

    from neuroinspect.core.base.io import save_png

    x = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    b, h, w, _ = x.shape
    canvas = np.full((h, b * (w + 4) - 4, 3), 255, np.uint8)
    for i in range(b):
        canvas[:, i * (w + 4): i * (w + 4) + w] = x[i]
    save_png(path, Image.fromarray(canvas))


def main(argv=None) -> dict:
    from neuroinspect.core.base.io import write_json
    from neuroinspect.core.runtime.device import split_policy
    from neuroinspect.show.augment import ModelInput
    from neuroinspect.show.visualize import render

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a demo run folder: its training features give the top dataset images")
    ap.add_argument("--channels", type=int, default=8, help="channels (neurons) to render, one batch (default 8)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours", action="append", default=[], metavar="NAME:JSON",
                    help='extra settings of ours to compare, e.g. \'fast:{"precision": "bf16", "channels_last": true}\' '
                         "(repeatable; 'ours' with the defaults is always run)")
    ap.add_argument("--skip-lucent", action="store_true")
    ap.add_argument("--skip-default", action="store_true", help="run only the --ours settings, not 'ours' with the defaults")
    ap.add_argument("--out", default="runs/bench-lucent", help="folder for the image grids and the JSON")
    add_arguments(ap, threads=2, repeat=1)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    out = Path(args.out)

    run, ins = open_demo_run(args.run)
    data, loaded = ins.data, ins.loaded
    fs = ins.features("train")
    model = loaded.model.eval().requires_grad_(False)
    probe = ins.probe
    g = torch.Generator().manual_seed(args.seed)
    channels = torch.randperm(probe.D, generator=g)[: args.channels].tolist()
    top = fs.features[:, channels].max(0).values
    plain = ModelInput.for_classifier(loaded.preprocess)

    @torch.no_grad()
    def score(images: torch.Tensor) -> list[float]:
        feats = probe(plain(images.float())).features.float()
        return [float(feats[i, n]) for i, n in enumerate(channels)]

    def summary(name, images, clocks):
        acts = score(images)
        _grid(images, out / f"{name}.png")
        steps = args.channels * args.steps
        wall, cpu = min(c.wall for c in clocks), min(c.cpu for c in clocks)
        return {"wall_s_min": round(wall, 3), "wall_s_median": round(statistics.median(c.wall for c in clocks), 3),
                "cpu_s_min": round(cpu, 3), "cpu_s_median": round(statistics.median(c.cpu for c in clocks), 3),
                "repeat": len(clocks),"activation": [round(a, 4) for a in acts], "mean_activation": round(sum(acts) / len(acts), 4),
                "min_activation": round(min(acts), 4), "dead": sum(a <= 1e-6 for a in acts),
                "beats_top_exemplar": sum(a > float(t) for a, t in zip(acts, top)) / len(acts),
                "wall_s_per_image_step": round(wall / steps, 5), "cpu_s_per_image_step": round(cpu / steps, 5),
                "image": f"{name}.png"}

    methods = {}
    ours = ([] if args.skip_default else [("ours", {})]) + [(s.split(":", 1)[0], json.loads(s.split(":", 1)[1]))
                                                           for s in args.ours]
    pairs = [(n, 0) for n in channels]
    render(probe, loaded.preprocess, pairs[:1], recipe="fv", steps=2, size=args.size, progress=False)  # warm-up
    for name, extra in ours:
        policy, rest = split_policy(extra)  # device, precision and channels_last form the DevicePolicy
        clocks = []
        for _ in range(max(1, args.repeat)):
            with Clock() as t:
                res = render(probe, loaded.preprocess, pairs, policy=policy, recipe="fv", steps=args.steps,
                             size=args.size, batch=args.channels, seed=args.seed, progress=False, **rest)
            clocks.append(t)
        methods[name] = {"settings": extra, **summary(name, torch.stack([r.image for r in res.images]), clocks)}
        print(f"{name}: mean a_k {methods[name]['mean_activation']}", file=sys.stderr)

    if not args.skip_lucent:
        objectives, param, lrender, transform = _import_lucent()
        lmodel = copy.deepcopy(model)  # lucent leaves its hooks on the model
        lmodel.requires_grad_(False)
        layer = probe.spatial_name.replace(".", "_")
        mean = torch.tensor(loaded.preprocess.mean).view(1, 3, 1, 1)
        std = torch.tensor(loaded.preprocess.std).view(1, 3, 1, 1)
        obj = sum(objectives.channel(layer, n, batch=i) for i, n in enumerate(channels))
        clocks = []
        for _ in range(max(1, args.repeat)):
            torch.manual_seed(args.seed)
            np.random.seed(args.seed)
            with Clock() as t:
                imgs = lrender.render_vis(
                    lmodel, obj, lambda: param.image(args.size, batch=args.channels),
                    transforms=transform.standard_transforms + [lambda x: (x - mean) / std], preprocess=False,
                    thresholds=(args.steps,), progress=False, show_image=False)
            clocks.append(t)
        images = torch.from_numpy(np.ascontiguousarray(imgs[-1])).permute(0, 3, 1, 2)
        methods["lucent"] = {"settings": "render_vis defaults (fft, decorrelate, standard_transforms, Adam 0.05)",
                             **summary("lucent", images, clocks)}

    report = {
        "benchmark": "lucent-comparison", "model": run["config"]["model"], "objective": "fv (-a_k)",
        "layer": probe.spatial_name, "channels": channels, "size": args.size, "steps": args.steps,
        "top_exemplar_activation": [round(float(t), 4) for t in top], "exemplars_from": f"{run['data']} (train)",
        **environment("cpu"), "platform": platform.platform(), "methods": methods,
    }
    print(json.dumps(report, indent=2))
    write_json(out / "bench_lucent.json", report)
    return report


if __name__ == "__main__":
    main()

"""Decision-layer edit on cached features vs re-running the frozen backbone every epoch.

The edit (paper Sec. III-E) only retrains W, b, so it can train on features cached once. The
original approach pushed every training (and validation) image through the frozen backbone in
every epoch. This script times

* the edit itself on cached features of Food-101's shape (N = 50,000 training samples,
  D = 2,048, C = 101, a 15 % validation split, 20 epochs, no early stopping), and
* a ResNet-50's forward cost per image on the CPU (measured on a few random 224 px images,
  inference mode, no gradients: a lower bound for the original approach),

then scales the backbone cost to ``(N + N_val) × epochs`` images and prints one JSON object.
Sizes shrink with the options, e.g. ``--n 5000 --epochs 5 --backbone-images 8``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_arguments, environment, measure, pin_threads  # noqa: E402


def synthetic_features(n: int, d: int, c: int, seed: int, split: str):
    """Post-ReLU-like features with a weak class signal (values do not affect the timing)."""
    from neuroinspect.core.model.featureset import FeatureSet

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % c
    centres = torch.randn(c, d, generator=torch.Generator().manual_seed(1)) * 0.3
    z = torch.relu(centres[labels] + torch.randn(n, d, generator=g))
    return FeatureSet(z, torch.zeros(n, c), labels, torch.full((n,), -1), [""] * n, [f"class_{k}" for k in range(c)],
                      [], split)


def time_edit(args) -> dict:
    from neuroinspect.fix.edit import edit_head

    train = synthetic_features(args.n, args.d, args.c, 0, "train")
    n_val = int(round(args.val_frac * args.n))
    val = synthetic_features(n_val, args.d, args.c, 1, "val")
    g = torch.Generator().manual_seed(2)
    W, b = torch.randn(args.c, args.d, generator=g) * 0.01, torch.zeros(args.c)
    targets = {args.c - 1: [3, 40, 1480 % args.d]}
    t, res = measure(lambda: edit_head(W, b, train, val, targets, method=args.method, epochs=args.epochs, patience=None,
                                       batch_size=args.batch_size, policy=args.device, progress=False),
                     repeat=args.repeat)
    seconds = t["wall_s_min"]
    return {"edit_seconds": seconds, "edit_seconds_per_epoch": seconds / res.epochs_run, "epochs_run": res.epochs_run,
            "edit_times": t, "n_val": n_val}


def time_backbone(args) -> dict:
    import torchvision

    model = torchvision.models.resnet50(weights=None).eval().to(args.device)
    x = torch.rand(args.backbone_batch, 3, 224, 224, device=args.device)
    with torch.inference_mode():
        model(x[:1])  # warm-up
        done, t0, c0 = 0, time.perf_counter(), time.process_time()
        while done < args.backbone_images:
            model(x)
            done += x.shape[0]
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"model": "torchvision resnet50 (random weights; the cost does not depend on them)", "input_size": 224,
            "images_timed": done, "batch": args.backbone_batch, "seconds_per_image": seconds / done,
            "cpu_seconds_per_image": cpu / done,
            "mode": "eval, inference_mode (forward only: a lower bound for re-running the frozen backbone)"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50_000, help="training samples (default 50000)")
    p.add_argument("--d", type=int, default=2048, help="feature dimension (default 2048)")
    p.add_argument("--c", type=int, default=101, help="classes (default 101)")
    p.add_argument("--val-frac", type=float, default=0.15, help="validation size as a fraction of N (default 0.15)")
    p.add_argument("--epochs", type=int, default=20, help="epochs (default 20, all run)")
    p.add_argument("--batch-size", type=int, default=256, help="edit batch size (default 256)")
    p.add_argument("--method", default="ratio", help="edit method (default ratio)")
    p.add_argument("--backbone-images", type=int, default=32, help="images timed through ResNet-50 (default 32)")
    p.add_argument("--backbone-batch", type=int, default=8, help="ResNet-50 batch size (default 8)")
    p.add_argument("--device", default="cpu", help="device for both measurements (default cpu)")
    add_arguments(p, threads=1, repeat=1)
    args = p.parse_args(argv)
    pin_threads(args.threads)
    edit = time_edit(args)
    backbone = time_backbone(args)
    images_per_epoch = args.n + edit["n_val"]
    rerun = images_per_epoch * args.epochs * backbone["seconds_per_image"] + edit["edit_seconds"]
    caching = images_per_epoch * backbone["seconds_per_image"]
    result = {
        "benchmark": "edit on cached features vs re-running the frozen backbone each epoch",
        "n_train": args.n, "n_val": edit["n_val"], "d": args.d, "c": args.c, "epochs": args.epochs,
        "method": args.method, "batch_size": args.batch_size, **environment(args.device),
        **{k: v for k, v in edit.items() if k != "n_val"},
        "backbone": backbone,
        "rerun_backbone_seconds_estimate": rerun,
        "rerun_backbone_formula": "(n_train + n_val) * epochs * seconds_per_image + edit_seconds",
        "speedup": rerun / edit["edit_seconds"],
        "one_off_feature_caching_seconds_estimate": caching,
        "speedup_including_one_off_caching": rerun / (caching + edit["edit_seconds"]),
        "note": "the features are cached once per model and split and shared with explain/visualize; "
                "'speedup' compares the training runs, 'speedup_including_one_off_caching' charges the edit with "
                "one backbone pass over train+val",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

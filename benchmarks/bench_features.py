"""Feature extraction throughput: NeuroInspect's extractor vs a bare inference loop.

Both read the same images through the same DataLoader settings; the bare loop is
``with torch.inference_mode(): model(x)`` and keeps nothing. Prints JSON.

    python benchmarks/bench_features.py                        # efficientnet-lite0, 256 images
    python benchmarks/bench_features.py --model torchvision:resnet18 --images 128
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from neuroinspect.core.data.images import collate_skipping

from neuroinspect.core.data.load import load_data
from neuroinspect.core.model.features import extract_features
from neuroinspect.core.model.models import build_model
from neuroinspect.core.model.probe import Probe
from neuroinspect.core.runtime.device import DevicePolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Clock, add_arguments, environment, pin_threads, summary, write_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    add_arguments(ap, threads=1, repeat=2)  # the runs of each alternate; min and median are reported
    args = ap.parse_args()
    pin_threads(args.threads)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_images(root, args.images, args.image_size)
        data = load_data(root)
        loaded = build_model(args.model, num_classes=None if args.model.startswith("efficientnet-lite") else 4)
        probe = Probe(loaded.model, input_size=loaded.preprocess.input_size)
        model = loaded.model.to(device).eval()
        dataset = data.dataset("all", loaded.preprocess.transform)

        def bare() -> Clock:
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                                 collate_fn=collate_skipping)
            with Clock() as t, torch.inference_mode():
                for x, *_ in loader:
                    model(x.to(device))
            return t

        def ours(cache: Path | None) -> Clock:
            with Clock() as t:
                extract_features(loaded, probe, data, "all", policy=DevicePolicy.resolve(device), batch_size=args.batch_size,
                                 workers=args.workers, cache_dir=cache, progress=False)
            return t

        bare()  # warm-up: page cache, allocator
        runs: dict[str, list[Clock]] = {"bare": [], "ours": [], "ours_cache_write": []}
        for r in range(max(1, args.repeat)):
            runs["bare"].append(bare())
            runs["ours"].append(ours(None))
            runs["ours_cache_write"].append(ours(Path(tmp) / f"cache{r}"))  # extraction + writing the cache
        t_hit = ours(Path(tmp) / "cache0").wall
    times = {k: summary([c.wall for c in v], [c.cpu for c in v]) for k, v in runs.items()}
    best = {k: t["wall_s_min"] for k, t in times.items()}
    print(json.dumps({
        "benchmark": "feature_extraction",
        "model": args.model, "images": args.images, "batch_size": args.batch_size, "workers": args.workers,
        "device": str(device),
        "bare_images_per_s": round(args.images / best["bare"], 2),
        "ours_images_per_s": round(args.images / best["ours"], 2),
        "ours_with_cache_write_images_per_s": round(args.images / best["ours_cache_write"], 2),
        "ratio": round(best["bare"] / best["ours"], 3),
        "ratio_with_cache_write": round(best["bare"] / best["ours_cache_write"], 3),
        "cache_hit_seconds": round(t_hit, 3),
        "times": times, "cpu_time_note": "CPU time of this process (DataLoader workers not included)",
        **environment(str(device)),
    }, indent=2))


if __name__ == "__main__":
    main()

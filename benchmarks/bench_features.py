"""Feature extraction throughput: NeuroInspect's extractor vs a bare inference loop.

Both read the same images through the same DataLoader settings; the bare loop is
``with torch.inference_mode(): model(x)`` and keeps nothing. Prints JSON.

    python benchmarks/bench_features.py                        # efficientnet-lite0, 256 images
    python benchmarks/bench_features.py --model torchvision:resnet18 --images 128
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from neuroinspect.core.data import collate_skipping, load_data
from neuroinspect.core.device import DevicePolicy
from neuroinspect.core.features import extract_features
from neuroinspect.core.models import build_model
from neuroinspect.core.probe import Probe


def write_images(root: Path, n: int, size: int, classes: int = 4) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class_{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i:05d}.jpg", quality=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each; the best is kept")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_images(root, args.images, args.image_size)
        data = load_data(root)
        loaded = build_model(args.model, num_classes=None if args.model.startswith("efficientnet-lite") else 4)
        probe = Probe(loaded.model, input_size=loaded.preprocess.input_size)
        model = loaded.model.to(device).eval()
        dataset = data.dataset("all", loaded.preprocess.transform)

        def bare() -> float:
            loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                                 collate_fn=collate_skipping)
            t = time.perf_counter()
            with torch.inference_mode():
                for x, *_ in loader:
                    model(x.to(device))
            return time.perf_counter() - t

        def ours(cache: Path | None) -> float:
            t = time.perf_counter()
            extract_features(loaded, probe, data, "all", policy=DevicePolicy.resolve(device), batch_size=args.batch_size,
                             workers=args.workers, cache_dir=cache, progress=False)
            return time.perf_counter() - t

        bare()  # warm-up: page cache, allocator
        t_bare, t_ours, t_cached = [], [], []
        for r in range(args.repeats):
            t_bare.append(bare())
            t_ours.append(ours(None))
            t_cached.append(ours(Path(tmp) / f"cache{r}"))  # extraction + writing the cache
        t_hit = ours(Path(tmp) / "cache0")
    best = {k: min(v) for k, v in {"bare": t_bare, "ours": t_ours, "ours_cache_write": t_cached}.items()}
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
        "threads": torch.get_num_threads(), "machine": platform.machine(), "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()

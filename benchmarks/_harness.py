"""What every benchmark here shares, so that its numbers hold on a shared machine.

* :func:`pin_threads` fixes the thread count (torch's intra-op pool, and ``OMP_NUM_THREADS`` /
  ``MKL_NUM_THREADS`` for the processes it starts): on a loaded 2-core machine two OpenMP threads
  can run several times slower than one, so the default is one thread.
* :func:`measure` runs a function ``repeat`` times and reports wall time (``time.perf_counter``)
  beside the process's CPU time (``time.process_time``: all its threads, not its children), each as
  min and median. Wall time much above CPU time / threads means the machine was busy.
* :func:`add_arguments` gives every script the same ``--threads`` and ``--repeat`` options;
  :func:`environment` the fields every JSON carries.
* :func:`scene_features` the cached Lite0 features of the demo's benchmark (or its stamp variant), optionally
  with a larger test split than the demo's.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any, Callable


def scene_features(cue: str = "background", cache=None, test_per_class: int | None = None) -> dict:
    """``{train, val, test}`` features of the demo's spurious scenes (``cue``: its ``ScenesConfig.cue``) under the
    frozen Lite0 the demo debugs, built and extracted once into ``cache`` (default: the project's cache).
    ``test_per_class``: test images per class (default: the demo's); train and val stay the demo's images."""
    from dataclasses import replace
    from pathlib import Path

    from neuroinspect.core.base.io import default_cache_dir
    from neuroinspect.core.data.load import load_data
    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.runtime.device import seeded_rng
    from neuroinspect.demo import DemoConfig
    from neuroinspect.session import Inspector
    from neuroinspect.synthetic.scenes import make_scenes

    cfg = DemoConfig()
    cache = Path(cache) if cache else default_cache_dir()
    scenes = replace(cfg.scenes, cue=cue, **({} if test_per_class is None else {"n_test": test_per_class}))
    manifest = make_scenes(cache / "scenes", scenes, seed=cfg.seed, progress=False)
    data = load_data(manifest)
    with seeded_rng(cfg.seed):  # the new head's random initialisation, as the demo draws it: the cache key is stable
        loaded = build_model(cfg.model, num_classes=len(data.class_names))
    ins = Inspector(loaded, data, cache_dir=cache, progress=False,
                    warn_chance=False)
    return {s: ins.features(s) for s in ("train", "val", "test")}


def add_arguments(ap: argparse.ArgumentParser, threads: int = 1, repeat: int = 3) -> None:
    ap.add_argument("--threads", type=int, default=threads,
                    help=f"CPU threads for torch and OpenMP/MKL (default {threads}; 0 = leave torch's choice)")
    ap.add_argument("--repeat", type=int, default=repeat, help=f"timed runs of each measurement (default {repeat})")


def pin_threads(threads: int) -> int:
    """Use ``threads`` CPU threads (0: keep torch's choice); returns the count in effect."""
    import torch

    if threads > 0:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def _sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], repeat: int = 3, warmup: int = 0) -> tuple[dict, Any]:
    """Time ``fn()`` ``repeat`` times (after ``warmup`` untimed calls); returns ``(times, last result)``.

    ``times``: ``wall_s_min``, ``wall_s_median``, ``cpu_s_min``, ``cpu_s_median``, ``repeat`` and the raw
    lists. CUDA work is synchronised before each clock is read.
    """
    for _ in range(warmup):
        fn()
    walls, cpus, out = [], [], None
    for _ in range(max(1, repeat)):
        _sync()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return summary(walls, cpus), out


def summary(walls: list[float], cpus: list[float]) -> dict:
    """min/median of wall and CPU seconds already measured."""
    return {"wall_s_min": round(min(walls), 6), "wall_s_median": round(statistics.median(walls), 6),
            "cpu_s_min": round(min(cpus), 6), "cpu_s_median": round(statistics.median(cpus), 6),
            "repeat": len(walls), "wall_s": [round(w, 4) for w in walls], "cpu_s": [round(c, 4) for c in cpus]}


class Clock:
    """Wall and CPU time of one block: ``with Clock() as t: ...`` then ``t.wall``, ``t.cpu``."""

    def __enter__(self):
        _sync()
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        _sync()
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0
        return False

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall, 4), "cpu_s": round(self.cpu, 4)}


def print_measured(fn: Callable[[], dict], repeat: int) -> None:
    """Print as JSON what ``fn()`` returns, with its times (:func:`measure`) and the machine (:func:`environment`)."""
    import json

    times, out = measure(fn, repeat=repeat)
    out.update(**environment("cpu"), times=times, wall_s=round(times["wall_s_min"], 1), cpu_s=round(times["cpu_s_min"], 1))
    print(json.dumps(out, indent=1))


def environment(device: str = "cpu") -> dict:
    """Threads, machine and versions, for every benchmark's JSON."""
    import torch

    dev = torch.device(device)
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None
    return {"threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(),
            "machine": f"{os.cpu_count()}-core {platform.machine()} {platform.processor() or ''}".strip(),
            "device": str(dev), "device_name": gpu or platform.processor() or platform.machine(),
            "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "python": platform.python_version()}


def write_images(root, n: int, size: int, classes: int = 4) -> None:
    """``n`` random JPEGs in ``classes`` class folders under ``root`` (a throughput benchmark's data)."""
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = Path(root) / f"class_{i % classes}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i:05d}.jpg", quality=90)


def emit(report: dict, path=None) -> dict:
    """Print the benchmark's JSON, and write it (atomically) to ``path`` when given."""
    import json

    print(json.dumps(report, indent=2))
    if path:
        from neuroinspect.core.base.io import write_json

        write_json(path, report)
    return report

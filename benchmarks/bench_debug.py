"""Benchmark: ``neuroinspect debug`` itself, on the built-in benchmark at a user's size.

Builds the spurious scenes at ``--size`` px (default 224; 4 classes with ``--n-train`` /
``--n-val`` / ``--n-test`` images each: 3,200 images by default), trains the ERM head on the
frozen EfficientNet-Lite0 (what a user has after ``neuroinspect train --head-only``) and caches
the features of every split (untimed: ``train`` leaves them cached), then times the pipeline of
``debug`` at its defaults (``PipelineConfig()``; ``--seeds`` and ``--pictures`` change them)
``--repeat`` times in this process, each into a fresh run folder. The spatial maps of the
heatmaps and the evidence are cached under the cache folder: only a first run on a fresh
``--cache-dir`` computes them, as a user's first run does.

Prints JSON: per run, the test worst-group accuracy of each method compared (the headline), the pipeline's stage times (``run.json``'s ``timings_s``), wall and CPU
seconds and the pictures' share of the wall time; the peak memory of the process (max RSS: the
preparation runs in a child process) once the model and features are loaded and after the timed runs; the goals of the issue that asked for it (the pictures
≤ 25 % of the wall time, the whole run ≤ 15 s) checked against the first run; threads and machine.

    python benchmarks/bench_debug.py --threads 1 --json docs/bench_debug.json
    python benchmarks/bench_debug.py --size 64 --n-train 20 --n-val 10 --n-test 10 --repeat 1   # a smoke run
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Clock, add_arguments, emit, environment, pin_threads  # noqa: E402

PICTURE_STAGES = ("heatmaps", "visualize")  # the pipeline's stages that draw pictures
GOALS = {"pictures_share_max": 0.25, "total_s_max": 15.0}


def _peak_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def prepare(scenes, cache_dir: Path, work: Path, device: str = "auto") -> None:
    """The model under debugging and its data, features cached (run in a child process, so that the
    extraction's memory does not count in the peak of ``debug``): ``work/model.safetensors``, ``work/manifest``."""
    from neuroinspect.core.data.load import load_data
    from neuroinspect.core.model.features import store_features
    from neuroinspect.core.model.models import build_model
    from neuroinspect.core.runtime.device import seeded_rng
    from neuroinspect.demo import fit_linear_head
    from neuroinspect.fix.edit import save_edited_model
    from neuroinspect.session import Inspector
    from neuroinspect.synthetic.scenes import make_scenes

    manifest = make_scenes(cache_dir / "scenes", config=scenes, progress=False)
    data = load_data(manifest)
    C = len(data.class_names)
    with seeded_rng(0):  # the new head's random initialisation: the same in every run, so the features' cache key is too
        base = build_model("efficientnet-lite0", num_classes=C)
    ins0 = Inspector(base, data, device=device, cache_dir=cache_dir, progress=False, warn_chance=False)
    feats = {s: ins0.features(s) for s in ("train", "val", "test")}
    W, b = fit_linear_head(feats["train"], C)
    model_file = work / "model.safetensors"
    save_edited_model(base.model, ins0.probe.head_name, W, b, model_file)
    trained = build_model("efficientnet-lite0", num_classes=C, weights=model_file)
    ins = Inspector(trained, data, device=device, cache_dir=cache_dir, progress=False)
    for split, fs in feats.items():  # as `train --head-only` leaves them: the trained model's features cached
        store_features(trained, ins.probe, data, split, fs.with_logits(W, b), cache_dir, ins.policy)
    (work / "manifest").write_text(str(manifest))


def _prepare_in_child(scenes, cache_dir: Path, work: Path, threads: int, device: str) -> None:
    pin_threads(threads)
    prepare(scenes, cache_dir, work, device)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=224, help="image size of the scenes (default 224)")
    ap.add_argument("--n-train", type=int, default=500, help="training images per class (default 500)")
    ap.add_argument("--n-val", type=int, default=150, help="validation images per class (default 150)")
    ap.add_argument("--n-test", type=int, default=150, help="test images per class (default 150)")
    ap.add_argument("--seeds", default="0", help="debug's --seeds (default 0)")
    ap.add_argument("--pictures", choices=("auto", "none", "heatmaps", "all"), help="debug's --pictures (default: its own)")
    ap.add_argument("--cache-dir", help="feature and scene cache (default: neuroinspect's)")
    ap.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu or cuda (default auto); "
                                                     "the JSON names the card")
    ap.add_argument("--json", help="also write the results to this file")
    add_arguments(ap, threads=1, repeat=2)
    args = ap.parse_args(argv)
    threads = pin_threads(args.threads)

    from dataclasses import replace

    from neuroinspect.core.base.io import default_cache_dir
    from neuroinspect.core.data.load import load_data
    from neuroinspect.core.model.models import build_model
    from neuroinspect.pipeline import PipelineConfig, run_pipeline
    from neuroinspect.session import Inspector
    from neuroinspect.synthetic.scenes import ScenesConfig

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    with tempfile.TemporaryDirectory(prefix="bench_debug_") as tmp:
        work = Path(tmp)
        scenes = ScenesConfig(classes=("T-shirt", "Trouser", "Coat", "Bag"), size=args.size, n_train=args.n_train,
                              n_val=args.n_val, n_test=args.n_test)
        with Clock() as setup:  # wall time only: the child's CPU time is not this process's
            child = multiprocessing.get_context("spawn").Process(target=_prepare_in_child,
                                                                 args=(scenes, cache_dir, work, args.threads, args.device))
            child.start()
            child.join()
        if child.exitcode != 0:
            raise SystemExit(f"preparing the benchmark failed (exit code {child.exitcode})")
        data = load_data((work / "manifest").read_text())
        ins = Inspector(build_model("efficientnet-lite0", num_classes=len(data.class_names),
                                    weights=work / "model.safetensors"), data, device=args.device, cache_dir=cache_dir,
                        progress=False)
        n_images = sum(len(ins.features(s)) for s in ("train", "val", "test"))  # from the cache
        cfg = PipelineConfig(seeds=tuple(int(s) for s in args.seeds.split(",")))
        if args.pictures:
            cfg = replace(cfg, pictures=args.pictures)
        peak_before = _peak_mib()
        runs = []
        for i in range(max(1, args.repeat)):
            with Clock() as t:
                headline = run_pipeline(ins, work / f"run{i}", cfg, progress=False)
            stages = headline["timings_s"]
            pictures = sum(stages.get(k, 0.0) for k in PICTURE_STAGES)
            runs.append({"run": i, **t.as_dict(),
                         "worst_group": headline["by_method"],  # test, original head included
                         "timings_s": stages, "pictures_s": round(pictures, 2),
                         "pictures_share": round(pictures / t.wall, 3) if t.wall else None})
    first = runs[0]
    report = {
        "benchmark": "debug", **environment(str(ins.device)), "threads": threads,
        "scenes": {"size": scenes.size, "classes": list(scenes.classes), "images": n_images},
        "pipeline": {k: v for k, v in asdict(cfg).items() if k in ("seeds", "pictures", "n_insufficient", "n_excessive",
                                                                    "n_edit", "fix", "render_precision")},
        "render": {k: v for k, v in asdict(cfg.render).items() if k in ("steps", "size", "batch", "input_size", "recipe")},
        "setup_wall_s": round(setup.wall, 2), "runs": runs,
        "peak_rss_mib": {"model_and_features_loaded": peak_before, "after_debug": _peak_mib()},
        "goals": {**GOALS, "pictures_share": first["pictures_share"], "total_s": first["wall_s"],
                  "met": bool(first["pictures_share"] is not None and first["pictures_share"] <= GOALS["pictures_share_max"]
                              and first["wall_s"] <= GOALS["total_s_max"])},
    }
    return emit(report, args.json)


if __name__ == "__main__":
    main()

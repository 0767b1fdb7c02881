"""The built-in demo: a real pretrained network with a planted shortcut, found, shown and fixed.

1. build the "spurious scenes" benchmark (Fashion-MNIST items on two families of photo backgrounds;
   one class sits on family A in training, the others on family B);
2. train a linear head on a frozen EfficientNet-Lite0 (real ImageNet weights) on the biased
   training split: plain ERM, which learns the shortcut;
3. run the one pipeline of :mod:`neuroinspect.pipeline` on that model, exactly as
   ``neuroinspect debug`` would: explain the worst class (contribution-gap ranking), visualise its
   top neurons inside the class and in the classes they vote for, fix the decision layer with the
   top insufficient neurons (neuron-guided rebalancing, against the paper's ratio edit, CON, class
   re-weighting, focal loss, ERM retraining, JTT, ablation and DFR, which reads group labels: the
   reference), over several seeds, each of which trains its own ERM head (``retrain_head``);
4. write ``report.html``.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import default_cache_dir, mkdirs
from neuroinspect.core.base.records import RunInfo
from neuroinspect.core.data.load import load_data
from neuroinspect.core.model.features import store_features
from neuroinspect.core.model.models import build_model
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import seeded_rng
from neuroinspect.fix.config import DEFAULT_COMPARE
from neuroinspect.fix.edit import fit_linear_head, save_edited_model
from neuroinspect.pipeline import PipelineConfig, run_pipeline
from neuroinspect.session import Inspector
from neuroinspect.synthetic.scenes import ScenesConfig, make_scenes


@dataclass
class DemoConfig:
    """Every knob of the demo: the benchmark (:class:`ScenesConfig`), the model and its ERM head, and the
    pipeline run on it (:class:`PipelineConfig`). ``DemoConfig.fast()`` is the quick variant."""

    scenes: ScenesConfig = ScenesConfig(classes=("T-shirt", "Trouser", "Coat", "Bag"), size=96)
    model: str = "efficientnet-lite0"
    head_epochs: int = 200
    seed: int = 0  # the benchmark's, the head's and the pictures' seed; the run shown in detail
    # debug's defaults with 3 seeds, every baseline and every picture on a CPU too: the demo shows the whole method
    pipeline: PipelineConfig = field(default_factory=lambda: PipelineConfig(seeds=(0, 1, 2), methods=DEFAULT_COMPARE,
                                                                            pictures="all"))

    @classmethod
    def fast(cls, *, scenes: dict | None = None, pipeline: dict | None = None, render: dict | None = None,
             **overrides) -> "DemoConfig":
        """Small images, few steps and one seed; ``scenes``, ``pipeline`` and ``render`` override those parts."""
        return cls().with_(scenes={"n_train": 60, "n_val": 30, "n_test": 40, "size": 64, **(scenes or {})},
                           pipeline={"n_insufficient": 2, "n_excessive": 1, "n_edit": 1, "seeds": (0,), **(pipeline or {})},
                           render={"steps": 32, **(render or {})}, **{"head_epochs": 100, **overrides})

    def with_(self, *, scenes: dict | None = None, pipeline: dict | None = None, render: dict | None = None,
              **overrides) -> "DemoConfig":
        """A copy with some fields of the benchmark, the pipeline, its render settings or the demo replaced."""
        pipe = replace(self.pipeline, **(pipeline or {}))
        pipe = replace(pipe, render=replace(pipe.render, **(render or {})))
        return replace(self, scenes=replace(self.scenes, **(scenes or {})), pipeline=pipe, **overrides)


def run_demo(out: str | Path, config: DemoConfig | None = None, *, device: str = "cpu",
             cache_dir: str | Path | None = None, progress: bool = True) -> dict:
    """Build the benchmark, train the model under debugging, and run the pipeline on it into ``out``.

    Every random draw has its own seeded generator (the benchmark's, the head's, the fixes'); the models'
    random initialisations are drawn inside :func:`~neuroinspect.core.runtime.device.seeded_rng`, so the
    caller's global random state is left as it was."""
    cfg = config or DemoConfig()
    out = mkdirs(out, "--out")
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    with distributed.main_first():  # under torchrun rank 0 builds the data, the others then read it
        manifest = make_scenes(cache_dir / "scenes", config=replace(cfg.scenes, seed=cfg.seed), progress=progress)
    timings["data"] = round(time.perf_counter() - t0, 2)

    # the model under debugging: the frozen backbone and a head trained by plain ERM
    t0 = time.perf_counter()
    data = load_data(manifest)
    C = len(data.class_names)
    with seeded_rng(cfg.seed):  # the new head's random initialisation (replaced by the ERM head below)
        base = build_model(cfg.model, num_classes=C)
    ins0 = Inspector(base, data, device=device, cache_dir=cache_dir, seed=cfg.seed, progress=progress, warn_chance=False)
    feats = {s: ins0.features(s) for s in ("train", "val", "test")}
    W, b = fit_linear_head(feats["train"], C, epochs=cfg.head_epochs, seed=cfg.seed)
    model_file = out / "model.safetensors"
    if distributed.is_main():  # rank 0 writes the trained model; every rank then loads it
        save_edited_model(base.model, ins0.probe.head_name, W, b, model_file)
    distributed.barrier()
    with seeded_rng(cfg.seed):  # every weight is then read from the file
        trained = build_model(cfg.model, num_classes=C, weights=model_file)
    ins = Inspector(trained, data, device=device, cache_dir=cache_dir, seed=cfg.seed, progress=progress)
    # same backbone: the features stay, rescored by the trained head, and are cached for this model too
    for split, fs in feats.items() if distributed.is_main() else ():
        store_features(trained, ins.probe, data, split, fs.with_logits(W, b), cache_dir, ins.policy)
    timings["features_and_head"] = round(time.perf_counter() - t0, 2)

    seeds = (cfg.seed, *(k for k in cfg.pipeline.seeds if k != cfg.seed))  # the run shown in detail comes first
    pipe = replace(cfg.pipeline, seeds=seeds, render=replace(cfg.pipeline.render, seed=cfg.seed))
    headline = run_pipeline(
        ins, out, pipe, progress=progress,
        retrain_head=lambda seed: fit_linear_head(feats["train"], C, epochs=cfg.head_epochs, seed=seed),
        # "config": the demo's own settings; the pipeline's, as run (seeds in run order), are under "pipeline"
        run_info={"command": "demo", "config": {k: v for k, v in asdict(cfg).items() if k != "pipeline"},
                  "data": str(manifest), "model_file": model_file.name, "timings_s": timings},
    )
    return headline


def load(run_dir: str | Path, *, device: str = "cpu", cache_dir: str | Path | None = None,
         progress: bool = True) -> Inspector:
    """The :class:`~neuroinspect.session.Inspector` of a finished demo run: the model it debugged (the
    frozen backbone with the ERM head, ``RUN_DIR/model.safetensors``) on its benchmark (the manifest that
    ``run.json`` names), ready for ``find``/``show``/``fix``. ``cache_dir``: the demo's cache (default: the
    default cache, where the demo put the features)."""
    run_dir = Path(run_dir)
    if not (run_dir / RunInfo.FILE).is_file():
        raise NeuroInspectError(f"'{run_dir}' holds no run.json; give the --out folder of a finished `neuroinspect demo`")
    info = RunInfo.read(run_dir / RunInfo.FILE)
    if info.command != "demo":
        raise NeuroInspectError(f"'{run_dir}' is a '{info.command}' run, not a demo run; load its model with "
                                "Inspector(model, data, weights=...)")
    manifest = Path(str(info.data or ""))
    model_file = run_dir / (info.model_file or "model.safetensors")
    if not manifest.is_file():
        raise NeuroInspectError(f"the demo's benchmark '{manifest}' is gone (a cleared cache?); run `neuroinspect demo "
                                f"--out {run_dir}` again")
    if not model_file.is_file():
        raise NeuroInspectError(f"'{model_file}' is missing; run `neuroinspect demo --out {run_dir}` again")
    data = load_data(manifest)
    model = (info.config or {}).get("model") or DemoConfig.model
    return Inspector(model, data, weights=str(model_file), num_classes=len(data.class_names), device=device,
                     cache_dir=str(cache_dir) if cache_dir is not None else None, progress=progress)

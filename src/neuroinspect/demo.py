"""The built-in demo: a real pretrained network with a planted shortcut, found, shown and fixed.

1. build the "spurious scenes" benchmark (Fashion-MNIST items on two families of photo backgrounds;
   one class sits on family A in training, the others on family B);
2. train a linear head on a frozen EfficientNet-Lite0 (real ImageNet weights) on the biased
   training split: plain ERM, which learns the shortcut;
3. evaluate per class and group, ``explain`` the worst class, visualise its top neurons inside
   the class and in the classes they vote for, pick the neurons with the lowest core relevance score;
4. edit the decision layer with the probability-ratio method and compare it with CON, class
   re-weighting, focal loss and ERM retraining;
5. write ``report.html``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .errors import NeuroInspectError
from .featureset import FeatureSet
from .io import write_json

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Every knob of the demo; ``DemoConfig.fast()`` is the quick variant."""

    model: str = "efficientnet-lite0"
    classes: tuple[str, ...] = ("T-shirt", "Trouser", "Coat", "Bag")
    spurious_class: str = "Coat"
    correlation: float = 0.95
    image_size: int = 96
    n_train: int = 250
    n_val: int = 80
    n_test: int = 150
    head_epochs: int = 200
    n_insufficient: int = 4  # top insufficient neurons to render (the candidates for the edit)
    n_excessive: int = 2  # top excessive neurons to render
    n_edit: int = 3  # neurons to edit: the candidates with the lowest core relevance scores
    steps: int = 96
    vis_size: int = 128
    batch: int = 8
    # visualisation cost: bf16 + channels-last on the classifier only, the classifier at the render
    # size, a short warm-up; silent images start from their top exemplar (else their pre-activation
    # is pushed); exemplar heatmaps per class
    precision: str = "bf16"
    channels_last: bool = True
    vis_input_size: int | None = 128
    warmup: float = 0.1
    start: str = "auto"
    heatmaps: int = 4
    clip: str = "none"
    seed: int = 0
    methods: tuple[str, ...] = ("ratio", "con", "class-weight", "focal", "erm")
    lam: float = 0.01
    lr: float = 0.01
    select_by: str = "worst-group"

    @classmethod
    def fast(cls, **overrides) -> "DemoConfig":
        base = dict(n_train=60, n_val=30, n_test=40, head_epochs=100, n_insufficient=2, n_excessive=1, n_edit=1, steps=32,
                    vis_size=128, vis_input_size=128, image_size=64)
        base.update(overrides)
        return cls(**base)


def fit_linear_head(train: FeatureSet, C: int, epochs: int = 200, lr: float = 0.01, weight_decay: float = 1e-4,
                    seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain ERM: multinomial logistic regression on cached features (full batch, Adam)."""
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(C, train.D, generator=g) * 0.01).requires_grad_()
    b = torch.zeros(C, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(train.features @ W.T + b, train.labels).backward()
        opt.step()
    return W.detach(), b.detach()


def edit_targets(neurons: list[int], explanation, W: torch.Tensor) -> dict[int, list[int]]:
    """Which class each neuron is a false correlation *of*.

    An insufficient neuron of class c is one c relies on: edit c. An excessive neuron pushes
    c's mistakes toward another class: edit the class the mistakes are most often taken for
    when the neuron votes for it, else the class it votes for most.
    """
    c = explanation.class_index
    insufficient = {s.neuron for s in explanation.insufficient}
    predicted = explanation.mistakes.predictions
    confused = int(predicted.bincount(minlength=W.shape[0]).argmax()) if len(predicted) else None
    targets: dict[int, list[int]] = {}
    for j in neurons:
        if j in insufficient:
            k = c
        elif confused is not None and confused != c and W[confused, j] > 0:
            k = confused
        else:
            column = W[:, j].detach().clone()
            column[c] = -float("inf")
            k = int(column.argmax())
        targets.setdefault(k, []).append(j)
    return targets


def run_demo(out: str | Path, config: DemoConfig | None = None, *, device: str = "cpu", cache_dir: str | Path | None = None,
             progress: bool = True) -> dict:
    """Run the whole demo into ``out`` and return its headline numbers."""
    from .cli.common import versions
    from .edit import compare_methods, edit_record, save_edited_model
    from .explain import explain_class
    from .features import store_features
    from .metrics import evaluate
    from .models import build_model
    from .report import build_report
    from .scenes import make_scenes
    from .io import default_cache_dir
    from .session import Inspector, seed_everything
    from .visualize import visualize_neurons

    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    stages = tqdm(total=7, desc="demo", unit="stage", disable=None if progress else True)

    def stage(text: str) -> None:
        stages.set_postfix_str(text)
        if not progress:
            log.info("demo: %s", text)

    # 1. data ---------------------------------------------------------------------------------
    t0 = time.perf_counter()
    stage("building the spurious-scenes data")
    manifest = make_scenes(cache_dir / "scenes", classes=cfg.classes, spurious_class=cfg.spurious_class,
                           correlation=cfg.correlation, size=cfg.image_size, n_train=cfg.n_train, n_val=cfg.n_val,
                           n_test=cfg.n_test, seed=cfg.seed, progress=progress)
    lap("data", t0)
    stages.update()

    # 2. the model under debugging: frozen Lite0 + a head trained by plain ERM ----------------
    t0 = time.perf_counter()
    stage("extracting features and training the head (ERM)")
    seed_everything(cfg.seed)
    from .data import load_data

    data = load_data(manifest)
    C = len(data.class_names)
    base = build_model(cfg.model, num_classes=C)
    ins0 = Inspector(base, data, device=device, cache_dir=cache_dir, seed=cfg.seed, progress=progress)
    feats0 = {s: ins0.features(s) for s in ("train", "val", "test")}
    W, b = fit_linear_head(feats0["train"], C, epochs=cfg.head_epochs, seed=cfg.seed)
    model_file = save_edited_model(base.model, ins0.probe.head_name, W, b, out / "model.safetensors")
    trained = build_model(cfg.model, num_classes=C, weights=model_file)
    ins = Inspector(trained, data, device=device, cache_dir=cache_dir, seed=cfg.seed, progress=progress)
    # same backbone: the features stay, rescored by the trained head, and are cached for this model too
    feats = {split: fs.with_logits(W, b) for split, fs in feats0.items()}
    for split, fs in feats.items():
        store_features(trained, ins.probe, data, split, fs, cache_dir, amp=ins.amp, device=ins.device)
    lap("features_and_head", t0)
    stages.update()

    # 3. evaluate ----------------------------------------------------------------------------
    stage("evaluating")
    metrics = {s: evaluate(feats[s]) for s in ("train", "val", "test")}
    write_json(out / "metrics.json", {**metrics["test"], "split": "test"})
    write_json(out / "metrics_all_splits.json", metrics)
    stages.update()

    # 4. explain the worst class (on val) ----------------------------------------------------
    t0 = time.perf_counter()
    worst = metrics["val"]["worst_class"]
    stage(f"explaining the worst class '{worst}'")
    c = data.class_index(worst)
    explanation = explain_class(W, b, feats["val"], c, progress=progress)
    explanation.save(out)
    lap("explain", t0)
    stages.update()

    # 5. visualise its top neurons inside the class and in the classes they vote for ----------
    t0 = time.perf_counter()
    stage("rendering the top neurons")
    ranked = []
    for s in explanation.insufficient[: cfg.n_insufficient] + explanation.excessive[: cfg.n_excessive]:
        if s.neuron not in ranked:
            ranked.append(s.neuron)
    if not ranked:
        raise NeuroInspectError(f"the worst class '{worst}' has no ranked neurons; nothing to visualise or edit")
    targets_all = edit_targets(ranked, explanation, W)
    # each neuron inside the class under debugging and inside the class its edit would target
    per_neuron = {j: sorted({c, k}) for k, js in targets_all.items() for j in js}
    vis = visualize_neurons(ins, ranked, per_neuron, out / "visualize", recipe="clip-illusion", clip=cfg.clip,
                            steps=cfg.steps, size=cfg.vis_size, batch=cfg.batch, seed=cfg.seed,
                            features=feats["train"], device=device, progress=progress, precision=cfg.precision,
                            channels_last=cfg.channels_last, input_size=cfg.vis_input_size, warmup=cfg.warmup,
                            start=cfg.start, heatmaps=cfg.heatmaps)
    lap("visualize", t0)
    stages.update()

    # 6. pick neurons by core relevance score, edit, compare ----------------------------------
    t0 = time.perf_counter()
    stage("editing the decision layer")
    # candidates: the rendered insufficient neurons (the features class c leans on, missing in its
    # mistakes); the lowest core relevance scores mark the ones that are not part of the class
    candidates = [j for j in ranked if j in targets_all.get(c, [])] or ranked
    crs = {}
    for rec in vis.get("images", []):
        j, k = rec["neuron"], rec["class_index"]
        if rec.get("crs") is not None and j in candidates and j in targets_all.get(k, []):
            crs[j] = rec["crs"]
    picks = sorted(candidates, key=lambda j: (crs.get(j, float("inf")), ranked.index(j)))[: cfg.n_edit]
    targets = edit_targets(picks, explanation, W)
    names = data.class_names
    before = metrics["test"]
    edited = [names[k] for k in targets]
    rows, results = compare_methods(
        feats["test"], cfg.methods, names, W=W, b=b, train=feats["train"], val=feats["val"], targets=targets,
        lam=cfg.lam, lr=cfg.lr, select_by=cfg.select_by, seed=cfg.seed, device=device,
    )
    res, after = results["ratio"]
    edited_file = save_edited_model(trained.model, ins.probe.head_name, res.weight, res.bias, out / "edit" / "model_edited.safetensors")
    write_json(out / "edit" / "edit.json", edit_record(
        res, names, before, after, edited_file.name, split="test",
        picked_by={"rule": f"lowest core relevance score among the rendered insufficient neurons of '{worst}'",
                   "crs": crs, "ranked": ranked, "candidates": candidates},
    ))
    write_json(out / "compare" / "compare.json", {"classes": edited, "split": "test", "rows": rows,
                                                  "neurons": {names[k]: v for k, v in targets.items()},
                                                  "lam": cfg.lam, "select_by": cfg.select_by})
    lap("edit_and_compare", t0)
    stages.update()

    # 7. report ------------------------------------------------------------------------------
    stage("writing the report")
    headline = {
        "worst_group_before": before.get("per_group", {}).get(before.get("worst_group")),
        "worst_group_after": min(after["per_group"].values()) if after.get("per_group") else None,
        "accuracy_before": before["accuracy"], "accuracy_after": after["accuracy"],
        "erm_worst_group": min(results["erm"][1]["per_group"].values()) if "erm" in results and results["erm"][1]["per_group"] else None,
        "worst_class": worst, "edited": {names[k]: v for k, v in targets.items()},
    }
    write_json(out / "run.json", {
        "command": "demo", "config": asdict(cfg), "device": str(ins.device), "data": str(manifest),
        "versions": versions(), "timings_s": {**timings, "total": round(time.perf_counter() - started, 1)},
        "headline": headline, "probe": ins.probe.describe(), "model_file": model_file.name,
    })
    report = build_report(out)
    stages.update()
    stages.close()
    headline["report"] = str(report)
    headline["seconds"] = round(time.perf_counter() - started, 1)
    headline["timings_s"] = dict(timings)
    return headline


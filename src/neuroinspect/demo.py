"""The built-in demo: a real pretrained network with a planted shortcut, found, shown and fixed.

1. build the "spurious scenes" benchmark (Fashion-MNIST items on two families of photo backgrounds;
   one class sits on family A in training, the others on family B);
2. train a linear head on a frozen EfficientNet-Lite0 (real ImageNet weights) on the biased
   training split: plain ERM, which learns the shortcut;
3. evaluate per class and group, ``explain`` the worst class (contribution-gap ranking, which
   finds the shortcut's neurons here; the paper's additive counterfactual is a flag away),
   visualise its top neurons inside the class and in the classes they vote for;
4. fix the decision layer with the top insufficient neurons: neuron-guided rebalancing (the
   default fix), against the paper's ratio edit, CON, class re-weighting, focal loss, ERM
   retraining, JTT, ablation and DFR (which reads group labels: the reference), over several
   seeds (each seed trains its own ERM head, explains, picks and fixes);
5. write ``report.html``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from neuroinspect.core.progress import progress_bar

from neuroinspect.core.errors import NeuroInspectError
from neuroinspect.core.featureset import FeatureSet
from neuroinspect.core.io import write_json

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
    n_edit: int = 3  # neurons to edit: the top insufficient neurons of the ranking
    ranking: str = "gap"  # how explain blames neurons (see neuroinspect.find.ranking)
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
    seeds: tuple[int, ...] = (0, 1, 2)  # each: its own ERM head, explanation, pick and fixes; headline = mean
    fix: str = "rebalance"  # the method the demo saves as its edited model and quotes in the headline
    methods: tuple[str, ...] = ("rebalance", "ratio", "con", "class-weight", "focal", "erm", "jtt", "ablate", "dfr")

    @classmethod
    def fast(cls, **overrides) -> "DemoConfig":
        base = dict(n_train=60, n_val=30, n_test=40, head_epochs=100, n_insufficient=2, n_excessive=1, n_edit=1, steps=32,
                    vis_size=128, vis_input_size=128, image_size=64, seeds=(0,))
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


def pick_neurons(explanation, n: int) -> list[int]:
    """The top ``n`` insufficient neurons of the ranking (excessive ones when there are none)."""
    pool = explanation.insufficient or explanation.excessive
    if not pool:
        raise NeuroInspectError(f"class '{explanation.class_name}' has no ranked neurons; nothing to fix")
    return [s.neuron for s in pool[:n]]


def crs_of(vis: dict) -> dict[int, float]:
    """The core relevance score of each rendered neuron inside the class under debugging (for display)."""
    return {rec["neuron"]: rec["crs"] for rec in vis.get("images", []) if rec.get("crs") is not None}


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


def find_and_fix(feats: dict[str, FeatureSet], cfg: DemoConfig, seed: int, *, device="cpu", head=None,
                 explanation=None) -> tuple:
    """One seed of find → pick → fix on cached features: an ERM head trained with ``seed`` (or ``head``),
    its worst validation class explained with ``cfg.ranking`` (or ``explanation``), its top
    ``cfg.n_edit`` insufficient neurons picked, and every method of ``cfg.methods`` run.

    Returns ``(explanation, targets, {method: (test metrics, summary row, FixResult)})``.
    """
    from neuroinspect.find.ranking import explain_class
    from neuroinspect.fix.compare import run_methods
    from neuroinspect.core.metrics import evaluate

    C = len(feats["train"].class_names)
    W, b = head if head is not None else fit_linear_head(feats["train"], C, epochs=cfg.head_epochs, seed=seed)
    fs = {split: f.with_logits(W, b) for split, f in feats.items()}
    if explanation is None:
        c = fs["val"].class_names.index(evaluate(fs["val"])["worst_class"])
        explanation = explain_class(W, b, fs["val"], c, ranking=cfg.ranking, progress=False)
    targets = edit_targets(pick_neurons(explanation, cfg.n_edit), explanation, W)
    results = run_methods(W, b, fs["train"], fs["val"], fs["test"], targets, cfg.methods, seed, policy=device)
    return explanation, targets, results


def run_demo(out: str | Path, config: DemoConfig | None = None, *, device: str = "cpu", cache_dir: str | Path | None = None,
             progress: bool = True) -> dict:
    """Run the whole demo into ``out`` and return its headline numbers."""
    from neuroinspect.core.runinfo import versions
    from neuroinspect.fix.edit import save_edited_model
    from neuroinspect.fix.compare import aggregate_seeds, fix_record
    from neuroinspect.find.ranking import explain_class
    from neuroinspect.core.features import store_features
    from neuroinspect.core.metrics import evaluate
    from neuroinspect.core.models import build_model
    from neuroinspect.report import build_report
    from neuroinspect.core.scenes import make_scenes
    from neuroinspect.core.io import default_cache_dir
    from neuroinspect.session import Inspector, seed_everything
    from neuroinspect.core.device import DevicePolicy
    from neuroinspect.show.visualize import visualize_neurons

    cfg = config or DemoConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)

    stages = progress_bar(7, "demo", "stage", enabled=progress)

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
    from neuroinspect.core.data import load_data

    data = load_data(manifest)
    C = len(data.class_names)
    base = build_model(cfg.model, num_classes=C)
    ins0 = Inspector(base, data, device=device, cache_dir=cache_dir, seed=cfg.seed, progress=progress, warn_chance=False)
    feats0 = {s: ins0.features(s) for s in ("train", "val", "test")}
    W, b = fit_linear_head(feats0["train"], C, epochs=cfg.head_epochs, seed=cfg.seed)
    model_file = save_edited_model(base.model, ins0.probe.head_name, W, b, out / "model.safetensors")
    trained = build_model(cfg.model, num_classes=C, weights=model_file)
    ins = Inspector(trained, data, device=device, cache_dir=cache_dir, seed=cfg.seed, progress=progress)
    # same backbone: the features stay, rescored by the trained head, and are cached for this model too
    feats = {split: fs.with_logits(W, b) for split, fs in feats0.items()}
    for split, fs in feats.items():
        store_features(trained, ins.probe, data, split, fs, cache_dir, ins.policy)
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
    explanation = explain_class(W, b, feats["val"], c, ranking=cfg.ranking, progress=progress)
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
                            features=feats["train"], progress=progress, input_size=cfg.vis_input_size, warmup=cfg.warmup,
                            policy=DevicePolicy.resolve(ins.device, cfg.precision, cfg.channels_last, backward=True),
                            start=cfg.start, heatmaps=cfg.heatmaps)
    lap("visualize", t0)
    stages.update()

    # 6. pick the neurons, fix and compare, over seeds --------------------------------------
    t0 = time.perf_counter()
    stage("fixing the decision layer")
    names = data.class_names
    per_seed, picked = [], {}
    seeds = [cfg.seed] + [k for k in cfg.seeds if k != cfg.seed]  # the run shown in detail comes first
    for seed in seeds:
        first_seed = seed == cfg.seed  # the run shown in detail: its head and explanation are the ones above
        exp_s, targets_s, results = find_and_fix(feats0, cfg, seed, device=device, head=(W, b) if first_seed else None,
                                                 explanation=explanation if first_seed else None)
        picked[seed] = {names[k]: v for k, v in targets_s.items()}
        per_seed.append(results)
    rows = aggregate_seeds(per_seed)
    first = per_seed[0]
    before, res = first["original"][0], first[cfg.fix][2]
    after = first[cfg.fix][0]
    targets = res.targets
    edited_file = save_edited_model(trained.model, ins.probe.head_name, res.weight, res.bias, out / "edit" / "model_edited.safetensors")
    write_json(out / "edit" / "edit.json", fix_record(
        res, names, before, after, edited_file.name, split="test",
        picked_by={"rule": f"the top {cfg.n_edit} insufficient neurons of '{worst}' by the {cfg.ranking} ranking",
                   "ranking": cfg.ranking, "ranked": ranked, "crs": crs_of(vis)},
    ))
    write_json(out / "compare" / "compare.json", {
        "classes": [names[k] for k in targets], "split": "test", "rows": rows, "seeds": seeds,
        "neurons": picked[cfg.seed], "neurons_by_seed": {str(k): v for k, v in picked.items()},
        "notes": [f"each seed trains its own ERM head, explains its worst class, picks its top {cfg.n_edit} "
                  f"insufficient neurons ({cfg.ranking} ranking) and runs every method"],
    })
    lap("edit_and_compare", t0)
    stages.update()

    # 7. report ------------------------------------------------------------------------------
    stage("writing the report")
    by = {r["method"]: r for r in rows}

    def mean(method, key="worst_group_acc"):
        return by[method][key] if method in by else None

    headline = {
        "seeds": seeds, "fix": cfg.fix,
        "worst_group_before": mean("original"), "worst_group_after": mean(cfg.fix),
        "worst_group_after_std": by[cfg.fix]["worst_group_acc_std"],
        "accuracy_before": mean("original", "avg_acc"), "accuracy_after": mean(cfg.fix, "avg_acc"),
        "erm_worst_group": mean("erm"), "ratio_worst_group": mean("ratio"), "dfr_worst_group": mean("dfr"),
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

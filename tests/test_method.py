"""The method works, not only runs: checked on the demo's default benchmark with the real Lite0.

Slower than the other tests (about a minute of feature extraction on 2 CPU cores); it needs
Fashion-MNIST (Debian's dataset-fashion-mnist, which the test command installs).
"""
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow
import torch

from conftest import all_cores
from neuroinspect.core.base.metrics import evaluate
from neuroinspect.core.data.load import load_data
from neuroinspect.core.model.models import build_model
from neuroinspect.demo import DemoConfig, fit_linear_head
from neuroinspect.find.ranking import explain_class
from neuroinspect.fix.compare import fix_head
from neuroinspect.pipeline import PipelineConfig, choose_classes
from neuroinspect.session import Inspector, seed_everything
from neuroinspect.synthetic.scenes import DEFAULT_FAMILIES, FASHION_CLASSES, _background, compose, load_fashion_mnist, load_photo
from neuroinspect.synthetic.scenes import make_scenes


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    try:
        load_fashion_mnist("t10k", cache_dir=tmp_path_factory.mktemp("none"))
    except Exception as err:  # no Debian package and no network
        pytest.skip(f"Fashion-MNIST is not available here: {err}")
    cfg = DemoConfig()
    cache = tmp_path_factory.mktemp("cache")
    manifest = make_scenes(cache / "scenes", cfg.scenes, seed=cfg.seed, progress=False)
    data = load_data(manifest)
    seed_everything(cfg.seed)
    loaded = build_model(cfg.model, num_classes=len(data.class_names))
    ins = Inspector(loaded, data, cache_dir=cache, seed=cfg.seed, progress=False)
    with all_cores():
        feats = {s: ins.features(s) for s in ("train", "val", "test")}
    W, b = fit_linear_head(feats["train"], len(data.class_names), epochs=cfg.head_epochs, seed=cfg.seed)
    feats = {s: fs.with_logits(W, b) for s, fs in feats.items()}
    worst = evaluate(feats["val"]).worst_class
    explanation = explain_class(W, b, feats["val"], data.class_index(worst), progress=False)
    return cfg, ins, feats, W, b, explanation


def _pairs(cfg, n=24, seed=7):
    """The same items (same place, size and tint) on a family-A and on a family-B background."""
    images, labels = load_fashion_mnist("t10k")
    wanted = [FASHION_CLASSES.index(c) for c in cfg.scenes.classes]
    idx = np.flatnonzero(np.isin(labels, wanted))[:n]
    fam_a, fam_b = (DEFAULT_FAMILIES[k] for k in DEFAULT_FAMILIES)
    pairs = []
    for i, item in enumerate(images[idx]):
        rng = np.random.default_rng([seed, i])
        bg_a = _background(load_photo(fam_a[i % len(fam_a)]), cfg.scenes.size, rng)
        bg_b = _background(load_photo(fam_b[i % len(fam_b)]), cfg.scenes.size, rng)
        pairs.append((compose(bg_a, item, np.random.default_rng([seed, i, 1])),
                      compose(bg_b, item, np.random.default_rng([seed, i, 1]))))
    return pairs


@pytest.fixture(scope="module")
def paired_features(setup):
    cfg, ins, feats, W, b, explanation = setup
    tf = ins.loaded.preprocess.transform
    pairs = _pairs(cfg, n=48)
    with torch.inference_mode():
        za = ins.probe(torch.stack([tf(a) for a, _ in pairs])).features
        zb = ins.probe(torch.stack([tf(b_) for _, b_ in pairs])).features
    std = feats["train"].features.std(0)
    alive = (std > 1e-3).nonzero().flatten()
    g = torch.Generator().manual_seed(0)
    random = alive[torch.randperm(len(alive), generator=g)[:300]]
    return za, zb, std.clamp_min(1e-3), random


def test_ranked_neurons_lean_toward_the_shortcut_background(setup, paired_features):
    """The worst class's top insufficient neurons fire more when the *same item* sits on the
    background family that class had in training (A) than random neurons do."""
    cfg, ins, feats, W, b, explanation = setup
    za, zb, std, random = paired_features
    assert explanation.class_name == cfg.scenes.spurious_class  # the shortcut's victim is the class explained
    preference = (za - zb).mean(0) / std  # >0: fires more on family A, in the neuron's own units
    top = [s.neuron for s in explanation.insufficient[:8]]
    assert float(preference[top].mean()) > float(preference[random].mean()) + 0.1
    assert int((preference[top] > 0).sum()) >= 5


@pytest.mark.xfail(strict=True, reason="measured: on this benchmark the ranked neurons change *less* in absolute "
                                         "terms between the two families than random ones (about 0.8x); most "
                                         "ImageNet features respond to the background photo, so the absolute "
                                         "measure does not single them out")
def test_ranked_neurons_are_more_background_sensitive_in_absolute_terms(setup, paired_features):
    cfg, ins, feats, W, b, explanation = setup
    za, zb, std, random = paired_features
    sensitivity = ((za - zb).abs() / std).mean(0)
    top = [s.neuron for s in explanation.insufficient[:5] + explanation.excessive[:5]]
    assert float(sensitivity[top].mean() / sensitivity[random].mean()) > 1.5


def _auc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per column: P(a random positive > a random negative) (ties count half)."""
    gt = (pos.unsqueeze(1) > neg.unsqueeze(0)).float().mean((0, 1))
    eq = (pos.unsqueeze(1) == neg.unsqueeze(0)).float().mean((0, 1))
    return gt + 0.5 * eq


def test_gap_ranking_finds_shortcut_neurons_the_paper_ranking_misses(setup):
    """Group labels are used here only to evaluate: how well does each selected neuron separate the
    worst class's majority group (its training background A) from its minority group (B) on test?"""
    cfg, ins, feats, W, b, explanation = setup
    c = explanation.class_index
    te = feats["test"]
    names = te.group_names
    own = [i for i, g in enumerate(names) if g.startswith(cfg.scenes.spurious_class + "/")]
    za, zb = te.features[te.groups == own[0]], te.features[te.groups == own[1]]
    separation = (_auc(za, zb) - 0.5).abs()
    gap = [s.neuron for s in explanation.insufficient[:3]]
    paper = [s.neuron for s in explain_class(W, b, feats["val"], c, ranking="additive", progress=False).insufficient[:3]]
    assert explanation.settings["ranking"] == "gap"
    assert float(separation[gap].mean()) > float(separation[paper].mean()) + 0.1, (separation[gap], separation[paper])


def test_rebalance_with_defaults_beats_erm_retraining_by_a_wide_margin(setup):
    cfg, ins, feats, W, b, explanation = setup
    targets = {explanation.class_index: [s.neuron for s in explanation.insufficient[:cfg.pipeline.n_edit]]}

    def run(method):
        res = fix_head(W, b, feats["train"], feats["val"], targets, method=method, seed=cfg.seed)
        m = evaluate(res.apply(feats["test"]))
        return min(m.per_group.values()), m.accuracy

    before = evaluate(feats["test"])
    worst_before = min(before.per_group.values())
    rebalanced, rebalanced_acc = run("rebalance")
    erm, _ = run("erm")
    assert rebalanced >= erm + 0.2 and rebalanced >= worst_before + 0.3, (worst_before, erm, rebalanced)
    assert rebalanced_acc > before.accuracy - 0.01  # average accuracy kept


def _regime(feats, regime, seed):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_regimes import regime_val

    return regime_val(feats, regime, seed)


@pytest.mark.parametrize("regime", ["a", "b", "c", "d"])
def test_regroup_fixes_the_shortcut_in_every_validation_regime(setup, regime):
    """The default fix at its defaults, each seed its own ERM head: balanced val (a), val drawn like the biased
    training split (b), 10 images per group (c), no val (d). Group labels only evaluate."""
    cfg, ins, feats, W, b, explanation = setup
    c = feats["train"].class_names.index(cfg.scenes.spurious_class)
    for seed in (0, 1, 2):
        W, b = fit_linear_head(feats["train"], len(feats["train"].class_names), epochs=cfg.head_epochs, seed=seed)
        val = _regime(feats, regime, seed)
        res = fix_head(W, b, feats["train"], val, {c: []}, seed=seed)
        before = min(evaluate(feats["test"].with_logits(W, b)).per_group.values())
        after = min(evaluate(res.apply(feats["test"])).per_group.values())
        assert res.method == "regroup" and not res.uses_group_labels and not res.chosen["kept_original"]
        assert after >= before + 0.30, (regime, seed, before, after)  # measured: +35 to +70 points


def test_debug_chooses_the_shortcut_class_on_a_biased_val(setup):
    """Val drawn like the biased training split: class accuracy points at another class, the head's tails (the
    default) and the held-out pseudo-minority (``--choose-by mistakes``) still point at the shortcut's class."""
    cfg, ins, feats, W, b, explanation = setup
    names = feats["train"].class_names
    for seed in (0, 1, 2):
        W, b = fit_linear_head(feats["train"], len(names), epochs=cfg.head_epochs, seed=seed)
        val = _regime(feats, "b", seed).with_logits(W, b)
        by_accuracy = choose_classes(val, PipelineConfig(choose_by="accuracy"), names.index)
        by_mistakes = choose_classes(val, PipelineConfig(choose_by="mistakes"), names.index, train=feats["train"],
                                     head=(W, b))
        by_tails = choose_classes(val, PipelineConfig(), names.index, train=feats["train"], head=(W, b))
        assert names[by_mistakes[0]] == cfg.scenes.spurious_class, (seed, names[by_accuracy[0]])
        assert names[by_tails[0]] == cfg.scenes.spurious_class, (seed, names[by_tails[0]])
        assert names[by_accuracy[0]] != cfg.scenes.spurious_class  # what it chose before

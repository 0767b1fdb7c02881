"""Decision-layer editing (paper Sec. III-E): the pure core, the trainer, the saved model and the CLI."""
from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neuroinspect.fix.edit import (
    auto_tau,
    class_weights,
    con_regulariser,
    edit_head,
    focal_loss,
    neuron_mask,
    probability_ratio,
    ratio_regulariser,
    save_edited_model,
)
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.metrics import evaluate
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.find.importance import neuron_importance
from runfiles import load_run_files


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: one thread avoids contention on small machines (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- synthetic data
def fit_original(train: FeatureSet, steps: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    """The 'trained classifier': a softmax regression fitted to the (spuriously correlated) training set."""
    C, D = len(train.class_names), train.D
    W = torch.zeros(C, D, requires_grad=True)
    b = torch.zeros(C, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=0.05)
    for _ in range(steps):
        loss = F.cross_entropy(train.features @ W.T + b, train.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach(), b.detach()


def planted(n_per: int, p_c: float, p_other: float, seed: int, split: str, C=5, D=24, spur=7, c=2, mu_scale=0.5):
    """Class-specific Gaussian features (post-ReLU) plus a spurious neuron ``spur`` that fires (≈3) for a
    fraction ``p_c`` of class ``c`` and ``p_other`` of the other classes. Groups: (class, spurious on/off)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(C, D, generator=torch.Generator().manual_seed(123)) * mu_scale
    mu[:, spur] = 0
    labels = torch.arange(C).repeat_interleave(n_per)
    z = mu[labels] + torch.randn(len(labels), D, generator=g)
    has = torch.rand(len(labels), generator=g) < torch.where(labels == c, torch.tensor(p_c), torch.tensor(p_other))
    z[:, spur] = has.float() * (3.0 + 0.3 * torch.randn(len(labels), generator=g))
    z = torch.relu(z)
    groups = labels * 2 + has.long()
    group_names = [f"c{k}/{'spur' if s else 'plain'}" for k in range(C) for s in (0, 1)]
    return FeatureSet(z, torch.zeros(len(labels), C), labels, groups, [f"{split}{i}" for i in range(len(labels))],
                      [f"c{k}" for k in range(C)], group_names, split)


def birds(n_per: int, p_align: float, seed: int, split: str, D=16, s0=5, s1=6):
    """Waterbirds in miniature: two classes, two background neurons (s0 'land', s1 'water') aligned with the
    class in a fraction ``p_align`` of the samples (0.95 in training, 0.5 = uncorrelated at test)."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(2, D, generator=torch.Generator().manual_seed(7)) * 0.5
    labels = torch.arange(2).repeat_interleave(n_per)
    z = mu[labels] + torch.randn(len(labels), D, generator=g)
    bg = torch.where(torch.rand(len(labels), generator=g) < p_align, labels, 1 - labels)
    z[:, s0] = (bg == 0).float() * 3.0 + 0.3 * torch.randn(len(labels), generator=g)
    z[:, s1] = (bg == 1).float() * 3.0 + 0.3 * torch.randn(len(labels), generator=g)
    z = torch.relu(z)
    return FeatureSet(z, torch.zeros(len(labels), 2), labels, labels * 2 + bg, [f"{split}{i}" for i in range(len(labels))],
                      ["landbird", "waterbird"], ["landbird/land", "landbird/water", "waterbird/land", "waterbird/water"], split)


def summary(W, b, fs: FeatureSet, c: int | None = None):
    m = evaluate(fs.with_logits(W, b))
    return m.accuracy, (m.per_class[fs.class_names[c]] if c is not None else None), min(m.per_group.values())


@pytest.fixture(scope="module")
def planted_case():
    train = planted(300, 0.95, 0.03, 0, "train")
    val = planted(100, 0.3, 0.3, 1, "val")
    test = planted(200, 0.3, 0.3, 2, "test")
    torch.manual_seed(0)
    W, b = fit_original(train)
    return train, val, test, W, b


# --------------------------------------------------------------------------- hand computations
def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_probability_ratio_matches_hand_computation():
    W = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 1.0], [0.0, 0.5, 0.5]])
    b = torch.tensor([0.1, -0.2, 0.3])
    z = torch.tensor([[1.0, 2.0, 0.5], [0.0, 1.0, 3.0]])
    mask = neuron_mask(3, [1])
    assert mask.tolist() == [1.0, 0.0, 1.0]
    r = probability_ratio(W, b, z, 0, mask)
    Wn, bn = W.numpy().astype(np.float64), b.numpy().astype(np.float64)
    for i, zi in enumerate(z.numpy().astype(np.float64)):
        zm = zi.copy()
        zm[1] = 0
        expected = _softmax(Wn @ zi + bn)[0] / _softmax(Wn @ zm + bn)[0]
        assert float(r[i]) == pytest.approx(expected, rel=1e-5)
    # a single vector works too, and masking nothing gives r = 1
    assert float(probability_ratio(W, b, z[0], 0, mask)) == pytest.approx(float(r[0]), rel=1e-6)
    assert torch.allclose(probability_ratio(W, b, z, 2, torch.ones(3)), torch.ones(2))
    # the regulariser is the plain L2 norm of r − τ over the batch
    assert float(ratio_regulariser(W, b, z, 0, mask, 1.02)) == pytest.approx(float(torch.linalg.vector_norm(r - 1.02)), rel=1e-5)


def test_importance_and_auto_tau_match_hand_computation():
    torch.manual_seed(1)
    W, b, zbar = torch.randn(4, 6), torch.randn(4), torch.rand(6) * 2
    imp = neuron_importance(W, b, zbar, 3)
    assert imp.shape == (6,)
    Wn, bn, zn = W.double().numpy(), b.double().numpy(), zbar.double().numpy()
    for j in range(6):
        zj = zn.copy()
        zj[j] = 0
        assert float(imp[j]) == pytest.approx(_softmax(Wn @ zn + bn)[3] / _softmax(Wn @ zj + bn)[3], rel=1e-5)
    assert neuron_importance(W, b, zbar, 3, [4, 1]).tolist() == pytest.approx([float(imp[4]), float(imp[1])])
    # the paper's Food-101 value: min importance 1.06 -> tau 1.02
    assert auto_tau([1.3, 1.06, 1.5]) == pytest.approx(1.02)
    assert auto_tau(torch.tensor([1.0])) == pytest.approx(1.0)


def test_automatic_tau_uses_the_mean_over_the_evaluated_samples(planted_case):
    train, val, test, W, b = planted_case
    # paper §IV-C (and the authors' code): importances at the mean feature of *all* evaluated samples,
    # the validation split when there is one, else the training split; not the class-c training mean
    for evaluated, v in ((train, None), (val, val)):
        res = edit_head(W, b, train, v, {2: [7, 3]}, epochs=1, patience=1 if v is not None else None,
                        select_by="accuracy")
        imp = neuron_importance(W, b, evaluated.features.mean(0), 2)
        assert res.tau[2] == pytest.approx(1 + (min(float(imp[7]), float(imp[3])) - 1) / 3, rel=1e-6)
        assert res.importance[2] == pytest.approx([float(imp[7]), float(imp[3])], rel=1e-6)
    class_mean = neuron_importance(W, b, train.features[train.labels == 2].mean(0), 2, [7, 3])
    assert res.importance[2] != pytest.approx(class_mean.tolist(), rel=1e-3)  # the old, unfaithful rule differs here
    fixed = edit_head(W, b, train, None, {2: [7]}, tau={2: 1.5}, epochs=1, patience=None)
    assert fixed.tau == {2: 1.5}


def test_con_regulariser_focal_and_class_weights_by_hand():
    W = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 1.0]])
    z = torch.tensor([[1.0, 2.0, 4.0], [3.0, 0.0, 0.0]])
    # relu(W[0,S] * z[:,S]) with S = {0, 1}: rows [2, 0] and [6, 0] -> norms 2 and 6 -> mean 4
    assert float(con_regulariser(W, z, 0, [0, 1])) == pytest.approx(4.0)
    # Eq. 9 adds the class's bias inside the ReLU: b_0 = -1 gives rows [1, 0] and [5, 0] -> mean 3;
    # b_0 = +1 gives rows [3, -1] -> [3, 0] and [7, 1] -> mean (3 + sqrt(50)) / 2
    assert float(con_regulariser(W, z, 0, [0, 1], torch.tensor([-1.0, 9.0]))) == pytest.approx(3.0)
    assert float(con_regulariser(W, z, 0, [0, 1], torch.tensor([1.0, 9.0]))) == pytest.approx((3 + 50 ** 0.5) / 2)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    p = torch.softmax(logits, 1)[:, 0]
    assert float(focal_loss(logits, y, 2.0)) == pytest.approx(float((-(1 - p) ** 2 * p.log()).mean()), rel=1e-6)
    assert float(focal_loss(logits, y, 0.0)) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-6)
    w = class_weights(torch.tensor([0, 0, 0, 1]), 2, [1], boost=2.0)
    assert float(w[1]) / float(w[0]) == pytest.approx(6.0)  # 3x rarer, boosted 2x
    assert float(w[torch.tensor([0, 0, 0, 1])].mean()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- the planted false correlation
def test_ratio_edit_fixes_planted_spurious_neuron(planted_case):
    train, val, test, W, b = planted_case
    before_avg, before_cls, _ = summary(W, b, test, 2)
    res = edit_head(W, b, train, val, {2: [7]}, method="ratio", lam=0.01, lr=1e-2, batch_size=32, seed=0)
    after_avg, after_cls, _ = summary(res.weight, res.bias, test, 2)
    assert after_cls >= before_cls + 0.05, (before_cls, after_cls)  # class c recovers where the neuron is off
    assert after_avg >= before_avg - 0.01, (before_avg, after_avg)  # average accuracy kept
    # the edit reduced how much class c relies on neuron 7 relative to the other classes
    gap = lambda M: float(M[2, 7] - M[torch.arange(5) != 2, 7].mean())  # noqa: E731
    assert gap(res.weight) < gap(W) - 0.1
    # CON (which ignores the other classes) recovers less of class c on the same data (paper Table II)
    con = edit_head(W, b, train, val, {2: [7]}, method="con", lam=0.01, lr=1e-2, batch_size=32, seed=0)
    assert summary(con.weight, con.bias, test, 2)[1] < after_cls


def test_ratio_edit_of_two_classes_raises_worst_group():
    train, val, test = birds(500, 0.95, 0, "train"), birds(150, 0.5, 1, "val"), birds(500, 0.5, 2, "test")
    torch.manual_seed(0)
    W, b = fit_original(train)
    before_avg, _, before_wg = summary(W, b, test)
    res = edit_head(W, b, train, val, {0: [5], 1: [6]}, method="ratio", lam=0.01, lr=1e-2, batch_size=32,
                    select_by="worst-group", seed=0)
    after_avg, _, after_wg = summary(res.weight, res.bias, test)
    assert set(res.tau) == {0, 1} and all(t > 1 for t in res.tau.values())
    assert after_wg >= before_wg + 0.05, (before_wg, after_wg)
    assert after_avg >= before_avg - 0.01, (before_avg, after_avg)


def test_con_shrinks_class_weights_on_S(planted_case):
    train, val, test, W, b = planted_case
    # Eq. 9 puts b_c inside the ReLU; class 2's bias here is negative enough to switch the penalty off
    # for most samples, so this check of the shrinkage itself uses a zero bias
    b = torch.zeros_like(b)
    con = edit_head(W, b, train, None, {2: [7]}, method="con", lam=1.0, lr=1e-2, batch_size=32, epochs=8, patience=None)
    erm = edit_head(W, b, train, None, {2: [7]}, method="erm", lr=1e-2, batch_size=32, epochs=8, patience=None)
    assert float(W[2, 7]) > 0.8
    assert float(con.weight[2, 7]) < 0.5 * float(W[2, 7])
    assert float(con.weight[2, 7]) < float(erm.weight[2, 7]) - 0.3
    assert con.curves[-1]["regulariser"] < con.curves[0]["regulariser"]


@pytest.mark.parametrize("method", ["class-weight", "focal", "erm"])
def test_baselines_train_and_differ(planted_case, method):
    train, val, test, W, b = planted_case
    res = edit_head(W, b, train, None, {2: []}, method=method, lr=1e-2, batch_size=64, epochs=3, patience=None)
    assert res.epochs_run == 3 and res.best_epoch == 3
    assert not torch.equal(res.weight, W)
    assert all(row["regulariser"] == 0 for row in res.curves)


def test_class_weight_boost_raises_edited_class_recall(planted_case):
    train, val, test, W, b = planted_case
    kw = dict(lr=1e-2, batch_size=32, epochs=5, patience=None)
    erm = edit_head(W, b, train, None, {2: []}, method="erm", **kw)
    boosted = edit_head(W, b, train, None, {2: []}, method="class-weight", class_boost=5.0, **kw)
    pred = lambda r: test.with_logits(r.weight, r.bias).predictions  # noqa: E731
    assert int((pred(boosted) == 2).sum()) > int((pred(erm) == 2).sum())


# --------------------------------------------------------------------------- training loop
def test_head_epoch_visits_each_sample_once_in_the_generators_order():
    """The loop every head trainer shares: the batches cover a shuffle drawn from the given generator (or the stored
    order without one), then zero_grad, backward, step and the scheduler step per batch; the global RNG is not read."""
    from neuroinspect.core.model.head_training import head_epoch

    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    seen, drawn = [], []

    def batch_loss(idx):
        seen.append(idx.clone())
        return (w ** 2).sum() + w.sum()

    torch.manual_seed(123)
    before = torch.get_rng_state()
    loss_sum, n = head_epoch(opt, batch_loss, 10, 4, generator=torch.Generator().manual_seed(7), scheduler=sched,
                             after_shuffle=lambda g: drawn.append(torch.rand(1, generator=g)))
    assert torch.equal(torch.get_rng_state(), before)
    assert [len(i) for i in seen] == [4, 4, 2] and n == 10
    assert torch.equal(torch.cat(seen), torch.randperm(10, generator=torch.Generator().manual_seed(7)))
    g = torch.Generator().manual_seed(7)
    torch.randperm(10, generator=g)
    assert torch.equal(drawn[0], torch.rand(1, generator=g))  # drawn after the shuffle, from the same generator
    # SGD from w = 0, the loss of each batch before its step: 0, then 3·(0.1² − 0.1), then 3·(0.18² − 0.18)
    assert sched.last_epoch == 3 and loss_sum == pytest.approx(4 * 0.0 + 4 * -0.27 + 2 * -0.4428)
    seen.clear()
    head_epoch(opt, batch_loss, 5)  # no generator, no batch size: one batch in the stored order
    assert len(seen) == 1 and torch.equal(seen[0], torch.arange(5))


def test_early_stopping_keeps_best_epoch(planted_case):
    train, val, test, W, b = planted_case
    res = edit_head(W, b, train, val, {2: [7]}, method="ratio", lam=0.01, lr=3e-2, batch_size=32, epochs=40, patience=2,
                    select_by="accuracy")
    metrics = [row["val_metric"] for row in res.curves]
    best = max(metrics)
    # among the epochs reaching the best value, the one with the lowest validation loss (a strict ">" on a
    # coarse metric would keep the first of them)
    tied = [row for row in res.curves if row["val_metric"] == best]
    assert res.best_epoch == min(tied, key=lambda row: row["val_loss"])["epoch"]
    assert res.best_val_metric == pytest.approx(best)
    assert res.stopped_early and res.epochs_run == res.best_epoch + 2 < 40
    # the returned head is the best epoch's, not the last one's
    val_acc = float((val.with_logits(res.weight, res.bias).predictions == val.labels).float().mean())
    assert val_acc == pytest.approx(best)
    last, kept = res.curves[-1], res.curves[res.best_epoch - 1]
    assert (last["val_metric"], -last["val_loss"]) < (kept["val_metric"], -kept["val_loss"])  # it stopped after worse epochs


def test_select_by_class_and_seed_reproducible(planted_case):
    train, val, test, W, b = planted_case
    kw = dict(method="ratio", lr=1e-2, batch_size=64, epochs=4, patience=3, select_by="class", seed=3)
    a, bb = edit_head(W, b, train, val, {2: [7]}, **kw), edit_head(W, b, train, val, {2: [7]}, **kw)
    assert torch.equal(a.weight, bb.weight) and a.curves == bb.curves
    vlog = val.with_logits(a.weight, a.bias)
    cls_acc = float((vlog.predictions[val.labels == 2] == 2).float().mean())
    assert cls_acc == pytest.approx(a.best_val_metric)


def test_augmented_views_are_used(planted_case):
    train, val, test, W, b = planted_case
    shifted = FeatureSet(train.features + 1.0, train.logits, train.labels, train.groups, train.ids, train.class_names,
                         train.group_names, "train")
    kw = dict(lr=1e-2, batch_size=64, epochs=2, patience=None, seed=0)
    plain = edit_head(W, b, train, None, {2: [7]}, **kw)
    aug = edit_head(W, b, train, None, {2: [7]}, augmented_views=[shifted], **kw)
    assert not torch.allclose(plain.weight, aug.weight)
    wrong = train.subset(torch.arange(10))
    with pytest.raises(NeuroInspectError, match="augmented view 0"):
        edit_head(W, b, train, None, {2: [7]}, augmented_views=[wrong], **kw)


@pytest.mark.parametrize(
    "targets, kwargs, message",
    [
        ({2: [7, 99]}, {}, r"neurons \[99\] are out of range: .*D=24"),
        ({2: [-1]}, {}, "out of range"),
        ({2: []}, {}, r"S is empty"),
        ({7: [1]}, {}, "class index 7 is out of range"),
        ({}, {}, "no class to edit"),
        ({2: [7, 7]}, {}, "listed twice"),
        ({2: [7]}, {"method": "lasso"}, "unknown edit method"),
        ({2: [7]}, {"select_by": "worst"}, "unknown --select-by"),
        ({2: [7]}, {"val": None}, "early stopping needs a validation split.*'val'"),
        ({2: [7]}, {"select_by": "worst-group", "val": "nogroups"}, "needs group labels"),
        ({2: [7]}, {"tau": -1.0}, "tau must be"),
    ],
)
def test_bad_input_gives_one_clear_error(planted_case, targets, kwargs, message):
    train, val, test, W, b = planted_case
    kwargs = dict(kwargs)
    v = kwargs.pop("val", val)
    if v == "nogroups":
        v = FeatureSet(val.features, val.logits, val.labels, torch.full_like(val.groups, -1), val.ids, val.class_names)
    with pytest.raises(NeuroInspectError, match=message) as err:
        edit_head(W, b, train, v, targets, epochs=1, **kwargs)
    assert "\n" not in str(err.value)


def test_class_without_training_samples_is_refused(planted_case):
    train, val, test, W, b = planted_case
    no_c2 = train.subset(train.labels != 2)
    with pytest.raises(NeuroInspectError, match="class 'c2' has no training samples"):
        edit_head(W, b, no_c2, val, {2: [7]})


# --------------------------------------------------------------------------- saved model and CLI
TINY_NET = '''
import torch
from torch import nn
from neuroinspect.core.model.models import Preprocess


class TinyNet(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def make(num_classes=3):
    net = TinyNet(num_classes)
    net.neuroinspect_preprocess = Preprocess(32, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return net
'''


@pytest.fixture(scope="module")
def image_project(tmp_path_factory):
    """A tiny model module, its weights file (with non-trivial BatchNorm statistics) and a 3-class image folder."""
    from PIL import Image
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("editproj")
    (root / "tinynet_edit_test.py").write_text(textwrap.dedent(TINY_NET))
    import sys

    sys.path.insert(0, str(root))
    import tinynet_edit_test

    torch.manual_seed(0)
    net = tinynet_edit_test.make(3)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.num_batches_tracked.fill_(7)
    weights = root / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    rng = np.random.default_rng(0)
    colours = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
    for split, n in (("train", 10), ("val", 5), ("test", 6)):
        for cname, rgb in colours.items():
            folder = root / "data" / split / cname
            folder.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(rgb) + rng.normal(0, 60, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    # the same images without a val split
    import shutil

    shutil.copytree(root / "data" / "train", root / "noval" / "train")
    shutil.copytree(root / "data" / "test", root / "noval" / "test")
    shutil.copytree(root / "data" / "val", root / "unsplit")  # ROOT/CLASS/*: one split, 'all'
    yield root, weights
    sys.path.remove(str(root))


def _base_args(root, weights, data="data"):
    return ["--model", "tinynet_edit_test:make", "--weights", str(weights), "--num-classes", "3",
            "--data", str(root / data), "--cache-dir", str(root / "cache"), "--no-progress"]


def test_save_edited_model_reloads_with_new_head_and_same_backbone(image_project, tmp_path):
    from neuroinspect.core.model.models import build_model, read_state_dict
    from neuroinspect.core.model.probe import Probe

    root, weights = image_project
    loaded = build_model("tinynet_edit_test:make", weights=weights, num_classes=3)
    probe = Probe(loaded.model, input_size=32)
    W2, b2 = torch.randn(3, 16), torch.randn(3)
    path = save_edited_model(loaded.model, probe.head_name, W2, b2, tmp_path / "m.safetensors")
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no leftovers
    again = build_model("tinynet_edit_test:make", weights=path, num_classes=3)
    state, orig = again.model.state_dict(), read_state_dict(weights)
    assert torch.equal(state["fc.weight"], W2) and torch.equal(state["fc.bias"], b2)
    for k, v in orig.items():
        if not k.startswith("fc."):
            assert torch.equal(state[k], v), k
    with pytest.raises(NeuroInspectError, match=".safetensors"):
        save_edited_model(loaded.model, probe.head_name, W2, b2, tmp_path / "m.pt")


def test_cli_edit_end_to_end_reload_reproduces_metrics(image_project, tmp_path):
    from neuroinspect.cli import main
    from neuroinspect.core.model.models import read_state_dict
    from neuroinspect.session import Inspector

    root, weights = image_project
    out = tmp_path / "edit"
    rc = main(["edit", *_base_args(root, weights), "--class", "green", "--neurons", "3,5", "--epochs", "4",
               "--patience", "2", "--lr", "0.05", "--lam", "0.1", "--method", "ratio", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["method"] == "ratio" and report["classes"] == ["green"] and report["neurons"] == {"green": [3, 5]}
    assert set(report["tau"]) == {"green"} and report["split"] == "test"
    assert 1 <= report["best_epoch"] <= report["epochs_run"] <= 4
    assert [row["epoch"] for row in report["curves"]] == list(range(1, report["epochs_run"] + 1))
    assert report["before"]["n"] == report["after"]["n"] == 18
    assert set(load_run_files(out)) == {"edit.json", "run.json"}  # both load as typed records
    # the backbone (parameters and BatchNorm buffers) is bit-identical; only the head changed
    edited, orig = read_state_dict(out / report["model_file"]), read_state_dict(weights)
    assert set(edited) == set(orig)
    for k in orig:
        if not k.startswith("fc."):
            assert torch.equal(edited[k], orig[k]), k
    assert not torch.equal(edited["fc.weight"], orig["fc.weight"])
    # reloading the saved model through the same options reproduces the reported test metrics
    ins = Inspector("tinynet_edit_test:make", str(root / "data"), weights=out / report["model_file"], num_classes=3,
                    cache_dir=tmp_path / "cache2", progress=False)
    again = evaluate(ins.features("test"))
    assert again.accuracy == pytest.approx(report["after"]["accuracy"])
    assert again.per_class == pytest.approx(report["after"]["per_class"])


def test_cli_compare_writes_table(image_project, tmp_path, capsys):
    from neuroinspect.cli import main

    root, weights = image_project
    out = tmp_path / "cmp"
    rc = main(["compare", *_base_args(root, weights), "--class", "red", "--neurons", "1,2", "--epochs", "2",
               "--patience", "1", "--methods", "ratio,con,class-weight,focal,erm", "--seeds", "0,1", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in data["rows"]] == ["original", "ratio", "con", "class-weight", "focal", "erm"]
    assert data["seeds"] == [0, 1] and all(r["n_seeds"] == 2 for r in data["rows"][1:])
    assert all(len(r["avg_acc_runs"]) == 2 and r["avg_acc_std"] >= 0 for r in data["rows"][1:])
    assert data["classes"] == ["red"] and data["split"] == "test"
    assert set(load_run_files(out)) == {"compare.json", "run.json"}  # both load as typed records
    for r in data["rows"]:
        assert 0 <= r["avg_acc"] <= 1 and 0 <= r["class_acc"] <= 1 and r["worst_group_acc"] is None
    md = (out / "compare.md").read_text()
    assert "| method | group labels | fit on | avg acc | class acc | worst-class acc | worst-group acc |" in md
    assert "| focal | no |" in md
    assert "| original |" in capsys.readouterr().out


def test_cli_errors_leave_no_model_file(image_project, tmp_path, capsys):
    from neuroinspect.cli import main

    root, weights = image_project
    out = tmp_path / "bad"
    rc = main(["edit", *_base_args(root, weights), "--class", "red", "--neurons", "3,16", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "neurons [16] are out of range" in err and err.count("\n") == 1
    rc = main(["edit", *_base_args(root, weights, data="noval"), "--class", "red", "--neurons", "3", "--method", "ratio",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "needs a 'val' split" in err and "--patience 0" in err
    rc = main(["edit", *_base_args(root, weights, data="noval"), "--class", "red", "--neurons", "3", "--method", "rebalance",
               "--out", str(out)])
    err = capsys.readouterr().err
    error = [ln for ln in err.splitlines() if ln.startswith("neuroinspect edit: error:")]
    assert rc == 2 and len(error) == 1 and "needs a validation split" in error[0] and "--fit-on train" in error[0]
    assert "Traceback" not in err
    rc = main(["edit", *_base_args(root, weights), "--class", "purple", "--neurons", "3", "--out", str(out)])
    assert rc == 2 and "unknown class 'purple'" in capsys.readouterr().err
    rc = main(["edit", *_base_args(root, weights), "--class", "red", "--method", "rebalance", "--out", str(out)])
    assert rc == 2 and "no neurons chosen" in capsys.readouterr().err
    assert not (out / "edited.safetensors").exists()
    # without a val split, --patience 0 trains all epochs; without a test split, metrics fall back to val
    rc = main(["edit", *_base_args(root, weights, data="noval"), "--class", "red", "--neurons", "3", "--epochs", "2",
               "--patience", "0", "--method", "ratio", "--out", str(out)])
    assert rc == 0 and json.loads((out / "edit.json").read_text())["epochs_run"] == 2


def test_cli_neurons_from_ranking(image_project, tmp_path):
    from neuroinspect.cli import main
    from neuroinspect.core.base.io import write_json

    root, weights = image_project
    ranking = tmp_path / "ranking.json"
    write_json(ranking, {"class": "blue", "class_index": 2, "split": "val", "n_mistakes": 3, "n_flipped": 3,
                         "insufficient": [{"neuron": n, "ratio": 50.0, "importance": 1.1, "weight": 0.2} for n in (4, 9, 1, 0)],
                         "excessive": [{"neuron": n, "ratio": 40.0, "importance": 0.9, "weight": -0.1} for n in (9, 12)]})
    out = tmp_path / "rk"
    rc = main(["edit", *_base_args(root, weights), "--ranking", str(ranking), "--top-k", "2", "--epochs", "1",
               "--patience", "0", "--method", "ratio", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "edit.json").read_text())
    assert report["neurons"] == {"blue": [4, 9, 12]}
    assert math.isfinite(report["tau"]["blue"])


def test_edit_and_the_pipeline_check_the_splits_alike(image_project, tmp_path, capsys):
    """One rule for both (fix.compare.fix_splits): data with only 'all' serves every role, with a note that the
    metrics are optimistic; without 'val' the pipeline, which explains on it, refuses in one line naming the split
    and the option, while edit/compare, for which val is optional, train without it."""
    from neuroinspect import Inspector
    from neuroinspect.cli import main
    from neuroinspect.fix.compare import UNSPLIT_NOTE
    from neuroinspect.pipeline import Pipeline, PipelineConfig

    root, weights = image_project
    out = tmp_path / "all"
    rc = main(["edit", *_base_args(root, weights, data="unsplit"), "--class", "red", "--neurons", "3", "--epochs", "1",
               "--method", "ratio", "--out", str(out)])
    assert rc == 0 and UNSPLIT_NOTE in json.loads((out / "edit.json").read_text())["notes"]
    capsys.readouterr()
    spec = dict(model="tinynet_edit_test:make", weights=weights, num_classes=3, cache_dir=root / "cache")
    run = Pipeline(Inspector(data=str(root / "unsplit"), **spec), tmp_path / "run", PipelineConfig(), progress=False)
    feats = run._splits()
    assert {fs.split for fs in feats.values()} == {"all"} and run._split_notes == [UNSPLIT_NOTE]
    run = Pipeline(Inspector(data=str(root / "noval"), **spec), tmp_path / "run2", PipelineConfig(), progress=False)
    with pytest.raises(NeuroInspectError) as err:
        run._splits()
    assert "no 'val' split" in str(err.value) and "--explain-split" in str(err.value) and "\n" not in str(err.value)
    rc = main(["edit", *_base_args(root, weights, data="noval"), "--class", "red", "--neurons", "3", "--epochs", "1",
               "--patience", "0", "--method", "ratio", "--out", str(tmp_path / "noval")])
    assert rc == 0

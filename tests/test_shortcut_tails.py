"""``debug``'s default class rule, ``--choose-by tails`` (``neuroinspect.find.shortcut``, ``pipeline.by_tails``)."""
from __future__ import annotations

import math

import pytest
import torch

from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.find.shortcut import MIN_IMAGES, class_quantile_skews, shortcut_tails
from neuroinspect.pipeline import by_tails, choose_classes
from neuroinspect.pipeline_config import PipelineConfig

C, D, CUE, SHORTCUT, LOOKALIKE = 4, 20, 10, 1, 3
NAMES = ["apple", "coat", "shoe", "bag"]


def crafted(seed: int, n_per: int = 300, val: bool = False):
    """Features and a head that learned a shared artefact for ``coat``: the cue sits on 90 % of coats and 10 % of
    every other class, and the head's coat weights read it. ``bag`` has a mere look-alike: 10 % of apples carry
    bag's own evidence, in one class only."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(n_per)
    z = torch.randn(len(labels), D, generator=g)
    z[torch.arange(len(labels)), labels] += 2.0  # each class's own evidence on neuron = its index
    cue = torch.rand(len(labels), generator=g) < torch.where(labels == SHORTCUT, 0.9, 0.1)
    z[:, CUE] += 4.0 * cue
    lookalike = (labels == 0) & (torch.rand(len(labels), generator=g) < 0.1)
    z[lookalike, LOOKALIKE] += 4.0
    W = torch.zeros(C, D)
    W[torch.arange(C), torch.arange(C)] = 1.0
    W[SHORTCUT, CUE] = 2.0  # the head learned the cue for coat, and leans on it
    fs = FeatureSet(z, z @ W.T, labels, labels * 2 + cue.long(), [f"{'val' if val else 'train'}/{i}" for i in range(len(labels))],
                    list(NAMES), [f"{c}/{k}" for c in NAMES for k in ("plain", "cue")], "val" if val else "train")
    return fs, W


def test_class_quantile_skews_match_torch_quantile_per_class():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(500, generator=g) ** 3
    y = torch.randint(0, 6, (500,), generator=g)
    y[y == 4] = 5  # class 4 has no image
    s[y == 2] = 1.5  # class 2 is constant: its quantiles meet
    got = class_quantile_skews(s, y, 6)
    for k in range(6):
        v = s[y == k].double()
        if k == 4:
            assert math.isnan(got[k])
        elif k == 2:
            assert got[k] == 0
        else:
            lo, mid, hi = torch.quantile(v, torch.tensor([0.05, 0.5, 0.95], dtype=torch.double)).tolist()
            assert got[k] == pytest.approx((hi + lo - 2 * mid) / (hi - lo), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_a_tail_shared_by_every_other_class_outscores_a_one_class_lookalike(seed):
    train, W = crafted(seed)
    tails = shortcut_tails(W, train)
    assert max(tails, key=tails.get) == SHORTCUT, tails
    assert tails[SHORTCUT] >= max(v for c, v in tails.items() if c != SHORTCUT) + 0.1, tails
    assert tails[SHORTCUT] > tails[LOOKALIKE] + 0.1  # bag's tail sits in one class (apple) only


def test_tails_reads_no_group_labels_and_ignores_the_scale_of_each_neuron():
    train, W = crafted(0)
    scale = torch.linspace(0.5, 3.0, D)
    rescaled = FeatureSet(train.features * scale, train.logits, train.labels, torch.zeros_like(train.groups),
                          train.ids, train.class_names, ["all"], "train")
    a, b = shortcut_tails(W, train), shortcut_tails(W / scale, rescaled)  # the same head on rescaled features
    assert a.keys() == b.keys() and all(a[c] == pytest.approx(b[c], abs=1e-4) for c in a)


def test_a_class_with_too_few_images_is_not_read_and_nan_is_refused():
    train, W = crafted(0, n_per=MIN_IMAGES - 1)
    assert all(math.isnan(v) for v in shortcut_tails(W, train).values())
    bad = FeatureSet(train.features.clone(), train.logits, train.labels, train.groups, train.ids,
                     train.class_names, train.group_names, "train")
    bad.features[3, 2] = float("nan")
    with pytest.raises(Exception, match="NaN"):
        shortcut_tails(W, bad)


def test_debug_chooses_by_tails_by_default():
    train, W = crafted(1)
    val, _ = crafted(101, n_per=60, val=True)
    b = torch.zeros(C)
    val = val.with_logits(W, b)
    assert PipelineConfig().choose_by == "tails"
    predicted = val.logits.argmax(1)
    assert not ((val.labels == SHORTCUT) & (predicted != SHORTCUT)).any()  # coat errs nowhere on val: it takes images
    taken = val.labels[(predicted == SHORTCUT) & (val.labels != SHORTCUT)].bincount(minlength=C)
    why: list[str] = []
    chosen = choose_classes(val, PipelineConfig(), NAMES.index, train=train, head=(W, b), why=why)
    assert chosen == [int(taken.argmax())] and taken.max() > taken.sort().values[-2]  # the class coat takes most from
    assert len(why) == 1 and why[0].startswith(f"'{NAMES[chosen[0]]}' was debugged for 'coat': ") and "on 'val'" in why[0]
    why.clear()
    choose_classes(val, PipelineConfig(choose_by="accuracy"), NAMES.index, why=why)
    assert len(why) == 1 and "the least accurate class on 'val'" in why[0]
    two = choose_classes(val, PipelineConfig(worst_classes=2), NAMES.index, train=train, head=(W, b))
    assert two[0] == chosen[0] and len(two) == 2
    # explaining the training split: the out-of-fold mistakes of a plain refit are read (coat has some), not the head's
    assert choose_classes(train.with_logits(W, b), PipelineConfig(), NAMES.index, train=train, head=(W, b)) == [SHORTCUT]


def test_a_tail_class_without_mistakes_of_its_own_stands_for_the_class_it_takes_images_from():
    """A red patch turns apples into berries: the tails point at berry (1), which has no mistake; apple (0), whose
    images berry takes, is debugged. A tail class that neither errs nor takes images is skipped; the least accurate
    classes fill what is left."""
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 4 + [3] * 4)
    predicted = labels.clone()
    predicted[:3] = 1  # three apples called berries
    predicted[3] = 2  # one apple called a cloud
    predicted[14] = 2  # one shoe (3) called a cloud
    tails = {0: 0.0, 1: 0.5, 2: 0.4, 3: float("nan")}
    by_accuracy = [0, 3, 1, 2]
    assert by_tails(tails, labels, predicted, by_accuracy, 1) == [(0, 1)]  # berry stands for apple
    # cloud takes an apple and a shoe (a tie: the less accurate, apple); shoe has no tail score: it fills in
    assert by_tails(tails, labels, predicted, by_accuracy, 2) == [(0, 1), (3, None)]
    assert by_tails({**tails, 1: -0.5}, labels, predicted, by_accuracy, 1) == [(0, 2)]  # cloud first: apple
    predicted[4] = 2
    assert by_tails({0: 0.0, 1: -1.0, 2: 0.3, 3: 0.2}, labels, predicted, by_accuracy, 2) == [(0, 2), (3, 3)]
    nothing = torch.tensor([0, 1, 2, 3])
    assert by_tails(tails, nothing, nothing, by_accuracy, 2) == [(0, None), (3, None)]  # no mistake at all: by accuracy

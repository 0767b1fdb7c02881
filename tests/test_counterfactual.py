import math

import pytest
import torch

from neuroinspect.find.counterfactual import counterfactual_edits, rank_neurons
from reference import counterfactual_edits_loop
from neuroinspect.core.errors import NeuroInspectError
from neuroinspect.find.importance import neuron_importance


def _problem(M=30, D=48, C=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(C, D, generator=g) * 0.3
    b = torch.randn(C, generator=g) * 0.1
    Z = torch.randn(M, D, generator=g).relu() * 2
    return W, b, Z


def test_batched_solver_matches_one_at_a_time_loop():
    W, b, Z = _problem()
    target = 3
    fast = counterfactual_edits(W, b, Z, target, max_steps=400)
    ref = counterfactual_edits_loop(W, b, Z, target, max_steps=400)
    assert torch.equal(fast.flipped, ref.flipped)
    assert torch.equal(fast.steps, ref.steps)
    torch.testing.assert_close(fast.delta, ref.delta, atol=1e-5, rtol=1e-4)


def test_stops_at_the_first_flip():
    W, b, Z = _problem(seed=1)
    target = 5
    cf = counterfactual_edits(W, b, Z, target, max_steps=1000)
    assert cf.flipped.all()
    edited = (Z + cf.delta) @ W.T + b
    assert (edited.argmax(1) == target).all()
    # one step less would not have flipped: replay each row with steps - 1
    capped = counterfactual_edits(W, b, Z, target, max_steps=int(cf.steps.max()) - 1)
    slowest = cf.steps == cf.steps.max()
    assert not capped.flipped[slowest].any()
    # rows that were already the target at step 0 take zero steps and keep δ = 0
    already = (Z @ W.T + b).argmax(1) == target
    assert (cf.steps[already] == 0).all() and (cf.delta[already] == 0).all()


def test_step_cap_reports_rows_that_never_flip():
    W, b, Z = _problem(seed=2)
    cf = counterfactual_edits(W, b, Z, 7, max_steps=3)
    assert (cf.steps <= 3).all()
    assert not cf.flipped.all()  # three tiny SGD steps cannot flip every row
    assert ((Z + cf.delta) @ W.T + b).argmax(1)[~cf.flipped].ne(7).all()


def test_edit_signs_follow_the_head():
    # two neurons: neuron 0 votes for the target, neuron 1 for the wrong class
    W = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    b = torch.zeros(2)
    Z = torch.tensor([[0.2, 1.0], [0.1, 0.8]])
    cf = counterfactual_edits(W, b, Z, 0)
    assert cf.flipped.all()
    assert (cf.delta[:, 0] > 0).all() and (cf.delta[:, 1] < 0).all()
    insufficient, excessive = rank_neurons(cf.delta, k=1)
    assert [s.neuron for s in insufficient] == [0]
    assert [s.neuron for s in excessive] == [1]


def test_ranking_counts_topk_ratio_and_filters():
    delta = torch.zeros(4, 6)
    delta[:, 2] = 1.0  # every row: neuron 2 most insufficient
    delta[0, 4] = 0.5  # one row of four: 25 %
    delta[:, 3] = -torch.tensor([1.0, 2.0, 3.0, 4.0])  # excessive everywhere
    ins, exc = rank_neurons(delta, k=2, min_ratio=30)
    assert [(s.neuron, s.ratio) for s in ins] == [(2, 100.0)]  # 25 % < 30 % filtered out
    assert [(s.neuron, s.ratio) for s in exc] == [(3, 100.0)]
    ins, _ = rank_neurons(delta, k=2, min_ratio=3)
    assert [(s.neuron, s.ratio) for s in ins] == [(2, 100.0), (4, 25.0)]
    assert rank_neurons(torch.zeros(0, 6)) == ([], [])


def test_importance_matches_hand_computation():
    W, b, Z = _problem(M=10, D=6, C=4)
    z = Z.mean(0)
    imp = neuron_importance(W, b, z, 2)
    for j in range(6):
        z0 = z.clone()
        z0[j] = 0
        expected = (W @ z + b).softmax(0)[2] / (W @ z0 + b).softmax(0)[2]
        assert math.isclose(float(imp[j]), float(expected), rel_tol=1e-5)


def test_nan_features_are_named():
    W, b, Z = _problem(M=4)
    Z[2, 0] = float("nan")
    with pytest.raises(NeuroInspectError, match=r"mistakes \[2\]"):
        counterfactual_edits(W, b, Z, 0)

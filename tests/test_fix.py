"""Stage 3 beyond the paper's edit: activation-aware rankings, neuron-guided rebalancing, DFR/JTT/ablate,
the search on val and the multi-seed comparison, on a planted shortcut whose cue neuron is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import shortcut
from neuroinspect.find.counterfactual import counterfactual_edits
from reference import counterfactual_edits_loop
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.metrics import evaluate
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.find.importance import neuron_log_odds
from neuroinspect.find.ranking import explain_class
from neuroinspect.fix.compare import FixConfig, compare_methods, fix_head, fix_record, format_table, kept_original_note
from neuroinspect.fix.edit import REFERENCE_BATCH, edit_head
from neuroinspect.fix.refit import Spuriosity, balanced_weights, fit_logistic, split_halves


def _worst(fs: FeatureSet) -> float:
    return min(evaluate(fs).per_group.values())


@pytest.fixture(scope="module")
def case():
    S = shortcut.splits(0)
    W, b = shortcut.erm_head(S["train"])
    return {k: v.with_logits(W, b) for k, v in S.items()}, W, b


# --------------------------------------------------------------------------- finding the cue
def test_gap_ranking_puts_the_cue_neuron_first(case):
    F, W, b = case
    ex = explain_class(W, b, F["val"], shortcut.SPURIOUS, progress=False)  # default ranking: gap
    assert ex.settings["ranking"] == "gap"
    assert ex.insufficient[0].neuron == shortcut.CUE
    assert ex.insufficient[0].ratio > 50  # in the top-5 of most mistakes
    assert shortcut.CUE not in [s.neuron for s in ex.excessive]


def test_multiplicative_counterfactual_matches_the_loop_and_spares_silent_neurons():
    g = torch.Generator().manual_seed(3)
    W, b = torch.randn(6, 20, generator=g) * 0.4, torch.randn(6, generator=g) * 0.1
    Z = torch.randn(25, 20, generator=g).relu() * 2
    Z[:, 4] = 0.0  # a neuron silent in every mistake
    fast = counterfactual_edits(W, b, Z, 2, max_steps=300, mode="multiplicative")
    ref = counterfactual_edits_loop(W, b, Z, 2, max_steps=300, mode="multiplicative")
    assert torch.equal(fast.flipped, ref.flipped) and torch.equal(fast.steps, ref.steps)
    torch.testing.assert_close(fast.delta, ref.delta, atol=1e-5, rtol=1e-4)
    assert fast.flipped.float().mean() > 0.5
    assert (fast.delta[:, 4] == 0).all()  # nothing there, nothing to blame
    assert (counterfactual_edits(W, b, Z, 2, max_steps=300).delta[:, 4] != 0).any()  # the additive edit does
    edited = Z * (1 + fast.delta)
    assert ((edited @ W.T + b).argmax(1)[fast.flipped] == 2).all()
    with pytest.raises(NeuroInspectError, match="unknown counterfactual mode"):
        counterfactual_edits(W, b, Z, 2, mode="sideways")


def test_log_odds_do_not_saturate_where_importance_does():
    W = torch.tensor([[30.0, 1.0], [0.0, 0.0]])
    b = torch.zeros(2)
    z = torch.tensor([1.0, 2.0])  # p(0 | z) ≈ 1: dropping neuron 1 leaves it ≈ 1
    from neuroinspect.find.importance import neuron_importance

    imp = neuron_importance(W, b, z, 0)
    lo = neuron_log_odds(W, b, z, 0)
    assert float(imp[1]) == pytest.approx(1.0, abs=1e-6)
    assert float(lo[1]) == pytest.approx(2.0, rel=1e-4)  # the logit margin it carries: w_01 · z_1
    assert float(lo[0]) == pytest.approx(30.0, rel=1e-4)


# --------------------------------------------------------------------------- the fit and its parts
def test_weighted_fit_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    F = shortcut.splits(1)["val"]
    w = balanced_weights(F.groups)
    l2 = 0.05
    W, b = fit_logistic(F.features, F.labels, shortcut.C, w, l2=l2, max_iter=500)
    z = F.features.double().numpy()
    wn = (w / w.sum()).double().numpy()
    mu = (wn[:, None] * z).sum(0)
    sd = np.sqrt((wn[:, None] * (z - mu) ** 2).sum(0)).clip(1e-6)
    # sklearn minimises 1/2 ||W||² + C Σ_i s_i CE_i; ours l2/2 ||W||² + Σ_i (w_i / Σw) CE_i
    ref = LogisticRegression(C=1 / l2, tol=1e-10, max_iter=5000).fit((z - mu) / sd, F.labels.numpy(), sample_weight=wn)
    ours = torch.softmax(F.features.float() @ W.T + b, 1).numpy()
    np.testing.assert_allclose(ours, ref.predict_proba((z - mu) / sd), atol=2e-3)


def test_pseudo_groups_follow_the_cue_without_group_labels(case):
    F, W, b = case
    spur = Spuriosity.fit(F["train"], {shortcut.SPURIOUS: [shortcut.CUE]})
    keys = spur.pseudo_groups(F["test"], spur.thresholds(F["train"]))
    minority = keys % 2 == 1
    has_cue = F["test"].groups % 2 == 1
    coat = F["test"].labels == shortcut.SPURIOUS
    # the minority of class SPURIOUS is "no cue"; of the other classes "cue": both found without group labels
    assert (minority[coat] == ~has_cue[coat]).float().mean() > 0.9
    assert (minority[~coat] == has_cue[~coat]).float().mean() > 0.9


def test_split_halves_is_stratified_disjoint_and_seeded():
    labels = torch.tensor([0] * 10 + [1] * 7)
    a, b = split_halves(labels, 0)
    assert len(set(a.tolist()) & set(b.tolist())) == 0 and len(a) + len(b) == 17
    assert int((labels[a] == 0).sum()) == 5 and int((labels[a] == 1).sum()) == 4
    assert torch.equal(split_halves(labels, 0)[0], a) and not torch.equal(split_halves(labels, 1)[0], a)


def _without_groups(fs: FeatureSet) -> FeatureSet:
    return FeatureSet(fs.features, fs.logits, fs.labels, torch.full_like(fs.groups, -1), fs.ids, fs.class_names, [], fs.split)


# --------------------------------------------------------------------------- the pipeline fixes the shortcut
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_explain_then_rebalance_with_defaults_raises_worst_group_by_40_points(seed):
    S = shortcut.splits(seed)
    W, b = shortcut.erm_head(S["train"], seed=seed)
    F = {k: v.with_logits(W, b) for k, v in S.items()}
    before = _worst(F["test"])
    ex = explain_class(W, b, F["val"], shortcut.SPURIOUS, progress=False)
    res = fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [s.neuron for s in ex.insufficient[:1]]},
                   method="rebalance", seed=seed)
    assert res.method == "rebalance" and not res.uses_group_labels
    after = res.apply(F["test"])
    assert _worst(after) >= before + 0.40, (before, _worst(after))
    assert evaluate(after).accuracy >= evaluate(F["test"]).accuracy - 0.01


def test_the_default_fix_reads_no_group_labels(case):
    F, W, b = case

    targets = {shortcut.SPURIOUS: [shortcut.CUE]}
    with_groups = fix_head(W, b, F["train"], F["val"], targets)
    without = fix_head(W, b, _without_groups(F["train"]), _without_groups(F["val"]), targets)
    assert torch.equal(with_groups.weight, without.weight) and torch.equal(with_groups.bias, without.bias)
    assert with_groups.method == "regroup" and with_groups.chosen == without.chosen
    assert with_groups.search == without.search and len(with_groups.search) > 1  # the same search, candidate by candidate


def test_dfr_jtt_ablate_and_what_they_read(case):
    F, W, b = case
    targets = {shortcut.SPURIOUS: [shortcut.CUE]}
    dfr = fix_head(W, b, F["train"], F["val"], targets, method="dfr")
    assert dfr.uses_group_labels and _worst(dfr.apply(F["test"])) > _worst(F["test"]) + 0.3
    no_groups = FeatureSet(F["val"].features, F["val"].logits, F["val"].labels, torch.full_like(F["val"].groups, -1),
                           F["val"].ids, F["val"].class_names, [], "val")
    with pytest.raises(NeuroInspectError, match="dfr needs group labels"):
        fix_head(W, b, F["train"], no_groups, targets, method="dfr")
    jtt = fix_head(W, b, F["train"], F["val"], targets, method="jtt")
    assert not jtt.uses_group_labels and jtt.chosen["n_errors"] > 0 and len(jtt.search) == 12
    ab = fix_head(W, b, F["train"], F["val"], targets, method="ablate")
    assert float(ab.weight[shortcut.SPURIOUS, shortcut.CUE]) == 0.0
    changed = (ab.weight != W).nonzero().tolist()
    assert changed == [[shortcut.SPURIOUS, shortcut.CUE]]


def test_neuron_methods_need_neurons_and_settings_are_checked(case):
    F, W, b = case
    for method in ("rebalance", "ratio", "ablate"):
        with pytest.raises(NeuroInspectError, match="needs neurons"):
            fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: []}, method=method)
    with pytest.raises(NeuroInspectError, match="out of range"):
        fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [99]})
    for bad in (dict(lr=-1.0), dict(lam=float("nan")), dict(quantile=1.5), dict(l2=0.0), dict(method="magic")):
        with pytest.raises(NeuroInspectError):
            FixConfig(**bad).validate()


def test_gradient_methods_search_lr_and_lambda_on_val(case):
    F, W, b = case
    res = fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [shortcut.CUE]}, method="ratio", epochs=3)
    assert [(r["lr"], r["lam"]) for r in res.search] == [(lr, lam) for lr in (1e-3, 1e-2) for lam in (0.01, 0.1, 1.0)]
    best = max(res.search, key=lambda r: r["metric"])
    assert res.best_val_metric == pytest.approx(best["metric"]) and res.select_by == "pseudo-group"
    fixed = fix_head(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [shortcut.CUE]}, method="ratio", epochs=3,
                     lr=1e-2, lam=0.1)
    assert fixed.search == [] and fixed.chosen == {"lr": 1e-2, "lam": 0.1}


def test_ratio_penalty_is_calibrated_to_the_authors_batch_of_32(case):
    F, W, b = case
    targets = {shortcut.SPURIOUS: [shortcut.CUE]}
    # one epoch, one batch of the whole split: the logged regulariser is the plain norm times sqrt(32 / B)
    res = edit_head(W, b, F["train"], None, targets, method="ratio", lam=0.0, epochs=1, patience=None, lr=1e-9,
                    batch_size=len(F["train"]))
    from neuroinspect.fix.edit import neuron_mask, ratio_regulariser, resolve_tau

    tau = resolve_tau(W, b, F["train"], targets, None)[0][shortcut.SPURIOUS]
    plain = float(ratio_regulariser(W, b, F["train"].features, shortcut.SPURIOUS, neuron_mask(shortcut.D, [shortcut.CUE]), tau))
    assert res.curves[0]["regulariser"] == pytest.approx(plain * (REFERENCE_BATCH / len(F["train"])) ** 0.5, rel=1e-4)


def test_compare_over_seeds_reports_mean_and_spread(case):
    F, W, b = case
    rows, per_seed = compare_methods(W, b, F, {shortcut.SPURIOUS: [shortcut.CUE]},
                                     ["rebalance", "erm", "dfr"], seeds=(0, 1), config=FixConfig(epochs=2))
    by = {r.method: r for r in rows}
    assert list(by) == ["original", "rebalance", "erm", "dfr"] and len(per_seed) == 2
    r = by["rebalance"]
    runs = r.worst_group_acc_runs
    assert len(runs) == 2 and r.worst_group_acc == pytest.approx(np.mean(runs))
    assert r.worst_group_acc_std == pytest.approx(np.std(runs))
    assert by["dfr"].uses_group_labels and not by["rebalance"].uses_group_labels
    assert by["rebalance"].worst_group_acc > by["erm"].worst_group_acc + 0.3
    table = format_table(rows)
    assert "| dfr | **yes** |" in table and " ± " in table


def test_excessive_neurons_enter_the_score_with_their_sign(case):
    """A ranking.json gives a class both lists: a neuron that fires for *another* class (excessive) counts
    against the class's cue, so mixing the lists does not cancel the signal."""
    F, W, b = case
    z, y = F["train"].features, F["train"].labels
    other = int((z[y == 0].mean(0) - z[y == shortcut.SPURIOUS].mean(0)).argmax())  # fires for class 0, not for coats
    both = Spuriosity.fit(F["train"], {shortcut.SPURIOUS: [shortcut.CUE, other]})
    assert both.signs[shortcut.SPURIOUS].tolist() == [1.0, -1.0]
    alone = Spuriosity.fit(F["train"], {shortcut.SPURIOUS: [shortcut.CUE]})
    coat = F["test"].labels == shortcut.SPURIOUS
    has_cue = (F["test"].groups % 2 == 1)[coat].float()
    corr = lambda s: float(torch.corrcoef(torch.stack([s.score(F["test"])[coat], has_cue]))[0, 1])  # noqa: E731
    assert corr(both) > 0.5 and corr(alone) > 0.8


def test_gap_ranking_falls_back_to_the_papers_when_the_class_has_no_correct_sample(case):
    F, W, b = case
    c = shortcut.SPURIOUS
    only_mistakes = F["val"].subset((F["val"].labels != c) | (F["val"].predictions != c))
    ex = explain_class(W, b, only_mistakes, c, progress=False)
    assert ex.settings["ranking"] == "additive" and "no" in ex.settings["ranking_note"]
    assert ex.insufficient  # still ranks something, and says how
    assert "ranked by the additive blame" in ex.table() and "note:" in ex.table()


# --------------------------------------------------------------------------- regroup, the default fix
@pytest.mark.slow
def test_regroup_on_the_planted_shortcut_raises_worst_group_on_average():
    """Balanced val; the neurons from explain. Feature-space shortcut with weak object evidence: the gain
    varies by seed (measured per seed: +0 to +38 points), so the mean over six seeds is checked."""
    before, after = [], []
    for seed in range(6):
        S = shortcut.splits(seed)
        S["train"] = shortcut.features(150, 0.95, 0.05, seed, "train")  # a few minority images, as real data has
        W, b = shortcut.erm_head(S["train"], seed=seed)
        ex = explain_class(W, b, S["val"].with_logits(W, b), shortcut.SPURIOUS, progress=False)
        res = fix_head(W, b, S["train"], S["val"], {shortcut.SPURIOUS: [s.neuron for s in ex.insufficient[:1]]}, seed=seed)
        assert res.method == "regroup" and not res.uses_group_labels
        before.append(_worst(S["test"].with_logits(W, b)))
        after.append(_worst(res.apply(S["test"])))
    assert sum(after) / 6 >= sum(before) / 6 + 0.10, (before, after)


def test_the_heads_own_score_sorts_the_planted_cue_better_than_the_mistakes_do():
    """regroup's third grouping: the head being debugged leans on the cue, so its score for the class puts the
    cue's images on the minority side, whatever their class. Measured on six seeds: precision 0.70-0.88 for
    the head's grouping against 0.31-0.67 for the mistakes' one (the minority is about 1 image in 7)."""
    from neuroinspect.fix.regroup import Pooled, candidate_directions, minority_of

    precision = {"head": [], "mistakes": []}
    for seed in range(6):
        train, val = shortcut.features(150, 0.95, 0.05, seed, "train"), shortcut.splits(seed)["val"]
        W, _ = shortcut.erm_head(train, seed=seed)
        pool = Pooled.of(train, val, seed)
        labels, groups = torch.cat([train.labels, val.labels]), torch.cat([train.groups, val.groups])
        truth = (groups % 2 == 1) != (labels == shortcut.SPURIOUS)  # the cue on another class, or no cue on 'coat'
        for name, d in candidate_directions(pool, shortcut.SPURIOUS, [], W).items():
            found = minority_of(pool, shortcut.SPURIOUS, d)
            precision[name].append(float(truth[found].float().mean()))
    assert min(precision["head"]) >= 0.65, precision
    assert sum(precision["head"]) / 6 >= sum(precision["mistakes"]) / 6 + 0.2, precision


def test_regroup_keeps_the_original_head_unless_the_gain_is_clear(monkeypatch):
    """The planted shortcut, which regroup fixes at its defaults: asked for a gain no refit can reach (and with
    the balanced val's waiver switched off), it keeps the original head bit for bit and says by how much it fell
    short, in one line."""
    import neuroinspect.fix.regroup as rg

    S = shortcut.splits(0)
    W, b = shortcut.erm_head(S["train"])
    fixed = fix_head(W, b, S["train"], S["val"], {shortcut.SPURIOUS: []})
    assert not fixed.chosen["kept_original"] and fixed.chosen["held_out_worst"] >= fixed.chosen["no_change_worst"] + 0.1
    monkeypatch.setattr(rg, "MIN_GAIN", 1.01)
    monkeypatch.setattr(rg, "ENRICHED_P", 0.0)  # no p-value is below 0: the margin always applies
    res = fix_head(W, b, S["train"], S["val"], {shortcut.SPURIOUS: []})
    assert res.chosen["kept_original"] and torch.equal(res.weight, W) and torch.equal(res.bias, b)
    note = kept_original_note(res)
    assert "by the 101 points a change needs" in note and "\n" not in note


def test_val_enrichment_is_the_hypergeometric_tail():
    """val's share of a minority against train's: exact on a hand count (of all images, or of some rows),
    small when val is richer, 1 when it holds none, None without val."""
    from math import comb

    from neuroinspect.fix.regroup import Pooled, val_enrichment

    def tail(k, K, n, N):  # P(at least k of the K minority images among n drawn from N), counted by hand
        return sum(comb(K, i) * comb(N - K, n - i) for i in range(k, min(K, n) + 1)) / comb(N, n)

    train, val = shortcut.features(20, 0.95, 0.05, 0, "train"), shortcut.features(5, 0.5, 0.5, 1, "val")
    pool = Pooled.of(train, val, 0)
    N, n = len(pool.y), int(pool.is_val.sum())
    minority = torch.zeros(N, dtype=torch.bool)
    minority[pool.is_val.nonzero().flatten()[:6]] = True  # 6 of the val images
    minority[(~pool.is_val).nonzero().flatten()[:4]] = True  # and 4 training ones
    exact = tail(6, 10, n, N)
    assert val_enrichment(pool, minority) == pytest.approx(exact, rel=1e-9) and exact < 0.01
    assert val_enrichment(pool, minority & ~pool.is_val) == pytest.approx(1.0)  # none in val: no evidence at all
    rows = pool.y != 0  # one class left out of the count
    exact = tail(int((minority & pool.is_val & rows).sum()), int((minority & rows).sum()),
                 int((pool.is_val & rows).sum()), int(rows.sum()))
    assert val_enrichment(pool, minority, rows) == pytest.approx(exact, rel=1e-9)
    assert val_enrichment(Pooled.of(train, None, 0), minority[~pool.is_val]) is None


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regroup_waives_the_margin_only_for_a_val_richer_in_the_minority(monkeypatch, seed):
    """Step 5 on one grouping, the cue neuron's (the others are set aside), with the margin out of reach: a
    balanced val, richer in the cue's minority than the biased training split, still gets the refit that beats
    no change held out, and it raises the test worst group by a wide margin (measured +26 to +52 points over 8
    seeds); a val drawn like train keeps the original head."""
    import neuroinspect.fix.regroup as rg

    monkeypatch.setattr(rg, "MIN_GAIN", 1.01)
    every = rg.candidate_directions
    monkeypatch.setattr(rg, "candidate_directions", lambda *a: {k: v for k, v in every(*a).items() if k == "neurons"})
    train = shortcut.features(150, 0.95, 0.05, seed, "train")
    W, b = shortcut.erm_head(train)
    test = shortcut.features(150, 0.5, 0.5, seed + 200, "test")
    targets = {shortcut.SPURIOUS: [shortcut.CUE]}
    balanced = fix_head(W, b, train, shortcut.features(60, 0.5, 0.5, seed + 100, "val"), targets, seed=seed)
    c = balanced.chosen
    assert not c["kept_original"] and c["val_enrichment_p"] < rg.ENRICHED_P and c["min_gain"] == 0.0
    assert 0 < c["held_out_worst"] - c["no_change_worst"] < 1.01
    assert _worst(balanced.apply(test)) >= _worst(test.with_logits(W, b)) + 0.15
    like_train = fix_head(W, b, train, shortcut.features(60, 0.95, 0.05, seed + 100, "val"), targets, seed=seed)
    assert like_train.chosen["kept_original"] and like_train.chosen["val_enrichment_p"] >= rg.ENRICHED_P
    assert torch.equal(like_train.weight, W)


@pytest.mark.slow
def test_regroup_keeps_the_grouping_that_sorts_the_cue_over_one_that_sorts_nothing(monkeypatch):
    """A grouping by a random direction (given as the ranked neurons') never displaces the mistakes' grouping,
    which fixes the planted cue (measured per seed: +0 to +38 points on test, +21 on average over 6 seeds)."""
    import neuroinspect.fix.regroup as rg

    every, gains = rg.candidate_directions, []
    for seed in (0, 1, 2):
        train = shortcut.features(150, 0.95, 0.05, seed, "train")
        val, test = shortcut.features(60, 0.5, 0.5, seed + 100, "val"), shortcut.features(150, 0.5, 0.5, seed + 200, "test")
        W, b = shortcut.erm_head(train)
        noise = torch.randn(train.features.shape[1], generator=torch.Generator().manual_seed(seed))
        monkeypatch.setattr(rg, "candidate_directions", lambda *a: {**every(*a), "neurons": noise})
        res = fix_head(W, b, train, val, {shortcut.SPURIOUS: [0]}, seed=seed)
        assert res.chosen["groups_from"] == {"coat": "mistakes"} and not res.chosen["kept_original"], res.chosen
        gains.append(_worst(res.apply(test)) - _worst(test.with_logits(W, b)))
    assert sum(gains) / 3 >= 0.08, gains


@pytest.mark.slow
def test_regroup_keeps_the_grouping_that_gains_most(monkeypatch):
    """Two groupings both gain the margin held out: the cue neuron's and the mistakes' (which holds noise besides
    the cue). The one that gains more is kept, whichever is listed first, and it is the better fix on test
    (measured on these seeds: 81-85 % against 43-67 %, held-out gains 28-40 points against 19-27)."""
    import neuroinspect.fix.regroup as rg
    from neuroinspect.fix.refit import worst_of

    for seed in (0, 1, 2):
        train = shortcut.features(150, 0.95, 0.05, seed, "train")
        val, test = shortcut.features(60, 0.5, 0.5, seed + 100, "val"), shortcut.features(150, 0.5, 0.5, seed + 200, "test")
        W, b = shortcut.erm_head(train)
        pool = rg.Pooled.of(train, val, seed)
        cue = torch.zeros(pool.x.shape[1]).index_fill_(0, torch.tensor([shortcut.CUE]), 1.0)
        found = {"cue": cue, "mistakes": rg.shortcut_direction(pool, shortcut.SPURIOUS)}
        unchanged, held_out, on_test = rg.unchanged_predictions(pool, W, b), {}, {}
        for name, d in found.items():  # each grouping alone, as regroup weighs it
            keys = 2 * pool.y + rg.minority_of(pool, shortcut.SPURIOUS, d).long()
            held_out[name] = rg.choose_refit(pool, keys, seed)[0][1] - worst_of(unchanged, pool.y, keys)
            monkeypatch.setattr(rg, "candidate_directions", lambda *a, d=d: {"mistakes": d})
            on_test[name] = _worst(fix_head(W, b, train, val, {shortcut.SPURIOUS: []}, seed=seed).apply(test))
        assert min(held_out.values()) >= rg.MIN_GAIN and held_out["cue"] > held_out["mistakes"], held_out
        assert on_test["cue"] >= on_test["mistakes"] + 0.1, on_test
        for listed in (["cue", "mistakes"], ["mistakes", "cue"]):
            names = dict(zip(listed, ("mistakes", "neurons")))  # the cue first under one name, then the other
            monkeypatch.setattr(rg, "candidate_directions", lambda *a: {names[k]: found[k] for k in listed})
            res = fix_head(W, b, train, val, {shortcut.SPURIOUS: []}, seed=seed)
            assert res.chosen["groups_from"] == {"coat": names["cue"]}, (seed, listed, res.chosen)
            assert _worst(res.apply(test)) == pytest.approx(on_test["cue"])


def test_the_margin_is_waived_only_where_val_is_richer():
    from neuroinspect.fix.regroup import ENRICHED_P, MIN_GAIN, clears

    assert clears(MIN_GAIN, None) and clears(0.6 - 0.5, 0.5)  # exactly the margin, even after rounding
    assert not clears(MIN_GAIN - 0.01, None) and not clears(MIN_GAIN - 0.01, ENRICHED_P)
    assert clears(0.01, ENRICHED_P / 2) and not clears(0.0, ENRICHED_P / 2) and not clears(-0.05, 1e-9)


def test_regroup_keeps_the_original_head_when_nothing_sets_the_class_apart():
    """Classes far apart: no held-out mistake, no neuron given: no change, said in one line and in edit.json."""
    train = shortcut.features(60, 0.95, 0.05, 0, "train", strength=4.0)
    W, b = shortcut.erm_head(train)
    res = fix_head(W, b, train, None, {shortcut.SPURIOUS: []})
    assert res.chosen["kept_original"] and torch.equal(res.weight, W) and torch.equal(res.bias, b)
    note = kept_original_note(res)
    assert note.startswith("kept the original head") and "\n" not in note
    m = evaluate(train.with_logits(W, b))
    assert fix_record(res, train.class_names, m, m, "x.safetensors").kept_original


def test_regroup_reads_no_group_labels(case):
    F, W, b = case

    targets = {shortcut.SPURIOUS: [shortcut.CUE]}
    with_groups = fix_head(W, b, F["train"], F["val"], targets)
    without = fix_head(W, b, _without_groups(F["train"]), _without_groups(F["val"]), targets)
    assert torch.equal(with_groups.weight, without.weight) and with_groups.chosen == without.chosen


@pytest.mark.slow
def test_pooled_refit_learns_from_a_balanced_val_and_reads_no_groups():
    """The naive reference beside regroup: train and val pooled, classes balanced. With the planted shortcut's
    balanced val in the pool the worst group rises on every seed (measured +37 to +58 points on six seeds);
    without val it refits train alone and says so; group labels change nothing."""
    for seed in range(3):
        S = shortcut.splits(seed)
        W, b = shortcut.erm_head(S["train"], seed=seed)
        res = fix_head(W, b, S["train"], S["val"], {shortcut.SPURIOUS: []}, method="pooled-refit", seed=seed)
        assert res.fit_on == "train+val (class-balanced)" and not res.uses_group_labels
        assert _worst(res.apply(S["test"])) >= _worst(S["test"].with_logits(W, b)) + 0.3, seed
        blind = fix_head(W, b, _without_groups(S["train"]), _without_groups(S["val"]), {shortcut.SPURIOUS: []},
                         method="pooled-refit", seed=seed)
        assert torch.equal(blind.weight, res.weight) and torch.equal(blind.bias, res.bias)
    alone = fix_head(W, b, S["train"], None, {shortcut.SPURIOUS: []}, method="pooled-refit", seed=seed)
    assert alone.fit_on == "train (class-balanced)" and not torch.equal(alone.weight, res.weight)


def test_the_pool_is_built_once_for_choosing_and_fixing(case, monkeypatch):
    """``debug`` scores the classes and then fixes one on the same pool: the cross-fit runs once, and any other
    tensors (or a tensor changed in place) get a pool of their own."""
    from neuroinspect.fix import regroup as R

    F, W, b = case
    built = []
    of = R.Pooled.of.__func__

    def counting(cls, *args):
        built.append(args)
        return of(cls, *args)

    monkeypatch.setattr(R.Pooled, "of", classmethod(counting))
    monkeypatch.setattr(R, "_LAST_POOL", [])
    R.shortcut_scores(W, b, F["train"], F["val"])
    first = R.regroup(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [shortcut.CUE]})
    assert len(built) == 1
    R.regroup(W, b, F["train"], F["val"], {shortcut.SPURIOUS: [shortcut.CUE]}, seed=1)  # another seed
    assert len(built) == 2
    copy = F["train"].subset(torch.arange(len(F["train"])))  # equal values, other tensors
    again = R.regroup(W, b, copy, F["val"], {shortcut.SPURIOUS: [shortcut.CUE]})
    assert len(built) == 3 and torch.equal(again.weight, first.weight)

"""Stage 1 as one call: a class's mistakes → per-mistake neuron blame → ranked neurons.

Three ways to blame neuron j for mistake i (each gives a signed ``[M, D]`` matrix; positive:
*insufficient*, negative: *excessive*), all ranked the same way (top-k per mistake, then the
percentage of mistakes, paper §III-A):

``additive``        the paper's counterfactual edit ``z + δ`` (Eq. 1). It follows the weight
                    differences between classes: a neuron can be blamed although the mistaken
                    image does not contain what it detects.
``multiplicative``  the same counterfactual for ``z ⊙ (1 + δ)``: only what is present can be blamed.
``gap``             the contribution gap (ours): ``g_ij = (W[c,j] − W[p_i,j]) · (μ_j − z_ij)`` with
                    ``μ`` the mean feature of class c's correctly classified samples and ``p_i`` the
                    predicted class; the margin c lost because neuron j moved from its typical
                    value. A neuron that dropped (``z_ij < μ_j``) is insufficient, one that rose is
                    excessive; neurons that moved in c's favour get no blame.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from neuroinspect.core.base.config import configured
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.html import esc, file_thumbnails, table
from neuroinspect.core.base.io import write_csv
from neuroinspect.core.base.records import ExplanationRecord, NeuronRank, top_ranked
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.core.runtime.progress import progress_bar
from neuroinspect.find.config import DEFAULT_RANKING, RANKINGS, ExplainConfig  # noqa: F401 (re-exported)
from neuroinspect.find.counterfactual import Counterfactuals, NeuronScore, counterfactual_edits, rank_neurons
from neuroinspect.find.importance import neuron_importance, neuron_log_odds


@dataclass
class Explanation:
    """The ranked neurons behind class ``class_name``'s mistakes on ``split``."""

    class_name: str
    class_index: int
    split: str
    mistakes: FeatureSet
    counterfactuals: Counterfactuals
    insufficient: list[NeuronScore]
    excessive: list[NeuronScore]
    settings: dict = field(default_factory=dict)
    blame: torch.Tensor | None = None  # [M, D]: each mistake's signed blame of each neuron, by the ranking used

    @property
    def n_mistakes(self) -> int:
        return len(self.mistakes)

    def top_neurons(self, k: int, k_excessive: int | None = None) -> list[int]:
        """The top ``k`` insufficient then the top ``k_excessive`` (default ``k``) excessive neurons, without repeats."""
        return top_ranked(self.insufficient, self.excessive, k, k_excessive)

    def record(self) -> ExplanationRecord:
        """What ``ranking.json`` holds: the ranking without the features (:mod:`neuroinspect.core.base.records`)."""
        return ExplanationRecord(
            class_name=self.class_name,
            class_index=self.class_index,
            split=self.split,
            n_mistakes=self.n_mistakes,
            n_flipped=self.counterfactuals.n_flipped,
            never_flipped=[self.mistakes.ids[i] for i in (~self.counterfactuals.flipped).nonzero().flatten().tolist()],
            settings=dict(self.settings),
            insufficient=[NeuronRank(**s.to_dict()) for s in self.insufficient],
            excessive=[NeuronRank(**s.to_dict()) for s in self.excessive],
        )

    def to_json(self) -> dict:
        """``ranking.json`` as a dict (``self.record().to_dict()``)."""
        return self.record().to_dict()

    def table(self, limit: int = 15) -> str:
        """A readable text table of the ranking."""
        lines = [
            f"class {self.class_name!r} (#{self.class_index}) on split '{self.split}': {self.n_mistakes} mistakes, "
            f"{self.counterfactuals.n_flipped} flipped by the counterfactual edit; neurons ranked by the "
            f"{self.settings.get('ranking', 'additive')} blame"
        ]
        if self.settings.get("ranking_note"):
            lines.append(f"note: {self.settings['ranking_note']}")
        for title, rows, hint in (("insufficient", self.insufficient, "should fire more for this class"),
                                  ("excessive", self.excessive, "fire for the wrong class")):
            lines.append(f"\n{title} neurons ({hint}):")
            if not rows:
                lines.append("  (none above the ratio threshold)")
                continue
            lines.append(f"  {'rank':>4} {'neuron':>7} {'ratio %':>8} {'mean blame':>10} {'importance':>11} {'log-odds':>9} {'weight':>8}")
            for r, s in enumerate(rows[:limit], 1):
                lines.append(f"  {r:>4} {s.neuron:>7} {s.ratio:>8.1f} {s.mean_edit:>10.3f} {s.importance:>11.4f} "
                             f"{s.log_odds:>9.3f} {s.weight:>8.3f}")
            if len(rows) > limit:
                lines.append(f"  … {len(rows) - limit} more in ranking.json")
        return "\n".join(lines)

    def top(self, n: int = 3, kind: str = "insufficient") -> list[int]:
        """The top ``n`` neurons: ``insufficient`` (the default: what a fix edits), ``excessive``, or ``both``
        (the top ``n`` of each, without repeats)."""
        if kind == "both":
            return self.record().top_neurons(n)
        if kind not in ("insufficient", "excessive"):
            raise NeuroInspectError(f"unknown kind '{kind}'; choose insufficient, excessive or both")
        return [s.neuron for s in getattr(self, kind)[:n]]

    def __repr__(self) -> str:
        def few(rows):
            return ", ".join(f"{s.neuron} ({s.ratio:.0f}%)" for s in rows[:5]) + (" …" if len(rows) > 5 else "") or "none"

        return (f"Explanation of {self.class_name!r} on '{self.split}': {self.n_mistakes} mistakes, "
                f"{self.settings.get('ranking', 'additive')} ranking; insufficient: {few(self.insufficient)}; "
                f"excessive: {few(self.excessive)}")

    def _repr_html_(self, limit: int = 10) -> str:
        head = (f"<p><b>{esc(self.class_name)}</b> (#{self.class_index}) on split '{esc(self.split)}': "
                f"{self.n_mistakes} mistakes, {self.counterfactuals.n_flipped} flipped by the counterfactual edit; "
                f"neurons ranked by the {esc(self.settings.get('ranking', 'additive'))} blame</p>")
        if self.settings.get("ranking_note"):
            head += f"<p>note: {esc(self.settings['ranking_note'])}</p>"
        parts = [head]
        for title, rows in (("insufficient (should fire more for this class)", self.insufficient),
                            ("excessive (fire for the wrong class)", self.excessive)):
            parts.append(table(["rank", "neuron", "ratio %", "mean blame", "importance", "log-odds", "weight"],
                               [[r, s.neuron, f"{s.ratio:.1f}", f"{s.mean_edit:.3f}", f"{s.importance:.4f}",
                                 f"{s.log_odds:.3f}", f"{s.weight:.3f}"] for r, s in enumerate(rows[:limit], 1)],
                               caption=f"{title}: {len(rows)} neurons"))
        thumbs = file_thumbnails(self.mistakes.ids)
        if thumbs:
            parts.append(f"<p>mistakes:</p><div>{thumbs}</div>")
        return "".join(parts)

    def save(self, out_dir: str | Path) -> None:
        """``ranking.json`` and ``mistakes.csv`` in ``out_dir``."""
        out = Path(out_dir)
        self.record().write(out / ExplanationRecord.FILE)
        names = self.mistakes.class_names
        pred = self.mistakes.predictions.tolist()
        rows = [[i, names[self.class_index], names[p] if p < len(names) else p] for i, p in zip(self.mistakes.ids, pred)]
        write_csv(out / "mistakes.csv", ["id", "true", "predicted"], rows)




def reference_features(W: torch.Tensor, b: torch.Tensor, fs: FeatureSet, c: int) -> torch.Tensor:
    """``μ``: the mean feature of class ``c``'s correctly classified samples in ``fs`` (all of c's if none;
    :func:`explain_class` falls back to the additive ranking then)."""
    z = fs.features.float()
    pred = (z @ W.detach().float().T.cpu() + b.detach().float().cpu()).argmax(1)
    own = fs.labels == c
    right = own & (pred == c)
    pick = right if right.any() else own
    if not pick.any():
        raise NeuroInspectError(f"split '{fs.split}' has no sample of class {c}; the gap ranking needs some")
    return z[pick].mean(0)


def contribution_gap(W: torch.Tensor, Z: torch.Tensor, predicted: torch.Tensor, c: int, mu: torch.Tensor) -> torch.Tensor:
    """The signed blame ``sign(μ_j − z_ij) · ReLU((W[c,j] − W[p_i,j]) · (μ_j − z_ij))`` for each mistake [M, D]."""
    W = W.detach().float().cpu()
    drop = mu.float().unsqueeze(0) - Z.float()  # [M, D]
    margin_w = W[c].unsqueeze(0) - W[predicted]  # [M, D]
    return drop.sign() * torch.relu(margin_w * drop)


CF_BLOCK_ROWS = 64  # mistakes solved together, at least (see solve_in_blocks)
CF_MAX_BLOCKS = 16  # blocks, at most: larger blocks beyond 64 x 16 mistakes


def cf_blocks(m: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` blocks of ``m`` mistakes that are solved together: they depend on ``m`` only."""
    size = max(CF_BLOCK_ROWS, -(-m // CF_MAX_BLOCKS))
    return [(s, min(s + size, m)) for s in range(0, m, size)]


def solve_in_blocks(W: torch.Tensor, b: torch.Tensor, Z: torch.Tensor, c: int, *, device: str | torch.device = "cpu",
                    mode: str = "additive", label: str | None = None, progress: bool = True, **solve) -> Counterfactuals:
    """The counterfactual edits of every row of ``Z``, solved block by block (:func:`cf_blocks`).

    The solver treats rows independently, but a matrix product's last bits depend on how many
    rows it holds; solving fixed blocks makes every number the same however the blocks are
    spread over processes. Under torchrun each rank solves a contiguous run of blocks and the
    results are gathered in the original row order on every rank. ``label``: the name under
    which this rank's share is recorded for run.json.
    """
    blocks = cf_blocks(len(Z))
    if not blocks:
        return counterfactual_edits(W.to(device), b.to(device), Z.to(device), c, mode=mode, **solve)
    first, stop = distributed.shard_bounds(len(blocks))
    mine = blocks[first:stop]
    if label is not None:  # this rank's rows [start, stop): empty (at the end) when there are fewer blocks than ranks
        at = blocks[first][0] if first < len(blocks) else len(Z)
        distributed.record("mistakes", label, [at, mine[-1][1] if mine else at])
    bar = progress_bar(sum(e - s for s, e in mine), "counterfactuals", "mistake", enabled=progress)
    done = []
    for s, e in mine:
        done.append(counterfactual_edits(W.to(device), b.to(device), Z[s:e].to(device), c, mode=mode, **solve))
        bar.update(e - s)
    bar.close()
    done = [cf for theirs in distributed.all_gather(done) for cf in theirs]
    return Counterfactuals(torch.cat([cf.delta for cf in done]), torch.cat([cf.flipped for cf in done]),
                           torch.cat([cf.steps for cf in done]))


@dataclass
class _Blaming:
    """What a ranking reads to blame each neuron for each mistake of class ``c`` on ``fs``."""

    W: torch.Tensor
    b: torch.Tensor
    fs: FeatureSet
    c: int
    predictions: torch.Tensor  # [N] the head's predictions on fs
    cf: Counterfactuals  # the paper's additive counterfactuals of the mistakes
    solve: dict  # the solver's settings (and device)
    settings: dict  # the explanation's settings: a ranking that falls back says so here


def _additive(r: _Blaming) -> torch.Tensor:
    """The paper's ranking: the additive counterfactual edit of each mistake."""
    return r.cf.delta


def _multiplicative(r: _Blaming) -> torch.Tensor:
    """The multiplicative counterfactual edit of each mistake."""
    wrong = (r.fs.labels == r.c) & (r.predictions != r.c)
    return solve_in_blocks(r.W, r.b, r.fs.features[wrong], r.c, mode="multiplicative", **r.solve).delta


def gap_blame(W: torch.Tensor, b: torch.Tensor, fs: FeatureSet, c: int, predictions: torch.Tensor) -> torch.Tensor | None:
    """The contribution gap of each of ``c``'s mistakes on ``fs`` ([M, D]) against its correctly classified
    images; None when there are none (the gap is then undefined)."""
    if not ((fs.labels == c) & (predictions == c)).any():
        return None
    wrong = (fs.labels == c) & (predictions != c)
    return contribution_gap(W, fs.features[wrong], predictions[wrong], c, reference_features(W, b, fs, c))


def _gap(r: _Blaming) -> torch.Tensor:
    """The contribution gap against the class's correct images; the additive edit when it has none (said so)."""
    blame = gap_blame(r.W, r.b, r.fs, r.c, r.predictions)
    if blame is None:  # no correct sample of c to compare with: fall back to the paper's ranking
        r.settings["ranking"] = "additive"
        r.settings["ranking_note"] = (f"'gap' needs correctly classified samples of the class in split '{r.fs.split}' "
                                      "and there are none; ranked by the paper's additive counterfactual instead")
        return r.cf.delta
    return blame


#: How each ranking of :data:`~neuroinspect.find.config.RANKINGS` blames a neuron for a mistake ([M, D], signed).
BLAME: dict[str, Callable[[_Blaming], torch.Tensor]] = {"gap": _gap, "additive": _additive,
                                                        "multiplicative": _multiplicative}


def explain_class(
    W: torch.Tensor,
    b: torch.Tensor,
    fs: FeatureSet,
    c: int,
    config: ExplainConfig | None = None,
    *,
    policy: DevicePolicy | str | torch.device | None = None,
    **overrides,
) -> Explanation:
    """Rank the neurons behind class ``c``'s mistakes among the samples of ``fs``.

    ``config`` (an :class:`ExplainConfig`, or its fields as keyword ``overrides``): ``ranking`` says
    how a mistake blames a neuron (module docstring); ``"additive"`` is the paper's. The
    counterfactual edit (Eq. 1) is always solved: it says which mistakes can be flipped.
    ``only_flipped`` ranks over the mistakes whose edit flipped the decision (the default ranks over
    all of them, as the paper does). ``policy`` (or a device; default cpu): where the edits are solved.
    """
    cfg = configured(ExplainConfig, config, overrides)
    device = DevicePolicy.of(policy).device
    k, min_ratio, lambda1, lambda2, lr, momentum, max_steps, only_flipped, ranking, progress = (
        cfg.k, cfg.min_ratio, cfg.lambda1, cfg.lambda2, cfg.lr, cfg.momentum, cfg.max_steps, cfg.only_flipped,
        cfg.ranking, cfg.progress)
    if ranking not in RANKINGS:
        raise NeuroInspectError(f"unknown ranking '{ranking}'; choose one of {', '.join(RANKINGS)}")
    predictions = (fs.features @ W.detach().float().T.cpu() + b.detach().float().cpu()).argmax(1)
    mistake_mask = (fs.labels == c) & (predictions != c)
    mistakes = fs.subset(mistake_mask)
    settings = dict(k=k, min_ratio=min_ratio, lambda1=lambda1, lambda2=lambda2, lr=lr, momentum=momentum,
                    max_steps=max_steps, only_flipped=only_flipped, ranking=ranking)
    solve = dict(lambda1=lambda1, lambda2=lambda2, lr=lr, momentum=momentum, max_steps=max_steps, progress=progress,
                 device=device)
    name = fs.class_names[c] if c < len(fs.class_names) else str(c)
    cf = solve_in_blocks(W, b, mistakes.features, c, label=name, **solve)
    blame = BLAME[ranking](_Blaming(W, b, fs, c, predictions, cf, solve, settings))
    delta = blame[cf.flipped] if only_flipped else blame
    insufficient, excessive = rank_neurons(delta, k=k, min_ratio=min_ratio)
    nan = torch.full((W.shape[1],), float("nan"))
    imp = neuron_importance(W.cpu(), b.cpu(), fs.features.mean(0), c) if len(fs) else nan
    lo = neuron_log_odds(W.cpu(), b.cpu(), fs.features.mean(0), c) if len(fs) else nan
    for s in insufficient + excessive:
        s.importance = float(imp[s.neuron])
        s.log_odds = float(lo[s.neuron])
        s.weight = float(W[c, s.neuron].detach())
    return Explanation(name, c, fs.split, mistakes, cf, insufficient, excessive, settings, blame)

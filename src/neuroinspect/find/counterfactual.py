"""Neuron-based counterfactual explanations (paper Sec. III-C, paper Eq. 1).

For each mistake ``i`` of class ``c`` find ``δ_i`` (from 0) minimising

    CE(W (z_i + δ_i) + b, c) + λ1 ||δ_i||_1 / D + λ2 ||δ_i||_2 / D

with SGD (lr 0.01, momentum 0.9), stopping for that sample as soon as the decision flips to
``c``. All mistakes are solved together as one ``[M, D]`` tensor; a row is frozen once it
flips, and the solver stops after ``max_steps``. ``δ_ij > 0``: neuron j was *insufficient*
for c; ``δ_ij < 0``: it was *excessive*.

``mode="multiplicative"`` (ours, beside the paper's additive edit) solves the same problem for
the edited features ``z_i ⊙ (1 + δ_i)``: a neuron can only be blamed in proportion to what it
actually carries in the mistaken image, so a neuron that is silent there (common with ReLU
networks) gets no edit at all. The additive edit instead follows the weight differences between
classes, whatever the image contains.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from neuroinspect.core.errors import NeuroInspectError
from neuroinspect.core.progress import progress_bar


CF_MODES = ("additive", "multiplicative")


@dataclass
class Counterfactuals:
    delta: torch.Tensor  # [M, D] the edits
    flipped: torch.Tensor  # [M] bool: the edit made the decision c
    steps: torch.Tensor  # [M] SGD steps taken before the flip (or the cap)

    @property
    def n_flipped(self) -> int:
        return int(self.flipped.sum())


def _check(W: torch.Tensor, b: torch.Tensor, Z: torch.Tensor) -> None:
    if Z.dim() != 2 or Z.shape[1] != W.shape[1]:
        raise NeuroInspectError(f"features have shape {tuple(Z.shape)} but the decision layer expects D={W.shape[1]}")
    if not torch.isfinite(Z).all():
        rows = (~torch.isfinite(Z).all(1)).nonzero().flatten().tolist()
        raise NeuroInspectError(f"features of mistakes {rows[:5]} are NaN/inf; re-extract them")


def counterfactual_edits(
    W: torch.Tensor,
    b: torch.Tensor,
    Z: torch.Tensor,
    target: int,
    *,
    lambda1: float = 0.1,
    lambda2: float = 0.01,
    lr: float = 0.01,
    momentum: float = 0.9,
    max_steps: int = 1000,
    mode: str = "additive",
    progress: bool = False,
) -> Counterfactuals:
    """Solve Eq. 1 for all rows of ``Z`` at once (see the module docstring).

    Uses the loss's closed-form gradient (``softmax − onehot`` through ``W``, ``sign`` for L1,
    ``δ/||δ||`` for L2), so each step costs two matrix products on the still-active rows.
    ``mode``: ``"additive"`` (paper Eq. 1, edits ``z + δ``) or ``"multiplicative"`` (edits ``z ⊙ (1 + δ)``).
    """
    if mode not in CF_MODES:
        raise NeuroInspectError(f"unknown counterfactual mode '{mode}'; choose one of {', '.join(CF_MODES)}")
    multiplicative = mode == "multiplicative"
    W = W.detach().float()
    b = b.detach().float().to(W.device)
    Z = Z.detach().float().to(W.device)
    _check(W, b, Z)
    M, D = Z.shape
    delta = torch.zeros_like(Z)
    steps = torch.zeros(M, dtype=torch.long, device=Z.device)
    flipped = torch.zeros(M, dtype=torch.bool, device=Z.device)
    # the still-active rows, kept compact: their index, edit, momentum buffer and unedited logits
    active = torch.arange(M, device=Z.device)
    d = torch.zeros_like(Z)
    buf = torch.zeros_like(Z)
    base = Z @ W.T + b
    scale = Z.clone() if multiplicative else None  # the active rows' features (multiplicative mode)
    bar = progress_bar(M, "counterfactuals", "mistake", enabled=progress)
    for step in range(max_steps + 1):
        logits = torch.addmm(base, d * scale if multiplicative else d, W.T)
        done = logits.argmax(1) == target
        if done.any():  # freeze the rows that flipped: write them out, drop them from the active set
            rows = active[done]
            flipped[rows] = True
            delta[rows] = d[done]
            steps[rows] = step
            bar.update(int(done.sum()))
            keep = ~done
            active, d, buf, base, logits = active[keep], d[keep], buf[keep], base[keep], logits[keep]
            if multiplicative:
                scale = scale[keep]
        if step == max_steps or active.numel() == 0:
            break
        g_logits = logits.softmax(1)
        g_logits[:, target] -= 1.0
        grad = g_logits @ W
        if multiplicative:
            grad.mul_(scale)
        grad.add_(d.sign(), alpha=lambda1 / D)
        norm = d.norm(dim=1, keepdim=True)
        grad.add_(torch.where(norm > 0, d / norm.clamp_min(1e-30), torch.zeros_like(d)), alpha=lambda2 / D)
        buf.mul_(momentum).add_(grad)
        d.sub_(buf, alpha=lr)
    if active.numel():  # the rows that hit the step cap
        delta[active] = d
        steps[active] = max_steps
    bar.close()
    return Counterfactuals(delta.cpu(), flipped.cpu(), steps.cpu())


@dataclass
class NeuronScore:
    neuron: int
    ratio: float  # percent of mistakes with this neuron in their top-k
    importance: float = float("nan")  # imp_j = p(c|z̄) / p(c|z̄ with z̄_j := 0)
    log_odds: float = float("nan")  # logit p(c|z̄) − logit p(c|z̄ with z̄_j := 0): does not saturate like imp_j
    weight: float = float("nan")  # W[c, j]
    mean_edit: float = 0.0  # mean δ_j over the mistakes (signed)

    def to_dict(self) -> dict:
        return {"neuron": self.neuron, "ratio": self.ratio, "importance": self.importance, "log_odds": self.log_odds,
                "weight": self.weight, "mean_edit": self.mean_edit}


def rank_neurons(delta: torch.Tensor, k: int = 5, min_ratio: float = 3.0) -> tuple[list[NeuronScore], list[NeuronScore]]:
    """Rank neurons by how often they are in a mistake's top-k edits (paper Sec. III-C).

    Returns ``(insufficient, excessive)``: neurons whose ratio (percent of the M mistakes having
    the neuron among their k largest positive / most negative edits) is at least ``min_ratio``,
    sorted by ratio, ties broken by the mean size of the neuron's edit. Only strictly positive
    (negative) edits count.
    """
    M, D = delta.shape
    if M == 0:
        return [], []
    k = min(k, D)

    mean_edit = delta.mean(0)

    def ranked(values: torch.Tensor) -> list[NeuronScore]:
        top_vals, top_idx = values.topk(k, dim=1)
        size = values.mean(0)
        counts = torch.zeros(D)
        counts.scatter_add_(0, top_idx[top_vals > 0], torch.ones(int((top_vals > 0).sum())))
        ratio = 100.0 * counts / M
        keep = (ratio >= min_ratio) & (counts > 0)
        idx = keep.nonzero().flatten().tolist()
        idx.sort(key=lambda j: (-float(ratio[j]), -float(size[j]), j))
        return [NeuronScore(j, float(ratio[j]), mean_edit=float(mean_edit[j])) for j in idx]

    return ranked(delta), ranked(-delta)

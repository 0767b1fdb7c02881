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

from dataclasses import dataclass, fields, replace

import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.runtime.progress import progress_bar


CF_MODES = ("additive", "multiplicative")
CF_PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class SolverConfig:
    """Every option of :func:`counterfactual_edits`, each default stated once.

    The loss and SGD (paper Eq. 1 and Sec. III-C): ``lambda1``, ``lambda2``, ``lr``, ``momentum``,
    ``max_steps``; ``mode`` "additive" (the paper's ``z + δ``) or "multiplicative" (``z ⊙ (1 + δ)``).

    How it is computed (same problem, same stopping rule):

    ``precision``   "fp32" (exact, the default) or "bf16": the two matrix products of each step take
                    bfloat16 inputs (the edit, the softmax gradient and W); everything else (the
                    unedited logits, the edit, the momentum buffer) stays fp32, and a row whose decision
                    the rounding could change (its margin within a first-order error bound) is
                    checked with the exact fp32 product. 1.7x faster on a CPU with AVX-512 BF16; flips,
                    step counts (>= 99 %) and the top neurons agree with fp32 on the tests' and the
                    benchmark's problems, the edits only to a few 1e-2.
    ``fused``       the in-place step: the step-0 forward product is skipped (at δ = 0 the logits are
                    the unedited ones), momentum, L1 and L2 terms are added into the momentum buffer in
                    place (no [M, D] temporaries). Same results as the plain step up to rounding.
    ``sync_free``   keep every row in place and mask the finished ones instead of dropping them each
                    step: no host synchronisation inside a window of ``check_every`` steps (on a GPU the
                    steps queue up without waiting; the window's shapes are static). Rows are compacted
                    and the stop is checked once per window. ``None``: on for CUDA tensors.
    """

    lambda1: float = 0.1
    lambda2: float = 0.01
    lr: float = 0.01
    momentum: float = 0.9
    max_steps: int = 1000
    mode: str = "additive"
    precision: str = "fp32"
    fused: bool = False
    sync_free: bool | None = None
    check_every: int = 16

    def __post_init__(self):
        if self.mode not in CF_MODES:
            raise NeuroInspectError(f"unknown counterfactual mode '{self.mode}'; choose one of {', '.join(CF_MODES)}")
        if self.precision not in CF_PRECISIONS:
            raise NeuroInspectError(f"unknown solver precision '{self.precision}'; choose one of {', '.join(CF_PRECISIONS)}")
        if self.max_steps < 0 or self.check_every < 1:
            raise NeuroInspectError(f"max_steps must be >= 0 and check_every >= 1, got {self.max_steps} and {self.check_every}")


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


class _Step:
    """One SGD step of Eq. 1 on a block of rows (``d``, ``buf`` updated in place), plain or fused, fp32 or bf16.

    ``logits(d, base, scale)`` is the forward product, ``update(d, buf, logits, scale)`` the
    gradient step; ``scale`` is the rows' features in multiplicative mode (else ``None``).
    Every operation is row-wise, so a row's result does not depend on which other rows are present.
    """

    def __init__(self, W: torch.Tensor, target: int, cfg: SolverConfig):
        self.W, self.target, self.cfg = W, target, cfg
        self.W16 = W.to(torch.bfloat16) if cfg.precision == "bf16" else None
        self.w_max = float(W.norm(dim=1).max()) if self.W16 is not None else 0.0  # the largest class row norm
        D = W.shape[1]
        self.l1, self.l2 = cfg.lambda1 / D, cfg.lambda2 / D

    def logits(self, d: torch.Tensor, base: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        x = d if scale is None else d * scale
        if self.W16 is None:
            return torch.addmm(base, x, self.W.T)
        if x.is_cuda:  # bf16 inputs, fp32 accumulation and output
            return torch.mm(x.to(torch.bfloat16), self.W16.T, out_dtype=torch.float32).add_(base)
        # on the CPU the product's output is rounded to bf16 as well: where that rounding could change the
        # decision (the target's margin within the error bound), redo the row exactly (a few rows per step)
        prod = (x.to(torch.bfloat16) @ self.W16.T).float()
        out = prod + base
        t = self.target
        other = out.clone()
        other[:, t] = float("-inf")
        margin = (out[:, t] - other.amax(1)).abs()
        # first-order bound: inputs rounded (2^-8 relative each, Cauchy-Schwarz) + output rounded, both logits
        bound = 2.0**-6 * x.norm(dim=1) * self.w_max + 2.0**-7 * prod.abs().amax(1)
        near = margin <= bound
        if near.any():
            out[near] = torch.addmm(base[near], x[near], self.W.T)
        return out

    def _back(self, g: torch.Tensor) -> torch.Tensor:
        if self.W16 is None:
            return g @ self.W
        if g.is_cuda:
            return torch.mm(g.to(torch.bfloat16), self.W16, out_dtype=torch.float32)
        return (g.to(torch.bfloat16) @ self.W16).float()

    def update(self, d: torch.Tensor, buf: torch.Tensor, logits: torch.Tensor, scale: torch.Tensor | None) -> None:
        cfg = self.cfg
        g = logits.softmax(1)
        g[:, self.target] -= 1.0
        if cfg.fused:
            self._fused(d, buf, g, scale)
            return
        grad = self._back(g)
        if scale is not None:
            grad.mul_(scale)
        grad.add_(d.sign(), alpha=self.l1)
        norm = d.norm(dim=1, keepdim=True)
        grad.add_(torch.where(norm > 0, d / norm.clamp_min(1e-30), torch.zeros_like(d)), alpha=self.l2)
        buf.mul_(cfg.momentum).add_(grad)
        d.sub_(buf, alpha=cfg.lr)

    def _fused(self, d, buf, g, scale) -> None:
        cfg = self.cfg
        norm = d.norm(dim=1, keepdim=True)  # [m, 1]: the L2 term is d * (λ2/D / ||d||), 0 where d = 0
        inv = torch.where(norm > 0, self.l2 / norm.clamp_min(1e-30), torch.zeros_like(norm))
        if scale is None and self.W16 is None:
            buf.addmm_(g, self.W, beta=cfg.momentum)  # buf = momentum * buf + g W, one pass
        else:
            grad = self._back(g)
            if scale is not None:
                grad.mul_(scale)
            buf.mul_(cfg.momentum).add_(grad)
        buf.add_(d.sign(), alpha=self.l1).addcmul_(d, inv)
        d.sub_(buf, alpha=cfg.lr)


def counterfactual_edits(
    W: torch.Tensor,
    b: torch.Tensor,
    Z: torch.Tensor,
    target: int,
    config: SolverConfig | None = None,
    *,
    progress: bool = False,
    **overrides,
) -> Counterfactuals:
    """Solve Eq. 1 for all rows of ``Z`` at once (see the module docstring).

    ``config`` (a :class:`SolverConfig`, default settings when ``None``) holds every option;
    keyword ``overrides`` replace single fields of it, e.g. ``counterfactual_edits(W, b, Z, c,
    max_steps=400, mode="multiplicative")``. Uses the loss's closed-form gradient (``softmax −
    onehot`` through ``W``, ``sign`` for L1, ``δ/||δ||`` for L2), so each step costs two matrix
    products on the still-active rows.
    """
    cfg = config or SolverConfig()
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in fields(SolverConfig)})
        if unknown:
            raise TypeError(f"counterfactual_edits() got unknown options {unknown}; see SolverConfig")
        cfg = replace(cfg, **overrides)
    W = W.detach().float()
    b = b.detach().float().to(W.device)
    Z = Z.detach().float().to(W.device)
    _check(W, b, Z)
    sync_free = cfg.sync_free if cfg.sync_free is not None else Z.device.type == "cuda"
    solve = _solve_masked if sync_free else _solve_compact
    bar = progress_bar(Z.shape[0], "counterfactuals", "mistake", enabled=progress)
    try:
        delta, flipped, steps = solve(_Step(W, target, cfg), Z, Z @ W.T + b, target, cfg, bar)
    finally:
        bar.close()
    return Counterfactuals(delta.cpu(), flipped.cpu(), steps.cpu())


def _solve_compact(step_fn: _Step, Z, base, target, cfg, bar):
    """Drop the rows that flipped after every step (boolean indexing: one host sync per step)."""
    M = Z.shape[0]
    delta = torch.zeros_like(Z)
    steps = torch.zeros(M, dtype=torch.long, device=Z.device)
    flipped = torch.zeros(M, dtype=torch.bool, device=Z.device)
    # the still-active rows, kept compact: their index, edit, momentum buffer and unedited logits
    active = torch.arange(M, device=Z.device)
    d = torch.zeros_like(Z)
    buf = torch.zeros_like(Z)
    scale = Z.clone() if cfg.mode == "multiplicative" else None  # the active rows' features
    for step in range(cfg.max_steps + 1):
        # at step 0 δ = 0: the logits are the unedited ones (the fused step skips that product)
        logits = base if (step == 0 and cfg.fused) else step_fn.logits(d, base, scale)
        done = logits.argmax(1) == target
        if done.any():  # freeze the rows that flipped: write them out, drop them from the active set
            rows = active[done]
            flipped[rows] = True
            delta[rows] = d[done]
            steps[rows] = step
            bar.update(int(done.sum()))
            keep = ~done
            active, d, buf, base, logits = active[keep], d[keep], buf[keep], base[keep], logits[keep]
            if scale is not None:
                scale = scale[keep]
        if step == cfg.max_steps or active.numel() == 0:
            break
        step_fn.update(d, buf, logits, scale)
    if active.numel():  # the rows that hit the step cap
        delta[active] = d
        steps[active] = cfg.max_steps
    return delta, flipped, steps


def _solve_masked(step_fn: _Step, Z, base, target, cfg, bar):
    """Keep finished rows in place under a mask; compact and check the stop every ``check_every`` steps.

    Inside a window every tensor keeps its shape and no value is read back to the host (so CUDA
    kernels queue without waiting, and a window could be captured as a graph): a finished row's
    edit is put back after each update and its step count is taken from an on-device counter.
    Gives the same flips and step counts as :func:`_solve_compact`, and the edits up to the
    rounding of a matrix product with more rows. (bf16 on a CPU reads back its near-tie check;
    on CUDA it needs none.)
    """
    M = Z.shape[0]
    dev = Z.device
    delta = torch.zeros_like(Z)
    steps = torch.zeros(M, dtype=torch.long, device=dev)
    flipped = torch.zeros(M, dtype=torch.bool, device=dev)
    active = torch.arange(M, device=dev)  # the rows of the block, as indices into the outputs
    d = torch.zeros_like(Z)
    buf = torch.zeros_like(Z)
    scale = Z.clone() if cfg.mode == "multiplicative" else None
    alive = torch.ones(M, dtype=torch.bool, device=dev)  # the block's rows not yet flipped
    at = torch.zeros(M, dtype=torch.long, device=dev)  # the step each row flipped at
    counter = torch.zeros((), dtype=torch.long, device=dev)  # the current step, on the device
    prev = torch.empty_like(d)  # scratch: the edits before the update
    for step in range(cfg.max_steps + 1):
        logits = base if (step == 0 and cfg.fused) else step_fn.logits(d, base, scale)
        done = (logits.argmax(1) == target) & alive
        at = torch.where(done, counter, at)
        alive &= ~done
        last = step == cfg.max_steps
        if not last:  # update every row, then put the finished rows' edits back (no host sync)
            prev.copy_(d)
            step_fn.update(d, buf, logits, scale)
            torch.where(alive.unsqueeze(1), d, prev, out=d)
            counter += 1
        if last or (step + 1) % cfg.check_every == 0:  # one host sync per window
            finished = ~alive
            n_done = int(finished.sum())
            if n_done:  # write the finished rows out and drop them from the block
                rows = active[finished]
                flipped[rows] = True
                delta[rows] = d[finished]
                steps[rows] = at[finished]
                bar.update(n_done)
                keep = alive
                active, d, buf, base, alive, at = active[keep], d[keep], buf[keep], base[keep], alive[keep], at[keep]
                prev = torch.empty_like(d)
                if scale is not None:
                    scale = scale[keep]
            if last or active.numel() == 0:
                break
    if active.numel():  # the rows that hit the step cap
        delta[active] = d
        steps[active] = cfg.max_steps
    return delta, flipped, steps


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

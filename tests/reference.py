"""Reference implementations the tests (and benchmarks) hold the library's fast paths against."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from neuroinspect.find.counterfactual import Counterfactuals, _check


def counterfactual_edits_loop(
    W: torch.Tensor, b: torch.Tensor, Z: torch.Tensor, target: int, *, lambda1: float = 0.1, lambda2: float = 0.01,
    lr: float = 0.01, momentum: float = 0.9, max_steps: int = 1000, mode: str = "additive",
) -> Counterfactuals:
    """The reference: one sample at a time with autograd and ``torch.optim.SGD``, as the authors did.

    Same loss and stopping rule as :func:`neuroinspect.find.counterfactual.counterfactual_edits`;
    the tests and ``benchmarks/bench_counterfactual.py`` compare the batched solver against it.
    """
    W = W.detach().float()
    b = b.detach().float()
    Z = Z.detach().float()
    _check(W, b, Z)
    M, D = Z.shape
    out = torch.zeros_like(Z)
    steps = torch.zeros(M, dtype=torch.long)
    flipped = torch.zeros(M, dtype=torch.bool)
    y = torch.tensor([target])
    for i in range(M):
        delta = torch.zeros(1, D, requires_grad=True)
        opt = torch.optim.SGD([delta], lr=lr, momentum=momentum)
        for step in range(max_steps + 1):
            edited = Z[i : i + 1] * (1 + delta) if mode == "multiplicative" else Z[i : i + 1] + delta
            logits = edited @ W.T + b
            if int(logits.argmax(1)) == target:
                flipped[i] = True
                break
            if step == max_steps:
                break
            loss = F.cross_entropy(logits, y) + lambda1 * delta.abs().sum() / D + lambda2 * delta.norm() / D
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps[i] += 1
        out[i] = delta.detach()[0]
    return Counterfactuals(out, flipped, steps)

"""Importance of a neuron for a class, read off the decision layer alone.

``imp_j = p(c | z̄) / p(c | z̄ with z̄_j := 0)`` at the class's mean feature z̄, and the same change
as log-odds (which does not saturate). Stage 1 reports both; stage 3's τ is derived from them.
"""
from __future__ import annotations

import torch


def bias_or_zeros(W: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros(W.shape[0], dtype=W.dtype, device=W.device) if b is None else b



def _logits_dropping_each(W: torch.Tensor, b: torch.Tensor | None, z_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at ``z̄`` [C] and, row j, the logits with ``z̄_j := 0`` [D, C]."""
    W = W.detach().float()
    b = bias_or_zeros(W, None if b is None else b.detach().float())
    z = z_mean.detach().float().to(W.device)
    logits = W @ z + b
    return logits, logits.unsqueeze(0) - z.unsqueeze(1) * W.T


def neuron_importance(W: torch.Tensor, b: torch.Tensor | None, z_mean: torch.Tensor, c: int, neurons=None) -> torch.Tensor:
    """``imp_j = p(c | z̄) / p(c | z̄ with z̄_j := 0)`` for every neuron j at once (paper Sec. III-E, Eqs. 5–7).

    Returns a [D] tensor, or only the entries of ``neurons`` when given. ``imp_j > 1``: neuron j
    (at its mean activation) pushes the decision toward class ``c``.
    """
    logits, dropped = _logits_dropping_each(W, b, z_mean)
    base = torch.log_softmax(logits, 0)[c]
    log_p = dropped[:, c] - torch.logsumexp(dropped, dim=1)
    imp = (base - log_p).exp()
    if neurons is not None:
        imp = imp[torch.as_tensor(list(neurons), dtype=torch.long, device=imp.device)]
    return imp


def neuron_log_odds(W: torch.Tensor, b: torch.Tensor | None, z_mean: torch.Tensor, c: int) -> torch.Tensor:
    """``logit p(c | z̄) − logit p(c | z̄ with z̄_j := 0)`` for every neuron j [D].

    The importance ratio ``imp_j`` saturates at 1 when ``p(c | z̄) ≈ 1``; the log-odds change does not.
    """
    logits, dropped = _logits_dropping_each(W, b, z_mean)

    def log_odds(lg):  # log p_c − log(1 − p_c) = lg_c − logsumexp over the other classes
        others = torch.cat([lg[..., :c], lg[..., c + 1:]], dim=-1)
        return lg[..., c] - torch.logsumexp(others, dim=-1)

    return log_odds(logits) - log_odds(dropped)

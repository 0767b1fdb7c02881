"""Every default of stage 1 (ranking the neurons behind a class's mistakes), once, without importing torch
(the command line's ``--help`` reads them from here)."""
from __future__ import annotations

from dataclasses import dataclass

RANKINGS = ("gap", "additive", "multiplicative")
DEFAULT_RANKING = "gap"


@dataclass(frozen=True)
class ExplainConfig:
    """How :func:`~neuroinspect.find.ranking.explain_class` blames and ranks neurons."""

    ranking: str = DEFAULT_RANKING  # gap, additive (the paper's Eq. 1) or multiplicative
    k: int = 5  # top-k neurons per mistake counted in the ratio
    min_ratio: float = 3.0  # keep neurons in at least this % of the mistakes
    lambda1: float = 0.1  # L1 weight of the counterfactual edit
    lambda2: float = 0.01  # L2 weight of the counterfactual edit
    lr: float = 0.01  # SGD learning rate of the edit
    momentum: float = 0.9
    max_steps: int = 1000  # step cap per mistake
    only_flipped: bool = False  # rank over the mistakes whose edit flipped the decision only
    progress: bool = True

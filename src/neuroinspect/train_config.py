"""The training settings, without importing torch: ``neuroinspect train`` reads its defaults from here.

The trainer itself is :mod:`neuroinspect.train`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from neuroinspect.core.base.errors import NeuroInspectError

SELECT_BY = ("accuracy", "class", "worst-group")  # the validation metric that picks the kept epoch
OPTIMIZERS = ("adam", "sgd")


@dataclass
class TrainConfig:
    """Training settings (defaults: the paper's appendix recipe for its ResNet-50 classifiers)."""

    epochs: int = 20
    lr: float = 0.002
    batch_size: int = 128
    optimizer: str = "adam"  # adam | sgd (momentum 0.9)
    weight_decay: float = 0.0
    head_only: bool = False
    augment: bool = True  # fine-tuning only: random resized crop + horizontal flip
    select_by: str = "accuracy"  # validation metric for the kept epoch: accuracy | class | worst-group
    seed: int = 0
    amp: bool = True  # bfloat16 autocast on CUDA

    def check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise NeuroInspectError("--epochs and --batch-size must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise NeuroInspectError(f"--lr must be a positive number; got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise NeuroInspectError(f"--optimizer must be adam or sgd; got '{self.optimizer}'")
        if self.select_by not in SELECT_BY:
            raise NeuroInspectError(f"--select-by must be one of {', '.join(SELECT_BY)}; got '{self.select_by}'")

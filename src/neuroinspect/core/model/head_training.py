"""One epoch of training a linear decision layer on cached features: the loop every head trainer shares.

Three trainers fit a decision layer on features that were extracted once:

* :func:`neuroinspect.fix.edit.fit_linear_head`: a fresh head, full batch, no shuffling (the demo's
  head and the planted tests' head);
* :func:`neuroinspect.fix.edit.edit_head`: the fixes, retraining from the original head with a
  linear warm-up, a method's loss and regulariser, optional augmented views, and early stopping;
* ``neuroinspect train --head-only`` (:mod:`neuroinspect.train`): the model's own ``nn.Linear`` with a
  cosine schedule, checkpoints and resume.

They differ in what surrounds an epoch (start weights, optimiser, schedule, stopping rule, what
is logged) and in how a batch's loss is computed; :func:`head_epoch` is the epoch itself: the
shuffle from an explicit generator, the batches, and for each batch the loss, the backward pass,
the optimiser step and the scheduler step, in that order. Callers pass what differs as arguments.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


def head_epoch(
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    batch_size: int | None = None,
    *,
    generator: torch.Generator | None = None,
    scheduler=None,
    after_shuffle: Callable[[torch.Generator], None] | None = None,
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None,
) -> tuple[float, int]:
    """Train for one epoch over ``n`` samples; returns ``(loss_sum, seen)``, the sum over batches of the
    batch loss times its size, and the number of samples seen.

    ``batch_loss(idx)`` takes the batch's sample indices (a CPU ``long`` tensor) and returns the scalar
    loss of that batch on the trained parameters (it reads the features, computes the logits and any
    regulariser, and may keep statistics of its own). For each batch the loop then runs
    ``optimizer.zero_grad(set_to_none=True)``, ``loss.backward()``, ``optimizer.step()`` and, when a
    ``scheduler`` is given, ``scheduler.step()`` (schedules are stepped per batch).

    The order: ``torch.randperm(n, generator=generator)`` when a ``generator`` is given, else the
    samples in their stored order; no global random state is read. ``after_shuffle(generator)`` is
    called once after the shuffle and before the first batch, for the epoch's other random draws
    from the same generator (which augmented view each sample comes from). ``batch_size`` None: one
    batch of all ``n`` samples. ``progress`` wraps the iteration over batch starts (e.g. a tqdm bar).
    """
    if n < 1:
        raise ValueError(f"an epoch needs at least one sample, got n={n}")
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    if after_shuffle is not None:
        after_shuffle(generator)
    starts: Iterable[int] = range(0, n, batch_size)
    loss_sum, seen = 0.0, 0
    for start in (progress(starts) if progress is not None else starts):
        idx = order[start:start + batch_size]
        loss = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += float(loss.detach()) * len(idx)
        seen += len(idx)
    return loss_sum, seen

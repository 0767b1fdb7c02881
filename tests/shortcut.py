"""A planted shortcut in feature space: a fixed feature extractor with one known cue neuron.

Four classes. Every class has weak, noisy evidence spread over the "object" neurons; neuron
``CUE`` fires on a background that, in training, accompanies every image of class ``SPURIOUS``
and no image of the other classes (as in the paper's MetaShift scenarios, where every training
image of one class carries the attribute). Validation and test are balanced (the cue is present
in half of every class), so the groups "class SPURIOUS without the cue" and "other classes with
the cue" expose the shortcut. An ERM head fitted on the training split leans on the cue.
"""
from __future__ import annotations

import torch

from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.fix.edit import fit_linear_head

C, D, CUE, SPURIOUS = 4, 40, 17, 1
CLASS_NAMES = ["apple", "coat", "shoe", "bag"]


def features(n_per: int, p_cue_spurious: float, p_cue_other: float, seed: int, split: str,
             strength: float = 0.45) -> FeatureSet:
    """``n_per`` images per class; the cue on a share ``p_cue_spurious`` of the spurious class and
    ``p_cue_other`` of the others; ``strength``: how far apart the classes' object evidence is."""
    g = torch.Generator().manual_seed(seed)
    fixed = torch.Generator().manual_seed(1234)  # the extractor itself: the same for every split
    proto = torch.randn(C, D, generator=fixed) * strength  # weak object evidence by default
    proto[:, CUE] = 0.0
    labels = torch.arange(C).repeat_interleave(n_per)
    p = torch.where(labels == SPURIOUS, torch.tensor(p_cue_spurious), torch.tensor(p_cue_other))
    cue = torch.rand(len(labels), generator=g) < p
    z = proto[labels] + torch.randn(len(labels), D, generator=g)
    z[:, CUE] = cue.float() * 3.0 + 0.25 * torch.randn(len(labels), generator=g)
    z = torch.relu(z)  # post-ReLU features, as a CNN's pooled activations
    groups = labels * 2 + cue.long()
    group_names = [f"{c}/{'cue' if k else 'no cue'}" for c in CLASS_NAMES for k in (0, 1)]
    return FeatureSet(z, torch.zeros(len(labels), C), labels, groups, [f"{split}/{i}" for i in range(len(labels))],
                      list(CLASS_NAMES), group_names, split)


def splits(seed: int = 0) -> dict[str, FeatureSet]:
    return {
        "train": features(150, 1.0, 0.0, seed, "train"),
        "val": features(60, 0.5, 0.5, seed + 100, "val"),
        "test": features(150, 0.5, 0.5, seed + 200, "test"),
    }


def erm_head(train: FeatureSet, steps: int = 400, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The model under debugging: a softmax regression fitted (full batch, Adam, from zeros) to the biased
    training split, by the library's one linear-head trainer (``seed`` does not matter from zeros)."""
    return fit_linear_head(train, C, epochs=steps, lr=0.05, weight_decay=0.0, seed=seed, init_std=0.0)

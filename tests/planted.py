"""A tiny CNN with hand-set weights whose neurons we understand, and images to go with it.

Features (D = 16): neuron 5 fires on red, neuron 1 on green, neuron 2 on blue; the others are
seeded random 1x1 filters with small weights. The head: "apple" (0) reads green, "berry" (1)
reads blue, "cloud" (2) is the default; and the planted bug: "berry" also reads the *red*
neuron strongly, so a red patch on an apple makes the model say "berry".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from neuroinspect.core.model.models import Preprocess

CLASSES = ["apple", "berry", "cloud"]
RED, GREEN, BLUE = 5, 1, 2
D = 16


class PlantedCNN(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, D, 1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(D, num_classes)
        with torch.no_grad():
            self.conv.weight.copy_(0.1 * torch.randn(D, 3, 1, 1, generator=g))
            self.conv.bias.zero_()
            self.conv.weight[RED, :, 0, 0] = torch.tensor([2.0, -1.0, -1.0])
            self.conv.weight[GREEN, :, 0, 0] = torch.tensor([-1.0, 2.0, -1.0])
            self.conv.weight[BLUE, :, 0, 0] = torch.tensor([-1.0, -1.0, 2.0])
            self.fc.weight.copy_(0.05 * torch.randn(num_classes, D, generator=g))
            self.fc.bias.copy_(torch.tensor([0.0, 0.0, 0.3])[:num_classes])
            self.fc.weight[0, GREEN] = 3.0
            if num_classes > 1:
                self.fc.weight[1, BLUE] = 3.0
                self.fc.weight[1, RED] = 6.0  # the planted false correlation
        self.neuroinspect_preprocess = Preprocess(32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


def planted_cnn(num_classes: int = 3) -> PlantedCNN:
    return PlantedCNN(num_classes)


def make_image(kind: str, rng: np.random.Generator, size: int = 32, red_patch: bool = False, pale: bool = False,
               patch_at: str | None = None) -> Image.Image:
    base = {"apple": (0.1, 0.8, 0.1), "berry": (0.1, 0.1, 0.8), "cloud": (0.5, 0.5, 0.5)}[kind]
    img = np.ones((size, size, 3)) * np.array(base)
    if pale:  # a washed-out apple: barely green
        img = np.ones((size, size, 3)) * np.array([0.48, 0.52, 0.48])
    img += rng.normal(0, 0.03, img.shape)
    if red_patch:
        s = int(size * 0.6)
        y, x = rng.integers(0, size - s, 2)
        if patch_at is not None:  # "top-left", "bottom-right", ...: the patch in that corner
            y = 0 if patch_at.startswith("top") else size - s
            x = 0 if patch_at.endswith("left") else size - s
        img[y : y + s, x : x + s] = (0.95, 0.05, 0.05)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def write_folder(root: Path, n_per_class: int = 6, n_red_apples: int = 5, n_pale_apples: int = 0, seed: int = 0,
                 patch_at: str | None = None) -> Path:
    """``root/{train,val}/CLASS/*.png``: val apples include ``n_red_apples`` with a red patch (at a random place,
    or in the corner ``patch_at``)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for kind in CLASSES:
            d = root / split / kind
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                make_image(kind, rng).save(d / f"{kind}_{i}.png")
        for i in range(n_red_apples if split == "val" else 0):
            make_image("apple", rng, red_patch=True, patch_at=patch_at).save(root / split / "apple" / f"red_{i}.png")
        for i in range(n_pale_apples if split == "val" else 0):
            make_image("apple", rng, pale=True).save(root / split / "apple" / f"pale_{i}.png")
    return root


def broken_factory():
    """A model factory that fails, as a user's factory might."""
    raise RuntimeError("cannot reach the weights server")


def nan_cnn(num_classes: int = 3) -> PlantedCNN:
    """The planted CNN with a NaN weight: every output is NaN."""
    model = PlantedCNN(num_classes)
    with torch.no_grad():
        model.conv.bias[0] = float("nan")
    return model


def planted_cnn_own_order() -> PlantedCNN:
    """The planted CNN with its outputs in the order berry, cloud, apple, declared on the model."""
    model = PlantedCNN(3)
    order = [1, 2, 0]
    with torch.no_grad():
        model.fc.weight.copy_(model.fc.weight[order].clone())
        model.fc.bias.copy_(model.fc.bias[order].clone())
    model.neuroinspect_class_names = [CLASSES[i] for i in order]
    return model

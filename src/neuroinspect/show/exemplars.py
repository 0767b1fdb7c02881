"""The dataset images that drive a neuron hardest, from cached features, saved as a strip."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, ImageOps

from neuroinspect.core.base.io import save_png


def top_exemplars(fs, neuron: int, k: int = 8) -> list[dict]:
    """The ``k`` samples of a ``FeatureSet`` with the highest activation of ``neuron``: ``[{"id", "activation"}]``."""
    if len(fs) == 0:
        return []
    values = fs.features[:, neuron].float()
    top = values.topk(min(k, len(values)))
    return [{"id": fs.ids[i], "activation": float(v)} for v, i in zip(top.values.tolist(), top.indices.tolist())]


def dataset_activation(fs, neuron: int, k: int = 8) -> tuple[float | None, float | None]:
    """(top activation, mean of the top-``k`` activations) of ``neuron`` over the dataset."""
    if fs is None or len(fs) == 0:
        return None, None
    top = fs.features[:, neuron].float().topk(min(k, len(fs))).values
    return float(top[0]), float(top.mean())


def save_strip(ids: list[str], path: str | os.PathLike, thumb: int = 96) -> Path | None:
    """Save the images ``ids`` (file paths) side by side as one PNG; ``None`` when none can be read."""
    tiles = []
    for i in ids:
        try:
            with Image.open(i) as im:
                tiles.append(ImageOps.fit(im.convert("RGB"), (thumb, thumb)))
        except (OSError, ValueError):
            continue
    if not tiles:
        return None
    gap = 2
    strip = Image.new("RGB", (len(tiles) * thumb + (len(tiles) - 1) * gap, thumb), (255, 255, 255))
    for j, t in enumerate(tiles):
        strip.paste(t, (j * (thumb + gap), 0))
    return save_png(path, strip)


def neuron_top_classes(weight: torch.Tensor, neuron: int, n: int = 3) -> list[tuple[int, float]]:
    """The ``n`` classes whose decision-layer weight on ``neuron`` is largest: [(class, weight)]."""
    col = weight[:, neuron].detach().float().cpu()
    top = col.topk(min(n, col.numel()))
    return list(zip(top.indices.tolist(), top.values.tolist()))

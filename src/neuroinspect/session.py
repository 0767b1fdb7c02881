"""``Inspector``: one object holding a model, its probe and a dataset, with a method per stage."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import ImageData, class_index, load_data
from .errors import NeuroInspectError
from .explain import Explanation, explain_class
from .featureset import FeatureSet
from .features import extract_features
from .io import default_cache_dir
from .metrics import evaluate
from .models import LoadedModel, Preprocess, build_model
from .probe import Probe

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NeuroInspectError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


class Inspector:
    """A classifier and a dataset, ready for the three stages.

    >>> ins = Inspector("efficientnet-lite0", "photos/", device="cpu")
    >>> ins.metrics("val")["worst_class"]
    >>> explanation = ins.explain("tabby", split="val")
    """

    def __init__(
        self,
        model: str | LoadedModel | nn.Module,
        data: str | os.PathLike | ImageData | None = None,
        *,
        weights: str | os.PathLike | None = None,
        num_classes: int | None = None,
        head: str | None = None,
        device: str | torch.device | None = "cpu",
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 64,
        workers: int = 0,
        seed: int = 0,
        allow_pickle: bool = False,
        download: bool = False,
        amp: bool = True,
        progress: bool = True,
    ):
        seed_everything(seed)
        self.seed = seed
        self.device = resolve_device(device)
        self.data = data if isinstance(data, ImageData) or data is None else load_data(data, download=download)
        if isinstance(model, LoadedModel):
            self.loaded = model
        elif isinstance(model, nn.Module):
            self.loaded = LoadedModel(model.eval(), type(model).__name__, Preprocess(224, 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
        else:
            self.loaded = build_model(model, weights=weights, num_classes=num_classes, head=head, allow_pickle=allow_pickle)
        self.probe = Probe(self.loaded.model, head=head, input_size=self.loaded.preprocess.input_size)
        self.loaded.model.to(self.device)
        if self.data is not None and self.probe.C != len(self.data.class_names):
            raise NeuroInspectError(
                f"the model has {self.probe.C} outputs but the data has {len(self.data.class_names)} classes; "
                f"pass --num-classes {len(self.data.class_names)} (and the matching --weights)"
            )
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.batch_size = batch_size
        self.workers = workers
        self.amp = amp
        self.progress = progress
        self._features: dict[str, FeatureSet] = {}

    # ------------------------------------------------------------------ names
    @property
    def class_names(self) -> list[str]:
        if self.data is not None:
            return list(self.data.class_names)
        if self.loaded.class_names:
            return list(self.loaded.class_names)
        return [f"class_{i}" for i in range(self.probe.C)]

    def class_index(self, name_or_index: str | int) -> int:
        return class_index(self.class_names, name_or_index)

    # ------------------------------------------------------------------ stages
    def features(self, split: str) -> FeatureSet:
        """Features of ``split`` (extracted once, then read from the on-disk cache)."""
        if self.data is None:
            raise NeuroInspectError("this needs data: pass --data (an image folder, a CSV manifest or torchvision:NAME:ROOT)")
        split = self.data.resolve_split(split)
        if split not in self._features:
            self._features[split] = extract_features(
                self.loaded, self.probe, self.data, split, device=self.device, batch_size=self.batch_size,
                workers=self.workers, cache_dir=self.cache_dir, amp=self.amp, progress=self.progress,
            )
        return self._features[split]

    def metrics(self, split: str) -> dict:
        return evaluate(self.features(split))

    def explain(self, cls: str | int, split: str = "val", **settings) -> Explanation:
        """Rank the neurons behind class ``cls``'s mistakes on ``split`` (settings: see ``explain_class``)."""
        c = self.class_index(cls)
        fs = self.features(split)
        return explain_class(self.probe.weight, self.probe.bias, fs, c, device=self.device,
                             progress=self.progress, **settings)

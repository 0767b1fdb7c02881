"""The cached penultimate features of one split, with everything needed to use them later."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from neuroinspect.core.io import save_safetensors


@dataclass
class FeatureSet:
    """Features ``z = f(x)`` (the decision layer's input) of one split of a dataset.

    ``groups`` holds -1 where a sample has no group. ``ids`` are the samples' paths (or
    ``NAME[i]`` for in-memory datasets). Everything is on the CPU.
    """

    features: torch.Tensor  # [N, D] float32
    logits: torch.Tensor  # [N, C] float32
    labels: torch.Tensor  # [N] int64
    groups: torch.Tensor  # [N] int64, -1 = no group
    ids: list[str]
    class_names: list[str]
    group_names: list[str] = field(default_factory=list)
    split: str = ""
    skipped: list[str] = field(default_factory=list)  # unreadable images, one "path: reason" each

    def __post_init__(self):
        n = self.features.shape[0]
        for name in ("logits", "labels", "groups"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"FeatureSet.{name} has {getattr(self, name).shape[0]} rows, features {n}")
        if len(self.ids) != n:
            raise ValueError(f"FeatureSet.ids has {len(self.ids)} entries, features {n}")

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def D(self) -> int:
        return self.features.shape[1]

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)

    def subset(self, index: torch.Tensor) -> "FeatureSet":
        """Rows selected by a boolean mask or an index tensor."""
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        idx = index.tolist()
        return FeatureSet(
            self.features[index], self.logits[index], self.labels[index], self.groups[index],
            [self.ids[i] for i in idx], self.class_names, self.group_names, self.split, self.skipped,
        )

    def with_logits(self, weight: torch.Tensor, bias: torch.Tensor | None) -> "FeatureSet":
        """The same samples scored by another decision layer (an edited head)."""
        logits = self.features @ weight.T.to(self.features) + (0 if bias is None else bias.to(self.features))
        return FeatureSet(self.features, logits, self.labels, self.groups, self.ids, self.class_names,
                          self.group_names, self.split, self.skipped)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Save as one ``.safetensors`` file (tensors) with the names and ids in its metadata."""
        meta = {
            "ids": json.dumps(self.ids),
            "class_names": json.dumps(self.class_names),
            "group_names": json.dumps(self.group_names),
            "split": self.split,
            "skipped": json.dumps(self.skipped),
        }
        tensors = {
            "features": self.features.contiguous(), "logits": self.logits.contiguous(),
            "labels": self.labels.contiguous(), "groups": self.groups.contiguous(),
        }
        return save_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureSet":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            # clone: tensors read from the file sit at arbitrary byte offsets, and CPU matrix kernels
            # round differently on unaligned memory, which made scores from cached features differ
            # (in the last bits, then more after training) from scores of freshly computed ones
            t = {k: f.get_tensor(k).clone(memory_format=torch.contiguous_format) for k in f.keys()}
        return cls(
            t["features"], t["logits"], t["labels"], t["groups"], json.loads(meta["ids"]),
            json.loads(meta["class_names"]), json.loads(meta["group_names"]), meta.get("split", ""),
            json.loads(meta.get("skipped", "[]")),
        )

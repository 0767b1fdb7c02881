"""The cached penultimate features of one split, with everything needed to use them later."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from neuroinspect.core.base.io import save_safetensors


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

    def digest(self) -> str:
        """A BLAKE2b digest of every tensor's bytes, the ids and the names (about 1 s per GB on one core)."""
        h = hashlib.blake2b(digest_size=16)
        for name in TENSORS:
            t = getattr(self, name).contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.numpy().data if t.numel() else b"")
        h.update(json.dumps([self.ids, self.class_names, self.group_names, self.split, self.skipped]).encode())
        return h.hexdigest()

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, meta: dict[str, str] | None = None) -> Path:
        """Save as one ``.safetensors`` file (tensors) with the names, ids, row count and :meth:`digest` in its
        metadata, and ``meta`` beside them (the cache stores its key and the split's ids there)."""
        meta = {
            **(meta or {}),
            "ids": json.dumps(self.ids),
            "class_names": json.dumps(self.class_names),
            "group_names": json.dumps(self.group_names),
            "split": self.split,
            "skipped": json.dumps(self.skipped),
            "rows": str(len(self)),
            "digest": self.digest(),
        }
        return save_safetensors(path, {name: getattr(self, name).contiguous() for name in TENSORS}, meta)

    @classmethod
    def load(cls, path: str | os.PathLike, expect: dict[str, str] | None = None) -> "FeatureSet":
        """Read a file :meth:`save` wrote. With ``expect``, the file must carry those metadata values, its row
        count and a digest that matches its content, else :class:`FeatureMismatch` says what differs."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            # clone: tensors read from the file sit at arbitrary byte offsets, and CPU matrix kernels
            # round differently on unaligned memory, which made scores from cached features differ
            # (in the last bits, then more after training) from scores of freshly computed ones
            t = {k: f.get_tensor(k).clone(memory_format=torch.contiguous_format) for k in f.keys()}
        wrong = [k for k, v in (expect or {}).items() if meta.get(k) != v]
        if wrong:
            raise FeatureMismatch(f"its {', '.join(wrong)} differ{'s' if len(wrong) == 1 else ''}")
        fs = cls(
            t["features"], t["logits"], t["labels"], t["groups"], json.loads(meta["ids"]),
            json.loads(meta["class_names"]), json.loads(meta["group_names"]), meta.get("split", ""),
            json.loads(meta.get("skipped", "[]")),
        )
        if expect is not None:
            if meta.get("rows") != str(len(fs)):
                raise FeatureMismatch(f"it holds {len(fs)} rows where its metadata says {meta.get('rows')}")
            if meta.get("digest") != fs.digest():
                raise FeatureMismatch("its tensors do not match their digest (changed after they were written)")
        return fs


TENSORS = ("features", "logits", "labels", "groups")


class FeatureMismatch(ValueError):
    """A features file that reads, but is not the one its place promises (another entry's, or changed)."""

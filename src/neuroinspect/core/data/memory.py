"""In-memory data: tensors, a torch ``Dataset`` or PIL images, as an :class:`ImageData`.

What ``Inspector(model, data)`` (and ``load_data``) accepts besides a spec: a torch ``Dataset``
yielding ``(image, label[, group])``, tensors ``(images, labels[, groups])``, a list of PIL images
with their labels ``(pil_images, labels)``, or a dict ``{split: any of these}``. Their cache key
hashes the content (the tensors' or images' bytes, labels and groups); a dataset that returns
different images for the same index (random augmentations) is not cached, and says why.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from PIL import Image

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.images import SPLIT_ALIASES, ImageData, natural_key
from neuroinspect.core.data.registry import DATA_SOURCES, data_source

IN_MEMORY = DATA_SOURCES["memory"].about

def _digest_image(h, image) -> None:
    """Feed an image's exact content (type, shape, dtype or mode, bytes) into the hash ``h``."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(image, np.ndarray):
        a = np.ascontiguousarray(image)
        h.update(f"A{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    elif isinstance(image, Image.Image):
        h.update(f"P{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    else:
        raise TypeError(type(image).__name__)


def _check_image(image, where: str) -> None:
    """One clear line for an image the model cannot be fed: a wrong type, shape or range (normalised already)."""
    if isinstance(image, Image.Image):
        return
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) if image.ndim == 3 else torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise NeuroInspectError(f"{where} is a {type(image).__name__}; images must be PIL images or tensors [C, H, W]")
    if image.dim() not in (2, 3) or (image.dim() == 3 and image.shape[0] not in (1, 3)):
        raise NeuroInspectError(f"{where} has shape {tuple(image.shape)}; give images as [C, H, W] with C = 1 or 3")
    _check_range(image, where)


def _check_range(images: torch.Tensor, where: str) -> None:
    if images.is_floating_point() and images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
        raise NeuroInspectError(f"{where} has values in [{float(images.min()):.2f}, {float(images.max()):.2f}]; give "
                                "unnormalised images in [0, 1] (or uint8): the model's own normalisation is applied")


class _MemorySplit:
    """One split held in memory: ``images`` (a tensor [N, C, H, W] or a list of images), ``labels``, ``groups``."""

    def __init__(self, images, labels, groups=None):
        self.images, self.labels = images, labels
        self.groups = groups if groups is not None else [-1] * len(labels)
        self.root = ""

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), int(self.groups[i])

    def content_digest(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        if isinstance(self.images, torch.Tensor):
            _digest_image(h, self.images)
        else:
            for image in self.images:
                _digest_image(h, image)
        h.update(json.dumps([[int(v) for v in self.labels], [int(v) for v in self.groups]]).encode())
        return h.hexdigest()

    def refusal(self) -> str | None:
        return None


class _DatasetSplit(_MemorySplit):
    """A torch ``Dataset`` yielding ``(image, label[, group])``: hashed item by item, once per extraction."""

    def __init__(self, dataset):
        self.dataset, self.root = dataset, ""

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, label, *group = self.dataset[i]
        return image, int(label), int(group[0]) if group else -1

    def content_digest(self) -> str:
        reason = self.refusal()
        if reason:
            raise NeuroInspectError(f"cannot key the cache: {reason}")
        h = hashlib.blake2b(digest_size=16)
        for i in range(len(self)):
            image, label, group = self[i]
            _digest_image(h, image)
            h.update(f"|{label}|{group}\n".encode())
        return h.hexdigest()

    def refusal(self) -> str | None:
        if not len(self):
            return None
        try:
            first, again = hashlib.blake2b(), hashlib.blake2b()
            _digest_image(first, self[0][0])
            _digest_image(again, self[0][0])
        except TypeError as err:
            return f"its images are {err} objects, whose content cannot be hashed"
        if first.digest() != again.digest():
            return ("the dataset returns a different image each time item 0 is read (random transforms?), so its "
                    "features would never be found again")
        return None


def _labels_list(labels, where: str) -> list:
    if isinstance(labels, torch.Tensor):
        if labels.dim() != 1 or labels.is_floating_point():
            raise NeuroInspectError(f"{where} must be a 1-D tensor of integer class indices; got {labels.dtype} "
                                    f"of shape {tuple(labels.shape)}")
        return labels.tolist()
    if isinstance(labels, np.ndarray):
        return labels.tolist()
    return list(labels)


def _memory_split(value, name: str, class_names: list[str] | None) -> tuple[_MemorySplit, list[str] | None]:
    """One split of in-memory data, with the class names its string labels name (``None``: integer labels)."""
    where = f"split '{name}' of the in-memory data" if name != "all" else "the in-memory data"
    if isinstance(value, torch.utils.data.Dataset) and not isinstance(value, torch.utils.data.TensorDataset):
        if not hasattr(value, "__len__"):
            raise NeuroInspectError(f"{where} is an iterable dataset; give a map-style Dataset (with __len__)")
        split = _DatasetSplit(value)
        if len(split):
            try:
                item = value[0]
            except Exception as err:
                raise NeuroInspectError(f"reading item 0 of {where} failed: {type(err).__name__}: {err}") from None
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise NeuroInspectError(f"{where} yields {type(item).__name__} items; a Dataset must yield "
                                        "(image, label) or (image, label, group)")
            _check_image(item[0], f"item 0 of {where}")
        return split, None
    if isinstance(value, torch.utils.data.TensorDataset):
        value = tuple(value.tensors)
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise NeuroInspectError(f"{where} is not understood; give {IN_MEMORY}")
    images, labels, *groups = value
    labels = _labels_list(labels, f"the labels of {where}")
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:  # [N, H, W]: grey images
            images = images.unsqueeze(1)
        if images.dim() != 4:
            raise NeuroInspectError(f"the images of {where} have shape {tuple(images.shape)}; give [N, C, H, W]")
        if images.numel():
            _check_image(images[0], f"the images of {where}")
            _check_range(images, f"the images of {where}")
    elif isinstance(images, (list, tuple)):
        images = list(images)
        for j, im in enumerate(images):
            _check_image(im, f"image {j} of {where}")
    else:
        raise NeuroInspectError(f"the images of {where} are a {type(images).__name__}; give a tensor [N, C, H, W] "
                                "or a list of PIL images")
    groups = _labels_list(groups[0], f"the groups of {where}") if groups else None
    if len(images) != len(labels) or (groups is not None and len(groups) != len(labels)):
        raise NeuroInspectError(f"{where} has {len(images)} images but {len(labels)} labels"
                                + (f" and {len(groups)} groups" if groups is not None else "")
                                + "; give one label (and group) per image")
    named = None
    if labels and all(isinstance(v, str) for v in labels):  # class names as labels
        named = class_names or sorted(set(labels), key=natural_key)
        unknown = sorted(set(labels) - set(named))
        if unknown:
            raise NeuroInspectError(f"{where} has labels {', '.join(map(repr, unknown[:3]))} that name no class; "
                                    f"the classes are {', '.join(named[:6])}{' …' if len(named) > 6 else ''}")
        labels = [named.index(v) for v in labels]
    elif not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
        raise NeuroInspectError(f"the labels of {where} must be integer class indices or class names")
    return _MemorySplit(images, labels, groups), named


def is_in_memory(data) -> bool:
    """Whether ``data`` is in-memory data (:func:`from_memory`) rather than a spec or an ``ImageData``."""
    return isinstance(data, (torch.utils.data.Dataset, tuple, list, dict))


@data_source("memory")
def from_memory(data, class_names: list[str] | None = None, num_classes: int | None = None) -> ImageData:
    """In-memory data (the module docstring) as an :class:`ImageData`.

    Class names: ``class_names`` if given, else the string labels' (sorted), else a Dataset's
    ``classes``, else ``class_0 … class_{num_classes - 1}``. Groups: ``group_0 …`` for group labels
    given as tensors or lists; a Dataset's by its ``group_names`` attribute (without one, its
    groups are not reported). Splits: the dict's keys, else one split ``all`` (used for every split
    asked for). Integer labels outside the classes are one clear error.
    """
    given = {SPLIT_ALIASES.get(str(k).lower(), str(k)): v for k, v in data.items()} if isinstance(data, dict) else {"all": data}
    if not given:
        raise NeuroInspectError(f"the in-memory data holds no split; give {IN_MEMORY}")
    names = list(class_names) if class_names is not None else None
    splits: dict[str, _MemorySplit] = {}
    for name, value in given.items():
        split, named = _memory_split(value, name, names)
        if named is not None:
            names = named
        splits[name] = split
    if names is None:
        first = next(iter(given.values()))
        names = [str(c) for c in getattr(first, "classes", None) or []] or None
    if names is None:
        n = num_classes if num_classes is not None else 1 + max((max(s.labels, default=-1) for s in splits.values()
                                                                if not isinstance(s, _DatasetSplit)), default=0)
        names = [f"class_{i}" for i in range(n)]
    for name, split in splits.items():
        if isinstance(split, _DatasetSplit):
            continue
        bad = sorted({v for v in split.labels if not 0 <= v < len(names)})
        if bad:
            raise NeuroInspectError(f"the in-memory data's split '{name}' has labels {bad[:4]} but there are "
                                    f"{len(names)} classes (0–{len(names) - 1}); pass class_names=[...] in the "
                                    "model's order")
    kinds = sorted({type(s.dataset if isinstance(s, _DatasetSplit) else s.images).__name__ for s in splits.values()})
    groups = sorted({g for s in splits.values() if not isinstance(s, _DatasetSplit) for g in s.groups if g >= 0})
    group_names = [f"group_{g}" for g in range(max(groups) + 1)] if groups else []
    for split in splits.values():  # a Dataset's groups are known by its group_names only (it is not read here)
        if isinstance(split, _DatasetSplit) and not group_names:
            group_names = [str(g) for g in getattr(split.dataset, "group_names", None) or []]
    return ImageData(f"memory:{'+'.join(kinds)}", [str(c) for c in names], group_names, {}, splits)

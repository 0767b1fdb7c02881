"""Datasets from a short data spec: image folders, CSV manifests, torchvision datasets.

Data specs
----------
``ROOT``                      an image folder ``ROOT/CLASS/*.jpg`` (one split, ``all``), or
                              ``ROOT/{train,val,test}/CLASS/*.jpg`` (one split per sub-folder)
``FILE.csv``                  a manifest with a header ``path,label,split[,group]``; paths are
                              relative to the CSV, labels are class names
``torchvision:NAME:ROOT``     a torchvision dataset (Flowers102, Food101, CIFAR10, FashionMNIST, …);
                              downloading happens only with ``download=True``
``waterbirds:ROOT``, ``metashift:ROOT:SCENARIO``   the paper's datasets (see ``datasets.py``)

In-memory data (:func:`from_memory`, what ``Inspector(model, data)`` accepts besides a spec): a torch
``Dataset`` yielding ``(image, label[, group])``, tensors ``(images, labels[, groups])``, a list of PIL
images with their labels ``(pil_images, labels)``, or a dict ``{split: any of these}``. Their cache
key hashes the content (the tensors' or images' bytes, labels and groups); a dataset that returns
different images for the same index (random augmentations) is not cached, and says why.
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision.datasets as D
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from neuroinspect.core.errors import NeuroInspectError, first_line
from neuroinspect.core.io import write_text

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}


@dataclass
class Record:
    path: str  # absolute path of the image
    label: int
    group: int = -1


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB, scaling 16- and 32-bit images by their range.

    (PIL's own ``convert("RGB")`` clips a 16-bit grey image at 255, which turns almost every
    pixel white.)
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16"):
            top = 65535.0
        elif im.mode == "I":
            top = 65535.0 if a.max(initial=0) > 255 else 255.0
        else:  # float images: [0, 1] if they fit, else [0, 255]
            top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        im = Image.fromarray(a, mode="L")
    return im.convert("RGB")


MAX_ASPECT = 32  # a thinner image is skipped: resizing its short side to the model's input would inflate its long side


def check_aspect(im: Image.Image) -> Image.Image:
    """``im`` unchanged, or a ValueError (the image is then skipped) when one side is over ``MAX_ASPECT`` times
    the other. Checked before decoding: a 1×10,000 px PNG of 122 bytes becomes 256×2,560,000 px once its short
    side is resized to 256, about 2 GB; the check keeps the cost of an image bounded by the output size."""
    w, h = im.size
    if max(w, h) > MAX_ASPECT * max(1, min(w, h)):
        raise ValueError(f"{w}×{h} px, one side over {MAX_ASPECT} times the other: resizing it would need memory "
                         "in proportion to that ratio; crop it to use it")
    return im


def _load_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return to_rgb(check_aspect(im))


class _RecordDataset(torch.utils.data.Dataset):
    """Yields ``(image, label, group, index)``; ``None`` in place of an unreadable image."""

    def __init__(self, records: list[Record], transform: Callable | None):
        self.records = records
        self.transform = transform

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        try:
            image = _load_rgb(r.path)
            x = self.transform(image) if self.transform else image
        except Exception as err:  # a corrupt or unreadable image is skipped, not fatal
            return None, r.label, r.group, i, f"{r.path}: {type(err).__name__}: {err}"
        return x, r.label, r.group, i, None


class _Relabelled:
    """A torchvision dataset whose integer labels are mapped through ``remap``."""

    def __init__(self, base, remap: list[int]):
        self.base, self.remap = base, remap
        self.root = getattr(base, "root", "")

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, label, *group = self.base[i]
        return (image, self.remap[int(label)], *group)


def as_pil(image) -> Image.Image:
    """A PIL image from a PIL image, a [C, H, W] tensor (float in [0, 1] or uint8) or an [H, W(, C)] uint8 array."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return Image.fromarray(image)
    if isinstance(image, torch.Tensor):
        return to_pil_image(image.detach().cpu())
    raise TypeError(f"an image must be a PIL image, a tensor or a NumPy array, not a {type(image).__name__}")


class _TorchvisionDataset(torch.utils.data.Dataset):
    def __init__(self, base, transform: Callable | None):
        self.base = base
        self.transform = transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        try:
            image, label, *group = self.base[i]
            image = to_rgb(check_aspect(as_pil(image)))
            x = self.transform(image) if self.transform else image
        except Exception as err:
            return None, -1, -1, i, f"#{i}: {type(err).__name__}: {err}"
        return x, int(label), int(group[0]) if group else -1, i, None


def collate_skipping(batch):
    """Collate ``(x, label, group, index, error)`` items, dropping unreadable ones (reported in ``errors``)."""
    good = [b for b in batch if b[4] is None]
    errors = [b[4] for b in batch if b[4] is not None]
    if not good:
        return None, None, None, None, errors
    x = torch.stack([b[0] for b in good])
    labels = torch.tensor([b[1] for b in good], dtype=torch.long)
    groups = torch.tensor([b[2] for b in good], dtype=torch.long)
    index = torch.tensor([b[3] for b in good], dtype=torch.long)
    return x, labels, groups, index, errors


@dataclass
class ImageData:
    """A dataset with named classes, optional groups, and one or more splits."""

    spec: str
    class_names: list[str]
    group_names: list[str] = field(default_factory=list)
    records: dict[str, list[Record]] = field(default_factory=dict)  # folder and CSV data
    torchvision_splits: dict[str, object] = field(default_factory=dict)  # torchvision data
    class_order: str = ""  # where the class order came from ("" = alphabetical / natural)
    extra_names: list[str] = field(default_factory=list)  # names of that order the data has no class for

    @property
    def splits(self) -> list[str]:
        return list(self.records) or list(self.torchvision_splits)

    def resolve_split(self, split: str) -> str:
        split = SPLIT_ALIASES.get(split, split)
        if split in self.splits:
            return split
        if self.splits == ["all"]:
            return "all"
        raise NeuroInspectError(f"data '{self.spec}' has no split '{split}'; it has: {', '.join(self.splits)}")

    def dataset(self, split: str, transform: Callable | None) -> torch.utils.data.Dataset:
        split = self.resolve_split(split)
        if split in self.records:
            return _RecordDataset(self.records[split], transform)
        return _TorchvisionDataset(self.torchvision_splits[split], transform)

    def ids(self, split: str) -> list[str]:
        split = self.resolve_split(split)
        if split in self.records:
            return [r.path for r in self.records[split]]
        return [f"{self.spec}[{split}][{i}]" for i in range(len(self.torchvision_splits[split]))]

    def __len__(self):
        return sum(len(self.ids(s)) for s in self.splits)

    def size(self, split: str) -> int:
        return len(self.ids(split))

    def content_hash(self, split: str, index_dir: str | os.PathLike | None = None, verify: bool = False) -> str:
        """A hash of what the split holds: class and group names, and every image's bytes, label and group.

        Hashing the bytes is what makes a replaced image (even one copied with the old size and
        modification time) a different dataset. For speed, each file's digest is kept in an index
        under ``index_dir`` keyed by its device, inode, size, modification *and change* time (the
        change time cannot be set back by ``cp -p``/``touch``); ``verify`` re-reads every file.
        """
        split = self.resolve_split(split)
        index = FileHashIndex(index_dir, self.spec, verify=verify)
        h = hashlib.sha256()
        h.update(json.dumps([self.class_names, self.group_names]).encode())
        if split in self.records:
            for r in self.records[split]:
                h.update(f"{r.path}|{index.digest(r.path)}|{r.label}|{r.group}\n".encode())
        else:
            base = self.torchvision_splits[split]
            inner = base.base if isinstance(base, _Relabelled) else base
            if isinstance(inner, _MemorySplit):  # in memory: the images' bytes, labels and groups
                h.update(f"{inner.content_digest()}|{getattr(base, 'remap', None)}".encode())
            else:  # a torchvision dataset read from its root folder: every file under it
                h.update(f"{type(base).__name__}|{len(base)}|{getattr(base, 'root', '')}".encode())
                root = Path(getattr(base, "root", ""))
                if not (str(getattr(base, "root", "")) and root.is_dir()):
                    raise NeuroInspectError(f"cannot key the cache of '{self.spec}': it has no root folder to hash; "
                                            "pass the dataset object itself to Inspector (its images are then hashed)")
                for p in sorted(root.rglob("*")):
                    if p.is_file():
                        h.update(f"{p}|{index.digest(str(p))}\n".encode())
        index.save()
        return h.hexdigest()[:24]

    def cache_refusal(self, split: str) -> str | None:
        """Why the features of ``split`` cannot be cached (``None``: they can): an in-memory dataset whose
        content cannot be hashed, or that gives different images for the same index."""
        base = self.torchvision_splits.get(self.resolve_split(split))
        if base is None:
            return None
        inner = base.base if isinstance(base, _Relabelled) else base
        if isinstance(inner, _MemorySplit):
            return inner.refusal()
        root = str(getattr(base, "root", "") or "")
        if not (root and Path(root).is_dir()):
            return (f"'{self.spec}' has no root folder whose files could be hashed; pass the dataset object to "
                    "Inspector instead (its images are then hashed)")
        return None

    listing_hash = content_hash  # the older name

    def class_index(self, name_or_index: str | int) -> int:
        return class_index(self.class_names, name_or_index)

    def with_class_order(self, names: list[str], source: str = "--class-names") -> "ImageData":
        """The same data with class indices following ``names`` (e.g. the order the model was trained with).

        Every class of the data must appear in ``names``; ``names`` may hold more (a model with
        1000 outputs and a folder of a few of them).
        """
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise NeuroInspectError(f"{source} lists {', '.join(dup[:3])} more than once; give each class once")
        missing = [c for c in self.class_names if c not in names]
        if missing:
            raise NeuroInspectError(
                f"{source} does not name the data's class(es) {', '.join(repr(m) for m in missing[:4])}"
                f"{' …' if len(missing) > 4 else ''}; list every class once, in the model's order"
            )
        if names == list(self.class_names):
            return self
        remap = [names.index(c) for c in self.class_names]
        records = {split: [Record(r.path, remap[r.label] if r.label >= 0 else r.label, r.group) for r in recs]
                   for split, recs in self.records.items()}
        tv = {split: _Relabelled(base, remap) for split, base in self.torchvision_splits.items()}
        extra = [n for n in names if n not in self.class_names]
        return ImageData(self.spec, names, list(self.group_names), records, tv, extra_names=extra)


# --------------------------------------------------------------------------- in-memory data
IN_MEMORY = "a torch Dataset, tensors (images, labels[, groups]), (PIL images, labels) or {split: one of these}"


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
        named = class_names or sorted(set(labels), key=_natural_key)
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


def class_index(class_names: list[str], name_or_index: str | int) -> int:
    """Resolve a class given by name or index; unknown names get close suggestions."""
    if isinstance(name_or_index, int) or (isinstance(name_or_index, str) and name_or_index.isdigit()
                                          and name_or_index not in class_names):
        i = int(name_or_index)
        if not 0 <= i < len(class_names):
            raise NeuroInspectError(f"class index {i} is out of range: there are {len(class_names)} classes (0–{len(class_names) - 1})")
        return i
    if name_or_index in class_names:
        return class_names.index(name_or_index)
    lowered = {c.lower(): i for i, c in enumerate(class_names)}
    if name_or_index.lower() in lowered:
        return lowered[name_or_index.lower()]
    close = difflib.get_close_matches(name_or_index, class_names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else "run `neuroinspect classes --data …` to list them"
    raise NeuroInspectError(f"unknown class '{name_or_index}'; {hint}")


class FileHashIndex:
    """Digests of files' bytes (BLAKE2b), remembered per (device, inode, size, mtime, ctime)."""

    def __init__(self, folder: str | os.PathLike | None, spec: str, verify: bool = False):
        self.path = None if folder is None else Path(folder) / (hashlib.sha256(spec.encode()).hexdigest()[:24] + ".json")
        self.verify = verify
        self.entries: dict[str, list] = {}
        self.changed = False
        if self.path is not None and self.path.is_file() and not verify:
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}

    def digest(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        known = self.entries.get(path)
        if known and known[:5] == stamp and not self.verify:
            return known[5]
        h = hashlib.blake2b(digest_size=16)
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return "unreadable"
        self.entries[path] = stamp + [h.hexdigest()]
        self.changed = True
        return h.hexdigest()

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        try:
            write_text(self.path, json.dumps(self.entries))
        except (OSError, NeuroInspectError):  # only a speed-up: a read-only cache just hashes again
            pass
        self.changed = False


# --------------------------------------------------------------------------- loaders
def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _from_folder(root: Path) -> ImageData:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = {SPLIT_ALIASES[p.name.lower()]: p for p in subdirs if p.name.lower() in SPLIT_ALIASES}
    layout = split_dirs if split_dirs else {"all": root}
    classes = sorted({c.name for d in layout.values() for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")})
    if not classes:
        raise NeuroInspectError(f"image folder '{root}' has no class sub-folders; expected ROOT/CLASS/*.jpg or ROOT/train/CLASS/*.jpg")
    records = {}
    for split, d in layout.items():
        recs = []
        for ci, cname in enumerate(classes):
            cdir = d / cname
            if cdir.is_dir():
                recs.extend(Record(str(p), ci) for p in _images_under(cdir))
        records[split] = recs
    return ImageData(str(root), classes, [], records)


def _natural_key(label: str):
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _from_csv(path: Path) -> ImageData:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the header
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        for need in ("path", "label"):
            if need not in fields:
                raise NeuroInspectError(f"manifest '{path}' needs a header with columns path,label[,split][,group]; found: {', '.join(fields) or 'nothing'}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise NeuroInspectError(f"manifest '{path}' lists no images")
    seen, unique = set(), []
    for r in rows:
        key = (r["path"], r["label"], r.get("split", ""), r.get("group", ""))
        if key not in seen:
            seen.add(key)
            unique.append(r)
    if len(unique) < len(rows):
        log.warning("warning: manifest '%s' repeats %d row(s) exactly (same path, label, split and group); "
                    "each image is used once", path, len(rows) - len(unique))
        rows = unique
    classes = sorted({r["label"] for r in rows}, key=_natural_key)
    has_groups = "group" in fields and any(r.get("group") for r in rows)
    groups = sorted({r["group"] for r in rows if r.get("group")}) if has_groups else []
    records: dict[str, list[Record]] = {}
    for r in rows:
        split = SPLIT_ALIASES.get(r.get("split", "").lower(), r.get("split") or "all")
        p = Path(r["path"])
        p = p if p.is_absolute() else path.parent.absolute() / p
        g = groups.index(r["group"]) if has_groups and r.get("group") else -1
        records.setdefault(split, []).append(Record(str(p), classes.index(r["label"]), g))
    return ImageData(str(path), [str(c) for c in classes], groups, records)


TORCHVISION_SPLITS = {
    # name -> {our split: constructor kwargs}
    "Flowers102": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "Food101": {"train": {"split": "train"}, "test": {"split": "test"}},
    "OxfordIIITPet": {"train": {"split": "trainval"}, "test": {"split": "test"}},
    "DTD": {"train": {"split": "train"}, "val": {"split": "val"}, "test": {"split": "test"}},
    "StanfordCars": {"train": {"split": "train"}, "test": {"split": "test"}},
    "Country211": {"train": {"split": "train"}, "val": {"split": "valid"}, "test": {"split": "test"}},
    "GTSRB": {"train": {"split": "train"}, "test": {"split": "test"}},
    "SVHN": {"train": {"split": "train"}, "test": {"split": "test"}},
}


def _from_torchvision(name: str, root: str, download: bool) -> ImageData:
    cls = getattr(D, name, None)
    if cls is None:
        raise NeuroInspectError(f"torchvision has no dataset '{name}'")
    splits = TORCHVISION_SPLITS.get(name, {"train": {"train": True}, "test": {"train": False}})
    built = {}
    for split, kwargs in splits.items():
        try:
            built[split] = cls(root, download=download, **kwargs)
        except RuntimeError as err:
            if not download:
                raise NeuroInspectError(
                    f"torchvision {name} not found under '{root}' ({first_line(err)}); pass --download to fetch it"
                ) from None
            raise NeuroInspectError(f"could not download torchvision {name}: {err}") from None
    first = next(iter(built.values()))
    names = getattr(first, "classes", None)
    if not names:
        labels = getattr(first, "_labels", None) or getattr(first, "targets", None) or []
        n = int(max(labels)) + 1 if len(labels) else 0
        names = [f"class_{i}" for i in range(n)]
    return ImageData(f"torchvision:{name}:{root}", [str(c) for c in names], [], {}, built)


CLASSES_FILE = "classes.txt"


def parse_class_names(text: str | os.PathLike | list[str]) -> list[str]:
    """``--class-names``: a file with one name per line, or ``a,b,c``."""
    if isinstance(text, (list, tuple)):
        return [str(t) for t in text]
    text = str(text)
    p = Path(text).expanduser()
    if p.is_file():
        try:
            lines = p.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark is not part of a name
        except (OSError, UnicodeDecodeError) as err:
            raise NeuroInspectError(f"cannot read the class names file '{p}': {err}") from None
        names = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    elif "," in text or not (os.sep in text or text.endswith(".txt")):
        names = [t.strip() for t in text.split(",") if t.strip()]
    else:
        raise NeuroInspectError(f"class names file '{text}' does not exist; give a file with one name per line or a,b,c")
    if not names:
        raise NeuroInspectError(f"--class-names '{text}' holds no names; give a file with one name per line or a,b,c")
    return names


def load_data(spec: str | os.PathLike, download: bool = False, class_names: str | list[str] | None = None) -> ImageData:
    """Open the dataset named by ``spec`` (see the module docstring).

    Classes are ordered alphabetically (folders) or naturally (CSV labels) unless ``class_names``
    (a list, a file with one name per line, or ``a,b,c``) or a ``classes.txt`` beside the data
    gives the order; that order is the model's output order.
    """
    spec = str(spec)
    # lazy: core.datasets builds on this module (ImageData, Record); waterbirds:, metashift:, Flowers102/Food101
    from neuroinspect.core.datasets import load_special

    beside = None
    special = load_special(spec, download)
    if special is not None:
        data = special
    elif spec.startswith("torchvision:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[2]:
            raise NeuroInspectError(f"data spec '{spec}' should be torchvision:NAME:ROOT")
        data = _from_torchvision(parts[1], parts[2], download)
    else:
        path = Path(spec).expanduser().absolute()
        if not path.exists():
            raise NeuroInspectError(f"data '{spec}' does not exist; give an image folder, a CSV manifest or torchvision:NAME:ROOT")
        if path.is_file():
            if path.suffix.lower() != ".csv":
                raise NeuroInspectError(f"data file '{spec}' is not a .csv manifest")
            data = _from_csv(path)
            beside = path.parent / CLASSES_FILE
        else:
            data = _from_folder(path)
            beside = path / CLASSES_FILE
        data.spec = spec
    if class_names is not None:
        data = data.with_class_order(parse_class_names(class_names))
        data.class_order = "--class-names"
    elif beside is not None and beside.is_file():
        data = data.with_class_order(parse_class_names(str(beside)), source=str(beside))
        data.class_order = str(beside)
    return data

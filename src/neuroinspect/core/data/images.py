"""What every data source gives: an :class:`ImageData` of named classes, optional groups and splits.

Images are read lazily as ``(image, label, group, index, error)`` items; an unreadable or absurdly
thin image becomes an error line, not a crash. A split is either a list of :class:`Record` (files on
disk, hashed by their bytes for the feature cache) or an indexable dataset of ``(image, label[, group])``
(torchvision's, or in-memory data; one with a ``content_digest()`` method is keyed by that).
The sources themselves (folders, CSV manifests, torchvision, the paper's datasets, in-memory data)
are registered in :mod:`neuroinspect.core.data.registry` and opened by :func:`neuroinspect.core.data.load.load_data`.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import write_text

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
            if hasattr(inner, "content_digest"):  # in memory: the images' bytes, labels and groups
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
        if hasattr(inner, "content_digest"):  # in memory: it says itself whether it can be hashed
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



def natural_key(label: str):
    """Sort key putting integer labels first, in numeric order, then the other labels alphabetically."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


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



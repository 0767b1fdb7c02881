"""torchvision datasets: ``torchvision:NAME:ROOT`` (Flowers102, Food101, CIFAR10, FashionMNIST, …).

Downloading happens only with ``download=True`` (``--download``). Most datasets are read through
torchvision's own class, with its train/test (or train/val/test) splits; two are read from their
files in the splits the paper uses, so that their images are records on disk:

``torchvision:Flowers102:ROOT``
    Read from torchvision's layout, ``ROOT/flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat,
    setid.mat}`` (``--download`` fetches it with torchvision first). The official splits map
    one to one: ``trnid`` → train (10 per class), ``valid`` → val (10 per class), ``tstid`` →
    test. Class names are torchvision's.

``torchvision:Food101:ROOT``
    Read from torchvision's layout, ``ROOT/food-101/{images/<class>/<id>.jpg,
    meta/train.json, meta/test.json}``. Food-101 has no validation split: as in the paper's
    appendix, 15 % of each class's official training images (a fixed draw, seed 0, over the
    sorted ids) become ``val`` and the other 85 % ``train``; the official test set is ``test``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torchvision.datasets as D

from neuroinspect.core.base.errors import NeuroInspectError, first_line
from neuroinspect.core.data.images import ImageData, Record
from neuroinspect.core.data.registry import data_source

FOOD101_VAL_FRACTION = 0.15

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


@data_source("torchvision")
def load_torchvision(rest: str, download: bool = False) -> ImageData:
    """``torchvision:NAME:ROOT``, given the part after ``torchvision:``."""
    name, colon, root = rest.partition(":")
    if not (colon and root):
        raise NeuroInspectError(f"data spec 'torchvision:{rest}' should be torchvision:NAME:ROOT")
    layout = PAPER_LAYOUTS.get(name)
    return layout(root, download) if layout else _from_torchvision(name, root, download)


def _download(name: str, root: str, download: bool) -> None:
    if not download:
        return
    try:
        getattr(D, name)(root, split="test", download=True)
    except Exception as err:  # network or disk trouble: one line
        raise NeuroInspectError(f"could not download torchvision {name}: {first_line(err)}") from None


def load_flowers102(root: str, download: bool = False) -> ImageData:
    _download("Flowers102", root, download)
    base = Path(root).expanduser() / "flowers-102"
    needed = [base / "imagelabels.mat", base / "setid.mat", base / "jpg"]
    if not all(p.exists() for p in needed):
        raise NeuroInspectError(f"torchvision Flowers102 not found under '{root}' (needs flowers-102/imagelabels.mat, "
                                "setid.mat and jpg/); pass --download to fetch it")
    from scipy.io import loadmat  # lazy: scipy.io costs ~0.5 s and only Flowers102 reads .mat files

    try:
        labels = np.asarray(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]).reshape(-1) - 1
        setid = loadmat(base / "setid.mat", squeeze_me=True)
        ids = {split: np.asarray(setid[key]).reshape(-1).tolist()
               for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid"))}
    except (KeyError, ValueError, OSError) as err:
        raise NeuroInspectError(f"cannot read Flowers102's .mat files under '{base}': {err}") from None
    names = flowers102_classes()
    if labels.min() < 0 or labels.max() >= len(names):
        raise NeuroInspectError(f"{base / 'imagelabels.mat'} has labels outside 1–{len(names)}")
    records = {split: [Record(str(base / "jpg" / f"image_{i:05d}.jpg"), int(labels[i - 1])) for i in image_ids]
               for split, image_ids in ids.items()}
    return ImageData(f"torchvision:Flowers102:{root}", names, [], records)


def flowers102_classes() -> list[str]:
    """The 102 flower names torchvision gives Flowers102 (no download)."""
    names = getattr(D.Flowers102, "classes", None)
    if not names:  # older torchvision: numbered classes
        return [f"flower_{i}" for i in range(1, 103)]
    return list(names)


def load_food101(root: str, download: bool = False, val_fraction: float = FOOD101_VAL_FRACTION,
                 seed: int = 0) -> ImageData:
    _download("Food101", root, download)
    base = Path(root).expanduser() / "food-101"
    meta = {s: base / "meta" / f"{s}.json" for s in ("train", "test")}
    if not all(p.is_file() for p in meta.values()) or not (base / "images").is_dir():
        raise NeuroInspectError(f"torchvision Food101 not found under '{root}' (needs food-101/meta/train.json, "
                                "meta/test.json and images/); pass --download to fetch it")
    try:
        listing = {s: json.loads(p.read_text(encoding="utf-8")) for s, p in meta.items()}
    except ValueError as err:
        raise NeuroInspectError(f"cannot read Food101 metadata under '{base}': {err}") from None
    classes = sorted(listing["train"])  # torchvision's order
    records: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(seed)

    def path(rel: str) -> str:
        return str(base / "images" / f"{rel}.jpg")

    for ci, cls in enumerate(classes):
        files = sorted(listing["train"][cls])
        n_val = int(round(len(files) * val_fraction))
        chosen = set(rng.permutation(len(files))[:n_val].tolist())
        for k, rel in enumerate(files):
            records["val" if k in chosen else "train"].append(Record(path(rel), ci))
        records["test"].extend(Record(path(rel), ci) for rel in sorted(listing["test"].get(cls, [])))
    return ImageData(f"torchvision:Food101:{root}", classes, [], records)


# the datasets read from their files, in the paper's splits, rather than through torchvision's class
PAPER_LAYOUTS = {"Flowers102": load_flowers102, "Food101": load_food101}

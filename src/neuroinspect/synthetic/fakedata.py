"""Tiny fake copies of the paper's dataset layouts, for tests and ``--smoke`` runs.

Each builder writes a handful of generated images in exactly the layout the real dataset
ships in (see :mod:`neuroinspect.core.data.paper` and :mod:`neuroinspect.core.data.torchvision_data`),
so the data specs, ``train`` and the experiment recipes run end to end without the real data.
The images are coloured squares on a coloured background (class → square colour,
attribute/place → background), small enough to build in well under a second; the numbers they
give mean nothing about the real datasets.

:func:`tiny_cnn` is a small random-weight CNN (32 px input) that trains in seconds on CPU:
``--model neuroinspect.synthetic.fakedata:tiny_cnn``.
"""
from __future__ import annotations

import csv
import colorsys
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from neuroinspect.core.data.paper import METASHIFT_CLASSES, METASHIFT_IMAGES
from neuroinspect.core.model.models import Preprocess

SIZE = 32


def _image(rng: np.random.Generator, fg: tuple, bg: tuple, size: int = SIZE, scale: float = 0.5,
           distractor: float = 0.0) -> Image.Image:
    """A ``fg`` square (side ``scale`` × size) at a random place on a ``bg`` background; with probability
    ``distractor`` a second square of a random colour, so that a small model still makes mistakes."""
    img = np.ones((size, size, 3)) * np.asarray(bg, dtype=float)
    s = max(2, int(size * scale))
    y, x = rng.integers(0, size - s + 1, 2)
    img[y:y + s, x:x + s] = fg
    if rng.random() < distractor:
        y, x = rng.integers(0, size - s + 1, 2)
        img[y:y + s, x:x + s] = rng.random(3)
    img += rng.normal(0, 0.04, img.shape)
    return Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def _colour(k: int, n: int) -> tuple:
    """``n`` well-separated colours on the hue circle."""
    return colorsys.hsv_to_rgb((k / max(n, 1)) % 1.0, 0.85, 0.9)


def make_waterbirds(root: str | Path, n: dict | None = None, seed: int = 0) -> Path:
    """``ROOT/metadata.csv`` + ``ROOT/<species folder>/<name>.jpg`` like the released Waterbirds.

    ``n[split][(y, place)]`` images per split and group; by default the training split is
    correlated (4 majority, 1 minority image per class) and val/test are balanced (2 each).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    n = n or {0: {(0, 0): 4, (0, 1): 1, (1, 0): 1, (1, 1): 4},
              1: {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2},
              2: {(0, 0): 2, (0, 1): 2, (1, 0): 2, (1, 1): 2}}
    birds = {0: (0.6, 0.45, 0.3), 1: (0.7, 0.55, 0.4)}  # similar birds: the background is the easy cue
    places = {0: (0.2, 0.6, 0.2), 1: (0.1, 0.3, 0.8)}  # green land, blue water
    rows, k = [], 0
    for split, counts in n.items():
        for (y, place), count in counts.items():
            folder = ("001.Black_footed_Albatross", "010.Red_winged_Blackbird")[1 - y]
            for _ in range(count):
                k += 1
                rel = f"{folder}/{folder.split('.')[1]}_{k:04d}.jpg"
                (root / folder).mkdir(parents=True, exist_ok=True)
                _image(rng, birds[y], places[place], scale=0.25).save(root / rel, quality=95)
                rows.append([k, rel, y, split, place, f"fake/{k}.jpg"])
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["img_id", "img_filename", "y", "split", "place", "place_filename"])
        w.writerows(rows)
    return root


METASHIFT_ATTRIBUTES = ["chair", "water", "book", "sand", "keyboard", "grass"]


def make_metashift(root: str | Path, per_subset: int = 4, seed: int = 0, fmt: str = "pkl") -> Path:
    """``ROOT/full-candidate-subsets.pkl`` + ``ROOT/allImages/images/<id>.jpg`` like MetaShift.

    Every class gets ``per_subset`` images in each attribute subset ``"<class>(<attribute>)"``.
    """
    root = Path(root)
    images = root / METASHIFT_IMAGES
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subsets: dict[str, list[str]] = {}
    k = 0
    for ci, cls in enumerate(METASHIFT_CLASSES):
        for ai, attr in enumerate(METASHIFT_ATTRIBUTES):
            ids = []
            for _ in range(per_subset):
                k += 1
                ident = f"{2300000 + k}"
                _image(rng, _colour(ci, len(METASHIFT_CLASSES)), _colour(ai + 0.5, len(METASHIFT_ATTRIBUTES)),
                       scale=0.3, distractor=0.3).save(
                    images / f"{ident}.jpg", quality=95)
                ids.append(ident)
            subsets[f"{cls}({attr})"] = ids
    if fmt == "json":
        (root / "full-candidate-subsets.json").write_text(json.dumps(subsets))
    else:
        with open(root / "full-candidate-subsets.pkl", "wb") as f:
            pickle.dump({k: set(v) for k, v in subsets.items()}, f, protocol=2)
    return root


def make_flowers102(root: str | Path, per_split: tuple[int, int, int] = (1, 1, 1), seed: int = 0) -> Path:
    """``ROOT/flowers-102/{jpg/image_NNNNN.jpg, imagelabels.mat, setid.mat}`` as torchvision reads it.

    All 102 classes get ``per_split`` = (train, val, test) images, 16 px to stay quick.
    """
    from scipy.io import savemat  # lazy: scipy.io costs ~0.5 s and only the fake Flowers102 writes .mat files

    base = Path(root) / "flowers-102"
    (base / "jpg").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels, ids = [], {"trnid": [], "valid": [], "tstid": []}
    image_id = 0
    for c in range(102):
        for key, count in zip(ids, per_split):
            for _ in range(count):
                image_id += 1
                _image(rng, _colour(c, 102), (0.5, 0.5, 0.5), size=16, distractor=0.5).save(base / "jpg" / f"image_{image_id:05d}.jpg")
                labels.append(c + 1)  # 1-based, as in the release
                ids[key].append(image_id)
    savemat(base / "imagelabels.mat", {"labels": np.asarray(labels, dtype=np.uint8)[None, :]})
    savemat(base / "setid.mat", {k: np.asarray(v, dtype=np.uint16)[None, :] for k, v in ids.items()})
    return Path(root)


def make_food101(root: str | Path, classes: int = 5, train_per_class: int = 7, test_per_class: int = 2,
                 seed: int = 0) -> Path:
    """``ROOT/food-101/{images/<class>/<id>.jpg, meta/train.json, meta/test.json}`` as torchvision reads it."""
    base = Path(root) / "food-101"
    (base / "meta").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad",
             "beignets", "bibimbap", "bread_pudding", "breakfast_burrito"][:classes]
    meta = {"train": {}, "test": {}}
    k = 0
    for ci, name in enumerate(names):
        (base / "images" / name).mkdir(parents=True, exist_ok=True)
        for split, count in (("train", train_per_class), ("test", test_per_class)):
            meta[split][name] = []
            for _ in range(count):
                k += 1
                _image(rng, _colour(ci, len(names)), (0.9, 0.9, 0.85), scale=0.3, distractor=0.5).save(base / "images" / name / f"{k}.jpg")
                meta[split][name].append(f"{name}/{k}")
    for split, listing in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(listing))
    return Path(root)


class TinyCNN(nn.Module):
    """Two conv blocks, global pooling and a linear head (D = 32): trains in seconds on CPU."""

    def __init__(self, num_classes: int = 2, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(width, num_classes)
        self.neuroinspect_preprocess = Preprocess(SIZE, SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def forward(self, x):
        return self.fc(self.features(x))


def tiny_cnn(num_classes: int = 2) -> TinyCNN:
    return TinyCNN(num_classes)

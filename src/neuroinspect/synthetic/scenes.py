""""Spurious scenes": a small benchmark with a false correlation planted on purpose.

Fashion-MNIST items are pasted onto crops of real photographs. The photographs
come in two *background families* (by default A = nature: trees, water, a flower,
grass; B = indoor: a coffee cup, a cat, a motorcycle in a garage, a portrait). In
the training split one class (the *spurious class*) sits on family A in
``correlation`` of its images while every other class sits on family B in the same
share of its images, so a classifier can get most training images right by looking
at the background alone. Validation and test are balanced (half of every class on
each family), so the *minority groups* -- the spurious class on B, the other classes
on A -- expose a model that took the shortcut. Groups are class x family, named
like ``"Coat/A-nature"``, in the spirit of Waterbirds and MetaShift.

With ``cue="stamp"`` the shortcut is a *local artefact* instead: every image gets a background
from either family at random, and "family A" becomes a small red badge in a random corner (like a
watermark or a logo), present on ``correlation`` of the spurious class's training images and
on the others' in the remaining share. Groups are then named like ``"Coat/stamp"`` and ``"Coat/plain"``.

The result is an ordinary image folder ``ROOT/{train,val,test}/CLASS/*.png`` plus a
CSV manifest ``path,label,split,group`` (paths relative to the CSV) that every
command accepts as ``--data``. It is built once per set of parameters into a cache
folder, atomically, and the same parameters and seed give byte-identical files.

>>> from neuroinspect.synthetic.scenes import make_scenes
>>> manifest = make_scenes()          # ~/.cache/neuroinspect/scenes/scenes-<key>/manifest.csv
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import default_cache_dir
from neuroinspect.core.runtime.progress import progress_bar

# Bump when the drawing code changes, so old caches are not served for new code.
GENERATOR_VERSION = 1

#: Fashion-MNIST's ten classes, with names that are safe as folder names.
FASHION_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
_ALIASES = {"t-shirt/top": "T-shirt", "tshirt": "T-shirt", "top": "T-shirt", "ankle boot": "Ankle-boot", "ankle_boot": "Ankle-boot", "boot": "Ankle-boot"}

#: Photos each background family is cropped from (names from ``skimage.data`` or
#: ``sklearn:`` + a file of ``sklearn.datasets.load_sample_images``).
DEFAULT_FAMILIES: dict[str, tuple[str, ...]] = {
    "A-nature": ("sklearn:china.jpg", "sklearn:flower.jpg", "grass"),
    "B-indoor": ("coffee", "chelsea", "stereo_motorcycle", "astronaut"),
}

#: Tints for the items, drawn independently of class and background.
_TINTS = np.array(
    [
        [255, 255, 255], [255, 236, 150], [150, 220, 255], [255, 170, 200],
        [190, 255, 170], [255, 200, 140], [210, 190, 255], [170, 255, 235],
    ],
    dtype=np.float32,
)

SPLITS = ("train", "val", "test")
CUES = ("background", "stamp")
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


@dataclass(frozen=True)
class ScenesConfig:
    """Every parameter of the benchmark; two equal configs give byte-identical datasets.

    ``n_train``, ``n_val`` and ``n_test`` count images *per class*.
    """

    classes: tuple[str, ...] = ("T-shirt", "Pullover", "Coat", "Bag")
    spurious_class: str = "Coat"
    correlation: float = 0.95
    size: int = 96
    n_train: int = 250
    n_val: int = 80
    n_test: int = 150
    seed: int = 0
    item_scale: tuple[float, float] = (0.5, 0.62)
    families: tuple[tuple[str, tuple[str, ...]], ...] = tuple(DEFAULT_FAMILIES.items())
    cue: str = "background"  # what the shortcut is: the background family, or a small "stamp" in a corner

    def __post_init__(self):
        classes = tuple(canonical_class(c) for c in self.classes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "spurious_class", canonical_class(self.spurious_class))
        fams = self.families.items() if isinstance(self.families, dict) else self.families
        object.__setattr__(self, "families", tuple((str(k), tuple(v)) for k, v in fams))
        object.__setattr__(self, "item_scale", tuple(float(s) for s in self.item_scale))
        self.validate()

    def validate(self) -> None:
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise NeuroInspectError(f"scenes need at least two distinct classes; got {list(self.classes)}")
        if self.spurious_class not in self.classes:
            raise NeuroInspectError(
                f"spurious class '{self.spurious_class}' is not one of the classes {list(self.classes)}; pick one of them"
            )
        if not 0.5 <= self.correlation <= 1.0:
            raise NeuroInspectError(f"correlation must be between 0.5 and 1.0; got {self.correlation}")
        if self.seed < 0:
            raise NeuroInspectError(f"seed must be a non-negative integer; got {self.seed}")
        if self.size < 32:
            raise NeuroInspectError(f"image size must be at least 32 pixels; got {self.size}")
        for name in ("n_train", "n_val", "n_test"):
            n = getattr(self, name)
            if n < 2:
                raise NeuroInspectError(f"{name} (images per class) must be at least 2; got {n}")
        if self.n_train > 6000 or self.n_val + self.n_test > 1000:
            raise NeuroInspectError(
                "Fashion-MNIST has 6000 training and 1000 test items per class: "
                f"n_train={self.n_train} must be <= 6000 and n_val + n_test={self.n_val + self.n_test} <= 1000"
            )
        lo, hi = self.item_scale
        if not 0.2 <= lo <= hi <= 1.0:
            raise NeuroInspectError(f"item_scale must satisfy 0.2 <= low <= high <= 1; got {self.item_scale}")
        if self.cue not in CUES:
            raise NeuroInspectError(f"cue must be one of {', '.join(CUES)}; got '{self.cue}'")
        if len(self.families) != 2 or any(not photos for _, photos in self.families):
            raise NeuroInspectError("scenes need exactly two background families, each with at least one photo")

    # ----------------------------------------------------------------- derived
    @property
    def family_names(self) -> tuple[str, str]:
        """The two values of the shortcut's attribute: the background families, or stamp / plain."""
        if self.cue == "stamp":
            return "stamp", "plain"
        return self.families[0][0], self.families[1][0]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["item_scale"] = list(self.item_scale)
        d["families"] = {k: list(v) for k, v in self.families}
        if self.cue == "background":  # the original benchmark: its key (and so every cache of it) stays as it was
            del d["cue"]
        return d

    def key(self) -> str:
        blob = json.dumps({"version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def group_name(self, cls: str, family: int) -> str:
        return f"{cls}/{self.family_names[family]}"

    def n_per_class(self, split: str) -> int:
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]

    def majority_family(self, cls: str) -> int:
        """0 (family A) for the spurious class, 1 (family B) for the others."""
        return 0 if cls == self.spurious_class else 1

    def family_counts(self, split: str, cls: str) -> tuple[int, int]:
        """How many images of ``cls`` sit on family A and on family B in ``split``."""
        n = self.n_per_class(split)
        if split == "train":
            major = int(round(self.correlation * n))
            counts = [n - major, n - major]
            counts[self.majority_family(cls)] = major
            return counts[0], counts[1]
        return n - n // 2, n // 2


def canonical_class(name: str | int) -> str:
    """The benchmark's name for a Fashion-MNIST class given its name (any case, original or folder-safe) or index."""
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        i = int(name)
        if not 0 <= i < len(FASHION_CLASSES):
            raise NeuroInspectError(f"Fashion-MNIST class index {i} is out of range 0-9")
        return FASHION_CLASSES[i]
    low = str(name).strip().lower()
    low = _ALIASES.get(low, low)
    for c in FASHION_CLASSES:
        if c.lower() == low.lower():
            return c
    raise NeuroInspectError(f"unknown Fashion-MNIST class '{name}'; choose from {', '.join(FASHION_CLASSES)}")


# --------------------------------------------------------------------------- sources
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, n = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    if magic == 2049:
        return np.frombuffer(data, dtype=np.uint8, offset=8).reshape(n)
    raise NeuroInspectError(f"'{path}' is not a Fashion-MNIST idx file (magic number {magic})")


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(part: str, cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``part`` ("train" or "t10k") as ``(images [N,28,28] uint8, labels [N] uint8)``.

    Read from the Debian package ``dataset-fashion-mnist`` when it is installed (or a folder
    named by ``NEUROINSPECT_FASHION_MNIST``), else downloaded once with torchvision into ``cache_dir``.
    """
    folders = [os.environ["NEUROINSPECT_FASHION_MNIST"]] if os.environ.get("NEUROINSPECT_FASHION_MNIST") else []
    for folder in map(Path, [*folders, *FASHION_MNIST_DIRS]):
        img, lab = _find_idx(folder, f"{part}-images-idx3-ubyte"), _find_idx(folder, f"{part}-labels-idx1-ubyte")
        if img and lab:
            return _read_idx(img), _read_idx(lab)
    try:
        from torchvision.datasets import FashionMNIST  # lazy: only without the Debian package; keeps this module torch-free

        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "scenes"
        root = root / "fashion-mnist-download"
        ds = FashionMNIST(str(root), train=(part == "train"), download=True)
    except Exception as err:  # no Debian package and no network
        raise NeuroInspectError(
            "Fashion-MNIST is not available: install the Debian package 'dataset-fashion-mnist' "
            f"or allow torchvision to download it ({type(err).__name__}: {err})"
        ) from None
    return ds.data.numpy().astype(np.uint8), ds.targets.numpy().astype(np.uint8)


# A pure function of the name (the photos ship with the packages), so a bounded memo of its results
# is safe: nothing to invalidate, no object to pass around; the arrays are read-only so no caller
# can change what the next one gets. (`load_photo.cache_clear()` empties it.)
@functools.lru_cache(maxsize=32)
def load_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo shipped with scikit-image (``skimage.data.NAME``) or scikit-learn (``sklearn:FILE``);
    read-only, loaded once per name."""
    try:
        if name.startswith("sklearn:"):
            from sklearn.datasets import load_sample_image  # lazy: seconds to import, only the benchmark needs it

            im = load_sample_image(name.split(":", 1)[1])
        else:
            import skimage.data  # lazy: only the benchmark's builder needs it

            fn = getattr(skimage.data, name, None)
            if fn is None or not callable(fn):
                raise NeuroInspectError(f"skimage.data has no photo '{name}'")
            im = fn()
    except NeuroInspectError:
        raise
    except Exception as err:
        raise NeuroInspectError(f"background photo '{name}' could not be loaded ({type(err).__name__}: {err}); pick another") from None
    if isinstance(im, tuple):  # stereo_motorcycle returns (left, right, disparity)
        im = im[0]
    im = np.asarray(im)
    if im.dtype != np.uint8:
        im = (np.clip(im.astype(np.float64), 0, 1) * 255).round().astype(np.uint8) if im.max() <= 1 else im.astype(np.uint8)
    if im.ndim == 2:
        im = np.stack([im] * 3, axis=-1)
    im = np.ascontiguousarray(im[..., :3])
    im.setflags(write=False)
    return im


# --------------------------------------------------------------------------- drawing
def _background(photo: np.ndarray, size: int, rng: np.random.Generator) -> Image.Image:
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 0.8))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side])
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return crop.resize((size, size), Image.Resampling.BILINEAR)


def compose(background: Image.Image, item: np.ndarray, rng: np.random.Generator, item_scale=(0.5, 0.62)) -> Image.Image:
    """Paste a 28x28 grey Fashion-MNIST ``item`` onto ``background``.

    The item's intensity is its alpha; it is tinted with a light colour and given a dark
    soft outline, so it reads on bright and on dark backgrounds alike.
    """
    size = background.size[0]
    px = int(round(size * rng.uniform(*item_scale)))
    tint = _TINTS[int(rng.integers(len(_TINTS)))]
    flip = rng.random() < 0.5
    jitter = 0.12 * size
    cx = size / 2 + rng.uniform(-jitter, jitter)
    cy = size / 2 + rng.uniform(-jitter, jitter)
    left = int(round(min(max(cx - px / 2, 0), size - px)))
    top = int(round(min(max(cy - px / 2, 0), size - px)))

    glyph = Image.fromarray(item)
    if flip:
        glyph = glyph.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    glyph = glyph.resize((px, px), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (size, size), 0)
    canvas.paste(glyph, (left, top))
    inten = np.asarray(canvas, dtype=np.float32) / 255.0
    alpha = np.clip(inten * 5.0, 0.0, 1.0)  # solid item; its texture lives in the colour
    outline = canvas.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(1.5))
    shadow = np.clip(np.asarray(outline, dtype=np.float32) / 255.0 * 1.6, 0.0, 1.0) * 0.75

    bg = np.asarray(background, dtype=np.float32)
    bg = bg * (1.0 - shadow[..., None])  # darken around the item
    colour = tint[None, None, :] * (0.35 + 0.65 * inten[..., None])
    out = bg * (1.0 - alpha[..., None]) + colour * alpha[..., None]
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def stamp(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Draw a small badge (a red disc with a white ring and bar, a quarter of the side) in a random corner.

    It stands for a watermark or a photographer's logo: a local artefact, not a background."""
    size = image.size[0]
    d = max(6, int(round(size * 0.25)))
    margin = max(1, int(round(size * 0.04)))
    corner = int(rng.integers(4))
    x0 = margin if corner in (0, 2) else size - margin - d
    y0 = margin if corner in (0, 1) else size - margin - d
    yy, xx = np.mgrid[0:d, 0:d].astype(np.float32)
    r = np.hypot(xx - (d - 1) / 2, yy - (d - 1) / 2) / (d / 2)
    badge = np.zeros((d, d, 3), np.float32)
    badge[:] = (220, 30, 40)
    badge[(r > 0.62) & (r < 0.82)] = (255, 255, 255)
    badge[(np.abs(yy - (d - 1) / 2) < d * 0.09) & (r < 0.55)] = (255, 255, 255)
    alpha = (r <= 1.0).astype(np.float32)[..., None]
    out = np.asarray(image, dtype=np.float32).copy()
    patch = out[y0:y0 + d, x0:x0 + d]
    out[y0:y0 + d, x0:x0 + d] = patch * (1 - alpha) + badge * alpha
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------- generator
def _split_items(cfg: ScenesConfig, labels: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Which Fashion-MNIST item indices each (split, class) uses; val and test never share items."""
    chosen: dict[str, dict[str, np.ndarray]] = {s: {} for s in SPLITS}
    for ci, cls in enumerate(cfg.classes):
        label = FASHION_CLASSES.index(cls)
        rng = np.random.default_rng([cfg.seed, 101, label])
        pool = np.flatnonzero(labels["train"] == label)
        chosen["train"][cls] = np.sort(rng.choice(pool, cfg.n_train, replace=False))
        pool = rng.permutation(np.flatnonzero(labels["t10k"] == label))
        chosen["val"][cls] = np.sort(pool[: cfg.n_val])
        chosen["test"][cls] = np.sort(pool[cfg.n_val : cfg.n_val + cfg.n_test])
    return chosen


def _plan(cfg: ScenesConfig) -> list[tuple[str, str, int, int]]:
    """Every image to draw as ``(split, class, index within class, family)``."""
    plan = []
    for si, split in enumerate(SPLITS):
        for ci, cls in enumerate(cfg.classes):
            n_a, n_b = cfg.family_counts(split, cls)
            fams = np.array([0] * n_a + [1] * n_b)
            fams = np.random.default_rng([cfg.seed, 202, si, ci]).permutation(fams)
            plan.extend((split, cls, i, int(f)) for i, f in enumerate(fams))
    return plan


def generate(cfg: ScenesConfig, out_dir: str | os.PathLike, *, progress: bool = True, cache_dir=None) -> Path:
    """Draw the benchmark described by ``cfg`` into ``out_dir`` (must not exist); returns the manifest."""
    out_dir = Path(out_dir)
    images = {p: None for p in ("train", "t10k")}
    labels = {}
    for part in images:
        images[part], labels[part] = load_fashion_mnist(part, cache_dir)
    photos = {name: [load_photo(p) for p in ps] for name, ps in cfg.families}
    fam_photos = [photos[name] for name, _ in cfg.families]
    every_photo = [im for bank in fam_photos for im in bank]
    items = _split_items(cfg, labels)
    rows = []
    plan = _plan(cfg)
    bar = progress_bar(len(plan), "drawing scenes", "img", enabled=progress)
    for split, cls, i, fam in plan:
        bar.update()
        si, ci = SPLITS.index(split), cfg.classes.index(cls)
        rng = np.random.default_rng([cfg.seed, 303, si, ci, i])
        part = "train" if split == "train" else "t10k"
        item = images[part][items[split][cls][i]]
        bank = fam_photos[fam] if cfg.cue == "background" else every_photo  # a stamp: any background
        photo = bank[int(rng.integers(len(bank)))]
        img = compose(_background(photo, cfg.size, rng), item, rng, cfg.item_scale)
        if cfg.cue == "stamp" and fam == 0:
            img = stamp(img, rng)
        rel = Path(split) / cls / f"{i:05d}.png"
        (out_dir / rel.parent).mkdir(parents=True, exist_ok=True)
        img.save(out_dir / rel, format="PNG", optimize=False, compress_level=6)
        rows.append([rel.as_posix(), cls, split, cfg.group_name(cls, fam)])
    bar.close()

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "split", "group"])
    writer.writerows(rows)
    counts = {
        split: {cfg.group_name(c, f): int(cfg.family_counts(split, c)[f]) for c in cfg.classes for f in (0, 1)}
        for split in SPLITS
    }
    info = {"generator_version": GENERATOR_VERSION, "key": cfg.key(), "config": cfg.to_dict(), "group_counts": counts}
    (out_dir / "scenes.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out_dir / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")
    return out_dir / "manifest.csv"


def make_scenes(root: str | os.PathLike | None = None, config: ScenesConfig | None = None, *, progress: bool = True,
                **overrides) -> Path:
    """Build (once) the spurious-scenes benchmark and return the path of its CSV manifest.

    ``config`` (default :class:`ScenesConfig`) with any of its fields replaced by ``overrides``
    (e.g. ``n_train=40``; ``families`` may be a dict). ``root`` is the cache folder (default
    ``$NEUROINSPECT_CACHE/scenes``, i.e. ``~/.cache/neuroinspect/scenes``); the dataset goes into
    ``root/scenes-<key>/`` where the key hashes every parameter, so a second call with the same
    parameters returns at once and different parameters never collide. Sizes count images per class.
    """
    cfg = config or ScenesConfig()
    if overrides:
        unknown = sorted(set(overrides) - {f.name for f in fields(ScenesConfig)})
        if unknown:
            raise NeuroInspectError(f"make_scenes got unknown settings {unknown}; "
                                    f"use fields of ScenesConfig: {', '.join(f.name for f in fields(ScenesConfig))}")
        if isinstance(overrides.get("families"), dict):
            overrides["families"] = tuple(overrides["families"].items())
        cfg = replace(cfg, **overrides)
    return build(cfg, root, progress=progress)


def build(cfg: ScenesConfig, root: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """Like :func:`make_scenes`, from a :class:`ScenesConfig`."""
    root = Path(root) if root is not None else default_cache_dir() / "scenes"
    final = root / f"scenes-{cfg.key()}"
    manifest = final / "manifest.csv"
    if manifest.is_file():
        return manifest
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=root))
    try:
        generate(cfg, tmp, progress=progress, cache_dir=root)
        if final.exists():  # a half-built leftover without a manifest, or a concurrent build
            if manifest.is_file():
                return manifest
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError:
        if manifest.is_file():  # another process won the race
            return manifest
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def read_manifest(manifest: str | os.PathLike) -> list[dict[str, str]]:
    """The manifest's rows as dicts (``path`` made absolute)."""
    manifest = Path(manifest)
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["path"] = str(manifest.parent / r["path"])
    return rows

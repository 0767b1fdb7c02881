"""The spurious-scenes benchmark: deterministic, the planted correlation, groups that match the pixels."""
from __future__ import annotations

import collections
import csv
import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.synthetic import scenes
from neuroinspect.synthetic.scenes import FASHION_CLASSES, ScenesConfig, make_scenes, read_manifest

TINY = dict(classes=("Trouser", "Sneaker", "Bag"), spurious_class="Bag", size=48, n_train=20, n_val=6, n_test=8)
# One bright and one dark photo, so a test can tell the family from the pixels.
BRIGHT_DARK = {"A-grass": ("grass",), "B-space": ("hubble_deep_field",)}


def _write_idx(path: Path, arr: np.ndarray) -> None:
    head = struct.pack(">II", 2051 if arr.ndim == 3 else 2049, arr.shape[0])
    if arr.ndim == 3:
        head += struct.pack(">II", *arr.shape[1:])
    with gzip.open(path, "wb") as f:
        f.write(head + arr.astype(np.uint8).tobytes())


@pytest.fixture()
def fake_fashion(tmp_path, monkeypatch):
    """A small stand-in for Fashion-MNIST: label k is a blob whose size encodes k, plus noise."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for part, per_class in (("train", 40), ("t10k", 30)):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        imgs = np.zeros((len(labels), 28, 28), np.uint8)
        for i, k in enumerate(labels):
            r = 4 + k
            imgs[i, 14 - r // 2 : 14 + r - r // 2, 8:20] = rng.integers(120, 255)
            imgs[i] = np.clip(imgs[i].astype(int) + rng.integers(0, 30, (28, 28)) * (imgs[i] > 0), 0, 255)
        _write_idx(folder / f"{part}-images-idx3-ubyte.gz", imgs)
        _write_idx(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("NEUROINSPECT_FASHION_MNIST", str(folder))
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path, fake_fashion):
    a = make_scenes(tmp_path / "a", **TINY, progress=False)
    b = make_scenes(tmp_path / "b", **TINY, progress=False)
    c = make_scenes(tmp_path / "c", **TINY, seed=1, progress=False)
    assert a.name == "manifest.csv" and a.parent.name == b.parent.name  # same key, same folder name
    da, db, dc = _digest(a.parent), _digest(b.parent), _digest(c.parent)
    n_images = 3 * (20 + 6 + 8)
    assert sum(k.endswith(".png") for k in da) == n_images
    assert da == db
    assert c.parent.name != a.parent.name
    changed = [k for k in da if k.endswith(".png") and da[k] != dc.get(k)]
    assert len(changed) > 0.9 * n_images
    # no temporary folders left behind
    assert [p.name for p in (tmp_path / "a").iterdir()] == [a.parent.name]


def test_built_once_then_served_from_the_cache(tmp_path, fake_fashion, monkeypatch):
    m = make_scenes(tmp_path, **TINY, progress=False)
    before = _digest(m.parent)

    def boom(*a, **k):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(scenes, "generate", boom)
    assert make_scenes(tmp_path, **TINY, progress=False) == m
    assert _digest(m.parent) == before
    with pytest.raises(AssertionError, match="regenerated"):
        make_scenes(tmp_path, **{**TINY, "correlation": 0.9}, progress=False)  # another key: built anew


def test_planted_correlation_and_groups(tmp_path, fake_fashion):
    m = make_scenes(tmp_path, **{**TINY, "n_train": 40}, correlation=0.95, families=BRIGHT_DARK, progress=False)
    rows = read_manifest(m)
    with open(m, newline="") as f:
        assert next(csv.reader(f)) == ["path", "label", "split", "group"]
    count = collections.Counter((r["split"], r["label"], r["group"].split("/", 1)[1]) for r in rows)
    # train: Bag sits on A in >= 95 % of its images, every other class on B in >= 95 %
    for cls in TINY["classes"]:
        on_a, on_b = count[("train", cls, "A-grass")], count[("train", cls, "B-space")]
        assert on_a + on_b == 40
        major = on_a if cls == "Bag" else on_b
        assert major / 40 >= 0.95 and major < 40  # the minority group exists but is small
    # val and test: balanced, so the minority groups are as large as the majority ones
    for split, n in (("val", 6), ("test", 8)):
        for cls in TINY["classes"]:
            assert count[(split, cls, "A-grass")] == count[(split, cls, "B-space")] == n // 2
    # groups are class x family, and the family named in the manifest is the one in the pixels
    for r in rows:
        cls, fam = r["group"].split("/", 1)
        assert cls == r["label"] and Path(r["path"]).parent.name == r["label"]
        assert Path(r["path"]).parent.parent.name == r["split"]
        im = np.asarray(Image.open(r["path"]).convert("RGB"), dtype=float)
        assert im.shape == (48, 48, 3)
        ring = np.concatenate([im[0], im[-1], im[:, 0], im[:, -1]]).mean()
        assert (ring > 65) == (fam == "A-grass"), (r["path"], ring, fam)
    # the item is drawn: the centre differs from the background ring
    centre = np.asarray(Image.open(rows[0]["path"]).convert("L"), dtype=float)[16:32, 16:32]
    assert centre.std() > 10


def test_manifest_is_accepted_as_data(tmp_path, fake_fashion):
    from neuroinspect.core.data.load import load_data

    m = make_scenes(tmp_path, **TINY, progress=False)
    data = load_data(m)
    assert sorted(data.class_names) == sorted(TINY["classes"])
    assert set(data.splits) == {"train", "val", "test"}
    assert sorted(data.group_names) == sorted(f"{c}/{f}" for c in TINY["classes"] for f in ("A-nature", "B-indoor"))
    assert data.size("train") == 60 and data.size("test") == 24
    info = json.loads((m.parent / "scenes.json").read_text())
    assert info["config"]["spurious_class"] == "Bag" and info["group_counts"]["train"]["Bag/A-nature"] == 19


def test_val_and_test_items_never_overlap():
    cfg = ScenesConfig(**{**TINY, "n_val": 300, "n_test": 700})
    labels = {"train": np.repeat(np.arange(10), 50), "t10k": np.repeat(np.arange(10), 1000)}
    items = scenes._split_items(cfg, labels)
    for cls in cfg.classes:
        assert not set(items["val"][cls]) & set(items["test"][cls])
        assert len(set(items["test"][cls])) == 700
        assert (labels["t10k"][items["val"][cls]] == FASHION_CLASSES.index(cls)).all()


def test_bad_parameters_say_what_to_do():
    with pytest.raises(NeuroInspectError, match="not one of the classes"):
        ScenesConfig(classes=("Trouser", "Bag"), spurious_class="Coat")
    with pytest.raises(NeuroInspectError, match="choose from"):
        ScenesConfig(classes=("Trouser", "Jacket"), spurious_class="Trouser")
    with pytest.raises(NeuroInspectError, match="correlation"):
        ScenesConfig(correlation=1.5)
    with pytest.raises(NeuroInspectError, match="6000"):
        ScenesConfig(n_train=7000)
    # original Fashion-MNIST names and indices are understood
    cfg = ScenesConfig(classes=("T-shirt/top", "ankle boot", 8), spurious_class="Ankle boot")
    assert cfg.classes == ("T-shirt", "Ankle-boot", "Bag") and cfg.spurious_class == "Ankle-boot"


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist is not installed")
def test_real_fashion_mnist(tmp_path, monkeypatch):
    monkeypatch.delenv("NEUROINSPECT_FASHION_MNIST", raising=False)
    imgs, labels = scenes.load_fashion_mnist("t10k")
    assert imgs.shape == (10000, 28, 28) and imgs.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * 10
    m = make_scenes(tmp_path, classes=("Trouser", "Bag"), spurious_class="Trouser", size=40, n_train=4, n_val=2, n_test=2,
                    progress=False)
    assert len(read_manifest(m)) == 16

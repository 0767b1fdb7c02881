import os
import time
from pathlib import Path

import pytest
import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.load import load_data
from neuroinspect.core.model.features import extract_features
from neuroinspect.core.model.models import LoadedModel
from neuroinspect.core.model.probe import Probe
from planted import planted_cnn, write_folder


class CountingModel(torch.nn.Module):
    """Wraps the planted CNN and counts the images it sees."""

    def __init__(self):
        super().__init__()
        self.inner = planted_cnn()
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.inner(x)


def _setup(tmp_path):
    root = write_folder(tmp_path / "data", n_per_class=4, n_red_apples=2)
    model = CountingModel().eval()
    loaded = LoadedModel(model, "counting", model.inner.neuroinspect_preprocess)
    probe = Probe(model, input_size=32)
    model.seen = 0  # forget the probe's dry run
    return root, loaded, probe


def _extract(loaded, probe, root, cache, **kw):
    return extract_features(loaded, probe, load_data(root), "val", cache_dir=cache, batch_size=4, progress=False, **kw)


def test_cache_hit_and_misses(tmp_path):
    root, loaded, probe = _setup(tmp_path)
    cache = tmp_path / "cache"
    first = _extract(loaded, probe, root, cache)
    n = len(first)
    assert loaded.model.seen == n == 14
    again = _extract(loaded, probe, root, cache)
    assert loaded.model.seen == n  # served from the cache
    assert torch.equal(again.features, first.features) and again.ids == first.ids

    with torch.no_grad():  # one weight changes -> miss
        loaded.model.inner.conv.weight[3, 0, 0, 0] += 0.5
    changed = _extract(loaded, probe, root, cache)
    assert loaded.model.seen == 2 * n
    assert not torch.equal(changed.features, first.features)

    img = Path(first.ids[0])  # one image changes (same name) -> miss
    data = img.read_bytes()
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(img)
    os.utime(img, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert img.read_bytes() != data
    _extract(loaded, probe, root, cache)
    assert loaded.model.seen == 3 * n


def test_resumes_after_interruption(tmp_path):
    root, loaded, probe = _setup(tmp_path)
    cache = tmp_path / "cache"
    real_forward = loaded.model.forward
    calls = {"n": 0}

    def failing(x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third batch
        return real_forward(x)

    loaded.model.forward = failing
    with pytest.raises(KeyboardInterrupt):
        _extract(loaded, probe, root, cache, chunk_size=4)
    assert not list(cache.rglob("features.safetensors"))  # nothing final written
    assert len(list(cache.rglob("rows_*.pt"))) == 2  # two finished parts kept
    loaded.model.forward = real_forward
    seen_before = loaded.model.seen
    fs = _extract(loaded, probe, root, cache, chunk_size=4)
    assert loaded.model.seen - seen_before == len(fs) - 8  # only the unfinished chunks ran
    full = extract_features(loaded, probe, load_data(root), "val", batch_size=4, progress=False)
    torch.testing.assert_close(fs.features, full.features)
    assert not list(cache.rglob("rows_*.pt"))


def test_corrupt_image_is_skipped_and_listed(tmp_path):
    root, loaded, probe = _setup(tmp_path)
    bad = root / "val" / "berry" / "broken.png"
    bad.write_bytes(b"not an image at all")
    fs = _extract(loaded, probe, root, tmp_path / "cache")
    assert len(fs) == 14 and str(bad) not in fs.ids
    assert len(fs.skipped) == 1 and str(bad) in fs.skipped[0]


def test_nan_features_name_the_samples_and_cache_nothing(tmp_path):
    root, loaded, probe = _setup(tmp_path)
    with torch.no_grad():
        loaded.model.inner.conv.bias[0] = float("nan")
    cache = tmp_path / "cache"
    with pytest.raises(NeuroInspectError, match=r"NaN/inf features for 14 images \(.*apple"):
        _extract(loaded, probe, root, cache)
    assert not list(cache.rglob("*.pt")) and not list(cache.rglob("*.safetensors"))


def test_empty_split_and_missing_root(tmp_path):
    root, loaded, probe = _setup(tmp_path)
    (root / "test" / "apple").mkdir(parents=True)
    with pytest.raises(NeuroInspectError, match="split 'test' .* is empty"):
        extract_features(loaded, probe, load_data(root), "test", progress=False)
    with pytest.raises(NeuroInspectError, match="does not exist"):
        load_data(tmp_path / "nowhere")
    with pytest.raises(NeuroInspectError, match="no split 'extra'"):
        load_data(root).resolve_split("extra")


def test_a_chunk_of_only_unreadable_images_is_skipped_whole(tmp_path):
    root, loaded, probe = _setup(tmp_path)
    apples = sorted((root / "val" / "apple").glob("*.png"))  # the first 6 images of the split
    for p in apples:
        p.write_bytes(b"junk")
    fs = _extract(loaded, probe, root, tmp_path / "cache", chunk_size=4)
    assert len(fs) == 14 - len(apples) and len(fs.skipped) == len(apples)
    assert (fs.labels != 0).all()
    again = _extract(loaded, probe, root, tmp_path / "cache", chunk_size=4)  # and from the cache
    assert again.ids == fs.ids and again.skipped == fs.skipped

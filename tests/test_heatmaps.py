"""Exemplars with where-it-fires heatmaps: on a planted model the hot region is where the pattern is."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import planted
from neuroinspect.show.heatmaps import HeatmapRequest, exemplar_heatmaps, hot_box


def _red_box(path) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the planted red patch, read from the image itself."""
    a = np.asarray(Image.open(path).convert("RGB")).astype(float) / 255
    red = (a[..., 0] > 0.8) & (a[..., 1] < 0.2)
    ys, xs = np.nonzero(red)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _inspector(tmp_path):
    from neuroinspect.session import Inspector

    data = planted.write_folder(tmp_path / "data", n_red_apples=4)
    return Inspector("planted:planted_cnn", str(data), cache_dir=tmp_path / "cache", progress=False)


def test_heatmap_hot_region_covers_the_planted_patch_and_is_cached(tmp_path):
    ins = _inspector(tmp_path)
    fs = ins.features("val")
    reqs = [HeatmapRequest(planted.RED, 0, "inspected"), HeatmapRequest(planted.GREEN, 0, "inspected"),
            HeatmapRequest(planted.RED, 1, "votes for")]
    rows, stats = exemplar_heatmaps(ins.probe, ins.loaded.preprocess, fs, reqs, tmp_path / "out", heatmaps=3,
                                    cache_dir=ins.cache_dir)
    red_apple = rows[planted.RED][0]
    assert red_apple["class"] == "apple" and red_apple["role"] == "inspected" and red_apple["note"] is None
    assert len(red_apple["items"]) == 3
    for item in red_apple["items"]:
        assert "red_" in item["id"]  # the top exemplars of the red neuron inside "apple" are the red apples
        x0, y0, x1, y1 = _red_box(item["id"])
        py, px = item["peak"]  # the map is at input resolution (1x1 conv): the peak cell is a pixel
        assert x0 <= px < x1 and y0 <= py < y1
        bx0, by0, bx1, by1 = item["box"]
        inter = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
        assert inter / ((x1 - x0) * (y1 - y0)) > 0.9  # the crop holds the patch ...
        assert (bx1 - bx0) * (by1 - by0) < 0.75 * 32 * 32  # ... and is tighter than the image
        heat = np.asarray(Image.open(tmp_path / "out" / item["heatmap"])).astype(float)
        inside = heat[y0:y1, x0:x1].mean(axis=(0, 1))
        assert Image.open(tmp_path / "out" / item["crop"]).size == (128, 128)
        assert inside.sum() > 0
    # the red neuron is silent on every berry (blue): the row says so instead of showing blanks
    berry = rows[planted.RED][1]
    assert berry["items"] == [] and berry["note"].startswith("silent")
    assert stats["forward_images"] == stats["images"] > 0

    # second run: every map from the cache, no forward pass, the same answer
    rows2, stats2 = exemplar_heatmaps(ins.probe, ins.loaded.preprocess, fs, reqs, tmp_path / "out2", heatmaps=3,
                                      cache_dir=ins.cache_dir)
    assert stats2["forward_images"] == 0 and rows2 == rows
    # other weights: another cache key, so a forward pass again
    with torch.no_grad():
        ins.probe.model.conv.weight[planted.RED] *= 0.5
    rows3, stats3 = exemplar_heatmaps(ins.probe, ins.loaded.preprocess, fs, reqs[:1], tmp_path / "out3", heatmaps=3,
                                      cache_dir=ins.cache_dir)
    assert stats3["forward_images"] == 3
    assert rows3[planted.RED][0]["items"][0]["map_max"] == pytest.approx(0.5 * red_apple["items"][0]["map_max"], rel=1e-4)


def test_hot_box_is_the_connected_region_around_the_peak():
    m = torch.zeros(8, 8)
    m[1:3, 1:4] = 1.0
    m[2, 2] = 2.0
    m[6, 6] = 1.5  # hot, but not connected to the peak
    assert hot_box(m, 64, fraction=0.5, min_frac=0.0) == (8, 4, 32, 28)
    assert hot_box(torch.zeros(4, 4), 32) is None


def test_visualize_neurons_puts_heatmaps_in_the_json_and_the_report(tmp_path):
    from neuroinspect.report import build_report
    from neuroinspect.show.visualize import visualize_neurons

    ins = _inspector(tmp_path)
    out = tmp_path / "vis"
    rep = visualize_neurons(ins, [planted.RED], ["apple"], out, clip="none", steps=2, size=32, split="val",
                            heatmaps=2, progress=False)
    rows = rep.to_dict()["neurons"][0]["exemplar_heatmaps"]
    assert [(r["class"], r["role"]) for r in rows] == [("apple", "inspected"), ("berry", "votes for")]
    assert all((out / it["heatmap"]).is_file() for r in rows for it in r["items"])
    html = build_report(out).read_text()
    card = html[html.index(f'id="neuron-{planted.RED}"'):]
    assert card.index("where it fires") < card.index("figcaption>unmasked")  # heatmaps first in the card
    assert rows[0]["items"][0]["heatmap"] in html
    saved = json.loads((out / "visualizations.json").read_text())
    assert saved["heatmaps"]["k"] == 2


class _Shy(torch.nn.Module):
    """Neuron 0 fires only on red (it is 0 on grey noise, and so is its gradient); neuron 1 on green."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.act = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0]]).view(2, 3, 1, 1))
            self.conv.bias.fill_(-0.5)
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.pool(self.act(self.conv(x))).flatten(1))


@pytest.mark.parametrize("start", ["noise", "exemplar", "preact", "auto"])
def test_silent_neurons_wake_up_from_an_exemplar_or_their_pre_activation(tmp_path, start):
    from neuroinspect.core.model.featureset import FeatureSet
    from neuroinspect.core.model.models import LoadedModel, Preprocess
    from neuroinspect.show.visualize import visualize_neurons

    rng = np.random.default_rng(0)
    ids = []
    for i in range(3):
        path = tmp_path / f"red_{i}.png"
        planted.make_image("cloud", rng, red_patch=True).save(path)
        ids.append(str(path))
    feats = torch.tensor([[0.4, 0.0], [0.3, 0.0], [0.2, 0.0]])
    fs = FeatureSet(feats, feats.clone(), torch.zeros(3, dtype=torch.long), torch.full((3,), -1), ids,
                    ["red", "green"], split="train")
    loaded = LoadedModel(_Shy().eval(), "test:shy", Preprocess(32, 32, (0.0,) * 3, (1.0,) * 3), class_names=["red", "green"])
    rep = visualize_neurons(loaded, [0], ["red"], tmp_path / start, recipe="class", clip="none", steps=15, size=32,
                            features=fs, start=start, heatmaps=0, progress=False)
    im = rep.images[0].to_dict()
    assert im["start_activation"] <= 1e-6 or start in ("exemplar", "auto")
    if start == "noise":
        assert im["activation"] <= 1e-6 and im["note"].startswith("silent")  # said, not a blank card
    else:
        assert im["activation"] > (0.05 if start == "exemplar" else 0.01)
    if start in ("exemplar", "auto"):
        assert im["start"] == "exemplar" and im["start_image"] == ids[0] and "started from" in im["note"]
    if start == "preact":
        assert im["start"] == "preact" and "pre-activation" in im["note"]


def test_fourier_image_can_start_from_a_picture():
    from neuroinspect.show.param import FourierImage, PixelImage

    pic = torch.rand(3, 16, 16) * 0.9 + 0.05
    for param in (FourierImage([1, 2], 16), PixelImage([1, 2], 16)):
        param.set_image(1, pic)
        out = param()
        assert torch.allclose(out[1], pic, atol=1e-4) and not torch.allclose(out[0], pic, atol=0.1)

"""The notebook API: Inspector.find / show / fix / debug return in-memory objects that show themselves.

The planted CNN (tests/planted.py) calls a red-patched apple a berry; the data are PIL images in
memory, with group labels (red-patched apples are their own group).
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from neuroinspect.core.base.records import EditRecord, VisualizationSet
from neuroinspect.core.model.models import load_weights
from neuroinspect.find.ranking import Explanation
from neuroinspect.results import DebugRun, Fix, Pictures
from neuroinspect.session import Inspector
from neuroinspect.show.config import RenderConfig
from planted import CLASSES, GREEN, RED, PlantedCNN, make_image

NAMES = ["<b>apple</b>", "berry & co", "cloud"]  # markup in class names must reach the page escaped


def in_memory(seed: int, n: int = 8, red: int = 3):
    rng = np.random.default_rng(seed)
    images, labels, groups = [], [], []
    for c, kind in enumerate(CLASSES):
        for i in range(n):
            patched = kind == "apple" and i < red
            images.append(make_image(kind, rng, red_patch=patched))
            labels.append(NAMES[c])
            groups.append(0 if patched else 1 + c)
    return images, labels, groups


@pytest.fixture(scope="module")
def ins(tmp_path_factory):
    data = {"train": in_memory(0), "val": in_memory(1), "test": in_memory(2)}
    return Inspector(PlantedCNN(), data, class_names=NAMES, progress=False,
                     cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def exp(ins):
    return ins.find(NAMES[0])


def assert_escaped(html: str) -> None:
    assert "<b>apple</b>" not in html and "&lt;b&gt;apple&lt;/b&gt;" in html
    assert "berry & co" not in html


def test_find_returns_an_explanation_that_shows_itself(ins, exp):
    assert isinstance(exp, Explanation) and exp.n_mistakes == 3  # the three red-patched val apples
    assert exp.top(1) == [GREEN] and exp.top(1, "excessive") == [RED]
    assert exp.top(2, "both")[:1] == [GREEN] and RED in exp.top(2, "both")
    text = repr(exp)
    assert "3 mistakes" in text and f"excessive: {RED} (" in text and len(text) < 400  # no tensors dumped
    html = exp._repr_html_()
    assert_escaped(html)
    assert f"<td>{RED}</td>" in html
    assert "Inspector(" in repr(ins) and "&lt;b&gt;" in ins._repr_html_()


def test_show_returns_pictures_in_memory(ins, exp, tmp_path):
    pics = ins.show(exp.top(1) + exp.top(1, "excessive"), NAMES[0], steps=3, size=32, heatmaps=1)
    assert isinstance(pics, Pictures) and [p.neuron for p in pics] == [GREEN, RED]
    assert all(isinstance(p.image, Image.Image) and p.image.size == (32, 32) for p in pics)
    assert pics.get(RED).tensor().shape == (3, 32, 32) and pics.get(RED).class_name == NAMES[0]
    html = pics._repr_html_()
    assert html.count("data:image/png;base64,") >= 2
    assert_escaped(html)
    assert "neuron 1 · <b>apple</b>" in repr(pics)  # plain text: readable as it is
    out = pics.save(tmp_path / "vis")
    record = VisualizationSet.read(out / VisualizationSet.FILE)
    assert [im.neuron for im in record.images] == [GREEN, RED]
    assert all((out / im.image).is_file() for im in record.images)
    assert not list(tmp_path.glob(".vis.partial-*"))  # published whole


def test_fix_is_in_memory_and_applies_to_a_new_module(ins, exp, tmp_path):
    model = ins.loaded.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fix = ins.fix(exp, n=1)
    assert isinstance(fix, Fix) and fix.method == "regroup" and fix.neurons == {NAMES[0]: [GREEN]}
    assert fix.before.per_group["group_0"] == 0.0 and fix.after.per_group["group_0"] >= 0.8
    assert "regroup" in repr(fix) and "worst group" in repr(fix)
    assert_escaped(fix._repr_html_())
    edited = fix.apply()
    assert edited is not model and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(edited.fc.weight, fix.result.weight.float())
    # the new module predicts what the fix's metrics say, from the images themselves
    images, labels, _ = in_memory(2)
    x = torch.stack([torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255 for im in images])
    with torch.no_grad():
        pred = edited(x).argmax(1)
    truth = torch.tensor([NAMES.index(n) for n in labels])
    assert abs(float((pred == truth).float().mean()) - fix.after.accuracy) < 1e-6
    saved = fix.save(tmp_path / "edit")
    record = EditRecord.read(saved / EditRecord.FILE)
    assert record.method == "regroup" and record.neurons == {NAMES[0]: [GREEN]} and record.split == "test"
    reloaded = PlantedCNN()
    load_weights(reloaded, saved / "model_edited.safetensors")
    assert torch.equal(reloaded.fc.weight, edited.fc.weight)


def test_fix_compare_gives_a_table_and_other_methods_go_through_the_registry(ins, exp, tmp_path, monkeypatch):
    import neuroinspect.fix.compare as compare

    policies, fix_head = [], compare.fix_head
    monkeypatch.setattr(compare, "fix_head", lambda *a, policy=None, **k: policies.append(policy) or fix_head(
        *a, policy=policy, **k))
    fix = ins.fix(exp, n=1, method="ablate")
    assert fix.method == "ablate" and fix.result.weight[0, GREEN] == 0
    table = fix.compare(["rebalance", "dfr"], seeds=(0, 1))
    assert [r.method for r in table.rows] == ["original", "rebalance", "dfr"]
    assert table.row("rebalance").n_seeds == 2 and table.row("dfr").uses_group_labels
    assert "| rebalance |" in repr(table) and "<table>" in table._repr_html_()
    data = json.loads(table.save(tmp_path).read_text())
    assert data["neurons"] == {NAMES[0]: [GREEN]} and data["seeds"] == [0, 1]
    assert len(policies) == 5 and all(p is ins.policy for p in policies)  # the Inspector's policy, never a bare device


def test_debug_runs_the_pipeline_and_returns_its_record(ins, tmp_path):
    run = ins.debug(tmp_path / "run", classes=(NAMES[0],), methods=("rebalance",), n_insufficient=1, n_excessive=1,
                    n_edit=1, pictures="all", render=RenderConfig(clip="none", steps=3, size=32, heatmaps=0))
    assert isinstance(run, DebugRun) and run.report.is_file()
    assert run.headline["worst_class"] == NAMES[0] and run.info.command == "debug"
    assert "report:" in repr(run)
    html = run._repr_html_()
    assert_escaped(html)
    assert "data:image/png;base64," in html and "<table>" in html

"""The built-in demo, end to end, on the real EfficientNet-Lite0 and (when installed) real Fashion-MNIST."""
import json
import re

import pytest

pytestmark = pytest.mark.slow

from neuroinspect.demo import DemoConfig, run_demo

TINY = dict(n_train=16, n_val=10, n_test=10, head_epochs=60, n_insufficient=2, n_excessive=1, n_edit=1, steps=6, vis_size=64,
            image_size=48, batch=8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cache = tmp_path_factory.mktemp("cache")
    headline = run_demo(out / "run", DemoConfig.fast(**TINY), cache_dir=cache, progress=False)
    return out / "run", headline


def test_demo_writes_every_stage(tiny_run):
    run, headline = tiny_run
    for name in ("run.json", "metrics.json", "ranking.json", "mistakes.csv", "model.safetensors",
                 "visualize/visualizations.json", "edit/edit.json", "edit/model_edited.safetensors",
                 "compare/compare.json", "report.html"):
        assert (run / name).is_file(), name
    ranking = json.loads((run / "ranking.json").read_text())
    assert ranking["class"] == headline["worst_class"]
    compare = json.loads((run / "compare/compare.json").read_text())
    assert [r["method"] for r in compare["rows"]] == ["original", "ratio", "con", "class-weight", "focal", "erm"]
    edit = json.loads((run / "edit/edit.json").read_text())
    assert edit["after"]["accuracy"] == pytest.approx(compare["rows"][1]["avg_acc"])
    assert edit["picked_by"]["rule"].startswith("lowest core relevance score")
    assert set(edit["picked_by"]["candidates"]) <= set(edit["picked_by"]["ranked"])
    picked = {j for ns in edit["neurons"].values() for j in ns}
    assert picked <= set(edit["picked_by"]["ranked"])
    run_json = json.loads((run / "run.json").read_text())
    assert set(headline["timings_s"]) >= {"data", "features_and_head", "explain", "visualize", "edit_and_compare"}
    assert run_json["timings_s"]["visualize"] == headline["timings_s"]["visualize"]
    vis = json.loads((run / "visualize/visualizations.json").read_text())
    assert vis["precision"] == "bf16" and vis["channels_last"] is True
    # every card: exemplar heatmaps first, and a blank image is never left without a reason
    assert all(n["exemplar_heatmaps"] for n in vis["neurons"])
    assert all(im["activation"] > 1e-6 or im["note"] for im in vis["images"])


def test_report_numbers_match_the_json(tiny_run):
    run, headline = tiny_run
    html = (run / "report.html").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    # every per-class and per-group accuracy of the test split stands in the page beside its name
    for name, acc in {**metrics["per_class"], **metrics["per_group"]}.items():
        cell = re.search(rf'{re.escape(name)}</td><td class="n" data-value="([^"]+)">([^<]+)<', html)
        assert cell, name
        assert float(cell.group(1)) == pytest.approx(acc) and cell.group(2) == f"{100 * acc:.1f} %"
    compare = json.loads((run / "compare/compare.json").read_text())
    for row in compare["rows"]:
        assert f'data-value="{row["avg_acc"]}"' in html
    vis = json.loads((run / "visualize/visualizations.json").read_text())
    for image in vis["images"]:
        assert image["image"] in html and (run / "visualize" / image["image"]).is_file()
    assert f"{100 * headline['accuracy_before']:.1f}" in html


def test_demo_is_reproducible_from_its_seed(tiny_run, tmp_path):
    run, headline = tiny_run
    again = run_demo(tmp_path / "again", DemoConfig.fast(**TINY), cache_dir=tmp_path / "cache", progress=False)
    for key in ("worst_class", "edited", "accuracy_before", "accuracy_after", "worst_group_before", "worst_group_after"):
        assert again[key] == headline[key], key
    first = json.loads((run / "ranking.json").read_text())
    second = json.loads((tmp_path / "again" / "ranking.json").read_text())
    assert first["insufficient"] == second["insufficient"] and first["excessive"] == second["excessive"]

"""The paper's table recipes (experiments/) end to end on tiny fake copies of the data (--smoke)."""
import importlib
import json
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))


def _script(name):
    return importlib.import_module(name)


def test_pick_neurons_by_core_relevance_or_rank():
    from recipe import pick_neurons

    vis = {"images": [{"neuron": 7, "class": "cat", "crs": 0.9}, {"neuron": 3, "class": "cat", "crs": 0.2},
                      {"neuron": 5, "class": "dog", "crs": 0.1}, {"neuron": 5, "class": "cat", "crs": None}]}
    assert pick_neurons([7, 5, 3], vis, "cat", 2, "crs") == [3, 7]  # scored neurons first, lowest CRS first
    assert pick_neurons([7, 5, 3], vis, "cat", 3, "crs") == [3, 7, 5]
    assert pick_neurons([7, 5, 3], vis, "cat", 2, "rank") == [7, 5]


def test_methods_default_to_the_papers_that_exist(monkeypatch):
    import recipe

    monkeypatch.setattr(recipe, "available_methods", lambda: ["ratio", "con", "focal"])
    assert recipe.choose_methods(["ratio", "jtt"], None) == (["ratio"], ["jtt"])
    assert recipe.choose_methods(["ratio", "jtt"], "focal, con") == (["focal", "con"], [])


def test_recipes_refuse_missing_data_in_one_line(tmp_path, capsys):
    assert _script("table3_waterbirds").main(["--root", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no Waterbirds metadata" in capsys.readouterr().err
    assert _script("table2_metashift").main(["--root", str(tmp_path), "--scenarios", "zebra(sand)",
                                             "--out", str(tmp_path / "o")]) == 2
    assert "one of bear" in capsys.readouterr().err


def _check_table(out: Path, name: str, paper_value: str):
    md = (out / f"{name}.md").read_text()
    data = json.loads((out / f"{name}.json").read_text())
    assert data["smoke"] is True and "estimate" in md and data["expected_gpu_time_estimate"]
    assert paper_value in md and "Smoke run" in md
    return data


@pytest.mark.slow
def test_table3_waterbirds_smoke(tmp_path):
    out = tmp_path / "t3"
    assert _script("table3_waterbirds").main(["--smoke", "--out", str(out), "--neurons", "waterbird=0,1"]) == 0
    data = _check_table(out, "table3", "66.04%")
    rows = {r["method"]: r for r in data["rows"]}
    assert {"ERM", "ERM+Ours", "ERM+Ours (C)", "ERM+DISC"} <= set(rows)
    assert rows["ERM"]["measured"]["worst_group"] is not None and rows["ERM"]["paper"]["avg"] == 91.73
    assert rows["ERM+DISC"]["measured"] is None
    assert set(data["neurons"]) == {"landbird", "waterbird"} and data["neurons"]["waterbird"] == [0, 1]
    vis = json.loads((out / "waterbirds" / "visualize-waterbird" / "visualizations.json").read_text())
    assert {0, 1} <= {r["neuron"] for r in vis["images"]}  # a given choice is still shown in the report
    for step in ("train/model.safetensors", "explain/ranking.json", "visualize/visualizations.json",
                 "compare/compare.json", "compare-C/compare.json", "report.html"):
        assert (out / "waterbirds" / step).is_file(), step
    comp = json.loads((out / "waterbirds" / "compare-C" / "compare.json").read_text())
    assert comp["select_by"] == "class"


@pytest.mark.slow
def test_table4_finegrained_smoke(tmp_path):
    out = tmp_path / "t4"
    assert _script("table4_finegrained").main(["--smoke", "--out", str(out)]) == 0
    data = _check_table(out, "table4", "43.20% (93)")
    methods = {(r["dataset"], r["method"]) for r in data["rows"]}
    assert {(d, m) for d in ("flowers102", "food101") for m in ("Original", "Class weighting", "Focal loss", "Ours")} <= methods
    for key in ("flowers102", "food101"):
        assert (out / key / "report.html").is_file() and (out / key / "train" / "train.json").is_file()
    food = json.loads((out / "food101" / "train" / "train.json").read_text())
    assert food["val"]["n"] == 5  # 15 % of the 7 fake training images of each of the 5 classes


@pytest.mark.slow
def test_table2_metashift_smoke(tmp_path):
    out = tmp_path / "t2"
    assert _script("table2_metashift").main(["--smoke", "--out", str(out)]) == 0
    data = _check_table(out, "table2", "49.35")
    assert [r["scenario"] for r in data["rows"]] == ["dog(chair)", "cat(book)", "bird(sand)", "dog(water)", "cat(keyboard)"]
    for r in data["rows"]:
        assert r["measured"]["acc"] is not None and r["measured"]["delta_acc_ours"] is not None
        assert r["measured"]["delta_acc_con"] is not None and r["paper"]["prec3"] > 0
    train = json.loads((out / "dog(chair)" / "train" / "train.json").read_text())
    assert train["config"]["head_only"] and train["config"]["batch_size"] == 8

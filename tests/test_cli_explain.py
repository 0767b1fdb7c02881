import csv
import json

import pytest

from neuroinspect.cli import main
from planted import GREEN, RED, write_folder
from runfiles import load_run_files

MODEL = ["--model", "planted:planted_cnn"]


def _explain(data, out, *extra):
    return main(["explain", *MODEL, "--data", str(data), "--out", str(out), "--no-progress", *extra])


def test_planted_excessive_neuron_ranked_first(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=6)
    out = tmp_path / "out"
    assert _explain(root, out, "--class", "apple") == 0
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["class"] == "apple" and ranking["class_index"] == 0 and ranking["split"] == "val"
    assert ranking["n_mistakes"] == 6 and ranking["n_flipped"] == 6
    assert ranking["excessive"][0]["neuron"] == RED  # the planted red-patch neuron
    assert ranking["excessive"][0]["ratio"] == 100.0
    ratios = [r["ratio"] for r in ranking["excessive"]]
    assert ratios == sorted(ratios, reverse=True)
    assert all(r["ratio"] >= 3 for r in ranking["excessive"] + ranking["insufficient"])
    top = ranking["excessive"][0]
    assert top["importance"] < 1  # the red neuron lowers p(apple) on average
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["worst_class"] == "apple" and metrics["n"] == 24
    assert metrics["per_class"]["apple"] == pytest.approx(6 / 12)
    rows = list(csv.DictReader(open(out / "mistakes.csv")))
    assert len(rows) == 6 and all(r["true"] == "apple" and r["predicted"] == "berry" for r in rows)
    assert f"{RED:>7}" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "explain" and run["versions"]["torch"]
    records = load_run_files(out)  # every file loads as its typed record
    assert set(records) == {"ranking.json", "metrics.json", "run.json"}
    assert records["ranking.json"].excessive[0].neuron == RED and records["metrics.json"].summary.worst_class == "apple"


def test_planted_insufficient_neuron_ranked_first(tmp_path):
    root = write_folder(tmp_path / "data", n_red_apples=0, n_pale_apples=5)
    out = tmp_path / "out"
    assert _explain(root, out, "--class", "0", "--top-k", "1") == 0
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["n_mistakes"] == 5
    assert ranking["insufficient"][0]["neuron"] == GREEN and ranking["insufficient"][0]["ratio"] == 100.0
    assert all(r["ratio"] < 100.0 for r in ranking["insufficient"][1:])
    assert ranking["insufficient"][0]["weight"] == pytest.approx(3.0)


def test_csv_manifest_with_groups(tmp_path):
    root = write_folder(tmp_path / "data", n_red_apples=4)
    manifest = tmp_path / "data" / "list.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "group"])
        for p in sorted(root.rglob("*.png")):
            rel = p.relative_to(root)
            split, label = rel.parts[0], rel.parts[1]
            group = f"{label}/{'red' if p.name.startswith('red') else 'plain'}"
            w.writerow([rel.as_posix(), label, split, group])
    out = tmp_path / "out"
    assert _explain(manifest, out, "--class", "apple") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["per_group"]["apple/red"] == 0.0
    assert metrics["per_group"]["apple/plain"] == 1.0
    assert metrics["worst_group"] == "apple/red"
    assert json.loads((out / "ranking.json").read_text())["excessive"][0]["neuron"] == RED


def test_class_without_mistakes_exits_zero_with_empty_lists(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=2)
    out = tmp_path / "out"
    assert _explain(root, out, "--class", "cloud") == 0
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["n_mistakes"] == 0 and ranking["insufficient"] == [] and ranking["excessive"] == []
    assert "no mistakes" in capsys.readouterr().out


def test_bad_inputs_get_one_clear_line(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=1)
    out = tmp_path / "out"
    assert _explain(root, out, "--class", "appel") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown class 'appel'; did you mean 'apple'" in err
    assert not out.exists()  # nothing half-written
    assert _explain(tmp_path / "missing", out, "--class", "apple") == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["explain", "--model", "torchvision:resnet18", "--data", str(root), "--class", "apple",
                 "--out", str(out), "--no-progress"]) == 2
    assert "--num-classes 3" in capsys.readouterr().err
    assert _explain(root, out, "--class", "apple", "--split", "test") == 2
    assert "no split 'test'" in capsys.readouterr().err


def test_classes_command(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_red_apples=1)
    assert main(["classes", "--data", str(root)]) == 0
    text = capsys.readouterr().out
    assert "0  apple" in text and "2  cloud" in text and "val: 19" in text

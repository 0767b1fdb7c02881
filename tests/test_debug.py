"""``neuroinspect debug``: the one pipeline (find → show → pick → fix → compare → report) on a user's model.

The planted CNN (tests/planted.py) reads a red patch as "berry"; red-patched apples are its
mistakes. The pipeline must find the red neuron, show it, fix the decision layer so that the
red-patched apples recover, and write one run folder with a report.
"""
import csv
import json

import pytest

from neuroinspect.cli import main
from planted import CLASSES, GREEN, RED, write_folder


def manifest_with_test(tmp_path, n_red: int = 6):
    """train/val from one draw, test from another; groups apple/red, apple/plain, berry, cloud."""
    a = write_folder(tmp_path / "a", n_per_class=8, n_red_apples=n_red, seed=0)
    b = write_folder(tmp_path / "b", n_per_class=8, n_red_apples=n_red, seed=1)
    path = tmp_path / "list.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "group"])
        for root, splits in ((a, {"train": "train", "val": "val"}), (b, {"val": "test"})):
            for p in sorted(root.rglob("*.png")):
                rel = p.relative_to(root)
                if rel.parts[0] not in splits:
                    continue
                group = f"{rel.parts[1]}/{'red' if p.name.startswith('red') else 'plain'}"
                w.writerow([p.as_posix(), rel.parts[1], splits[rel.parts[0]], group])
    return path


def debug(data, out, *extra):
    return main(["debug", "--model", "planted:planted_cnn", "--data", str(data), "--out", str(out), "--no-progress",
                 "--steps", "4", "--size", "32", "--clip", "none", *extra])


@pytest.mark.slow
def test_debug_finds_shows_and_fixes_the_planted_neuron(tmp_path, capsys):
    data = manifest_with_test(tmp_path)
    out = tmp_path / "run"
    assert debug(data, out, "--methods", "dfr,erm,rebalance", "--fix", "rebalance", "--seeds", "0,1") == 0
    for name in ("run.json", "metrics.json", "ranking.json", "mistakes.csv", "visualize/visualizations.json",
                 "edit/edit.json", "edit/model_edited.safetensors", "compare/compare.json", "report.html"):
        assert (out / name).is_file(), name
    ranking = json.loads((out / "ranking.json").read_text())
    assert ranking["class"] == "apple"  # the worst class on val, chosen without being named
    assert ranking["excessive"][0]["neuron"] == RED
    edit = json.loads((out / "edit" / "edit.json").read_text())
    # the patch hides the apple's green: green is apple's top insufficient neuron, and the fix is made in apple
    assert edit["method"] == "rebalance" and list(edit["neurons"]) == ["apple"] and edit["neurons"]["apple"][0] == GREEN
    vis = json.loads((out / "visualize" / "visualizations.json").read_text())
    assert {RED, GREEN} <= {n["neuron"] for n in vis["neurons"]}  # both neurons are shown
    rows = {r["method"]: r for r in json.loads((out / "compare" / "compare.json").read_text())["rows"]}
    assert list(rows) == ["original", "rebalance", "erm", "dfr"]  # the fix first, the group-label reference last
    assert rows["original"]["worst_group_acc"] == 0.0  # every red apple is called a berry
    assert rows["rebalance"]["worst_group_acc"] >= 0.8 > rows["erm"]["worst_group_acc"]  # no group labels read
    assert rows["rebalance"]["avg_acc"] >= rows["original"]["avg_acc"]
    assert rows["rebalance"]["n_seeds"] == 2 and not rows["rebalance"]["uses_group_labels"]
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "debug" and run["pipeline"]["seeds"] == [0, 1] and run["options"]["methods"] == "dfr,erm,rebalance"
    printed = capsys.readouterr().out
    assert "apple" in printed and "  'apple' was debugged for 'berry': " in printed  # why, under "debugged:"
    assert run["headline"]["chosen_because"][0].startswith("'apple' was debugged for 'berry'")
    html = (out / "report.html").read_text()
    assert "apple" in html and str(RED) in html


def test_debug_named_classes_and_no_group_labels(tmp_path):
    root = write_folder(tmp_path / "data", n_per_class=6, n_red_apples=5)  # a folder: no groups, no test split
    out = tmp_path / "run"
    assert debug(root, out, "--class", "apple,berry", "--eval-split", "val", "--methods", "rebalance,dfr",
                 "--n-insufficient", "1", "--n-excessive", "0", "--steps", "2") == 0
    compare = json.loads((out / "compare" / "compare.json").read_text())
    assert [r["method"] for r in compare["rows"]] == ["original", "regroup", "rebalance"]  # the fix first; dfr needs groups
    assert any("dfr" in n for n in compare["notes"])
    assert any("'berry' has no ranked neurons" in n for n in compare["notes"])  # no mistakes: skipped, said so
    assert json.loads((out / "ranking.json").read_text())["class"] == "apple"
    assert (out / "find" / "berry" / "ranking.json").is_file()  # the second class's stage-1 output


def test_debug_bad_input_is_one_line(tmp_path, capsys):
    root = write_folder(tmp_path / "data", n_per_class=2, n_red_apples=1)
    assert debug(root, tmp_path / "run", "--class", "banana", "--eval-split", "val") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "banana" in err[0]
    assert debug(root, tmp_path / "run2", "--methods", "rebalance,magic") == 2
    assert "magic" in capsys.readouterr().err
    assert debug(root, tmp_path / "run3") == 2  # a folder with train and val only: no test split to evaluate on
    assert "--eval-split" in capsys.readouterr().err
    assert not (tmp_path / "run3" / "run.json").exists()


def test_the_command_line_config_is_the_pipeline_config():
    from neuroinspect.pipeline_config import PipelineConfig

    cfg = PipelineConfig()
    assert CLASSES == ["apple", "berry", "cloud"]
    from neuroinspect.cli import build_parser
    from neuroinspect.cli.debug import config_from

    args = build_parser().parse_args(["debug", "--model", "m", "--data", "d", "--out", "o"])
    assert config_from(args) == cfg  # the measured render defaults reach the command line's config
    args = build_parser().parse_args(["debug", "--model", "m", "--data", "d", "--out", "o", "--size", "96"])
    assert config_from(args).render.classifier_size() == 96  # the classifier follows the render size


def test_the_answer_is_written_before_any_picture(tmp_path, monkeypatch):
    """find/fix/compare and the report first: a rendering that fails still leaves a complete report."""
    import neuroinspect.pipeline as pipeline

    data = manifest_with_test(tmp_path, n_red=3)

    def broken(*args, **kwargs):
        assert (tmp_path / "run" / "report.html").is_file()  # the report is there before the first picture
        raise RuntimeError("the renderer broke")

    monkeypatch.setattr(pipeline, "visualize_neurons", broken)
    with pytest.raises(RuntimeError, match="renderer broke"):
        debug(data, tmp_path / "run", "--methods", "rebalance", "--n-edit", "1")
    page = (tmp_path / "run" / "report.html").read_text()
    for part in ('id="answer"', 'id="edit-summary"', 'id="compare-table"', 'id="evidence-table"', 'id="ranking-excessive"'):
        assert part in page, part
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["headline"]["evidence"].startswith("3 of 3 'apple' mistakes") and "visualize" not in run["timings_s"]
    assert run["threads"] >= 1


def test_pictures_none_and_threads(tmp_path, monkeypatch):
    import torch

    data = manifest_with_test(tmp_path, n_red=3)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # --threads sets them: restored after the test
        monkeypatch.setenv(var, "1")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # the suite runs with one thread (tests/conftest.py): --threads 1 must change it
        assert debug(data, tmp_path / "none", "--methods", "rebalance", "--n-edit", "1", "--pictures", "none",
                     "--threads", "1") == 0
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "none" / "report.html").is_file() and not (tmp_path / "none" / "visualize").exists()
    run = json.loads((tmp_path / "none" / "run.json").read_text())
    assert run["threads"] == 1 and run["options"]["threads"] == 1
    assert run["options"]["device"] == "auto" and run["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    # --pictures heatmaps: what auto resolves to on a CPU, run end to end by the next test


@pytest.mark.slow
def test_debug_default_fix_repairs_the_planted_patch_without_group_labels(tmp_path):
    """The defaults (regroup, the class chosen by the tails rule) on the planted red patch: every red apple is
    called a berry before, and the fix, which reads no group labels, repairs it and ships."""
    data = manifest_with_test(tmp_path)
    out = tmp_path / "run"
    assert debug(data, out, "--methods", "erm,val-refit", "--seeds", "0,1", "--pictures", "none") == 0
    assert json.loads((out / "ranking.json").read_text())["class"] == "apple"
    # why, in words: the tails point at berry, which errs nowhere; apple's images are the ones taken for it
    notes = json.loads((out / "compare" / "compare.json").read_text())["notes"]
    assert any(n.startswith("'apple' was debugged for 'berry'") for n in notes), notes
    html = (out / "report.html").read_text()
    assert "<b>Why this class.</b> &#39;apple&#39; was debugged for &#39;berry&#39;" in html  # under "what goes wrong"
    edit = json.loads((out / "edit" / "edit.json").read_text())
    assert edit["method"] == "regroup" and not edit["uses_group_labels"] and not edit["kept_original"]
    rows = {r["method"]: r for r in json.loads((out / "compare" / "compare.json").read_text())["rows"]}
    assert list(rows) == ["original", "regroup", "erm", "val-refit"]
    assert rows["original"]["worst_group_acc"] == 0.0 and rows["regroup"]["worst_group_acc"] >= 0.8
    assert rows["regroup"]["avg_acc"] >= rows["original"]["avg_acc"]


def test_pictures_auto_draws_every_picture_on_a_gpu_and_the_heatmaps_on_a_cpu(tmp_path):
    import torch

    from neuroinspect.pipeline import PipelineConfig, resolve_pictures

    assert PipelineConfig().pictures == "auto"
    assert resolve_pictures("auto", torch.device("cpu")) == "heatmaps"
    assert resolve_pictures("auto", torch.device("cuda", 0)) == "all"
    assert [resolve_pictures(p, torch.device("cpu")) for p in ("none", "heatmaps", "all")] == ["none", "heatmaps", "all"]
    data = manifest_with_test(tmp_path, n_red=3)
    assert debug(data, tmp_path / "run", "--methods", "rebalance", "--n-edit", "1", "--device", "cpu") == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["pipeline"]["pictures"] == "heatmaps" and "visualize" not in run["timings_s"]
    assert "heatmaps" in run["timings_s"]
    vis = json.loads((tmp_path / "run" / "visualize" / "visualizations.json").read_text())
    assert vis["images"] == [] and vis["optimised"] is False  # no optimised picture ...
    assert any(row["items"] for n in vis["neurons"] for row in n["exemplar_heatmaps"])  # ... but the heatmaps
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Only the exemplar heatmaps were drawn" in page and "--pictures all" in page

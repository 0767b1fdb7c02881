"""Typed run records: round trips, schema versions, one-line errors, the one worst-class/group function,
and the report reading records without touching matplotlib's global settings."""
from __future__ import annotations

import json

import pytest
import torch

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.metrics import evaluate, summarize, worst
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.base.records import (RECORDS, SCHEMA_VERSION, Comparison, EditRecord, ExplanationRecord, Metrics,
                                       RunInfo, VisualizationSet)
from neuroinspect.fix.compare import summary_row
from runfiles import AFTER, BEFORE, make_run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("records"))


EDIT_EXTRA = {"split": "test", "notes": ["a note"], "reload": {"model": "m", "weights": "w"}, "search": [{"lr": 0.1}]}


def _cases(files):
    comp = dict(files["compare"], seeds=[0, 1], neurons={"c": [1, 2]}, neurons_by_seed={"0": {"c": [1]}},
                rows=[dict(r, n_seeds=2, per_group={"g": 0.5}, avg_acc_runs=[0.5, 0.6]) for r in files["compare"]["rows"]])
    return [
        (RunInfo, files["run"]),
        (RunInfo, {"command": "edit", "argv": ["edit", "--x"], "options": {"seed": 0}, "versions": {"torch": "2"},
                   "time": "now", "skipped": ["a.png"]}),
        (Metrics, BEFORE),
        (Metrics, {**AFTER, "split": "test"}),
        (ExplanationRecord, files["ranking"]),
        (VisualizationSet, files["vis"]),
        (EditRecord, {**files["edit"], **EDIT_EXTRA}),
        (Comparison, comp),
    ]


def test_every_record_round_trips(files):
    for kind, data in _cases(files):
        rec = kind.from_dict(data)
        assert kind.from_json(rec.to_json()) == rec, kind.__name__
        assert kind.from_dict(rec.to_dict()) == rec, kind.__name__
        written = rec.to_dict()
        assert written["schema"] == SCHEMA_VERSION
        # the content is what was given, plus the schema, in the same order
        assert {k: v for k, v in written.items() if k != "schema"} == json.loads(json.dumps(data))
        assert [k for k in written if k != "schema"] == list(data)


def test_records_read_and_write_files(tmp_path, files):
    path = EditRecord.from_dict(files["edit"]).write(tmp_path / "sub" / "edit.json")
    rec = EditRecord.read(path)
    assert rec.before == Metrics.from_dict(BEFORE) and rec.picked_by.ranked == [17, 311]
    assert rec.curves[2].epoch == 2 and rec.tau == files["edit"]["tau"]
    assert json.loads(path.read_text())["schema"] == SCHEMA_VERSION
    assert not list(path.parent.glob(".*"))  # written atomically: no temporary file left


def test_files_without_a_schema_read_as_version_1(files):
    for kind, data in _cases(files):
        assert "schema" not in data
        assert kind.from_dict(data).to_dict()["schema"] == 1


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


def test_a_newer_schema_is_one_clear_line(tmp_path, files):
    p = tmp_path / "ranking.json"
    p.write_text(json.dumps({**files["ranking"], "schema": SCHEMA_VERSION + 1}))
    with pytest.raises(NeuroInspectError) as err:
        ExplanationRecord.read(p)
    msg = _one_line(err)
    assert str(p) in msg and f"schema {SCHEMA_VERSION + 1}" in msg and "upgrade neuroinspect" in msg
    assert "rerun 'neuroinspect explain'" in msg
    for bad in ("2", True, 0, None):
        with pytest.raises(NeuroInspectError, match="not a version number"):
            Metrics.from_dict({**BEFORE, "schema": bad})


@pytest.mark.parametrize("kind, key, drop, needle", [
    (EditRecord, "edit", "before", "'before' is missing"),
    (Comparison, "compare", "rows", "'rows' is missing"),
    (ExplanationRecord, "ranking", "class", "'class' is missing"),
    (VisualizationSet, "vis", "images", "'images' is missing"),
    (RunInfo, "run", "command", "'command' is missing"),
])
def test_a_missing_field_says_which_and_what_to_do(files, kind, key, drop, needle):
    data = {k: v for k, v in files[key].items() if k != drop}
    with pytest.raises(NeuroInspectError) as err:
        kind.from_dict(data, "run/x.json")
    msg = _one_line(err)
    assert msg.startswith("run/x.json: ") and needle in msg and "rerun" in msg


def test_wrong_types_are_one_line_errors(tmp_path, files):
    bad = json.loads(json.dumps(files["vis"]))
    bad["images"][1]["neuron"] = "seventeen"
    with pytest.raises(NeuroInspectError, match=r"'images\[1\]\.neuron' should be an integer, not str\); rerun"):
        VisualizationSet.from_dict(bad)
    with pytest.raises(NeuroInspectError, match="'before.per_class' should be an object"):
        EditRecord.from_dict({**files["edit"], "before": {**BEFORE, "per_class": [0.5]}})
    with pytest.raises(NeuroInspectError, match="a JSON object was expected, found list"):
        Comparison.from_dict([1, 2])
    (tmp_path / "compare.json").write_text("{not json")
    with pytest.raises(NeuroInspectError, match="is not valid JSON"):
        Comparison.read(tmp_path / "compare.json")
    with pytest.raises(NeuroInspectError, match="no such file; run 'neuroinspect edit' first"):
        EditRecord.read(tmp_path / "edit.json")


def test_nan_and_tensors_are_cleaned_on_the_way_in():
    m = Metrics.from_dict({"accuracy": float("nan"), "per_class": {"a": torch.tensor(0.5).item(), "b": float("inf")},
                           "n": 3})
    assert m.accuracy is None and m.per_class == {"a": 0.5, "b": None}


def test_one_function_finds_the_worst_class_and_group():
    assert worst({"a": 0.5, "b": 0.25, "c": 0.25, "d": None, "e": float("nan")}) == ("b", 0.25)
    assert worst({}) == (None, None)
    s = summarize(0.8, {"x": 0.9, "y": 0.7}, {"x/g": 0.2, "y/g": 0.95})
    assert (s.worst_class, s.worst_class_acc, s.worst_group, s.worst_group_acc) == ("y", 0.7, "x/g", 0.2)
    assert summarize(0.8, {"x": 0.9}, {}).worst_group_acc is None
    # evaluate, the comparison rows and the report's Metrics agree on it
    fs = FeatureSet(features=torch.zeros(6, 2), logits=torch.zeros(6, 3), labels=torch.tensor([0, 0, 1, 1, 2, 2]),
                    groups=torch.tensor([0, 1, 0, 1, 0, 1]), ids=[str(i) for i in range(6)], split="test",
                    class_names=["a", "b", "c"], group_names=["g0", "g1"])
    m = evaluate(fs, torch.tensor([0, 0, 1, 1, 0, 2]))
    assert isinstance(m, Metrics) and m.worst_class == "c" and m.worst_group == "g0"
    row = summary_row("x", m, ["a"])
    rec = Metrics.from_dict(m.to_dict()).summary
    assert row.worst_class_acc == rec.worst_class_acc == m.worst_class_acc == 0.5
    assert row.worst_group_acc == rec.worst_group_acc == m.worst_group_acc == pytest.approx(2 / 3)
    assert row.avg_acc == pytest.approx(5 / 6)


def test_every_record_file_is_known():
    assert set(RECORDS) == {"run.json", "metrics.json", "ranking.json", "visualizations.json", "edit.json",
                            "compare.json", "evidence.json", "train.json"}


def test_report_leaves_out_a_too_new_file_and_keeps_rcparams(tmp_path, files):
    import matplotlib

    from neuroinspect.report import build_report

    Metrics.from_dict(BEFORE).write(tmp_path / "metrics.json")
    (tmp_path / "compare.json").write_text(json.dumps({**files["compare"], "schema": 99}))
    before = dict(matplotlib.rcParams)
    with matplotlib.rc_context({"font.size": 17.0}):
        page = build_report(tmp_path).read_text(encoding="utf-8")
        assert matplotlib.rcParams["font.size"] == 17.0 and matplotlib.rcParams["axes.spines.top"] is True
    assert dict(matplotlib.rcParams) == before
    assert (tmp_path / "report_assets" / "metrics_per_group.png").stat().st_size > 1000  # charts were drawn
    assert '<section id="compare">' not in page and '<section id="accuracy">' in page
    assert "compare.json could not be read and was left out (written with compare.json schema 99" in page

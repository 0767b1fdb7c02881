"""Naming the shortcut: the measured paragraph that opens the report (``neuroinspect.find.evidence``).

On the planted CNN the red patch (in a known corner) makes apples "berries": the paragraph must name
the red neuron, the corner its map sits in, and that it is silent on correct apples. On the planted
feature-space shortcut the cue neuron must lead, and the group labels must show it separates the groups.
"""
import json

import torch
from markupsafe import escape

import shortcut
from neuroinspect.find.evidence import auc, map_place, measure_evidence
from neuroinspect.find.ranking import explain_class
from neuroinspect.pipeline import Pipeline, PipelineConfig
from neuroinspect.report import build_report
from neuroinspect.session import Inspector
from planted import GREEN, RED, write_folder
from runfiles import load_run_files


def test_map_place_names_the_corner_and_the_centre():
    corner = torch.zeros(8, 8)
    corner[6:, 6:] = 1.0
    assert map_place(corner) == {"centre_share": 0.0, "place": "border", "region": "bottom-right"}
    middle = torch.zeros(8, 8)
    middle[3:5, 3:5] = 1.0
    got = map_place(middle)
    assert got["place"] == "centre" and got["region"] == "centre" and got["centre_share"] == 1.0
    assert map_place(torch.zeros(4, 4)) is None  # silent
    ring = torch.ones(8, 8)
    ring[2:6, 2:6] = 0.0  # a background neuron: everywhere but the middle; its centre of mass is the middle
    assert map_place(ring)["place"] == "border"
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0]), torch.tensor([1.0])) == 0.5 and auc(torch.tensor([]), torch.tensor([1.0])) is None


def test_the_paragraph_names_the_planted_patch_and_its_corner(tmp_path):
    root = write_folder(tmp_path / "data", n_per_class=6, n_red_apples=5, patch_at="bottom-right")
    ins = Inspector("planted:planted_cnn", str(root), cache_dir=tmp_path / "cache", progress=False)
    fs = ins.features("val")
    W, b = ins.probe.weight.detach(), ins.probe.bias.detach()
    e = explain_class(W, b, fs.with_logits(W, b), 0, progress=False)
    pipe = Pipeline(ins, tmp_path / "run", PipelineConfig(), progress=False)
    rec = pipe.evidence(e, [GREEN, RED], (W, b), fs)
    text = rec.paragraph
    assert text.startswith("5 of 5 'apple' mistakes on val are pulled toward 'berry' by neuron")
    red = next(r for r in rec.neurons if r.neuron == RED)
    assert red.kind == "excessive" and red.pulled == 5 and red.pulled_toward == {"berry": 5}
    assert red.mistakes_places == {"border": 5, "centre": 0, "spread": 0, "silent": 0} and red.region == "bottom-right"
    assert red.correct_places["silent"] == rec.n_correct == 6  # the red neuron is 0 on every plain apple
    assert red.act_ratio is None and red.act_mistakes > 0.3
    assert f"Neuron {RED} fires on the mistakes (mean {red.act_mistakes:.2f}) and not on the correct 'apple' images " \
           f"(mean 0.00); in 5 of 5 mistakes its map sits away from the centre of the image, on the background, " \
           f"mostly in the bottom-right corner, and it is 0 on all 6 correct ones mapped." in text
    green = next(r for r in rec.neurons if r.neuron == GREEN)  # green everywhere but the patch: not a place
    assert green.kind == "insufficient" and green.correct_places["spread"] == 6
    assert "group labels" not in text  # a folder has none
    # the gallery: the mistakes sorted by the lead neuron, each with its map over it
    saved = load_run_files(tmp_path / "run" / "evidence")["evidence.json"]  # schema-versioned, read back losslessly
    assert saved.paragraph == text and len(saved.gallery) == 5
    acts = [g.activation for g in saved.gallery]
    assert acts == sorted(acts, reverse=True) and all(g.predicted == "berry" for g in saved.gallery)
    assert all((tmp_path / "run" / "evidence" / g.image).is_file() for g in saved.gallery)
    page = build_report(tmp_path / "run").read_text(encoding="utf-8")  # the paragraph opens the report
    assert page.index('id="answer"') < page.index('id="evidence"') and str(escape(text)) in page
    assert page.count('alt="neuron 5 on red_') == 5


def test_the_cue_neuron_leads_and_separates_the_groups():
    F = shortcut.splits(0)
    W, b = shortcut.erm_head(F["train"])
    val = F["val"].with_logits(W, b)
    e = explain_class(W, b, val, shortcut.SPURIOUS, progress=False)
    picked = list(dict.fromkeys([s.neuron for s in e.insufficient[:4]] + [s.neuron for s in e.excessive[:2]]))
    rec = measure_evidence(W, b, val, e, picked)
    assert rec.lead[0] == shortcut.CUE
    cue = next(r for r in rec.neurons if r.neuron == shortcut.CUE)
    assert cue.kind == "insufficient" and cue.pulled >= 0.8 * rec.n_mistakes
    assert cue.act_ratio < 0.2  # the cue is missing on the mistakes: "fires 5x less"
    assert cue.auc_groups == "'coat/no cue' from the other 'coat' images" and cue.auc < 0.05
    others = [abs(r.auc - 0.5) for r in rec.neurons if r.neuron != shortcut.CUE]
    assert abs(cue.auc - 0.5) > max(others)  # of the picked neurons, the cue separates the groups best
    assert f"by neuron{'s' if len(rec.lead) > 1 else ''} {shortcut.CUE}" in rec.paragraph
    assert f"Neuron {shortcut.CUE} fires" in rec.paragraph and "× less on the mistakes" in rec.paragraph
    assert f"neuron {shortcut.CUE} separates 'coat/no cue'" in rec.paragraph and "group labels" in rec.paragraph
    assert "map" not in rec.paragraph  # no images: no place claimed
    assert json.loads(rec.to_json())["paragraph"] == rec.paragraph

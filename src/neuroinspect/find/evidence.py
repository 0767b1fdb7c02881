"""Name the shortcut: where the evidence behind a class's mistakes sits, measured and said in words.

For the picked neurons of a class under debugging (the top of its ranking), on the split whose
mistakes were explained, :func:`measure_evidence` measures:

``pulled``        mistake *i* (true class c, taken for p_i) is pulled by neuron j when j is among
                  the top-k neurons that blame *i* (the ranking's own blame and k: the contribution
                  gap ``(W[c,j] − W[p_i,j]) · (μ_j − z_ij)``, or the paper's edit for the additive
                  ranking), in the neuron's direction (insufficient: it dropped; excessive: it rose);
                  counted per predicted class;
``activation``    the neuron's mean activation on the mistakes and on the correctly classified
                  images of the class, and their ratio;
``place``         where its spatial map sits in each image (given ``maps``): the share of the map's
                  positive mass inside the central box (the middle half of each side, a quarter of
                  the image) — at least half: *centre*; under 0.6 × the box's share of the area
                  (a uniform map's share), or hot (≥ half its peak) on at most half the image with
                  its centre of mass off the middle cell: *border*; else *spread* (over the whole
                  image); a map that is 0 everywhere: *silent* — and the 3×3 cell of the map's centre of mass (``top-left`` … ``centre``
                  … ``bottom-right``). On object-centred photos the centre is where the object is
                  and the border is background;
``auc``           only where the data has group labels: the AUC at which the activation separates
                  the class's least accurate group from the class's other images (0.5: not at all;
                  the labels are read for this number only).

:func:`paragraph` builds the few measured sentences that open the report and the printed summary.
This module is torch-only (the maps are computed by the show stage and passed in).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Mapping, Sequence

import torch

from neuroinspect.core.base.records import EvidenceRecord, NeuronEvidence
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.find.ranking import Explanation, gap_blame

CENTRE_BOX = (0.25, 0.75)  # the central box: the middle half of each side
CENTRE_SHARE = 0.5  # a map with at least this share of its mass in the central box sits in the centre
SPREAD = 0.6  # ... with less than this times the box's share of the area, on the border; in between: spread out
HOT_AREA = 0.5  # ... unless it is hot on at most this share of the image, off the centre: then on the border too
REGIONS = (("top-left", "top", "top-right"), ("left", "centre", "right"), ("bottom-left", "bottom", "bottom-right"))
LEAD = 2  # neurons the paragraph names


def map_place(cell_map: torch.Tensor) -> dict | None:
    """``{"centre_share", "place", "region"}`` of one neuron's map ([h, w]); ``None`` where it is 0 everywhere."""
    m = cell_map.float().clamp_min(0)
    total = float(m.sum())
    if total <= 0:
        return None
    h, w = m.shape
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    lo, hi = CENTRE_BOX
    inside = ((ys >= lo) & (ys <= hi)).float()[:, None] * ((xs >= lo) & (xs <= hi)).float()[None, :]
    share = float((m * inside).sum()) / total
    cy, cx = float((m.sum(1) * ys).sum()) / total, float((m.sum(0) * xs).sum()) / total
    region = REGIONS[min(int(cy * 3), 2)][min(int(cx * 3), 2)]
    hot = float((m >= 0.5 * m.max()).float().mean())  # the share of the image where the map is at least half its peak
    if share >= CENTRE_SHARE:
        place = "centre"
    elif share < SPREAD * float(inside.mean()) or (hot <= HOT_AREA and region != "centre"):
        place = "border"  # it shuns the centre, or sits in one place off the centre
    else:
        place = "spread"
    return {"centre_share": share, "place": place, "region": region}


def _places(maps: Mapping[str, torch.Tensor], ids: Sequence[str], col: int) -> tuple[dict[str, int], list, list]:
    """Counts of border/centre/silent over ``ids`` (those with a map), the centre shares and the regions of border maps."""
    counts = {"border": 0, "centre": 0, "spread": 0, "silent": 0}
    shares, regions = [], []
    for ident in ids:
        if ident not in maps:
            continue
        got = map_place(maps[ident][col])
        if got is None:
            counts["silent"] += 1
            continue
        counts[got["place"]] += 1
        shares.append(got["centre_share"])
        if got["place"] == "border":
            regions.append(got["region"])
    return counts, shares, regions


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float | None:
    """P(a value of ``pos`` > a value of ``neg``), ties counted half (the Mann–Whitney AUC)."""
    if not len(pos) or not len(neg):
        return None
    diff = pos.float()[:, None] - neg.float()[None, :]
    return float((diff > 0).float().mean() + 0.5 * (diff == 0).float().mean())


def _hard_group(fs: FeatureSet, c: int, predictions: torch.Tensor) -> tuple[torch.Tensor, str] | None:
    """The mask (over class ``c``'s rows) of its least accurate group and that group's name; None without groups."""
    own = fs.labels == c
    groups = fs.groups[own]
    present = sorted({int(g) for g in groups.tolist() if g >= 0})
    if len(present) < 2 or not fs.group_names:
        return None
    right = (predictions[own] == c).float()
    acc = {g: float(right[groups == g].mean()) for g in present}
    hard = min(present, key=lambda g: (acc[g], g))
    name = fs.group_names[hard] if hard < len(fs.group_names) else str(hard)
    return groups == hard, name


def _shift(r: NeuronEvidence) -> float:
    """How far the neuron moved on the mistakes from the correct images: |log(ratio)| (inf: 0 on the correct ones)."""
    if r.act_ratio is None:
        return math.inf if r.act_mistakes else 0.0
    return abs(math.log(max(r.act_ratio, 1e-8)))


def _blame(W: torch.Tensor, b: torch.Tensor, fs: FeatureSet, e: Explanation, predictions: torch.Tensor) -> torch.Tensor:
    """The ranking's signed blame of each mistake ([M, D]): the explanation's own when it was made on these mistakes,
    else the contribution gap (the additive edit for an additive ranking, or without correct images)."""
    c = e.class_index
    if e.blame is not None and e.split == fs.split and len(e.blame) == int(((fs.labels == c) & (predictions != c)).sum()):
        return e.blame.float()
    gap = None if e.settings.get("ranking") == "additive" else gap_blame(W, b, fs, c, predictions)
    return e.counterfactuals.delta.float() if gap is None else gap


def measure_evidence(W: torch.Tensor, b: torch.Tensor, fs: FeatureSet, explanation: Explanation,
                     neurons: Sequence[int], maps: Mapping[str, torch.Tensor] | None = None,
                     ids: Mapping[str, Sequence[str]] | None = None) -> EvidenceRecord:
    """Measure each of ``neurons`` on ``fs`` (the explained split) for ``explanation``'s class (module docstring).

    ``maps``: ``{image id: [len(neurons), h, w]}``, the neurons' spatial maps in that order, for
    the ``ids["mistakes"]`` and ``ids["correct"]`` that were mapped (none: no place is measured).
    Returns the record with its paragraph (:func:`paragraph`); no gallery yet.
    """
    W, b = W.detach().float().cpu(), b.detach().float().cpu()
    c, names = explanation.class_index, fs.class_names
    predictions = (fs.features.float() @ W.T + b).argmax(1)
    wrong, right = (fs.labels == c) & (predictions != c), (fs.labels == c) & (predictions == c)
    pred_wrong = predictions[wrong]
    k = int(explanation.settings.get("k", 5))
    blame = _blame(W, b, fs, explanation, predictions)
    M = int(wrong.sum())
    top_pos = blame.topk(min(k, blame.shape[1]), dim=1) if M else None
    top_neg = (-blame).topk(min(k, blame.shape[1]), dim=1) if M else None
    insufficient = {s.neuron for s in explanation.insufficient}
    excessive = {s.neuron for s in explanation.excessive}
    hard = _hard_group(fs, c, predictions)
    maps = maps or {}
    ids = ids or {"mistakes": [], "correct": []}
    rows = []
    for col, j in enumerate(int(n) for n in neurons):
        z = fs.features[:, j].float()
        if j in insufficient or (j not in excessive and M and float(blame[:, j].mean()) >= 0):
            kind, top = "insufficient", top_pos
        else:
            kind, top = "excessive", top_neg
        hit = ((top.indices == j) & (top.values > 0)).any(1) if M else torch.zeros(0, dtype=torch.bool)
        toward = Counter(names[int(p)] if int(p) < len(names) else str(int(p)) for p in pred_wrong[hit].tolist())
        mean_w = float(z[wrong].mean()) if M else None
        mean_r = float(z[right].mean()) if right.any() else None
        ratio = mean_w / mean_r if (mean_w is not None and mean_r is not None and mean_r > 1e-8) else None
        m_counts, m_shares, regions = _places(maps, ids.get("mistakes", []), col)
        r_counts, r_shares, _ = _places(maps, ids.get("correct", []), col)
        top_region = Counter(regions).most_common(1)
        region = top_region[0][0] if top_region and top_region[0][1] * 2 > len(regions) else None
        a = groups = None
        if hard is not None:
            mask, hard_name = hard
            zc = z[fs.labels == c]
            a, groups = auc(zc[mask], zc[~mask]), f"'{hard_name}' from the other '{names[c]}' images"
        rows.append(NeuronEvidence(
            neuron=j, kind=kind, pulled=int(hit.sum()), pulled_toward=dict(toward.most_common()),
            act_mistakes=mean_w, act_correct=mean_r, act_ratio=ratio,
            mistakes_places=m_counts if maps else {}, correct_places=r_counts if maps else {},
            centre_share_mistakes=sum(m_shares) / len(m_shares) if m_shares else None,
            centre_share_correct=sum(r_shares) / len(r_shares) if r_shares else None,
            region=region, auc=a, auc_groups=groups))
    lead = [r.neuron for r in sorted(rows, key=lambda r: (-r.pulled, -_shift(r)))[:LEAD] if r.pulled > 0]
    pulled_any = torch.zeros(M, dtype=torch.bool)
    for j in lead:
        col = [r.neuron for r in rows].index(j)
        top = top_pos if rows[col].kind == "insufficient" else top_neg
        pulled_any |= ((top.indices == j) & (top.values > 0)).any(1)
    toward = Counter(names[int(p)] for p in pred_wrong[pulled_any].tolist())
    record = EvidenceRecord(
        class_name=names[c], split=fs.split, n_mistakes=M, n_correct=int(right.sum()), k=k, lead=lead, neurons=rows,
        mapped={"mistakes": sum(1 for i in ids.get("mistakes", []) if i in maps),
                "correct": sum(1 for i in ids.get("correct", []) if i in maps)})
    record.paragraph = paragraph(record, int(pulled_any.sum()), dict(toward.most_common()))
    return record


def gallery_neuron(record: EvidenceRecord) -> int | None:
    """The neuron the gallery of mistakes is sorted by: the excessive neuron that pulls the most mistakes (its map
    shows where the wrong evidence sits), else the first neuron named."""
    excessive = [r for r in record.neurons if r.kind == "excessive" and r.pulled > 0]
    if excessive:
        return max(excessive, key=lambda r: (r.pulled, _shift(r))).neuron
    return record.lead[0] if record.lead else (record.neurons[0].neuron if record.neurons else None)


def _names(neurons: Sequence[int]) -> str:
    items = [str(n) for n in neurons]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _times(r: NeuronEvidence, cls: str) -> str:
    if r.act_ratio is None:
        return (f"fires on the mistakes (mean {r.act_mistakes:.2f}) and not on the correct '{cls}' images "
                f"(mean {r.act_correct or 0:.2f})")
    if r.act_ratio >= 1:
        return f"fires {r.act_ratio:.1f}× more on the mistakes than on the correct '{cls}' images"
    return f"fires {1 / max(r.act_ratio, 1e-8):.1f}× less on the mistakes than on the correct '{cls}' images"


SIDES = {"top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right"}


def _place_clause(r: NeuronEvidence) -> str | None:
    """Where the neuron's map sits in the mistakes, against the correct images of the class."""
    m, ok = r.mistakes_places, r.correct_places
    n = sum(m.values())
    if not n:
        return None
    place = max(("border", "centre", "spread"), key=lambda p: m.get(p, 0))
    if m.get(place, 0) == 0:
        return f"its map is 0 on all {n} mistakes mapped"
    where = {"border": "away from the centre of the image, on the background",
             "centre": "in the centre of the image (where the object usually is)",
             "spread": "spread over the whole image"}[place]
    if place == "border" and r.region and r.region != "centre":
        where += ", mostly " + SIDES.get(r.region, f"in the {r.region} corner")
    others = [f"{p} in {m[p]}" for p in ("centre", "border", "spread", "silent") if p != place and m.get(p)]
    text = f"in {m[place]} of {n} mistakes its map sits {where}" + (f" ({', '.join(others)})" if others else "")
    n_ok = sum(ok.values())
    if n_ok and ok.get("silent", 0) == n_ok:
        text += f", and it is 0 on all {n_ok} correct ones mapped"
    elif n_ok:
        text += f", against {ok.get(place, 0)} of {n_ok} correct ones"
    return text


def paragraph(record: EvidenceRecord, n_pulled: int, toward: Mapping[str, int]) -> str:
    """The measured sentences that open the report: who pulls the mistakes where, how much more they fire on the
    mistakes, where their maps sit and, with group labels, which groups they separate.

    The neurons named (``record.lead``) are the picked ones that pull the most mistakes, ties broken by how far
    their activation moved on the mistakes."""
    cls, M = record.class_name, record.n_mistakes
    if M == 0:
        return f"'{cls}' has no mistakes on {record.split}: nothing to explain."
    if not record.lead:
        return (f"None of the picked neurons is among the top-{record.k} blamed neurons of any of the {M} '{cls}' "
                f"mistakes on {record.split}.")
    where = " and ".join(f"'{p}' ({n})" if len(toward) > 1 else f"'{p}'" for p, n in list(toward.items())[:3])
    lead = [r for j in record.lead for r in record.neurons if r.neuron == j]
    s = (f"{n_pulled} of {M} '{cls}' mistakes on {record.split} are pulled toward {where} by neuron"
         f"{'s' if len(lead) > 1 else ''} {_names(record.lead)}.")
    for r in lead:
        parts = [_times(r, cls)] if r.act_mistakes is not None and record.n_correct else []
        parts += [p for p in (_place_clause(r),) if p]
        if parts:
            s += f" Neuron {r.neuron} " + "; ".join(parts) + "."
    aucs = [r for r in lead if r.auc is not None]
    if aucs:
        s += (f" With the group labels (read for this sentence only), neuron {aucs[0].neuron} separates "
              f"{aucs[0].auc_groups} at AUC {aucs[0].auc:.2f}" + "".join(
                  f", neuron {r.neuron} at {r.auc:.2f}" for r in aucs[1:]) + " (0.5: not at all).")
    return s

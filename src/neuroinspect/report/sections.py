"""One builder per section of the report: a typed record in, the template's context for it out.

The run files are loaded through :mod:`neuroinspect.core.base.records`, so a section can trust the
types of what it reads; a file that does not load becomes one notice at the top of the page
(with the record's one-line reason) and its section is left out.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import atomic_path
from neuroinspect.core.base.records import (STAT_KEYS, Comparison, ComparisonRow, EditRecord, EvidenceRecord,
                                       ExplanationRecord, HeatmapRow, Metrics, Record, RunInfo, VisualizationSet)
from neuroinspect.fix.config import DEFAULT_METHOD
from neuroinspect.report import charts
from neuroinspect.report.format import fmt_delta, fmt_pct, method_label, num, rel_url, settings_text, trend

log = logging.getLogger(__name__)

ASSETS_DIR = "report_assets"
MAX_MISTAKES = 48
THUMB_SIZE = 112
#: Sub-folders searched first, in this order; any other sub-folder comes after them.
KNOWN_SUBDIRS = ("explain", "evidence", "visualize", "edit", "compare")
RUN_FILES = ("run.json", "metrics.json", "mistakes.csv", "ranking.json", "visualizations.json", "edit.json", "compare.json",
             "evidence.json")
COMPARE_METRICS = [("avg_acc", "average"), ("class_acc", "edited class"), ("worst_class_acc", "worst class"),
                   ("worst_group_acc", "worst group")]
assert tuple(k for k, _ in COMPARE_METRICS) == STAT_KEYS


# --------------------------------------------------------------------------- finding and loading files
def search_dirs(run_dir: Path) -> list[Path]:
    subs = sorted((p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != ASSETS_DIR),
                  key=lambda p: p.name)
    known = [p for name in KNOWN_SUBDIRS for p in subs if p.name == name]
    return [run_dir, *known, *(p for p in subs if p not in known)]


def locate(run_dir: Path, name: str) -> list[Path]:
    return [d / name for d in search_dirs(run_dir) if (d / name).is_file()]


def load(kind: type[Record], path: Path, notes: list[str]) -> Any:
    """The record in ``path``, or None with a note saying why it was left out."""
    try:
        return kind.read(path)
    except NeuroInspectError as err:
        reason = str(err)
        prefix = f"{path}: "
        notes.append(f"{path.name} could not be read and was left out "
                     f"({reason[len(prefix):] if reason.startswith(prefix) else reason})")
        return None


def _chart(path: Path | None, run_dir: Path, alt: str) -> list[dict]:
    return [] if path is None else [{"src": rel_url(path, run_dir), "alt": alt}]


# --------------------------------------------------------------------------- what was run
def _flatten(run: dict) -> list[dict]:
    """``run.json`` as rows of (key, value) where nested dicts become 'a.b' keys and lists are joined."""
    out = []

    def walk(prefix: str, v: Any):
        if isinstance(v, dict) and v:
            for k, sub in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), sub)
        elif isinstance(v, list):
            if not v:
                out.append({"key": prefix, "value": "none"})
            elif prefix in ("command", "argv"):
                out.append({"key": prefix, "value": " ".join(str(x) for x in v)})
            else:
                out.append({"key": prefix, "value": ", ".join(json.dumps(x) if isinstance(x, (dict, list)) else str(x)
                                                              for x in v)})
        else:
            out.append({"key": prefix, "value": "–" if v is None else str(v)})

    walk("", run)
    return out


def _is_main_key(key: str) -> bool:
    """The settings shown up front; the rest of ``run.json`` is folded away."""
    if "." not in key:
        return True  # top-level values: command, model, data, seed, time, ...
    return key.startswith("versions.") or key.rsplit(".", 1)[-1] in ("seed", "device")


def run_section(run: RunInfo, src: Path, run_dir: Path) -> dict:
    recorded = {k: v for k, v in run.to_dict().items() if k != "schema"}
    rows = _flatten(recorded)
    stage = src.parent.name if src.parent != run_dir else "this run"
    return {"stage": stage, "source": rel_url(src, run_dir), "main": [r for r in rows if _is_main_key(r["key"])],
            "rows": rows}


# --------------------------------------------------------------------------- accuracy
def metrics_section(metrics: Metrics, src: Path, run_dir: Path, assets: Path) -> dict:
    sec = {
        "source": rel_url(src, run_dir),
        "split": metrics.split,
        "accuracy": metrics.accuracy,
        "n": metrics.n,
        "worst_class": metrics.worst_class,
        "worst_group": metrics.worst_group,
        "per_class": metrics.per_class,
        "per_group": metrics.per_group,
        "charts": [],
    }
    if metrics.per_class:
        p = charts.bar_chart({"accuracy": metrics.per_class}, "accuracy per class", assets / "metrics_per_class.png",
                             highlight=metrics.worst_class)
        sec["charts"] += _chart(p, run_dir, "bar chart of accuracy per class")
    if metrics.per_group:
        p = charts.bar_chart({"accuracy": metrics.per_group}, "accuracy per group", assets / "metrics_per_group.png",
                             highlight=metrics.worst_group)
        sec["charts"] += _chart(p, run_dir, "bar chart of accuracy per group")
    return sec


# --------------------------------------------------------------------------- mistakes (a CSV, no record)
def _resolve_image(ident: str, bases: list[Path]) -> Path | None:
    p = Path(ident)
    candidates = [p] if p.is_absolute() else [b / p for b in bases]
    for c in candidates:
        try:
            if c.is_file():
                return c
        except OSError:
            continue
    return None


def mistakes_section(src: Path, run_dir: Path, assets: Path, notes: list[str]) -> dict | None:
    try:
        with open(src, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in r.items()} for r in reader]
    except (OSError, csv.Error, UnicodeDecodeError) as err:
        notes.append(f"mistakes.csv could not be read and was left out ({type(err).__name__}: {err})")
        return None
    thumbs = assets / "mistakes"
    if thumbs.is_dir():  # thumbnails of an earlier build
        for old in thumbs.glob("[0-9][0-9][0-9].png"):
            old.unlink()
    items = []
    for i, r in enumerate(rows[:MAX_MISTAKES]):
        ident = r.get("id") or r.get("path") or ""
        item = {"id": ident, "name": Path(ident).name or ident, "true": r.get("true", ""),
                "predicted": r.get("predicted", ""), "thumb": None}
        path = _resolve_image(ident, [src.parent, run_dir, Path.cwd()]) if ident else None
        if path is not None:
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    im.thumbnail((THUMB_SIZE, THUMB_SIZE))
                    out = thumbs / f"{i:03d}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(out) as tmp:
                        im.save(tmp, format="PNG")
                item["thumb"] = rel_url(out, run_dir)
            except Exception as err:  # an unreadable image: show its name only
                log.info("report: thumbnail of %s failed: %s", path, err)
        items.append(item)
    return {"source": rel_url(src, run_dir), "total": len(rows), "shown": len(items), "items": items}


# --------------------------------------------------------------------------- stage 1
def ranking_section(ranking: ExplanationRecord, src: Path, run_dir: Path) -> dict:
    return {
        "source": rel_url(src, run_dir),
        "class": ranking.class_name,
        "class_index": ranking.class_index,
        "split": ranking.split,
        "n_mistakes": ranking.n_mistakes,
        "n_flipped": ranking.n_flipped,
        "insufficient": ranking.insufficient,
        "excessive": ranking.excessive,
    }


# --------------------------------------------------------------------------- the evidence (what the shortcut is)
def _places(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "–"


def evidence_section(ev: EvidenceRecord, src: Path, run_dir: Path) -> dict:
    """The measured paragraph, the table it is built from, and the mistakes sorted by the lead neuron."""
    base = src.parent

    def img(rel: str | None) -> str | None:
        return rel_url(base / rel, run_dir) if rel and (base / rel).is_file() else None

    rows = [{"neuron": r.neuron, "kind": r.kind, "lead": r.neuron in ev.lead, "pulled": r.pulled,
             "toward": ", ".join(f"{k} ({v})" for k, v in r.pulled_toward.items()) or "–",
             "act_mistakes": r.act_mistakes, "act_correct": r.act_correct, "act_ratio": r.act_ratio,
             "mistakes_places": _places(r.mistakes_places), "correct_places": _places(r.correct_places),
             "region": r.region, "auc": r.auc, "auc_groups": r.auc_groups} for r in ev.neurons]
    return {"source": rel_url(src, run_dir), "class": ev.class_name, "split": ev.split, "n_mistakes": ev.n_mistakes,
            "n_correct": ev.n_correct, "k": ev.k, "paragraph": ev.paragraph, "rows": rows, "mapped": ev.mapped,
            "has_maps": any(r.mistakes_places for r in ev.neurons), "has_auc": any(r.auc is not None for r in ev.neurons),
            "gallery_neuron": ev.gallery_neuron, "notes": ev.notes,
            "gallery": [{"id": g.id, "name": Path(str(g.id)).name, "predicted": g.predicted, "activation": g.activation,
                         "place": g.place, "image": img(g.image)} for g in ev.gallery]}


# --------------------------------------------------------------------------- stage 2
def _heatmap_rows(rows: list[HeatmapRow], img: Callable[[str | None], str | None]) -> list[dict]:
    """The neuron card's exemplar rows: per class, top images with heatmaps and crops."""
    return [{"class": r.class_name, "role": r.role, "note": r.note,
             "items": [{"id": it.id, "activation": it.activation, "heatmap": img(it.heatmap), "crop": img(it.crop)}
                       for it in r.items]}
            for r in rows]


def _card(neuron: int) -> dict:
    return {"neuron": neuron, "top_classes": [], "dataset_top_activation": None, "dataset_mean_top_activation": None,
            "exemplar_strip": None, "exemplars": [], "heatmaps": [], "images": [], "edited": False}


def vis_section(vis: VisualizationSet, src: Path, run_dir: Path, edited: set[int]) -> dict:
    base = src.parent

    def img(rel: str | None) -> str | None:
        if not rel:
            return None
        p = base / rel
        return rel_url(p, run_dir) if p.is_file() else None

    cards: dict[int, dict] = {}
    for n in vis.neurons:
        wmax = max((abs(t.weight or 0.0) for t in n.top_classes), default=0.0) or 1.0
        cards[n.neuron] = {
            **_card(n.neuron),
            "top_classes": [{"class": t.class_name, "weight": t.weight, "bar": round(100 * abs(t.weight or 0.0) / wmax, 1),
                             "negative": (t.weight or 0.0) < 0} for t in n.top_classes],
            "dataset_top_activation": n.dataset_top_activation,
            "dataset_mean_top_activation": n.dataset_mean_top_activation,
            "exemplar_strip": img(n.exemplar_strip),
            "exemplars": n.exemplars,
            "heatmaps": _heatmap_rows(n.exemplar_heatmaps, img),
        }
    for im in vis.images:
        card = cards.setdefault(im.neuron, _card(im.neuron))
        card["images"].append({
            "note": im.note, "start": im.start, "class": im.class_name, "class_index": im.class_index,
            "recipe": im.recipe, "clip_used": im.clip_used, "activation": im.activation, "logit": im.logit,
            "prob": im.prob, "clip_similarity": im.clip_similarity, "crs": im.crs,
            "image": img(im.image), "masked": img(im.masked),
        })
    for c in cards.values():
        c["edited"] = c["neuron"] in edited
    return {
        "source": rel_url(src, run_dir),
        "model": vis.model, "recipe": vis.recipe, "clip": vis.clip,
        "clip_fallback": vis.clip_fallback, "clip_fallback_reason": vis.clip_fallback_reason,
        "steps": vis.steps, "size": vis.size, "seed": vis.seed,
        "cards": list(cards.values()), "has_images": bool(vis.images),
    }


# --------------------------------------------------------------------------- stage 3
def _pairs(before: dict[str, float | None], after: dict[str, float | None]) -> list[dict]:
    names = list(before) + [k for k in after if k not in before]
    return [{"name": n, "before": before.get(n), "after": after.get(n), "delta": fmt_delta(before.get(n), after.get(n)),
             "trend": trend(before.get(n), after.get(n))} for n in names]


def before_after_rows(before: Metrics, after: Metrics) -> dict:
    b, a = before.summary, after.summary
    summary = [
        {"name": "average accuracy", "before": before.accuracy, "after": after.accuracy},
        {"name": "worst-class accuracy", "before": b.worst_class_acc, "after": a.worst_class_acc},
    ]
    if b.worst_group_acc is not None or a.worst_group_acc is not None:
        summary.append({"name": "worst-group accuracy", "before": b.worst_group_acc, "after": a.worst_group_acc})
    for s in summary:
        s["delta"] = fmt_delta(s["before"], s["after"])
        s["trend"] = trend(s["before"], s["after"])
    return {"summary": summary, "per_class": _pairs(before.per_class, after.per_class),
            "per_group": _pairs(before.per_group, after.per_group)}


def edit_section(edit: EditRecord, src: Path, run_dir: Path, assets: Path) -> dict:
    before, after = edit.before, edit.after
    sec = {
        "source": rel_url(src, run_dir),
        "method": edit.method, "label": method_label(edit.method),
        "classes": edit.classes, "fit_on": edit.fit_on,
        "uses_group_labels": edit.uses_group_labels,
        "chosen": edit.chosen, "settings": settings_text(edit.chosen),
        "searched": bool(edit.search),
        "neurons": edit.neurons,
        "tau": edit.tau or {}, "lam": edit.lam, "select_by": edit.select_by,
        "best_epoch": edit.best_epoch, "epochs_run": edit.epochs_run, "model_file": edit.model_file,
        "table": before_after_rows(before, after), "charts": [], "picked_by": None,
    }
    if edit.picked_by is not None:
        chosen = {str(n) for ns in edit.neurons.values() for n in ns}
        crs = edit.picked_by.crs
        ranked = [str(n) for n in edit.picked_by.ranked] if edit.picked_by.ranked is not None else list(crs)
        sec["picked_by"] = {"rule": edit.picked_by.rule, "has_crs": any(v is not None for v in crs.values()),
                            "rows": [{"neuron": n, "crs": crs.get(n), "picked": n in chosen} for n in ranked]}
    for key, what in (("per_group", "group"), ("per_class", "class")):  # per group when there are groups
        b, a = getattr(before, key), getattr(after, key)
        if b or a:
            names = list(b) + [k for k in a if k not in b]
            p = charts.bar_chart({"before": {n: b.get(n) for n in names}, "after": {n: a.get(n) for n in names}},
                                 f"accuracy per {what}, before and after the edit", assets / f"edit_{key}.png")
            sec["charts"] += _chart(p, run_dir, f"accuracy per {what} before and after the edit")
            break
    if edit.curves:
        p = charts.curves_chart(edit.curves, edit.best_epoch, edit.select_by or "metric", assets / "edit_curves.png")
        sec["charts"] += _chart(p, run_dir, "training curves of the edit")
    return sec


# --------------------------------------------------------------------------- comparison
def _group_cost(rows: list[ComparisonRow]) -> dict | None:
    """Per-group accuracy of every method against the original head (what each fix costs where)."""
    original = next((r for r in rows if r.method == "original"), None)
    if original is None or not original.per_group:
        return None
    groups = list(original.per_group)
    table = []
    for r in rows:
        cells = []
        for g in groups:
            b, a = original.per_group.get(g), r.per_group.get(g)
            cells.append({"value": a, "delta": "" if r is original else fmt_delta(b, a),
                          "trend": "flat" if r is original else trend(b, a)})
        table.append({"label": method_label(r.method), "cells": cells})
    return {"groups": groups, "rows": table}


def compare_section(comp: Comparison, src: Path, run_dir: Path, assets: Path) -> dict:
    rows = comp.rows
    cols = [(k, label) for k, label in COMPARE_METRICS if any(num(r.value(k)) is not None for r in rows)]
    best = {}
    for k, _ in cols:
        vals = [v for v in (num(r.value(k)) for r in rows) if v is not None]
        best[k] = max(vals) if vals else None
    original = comp.row("original")
    table = []
    for r in rows:
        cells = []
        vs_original = original is not None and r is not original
        for k, _ in cols:
            v, sd = r.value(k), num(r.std(k))
            cells.append({"key": k, "value": v, "std": sd if sd and (r.n_seeds or 1) > 1 else None,
                          "best": num(v) is not None and num(v) == best[k],
                          "delta": fmt_delta(original.value(k), v) if vs_original else "",
                          "trend": trend(original.value(k), v) if vs_original else "flat"})
        table.append({"method": r.method, "label": method_label(r.method), "cells": cells,
                      "group_labels": r.uses_group_labels, "fit_on": r.fit_on or "", "n_seeds": r.n_seeds})
    sec = {"source": rel_url(src, run_dir), "classes": comp.classes, "split": comp.split,
           "columns": [label for _, label in cols], "rows": table, "charts": [], "seeds": comp.seeds,
           "notes": comp.notes, "group_cost": _group_cost(rows)}
    if rows and cols:
        sec["charts"] += _chart(charts.grouped_columns(rows, cols, assets / "compare.png"), run_dir,
                                "accuracy of every method")
    return sec


# --------------------------------------------------------------------------- the summary tiles
def headline(ctx: dict) -> dict | None:
    edit, comp, metrics = ctx.get("edit"), ctx.get("compare"), ctx.get("metrics")
    tiles = []
    if edit and not (comp and len(comp["seeds"]) > 1):  # several seeds: the comparison's means lead
        rows = {r["name"]: r for r in edit["table"]["summary"]}
        for name in ("worst-group accuracy", "average accuracy", "worst-class accuracy"):
            r = rows.get(name)
            if r and (r["before"] is not None or r["after"] is not None):
                tiles.append({"label": name, "before": fmt_pct(r["before"]), "after": fmt_pct(r["after"]),
                              "delta": r["delta"], "trend": r["trend"], "source": "edit.json"})
        return {"title": f"Editing the decision layer: {edit['label'] or 'ratio'}", "tiles": tiles[:3]}
    if comp:
        rows = {r["method"]: r for r in comp["rows"]}
        orig = rows.get("original")
        # the default fix when it was compared, else the first method of the table
        method = DEFAULT_METHOD if DEFAULT_METHOD in rows else next((m for m in rows if m != "original"), None)
        ours = rows.get(method)
        if orig and ours:
            for k, label in (("worst_group_acc", "worst-group accuracy"), ("avg_acc", "average accuracy"),
                             ("worst_class_acc", "worst-class accuracy")):
                b = next((c["value"] for c in orig["cells"] if c["key"] == k), None)
                a = next((c["value"] for c in ours["cells"] if c["key"] == k), None)
                if num(b) is not None or num(a) is not None:
                    tiles.append({"label": label, "before": fmt_pct(b), "after": fmt_pct(a), "delta": fmt_delta(b, a),
                                  "trend": trend(b, a), "source": "compare.json"})
            seeds = len(comp["seeds"]) or 1
            return {"title": f"Original head → {ours['label']}" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""),
                    "tiles": tiles[:3]}
    if metrics:
        tiles.append({"label": "average accuracy", "value": fmt_pct(metrics["accuracy"])})
        if metrics["worst_class"] is not None:
            tiles.append({"label": "worst class", "value": fmt_pct(metrics["per_class"].get(metrics["worst_class"])),
                          "sub": metrics["worst_class"]})
        if metrics["worst_group"] is not None:
            tiles.append({"label": "worst group", "value": fmt_pct(metrics["per_group"].get(metrics["worst_group"])),
                          "sub": metrics["worst_group"]})
        return {"title": "Accuracy", "tiles": tiles}
    return None


# --------------------------------------------------------------------------- all of it
def collect(run_dir: str | os.PathLike, assets: Path | None = None) -> dict:
    """Read every run file under ``run_dir`` and build the template's context (charts and thumbnails included)."""
    run_dir = Path(run_dir)
    assets = assets or run_dir / ASSETS_DIR
    notes: list[str] = []
    ctx: dict[str, Any] = {"notes": notes, "files": []}

    runs, ctx["chosen_because"] = [], []
    for p in locate(run_dir, RunInfo.FILE):
        if (run := load(RunInfo, p, notes)) is not None:
            runs.append(run_section(run, p, run_dir))
            ctx["files"].append(rel_url(p, run_dir))
            if p.parent == run_dir:  # this run's own: why `debug` chose its classes, in words
                ctx["chosen_because"] = [str(line) for line in (run.headline or {}).get("chosen_because") or []]
    ctx["runs"] = runs

    def first(kind: type[Record]) -> tuple[Path, Any] | None:
        found = locate(run_dir, kind.FILE)
        if not found:
            return None
        rec = load(kind, found[0], notes)
        if rec is None:
            return None
        ctx["files"].append(rel_url(found[0], run_dir))
        return found[0], rec

    edit_neurons: set[int] = set()
    if (got := first(EditRecord)) is not None:
        ctx["edit"] = edit_section(got[1], got[0], run_dir, assets)
        edit_neurons = {n for ns in got[1].neurons.values() for n in ns}
    if (got := first(Metrics)) is not None:
        ctx["metrics"] = metrics_section(got[1], got[0], run_dir, assets)
    if (found := locate(run_dir, "mistakes.csv")):
        sec = mistakes_section(found[0], run_dir, assets, notes)
        if sec is not None:
            ctx["mistakes"] = sec
            ctx["files"].append(rel_url(found[0], run_dir))
    if (got := first(ExplanationRecord)) is not None:
        ctx["ranking"] = ranking_section(got[1], got[0], run_dir)
    if (got := first(VisualizationSet)) is not None:
        ctx["vis"] = vis_section(got[1], got[0], run_dir, edit_neurons)
    if (got := first(Comparison)) is not None:
        ctx["compare"] = compare_section(got[1], got[0], run_dir, assets)
    if (got := first(EvidenceRecord)) is not None:
        ctx["evidence"] = evidence_section(got[1], got[0], run_dir)
    ctx["vis_neurons"] = {str(c["neuron"]) for c in ctx["vis"]["cards"]} if ctx.get("vis") else set()
    ctx["headline"] = headline(ctx)
    return ctx

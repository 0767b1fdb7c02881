"""The HTML report: one self-contained page per run folder.

``build_report(run_dir)`` reads whatever the stages wrote into ``run_dir`` (and its
sub-folders one level deep, e.g. ``explain/``, ``visualize/``, ``edit/``, ``compare/``):

============================  =================================================
``run.json``                  what was run, versions, seeds
``metrics.json``              accuracy per class and per group (table + chart)
``mistakes.csv``              a gallery of the mistakes (thumbnails)
``ranking.json``              the ranked neurons, insufficient and excessive
``visualizations.json``       a card per inspected neuron
``edit.json``                 the decision-layer edit: before/after and curves
``compare.json``              every method before/after (table + chart)
============================  =================================================

Missing pieces are left out. The page opens from disk with no server and no
network: charts and thumbnails are PNG files in ``run_dir/report_assets/`` and every
image is referenced by a relative path. All text from the data (class names, paths,
model specs) is HTML-escaped.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from neuroinspect.core.errors import NeuroInspectError
from neuroinspect.core.io import atomic_path, write_text

log = logging.getLogger(__name__)

__all__ = ["build_report", "collect", "render_html", "REPORT_NAME", "ASSETS_DIR"]

REPORT_NAME = "report.html"
ASSETS_DIR = "report_assets"
MAX_MISTAKES = 48
#: Bar charts draw at most this many classes/groups (the lowest); tables longer than
#: ``FOLD_ROWS`` rows are folded away.
MAX_BARS = 30
FOLD_ROWS = 40
THUMB_SIZE = 112
#: Sub-folders searched first, in this order; any other sub-folder comes after them.
KNOWN_SUBDIRS = ("explain", "visualize", "edit", "compare")
RUN_FILES = ("run.json", "metrics.json", "mistakes.csv", "ranking.json", "visualizations.json", "edit.json", "compare.json")
METHOD_LABELS = {
    "original": "original (ERM head)",
    "rebalance": "neuron-guided rebalancing",
    "ratio": "ratio edit (paper)",
    "con": "CON",
    "class-weight": "class re-weighting",
    "focal": "focal loss",
    "erm": "ERM retrained",
    "jtt": "JTT",
    "ablate": "ablate W[c,S]",
    "dfr": "DFR (group labels)",
}


# --------------------------------------------------------------------------- finding files
def _search_dirs(run_dir: Path) -> list[Path]:
    subs = sorted((p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != ASSETS_DIR), key=lambda p: p.name)
    known = [p for name in KNOWN_SUBDIRS for p in subs if p.name == name]
    return [run_dir, *known, *(p for p in subs if p not in known)]


def _locate(run_dir: Path, name: str) -> list[Path]:
    return [d / name for d in _search_dirs(run_dir) if (d / name).is_file()]


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        notes.append(f"{path.name} could not be read and was left out ({type(err).__name__}: {err})")
        return None


def _rel(path: Path, run_dir: Path) -> str:
    """A URL (relative to ``run_dir``) for a file, percent-encoded."""
    rel = os.path.relpath(path, run_dir)
    return "/".join(quote(part) for part in Path(rel).as_posix().split("/"))


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# --------------------------------------------------------------------------- formatting
def fmt_pct(x: Any, digits: int = 1) -> str:
    """0.8123 -> '81.2 %' (accuracies are fractions in the JSON files)."""
    v = _num(x)
    return "–" if v is None else f"{100 * v:.{digits}f} %"


def fmt_num(x: Any, digits: int = 3) -> str:
    v = _num(x)
    return "–" if v is None else f"{v:.{digits}f}"


def fmt_delta(before: Any, after: Any) -> str:
    """Change of a fraction in percentage points: '+3.4 pts'."""
    b, a = _num(before), _num(after)
    if a is None or b is None:
        return ""
    d = 100 * (a - b)
    return f"{'+' if d >= 0 else '−'}{abs(d):.1f} pts"


def _delta_class(before: Any, after: Any) -> str:
    b, a = _num(before), _num(after)
    if a is None or b is None or abs(a - b) < 5e-4:
        return "flat"
    return "up" if a > b else "down"


def _worst(metrics: dict | None) -> float | None:
    if not metrics:
        return None
    vals = [_num(v) for v in (metrics.get("per_group") or {}).values()]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def _worst_class_acc(metrics: dict | None) -> float | None:
    if not metrics:
        return None
    vals = [_num(v) for v in (metrics.get("per_class") or {}).values()]
    vals = [v for v in vals if v is not None]
    return min(vals) if vals else None


def _tex_safe(label: str, width: int = 30) -> str:
    """A chart label: no mathtext, not too long (cut in the middle, so 'long class/B-indoor' keeps its end)."""
    label = str(label)
    if len(label) > width:
        head = (width - 1) // 2
        label = label[:head] + "…" + label[len(label) - (width - 1 - head):]
    return label.replace("$", r"\$")


# --------------------------------------------------------------------------- charts
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"})
    return plt


def _save_fig(fig, path: Path) -> Path:
    plt = _plt()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD", "#1B3A5C", "#A6761D"]


def _bar_chart(series: dict[str, dict[str, float]], title: str, path: Path, highlight: str | None = None) -> Path:
    """Horizontal bars, one row per name, one bar per series (e.g. before/after).

    With more than ``MAX_BARS`` names only the ones lowest in the first series are drawn.
    """
    plt = _plt()
    names = list(next(iter(series.values())).keys())
    if len(names) > MAX_BARS:
        first = next(iter(series.values()))
        keep = set(sorted(names, key=lambda n: _num(first.get(n)) if _num(first.get(n)) is not None else 2.0)[:MAX_BARS])
        names = [n for n in names if n in keep]
        title = f"{title}: the {MAX_BARS} lowest"
    k = len(series)
    h = max(1.8, 0.3 * len(names) * max(k, 1) + 1.0)
    fig, ax = plt.subplots(figsize=(6.4, h))
    bar_h = 0.8 / k
    for si, (label, vals) in enumerate(series.items()):
        ys = [i + (si - (k - 1) / 2) * bar_h for i in range(len(names))]
        xs = [100 * (_num(vals.get(n)) or 0.0) for n in names]
        ax.barh(ys, xs, height=bar_h * 0.92, color=PALETTE[si % len(PALETTE)], label=_tex_safe(label))
        for y, x in zip(ys, xs):
            ax.text(x + 0.8, y, f"{x:.1f}", va="center", fontsize=8, color="#333")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels([_tex_safe(n) for n in names])
    for tick, n in zip(ax.get_yticklabels(), names):
        if n == highlight:
            tick.set_color("#C44E52")
            tick.set_fontweight("bold")
    ax.invert_yaxis()
    ax.set_xlim(0, 109)
    ax.set_xlabel("accuracy (%)")
    ax.set_title(_tex_safe(title, 80), loc="left", fontsize=11)
    if k > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    ax.grid(axis="x", color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return _save_fig(fig, path)


def _grouped_columns(rows: list[dict], metrics: list[tuple[str, str]], path: Path) -> Path:
    plt = _plt()
    n = len(rows)
    fig, ax = plt.subplots(figsize=(7.6 if n <= 6 else 10.5, 3.6))
    width = 0.8 / max(n, 1)
    for ri, row in enumerate(rows):
        xs = [mi + (ri - (n - 1) / 2) * width for mi in range(len(metrics))]
        vals = [_num(row.get(key)) for key, _ in metrics]
        heights = [100 * v if v is not None else 0.0 for v in vals]
        errs = [100 * (_num(row.get(key + "_std")) or 0.0) for key, _ in metrics]
        bars = ax.bar(xs, heights, width=width * 0.92, color=PALETTE[ri % len(PALETTE)],
                      yerr=errs if any(errs) else None, error_kw={"elinewidth": 0.8, "capsize": 1.5},
                      label=_tex_safe(METHOD_LABELS.get(row.get("method"), row.get("method", "?"))))
        for b, v in zip(bars, vals):
            if v is not None:
                ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.8, f"{100 * v:.1f}", ha="center", fontsize=7.5, rotation=90)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([label for _, label in metrics])
    ax.set_ylim(0, 112)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=8.5, frameon=False, ncol=min(n, 3), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", color="#ddd", linewidth=0.6)
    ax.set_axisbelow(True)
    return _save_fig(fig, path)


def _curves_chart(curves: list[dict], best_epoch: Any, select_by: str, path: Path) -> Path | None:
    plt = _plt()
    epochs = [_num(c.get("epoch")) for c in curves]
    if not curves or any(e is None for e in epochs):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 3.0))
    series = [("train_loss", "training loss", 0), ("regulariser", "regulariser", 0), ("val_metric", f"validation {select_by}", 1)]
    for key, label, ai in series:
        ys = [_num(c.get(key)) for c in curves]
        if all(y is None for y in ys):
            continue
        ax = axes[ai]
        scale = 100.0 if key == "val_metric" else 1.0
        ax.plot(epochs, [y * scale if y is not None else float("nan") for y in ys], marker="o", markersize=3,
                label=_tex_safe(label, 40), color=PALETTE[["train_loss", "regulariser", "val_metric"].index(key)])
    be = _num(best_epoch)
    for ax in axes:
        if be is not None:
            ax.axvline(be, color="#999", linestyle="--", linewidth=0.8)
        ax.set_xlabel("epoch")
        ax.grid(color="#eee", linewidth=0.6)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8.5, frameon=False)
    axes[0].set_title("losses", loc="left", fontsize=10)
    axes[1].set_title("validation (%)" + (", dashed: best epoch" if be is not None else ""), loc="left", fontsize=10)
    fig.tight_layout()
    return _save_fig(fig, path)


# --------------------------------------------------------------------------- sections
def _metrics_section(metrics: dict, src: Path, run_dir: Path, assets: Path) -> dict:
    per_class = {str(k): _num(v) for k, v in (metrics.get("per_class") or {}).items()}
    per_group = {str(k): _num(v) for k, v in (metrics.get("per_group") or {}).items()}
    sec = {
        "source": _rel(src, run_dir),
        "accuracy": metrics.get("accuracy"),
        "n": metrics.get("n"),
        "worst_class": metrics.get("worst_class"),
        "worst_group": metrics.get("worst_group"),
        "per_class": per_class,
        "per_group": per_group,
        "charts": [],
    }
    if per_class:
        p = _bar_chart({"accuracy": per_class}, "accuracy per class", assets / "metrics_per_class.png", highlight=sec["worst_class"])
        sec["charts"].append({"src": _rel(p, run_dir), "alt": "bar chart of accuracy per class"})
    if per_group:
        p = _bar_chart({"accuracy": per_group}, "accuracy per group", assets / "metrics_per_group.png", highlight=sec["worst_group"])
        sec["charts"].append({"src": _rel(p, run_dir), "alt": "bar chart of accuracy per group"})
    return sec


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


def _mistakes_section(src: Path, run_dir: Path, assets: Path, notes: list[str]) -> dict | None:
    from PIL import Image

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
        item = {"id": ident, "name": Path(ident).name or ident, "true": r.get("true", ""), "predicted": r.get("predicted", ""), "thumb": None}
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
                item["thumb"] = _rel(out, run_dir)
            except Exception as err:  # an unreadable image: show its name only
                log.info("report: thumbnail of %s failed: %s", path, err)
        items.append(item)
    return {"source": _rel(src, run_dir), "total": len(rows), "shown": len(items), "items": items}


def _ranking_section(ranking: dict, src: Path, run_dir: Path) -> dict:
    def rows(key):
        out = []
        for r in ranking.get(key) or []:
            if isinstance(r, dict) and r.get("neuron") is not None:
                out.append({"neuron": r.get("neuron"), "ratio": r.get("ratio"), "importance": r.get("importance"), "weight": r.get("weight")})
        return out

    return {
        "source": _rel(src, run_dir),
        "class": ranking.get("class"),
        "class_index": ranking.get("class_index"),
        "split": ranking.get("split"),
        "n_mistakes": ranking.get("n_mistakes"),
        "n_flipped": ranking.get("n_flipped"),
        "insufficient": rows("insufficient"),
        "excessive": rows("excessive"),
    }


def _heatmap_rows(rows: Any, img) -> list[dict]:
    """The neuron card's exemplar rows: per class, top images with heatmaps and crops."""
    out = []
    for r in rows or []:
        if not isinstance(r, dict):
            continue
        items = []
        for it in r.get("items") or []:
            if isinstance(it, dict):
                items.append({"id": it.get("id"), "activation": it.get("activation"),
                              "heatmap": img(it.get("heatmap")), "crop": img(it.get("crop"))})
        out.append({"class": r.get("class"), "role": r.get("role"), "note": r.get("note"), "items": items})
    return out


def _vis_section(vis: dict, src: Path, run_dir: Path, edited: set[int]) -> dict:
    base = src.parent

    def img(rel: Any) -> str | None:
        if not rel or not isinstance(rel, str):
            return None
        p = base / rel
        return _rel(p, run_dir) if p.is_file() else None

    by_neuron: dict[Any, dict] = {}
    for n in vis.get("neurons") or []:
        if not isinstance(n, dict) or n.get("neuron") is None:
            continue
        top = [t for t in (n.get("top_classes") or []) if isinstance(t, dict)]
        wmax = max((abs(_num(t.get("weight")) or 0.0) for t in top), default=0.0) or 1.0
        by_neuron[n["neuron"]] = {
            "neuron": n["neuron"],
            "top_classes": [
                {"class": t.get("class"), "weight": t.get("weight"), "bar": round(100 * abs(_num(t.get("weight")) or 0.0) / wmax, 1),
                 "negative": (_num(t.get("weight")) or 0.0) < 0}
                for t in top
            ],
            "dataset_top_activation": n.get("dataset_top_activation"),
            "dataset_mean_top_activation": n.get("dataset_mean_top_activation"),
            "exemplar_strip": img(n.get("exemplar_strip")),
            "exemplars": [e for e in (n.get("exemplars") or []) if isinstance(e, dict)],
            "heatmaps": _heatmap_rows(n.get("exemplar_heatmaps"), img),
            "images": [],
        }
    for im in vis.get("images") or []:
        if not isinstance(im, dict) or im.get("neuron") is None:
            continue
        card = by_neuron.setdefault(im["neuron"], {
            "neuron": im["neuron"], "top_classes": [], "dataset_top_activation": None, "dataset_mean_top_activation": None,
            "exemplar_strip": None, "exemplars": [], "heatmaps": [], "images": [],
        })
        card["images"].append({
            "note": im.get("note"), "start": im.get("start"),
            "class": im.get("class"), "class_index": im.get("class_index"), "recipe": im.get("recipe"), "clip_used": im.get("clip_used"),
            "activation": im.get("activation"), "logit": im.get("logit"), "prob": im.get("prob"),
            "clip_similarity": im.get("clip_similarity"), "crs": im.get("crs"),
            "image": img(im.get("image")), "masked": img(im.get("masked")),
        })
    cards = list(by_neuron.values())
    for c in cards:
        try:
            c["edited"] = int(c["neuron"]) in edited
        except (TypeError, ValueError):
            c["edited"] = False
    return {
        "source": _rel(src, run_dir),
        "model": vis.get("model"), "recipe": vis.get("recipe"), "clip": vis.get("clip"),
        "clip_fallback": bool(vis.get("clip_fallback")), "clip_fallback_reason": vis.get("clip_fallback_reason"),
        "steps": vis.get("steps"), "size": vis.get("size"), "seed": vis.get("seed"),
        "cards": cards,
    }


def _before_after_rows(before: dict, after: dict) -> dict:
    def pairs(key):
        b, a = before.get(key) or {}, after.get(key) or {}
        names = list(b) + [k for k in a if k not in b]
        return [{"name": n, "before": b.get(n), "after": a.get(n), "delta": fmt_delta(b.get(n), a.get(n)),
                 "trend": _delta_class(b.get(n), a.get(n))} for n in names]

    summary = [
        {"name": "average accuracy", "before": before.get("accuracy"), "after": after.get("accuracy")},
        {"name": "worst-class accuracy", "before": _worst_class_acc(before), "after": _worst_class_acc(after)},
    ]
    if _worst(before) is not None or _worst(after) is not None:
        summary.append({"name": "worst-group accuracy", "before": _worst(before), "after": _worst(after)})
    for s in summary:
        s["delta"] = fmt_delta(s["before"], s["after"])
        s["trend"] = _delta_class(s["before"], s["after"])
    return {"summary": summary, "per_class": pairs("per_class"), "per_group": pairs("per_group")}


def _edit_section(edit: dict, src: Path, run_dir: Path, assets: Path) -> dict:
    before, after = edit.get("before") or {}, edit.get("after") or {}
    sec = {
        "source": _rel(src, run_dir),
        "method": edit.get("method"), "label": METHOD_LABELS.get(edit.get("method"), edit.get("method")),
        "classes": edit.get("classes") or [], "fit_on": edit.get("fit_on"),
        "uses_group_labels": bool(edit.get("uses_group_labels")),
        "chosen": edit.get("chosen") if isinstance(edit.get("chosen"), dict) else {},
        "searched": bool(edit.get("search")),
        "neurons": {str(k): list(v or []) for k, v in (edit.get("neurons") or {}).items()},
        "tau": edit.get("tau") or {}, "lam": edit.get("lam"), "select_by": edit.get("select_by"),
        "best_epoch": edit.get("best_epoch"), "epochs_run": edit.get("epochs_run"), "model_file": edit.get("model_file"),
        "table": _before_after_rows(before, after), "charts": [], "picked_by": None,
    }
    picked = edit.get("picked_by")
    if isinstance(picked, dict):
        chosen = {str(n) for ns in sec["neurons"].values() for n in ns}
        crs = {str(k): v for k, v in (picked.get("crs") or {}).items()} if isinstance(picked.get("crs"), dict) else {}
        ranked = [str(n) for n in picked.get("ranked") or []] if isinstance(picked.get("ranked"), list) else list(crs)
        sec["picked_by"] = {
            "rule": picked.get("rule"),
            "rows": [{"neuron": n, "crs": crs.get(n), "picked": n in chosen} for n in ranked],
        }
    per_group_b, per_group_a = before.get("per_group") or {}, after.get("per_group") or {}
    per_class_b, per_class_a = before.get("per_class") or {}, after.get("per_class") or {}
    if per_group_b or per_group_a:
        names = list(per_group_b) + [k for k in per_group_a if k not in per_group_b]
        p = _bar_chart({"before": {n: per_group_b.get(n) for n in names}, "after": {n: per_group_a.get(n) for n in names}},
                       "accuracy per group, before and after the edit", assets / "edit_per_group.png")
        sec["charts"].append({"src": _rel(p, run_dir), "alt": "accuracy per group before and after the edit"})
    elif per_class_b or per_class_a:
        names = list(per_class_b) + [k for k in per_class_a if k not in per_class_b]
        p = _bar_chart({"before": {n: per_class_b.get(n) for n in names}, "after": {n: per_class_a.get(n) for n in names}},
                       "accuracy per class, before and after the edit", assets / "edit_per_class.png")
        sec["charts"].append({"src": _rel(p, run_dir), "alt": "accuracy per class before and after the edit"})
    curves = [c for c in (edit.get("curves") or []) if isinstance(c, dict)]
    if curves:
        p = _curves_chart(curves, edit.get("best_epoch"), str(edit.get("select_by") or "metric"), assets / "edit_curves.png")
        if p is not None:
            sec["charts"].append({"src": _rel(p, run_dir), "alt": "training curves of the edit"})
    return sec


COMPARE_METRICS = [("avg_acc", "average"), ("class_acc", "edited class"), ("worst_class_acc", "worst class"), ("worst_group_acc", "worst group")]


def _compare_section(comp: dict, src: Path, run_dir: Path, assets: Path) -> dict:
    rows = [r for r in (comp.get("rows") or []) if isinstance(r, dict)]
    cols = [(k, label) for k, label in COMPARE_METRICS if any(_num(r.get(k)) is not None for r in rows)]
    best = {}
    for k, _ in cols:
        vals = [_num(r.get(k)) for r in rows]
        vals = [v for v in vals if v is not None]
        best[k] = max(vals) if vals else None
    original = next((r for r in rows if r.get("method") == "original"), None)
    table = []
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k)
            sd = _num(r.get(k + "_std"))
            cells.append({"key": k, "value": v, "std": sd if sd and (r.get("n_seeds") or 1) > 1 else None,
                          "best": _num(v) is not None and _num(v) == best[k],
                          "delta": fmt_delta(original.get(k), v) if original is not None and r is not original else "",
                          "trend": _delta_class(original.get(k), v) if original is not None and r is not original else "flat"})
        table.append({"method": r.get("method"), "label": METHOD_LABELS.get(r.get("method"), r.get("method")), "cells": cells,
                      "group_labels": bool(r.get("uses_group_labels")), "fit_on": r.get("fit_on") or "",
                      "n_seeds": r.get("n_seeds")})
    seeds = comp.get("seeds") if isinstance(comp.get("seeds"), list) else []
    sec = {"source": _rel(src, run_dir), "classes": comp.get("classes") or [], "split": comp.get("split"),
           "columns": [label for _, label in cols], "rows": table, "charts": [], "seeds": seeds,
           "notes": [str(n) for n in comp.get("notes") or []], "group_cost": _group_cost(rows)}
    if rows and cols:
        p = _grouped_columns(rows, cols, assets / "compare.png")
        sec["charts"].append({"src": _rel(p, run_dir), "alt": "accuracy of every method"})
    return sec


def _group_cost(rows: list[dict]) -> dict | None:
    """Per-group accuracy of every method against the original head (what each fix costs where)."""
    original = next((r for r in rows if r.get("method") == "original"), None)
    if not original or not isinstance(original.get("per_group"), dict) or not original["per_group"]:
        return None
    groups = list(original["per_group"])
    table = []
    for r in rows:
        pg = r.get("per_group") if isinstance(r.get("per_group"), dict) else {}
        cells = []
        for g in groups:
            b, a = _num(original["per_group"].get(g)), _num(pg.get(g))
            cells.append({"value": a, "delta": "" if r is original else fmt_delta(b, a),
                          "trend": "flat" if r is original else _delta_class(b, a)})
        table.append({"label": METHOD_LABELS.get(r.get("method"), r.get("method")), "cells": cells})
    return {"groups": groups, "rows": table}


def _flatten_run(run: dict) -> list[dict]:
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
                out.append({"key": prefix, "value": ", ".join(json.dumps(x) if isinstance(x, (dict, list)) else str(x) for x in v)})
        else:
            out.append({"key": prefix, "value": "–" if v is None else str(v)})

    walk("", run)
    return out


def _is_main_key(key: str) -> bool:
    """The settings shown up front; the rest of ``run.json`` is folded away."""
    if "." not in key:
        return True  # top-level values: command, model, data, seed, time, ...
    return key.startswith("versions.") or key.rsplit(".", 1)[-1] in ("seed", "device")


def _headline(ctx: dict) -> dict | None:
    edit, comp, metrics = ctx.get("edit"), ctx.get("compare"), ctx.get("metrics")
    tiles = []
    if edit and not (comp and len(comp.get("seeds") or []) > 1):  # several seeds: the comparison's means lead
        rows = {r["name"]: r for r in edit["table"]["summary"]}
        for name in ("worst-group accuracy", "average accuracy", "worst-class accuracy"):
            r = rows.get(name)
            if r and (r["before"] is not None or r["after"] is not None):
                tiles.append({"label": name, "before": fmt_pct(r["before"]), "after": fmt_pct(r["after"]),
                              "delta": r["delta"], "trend": r["trend"], "source": "edit.json"})
        return {"title": f"Editing the decision layer ({edit.get('label') or edit.get('method') or 'ratio'})",
                "tiles": tiles[:3]}
    if comp:
        rows = {r["method"]: r for r in comp["rows"]}
        orig = rows.get("original")
        method = next((m for m in ("rebalance", "ratio") if m in rows), next((m for m in rows if m != "original"), None))
        ours = rows.get(method)
        if orig and ours:
            for k, label in (("worst_group_acc", "worst-group accuracy"), ("avg_acc", "average accuracy"), ("worst_class_acc", "worst-class accuracy")):
                b = next((c["value"] for c in orig["cells"] if c["key"] == k), None)
                a = next((c["value"] for c in ours["cells"] if c["key"] == k), None)
                if _num(b) is not None or _num(a) is not None:
                    tiles.append({"label": label, "before": fmt_pct(b), "after": fmt_pct(a), "delta": fmt_delta(b, a),
                                  "trend": _delta_class(b, a), "source": "compare.json"})
            seeds = len(comp.get("seeds") or []) or 1
            return {"title": f"Original head → {ours['label']}" + (f" (mean of {seeds} seeds)" if seeds > 1 else ""),
                    "tiles": tiles[:3]}
    if metrics:
        tiles.append({"label": "average accuracy", "value": fmt_pct(metrics["accuracy"])})
        if metrics.get("worst_class") is not None:
            tiles.append({"label": "worst class", "value": fmt_pct(metrics["per_class"].get(str(metrics["worst_class"]))),
                          "sub": metrics["worst_class"]})
        if metrics.get("worst_group") is not None:
            tiles.append({"label": "worst group", "value": fmt_pct(metrics["per_group"].get(str(metrics["worst_group"]))),
                          "sub": metrics["worst_group"]})
        return {"title": "Accuracy", "tiles": tiles}
    return None


def collect(run_dir: str | os.PathLike, assets: Path | None = None) -> dict:
    """Read every run file under ``run_dir`` and build the template's context (charts and thumbnails included)."""
    run_dir = Path(run_dir)
    assets = assets or run_dir / ASSETS_DIR
    notes: list[str] = []
    ctx: dict[str, Any] = {"notes": notes, "files": []}

    runs = []
    for p in _locate(run_dir, "run.json"):
        data = _read_json(p, notes)
        if isinstance(data, dict):
            stage = p.parent.name if p.parent != run_dir else "this run"
            rows = _flatten_run(data)
            main = [r for r in rows if _is_main_key(r["key"])]
            runs.append({"stage": stage, "source": _rel(p, run_dir), "main": main, "rows": rows})
            ctx["files"].append(_rel(p, run_dir))
    ctx["runs"] = runs

    def first(name):
        found = _locate(run_dir, name)
        return found[0] if found else None

    edit_neurons: set[int] = set()
    if (p := first("edit.json")) is not None and isinstance(data := _read_json(p, notes), dict):
        ctx["edit"] = _edit_section(data, p, run_dir, assets)
        ctx["files"].append(_rel(p, run_dir))
        for ns in ctx["edit"]["neurons"].values():
            for n in ns:
                try:
                    edit_neurons.add(int(n))
                except (TypeError, ValueError):
                    pass
    if (p := first("metrics.json")) is not None and isinstance(data := _read_json(p, notes), dict):
        ctx["metrics"] = _metrics_section(data, p, run_dir, assets)
        ctx["files"].append(_rel(p, run_dir))
    if (p := first("mistakes.csv")) is not None:
        sec = _mistakes_section(p, run_dir, assets, notes)
        if sec is not None:
            ctx["mistakes"] = sec
            ctx["files"].append(_rel(p, run_dir))
    if (p := first("ranking.json")) is not None and isinstance(data := _read_json(p, notes), dict):
        ctx["ranking"] = _ranking_section(data, p, run_dir)
        ctx["files"].append(_rel(p, run_dir))
    if (p := first("visualizations.json")) is not None and isinstance(data := _read_json(p, notes), dict):
        ctx["vis"] = _vis_section(data, p, run_dir, edit_neurons)
        ctx["files"].append(_rel(p, run_dir))
    if (p := first("compare.json")) is not None and isinstance(data := _read_json(p, notes), dict):
        ctx["compare"] = _compare_section(data, p, run_dir, assets)
        ctx["files"].append(_rel(p, run_dir))
    if ctx.get("vis"):
        ctx["vis_neurons"] = {str(c["neuron"]) for c in ctx["vis"]["cards"]}
    else:
        ctx["vis_neurons"] = set()
    ctx["headline"] = _headline(ctx)
    return ctx


# --------------------------------------------------------------------------- rendering
def _environment():
    from jinja2 import Environment, FileSystemLoader

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = fmt_pct
    env.filters["num"] = fmt_num
    env.filters["raw_value"] = lambda x: "" if _num(x) is None else repr(_num(x))
    return env


def render_html(ctx: dict, title: str = "NeuroInspect report") -> str:
    from neuroinspect.core.runinfo import __version__

    env = _environment()
    template = env.get_template("report.html")
    return template.render(
        title=title, version=__version__, fold_rows=FOLD_ROWS,
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        **ctx,
    )


def build_report(run_dir: str | os.PathLike) -> Path:
    """Write ``run_dir/report.html`` (and its charts under ``run_dir/report_assets/``); returns its path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NeuroInspectError(f"run folder '{run_dir}' does not exist; give the --out folder of explain, visualize, edit, compare or demo")
    if not any(_locate(run_dir, name) for name in RUN_FILES):
        raise NeuroInspectError(
            f"'{run_dir}' holds none of {', '.join(RUN_FILES)} (nor do its sub-folders); give the --out folder of a run"
        )
    ctx = collect(run_dir)
    title = "NeuroInspect report"
    if ctx.get("ranking") and ctx["ranking"].get("class") is not None:
        title = f"NeuroInspect report — class {ctx['ranking']['class']}"
    page = render_html(ctx, title=title)
    out = run_dir / REPORT_NAME
    write_text(out, page)
    return out

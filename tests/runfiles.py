"""Test helpers for run folders: a complete hand-written one (every stage's files, with hostile
text), and a check that the JSON files a folder holds load as their typed records, losslessly."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from neuroinspect.core.base.records import RECORDS


def load_run_files(folder: Path) -> dict:
    """``{file name: record}`` of every record file in ``folder``; each carries the current schema and
    writes back to the same JSON (nothing lost, nothing added)."""
    out = {}
    for name, kind in RECORDS.items():
        path = Path(folder) / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            assert data["schema"] == kind.SCHEMA, name
            record = kind.read(path)
            assert json.loads(record.to_json()) == data, name
            assert list(json.loads(record.to_json())) == list(data), name  # same key order
            out[name] = record
    return out


EVIL = "<script>alert('x')</script>Coat"
CLASSES = ["T-shirt", "Pullover", EVIL, "Bag"]


def _png(path: Path, colour, size=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size, 3), np.uint8)
    arr[:] = colour
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255 - np.array(colour, np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _metrics(acc, per_class, per_group):
    return {
        "accuracy": acc,
        "per_class": per_class,
        "per_group": per_group,
        "worst_class": min(per_class, key=per_class.get),
        "worst_group": min(per_group, key=per_group.get) if per_group else None,
        "n": 400,
    }


BEFORE = _metrics(
    0.8125,
    {"T-shirt": 0.91, "Pullover": 0.84, EVIL: 0.6175, "Bag": 0.98},
    {"T-shirt/A-nature": 0.88, "T-shirt/B-indoor": 0.94, f"{EVIL}/A-nature": 0.97, f"{EVIL}/B-indoor": 0.265,
     "Bag/A-nature": 0.99, "Bag/B-indoor": 0.97},
)
AFTER = _metrics(
    0.8275,
    {"T-shirt": 0.9, "Pullover": 0.85, EVIL: 0.7425, "Bag": 0.98},
    {"T-shirt/A-nature": 0.89, "T-shirt/B-indoor": 0.91, f"{EVIL}/A-nature": 0.93, f"{EVIL}/B-indoor": 0.555,
     "Bag/A-nature": 0.99, "Bag/B-indoor": 0.97},
)


def make_run(root: Path, nested: bool = True) -> dict:
    """Write a complete run folder (every stage's files) and return what was written."""
    d = {k: (root / k if nested else root) for k in ("explain", "visualize", "edit", "compare")}
    data = root / "data"
    imgs = [_png(data / "val" / f"img {i}&<x>.png", (40 * i % 255, 90, 160)) for i in range(5)]
    files = {}

    files["run"] = {"command": ["neuroinspect", "demo", "--fast"], "model": "efficientnet-lite0", "data": str(data / "manifest.csv"),
                    "seed": 0, "versions": {"neuroinspect": "0.1.0", "torch": "2.14.1"}}
    (root / "run.json").write_text(json.dumps(files["run"]))
    d["explain"].mkdir(parents=True, exist_ok=True)
    (d["explain"] / "metrics.json").write_text(json.dumps(BEFORE))
    files["ranking"] = {
        "class": EVIL, "class_index": 2, "split": "val", "n_mistakes": 37, "n_flipped": 36,
        "insufficient": [{"neuron": 17, "ratio": 43.2432, "importance": 1.8765, "weight": 0.4321},
                         {"neuron": 905, "ratio": 8.1081, "importance": 1.0512, "weight": 0.0123}],
        "excessive": [{"neuron": 311, "ratio": 29.7297, "importance": 0.7777, "weight": -0.2468}],
    }
    (d["explain"] / "ranking.json").write_text(json.dumps(files["ranking"]))
    with open(d["explain"] / "mistakes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "true", "predicted"])
        for p in imgs:
            w.writerow([str(p), EVIL, "Pullover"])
        w.writerow([str(data / "missing.png"), "Bag", EVIL])  # a listed image that no longer exists

    vis = d["visualize"]
    for n in (17, 311):
        for c in ("T-shirt", EVIL):
            safe = "evil" if c == EVIL else c
            _png(vis / "images" / f"n{n}_{safe}.png", (200, 120, 40), 64)
            _png(vis / "images" / f"n{n}_{safe}_masked.png", (100, 60, 20), 64)
        _png(vis / "images" / f"n{n}_strip.png", (30, 160, 90), 48)
    files["vis"] = {
        "model": "efficientnet-lite0", "recipe": "class-conditional", "clip": "ViT-B-32", "clip_fallback": True,
        "clip_fallback_reason": "no CLIP weights <offline>", "steps": 30, "size": 64, "seed": 0,
        "images": [
            {"neuron": n, "class": c, "class_index": CLASSES.index(c), "recipe": "class-conditional", "clip_used": False,
             "activation": 12.3456 + n, "logit": 4.5678, "prob": 0.8765, "clip_similarity": None, "crs": 0.4321 + 0.001 * n,
             "image": f"images/n{n}_{'evil' if c == EVIL else c}.png", "masked": f"images/n{n}_{'evil' if c == EVIL else c}_masked.png",
             "rgba": f"images/n{n}_{'evil' if c == EVIL else c}_masked.png"}
            for n in (17, 311) for c in ("T-shirt", EVIL)
        ],
        "neurons": [
            {"neuron": n, "top_classes": [{"class": EVIL, "weight": 0.5123}, {"class": "Bag", "weight": -0.1234}],
             "dataset_top_activation": 9.8765, "dataset_mean_top_activation": 7.6543,
             "exemplar_strip": f"images/n{n}_strip.png", "exemplars": [{"id": str(imgs[0]), "activation": 9.8765}]}
            for n in (17, 311)
        ],
    }
    (vis / "visualizations.json").write_text(json.dumps(files["vis"]))

    d["edit"].mkdir(parents=True, exist_ok=True)
    files["edit"] = {
        "method": "ratio", "classes": [EVIL], "neurons": {EVIL: [311, 42]}, "tau": {EVIL: 1.0234}, "lam": 0.01,
        "select_by": "worst_group", "best_epoch": 3, "epochs_run": 8, "before": BEFORE, "after": AFTER,
        "curves": [{"epoch": e, "train_loss": 1.0 / (e + 1), "regulariser": 0.2 / (e + 1), "val_metric": 0.5 + 0.03 * e} for e in range(8)],
        "model_file": "edited_head.safetensors",
        "picked_by": {"rule": "lowest core relevance score", "crs": {"311": 0.4321, "17": 0.8765}, "ranked": [17, 311]},
    }
    (d["edit"] / "edit.json").write_text(json.dumps(files["edit"]))
    d["compare"].mkdir(parents=True, exist_ok=True)
    files["compare"] = {"classes": [EVIL], "split": "test", "rows": [
        {"method": "original", "avg_acc": 0.8125, "class_acc": 0.6175, "worst_class_acc": 0.6175, "worst_group_acc": 0.265},
        {"method": "ratio", "avg_acc": 0.8275, "class_acc": 0.7425, "worst_class_acc": 0.7425, "worst_group_acc": 0.555},
        {"method": "con", "avg_acc": 0.7911, "class_acc": 0.7, "worst_class_acc": 0.69, "worst_group_acc": 0.41},
        {"method": "class-weight", "avg_acc": 0.8, "class_acc": 0.66, "worst_class_acc": 0.66, "worst_group_acc": 0.3},
        {"method": "focal", "avg_acc": 0.81, "class_acc": 0.63, "worst_class_acc": 0.63, "worst_group_acc": 0.28},
        {"method": "erm", "avg_acc": 0.8125, "class_acc": 0.6175, "worst_class_acc": 0.6175, "worst_group_acc": None},
    ]}
    (d["compare"] / "compare.json").write_text(json.dumps(files["compare"]))
    return files

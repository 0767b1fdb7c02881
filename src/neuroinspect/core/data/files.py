"""Data on disk in the two plain layouts: an image folder and a CSV manifest.

``ROOT``        an image folder ``ROOT/CLASS/*.jpg`` (one split, ``all``), or ``ROOT/{train,val,test}/CLASS/*.jpg``
                (one split per sub-folder; ``training``, ``valid``, ``validation``, ``testing`` also work)
``FILE.csv``    a manifest with a header ``path,label,split[,group]``; paths are relative to the CSV, labels are
                class names (sorted naturally: numbers in numeric order); a row repeated exactly is used once
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.data.images import IMAGE_EXTENSIONS, SPLIT_ALIASES, ImageData, Record, natural_key
from neuroinspect.core.data.registry import data_source

log = logging.getLogger(__name__)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


@data_source("folder")
def load_folder(path: str, download: bool = False) -> ImageData:
    """The image folder at ``path`` (``download`` does not apply)."""
    return _from_folder(Path(path))


def _from_folder(root: Path) -> ImageData:
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = {SPLIT_ALIASES[p.name.lower()]: p for p in subdirs if p.name.lower() in SPLIT_ALIASES}
    layout = split_dirs if split_dirs else {"all": root}
    classes = sorted({c.name for d in layout.values() for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")})
    if not classes:
        raise NeuroInspectError(f"image folder '{root}' has no class sub-folders; expected ROOT/CLASS/*.jpg or ROOT/train/CLASS/*.jpg")
    records = {}
    for split, d in layout.items():
        recs = []
        for ci, cname in enumerate(classes):
            cdir = d / cname
            if cdir.is_dir():
                recs.extend(Record(str(p), ci) for p in _images_under(cdir))
        records[split] = recs
    return ImageData(str(root), classes, [], records)


@data_source("csv")
def load_csv(path: str, download: bool = False) -> ImageData:
    """The CSV manifest at ``path`` (``download`` does not apply)."""
    return _from_csv(Path(path))


def _from_csv(path: Path) -> ImageData:
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not part of the header
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in (reader.fieldnames or [])]
        for need in ("path", "label"):
            if need not in fields:
                raise NeuroInspectError(f"manifest '{path}' needs a header with columns path,label[,split][,group]; found: {', '.join(fields) or 'nothing'}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise NeuroInspectError(f"manifest '{path}' lists no images")
    seen, unique = set(), []
    for r in rows:
        key = (r["path"], r["label"], r.get("split", ""), r.get("group", ""))
        if key not in seen:
            seen.add(key)
            unique.append(r)
    if len(unique) < len(rows):
        log.warning("warning: manifest '%s' repeats %d row(s) exactly (same path, label, split and group); "
                    "each image is used once", path, len(rows) - len(unique))
        rows = unique
    classes = sorted({r["label"] for r in rows}, key=natural_key)
    has_groups = "group" in fields and any(r.get("group") for r in rows)
    groups = sorted({r["group"] for r in rows if r.get("group")}) if has_groups else []
    records: dict[str, list[Record]] = {}
    for r in rows:
        split = SPLIT_ALIASES.get(r.get("split", "").lower(), r.get("split") or "all")
        p = Path(r["path"])
        p = p if p.is_absolute() else path.parent.absolute() / p
        g = groups.index(r["group"]) if has_groups and r.get("group") else -1
        records.setdefault(split, []).append(Record(str(p), classes.index(r["label"]), g))
    return ImageData(str(path), [str(c) for c in classes], groups, records)

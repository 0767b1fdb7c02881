"""Where a neuron fires in its top dataset images: exemplars with heatmaps and tight crops.

For each (neuron, class) the top-k images *of that class* come from the cached features (no
forward pass to rank them); one forward pass over those images only, with the probe's spatial
hook, gives the neuron's map (a CNN's last D-channel activation, a ViT's patch tokens). Each
map is upsampled to the model's input, laid over the image as it reached the model, and the
hottest connected region is cropped (in the spirit of NetDissect). The maps are cached on disk,
keyed by the weights' content, the probe's layers, the preprocessing and the image's bytes, so a
second run does no forward pass at all.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from neuroinspect.core.base.config import configured
from neuroinspect.core.base.io import save_png, save_torch
from neuroinspect.core.model.models import state_fingerprint
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.show.config import RenderConfig

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
HOT_FRACTION = 0.5  # the crop covers the connected cells at >= this fraction of the map's peak


@dataclass
class HeatmapRequest:
    """One row of a neuron card: the top-``k`` images of class ``cls`` ranked by ``neuron``."""

    neuron: int
    cls: int
    role: str  # "inspected" (the class under inspection) or "votes for" (a class its weight favours)


def _hash_file(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()[:24]
    except OSError:
        return None


def _model_tag(probe, preprocess) -> str:
    parts = {"format": CACHE_FORMAT, "weights": state_fingerprint(probe.model), "head": probe.head_name,
             "spatial": probe.spatial_name, "layout": probe.spatial_layout, "prefix": probe.prefix_tokens,
             "preprocess": preprocess.describe()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _image_key(model_tag: str, ident: str, content: str | None) -> str:
    return hashlib.sha256(f"{model_tag}|{ident}|{content}".encode()).hexdigest()[:32]


class _Images:
    """Loads dataset images by id: a file path, else an item of ``data``'s split."""

    def __init__(self, data=None, split: str | None = None):
        self.data, self.split = data, split
        self._index: dict[str, int] | None = None
        self._dataset = None

    def pil(self, ident: str) -> Image.Image | None:
        if os.path.isfile(ident):
            try:
                with Image.open(ident) as im:
                    return im.convert("RGB")
            except (OSError, ValueError):
                return None
        if self.data is None or self.split is None:
            return None
        if self._index is None:
            self._index = {i: n for n, i in enumerate(self.data.ids(self.split))}
            self._dataset = self.data.dataset(self.split, None)
        n = self._index.get(ident)
        if n is None:
            return None
        try:
            item = self._dataset[n]
        except (OSError, ValueError, IndexError):
            return None
        img = item[0] if isinstance(item, (tuple, list)) else item
        return img.convert("RGB") if isinstance(img, Image.Image) else None


def spatial_maps(probe, preprocess, ids: Sequence[str], neurons: Sequence[int], *, images: _Images | None = None,
                 cache_dir: str | os.PathLike | None = None, policy: DevicePolicy | None = None, batch: int = 32
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """The maps of ``neurons`` ([len(neurons), h, w]) and the model-input images of ``ids``.

    Returns ``(maps, inputs, forwards)``: ``inputs`` are the images in [0, 1] as the model saw
    them (after its resize and crop); ``forwards`` counts the images that needed a forward pass
    (0 when every map came from the cache). Unreadable images are left out. ``policy`` says where the
    forward pass runs (default: the model's device); the maps are always computed in fp32, so that the
    cached maps do not depend on the precision.
    """
    images = images or _Images()
    neurons = [int(n) for n in neurons]
    policy = DevicePolicy.of(policy, probe.head.weight.device)
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    transform = preprocess.transform
    tag = _model_tag(probe, preprocess) if cache_dir is not None else ""
    folder = Path(cache_dir) / "spatial" if cache_dir is not None else None
    maps: dict[str, torch.Tensor] = {}
    inputs: dict[str, torch.Tensor] = {}
    todo: list[tuple[str, torch.Tensor, Path | None]] = []
    for ident in dict.fromkeys(ids):
        pil = images.pil(ident)
        if pil is None:
            log.warning("cannot read exemplar image '%s'; it is left out of the heatmaps", ident)
            continue
        x = transform(pil)
        inputs[ident] = (x * std + mean).clamp(0, 1)
        path = None
        if folder is not None:
            content = _hash_file(ident) if os.path.isfile(ident) else hashlib.sha256(x.numpy().tobytes()).hexdigest()[:24]
            path = folder / f"{_image_key(tag, ident, content)}.pt"
            if path.is_file():
                try:
                    full = torch.load(path, weights_only=True)
                    maps[ident] = full[neurons].float()
                    continue
                except Exception:  # a damaged cache entry is recomputed and overwritten
                    log.warning("damaged heatmap cache entry %s; recomputing it", path.name)
        todo.append((ident, x, path))
    if todo and not probe.has_spatial:
        return {}, inputs, 0
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        x = policy.place(torch.stack([p[1] for p in part]))
        with torch.no_grad():
            out = probe(x, spatial=True)
        if out.spatial is None:
            return {}, inputs, 0
        sp = out.spatial.float().cpu()
        for j, (ident, _, path) in enumerate(part):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_torch(path, sp[j].clone())
            maps[ident] = sp[j, neurons]
    return maps, inputs, len(todo)


_HOT = np.array([[0.0, 0.0, 0.0], [0.55, 0.0, 0.0], [0.95, 0.3, 0.0], [1.0, 0.85, 0.1], [1.0, 1.0, 0.9]])


def colorize(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] ([H, W]) → RGB in [0, 1] ([H, W, 3]) on a black–red–yellow–white scale."""
    v = np.clip(values, 0, 1) * (len(_HOT) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_HOT) - 2)
    t = (v - lo)[..., None]
    return _HOT[lo] * (1 - t) + _HOT[lo + 1] * t


def hot_box(cell_map: torch.Tensor, size: int, fraction: float = HOT_FRACTION, min_frac: float = 0.25
            ) -> tuple[int, int, int, int] | None:
    """Square pixel box ``(x0, y0, x1, y1)`` around the connected cells at ≥ ``fraction`` of the peak.

    ``cell_map`` is the neuron's map at its own resolution ([h, w]); ``None`` when it never fires.
    """
    m = cell_map.float()
    peak = float(m.max())
    if peak <= 0:
        return None
    h, w = m.shape
    hot = (m >= fraction * peak).numpy()
    y, x = np.unravel_index(int(m.argmax()), m.shape)
    seen = np.zeros_like(hot)
    stack = [(y, x)]
    seen[y, x] = True
    while stack:  # the connected region around the peak (4-neighbours)
        cy, cx = stack.pop()
        for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
            if 0 <= ny < h and 0 <= nx < w and hot[ny, nx] and not seen[ny, nx]:
                seen[ny, nx] = True
                stack.append((ny, nx))
    ys, xs = np.nonzero(seen)
    sy, sx = size / h, size / w
    y0, y1 = ys.min() * sy, (ys.max() + 1) * sy
    x0, x1 = xs.min() * sx, (xs.max() + 1) * sx
    side = max(y1 - y0, x1 - x0, min_frac * size)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    side = min(side, size)
    x0 = int(round(min(max(cx - side / 2, 0), size - side)))
    y0 = int(round(min(max(cy - side / 2, 0), size - side)))
    s = int(round(side))
    return x0, y0, min(size, x0 + s), min(size, y0 + s)


def overlay(image: torch.Tensor, cell_map: torch.Tensor, scale: float, box=None, alpha: float = 0.6) -> Image.Image:
    """The image ([3, S, S] in [0, 1]) with the map upsampled over it; opaque where the map is hot."""
    size = image.shape[-1]
    up = F.interpolate(cell_map.float().view(1, 1, *cell_map.shape), size=(size, size), mode="bilinear",
                       align_corners=False)[0, 0]
    v = (up.clamp_min(0) / max(scale, 1e-8)).clamp(0, 1).numpy()
    rgb = image.permute(1, 2, 0).numpy()
    grey = rgb.mean(-1, keepdims=True) * 0.35 + rgb * 0.65  # de-saturate so that the heat reads
    a = alpha * np.sqrt(v)[..., None]
    out = grey * (1 - a) + colorize(v) * a
    pil = Image.fromarray((out.clip(0, 1) * 255).round().astype(np.uint8), "RGB")
    if box is not None:
        ImageDraw.Draw(pil).rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline=(0, 255, 255), width=max(1, size // 112))
    return pil


def dataset_maps(probe, preprocess, ids: Sequence[str], neurons: Sequence[int], *, data=None, split: str | None = None,
                 cache_dir=None, policy: DevicePolicy | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(maps, inputs)`` of :func:`spatial_maps` for dataset images: files, or items of ``data``'s ``split``."""
    maps, inputs, _ = spatial_maps(probe, preprocess, ids, neurons, images=_Images(data, split), cache_dir=cache_dir,
                                   policy=policy)
    return maps, inputs


def save_overlays(maps: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], ids: Sequence[str], col: int,
                  out_dir: str | os.PathLike, stem: str = "gallery") -> dict[str, str]:
    """Each of ``ids`` with map ``col`` over it, on one scale (the largest map's peak), as
    ``out_dir/STEM/NN.png``; returns ``{id: path relative to out_dir}`` for those with an image and a map."""
    have = [i for i in ids if i in maps and i in inputs]
    scale = max((float(maps[i][col].max()) for i in have), default=1.0)
    out: dict[str, str] = {}
    for rank, ident in enumerate(have):
        rel = f"{stem}/{rank:02d}.png"
        save_png(Path(out_dir) / rel, overlay(inputs[ident], maps[ident][col], scale if scale > 0 else 1.0))
        out[ident] = rel
    return out


def exemplar_heatmaps(probe, preprocess, fs, requests: Sequence[HeatmapRequest], out_dir: str | os.PathLike,
                      config: RenderConfig | None = None, *, policy: DevicePolicy | None = None,
                      class_names: Sequence[str] | None = None, data=None, cache_dir=None,
                      **overrides) -> tuple[dict[int, list[dict]], dict]:
    """Top-``k`` images per request (``k``: the config's ``heatmaps``; crops ``thumb`` pixels wide) with the neuron's heatmap and a tight crop, saved under ``out_dir``.

    ``fs`` (a ``FeatureSet``) ranks the images without a forward pass; one forward over the
    chosen images gives the maps (none at all when they are cached in ``cache_dir``). Returns
    ``({neuron: [row, ...]}, stats)``: a row per request with its class, role, a ``note`` when
    the neuron is silent there, and its ``items`` (image id, cached activation, PNG paths
    relative to ``out_dir``, the crop box and the map's peak cell).
    """
    cfg = configured(RenderConfig, config, overrides)
    k, thumb = cfg.heatmaps, cfg.thumb
    out = Path(out_dir)
    names = list(class_names or fs.class_names)
    labels = fs.labels.long()
    plan: list[tuple[HeatmapRequest, list[tuple[int, float]], int]] = []
    for req in requests:
        rows = (labels == req.cls).nonzero().flatten()
        if len(rows) == 0:
            plan.append((req, [], 0))
            continue
        vals = fs.features[rows, req.neuron].float()
        top = vals.topk(min(k, len(rows)))
        plan.append((req, [(int(rows[i]), float(v)) for v, i in zip(top.values, top.indices)], len(rows)))
    wanted = [fs.ids[i] for _, items, _ in plan for i, v in items if v > 0]
    neurons = sorted({req.neuron for req in requests})
    col = {n: j for j, n in enumerate(neurons)}
    maps, inputs, forwards = spatial_maps(probe, preprocess, wanted, neurons,
                                          images=_Images(data, getattr(fs, "split", None) or None),
                                          cache_dir=cache_dir, policy=policy)
    result: dict[int, list[dict]] = {}
    for req, items, n_class in plan:
        cname = names[req.cls] if req.cls < len(names) else str(req.cls)
        row = {"class": cname, "class_index": req.cls, "role": req.role, "images_in_class": n_class,
               "note": None, "items": []}
        result.setdefault(req.neuron, []).append(row)
        if n_class == 0:
            row["note"] = f"no images of class '{cname}' in the {fs.split or 'given'} split"
            continue
        firing = [(i, v) for i, v in items if v > 0]
        if not firing:
            row["note"] = (f"silent: neuron {req.neuron} is 0 on all {n_class} images of '{cname}' "
                           f"in the {fs.split or 'given'} split")
            continue
        if not maps:
            row["note"] = "this model has no spatial map at the features (no heatmaps); images shown plain"
        present = [(i, v) for i, v in firing if fs.ids[i] in inputs]
        scale = max((float(maps[fs.ids[i]][col[req.neuron]].max()) for i, _ in present if fs.ids[i] in maps),
                    default=1.0)
        for rank, (i, v) in enumerate(present):
            ident = fs.ids[i]
            img = inputs[ident]
            stem = f"exemplars/neuron{req.neuron}/class{req.cls}_{rank}"
            item = {"id": ident, "activation": v, "heatmap": None, "crop": None, "box": None, "peak": None,
                    "map_max": None, "map_size": None}
            size = img.shape[-1]
            if ident in maps:
                cm = maps[ident][col[req.neuron]]
                box = hot_box(cm, size)
                y, x = np.unravel_index(int(cm.argmax()), tuple(cm.shape))
                item.update(box=list(box) if box else None, peak=[int(y), int(x)], map_max=float(cm.max()),
                            map_size=list(cm.shape))
                save_png(out / f"{stem}_heat.png", overlay(img, cm, scale, box))
                item["heatmap"] = f"{stem}_heat.png"
                if box is not None:
                    crop = img[:, box[1]:box[3], box[0]:box[2]]
                    pil = Image.fromarray((crop.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), "RGB")
                    save_png(out / f"{stem}_crop.png", pil.resize((thumb, thumb), Image.BICUBIC))
                    item["crop"] = f"{stem}_crop.png"
            else:
                save_png(out / f"{stem}_heat.png",
                         Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8), "RGB"))
                item["heatmap"] = f"{stem}_heat.png"
            row["items"].append(item)
    stats = {"images": len(set(wanted)), "forward_images": forwards, "cached_images": len(maps) - forwards
             if maps else 0, "k": k}
    return result, stats

"""Extract (and cache) the penultimate features of a dataset split.

The cache key is built from what determines the features: the weights' content, the head
and probe choice, the split's listing (paths, sizes, modification times), the preprocessing
and the dtype. A changed model or dataset gets a new key and is never served stale features.
Work is saved in chunks written atomically, so an interrupted extraction resumes.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .data import ImageData, collate_skipping
from .errors import NeuroInspectError
from .featureset import FeatureSet
from .models import LoadedModel
from .probe import Probe

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
PART_KEYS = ("features", "logits", "labels", "groups", "index")


def _dtype_tag(device: str | torch.device, amp: bool) -> str:
    """The compute dtype, as part of the cache key: mixed precision runs only on CUDA."""
    return "amp" if (amp and torch.device(device).type == "cuda") else "float32"


def cache_key(loaded: LoadedModel, probe: Probe, data: ImageData, split: str, dtype: str) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "weights": loaded.fingerprint(),
        "head": probe.head_name,
        "data": data.listing_hash(split),
        "split": data.resolve_split(split),
        "preprocess": loaded.preprocess.describe(),
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def extract_features(
    loaded: LoadedModel,
    probe: Probe,
    data: ImageData,
    split: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    workers: int = 0,
    cache_dir: str | Path | None = None,
    amp: bool = True,
    chunk_size: int = 1024,
    progress: bool = True,
) -> FeatureSet:
    """Run the model over ``split`` and return its features, logits, labels and groups.

    With ``cache_dir`` the result is cached (and resumed chunk by chunk after an interruption).
    Mixed precision is used on CUDA when ``amp``; features are always stored as float32.
    """
    device = torch.device(device)
    split = data.resolve_split(split)
    n = data.size(split)
    if n == 0:
        raise NeuroInspectError(f"split '{split}' of '{data.spec}' is empty; add images or choose another --split")
    dtype = _dtype_tag(device, amp)
    folder = None
    if cache_dir is not None:
        key = cache_key(loaded, probe, data, split, dtype)
        folder = Path(cache_dir) / "features" / key
        final = folder / "features.safetensors"
        if final.is_file():
            log.info("features of split %s: cache hit %s", split, key)
            return FeatureSet.load(final)
        folder.mkdir(parents=True, exist_ok=True)

    chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
    chunks = [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    done: dict[int, dict] = {}
    if folder is not None:
        for ci in range(len(chunks)):
            f = folder / f"chunk_{ci:05d}.pt"
            if f.is_file():
                done[ci] = torch.load(f, map_location="cpu", weights_only=True)
    todo = [ci for ci in range(len(chunks)) if ci not in done]
    batches = [list(range(b, min(b + batch_size, e))) for ci in todo for (s, e) in [chunks[ci]] for b in range(s, e, batch_size)]
    dataset = data.dataset(split, loaded.preprocess.transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_skipping,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    ids = data.ids(split)
    loaded.model.to(device).eval()
    current: dict[int, dict] = {ci: {"features": [], "logits": [], "labels": [], "groups": [], "index": [], "skipped": []} for ci in todo}
    remaining = {ci: chunks[ci][1] - chunks[ci][0] for ci in todo}

    bar = tqdm(total=n, initial=n - sum(remaining.values()), desc=f"features [{split}]", unit="img",
               disable=None if progress else True, leave=False)
    try:
        with torch.inference_mode():
            for batch_ids, (x, labels, groups, index, errors) in zip(batches, loader):
                ci = batch_ids[0] // chunk_size
                acc = current[ci]
                acc["skipped"].extend(errors)
                if x is not None:
                    with _autocast(device, amp):
                        out = probe(x.to(device, non_blocking=True))
                    acc["features"].append(out.features.float().cpu())
                    acc["logits"].append(out.logits.float().cpu())
                    acc["labels"].append(labels)
                    acc["groups"].append(groups)
                    acc["index"].append(index)
                remaining[ci] -= len(batch_ids)
                bar.update(len(batch_ids))
                if remaining[ci] == 0:
                    done[ci] = _finish_chunk(acc, ids, folder, ci)
                    del current[ci]
    finally:
        bar.close()

    parts = [done[ci] for ci in range(len(chunks))]
    skipped = [s for p in parts for s in p["skipped"]]
    for s in skipped:
        log.warning("skipped unreadable image %s", s)
    if all(p["features"].shape[0] == 0 for p in parts):
        raise NeuroInspectError(f"no image of split '{split}' could be read ({len(skipped)} unreadable); check the files")
    cat = {k: torch.cat([p[k] for p in parts if p["features"].shape[0]]) for k in PART_KEYS}
    fs = FeatureSet(
        cat["features"], cat["logits"], cat["labels"], cat["groups"], [ids[i] for i in cat["index"].tolist()],
        list(data.class_names), list(data.group_names), split, skipped,
    )
    if folder is not None:
        fs.save(folder / "features.safetensors")
        for ci in range(len(chunks)):
            (folder / f"chunk_{ci:05d}.pt").unlink(missing_ok=True)
    return fs


def _finish_chunk(acc: dict, ids: list[str], folder: Path | None, ci: int) -> dict:
    if acc["features"]:
        part = {k: torch.cat(acc[k]) for k in PART_KEYS}
        bad = ~torch.isfinite(part["features"]).all(1)
    else:  # every image of the chunk was unreadable: an empty part, left out when concatenating
        part = {k: torch.zeros(0, dtype=torch.long) for k in PART_KEYS}
        bad = torch.zeros(0, dtype=torch.bool)
    if bad.any():
        names = [ids[i] for i in part["index"][bad].tolist()]
        raise NeuroInspectError(
            f"the model produced NaN/inf features for {len(names)} images ({', '.join(names[:3])}{', …' if len(names) > 3 else ''}); "
            "check the weights and the images (nothing was cached)"
        )
    part["skipped"] = acc["skipped"]
    if folder is not None:
        from .io import atomic_path

        with atomic_path(folder / f"chunk_{ci:05d}.pt") as tmp:
            torch.save(part, tmp)
    return part


def store_features(loaded: LoadedModel, probe: Probe, data: ImageData, split: str, fs: FeatureSet,
                   cache_dir: str | Path, amp: bool = False, device: str | torch.device = "cpu") -> Path:
    """Put ``fs`` in the cache as the features of ``split`` for this model.

    For a model whose backbone is unchanged and whose head was retrained on cached features:
    ``fs`` must then hold the old features with the new head's logits (``FeatureSet.with_logits``).
    """
    dtype = _dtype_tag(device, amp)
    folder = Path(cache_dir) / "features" / cache_key(loaded, probe, data, split, dtype)
    return fs.save(folder / "features.safetensors")


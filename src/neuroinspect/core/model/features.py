"""Extract (and cache) the penultimate features of a dataset split.

The cache key is built from what determines the features: the weights' content, a fingerprint
of the model's structure (class, module tree, ``repr`` and the factory's source), the head and
probe choice, the split's *content* (every image's bytes, with labels and groups), the
preprocessing and the compute dtype. Work is saved in parts written atomically, so an
interrupted extraction resumes; parts are stored per batch size, so a resumed run always
computes every image in the same batch as an uninterrupted one would.

A cold extraction returns exactly what a later warm run reads back from the cache (it is
read back from the written file), so every score derived from the features is the same.

Under torchrun each rank extracts a contiguous run of whole batches and saves its parts; rank 0
assembles them into the features file, which the other ranks then read (``core.runtime.distributed``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path

import torch

from neuroinspect.core.base.config import DEFAULT_CHUNK_SECONDS, DEFAULT_CHUNK_SIZE, ExtractConfig, configured  # noqa: F401
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.io import check_writable_dir, mkdirs, save_torch
from neuroinspect.core.data.images import ImageData, collate_skipping
from neuroinspect.core.model.featureset import FeatureMismatch, FeatureSet
from neuroinspect.core.model.models import LoadedModel
from neuroinspect.core.model.probe import Probe
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import DevicePolicy
from neuroinspect.core.runtime.progress import progress_bar

log = logging.getLogger(__name__)
CACHE_FORMAT = 2
PART_KEYS = ("features", "logits", "labels", "groups", "index")
_PART_NAME = re.compile(r"^rows_(\d{9})_(\d{9})\.pt$")


def cache_key(loaded: LoadedModel, probe: Probe, data: ImageData, split: str, dtype: str,
              cache_dir: str | Path | None = None, verify: bool = False) -> str:
    """What determines the features, hashed. See the README's "Caching" section for what is covered."""
    hashes = None if cache_dir is None else Path(cache_dir) / "file-hashes"
    parts = {
        "format": CACHE_FORMAT,
        "weights": loaded.fingerprint(),
        "structure": loaded.structure_fingerprint(),
        "head": probe.head_name,
        "data": data.content_hash(split, index_dir=hashes, verify=verify),
        "split": data.resolve_split(split),
        "preprocess": loaded.preprocess.describe(),
        "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def split_stamp(key: str, data: ImageData, split: str) -> dict[str, str]:
    """What a cached features file must say about itself to be served for ``key``: the key, the split's
    image count and a digest of its ids (checked on every read, beside the tensors' own digest)."""
    ids = data.ids(split)
    return {"key": key, "split_size": str(len(ids)),
            "split_ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]}


def _read_cached(path: Path, stamp: dict[str, str]) -> FeatureSet | None:
    """The cached features at ``path`` if they are whole and are the ones ``stamp`` describes; else None with
    one warning (they are then extracted again)."""
    try:
        fs = FeatureSet.load(path, expect=stamp)
    except FeatureMismatch as err:
        log.warning("warning: cached features %s are not this split's (%s); extracting again", path, err)
        return None
    except Exception as err:  # a damaged cache file is recomputed, never fatal
        log.warning("warning: cached features %s are unreadable (%s); extracting again", path, type(err).__name__)
        return None
    if len(fs) + len(fs.skipped) != int(stamp["split_size"]):
        log.warning("warning: cached features %s hold %d rows and %d skipped images for a split of %s; "
                    "extracting again", path, len(fs), len(fs.skipped), stamp["split_size"])
        return None
    return fs


def _cache_folder(cache_dir: str | Path, key: str) -> Path:
    """The cache entry's folder, created; one clear line when the cache is a file or not writable."""
    hint = "; pass --cache-dir DIR (or set NEUROINSPECT_CACHE) to a writable folder"
    try:
        check_writable_dir(cache_dir, "the cache")
        return mkdirs(Path(cache_dir) / "features" / key, "the cache folder")
    except NeuroInspectError as err:
        raise NeuroInspectError(f"{str(err).split('; choose')[0]}{hint}") from None


def _load_parts(partial: Path, n: int, batch_size: int) -> dict[int, dict]:
    """The saved parts of an earlier run with the same batch size: ``{start: part}``, never overlapping."""
    parts: dict[int, dict] = {}
    if not partial.is_dir():
        return parts
    found = []
    for f in partial.iterdir():
        m = _PART_NAME.match(f.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), f))
    last_end = 0
    for start, end, f in sorted(found):
        if start < last_end or end <= start or end > n or start % batch_size:
            log.info("ignoring cached part %s (it overlaps another or does not fit the split)", f.name)
            continue
        try:
            part = torch.load(f, map_location="cpu", weights_only=True)
        except Exception:  # a damaged part is recomputed
            log.info("ignoring unreadable cached part %s", f.name)
            continue
        if (part.get("start"), part.get("end")) != (start, end):
            continue
        parts[start] = part
        last_end = end
    return parts


def extract_features(
    loaded: LoadedModel,
    probe: Probe,
    data: ImageData,
    split: str,
    config: ExtractConfig | None = None,
    *,
    policy: DevicePolicy | None = None,
    cache_dir: str | Path | None = None,
    **overrides,
) -> FeatureSet:
    """Run the model over ``split`` and return its features, logits, labels and groups.

    ``config`` (an :class:`ExtractConfig`, or its fields as keyword ``overrides``): batch size,
    workers, how often progress is saved, ``verify_cache``. With ``cache_dir`` the result is
    cached, and resumed after an interruption from the parts already saved: a part is saved every
    ``chunk_size`` images or ``chunk_seconds`` seconds, whichever comes first, always at a batch
    boundary. ``verify_cache`` re-hashes every image instead of trusting the per-file hash index.
    ``policy`` (default: cpu, fp32) says where the model runs and in which precision (its
    ``cache_tag`` is part of the cache key); features are always stored as float32.
    """
    cfg = configured(ExtractConfig, config, overrides)
    policy = DevicePolicy.of(policy)
    batch_size, chunk_size, chunk_seconds = cfg.batch_size, cfg.chunk_size, cfg.chunk_seconds
    if batch_size < 1:
        raise NeuroInspectError(f"--batch-size must be a positive integer, got {batch_size}")
    if chunk_size < 1 or not chunk_seconds > 0:
        raise NeuroInspectError(f"--chunk-size and --chunk-seconds must be positive, got {chunk_size} and {chunk_seconds}")
    split = data.resolve_split(split)
    n = data.size(split)
    if n == 0:
        raise NeuroInspectError(f"split '{split}' of '{data.spec}' is empty; add images or choose another --split")
    dtype = policy.cache_tag
    folder = partial = None
    parts: dict[int, dict] = {}
    # under torchrun each rank takes a contiguous run of whole batches (the batch grid is the same as in
    # one process, so every image is computed in the same batch and the features are the same bits)
    lo, hi = (min(b * batch_size, n) for b in distributed.shard_bounds(-(-n // batch_size)))
    distributed.record("images", split, [lo, hi])
    if cache_dir is not None:
        key = cache_key(loaded, probe, data, split, dtype, cache_dir=cache_dir, verify=cfg.verify_cache)
        stamp = split_stamp(key, data, split)
        final = Path(cache_dir) / "features" / key / "features.safetensors"
        fs = _read_cached(final, stamp) if final.is_file() else None
        if distributed.all_agree(fs is not None):  # every rank takes the same branch
            log.info("features of split %s: cache hit %s", split, key)
            return fs
        folder = _cache_folder(cache_dir, key)
        partial = folder / "partial" / f"batch{batch_size}"
        parts = _load_parts(partial, n, batch_size)
        done = sum(min(p["end"], hi) - max(p["start"], lo) for p in parts.values() if p["end"] > lo and p["start"] < hi)
        if done:
            log.info("features of split %s: resuming, %d of %d images already done", split, done, hi - lo)

    # what is left: the gaps between saved parts within this rank's share; every gap starts on the batch grid
    todo, pos = [], lo
    for start in sorted(parts) + [n]:
        if start > pos:
            todo.append((pos, min(start, hi)))
        if start < n:
            pos = max(pos, parts[start]["end"])
        if pos >= hi:
            break
    batches = [list(range(b, min(b + batch_size, e))) for s, e in todo if e > s for b in range(s, e, batch_size)]
    ids = data.ids(split)
    if batches:
        _run_batches(loaded, probe, data, split, batches, parts, partial, policy, cfg, hi - lo)
    if distributed.world_size() > 1:
        parts = _merge_shards(parts, partial, n, batch_size)
        if folder is not None and not distributed.is_main():  # rank 0 writes the features file; read it back
            error = distributed.broadcast(None)
            if error:
                raise NeuroInspectError(error)
            return FeatureSet.load(folder / "features.safetensors", expect=stamp)

    tell_others = folder is not None and distributed.world_size() > 1  # rank 0 here: the others wait for its word
    try:
        fs = _assemble(parts, n, ids, data, split)
        if folder is not None:
            fs.save(folder / "features.safetensors", stamp)
    except NeuroInspectError as err:
        if tell_others:
            distributed.broadcast(str(err))
        raise
    if folder is None:
        return fs
    shutil.rmtree(folder / "partial", ignore_errors=True)
    if tell_others:
        distributed.broadcast(None)  # the file is there: the other ranks read it
    # read back what was written: a cold run returns exactly what every warm run will read
    return FeatureSet.load(folder / "features.safetensors", expect=stamp)


def _assemble(parts: dict[int, dict], n: int, ids: list[str], data: ImageData, split: str) -> FeatureSet:
    """The parts, in image order, as one FeatureSet."""
    ordered = [parts[s] for s in sorted(parts)]
    covered = sum(p["end"] - p["start"] for p in ordered)
    if covered != n:  # pragma: no cover - a bug, never silently wrong rows
        raise RuntimeError(f"feature parts cover {covered} of {n} images")
    skipped = [s for p in ordered for s in p["skipped"]]
    for s in skipped:
        log.warning("warning: skipped image %s", s)
    if all(p["features"].shape[0] == 0 for p in ordered):
        raise NeuroInspectError(f"no image of split '{split}' could be read ({len(skipped)} unreadable); check the files")
    cat = {k: torch.cat([p[k] for p in ordered if p["features"].shape[0]]) for k in PART_KEYS}
    return FeatureSet(
        cat["features"], cat["logits"], cat["labels"], cat["groups"], [ids[i] for i in cat["index"].tolist()],
        list(data.class_names), list(data.group_names), split, skipped,
    )


def _merge_shards(parts: dict[int, dict], partial: Path | None, n: int, batch_size: int) -> dict[int, dict]:
    """After every rank has done its share: all parts, on rank 0 (read from the cache) or on every rank
    (exchanged directly when there is no cache folder)."""
    if partial is None:
        merged: dict[int, dict] = {}
        for theirs in distributed.all_gather(parts):
            merged.update(theirs)
        return merged
    distributed.barrier()  # every rank's parts are on disk
    if not distributed.is_main():
        return parts
    merged = _load_parts(partial, n, batch_size)
    covered = sum(p["end"] - p["start"] for p in merged.values())
    if covered != n:
        message = (f"the other ranks' feature parts are missing in {partial} ({covered} of {n} images found); "
                   "under torchrun with several nodes, --cache-dir must be a folder every node shares")
        distributed.broadcast(message)
        raise NeuroInspectError(message)
    return merged


def _run_batches(loaded, probe, data, split, batches, parts, partial, policy: DevicePolicy, cfg: ExtractConfig,
                 n) -> None:
    """Extract ``batches`` (lists of image indices) of ``split``, saving a part into ``parts`` (and under
    ``partial`` when caching) every ``cfg.chunk_size`` images or ``cfg.chunk_seconds``; ``n`` is this rank's
    share of the split, for the progress bar."""
    chunk_size, chunk_seconds = cfg.chunk_size, cfg.chunk_seconds
    ids = data.ids(split)  # names the images in messages
    dataset = data.dataset(split, loaded.preprocess.transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=cfg.workers, collate_fn=collate_skipping,
        pin_memory=policy.device.type == "cuda", persistent_workers=False,
    )
    policy.place(loaded.model).eval()
    todo = sum(len(b) for b in batches)  # n: this rank's share of the split
    bar = progress_bar(n, f"features [{split}]", "img", enabled=cfg.progress, initial=n - todo)
    acc = _new_acc(batches[0][0])
    try:
        with torch.inference_mode():
            for batch_ids, (x, labels, groups, index, errors) in zip(batches, loader):
                if batch_ids[0] != acc["end"]:  # a gap (a part saved earlier) lies between: close this part
                    _flush(acc, parts, ids, partial)
                    acc = _new_acc(batch_ids[0])
                acc["skipped"].extend(errors)
                if x is not None:
                    with policy.autocast():
                        out = probe(policy.place(x))
                    acc["features"].append(out.features.float().cpu())
                    acc["logits"].append(out.logits.float().cpu())
                    acc["labels"].append(labels)
                    acc["groups"].append(groups)
                    acc["index"].append(index)
                acc["end"] = batch_ids[-1] + 1
                bar.update(len(batch_ids))
                if acc["end"] - acc["start"] >= chunk_size or time.monotonic() - acc["t0"] >= chunk_seconds:
                    _flush(acc, parts, ids, partial)
                    acc = _new_acc(acc["end"])
            _flush(acc, parts, ids, partial)
    finally:
        bar.close()


def _new_acc(start: int) -> dict:
    return {"start": start, "end": start, "t0": time.monotonic(), "features": [], "logits": [], "labels": [],
            "groups": [], "index": [], "skipped": []}


def _flush(acc: dict, parts: dict[int, dict], ids: list[str], partial: Path | None) -> None:
    """Close the part ``[start, end)``: check it, save it (when caching) and keep it in ``parts``."""
    if acc["end"] == acc["start"]:
        return
    if acc["features"]:
        part = {k: torch.cat(acc[k]).clone() for k in PART_KEYS}
        bad = ~torch.isfinite(part["features"]).all(1) | ~torch.isfinite(part["logits"]).all(1)
    else:  # every image of the part was unreadable: an empty part, left out when concatenating
        part = {k: torch.zeros(0, dtype=torch.long) for k in PART_KEYS}
        bad = torch.zeros(0, dtype=torch.bool)
    if bad.any():
        names = [ids[i] for i in part["index"][bad].tolist()]
        raise NeuroInspectError(
            f"the model produced NaN/inf features for {len(names)} images ({', '.join(names[:3])}{', …' if len(names) > 3 else ''}); "
            "check the weights and the images (no NaN was cached)"
        )
    part["skipped"] = list(acc["skipped"])
    part["start"], part["end"] = acc["start"], acc["end"]
    if partial is not None:
        save_torch(partial / f"rows_{acc['start']:09d}_{acc['end']:09d}.pt", part)
    parts[acc["start"]] = part


def store_features(loaded: LoadedModel, probe: Probe, data: ImageData, split: str, fs: FeatureSet,
                   cache_dir: str | Path, policy: DevicePolicy | None = None) -> Path:
    """Put ``fs`` in the cache as the features of ``split`` for this model.

    For a model whose backbone is unchanged and whose head was retrained on cached features:
    ``fs`` must then hold the old features with the new head's logits (``FeatureSet.with_logits``).
    """
    dtype = DevicePolicy.of(policy).cache_tag
    key = cache_key(loaded, probe, data, split, dtype, cache_dir=cache_dir)
    return fs.save(_cache_folder(cache_dir, key) / "features.safetensors", split_stamp(key, data, split))


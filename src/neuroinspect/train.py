"""Train the ERM classifier the other stages debug (paper Sec. IV and its appendix).

Two modes:

* **fine-tuning** (default): the whole network is trained on the ``train`` split with random
  resized crops and horizontal flips, then scored on ``val`` after every epoch;
* **head only** (``head_only=True``): a linear probe. The backbone is frozen, its penultimate
  features are extracted once (through the feature cache) and only the decision layer is trained
  on them — the paper's MetaShift setting, and quick enough for a CPU.

Defaults follow the paper's appendix for Food-101/Flowers-102: Adam, cosine annealing, learning
rate 0.002, batch 128, 20 epochs, the epoch with the best validation accuracy kept. Choices the
paper leaves open, made here: the cosine schedule is stepped every batch and anneals to 0 over
all epochs; no weight decay unless asked; fine-tuning augments with ``RandomResizedCrop`` and a
horizontal flip; BatchNorm statistics update while fine-tuning; a pretrained classifier's head
is replaced by a fresh ``nn.Linear`` with one output per class.

After every epoch ``OUT/checkpoint.pt`` (model, optimiser, scheduler, epoch, history) is written
atomically, and a rerun with the same settings resumes from it; the best epoch's weights go to
``OUT/model.safetensors`` (a plain state_dict of the whole model) which every other command
reads with ``--model SPEC --weights OUT/model.safetensors --num-classes C``.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2 as T
from tqdm.auto import tqdm

from neuroinspect.core.base.config import InspectorConfig, configured
from neuroinspect.core.base.errors import NeuroInspectError, first_line
from neuroinspect.core.base.io import default_cache_dir, save_safetensors, save_torch
from neuroinspect.core.base.metrics import metrics_of
from neuroinspect.core.base.records import Metrics, TrainRecord
from neuroinspect.core.data.images import ImageData, collate_skipping
from neuroinspect.core.data.load import load_data
from neuroinspect.core.model.features import extract_features, store_features
from neuroinspect.core.model.head_training import head_epoch
from neuroinspect.core.model.models import build_model, load_weights, read_state_dict, resize_head
from neuroinspect.core.model.probe import Probe, find_head, model_logits
from neuroinspect.core.runtime.device import DevicePolicy, resolve_device, seed_torch, seeded_rng
from neuroinspect.train_config import SELECT_BY, TrainConfig  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.safetensors"
RECORD = TrainRecord.FILE


@dataclass
class TrainResult:
    out: Path
    weights: Path  # OUT/model.safetensors (best epoch)
    best_epoch: int
    best_val: float | None
    history: list[dict]
    val_metrics: Metrics | None = None
    test_metrics: Metrics | None = None
    resumed_from: int = 0
    num_classes: int = 0
    reload: dict = field(default_factory=dict)


def reload_spec(spec: str) -> str:
    """The model spec that rebuilds the architecture without downloading weights again."""
    if spec.startswith("torchvision:"):
        return spec.split("/", 1)[0]
    if spec.startswith("timm:") and spec.endswith("/pretrained"):
        return spec[: -len("/pretrained")]
    return spec


def split_metrics(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, data: ImageData) -> Metrics:
    """The :class:`Metrics` of ``logits`` (fractions): per class by ``data``'s class names, per group by its group
    names (a group without a name by its number)."""
    return metrics_of(labels, logits.argmax(1), list(data.class_names), groups, list(data.group_names or []))


def _selection(metrics: Metrics, select_by: str) -> float:
    if select_by == "worst-group":
        if metrics.worst_group_acc is None:
            raise NeuroInspectError("--select-by worst-group needs group labels in the val split")
        return metrics.worst_group_acc
    value = metrics.accuracy if select_by == "accuracy" else metrics.mean_class_acc
    return float("nan") if value is None else value


def _has(data: ImageData, split: str) -> bool:
    return split in data.splits


def _train_transform(pre) -> Callable:
    interp = T.InterpolationMode.BICUBIC if pre.interpolation == "bicubic" else T.InterpolationMode.BILINEAR
    return T.Compose([
        T.ToImage(),
        T.RandomResizedCrop(pre.input_size, interpolation=interp, antialias=True),
        T.RandomHorizontalFlip(),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(pre.mean, pre.std),
    ])


def _policy(device: torch.device, amp: bool, backward: bool = True) -> DevicePolicy:
    """The device policy of training (``amp``: automatic precision; a backward pass never gets fp16)."""
    return DevicePolicy.resolve(device, "auto" if amp else "fp32", backward=backward)


def _autocast(device: torch.device, amp: bool):
    return _policy(device, amp).autocast()


def _settings_key(spec: str, data: ImageData, config: TrainConfig, init_weights) -> dict:
    """What a checkpoint must agree on to be resumed."""
    return {"model": spec, "data": data.spec, "classes": list(data.class_names),
            "init_weights": str(init_weights) if init_weights else None, **asdict(config)}


def _save_checkpoint(path: Path, state: dict) -> None:
    save_torch(path, state)


def _save_weights(model: nn.Module, path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_safetensors(path, state)


def train_classifier(
    model: str,
    data: str | ImageData,
    out: str | Path,
    config: TrainConfig | None = None,
    load: InspectorConfig | None = None,
    *,
    init_weights: str | Path | None = None,
    resume: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    **overrides,
) -> TrainResult:
    """Train ``model`` (a model spec) on ``data``'s train split; keep the best epoch on val.

    ``init_weights`` are loaded before the head is resized to the data's classes (say, a local
    copy of ImageNet weights). Returns where the best weights are and the training record.

    ``load`` (an :class:`InspectorConfig`, or its fields as keyword ``overrides``) says how the
    model and data are loaded and evaluated: ``head``, ``device``, ``cache_dir``, ``workers``,
    ``batch_size`` (of evaluation and feature extraction), ``allow_pickle``, ``download``,
    ``progress``; the training settings themselves are ``config``.

    The caller's random state is left as it was: the model's initialisation, dropout and the random
    augmentations draw from torch's global generators seeded with ``config.seed`` inside
    :func:`~neuroinspect.core.runtime.device.seeded_rng`, and the batch order from its own generator.
    """
    opts = configured(InspectorConfig, load, overrides)
    config = config or TrainConfig()
    config.check()
    device = resolve_device(opts.device)
    with seeded_rng(config.seed, device):
        return _train(model, data, Path(out), config, opts, device, init_weights, resume, on_epoch)


def _train(model: str, data: str | ImageData, out: Path, config: TrainConfig, opts: InspectorConfig,
           device: torch.device, init_weights, resume: bool, on_epoch) -> TrainResult:
    """:func:`train_classifier`'s work, inside its seeded generators."""
    head, cache_dir, workers, eval_batch_size = opts.head, opts.cache_dir, opts.workers, opts.batch_size
    allow_pickle, download, progress = opts.allow_pickle, opts.download, opts.progress
    data = data if isinstance(data, ImageData) else load_data(data, download=download)
    if not _has(data, "train") or data.size("train") == 0:
        raise NeuroInspectError(f"training needs a non-empty 'train' split; '{data.spec}' has: {', '.join(data.splits)}")
    has_val = _has(data, "val") and data.size("val") > 0
    if config.select_by == "worst-group" and not data.group_names:
        raise NeuroInspectError(f"--select-by worst-group needs group labels, and '{data.spec}' has none; "
                                "use accuracy or class")
    C = len(data.class_names)
    trained = {r.label for r in data.records.get(data.resolve_split("train"), [])} if data.records else set(range(C))
    empty = [name for c, name in enumerate(data.class_names) if c not in trained]
    if empty:
        log.warning("warning: %d class(es) have no training images (%s): the model cannot learn them, and no fix can "
                    "be fitted for them; add their images to the 'train' split", len(empty),
                    ", ".join(repr(n) for n in empty[:5]) + (" …" if len(empty) > 5 else ""))
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    loaded = build_model(model, head=head, allow_pickle=allow_pickle)
    if reload_spec(model) != model:
        # score with the preprocessing the reloaded model will get (torchvision:resnet50/IMAGENET1K_V1 resizes to
        # 256 px, torchvision:resnet50 to 232 px), so that train.json and the feature cache agree with later commands
        loaded.preprocess = build_model(reload_spec(model), head=head).preprocess
        seed_torch(config.seed, device)  # the head below starts where it would have without this second build
    if init_weights is not None:  # with whatever head they were saved with (e.g. ImageNet's 1000 classes)
        size = loaded.preprocess.input_size
        name, linear = find_head(loaded.model, head=head, input_size=size)
        saved = read_state_dict(init_weights, allow_pickle=allow_pickle).get(f"{name}.weight")
        if saved is not None and saved.ndim == 2 and saved.shape[0] != linear.out_features:
            resize_head(loaded.model, int(saved.shape[0]), head=head, input_size=size)
        load_weights(loaded.model, init_weights, allow_pickle=allow_pickle)
    resize_head(loaded.model, C, head=head, input_size=loaded.preprocess.input_size)
    probe = Probe(loaded.model, head=head, input_size=loaded.preprocess.input_size)
    net = _policy(device, config.amp).place(loaded.model)

    settings = _settings_key(model, data, config, init_weights)
    ckpt_path = out / CHECKPOINT
    start_epoch, history, best_epoch, best_val = 0, [], 0, None
    state = None
    if resume and ckpt_path.is_file():
        try:
            state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise NeuroInspectError(f"cannot read the checkpoint '{ckpt_path}' ({first_line(err)}); "
                                    "delete it or pass --restart") from None
        if state.get("settings") != json.loads(json.dumps(settings)):
            diff = [k for k in settings if state.get("settings", {}).get(k) != settings[k]]
            raise NeuroInspectError(f"'{out}' holds a training run with other settings ({', '.join(diff)}); "
                                    "use another --out, or pass --restart to start over")
        start_epoch, history = int(state["epoch"]), list(state["history"])
        best_epoch, best_val = int(state["best_epoch"]), state["best_val"]
        log.info("resuming from epoch %d of %d", start_epoch, config.epochs)

    # ---------------------------------------------------------------- what is trained, on what
    if config.head_only:
        net.eval()
        feats = {s: extract_features(loaded, probe, data, s, policy=_policy(device, config.amp, backward=False),
                                     cache_dir=cache_dir, batch_size=eval_batch_size, workers=workers, progress=progress)
                 for s in data.splits if data.size(s)}
        for p in net.parameters():
            p.requires_grad_(False)
        params = list(probe.head.parameters())
        for p in params:
            p.requires_grad_(True)
        n_train = len(feats["train"])
    else:
        feats = {}
        params = [p for p in net.parameters()]
        for p in params:
            p.requires_grad_(True)
        n_train = data.size("train")
    if state is not None:  # after the features: the cache key holds the weights as first built
        net.load_state_dict(state["model"])
        torch.set_rng_state(state["rng"])  # augmentations continue as if never interrupted
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, config.epochs * steps_per_epoch))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])

    loading = _Loading(device, workers, progress)

    def evaluate_split(split: str) -> dict:
        if config.head_only:
            fs = feats[split]
            with torch.no_grad():
                logits = probe.head(fs.features.to(device)).float().cpu()
            return split_metrics(logits, fs.labels, fs.groups, data)
        return _evaluate_model(net, data, split, loaded.preprocess.transform, loading, eval_batch_size, config.amp)

    # ---------------------------------------------------------------- epochs
    train_ds = None if config.head_only else data.dataset(
        "train", _train_transform(loaded.preprocess) if config.augment else loaded.preprocess.transform)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)  # the same order whether resumed or not
        if config.head_only:
            loss_sum, correct, seen = _head_epoch(probe.head, feats["train"], opt, sched, config, g, device, progress, epoch)
        else:
            loss_sum, correct, seen = _finetune_epoch(net, train_ds, opt, sched, config, g, loading, epoch)
        record = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                  "lr": sched.get_last_lr()[0], "seconds": None}
        if has_val:
            vm = evaluate_split("val")
            record.update(val_acc=vm.accuracy, val_class_acc=vm.mean_class_acc, val_worst_group=vm.worst_group_acc,
                          val_metric=_selection(vm, config.select_by))
            better = best_val is None or record["val_metric"] > best_val
        else:
            better = True  # without val, the last epoch is kept
        if better:
            best_epoch, best_val = epoch, record.get("val_metric")
            _save_weights(net, out / MODEL_FILE)
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        _save_checkpoint(ckpt_path, {
            "settings": settings, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "epoch": epoch, "history": history,
            "best_epoch": best_epoch, "best_val": best_val, "rng": torch.get_rng_state(),
        })
        if on_epoch:
            on_epoch(record)

    # ---------------------------------------------------------------- the best epoch, scored
    if not (out / MODEL_FILE).is_file():
        raise NeuroInspectError(f"'{out}' has a finished checkpoint but no {MODEL_FILE}; pass --restart")
    load_weights(net, out / MODEL_FILE)
    net.eval()
    metrics = {}
    for split in ("val", "test"):
        if _has(data, split) and data.size(split):
            if config.head_only:
                metrics[split] = evaluate_split(split)
            else:  # through the feature cache: explain/edit/compare on these weights start from it
                fs = extract_features(loaded, probe, data, split, policy=_policy(device, config.amp, backward=False),
                                      cache_dir=cache_dir, batch_size=eval_batch_size, workers=workers,
                                      progress=progress)
                metrics[split] = split_metrics(fs.logits, fs.labels, fs.groups, data)
    if config.head_only:  # the backbone did not change: give the final model its cached features at once
        for split, fs in feats.items():
            store_features(loaded, probe, data, split, fs.with_logits(probe.weight.detach().cpu(),
                                                                      None if probe.head.bias is None else probe.head.bias.detach().cpu()),
                           cache_dir, _policy(device, config.amp, backward=False))
    reload = {"model": reload_spec(model), "weights": str(out / MODEL_FILE), "num_classes": C, "head": head}
    result = TrainResult(out, out / MODEL_FILE, best_epoch, best_val, history, metrics.get("val"),
                         metrics.get("test"), start_epoch, C, reload)
    TrainRecord(
        model=model, data=str(data.spec), classes=list(data.class_names), config=asdict(config),
        init_weights=str(init_weights) if init_weights else None, best_epoch=best_epoch,
        best_val_metric=best_val, select_by=config.select_by if has_val else "last epoch (no val split)",
        history=history, val=metrics.get("val"), test=metrics.get("test"), resumed_from=start_epoch,
        reload=reload, device=str(device), preprocess=loaded.preprocess.describe(),
    ).write(out / RECORD)
    return result


def _head_epoch(head: nn.Linear, fs, opt, sched, config: TrainConfig, g, device, progress: bool, epoch: int):
    """One epoch of ``--head-only`` training: :func:`~neuroinspect.core.model.head_training.head_epoch` over the
    cached training features in batches of ``config.batch_size``, shuffled by ``g``, the scheduler stepped per
    batch; returns ``(loss_sum, correct, seen)``."""
    head.train()
    X, y = fs.features.to(device), fs.labels.to(device)
    correct = 0.0

    def batch_loss(idx):
        nonlocal correct
        idx = idx.to(device)
        logits = head(X[idx])
        correct += float((logits.argmax(1) == y[idx]).sum())
        return F.cross_entropy(logits, y[idx])

    def bar(starts):
        return tqdm(starts, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=None if progress else True)

    loss_sum, seen = head_epoch(opt, batch_loss, len(y), config.batch_size, generator=g, scheduler=sched,
                                progress=bar)
    return loss_sum, correct, float(seen)


@dataclass(frozen=True)
class _Loading:
    """How the images are read and where they go: the device, the DataLoader's worker processes, progress bars."""

    device: torch.device
    workers: int
    progress: bool


def _finetune_epoch(net: nn.Module, dataset, opt, sched, config: TrainConfig, g, loading: _Loading, epoch: int):
    device, workers, progress = loading.device, loading.workers, loading.progress
    net.train()
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, generator=g,
                                         num_workers=workers, collate_fn=collate_skipping,
                                         pin_memory=device.type == "cuda", drop_last=False)
    loss_sum = correct = seen = 0.0
    bar = tqdm(loader, desc=f"epoch {epoch}/{config.epochs}", leave=False, disable=None if progress else True)
    for x, y, _, _, errors in bar:
        for e in errors:
            log.warning("skipped unreadable image %s", e)
        if x is None:
            sched.step()
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with _autocast(device, config.amp):
            logits = model_logits(net(x)).float()
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise NeuroInspectError(f"the training loss became {float(loss)} at epoch {epoch}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += float(loss.detach()) * len(y)
        correct += float((logits.argmax(1) == y).sum())
        seen += len(y)
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
    return loss_sum, correct, seen


@torch.no_grad()
def _evaluate_model(net: nn.Module, data: ImageData, split: str, transform, loading: _Loading, batch_size: int,
                    amp: bool) -> dict:
    device, workers, progress = loading.device, loading.workers, loading.progress
    net.eval()
    loader = torch.utils.data.DataLoader(data.dataset(split, transform), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=collate_skipping)
    logits, labels, groups = [], [], []
    for x, y, grp, _, _ in tqdm(loader, desc=f"eval [{split}]", leave=False, disable=None if progress else True):
        if x is None:
            continue
        with _autocast(device, amp):
            logits.append(model_logits(net(x.to(device))).float().cpu())
        labels.append(y)
        groups.append(grp)
    if not logits:
        raise NeuroInspectError(f"no image of split '{split}' could be read")
    return split_metrics(torch.cat(logits), torch.cat(labels), torch.cat(groups), data)

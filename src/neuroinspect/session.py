"""``Inspector``: one object holding a model, its probe and a dataset, with a method per stage."""
from __future__ import annotations

import copy
import itertools
import logging
import os
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from neuroinspect.core.base.config import InspectorConfig, configured
from neuroinspect.core.base.errors import NeuroInspectError
from neuroinspect.core.base.html import table
from neuroinspect.core.base.io import default_cache_dir
from neuroinspect.core.base.metrics import evaluate
from neuroinspect.core.base.records import Metrics
from neuroinspect.core.data.images import SPLIT_ALIASES, ImageData, class_index
from neuroinspect.core.data.load import load_data, parse_class_names
from neuroinspect.core.data.memory import from_memory, is_in_memory
from neuroinspect.core.model.features import extract_features
from neuroinspect.core.model.featureset import FeatureSet
from neuroinspect.core.model.models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Preprocess, build_model
from neuroinspect.core.model.probe import Probe
from neuroinspect.core.model.session_api import InspectedModel
from neuroinspect.core.runtime import distributed
from neuroinspect.core.runtime.device import DevicePolicy, resolve_device  # noqa: F401 (resolve_device: re-exported)
from neuroinspect.find.config import ExplainConfig
from neuroinspect.find.ranking import Explanation, explain_class
from neuroinspect.fix.compare import run_methods
from neuroinspect.fix.config import FixConfig
from neuroinspect.pipeline import PipelineConfig, edit_targets, merge_targets, pick_neurons, run_pipeline, with_neurons
from neuroinspect.results import DebugRun, Fix, Pictures
from neuroinspect.show.config import RenderConfig
from neuroinspect.show.visualize import visualize_neurons

log = logging.getLogger(__name__)


def warn_if_chance(fs: FeatureSet, C: int) -> float | None:
    """Warn loudly when accuracy is at or below chance: most often the class order differs from the model's."""
    known = fs.labels >= 0
    n = int(known.sum())
    if C < 2 or n < 2 * C:
        return None
    pred, true = fs.predictions[known], fs.labels[known]
    acc = float((pred == true).float().mean())
    if acc <= 1.0 / C:
        # if the predictions agree with a relabelling of the classes, say which
        confusion = torch.zeros(C, C, dtype=torch.long)
        confusion.index_put_((true, pred), torch.ones_like(true), accumulate=True)
        mapped = float(confusion.max(1).values.sum()) / n
        hint = ""
        if mapped >= 0.5 and mapped >= 2.0 / C:
            names = fs.class_names
            pairs = [(names[t], names[int(confusion[t].argmax())]) for t in range(C) if confusion[t].sum() > 0
                     and int(confusion[t].argmax()) != t][:3]
            hint = (f" The predictions match a relabelling of the classes ({100 * mapped:.0f}% agree), e.g. "
                    + ", ".join(f"'{a}' is predicted as '{b}'" for a, b in pairs) + ".")
        log.warning(
            "WARNING: accuracy on '%s' is %.1f%%, at or below chance (%.1f%% for %d classes): the data's class order "
            "probably differs from the model's.%s Give the model's order with --class-names FILE|a,b,c (or a "
            "classes.txt beside the data); `neuroinspect classes --data …` shows the order used now.",
            fs.split, 100 * acc, 100 / C, C, hint)
    return acc


def _on(module: nn.Module, device: torch.device) -> bool:
    """Whether every parameter and buffer of ``module`` is on ``device``."""
    def same(d: torch.device) -> bool:
        if d.type != device.type:
            return False
        if d.type != "cuda":
            return True
        current = torch.cuda.current_device()
        return (d.index if d.index is not None else current) == (device.index if device.index is not None else current)

    return all(same(t.device) for t in itertools.chain(module.parameters(), module.buffers()))


def _own_copy(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` itself when it already sits on ``device`` in eval mode; else a copy there, in eval mode, so
    that the caller's module is never moved or switched to eval mode."""
    if not module.training and _on(module, device):
        return module
    log.info("working on a copy of the %s on %s (the module given is left as it is)", type(module).__name__, device)
    return copy.deepcopy(module).to(device).eval()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators: for a program's entry point (a command,
    a script), never called by the library itself."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Inspector(InspectedModel):
    """A classifier and a dataset, ready for the three stages (the ``InspectedModel`` the stages read).

    >>> ins = Inspector("efficientnet-lite0", "photos/", device="cpu")
    >>> ins.metrics("val").worst_class
    >>> explanation = ins.explain("tabby", split="val")
    """

    def __init__(
        self,
        model: str | LoadedModel | nn.Module,
        data=None,
        config: InspectorConfig | None = None,
        *,
        policy: DevicePolicy | None = None,
        **overrides,
    ):
        """``model``: a model spec, a ``LoadedModel`` or any ``nn.Module`` (its ``neuroinspect_preprocess`` and
        ``neuroinspect_class_names`` attributes are read when it has them). ``data``: a data spec (an image
        folder, a CSV manifest, ``torchvision:NAME:ROOT``…), an ``ImageData``, or in-memory data: a torch
        ``Dataset`` of ``(image, label[, group])``, tensors ``(images, labels[, groups])`` with images in [0, 1],
        ``(PIL images, labels)``, or ``{split: one of these}`` (see :func:`neuroinspect.core.data.memory.from_memory`).

        ``config`` (an :class:`InspectorConfig`, or its fields as keyword ``overrides``: weights,
        num_classes, head, device, precision, cache_dir, batch_size, ...). ``policy`` overrides the
        config's device and precision. The constructor has no side effects: no global random state is
        touched (a model built with random weights draws them inside a generator scope seeded from
        ``seed``), no process group is started (that happens on the first stage run under torchrun),
        and a module given by the caller is never moved or switched to eval mode: when it is not
        already on the device in eval mode, the Inspector works on a copy."""
        cfg = self.config = configured(InspectorConfig, config, overrides)
        self.policy = policy if policy is not None else DevicePolicy.resolve(cfg.device, cfg.precision)
        self.seed = cfg.seed
        self.device = self.policy.device
        weights, num_classes, head, allow_pickle = cfg.weights, cfg.num_classes, cfg.head, cfg.allow_pickle
        download, class_names = cfg.download, cfg.class_names
        in_memory = is_in_memory(data)
        if in_memory:
            self.data = None  # built below, once the model's outputs and class names are known
        elif isinstance(data, ImageData) or data is None:
            self.data = data
            if data is not None and class_names is not None:
                self.data = data.with_class_order(parse_class_names(class_names))
        else:
            self.data = load_data(data, download=download, class_names=class_names)
        names_only = parse_class_names(class_names) if class_names is not None and self.data is None else None
        if isinstance(model, LoadedModel):
            self.loaded = replace(model, model=_own_copy(model.model, self.device))
        elif isinstance(model, nn.Module):
            pre = getattr(model, "neuroinspect_preprocess", None) or Preprocess(224, 256, IMAGENET_MEAN, IMAGENET_STD)
            own_names = getattr(model, "neuroinspect_class_names", None)
            self.loaded = LoadedModel(_own_copy(model, self.device), type(model).__name__, pre,
                                      class_names=list(own_names) if own_names else None)
        else:
            with torch.random.fork_rng(devices=[]):  # a random initialisation is seeded; the global RNG is left as it was
                torch.manual_seed(cfg.seed)
                self.loaded = build_model(model, weights=weights, num_classes=num_classes, head=head,
                                          allow_pickle=allow_pickle)
            self.policy.place(self.loaded.model)  # built here: nobody else holds it
        self.probe = Probe(self.loaded.model, head=head, input_size=self.loaded.preprocess.input_size)
        if in_memory:
            self.data = from_memory(data, names_only or self.loaded.class_names, num_classes=self.probe.C)
            if names_only is not None:
                self.data.class_order = "class_names"
            names_only = None
        if names_only is not None:  # no data: the names label the model's outputs
            if len(names_only) != self.probe.C:
                raise NeuroInspectError(f"--class-names gives {len(names_only)} names but the model has {self.probe.C} outputs")
            self.loaded.class_names = names_only
        own = self.loaded.class_names
        if (self.data is not None and not self.data.class_order and own and len(own) == self.probe.C
                and set(self.data.class_names) <= set(own)):
            # the model ships its own category list (e.g. torchvision weights, ImageNet): use its order
            if list(self.data.class_names) != list(own):
                log.info("classes follow the model's own category list (%d names)", len(own))
            self.data = self.data.with_class_order(list(own), source="the model's category list")
            self.data.class_order = "model"
        if self.data is not None and self.probe.C != len(self.data.class_names) and self.data.extra_names:
            names, extra = self.data.class_names, self.data.extra_names
            raise NeuroInspectError(
                f"{self.data.class_order or '--class-names'} lists {len(names)} names but the model has {self.probe.C} "
                f"outputs and the data {len(names) - len(extra)} classes ({', '.join(repr(e) for e in extra[:4])} "
                f"{'is' if len(extra) == 1 else 'are'} not in the data); list the model's {self.probe.C} classes in "
                f"its order, or pass --num-classes {len(names)} with the matching --weights")
        if self.data is not None and self.probe.C != len(self.data.class_names):
            raise NeuroInspectError(
                f"the model has {self.probe.C} outputs but the data has {len(self.data.class_names)} classes; "
                f"pass --num-classes {len(self.data.class_names)} (and the matching --weights)"
            )
        self.cache_dir = Path(cfg.cache_dir) if cfg.cache_dir is not None else default_cache_dir()
        self.progress = cfg.progress
        self.warn_chance = cfg.warn_chance  # off for a model whose head is still untrained
        self._features: dict[str, FeatureSet] = {}

    def start(self) -> None:
        """Join the other processes under torchrun (the process group, created once: nccl on GPUs, gloo on CPUs);
        nothing otherwise. Every stage calls it before its work."""
        distributed.init(self.device)

    # ------------------------------------------------------------------ names
    @property
    def class_names(self) -> list[str]:
        if self.data is not None:
            return list(self.data.class_names)
        if self.loaded.class_names:
            return list(self.loaded.class_names)
        return [f"class_{i}" for i in range(self.probe.C)]

    def class_index(self, name_or_index: str | int) -> int:
        return class_index(self.class_names, name_or_index)

    # ------------------------------------------------------------------ stages
    def features(self, split: str) -> FeatureSet:
        """Features of ``split`` (extracted once, then read from the on-disk cache)."""
        if self.data is None:
            raise NeuroInspectError("this needs data: pass --data (an image folder, a CSV manifest or torchvision:NAME:ROOT)")
        asked, split = split, self.data.resolve_split(split)
        if split not in self._features:
            if split != asked and SPLIT_ALIASES.get(asked, asked) != split:
                log.warning("note: the data has no '%s' split; using '%s' (%d images, every image of the data)",
                            asked, split, self.data.size(split))
            refusal = self.data.cache_refusal(split)
            if refusal:
                log.warning("note: the features of split '%s' are not cached: %s", split, refusal)
            self.start()
            fs = extract_features(self.loaded, self.probe, self.data, split, self.config.extract_config(),
                                  policy=self.policy, cache_dir=None if refusal else self.cache_dir)
            self._features[split] = fs
            if self.warn_chance:
                warn_if_chance(fs, self.probe.C)
        return self._features[split]

    def metrics(self, split: str) -> Metrics:
        """Accuracy overall, per class and per group on ``split`` (a :class:`~neuroinspect.core.base.records.Metrics`)."""
        return evaluate(self.features(split))

    def explain(self, cls: str | int, split: str = "val", config: ExplainConfig | None = None,
                **overrides) -> Explanation:
        """Rank the neurons behind class ``cls``'s mistakes on ``split`` (``config``: an ``ExplainConfig``,
        or its fields as keyword ``overrides``; progress follows the Inspector's unless given)."""
        c = self.class_index(cls)
        fs = self.features(split)
        self.start()
        if config is None:
            overrides.setdefault("progress", self.progress)
        return explain_class(self.probe.weight, self.probe.bias, fs, c, config, policy=self.policy, **overrides)

    # ------------------------------------------------------------------ the notebook API
    def find(self, cls: str | int, split: str = "val", config: ExplainConfig | None = None, **overrides) -> Explanation:
        """Stage 1, find: the ranked neurons behind class ``cls``'s mistakes on ``split`` (:meth:`explain`).

        The :class:`~neuroinspect.find.ranking.Explanation` shows itself as a table (``.table()``, or as
        HTML in a notebook); ``.top(3)`` are its top insufficient neurons; ``.save(dir)`` writes
        ``ranking.json`` and ``mistakes.csv``."""
        return self.explain(cls, split, config, **overrides)

    def show(self, neurons, classes=None, config: RenderConfig | None = None, **overrides) -> Pictures:
        """Stage 2, show: render ``neurons`` (a list, or one neuron) inside ``classes`` (a name, a list, or
        ``{neuron: classes}``; default: each neuron's top classes by weight) and return the pictures in
        memory (:class:`~neuroinspect.results.Pictures`; ``.save(dir)`` writes them).

        ``config``: a :class:`RenderConfig`, or its fields as keyword ``overrides``; without one, the quick
        pictures of ``neuroinspect debug`` (no CLIP; 48 steps at 128 px, the measured defaults), not the paper's
        650-step renders at 224 px."""
        neurons = [neurons] if isinstance(neurons, int) else list(neurons)
        classes = [classes] if isinstance(classes, (str, int)) else classes
        if config is None:
            overrides.setdefault("progress", self.progress)
            config = PipelineConfig().render
        self.start()
        with tempfile.TemporaryDirectory(prefix="neuroinspect-show-") as tmp:
            visualize_neurons(self, neurons, classes, Path(tmp) / "pictures", config, **overrides)
            return Pictures.read(Path(tmp) / "pictures")

    def fix(self, explanation: Explanation | list[Explanation], n: int = 3, config: FixConfig | None = None, *,
            fit_split: str = "val", eval_split: str = "test", **overrides) -> Fix:
        """Stage 3, fix: refit or edit the decision layer for the top ``n`` insufficient neurons of each
        explanation (its excessive ones when it has none), each fixed in the class it is a false correlation
        of: the pipeline's rule (:func:`~neuroinspect.pipeline.edit_targets`).

        ``config``: a :class:`FixConfig`, or its fields as keyword ``overrides`` (``method`` — any registered
        fix method, default ``rebalance`` —, ``seed``, ...). The methods read the cached features of
        ``train`` and ``fit_split``; before/after is measured on ``eval_split``. Nothing is written and the
        model is not changed: ``Fix.apply()`` gives a new model, ``Fix.save(dir)`` writes it."""
        explanations = [explanation] if isinstance(explanation, Explanation) else list(explanation)
        cfg = configured(FixConfig, config, overrides)
        W = self.probe.weight.detach().float().cpu()
        b = self.probe.bias.detach().float().cpu()
        kept = with_neurons(explanations)
        targets = merge_targets([edit_targets(pick_neurons(e, n), e, W) for e in kept])
        feats = {role: self.features(split).with_logits(W, b)
                 for role, split in (("train", "train"), ("val", fit_split), ("test", eval_split))}
        self.start()
        results = run_methods(W, b, feats, targets, [cfg.method], cfg.seed, cfg,
                              policy=self.policy, progress=self.progress)
        before, after, result = results["original"].metrics, results[cfg.method].metrics, results[cfg.method].result
        ranking = kept[0].settings.get("ranking")
        rule = f"the top {n} insufficient neurons of " + ", ".join(repr(e.class_name) for e in kept) + f" ({ranking} ranking)"
        return Fix(result, targets, self.class_names, before, after, self.data.resolve_split(eval_split),
                   self.loaded.model, self.probe.head_name, (W, b), feats, cfg,
                   picked_by={"rule": rule, "ranking": ranking, "ranked": [j for e in kept for j in e.top(n)]},
                   policy=self.policy)

    def debug(self, out: str | os.PathLike, config: PipelineConfig | None = None, **overrides) -> DebugRun:
        """The whole pipeline (find → show → pick → fix → compare → report, as ``neuroinspect debug``) into the
        run folder ``out``; ``config``: a :class:`PipelineConfig`, or its fields as keyword ``overrides``."""
        cfg = configured(PipelineConfig, config, overrides)
        self.start()
        headline = run_pipeline(self, out, cfg, progress=self.progress)
        return DebugRun(Path(out), headline)

    # ------------------------------------------------------------------ display
    def _facts(self) -> list[tuple[str, str]]:
        data = self.data
        splits = ", ".join(f"{s} {data.size(s)}" for s in data.splits) if data is not None else ""
        return [("model", f"{self.loaded.spec} (head '{self.probe.head_name}', {self.probe.D} features, "
                          f"{self.probe.C} classes)"),
                ("data", f"{data.spec} ({splits} images)" if data is not None else "none"),
                ("classes", ", ".join(self.class_names[:8]) + (" …" if self.probe.C > 8 else "")),
                ("device", f"{self.device} ({self.policy.precision})")]

    def __repr__(self) -> str:
        return "Inspector(" + "; ".join(f"{k}: {v}" for k, v in self._facts()) + ")"

    def _repr_html_(self) -> str:
        return f"<p><b>Inspector</b></p>{table(['', ''], self._facts())}"
